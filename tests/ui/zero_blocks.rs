// Every stage needs a block.
use resnet_runtime::resnet;

resnet! {
    pub Net<stages: [2, 0, 2, 2]>
}

fn main() {}
