// `stages` is required.
use resnet_runtime::resnet;

resnet! {
    pub Net<bottleneck: true>
}

fn main() {}
