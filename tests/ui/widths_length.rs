// One width per stage.
use resnet_runtime::resnet;

resnet! {
    pub Net<stages: [3, 4, 6, 3], widths: [64, 128, 256]>
}

fn main() {}
