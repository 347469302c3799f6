//! Pooling and the classifier head.

use super::elementwise::zip_strided;
use ndarray::{ArrayView1, ArrayView2, ArrayView4, ArrayViewMut2, ArrayViewMut4};
use rayon::prelude::*;

/// Max pooling over `kernel x kernel` windows with `stride` and `padding`
/// (padding never wins, as in PyTorch): `x` is `[N, C, H, W]`, `out`
/// `[N, C, OH, OW]` with `OH = (H + 2 * padding - kernel) / stride + 1`.
///
/// # Panics
/// If the shapes disagree or a window would lie wholly in the padding
/// (`padding >= kernel`).
pub fn max_pool2d(
    x: ArrayView4<f32>,
    mut out: ArrayViewMut4<f32>,
    kernel: usize,
    stride: usize,
    padding: usize,
) {
    let (n, c, h, w) = x.dim();
    assert!(
        kernel > padding && stride > 0 && h + 2 * padding >= kernel && w + 2 * padding >= kernel
    );
    let (oh, ow) = (
        (h + 2 * padding - kernel) / stride + 1,
        (w + 2 * padding - kernel) / stride + 1,
    );
    assert_eq!(
        out.dim(),
        (n, c, oh, ow),
        "max pool output for input {:?}",
        x.dim()
    );
    let x = x.to_slice().expect("input in standard layout");
    let out = out.as_slice_mut().expect("output in standard layout");
    // Window `o` covers `o * stride - padding ..` clipped to `0..len`.
    let window = |o: usize, len: usize| {
        let start = (o * stride).saturating_sub(padding);
        let end = (o * stride + kernel - padding).min(len);
        start..end
    };
    // The columns whose windows lie wholly inside the row go by chunks
    // (below), the rest window by window.
    let lo = padding.div_ceil(stride).min(ow);
    let hi = (w + padding)
        .checked_sub(kernel)
        .map_or(lo, |last| (last / stride + 1).clamp(lo, ow));
    let (inside, per_chunk) = match (ROW_CHUNK.checked_sub(kernel), hi > lo) {
        (Some(room), true) => (lo..hi, room / stride + 1),
        _ => (0..0, 1),
    };
    out.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(h * w))
        .for_each(|(out, plane)| {
            let mut column_max = [0f32; ROW_CHUNK];
            for (oy, out) in out.chunks_exact_mut(ow).enumerate() {
                let rows = window(oy, h);
                // The window's rows reduced to one first, each input read once
                // and contiguously; then each output is the max of `kernel`
                // neighbours of that row, taken as `kernel` strided passes.
                for x0 in inside.clone().step_by(per_chunk) {
                    let n = per_chunk.min(inside.end - x0);
                    let (from, len) = (x0 * stride - padding, (n - 1) * stride + kernel);
                    let column_max = &mut column_max[..len];
                    let row = |y: usize| &plane[y * w + from..][..len];
                    // The first two rows combined, not the first copied: a copy's
                    // stores, of other widths than the loads after them, stall
                    // those loads. (Starting from -inf skips a NaN in either.)
                    let (first, second) =
                        (row(rows.start), row((rows.start + 1).min(rows.end - 1)));
                    for ((m, &a), &b) in column_max.iter_mut().zip(first).zip(second) {
                        *m = max(max(f32::NEG_INFINITY, a), b);
                    }
                    for y in rows.start + 2..rows.end {
                        for (m, &v) in column_max.iter_mut().zip(row(y)) {
                            *m = max(*m, v);
                        }
                    }
                    let out = &mut out[x0..x0 + n];
                    zip_strided(out, column_max, stride, |o, v| *o = v);
                    for kx in 1..kernel {
                        zip_strided(out, &column_max[kx..], stride, |o, v| *o = max(*o, v));
                    }
                }
                for ox in (0..inside.start).chain(inside.end..ow) {
                    let cols = window(ox, w);
                    out[ox] = rows
                        .clone()
                        .flat_map(|y| &plane[y * w + cols.start..y * w + cols.end])
                        .fold(f32::NEG_INFINITY, |m, &v| max(m, v));
                }
            }
        });
}

/// Input columns [`max_pool2d`] reduces over rows at a time; wider windows
/// go window by window.
const ROW_CHUNK: usize = 256;

/// The larger of `m` and `v`, keeping `m` when `v` is NaN. A comparison
/// compiles to one max instruction; `f32::max` adds NaN handling that costs
/// a third of the pool's time (a NaN is skipped either way).
#[inline(always)]
fn max(m: f32, v: f32) -> f32 {
    if v > m {
        v
    } else {
        m
    }
}

