// A misspelt key gets a suggestion.
use resnet_runtime::resnet;

resnet! {
    pub Net<stages: [2, 2, 2, 2], widht: [64, 128, 256, 512]>
}

fn main() {}
