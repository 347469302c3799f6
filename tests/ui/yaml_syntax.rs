// A YAML syntax error names the file, line and column.
use resnet_runtime::resnet;

// Paths are relative to the crate's Cargo.toml; trybuild builds this file in
// target/tests/trybuild/resnet-rs, four levels below the repository.
resnet! {
    pub Net = "../../../../tests/ui/yaml/yaml_syntax.yaml"
}

fn main() {}
