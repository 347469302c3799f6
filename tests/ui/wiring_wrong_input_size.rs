// A 32x32 batch into a network compiled for 224x224 is rustc's own type error.
use resnet_runtime::{resnet, Batch};

resnet! {
    pub Net<stages: [1, 1], input: [3, 224, 224]>
}

fn main() {
    let model = Net::new_random(0);
    let cifar_images = Batch::<3, 32, 32>::zeros(1);
    let _ = model.forward(&cifar_images);
}
