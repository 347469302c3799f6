// Two keys for one choice.
use resnet_runtime::resnet;

resnet! {
    pub Net<stages: [3, 4, 6, 3], bottleneck: true, block: bottleneck>
}

fn main() {}
