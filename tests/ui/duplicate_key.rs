// A key given twice.
use resnet_runtime::resnet;

resnet! {
    pub Net<stages: [2, 2, 2, 2], classes: 10, classes: 100>
}

fn main() {}
