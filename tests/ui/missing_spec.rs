// A model needs a spec.
use resnet_runtime::resnet;

resnet! {
    pub Net
}

fn main() {}
