// A zero-pad shortcut cannot drop channels.
use resnet_runtime::resnet;

resnet! {
    pub Net<stages: [2, 2], widths: [64, 32], shortcut: zero_pad>
}

fn main() {}
