//! Pooling and the classifier head.

use super::elementwise::zip_strided;
use super::gemm::{Isa, SendPtr};
use super::parallel::{join_awake, on_each};
use ndarray::{
    ArrayView1, ArrayView2, ArrayView4, ArrayViewMut2, ArrayViewMut3, ArrayViewMut4, Axis,
};
use rayon::prelude::*;
use std::ops::Range;

/// Max pooling over `kernel x kernel` windows with `stride` and `padding`
/// (padding never wins, as in PyTorch): `x` is `[N, C, H, W]`, `out`
/// `[N, C, OH, OW]` with `OH = (H + 2 * padding - kernel) / stride + 1`.
/// A NaN in a window is skipped, where PyTorch would return it; every
/// instruction set gives the same bits.
///
/// # Panics
/// If the shapes disagree, a tensor is not in standard layout, or a window
/// would lie wholly in the padding (`padding >= kernel`).
pub fn max_pool2d(
    x: ArrayView4<f32>,
    out: ArrayViewMut4<f32>,
    kernel: usize,
    stride: usize,
    padding: usize,
) {
    max_pool2d_on(Isa::best(), x, out, (kernel, stride, padding));
}

/// [`max_pool2d`] with the instruction set `isa` (supported by this CPU).
fn max_pool2d_on(
    isa: Isa,
    x: ArrayView4<f32>,
    mut out: ArrayViewMut4<f32>,
    window: (usize, usize, usize),
) {
    let (n, c, h, w) = x.dim();
    let pool = MaxPool::new(isa, (h, w), window);
    assert_eq!(
        out.dim(),
        (n, c, pool.out_hw.0, pool.out_w),
        "max pool output for input {:?}",
        x.dim()
    );
    let x = x.to_slice().expect("input in standard layout");
    let threads = rayon::current_num_threads();
    for (image, out) in x.chunks_exact(c * h * w).zip(out.outer_iter_mut()) {
        pool.bands(image, out, 0, threads);
    }
}

/// [`max_pool2d`] from NCHW `x` into channel-blocked `out`
/// (`[N][C / 16][OH][OW][16]`, see [`super::blocked`]), the same bits:
/// each output row of 16 channels is pooled channel by channel into
/// `scratch`, then interleaved into the blocked row. Threads take even
/// shares of the rows; `scratch` holds [`max_pool2d_to_blocked_scratch`]
/// floats.
///
/// # Panics
/// As [`max_pool2d`]; or if `C` is not a multiple of 16, `out` does not
/// hold the output, or the scratch is short.
pub fn max_pool2d_to_blocked(
    x: ArrayView4<f32>,
    out: &mut [f32],
    (kernel, stride, padding): (usize, usize, usize),
    scratch: &mut [f32],
    threads: usize,
) {
    use super::blocked::{gather_row, BLOCK};
    let isa = Isa::best();
    let (n, c, h, w) = x.dim();
    assert!(
        c.is_multiple_of(BLOCK),
        "{c} channels do not split into blocks of {BLOCK}"
    );
    let pool = MaxPool::new(isa, (h, w), (kernel, stride, padding));
    let (oh, ow) = (pool.out_hw.0, pool.out_w);
    assert_eq!(
        out.len(),
        n * c * oh * ow,
        "max pool output for input {:?}",
        x.dim()
    );
    let threads = threads.clamp(1, n * c / BLOCK * oh);
    let per_thread = BLOCK * ow;
    assert!(scratch.len() >= threads * per_thread, "max pool scratch");
    let x = x.to_slice().expect("input in standard layout");
    let rows = n * c / BLOCK * oh;
    let out = SendPtr(out.as_mut_ptr());
    let scratch = SendPtr(scratch.as_mut_ptr());
    on_each(threads, |t| {
        // SAFETY: each thread has its own `per_thread` floats of scratch.
        let lanes =
            unsafe { std::slice::from_raw_parts_mut(scratch.add(t * per_thread).0, per_thread) };
        let mut column_max = [0f32; ROW_CHUNK];
        for row in t * rows / threads..(t + 1) * rows / threads {
            // Output row `oy` of channel block `block` (counted over the batch).
            let (block, oy) = (row / oh, row % oh);
            for (lane, pooled) in lanes.chunks_exact_mut(ow).enumerate() {
                let plane = &x[(block * BLOCK + lane) * h * w..][..h * w];
                pool.row(plane, oy, pooled, &mut column_max);
            }
            // SAFETY: output row `row` of the blocked output, `ow` pixels of
            // 16 channels, is this thread's alone.
            let to =
                unsafe { std::slice::from_raw_parts_mut(out.add(row * per_thread).0, per_thread) };
            gather_row(isa, lanes, 0, ow, to);
        }
    });
}

