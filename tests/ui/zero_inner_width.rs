// A bottleneck cannot be narrower than one channel per group.
use resnet_runtime::resnet;

resnet! {
    pub Net<stages: [1, 1], widths: [16, 32], bottleneck: true, width_per_group: 2>
}

fn main() {}
