// Logits of a 10-class network cannot go where 1000-class ones are expected.
use resnet_runtime::{resnet, Batch, Logits};

resnet! {
    pub Cifar<stages: [1, 1, 1], stem: cifar, widths: [16, 32, 64], input: [3, 32, 32], classes: 10>
}

fn imagenet_top5(logits: &Logits<1000>) -> Vec<(usize, f32)> {
    logits.top_k(0, 5)
}

fn main() {
    let model = Cifar::new_random(0);
    let logits = model.forward(&Batch::zeros(1));
    imagenet_top5(&logits);
}
