//! The kernels allocate nothing once their workspace exists: a counting
//! global allocator watches every thread (rayon's included) while they run.
//!
//! They run on a rayon pool's own thread, as a model's forward pass does.
//! Two costs are rayon's, not the kernels', and are kept out of the count:
//! entering a pool from a foreign thread costs its job injector a block
//! every 63 entries, and each worker registers with crossbeam-epoch (about
//! 2 KiB) the first time it steals a job, so the test makes every worker
//! steal before it counts.

use ndarray::{Array1, Array2, Array4};
use resnet_runtime::kernels::pool::{avg_pool_linear, avg_pool_linear_scratch, max_pool2d};
use resnet_runtime::kernels::{
    gemm, workspace_len, Conv2d, ConvParams, ConvStrategy, Epilogue, Isa, PackedWeights,
};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{allocations as allocated_so_far, make_every_worker_steal, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by 100 runs of `f` on a thread of `pool`, after warming up.
fn allocations(pool: &rayon::ThreadPool, mut f: impl FnMut() + Send) -> usize {
    make_every_worker_steal();
    pool.install(|| {
        make_every_worker_steal();
        f();
        let before = allocated_so_far();
        for _ in 0..100 {
            f();
        }
        allocated_so_far() - before
    })
}

#[test]
fn kernels_allocate_nothing_on_the_hot_path() {
    let threads = 2;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    for (strategy, kernel, stride) in [
        (ConvStrategy::Pointwise, 1, 1),
        (ConvStrategy::Patches, 3, 2),
        (ConvStrategy::Direct, 7, 2),
        (ConvStrategy::Winograd, 3, 1),
        (ConvStrategy::Winograd4x4, 3, 1),
        (ConvStrategy::WinogradOnTheFly, 3, 1),
    ] {
        let p = ConvParams::same((32, 48), kernel, stride, (30, 30));
        let (oh, ow) = p.out_hw();
        let conv = Conv2d::with_strategy(
            Isa::best(),
            strategy,
            p,
            Array4::from_elem((48, 32, kernel, kernel), 0.01).view(),
            None,
        );
        let x = Array4::from_elem((3, 32, 30, 30), 1.0);
        let residual = Array4::from_elem((3, 40, oh, ow), 1.0);
        let mut out = Array4::zeros((3, 48, oh, ow));
        let mut workspace = vec![0.0; conv.workspace_len(threads)];
        let n = allocations(&pool, || {
            conv.forward(
                x.view(),
                out.view_mut(),
                Some(residual.view()),
                true,
                &mut workspace,
                threads,
            )
        });
        assert_eq!(n, 0, "{strategy:?} allocated {n} times");
        // And it computed something: relu(0.01 * taps + residual) per element.
        assert!(out.iter().all(|&v| v > 0.0));
    }

    let a = Array2::from_elem((70, 300), 0.5);
    let packed = PackedWeights::new(Isa::best(), a.view());
    let b = Array2::from_elem((300, 500), 0.5);
    let mut c = Array2::zeros((70, 500));
    let mut workspace = vec![0.0; workspace_len(threads)];
    let n = allocations(&pool, || {
        gemm(
            &packed,
            b.view(),
            c.view_mut(),
            &Epilogue::default(),
            &mut workspace,
            threads,
        )
    });
    assert_eq!((n, c[(3, 4)]), (0, 75.0));

    let x = Array4::from_elem((2, 16, 12, 12), 1.0);
    let mut pooled = Array4::zeros((2, 16, 6, 6));
    assert_eq!(
        allocations(&pool, || max_pool2d(x.view(), pooled.view_mut(), 3, 2, 1)),
        0
    );
    let (weight, bias) = (Array2::from_elem((10, 16), 0.5), Array1::from_elem(10, 1.0));
    let (mut logits, mut scratch) = (
        Array2::zeros((2, 10)),
        vec![0.0; avg_pool_linear_scratch(2, 16, 10)],
    );
    let n = allocations(&pool, || {
        avg_pool_linear(
            x.view(),
            weight.view(),
            bias.view(),
            logits.view_mut(),
            &mut scratch,
        )
    });
    assert_eq!((n, logits[(1, 9)]), (0, 9.0));
}
