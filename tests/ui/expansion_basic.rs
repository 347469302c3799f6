// Expansion is a bottleneck option.
use resnet_runtime::resnet;

resnet! {
    pub Net<stages: [2, 2, 2, 2], expansion: 2>
}

fn main() {}
