// A flag takes true or false.
use resnet_runtime::resnet;

resnet! {
    pub Net<stages: [3, 4, 6, 3], bottleneck: yes>
}

fn main() {}