/// [`max_pool2d`] from channel-blocked `x` (of `dim`, `[N, C, H, W]`) into
/// blocked `out` (`[N][C / 16][OH][OW][16]`, see [`super::blocked`]), the
/// same bits: each output pixel's 16 channels are one vector, the max over
/// its window's columns of the max over their rows, as there. Threads
/// take even shares of the output rows.
///
/// # Panics
/// As [`max_pool2d`]; or if `C` is not a multiple of 16 or a slice does
/// not hold its tensor.
pub fn max_pool2d_blocked(
    x: &[f32],
    dim: (usize, usize, usize, usize),
    out: &mut [f32],
    window: (usize, usize, usize),
    threads: usize,
) {
    max_pool2d_blocked_on(Isa::best(), x, dim, out, window, threads);
}

/// [`max_pool2d_blocked`] with the instruction set `isa` (supported by this CPU).
fn max_pool2d_blocked_on(
    isa: Isa,
    x: &[f32],
    dim: (usize, usize, usize, usize),
    out: &mut [f32],
    window: (usize, usize, usize),
    threads: usize,
) {
    use super::blocked::BLOCK;
    let (n, c, h, w) = dim;
    assert!(
        c.is_multiple_of(BLOCK),
        "{c} channels do not split into blocks of {BLOCK}"
    );
    assert_eq!(x.len(), n * c * h * w, "a blocked tensor of {dim:?}");
    let pool = BlockedPool::new(isa, (h, w), window);
    let (oh, ow) = pool.out_hw();
    assert_eq!(
        out.len(),
        n * c * oh * ow,
        "max pool output for input {dim:?}"
    );
    let rows = n * c / BLOCK * oh;
    let threads = threads.clamp(1, rows);
    let out = SendPtr(out.as_mut_ptr());
    on_each(threads, |t| {
        for row in t * rows / threads..(t + 1) * rows / threads {
            let (plane, oy) = (row / oh, row % oh);
            let plane = &x[plane * h * w * BLOCK..][..h * w * BLOCK];
            // SAFETY: output row `row` of the blocked output is this thread's alone.
            let out =
                unsafe { std::slice::from_raw_parts_mut(out.add(row * ow * BLOCK).0, ow * BLOCK) };
            // SAFETY: the plane holds `h` rows of `w` pixels.
            unsafe { pool.row(oy, |y| plane[y * w * BLOCK..].as_ptr(), out) };
        }
    });
}

/// Max pooling of one block of 16 channels, a row at a time, each row of
/// input wherever it lies: the rows of [`max_pool2d_blocked`] and of the
/// stem's fused pass.
pub(crate) struct BlockedPool {
    pool: MaxPool,
    /// Whether `x86::max_pool_blocked_row` computes the rows.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    avx512: bool,
}

impl BlockedPool {
    /// The pool of `(kernel, stride, padding)` windows over `(h, w)` planes.
    pub(crate) fn new(isa: Isa, hw: (usize, usize), window: (usize, usize, usize)) -> Self {
        BlockedPool {
            pool: MaxPool::new(Isa::Portable, hw, window),
            avx512: isa == Isa::Avx512 && window.0 <= MAX_WINDOW,
        }
    }

    /// Output rows and columns.
    pub(crate) fn out_hw(&self) -> (usize, usize) {
        self.pool.out_hw
    }

    /// The input rows output row `oy` reads.
    pub(crate) fn rows(&self, oy: usize) -> Range<usize> {
        self.pool.window(oy, self.pool.in_hw.0)
    }

