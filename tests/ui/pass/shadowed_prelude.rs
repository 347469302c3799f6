// Generated code uses absolute paths, so a crate that shadows prelude and
// std names still compiles.
#![allow(dead_code)]

use resnet_runtime::resnet;

struct Vec;
struct String;
struct Option;
type Result = ();
mod core {}
mod std {}
mod resnet_runtime_private {}
trait Display {}

resnet! {
    pub ResNet18<stages: [2, 2, 2, 2]>
}

fn main() {
    let _: u64 = ResNet18::PARAMS;
}
