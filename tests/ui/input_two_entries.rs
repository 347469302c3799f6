// Input is [C, H, W].
use resnet_runtime::resnet;

resnet! {
    pub Net<stages: [2, 2, 2, 2], input: [224, 224]>
}

fn main() {}
