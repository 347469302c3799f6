// A syntax error names what was expected.
use resnet_runtime::resnet;

resnet! {
    pub Net<stages [3, 4, 6, 3]>
}

fn main() {}
