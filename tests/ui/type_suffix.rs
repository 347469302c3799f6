// Spec numbers are plain.
use resnet_runtime::resnet;

resnet! {
    pub Net<stages: [2u8, 2, 2, 2]>
}

fn main() {}
