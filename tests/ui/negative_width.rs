// Negative numbers are rejected with the number shown.
use resnet_runtime::resnet;

resnet! {
    pub Net<stages: [2, 2], widths: [64, -128]>
}

fn main() {}
