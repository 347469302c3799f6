// A head written for 512-channel features cannot take a bottleneck
// network's 2048-channel ones.
use resnet_runtime::{resnet, Batch};

resnet! {
    pub Backbone<stages: [1, 1, 1, 1], bottleneck: true>
}

fn head(features: &Batch<512, 7, 7>) -> usize {
    features.len()
}

fn main() {
    let model = Backbone::new_random(0);
    let features = model.features(&Batch::zeros(1));
    head(&features);
}
