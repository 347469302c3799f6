//! GFLOP/s of the kernels, against matrixmultiply (ndarray's GEMM) in the
//! same run:
//!
//! - `gemm/1024`: 1024 x 1024 x 1024, ours and matrixmultiply's;
//! - `conv_b{1,8}/<shape>`: every distinct convolution of ResNet-50 (folded
//!   bias, with the ReLU or residual epilogue it has in the network);
//! - `resnet50_convs/b{1,8}`: all 53 of ResNet-50's convolutions in a row,
//!   so its throughput is the multiply-add-weighted aggregate;
//! - `blocked_b{1,8}/{nchw,blocked}/<shape>`: each 1x1 convolution of
//!   ResNet-50 as above (`nchw`), and on channel-blocked activations
//!   (`kernels::blocked`), in the same run.
//!
//! Throughput is reported as elements/s with one element per FLOP (2 per
//! multiply-add), so criterion's `Gelem/s` reads as GFLOP/s.
//!
//!     cargo bench -p resnet-runtime --bench kernels

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::{Array1, Array2, Array4};
use resnet_runtime::kernels::blocked::{to_blocked, BlockedConv};
use resnet_runtime::kernels::{
    gemm, workspace_len, Conv2d, ConvParams, Epilogue, Isa, PackedWeights,
};
use std::hint::black_box;
use std::time::Duration;

const THREADS: usize = 2;

/// ResNet-50's convolutions: (name, in, out, kernel, stride, input side, how many).
const RESNET50: &[(&str, usize, usize, usize, usize, usize, usize)] = &[
    ("conv1_7x7s2_3-64@224", 3, 64, 7, 2, 224, 1),
    ("l1_1x1_64-64@56", 64, 64, 1, 1, 56, 1),
    ("l1_1x1_256-64@56", 256, 64, 1, 1, 56, 2),
    ("l1_3x3_64-64@56", 64, 64, 3, 1, 56, 3),
    ("l1_1x1_64-256@56", 64, 256, 1, 1, 56, 4),
    ("l2_1x1_256-128@56", 256, 128, 1, 1, 56, 1),
    ("l2_3x3s2_128-128@56", 128, 128, 3, 2, 56, 1),
    ("l2_1x1s2_256-512@56", 256, 512, 1, 2, 56, 1),
    ("l2_1x1_128-512@28", 128, 512, 1, 1, 28, 4),
    ("l2_1x1_512-128@28", 512, 128, 1, 1, 28, 3),
    ("l2_3x3_128-128@28", 128, 128, 3, 1, 28, 3),
    ("l3_1x1_512-256@28", 512, 256, 1, 1, 28, 1),
    ("l3_3x3s2_256-256@28", 256, 256, 3, 2, 28, 1),
    ("l3_1x1s2_512-1024@28", 512, 1024, 1, 2, 28, 1),
    ("l3_1x1_256-1024@14", 256, 1024, 1, 1, 14, 6),
    ("l3_1x1_1024-256@14", 1024, 256, 1, 1, 14, 5),
    ("l3_3x3_256-256@14", 256, 256, 3, 1, 14, 5),
    ("l4_1x1_1024-512@14", 1024, 512, 1, 1, 14, 1),
    ("l4_3x3s2_512-512@14", 512, 512, 3, 2, 14, 1),
    ("l4_1x1s2_1024-2048@14", 1024, 2048, 1, 2, 14, 1),
    ("l4_1x1_512-2048@7", 512, 2048, 1, 1, 7, 3),
    ("l4_1x1_2048-512@7", 2048, 512, 1, 1, 7, 2),
    ("l4_3x3_512-512@7", 512, 512, 3, 1, 7, 2),
];

/// A deterministic, well-conditioned fill.
fn fill(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 2003.0 - 0.5) * 0.1)
        .collect()
}

fn bench_gemm(c: &mut Criterion) {
    let n = 1024;
    let a = Array2::from_shape_vec((n, n), fill(n * n, 1)).unwrap();
    let b = Array2::from_shape_vec((n, n), fill(n * n, 2)).unwrap();
    let mut out = Array2::<f32>::zeros((n, n));
    let packed = PackedWeights::new(resnet_runtime::kernels::Isa::best(), a.view());
    let mut workspace = vec![0.0; workspace_len(THREADS)];
    let mut group = c.benchmark_group("gemm");
    group.throughput(Throughput::Elements(2 * (n * n * n) as u64));
    group.bench_function(BenchmarkId::new("resnet-runtime", n), |bench| {
        bench.iter(|| {
            gemm(
                &packed,
                b.view(),
                out.view_mut(),
                &Epilogue::default(),
                &mut workspace,
                THREADS,
            )
        })
    });
    group.bench_function(BenchmarkId::new("matrixmultiply", n), |bench| {
        bench.iter(|| {
            // SAFETY: row-major n x n matrices, all in bounds; out does not alias a or b.
            unsafe {
                matrixmultiply::sgemm(
                    n,
                    n,
                    n,
                    1.0,
                    a.as_ptr(),
                    n as isize,
                    1,
                    b.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    out.as_mut_ptr(),
                    n as isize,
                    1,
                )
            }
        })
    });
    group.finish();
}