    /// Output row `oy` into `out` (its pixels of 16 floats), input row `y`
    /// starting at `row(y)`: each pixel's vector the max over its window's
    /// columns of the max over their rows, in [`max_pool2d`]'s order.
    ///
    /// # Safety
    /// `row(y)` is valid for the row's `w` pixels of 16 floats, for each
    /// `y` in [`BlockedPool::rows`]`(oy)`.
    pub(crate) unsafe fn row(&self, oy: usize, row: impl Fn(usize) -> *const f32, out: &mut [f32]) {
        use super::blocked::BLOCK;
        let (ys, w) = (self.rows(oy), self.pool.in_hw.1);
        #[cfg(target_arch = "x86_64")]
        if self.avx512 {
            // SAFETY: the CPU has AVX-512F (checked when built); the rows
            // as the caller vouches.
            unsafe { x86::max_pool_blocked_row(row, w, ys, &self.pool, out) };
            return;
        }
        for (ox, out) in out.chunks_exact_mut(BLOCK).enumerate() {
            let mut m = [f32::NEG_INFINITY; BLOCK];
            for x in self.pool.window(ox, w) {
                let mut column = [f32::NEG_INFINITY; BLOCK];
                for y in ys.clone() {
                    // SAFETY: pixel `x` of row `y` (the caller's contract).
                    let pixel = unsafe { std::slice::from_raw_parts(row(y).add(x * BLOCK), BLOCK) };
                    for (c, &v) in column.iter_mut().zip(pixel) {
                        *c = max(*c, v);
                    }
                }
                for (m, c) in m.iter_mut().zip(column) {
                    *m = max(*m, c);
                }
            }
            out.copy_from_slice(&m);
        }
    }
}

/// Floats of scratch [`max_pool2d_to_blocked`] needs with `threads`
/// threads for output rows `out_w` wide.
pub fn max_pool2d_to_blocked_scratch(out_w: usize, threads: usize) -> usize {
    threads.max(1) * 16 * out_w
}

/// One max pool's shape, and how its rows are computed.
struct MaxPool {
    /// Output rows and columns.
    out_hw: (usize, usize),
    kernel: usize,
    stride: usize,
    padding: usize,
    in_hw: (usize, usize),
    out_w: usize,
    /// The outputs whose windows lie wholly inside the row: they go
    /// `per_chunk` at a time.
    inside: Range<usize>,
    per_chunk: usize,
    /// Whether `x86::max_pool_3x3s2_row` computes the rows.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    avx512: bool,
}

impl MaxPool {
    /// The pool of `(kernel, stride, padding)` windows over `(h, w)` planes.
    fn new(
        isa: Isa,
        (h, w): (usize, usize),
        (kernel, stride, padding): (usize, usize, usize),
    ) -> Self {
        assert!(
            kernel > padding
                && stride > 0
                && h + 2 * padding >= kernel
                && w + 2 * padding >= kernel
        );
        let (oh, ow) = (
            (h + 2 * padding - kernel) / stride + 1,
            (w + 2 * padding - kernel) / stride + 1,
        );
        // The columns whose windows lie wholly inside the row go by chunks, the
        // rest window by window.
        let lo = padding.div_ceil(stride).min(ow);
        let hi = (w + padding)
            .checked_sub(kernel)
            .map_or(lo, |last| (last / stride + 1).clamp(lo, ow));
        let (inside, per_chunk) = match (ROW_CHUNK.checked_sub(kernel), hi > lo) {
            (Some(room), true) => (lo..hi, room / stride + 1),
            _ => (0..0, 1),
        };
        MaxPool {
            out_hw: (oh, ow),
            kernel,
            stride,
            padding,
            in_hw: (h, w),
            out_w: ow,
            inside,
            per_chunk,
            // ResNet's pool, 3x3 with stride 2, has a kernel of its own.
            avx512: kernel == 3 && stride == 2 && padding <= 1 && isa == Isa::Avx512,
        }
    }

    /// The part of window `o` inside `0..len`.
    fn window(&self, o: usize, len: usize) -> Range<usize> {
        let start = (o * self.stride).saturating_sub(self.padding);
        let end = (o * self.stride + self.kernel - self.padding).min(len);
        start..end
    }

