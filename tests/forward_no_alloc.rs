//! After its first pass with a batch size, `forward_with` allocates nothing:
//! a counting global allocator watches every thread while it runs. (This
//! binary holds one test, so no other test's allocations are counted.)

use resnet_rs::{CifarResNet20, ResNet18};
use resnet_runtime::{Batch, Logits, Workspace};

#[path = "../resnet-runtime/tests/support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{allocations, make_every_worker_steal, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn forward_with_allocates_nothing_after_the_first_pass() {
    // As an application would: one pool, entered once, the model run inside it.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| {
        make_every_worker_steal();
        let resnet18 = ResNet18::new_random(1);
        let x = Batch::<3, 224, 224>::from_fn(2, |(n, c, h, w)| ((n + c + h * w) % 7) as f32 / 7.0);
        let (mut workspace, mut logits) = (Workspace::new(), Logits::zeros(2));
        resnet18.forward_with(&mut workspace, &x, &mut logits);
        let first = logits.clone();
        let before = allocations();
        for _ in 0..3 {
            resnet18.forward_with(&mut workspace, &x, &mut logits);
        }
        assert_eq!(
            allocations() - before,
            0,
            "ResNet-18 forward_with allocated"
        );
        assert_eq!(logits, first, "a kept workspace changes nothing");

        // The same for features and for a zero-padded network.
        let cifar = CifarResNet20::new_random(2);
        let x = Batch::<3, 32, 32>::from_fn(4, |(n, c, h, w)| ((n * c + h + w) % 5) as f32 - 2.0);
        let mut features = Batch::<64, 8, 8>::zeros(4);
        cifar.features_with(&mut workspace, &x, &mut features);
        let before = allocations();
        for _ in 0..3 {
            cifar.features_with(&mut workspace, &x, &mut features);
        }
        assert_eq!(allocations() - before, 0, "CIFAR features_with allocated");

        // And for a profiled pass, once its first pass has named the steps.
        let mut profiled = Workspace::profiled();
        cifar.features_with(&mut profiled, &x, &mut features);
        let before = allocations();
        for _ in 0..3 {
            cifar.features_with(&mut profiled, &x, &mut features);
        }
        assert_eq!(allocations() - before, 0, "a profiled pass allocated");
    });
}
