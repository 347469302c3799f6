// One build reports every mistake.
use resnet_runtime::resnet;

resnet! {
    pub Net<stages: [3, 4, 6, 3], widths: [64, 128], stem: imagenett, classes: 0>
}

fn main() {}