    /// Output rows `first ..` of one image, all channels (`out` is
    /// `[C, rows, OW]`), in `parts` bands of rows run in parallel: the
    /// bands the convolution before wrote on the same threads, so each
    /// thread reads what is in its own cache.
    fn bands(&self, image: &[f32], mut out: ArrayViewMut3<f32>, first: usize, parts: usize) {
        let rows = out.dim().1;
        if parts > 1 && rows > 1 {
            let mid = rows * (parts / 2) / parts;
            let (top, bottom) = out.split_at(Axis(1), mid);
            join_awake(
                || self.bands(image, top, first, parts / 2),
                || self.bands(image, bottom, first + mid, parts - parts / 2),
            );
            return;
        }
        let (h, w) = self.in_hw;
        // The portable rows' scratch, set up once for the band.
        let mut column_max = [0f32; ROW_CHUNK];
        for (plane, mut out) in image.chunks_exact(h * w).zip(out.outer_iter_mut()) {
            let out = out.as_slice_mut().expect("rows of a plane lie together");
            for (oy, out) in out.chunks_exact_mut(self.out_w).enumerate() {
                self.row(plane, first + oy, out, &mut column_max);
            }
        }
    }

    /// Output row `oy` of one channel `plane`, with `column_max` for scratch.
    fn row(&self, plane: &[f32], oy: usize, out: &mut [f32], column_max: &mut [f32; ROW_CHUNK]) {
        let (kernel, stride, padding) = (self.kernel, self.stride, self.padding);
        let ((h, w), inside) = (self.in_hw, self.inside.clone());
        let rows = self.window(oy, h);
        #[cfg(target_arch = "x86_64")]
        if self.avx512 {
            // SAFETY: `max_pool2d_on`'s caller checked AVX-512F; the plane
            // holds `rows` (inside `0..h`) of `w` columns each.
            unsafe { x86::max_pool_3x3s2_row(out, plane, w, rows, padding) };
            return;
        }
        // The window's rows reduced to one first, each input read once and
        // contiguously; then each output is the max of `kernel` neighbours
        // of that row, taken as `kernel` strided passes.
        for x0 in inside.clone().step_by(self.per_chunk) {
            let n = self.per_chunk.min(inside.end - x0);
            let (from, len) = (x0 * stride - padding, (n - 1) * stride + kernel);
            let column_max = &mut column_max[..len];
            let row = |y: usize| &plane[y * w + from..][..len];
            // The first two rows combined, not the first copied: a copy's
            // stores, of other widths than the loads after them, stall
            // those loads. (Starting from -inf skips a NaN in either.)
            let (first, second) = (row(rows.start), row((rows.start + 1).min(rows.end - 1)));
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
        // The same order at the edges, columns of row maxima, so that every
        // path gives the same bits (a max that ties 0.0 with -0.0 keeps the
        // one it met first).
        for ox in (0..inside.start).chain(inside.end..out.len()) {
            out[ox] = self
                .window(ox, w)
                .map(|x| {
                    let column = rows.clone().map(|y| plane[y * w + x]);
                    column.fold(f32::NEG_INFINITY, max)
                })
                .fold(f32::NEG_INFINITY, max);
        }
    }
}

/// Input columns [`max_pool2d`] reduces over rows at a time; wider windows
/// go window by window.
const ROW_CHUNK: usize = 256;
/// The most rows a window of the AVX-512 blocked rows spans.
const MAX_WINDOW: usize = 8;

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
    out: ArrayViewMut2<f32>,
    scratch: &mut [f32],
) {
    let (n, c, h, w) = x.dim();
    let x = x.to_slice().expect("input in standard layout");
    let scale = 1.0 / (h * w) as f32;
    let head = Head::new(n, c, weight, bias, &out);
    head.run(scratch, out, |means| {
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
            })
    });
}

