//! A model is shared across threads: `Send + Sync`, and eight threads
//! running it at once (each with its own workspace) get the same bits as one.

use resnet_rs::ResNet18;
use resnet_runtime::{Batch, Logits, Workspace};

#[test]
fn models_are_send_and_sync() {
    fn shareable<T: Send + Sync>() {}
    shareable::<ResNet18>();
    shareable::<resnet_rs::ResNet152>();
    shareable::<resnet_rs::CifarResNet56>();
}

#[test]
fn eight_threads_at_once_get_the_same_bits_as_one() {
    let model = ResNet18::new_random(3);
    let x = Batch::<3, 224, 224>::from_fn(1, |(_, c, h, w)| {
        (((c * 31 + h * 7 + w) % 11) as f32 - 5.0) / 5.0
    });
    let alone = model.forward(&x);
    let together = on_eight_threads(|| {
        let mut workspace = Workspace::new();
        let mut out = Logits::zeros(1);
        for _ in 0..2 {
            model.forward_with(&mut workspace, &x, &mut out);
        }
        out
    });
    for (i, logits) in together.iter().enumerate() {
        assert!(logits == &alone, "thread {i} differs");
    }
    // And one thread of its own gives the same bits as the shared pool.
    let single = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| model.forward(&x));
    assert!(single == alone, "1 thread and the default pool differ");
}

#[test]
fn passes_sharing_a_pool_of_many_threads_finish_with_the_same_bits() {
    // Six threads on a machine of maybe two: each pass keeps five helpers
    // awake, and eight passes at once run on the helpers of the others.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(6)
        .build()
        .unwrap();
    let model = resnet_rs::CifarResNet20::new_random(5);
    let x = Batch::<3, 32, 32>::from_fn(2, |(n, c, h, w)| {
        (((n * 5 + c * 31 + h * 7 + w) % 13) as f32 - 6.0) / 6.0
    });
    let alone = model.forward(&x);
    let together = on_eight_threads(|| {
        let mut workspace = Workspace::new();
        let mut out = Logits::zeros(2);
        for _ in 0..20 {
            pool.install(|| model.forward_with(&mut workspace, &x, &mut out));
        }
        out
    });
    for (i, logits) in together.iter().enumerate() {
        assert!(logits == &alone, "thread {i} differs");
    }
}

/// Runs `run` on eight threads at once and gathers what each returns.
fn on_eight_threads<T: Send>(run: impl Fn() -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..8).map(|_| s.spawn(&run)).collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    })
}
