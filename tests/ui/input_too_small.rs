// The input cannot survive the network's downsamplings.
use resnet_runtime::resnet;

resnet! {
    pub Net<stages: [3, 4, 6, 3], bottleneck: true, input: [3, 16, 16]>
}

fn main() {}
