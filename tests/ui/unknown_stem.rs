// An unknown option gets a suggestion.
use resnet_runtime::resnet;

resnet! {
    pub Net<stages: [2, 2, 2, 2], stem: imagnet>
}

fn main() {}