/// One ResNet-50 convolution ready to run at `batch`.
struct Layer {
    conv: Conv2d,
    x: Array4<f32>,
    out: Array4<f32>,
    residual: Option<Array4<f32>>,
    flops: u64,
}

fn layers(batch: usize) -> Vec<(&'static str, usize, Layer)> {
    RESNET50
        .iter()
        .enumerate()
        .map(|(i, &(name, cin, cout, kernel, stride, side, count))| {
            let p = ConvParams::same((cin, cout), kernel, stride, (side, side));
            let (oh, ow) = p.out_hw();
            let w = Array4::from_shape_vec(
                (cout, cin, kernel, kernel),
                fill(cout * cin * kernel * kernel, i),
            )
            .unwrap();
            let bias = Array1::from_vec(fill(cout, i + 100));
            let x = Array4::from_shape_vec(
                (batch, cin, side, side),
                fill(batch * cin * side * side, i + 200),
            )
            .unwrap();
            // Every 1x1 expansion ends a block, so it carries the residual add.
            let residual = (kernel == 1 && cout == 4 * cin)
                .then(|| Array4::from_elem((batch, cout, oh, ow), 0.5));
            let layer = Layer {
                conv: Conv2d::new(p, w.view(), Some(bias.view())),
                x,
                out: Array4::zeros((batch, cout, oh, ow)),
                residual,
                flops: 2 * (batch * p.macs()) as u64,
            };
            (name, count, layer)
        })
        .collect()
}

fn run(layer: &mut Layer, workspace: &mut [f32]) {
    let residual = layer.residual.as_ref().map(|r| r.view());
    layer.conv.forward(
        black_box(layer.x.view()),
        layer.out.view_mut(),
        residual,
        true,
        workspace,
        THREADS,
    );
}

/// Scratch enough for any of `layers`.
fn workspace_for(layers: &[(&str, usize, Layer)]) -> Vec<f32> {
    let most = layers
        .iter()
        .map(|(_, _, l)| l.conv.workspace_len(THREADS))
        .max()
        .unwrap_or(0);
    vec![0.0; most]
}

fn bench_convs(c: &mut Criterion) {
    for batch in [1, 8] {
        let mut layers = layers(batch);
        let mut workspace = workspace_for(&layers);
        let mut group = c.benchmark_group(format!("conv_b{batch}"));
        for (name, _, layer) in &mut layers {
            group.throughput(Throughput::Elements(layer.flops));
            group.bench_function(*name, |bench| bench.iter(|| run(layer, &mut workspace)));
        }
        group.finish();

        let mut group = c.benchmark_group("resnet50_convs");
        let total: u64 = layers
            .iter()
            .map(|(_, count, layer)| *count as u64 * layer.flops)
            .sum();
        group.throughput(Throughput::Elements(total));
        group.bench_function(format!("b{batch}"), |bench| {
            bench.iter(|| {
                for (_, count, layer) in &mut layers {
                    for _ in 0..*count {
                        run(layer, &mut workspace);
                    }
                }
            })
        });
        group.finish();
    }
}

/// ResNet-50's 1x1 convolutions, each on NCHW activations (as in
/// `conv_b{batch}`) and on blocked ones, with the same weights and epilogue.
fn bench_blocked(c: &mut Criterion) {
    for batch in [1, 8] {
        let mut layers = layers(batch);
        layers.retain(|(_, _, layer)| layer.conv.params().kernel == 1);
        let mut workspace = workspace_for(&layers);
        let mut group = c.benchmark_group(format!("blocked_b{batch}"));
        for (i, (name, _, layer)) in layers.iter_mut().enumerate() {
            let p = *layer.conv.params();
            let w = Array4::from_shape_vec(
                (p.out_channels, p.in_channels, 1, 1),
                fill(p.out_channels * p.in_channels, i),
            )
            .unwrap();
            let bias = Array1::from_vec(fill(p.out_channels, i + 100));
            let blocked = BlockedConv::new(Isa::best(), p, w.view(), Some(bias.view()));
            let mut x = vec![0.0; layer.x.len()];
            to_blocked(layer.x.view(), &mut x);
            let residual = layer.residual.as_ref().map(|r| {
                let mut blocked = vec![0.0; r.len()];
                to_blocked(r.view(), &mut blocked);
                blocked
            });
            let mut out = vec![0.0; layer.out.len()];
            group.throughput(Throughput::Elements(layer.flops));
            group.bench_function(BenchmarkId::new("nchw", *name), |bench| {
                bench.iter(|| run(layer, &mut workspace))
            });
            group.bench_function(BenchmarkId::new("blocked", *name), |bench| {
                bench.iter(|| {
                    blocked.forward(
                        black_box(&x),
                        batch,
                        &mut out,
                        residual.as_deref(),
                        true,
                        THREADS,
                    )
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = bench_gemm, bench_convs, bench_blocked
}
criterion_main!(benches);
