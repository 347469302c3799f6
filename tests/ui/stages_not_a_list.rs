// A number where a list belongs.
use resnet_runtime::resnet;

resnet! {
    pub Net<stages: 50>
}

fn main() {}
