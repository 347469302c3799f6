// Each model reports its own errors; the good one still compiles.
use resnet_runtime::resnet;

resnet! {
    pub Good<stages: [2, 2, 2, 2]>
    pub Bad<stages: [2, 2, 2, 2], shortcut: zero>
}

fn main() {}
