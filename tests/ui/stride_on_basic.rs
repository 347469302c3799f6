// Stride placement is a bottleneck option.
use resnet_runtime::resnet;

resnet! {
    pub Net<stages: [2, 2, 2, 2], stride_on: conv1x1>
}

fn main() {}
