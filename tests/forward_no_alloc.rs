//! After its first pass with a batch size, `forward_with` allocates nothing:
//! a counting global allocator watches every thread while it runs. (This
//! binary holds one test, so no other test's allocations are counted.)

use resnet_rs::{CifarResNet20, ResNet18};
use resnet_runtime::{Batch, Logits, Workspace};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs enough small jobs that every worker of the current pool has stolen
/// one: rayon's per-worker bookkeeping allocates on a worker's first steal.
fn make_every_worker_steal() {
    use rayon::prelude::*;
    let sum: u32 = (0..100_000u32)
        .into_par_iter()
        .with_max_len(1)
        .map(|i| std::hint::black_box(i) % 7)
        .sum();
    assert!(sum > 0);
}

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
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        for _ in 0..3 {
            resnet18.forward_with(&mut workspace, &x, &mut logits);
        }
        assert_eq!(
            ALLOCATIONS.load(Ordering::SeqCst) - before,
            0,
            "ResNet-18 forward_with allocated"
        );
        assert_eq!(logits, first, "a kept workspace changes nothing");

        // The same for features and for a zero-padded network.
        let cifar = CifarResNet20::new_random(2);
        let x = Batch::<3, 32, 32>::from_fn(4, |(n, c, h, w)| ((n * c + h + w) % 5) as f32 - 2.0);
        let mut features = Batch::<64, 8, 8>::zeros(4);
        cifar.features_with(&mut workspace, &x, &mut features);
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        for _ in 0..3 {
            cifar.features_with(&mut workspace, &x, &mut features);
        }
        assert_eq!(
            ALLOCATIONS.load(Ordering::SeqCst) - before,
            0,
            "CIFAR features_with allocated"
        );
    });
}