/// The classifier head, fused: global average pooling then a linear layer,
/// `out[n][k] = bias[k] + sum_c weight[k][c] * mean(x[n][c])`.
///
/// `x` is `[N, C, H, W]`, `weight` `[K, C]` (standard layout, PyTorch's
/// `fc.weight`), `bias` `[K]`, `out` `[N, K]`; `scratch` holds at least
/// [`avg_pool_linear_scratch`] floats. The weight, the largest input, is read
/// once for the whole batch, its rows shared among the pool's threads.
///
/// # Panics
/// If the shapes disagree, a tensor is not in standard layout, or the
/// scratch is too short.
pub fn avg_pool_linear(
    x: ArrayView4<f32>,
    weight: ArrayView2<f32>,
    bias: ArrayView1<f32>,
    mut out: ArrayViewMut2<f32>,
    scratch: &mut [f32],
) {
    let (n, c, h, w) = x.dim();
    let k = weight.dim().0;
    assert_eq!(weight.dim(), (k, c), "fc weight for {c} channels");
    assert_eq!(
        (bias.len(), out.dim()),
        (k, (n, k)),
        "fc bias and output for {k} classes"
    );
    let weight = weight.to_slice().expect("weight in standard layout");
    let bias = bias.to_slice().expect("bias in standard layout");
    let x = x.to_slice().expect("input in standard layout");
    let (means, logits) = scratch[..avg_pool_linear_scratch(n, c, k)].split_at_mut(n * c);
    let scale = 1.0 / (h * w) as f32;
    // Planes shared among the threads; each summed in eight interleaved
    // partial sums, which vectorise where one running sum would wait on
    // each addition (a batch of 8 spent a millisecond here).
    means
        .par_chunks_mut(PLANES_PER_TASK)
        .zip(x.par_chunks(PLANES_PER_TASK * h * w))
        .for_each(|(means, planes)| {
            for (m, plane) in means.iter_mut().zip(planes.chunks_exact(h * w)) {
                *m = sum(plane) * scale;
            }
        });
    // logits[class][image], a block of classes per task.
    let means = &*means;
    let avx512 = super::gemm::Isa::best() == super::gemm::Isa::Avx512;
    logits
        .par_chunks_mut(CLASSES_PER_TASK * n)
        .enumerate()
        .for_each(|(task, logits)| {
            let first = task * CLASSES_PER_TASK;
            let rows = &weight[first * c..][..logits.len() / n * c];
            match avx512 {
                // SAFETY: `Isa::best` found AVX-512F on this CPU.
                #[cfg(target_arch = "x86_64")]
                true => unsafe { dots_avx512(rows, means, c, logits) },
                _ => dots(rows, means, c, logits),
            }
            for (class, logits) in logits.chunks_exact_mut(n).enumerate() {
                logits.iter_mut().for_each(|l| *l += bias[first + class]);
            }
        });
    for ((image, class), o) in out.indexed_iter_mut() {
        *o = logits[class * n + image];
    }
}

/// Channels of the head's average pooling per parallel task.
const PLANES_PER_TASK: usize = 256;

/// The sum of `v` in eight interleaved partial sums.
fn sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (a, x) in acc.iter_mut().zip(chunk) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Classes of the head per parallel task.
const CLASSES_PER_TASK: usize = 64;

/// Floats of scratch [`avg_pool_linear`] needs for `n` images, `c` channels
/// and `k` classes: the means, then the logits by class.
pub fn avg_pool_linear_scratch(n: usize, c: usize, k: usize) -> usize {
    n * (c + k)
}

/// `out[class * n + image] = rows[class] · means[image]`, for rows and
/// means of `c` values each (`n` images).
#[inline(always)]
fn dots(rows: &[f32], means: &[f32], c: usize, out: &mut [f32]) {
    let n = means.len() / c;
    for (row, out) in rows.chunks_exact(c).zip(out.chunks_exact_mut(n)) {
        for (o, means) in out.iter_mut().zip(means.chunks_exact(c)) {
            *o = dot(row, means);
        }
    }
}

/// [`dots`] compiled for AVX-512: sixteen lanes, not SSE's four.
///
/// # Safety
/// The CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dots_avx512(rows: &[f32], means: &[f32], c: usize, out: &mut [f32]) {
    dots(rows, means, c, out)
}

/// A dot product in 32 interleaved partial sums, so it vectorises with
/// several additions in flight (two 16-lane chains, or eight of four).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 32];
    let (a_chunks, b_chunks) = (a.chunks_exact(32), b.chunks_exact(32));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..32 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head's dot products compiled for AVX-512 are the portable ones
    /// to the bit: the same operations in the same order, wider.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_dots_match_the_portable_ones() {
        if super::super::gemm::Isa::best() != super::super::gemm::Isa::Avx512 {
            return;
        }
        let value = |i: usize| ((i * 7919 % 1009) as f32 - 504.0) / 97.0;
        for c in [1, 31, 32, 33, 100, 2048] {
            let (classes, images) = (5, 3);
            let rows: Vec<f32> = (0..classes * c).map(value).collect();
            let means: Vec<f32> = (0..images * c).map(|i| value(i + 17)).collect();
            let (mut want, mut got) = (vec![0.0; classes * images], vec![0.0; classes * images]);
            dots(&rows, &means, c, &mut want);
            // SAFETY: `Isa::best` found AVX-512F.
            unsafe { dots_avx512(&rows, &means, c, &mut got) };
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{c} channels");
        }
    }
}
