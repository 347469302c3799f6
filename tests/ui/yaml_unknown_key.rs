// A YAML spec's mistakes name the file and line.
use resnet_runtime::resnet;

// Paths are relative to the crate's Cargo.toml; trybuild builds this file in
// target/tests/trybuild/resnet-rs, four levels below the repository.
resnet! {
    pub Net = "../../../../tests/ui/yaml/yaml_unknown_key.yaml"
}

fn main() {}