/// [`avg_pool_linear`] on a channel-blocked `x` of `dim` `[N, C, H, W]`
/// (`[N][C / 16][H][W][16]`, see [`super::blocked`]): each block's 16
/// channels are summed together, a vector a pixel.
///
/// # Panics
/// As [`avg_pool_linear`]; or if `C` is not a multiple of 16 or `x` does
/// not hold `dim`.
pub fn avg_pool_linear_blocked(
    x: &[f32],
    dim: (usize, usize, usize, usize),
    weight: ArrayView2<f32>,
    bias: ArrayView1<f32>,
    out: ArrayViewMut2<f32>,
    scratch: &mut [f32],
) {
    use super::blocked::BLOCK;
    let (n, c, h, w) = dim;
    assert!(
        c.is_multiple_of(BLOCK),
        "{c} channels do not split into blocks of {BLOCK}"
    );
    assert_eq!(x.len(), n * c * h * w, "a blocked tensor of {dim:?}");
    let scale = 1.0 / (h * w) as f32;
    let head = Head::new(n, c, weight, bias, &out);
    head.run(scratch, out, |means| {
        means
            .par_chunks_mut(BLOCK)
            .zip(x.par_chunks(BLOCK * h * w))
            .for_each(|(means, plane)| {
                // Two running sums of 16 lanes, every other pixel each.
                let mut acc = [[0f32; BLOCK]; 2];
                for pair in plane.chunks(2 * BLOCK) {
                    for (acc, pixel) in acc.iter_mut().zip(pair.chunks_exact(BLOCK)) {
                        for (a, v) in acc.iter_mut().zip(pixel) {
                            *a += v;
                        }
                    }
                }
                for (m, (a, b)) in means.iter_mut().zip(acc[0].iter().zip(&acc[1])) {
                    *m = (a + b) * scale;
                }
            })
    });
}

/// The classifier of [`avg_pool_linear`], checked against its inputs.
struct Head<'a> {
    n: usize,
    c: usize,
    k: usize,
    weight: &'a [f32],
    bias: &'a [f32],
}

impl<'a> Head<'a> {
    fn new(
        n: usize,
        c: usize,
        weight: ArrayView2<'a, f32>,
        bias: ArrayView1<'a, f32>,
        out: &ArrayViewMut2<f32>,
    ) -> Self {
        let k = weight.dim().0;
        assert_eq!(weight.dim(), (k, c), "fc weight for {c} channels");
        assert_eq!(
            (bias.len(), out.dim()),
            (k, (n, k)),
            "fc bias and output for {k} classes"
        );
        Head {
            n,
            c,
            k,
            weight: weight.to_slice().expect("weight in standard layout"),
            bias: bias.to_slice().expect("bias in standard layout"),
        }
    }

    /// `out = means · weight^T + bias`, the means made by `pool` in the
    /// first `n * c` floats of `scratch` ([`avg_pool_linear_scratch`]),
    /// the logits after them.
    fn run(&self, scratch: &mut [f32], out: ArrayViewMut2<f32>, pool: impl FnOnce(&mut [f32])) {
        let (n, c, k) = (self.n, self.c, self.k);
        let (means, logits) = scratch[..avg_pool_linear_scratch(n, c, k)].split_at_mut(n * c);
        pool(means);
        self.linear(means, logits, out);
    }

