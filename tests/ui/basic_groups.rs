// Grouped convolutions need bottleneck blocks, as in torchvision.
use resnet_runtime::resnet;

resnet! {
    pub Net<stages: [2, 2, 2, 2], groups: 32>
}

fn main() {}
