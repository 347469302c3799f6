// Zero classes is not a classifier.
use resnet_runtime::resnet;

resnet! {
    pub Net<stages: [2, 2, 2, 2], classes: 0>
}

fn main() {}