    /// `out = means · weight^T + bias`, through `logits` (by class).
    fn linear(&self, means: &[f32], logits: &mut [f32], mut out: ArrayViewMut2<f32>) {
        let Head {
            n, c, weight, bias, ..
        } = *self;
        // logits[class][image], a block of classes per task.
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

/// [`dots`] on AVX-512, to the same bits: two classes and four images at
/// a time, each row and means vector loaded once for all eight products
/// (one pair at a time, a batch's every product loaded its row and its
/// means for one multiply-add, and the means, too many for L1, came from
/// L2 again for every class); the products left over as [`dots`] takes
/// them, sixteen lanes wide.
///
/// # Safety
/// The CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dots_avx512(rows: &[f32], means: &[f32], c: usize, out: &mut [f32]) {
    let n = means.len() / c;
    for (rows, out) in rows.chunks(2 * c).zip(out.chunks_mut(2 * n)) {
        for i0 in (0..n).step_by(4) {
            let images = i0..(i0 + 4).min(n);
            let block = &means[i0 * c..images.end * c];
            if rows.len() == 2 * c && images.len() == 4 {
                // SAFETY: the CPU has AVX-512F (the caller's contract).
                let sums = unsafe { x86::dots_2x4(rows, block, c) };
                for (r, sums) in sums.iter().enumerate() {
                    out[r * n + i0..r * n + i0 + 4].copy_from_slice(sums);
                }
                continue;
            }
            for (class, row) in rows.chunks_exact(c).enumerate() {
                // The row a few classes on, asked for while this one's
                // first product runs.
                let ahead = row.as_ptr().wrapping_add(ROWS_AHEAD * c);
                for (i, means) in images.clone().zip(block.chunks_exact(c)) {
                    out[class * n + i] = match i == images.start {
                        // SAFETY: the CPU has AVX-512F (the caller's contract).
                        true => unsafe { x86::dot_asking(row, means, ahead) },
                        false => dot(row, means),
                    };
                }
            }
        }
    }
}

/// Rows of the classifier's weights ahead of the one a product reads that
/// [`dots_avx512`] asks for: at batch 1 each row is read once, from
/// beyond L2.
const ROWS_AHEAD: usize = 2;

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

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MaxPool, MAX_WINDOW};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// One output row of [`super::max_pool2d_blocked`], a vector a pixel:
    /// each window column's max over `rows`, then the max of the columns,
    /// in the portable order (`max_ps(v, m)` keeps `m` when `v` is NaN or
    /// ties it), so the bits are the same.
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `row(y)` holds `w` pixels of 16 floats
    /// for each `y` in `rows`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn max_pool_blocked_row(
        row: impl Fn(usize) -> *const f32,
        w: usize,
        rows: Range<usize>,
        pool: &MaxPool,
        out: &mut [f32],
    ) {
        // Each row's start, looked up once for the row of outputs.
        let mut starts = [std::ptr::null::<f32>(); MAX_WINDOW];
        let starts = &mut starts[..rows.len()];
        for (start, y) in starts.iter_mut().zip(rows) {
            *start = row(y);
        }
        let lowest = _mm512_set1_ps(f32::NEG_INFINITY);
        let column = |x: usize| {
            starts.iter().fold(lowest, |column, &start| {
                // SAFETY: pixel `x` of a window row (the caller's contract).
                let v = unsafe { _mm512_loadu_ps(start.add(x * 16)) };
                _mm512_max_ps(v, column)
            })
        };
        // The last column of a window, which starts the next one where
        // the stride is one less than the kernel (ResNet's 3x3/2 pool).
        let mut last = (usize::MAX, lowest);
        for (ox, out) in out.chunks_exact_mut(16).enumerate() {
            let mut m = lowest;
            for x in pool.window(ox, w) {
                let column = if x == last.0 { last.1 } else { column(x) };
                m = _mm512_max_ps(column, m);
                last = (x, column);
            }
            // SAFETY: `out` holds 16 floats.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), m) };
        }
    }

    /// [`super::dot`] of `row` and `means`, asking for the 64-byte lines
    /// from `ahead` (any address) for as many floats as the row has, two
    /// lines a step: the same 32 interleaved partial sums, multiplied then
    /// added as there, then summed in order.
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot_asking(row: &[f32], means: &[f32], ahead: *const f32) -> f32 {
        assert_eq!(row.len(), means.len(), "a row and its means");
        let whole = row.len() / 32 * 32;
        let mut acc = [_mm512_setzero_ps(); 2];
        for k in (0..whole).step_by(32) {
            // SAFETY: `k + 32 <= whole`, inside the row and the means; a
            // prefetch faults on no address.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(k).cast());
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(k + 16).cast());
                for (h, acc) in acc.iter_mut().enumerate() {
                    let x = _mm512_loadu_ps(row.as_ptr().add(k + 16 * h));
                    let y = _mm512_loadu_ps(means.as_ptr().add(k + 16 * h));
                    *acc = _mm512_add_ps(*acc, _mm512_mul_ps(x, y));
                }
            }
        }
        finish(acc, row, means)
    }

    /// [`super::dot`] of each of two rows with each of four means (all of
    /// `c` values, one after another): the same 32 interleaved partial sums
    /// per product, multiplied then added as there, then summed in order.
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dots_2x4(rows: &[f32], means: &[f32], c: usize) -> [[f32; 4]; 2] {
        assert!(
            rows.len() == 2 * c && means.len() == 4 * c,
            "2 rows, 4 means"
        );
        let whole = c / 32 * 32;
        let mut acc = [[[_mm512_setzero_ps(); 2]; 4]; 2];
        for k in (0..whole).step_by(32) {
            // SAFETY: `k + 32 <= whole <= c`, inside every row and means.
            unsafe {
                let x: [[__m512; 2]; 2] = std::array::from_fn(|r| {
                    let at = rows.as_ptr().add(r * c + k);
                    [_mm512_loadu_ps(at), _mm512_loadu_ps(at.add(16))]
                });
                let y: [[__m512; 2]; 4] = std::array::from_fn(|i| {
                    let at = means.as_ptr().add(i * c + k);
                    [_mm512_loadu_ps(at), _mm512_loadu_ps(at.add(16))]
                });
                for (acc, x) in acc.iter_mut().zip(&x) {
                    for (acc, y) in acc.iter_mut().zip(&y) {
                        for h in 0..2 {
                            acc[h] = _mm512_add_ps(acc[h], _mm512_mul_ps(x[h], y[h]));
                        }
                    }
                }
            }
        }
        std::array::from_fn(|r| {
            std::array::from_fn(|i| finish(acc[r][i], &rows[r * c..][..c], &means[i * c..][..c]))
        })
    }

    /// A dot product from its 32 partial sums over the whole steps of 32,
    /// in order, and the products of `row` and `means` past them, as
    /// [`super::dot`] ends.
    #[target_feature(enable = "avx512f")]
    fn finish(acc: [__m512; 2], row: &[f32], means: &[f32]) -> f32 {
        let mut lanes = [0f32; 32];
        // SAFETY: `lanes` holds 32 floats.
        unsafe {
            _mm512_storeu_ps(lanes.as_mut_ptr(), acc[0]);
            _mm512_storeu_ps(lanes.as_mut_ptr().add(16), acc[1]);
        }
        let whole = row.len() / 32 * 32;
        let tail: f32 = row[whole..]
            .iter()
            .zip(&means[whole..])
            .map(|(x, y)| x * y)
            .sum();
        lanes.iter().sum::<f32>() + tail
    }

    /// One output row of a 3x3 max pool with stride 2: `out[o]` is the
    /// max over `rows` of `plane` (`w` columns a row) and the columns
    /// `2 o - padding ..= 2 o + 2 - padding` inside `0..w`, 16 outputs at a
    /// time. Each 16 input columns are reduced over the rows once (masked
    /// loads put -inf in the padding); the even and odd columns of 32 are
    /// then each output's left and middle, the next even column its right.
    /// The maxima are taken in [`super::max_pool2d`]'s order, so the bits
    /// are the same.
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `plane` holds `rows.end <= plane.len() / w`
    /// rows, and `rows` is not empty.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn max_pool_3x3s2_row(
        out: &mut [f32],
        plane: &[f32],
        w: usize,
        rows: Range<usize>,
        padding: usize,
    ) {
        debug_assert!(!rows.is_empty() && rows.end * w <= plane.len());
        let neg_inf = _mm512_set1_ps(f32::NEG_INFINITY);
        // Columns `x0 .. x0 + 16`, each reduced over the rows.
        let column_max = |x0: isize| {
            let lo = (-x0).clamp(0, 16);
            let hi = (w as isize - x0).clamp(lo, 16);
            let lanes = ((1u32 << hi) - (1u32 << lo)) as __mmask16;
            let mut m = neg_inf;
            for y in rows.clone() {
                // SAFETY: the lanes of `lanes` read columns inside `0..w` of
                // row `y`, inside the plane (the pointer itself may lie
                // outside it, but a masked-off lane is never touched).
                let v = unsafe {
                    let at = plane.as_ptr().wrapping_add(y * w).wrapping_offset(x0);
                    _mm512_mask_loadu_ps(neg_inf, lanes, at)
                };
                m = _mm512_max_ps(v, m);
            }
            m
        };
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
        let mut x0 = -(padding as isize);
        let mut low = column_max(x0);
        for o0 in (0..out.len()).step_by(16) {
            let high = column_max(x0 + 16);
            let next = column_max(x0 + 32);
            let left = _mm512_permutex2var_ps(low, even, high);
            let middle = _mm512_permutex2var_ps(low, odd, high);
            // The left columns one output on: the last from `next`.
            let right = _mm512_castsi512_ps(_mm512_alignr_epi32::<1>(
                _mm512_castps_si512(next),
                _mm512_castps_si512(left),
            ));
            let v = _mm512_max_ps(right, _mm512_max_ps(middle, left));
            let n = (out.len() - o0).min(16);
            // SAFETY: outputs `o0 .. o0 + n` of `out`.
            unsafe {
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(o0), ((1u32 << n) - 1) as __mmask16, v)
            };
            (x0, low) = (x0 + 32, next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    /// Every instruction set's max pool against the portable one, to the
    /// bit: rows and columns around each multiple of 16, both paddings, and
    /// inputs with NaN, -inf and zeros of both signs (a tie of 0.0 with
    /// -0.0 keeps the first one met, so the order of the maxima shows).
    #[test]
    fn max_pool_matches_the_portable_one_on_every_isa() {
        let values = [
            f32::NAN,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            -1.0,
            0.0,
            -0.0,
            1.5,
            -0.0,
            0.0,
            -2.0,
        ];
        for isa in Isa::supported() {
            for (h, w, padding) in [(1, 2, 1), (3, 3, 0), (3, 1, 1), (5, 16, 1), (4, 17, 0)]
                .into_iter()
                .chain([15, 16, 31, 32, 33, 34, 35, 64, 112, 113].map(|w| (7, w, 1)))
                .chain([31, 32, 33, 112].map(|w| (6, w, 0)))
            {
                let x = Array4::from_shape_fn((2, 3, h, w), |(n, c, y, x)| {
                    let i = ((n * 3 + c) * h + y) * w + x;
                    values[i * 7919 % 97 % values.len()]
                });
                let (oh, ow) = ((h + 2 * padding - 3) / 2 + 1, (w + 2 * padding - 3) / 2 + 1);
                let (mut want, mut got) =
                    (Array4::zeros((2, 3, oh, ow)), Array4::zeros((2, 3, oh, ow)));
                max_pool2d_on(Isa::Portable, x.view(), want.view_mut(), (3, 2, padding));
                max_pool2d_on(isa, x.view(), got.view_mut(), (3, 2, padding));
                let bits = |a: &Array4<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{isa:?} {h}x{w} padding {padding}");
            }
        }
    }

    /// The same on blocked tensors: every instruction set's rows against
    /// the portable loop's, NaNs and signed zeros included, for ResNet's
    /// 3x3/2 windows (which share a column) and windows that share none,
    /// share two, or span more rows than the AVX-512 rows take.
    #[test]
    fn blocked_max_pool_matches_the_portable_one_on_every_isa() {
        let values = [
            f32::NAN,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            -1.0,
            1.5,
            -0.0,
            0.0,
            -2.0,
        ];
        let windows = [
            (3, 2, 0),
            (3, 2, 1),
            (2, 2, 0),
            (3, 1, 1),
            (5, 2, 2),
            (9, 3, 4),
        ];
        for (isa, window) in Isa::supported()
            .into_iter()
            .flat_map(|isa| windows.map(|window| (isa, window)))
        {
            let (kernel, stride, padding) = window;
            for (h, w) in [(1, 2), (3, 3), (7, 16), (6, 33), (112, 112)] {
                if h + 2 * padding < kernel || w + 2 * padding < kernel {
                    continue;
                }
                let dim = (2, 32, h, w);
                let x: Vec<f32> = (0..2 * 32 * h * w)
                    .map(|i| values[i * 7919 % 97 % values.len()])
                    .collect();
                let out = |side: usize| (side + 2 * padding - kernel) / stride + 1;
                let len = 64 * out(h) * out(w);
                let (mut want, mut got) = (vec![0.0; len], vec![0.0; len]);
                max_pool2d_blocked_on(Isa::Portable, &x, dim, &mut want, window, 2);
                max_pool2d_blocked_on(isa, &x, dim, &mut got, window, 2);
                let bits = |a: &[f32]| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{isa:?} {h}x{w} window {window:?}");
            }
        }
    }

    /// The head's dot products compiled for AVX-512 are the portable ones
    /// to the bit: the same operations in the same order, wider (in
    /// blocks of two classes and four images, and one product at a time
    /// for the rest, as at batch 1).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_dots_match_the_portable_ones() {
        if super::super::gemm::Isa::best() != super::super::gemm::Isa::Avx512 {
            return;
        }
        let value = |i: usize| ((i * 7919 % 1009) as f32 - 504.0) / 97.0;
        for (c, (classes, images)) in [1, 31, 32, 33, 100, 2048]
            .into_iter()
            .flat_map(|c| [(5, 3), (4, 8), (3, 5), (7, 1)].map(|shape| (c, shape)))
        {
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
