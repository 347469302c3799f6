// A YAML spec is a mapping of keys.
use resnet_runtime::resnet;

// Paths are relative to the crate's Cargo.toml; trybuild builds this file in
// target/tests/trybuild/resnet-rs, four levels below the repository.
resnet! {
    pub Net = "../../../../tests/ui/yaml/yaml_not_a_mapping.yaml"
}

fn main() {}
