// Numbers past the range say so.
use resnet_runtime::resnet;

resnet! {
    pub Net<stages: [2, 2, 2, 2], classes: 99999999999999999999999>
}

fn main() {}
