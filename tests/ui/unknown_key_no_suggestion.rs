// A key nothing like a real one lists the keys.
use resnet_runtime::resnet;

resnet! {
    pub Net<stages: [2, 2], dropout: 1>
}

fn main() {}
