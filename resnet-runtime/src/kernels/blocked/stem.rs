//! A network's stem into blocked output: a convolution of an NCHW image
//! of a few channels (ResNet's 7x7 stride-2 layer on RGB) whose output is
//! channel-blocked, so that the max pool after it and every layer of the
//! blocked stages read blocks.
//!
//! Each image is copied once, padded and split by column phase
//! ([`SplitInput`], as the NCHW direct path does), after which the
//! pixels of an output row at any tap are a contiguous run of the copy.
//! A tile is [`TILE`] output pixels of a row by a panel of 32 output
//! channels (16 on AVX2): the weights of each tap and input channel are
//! the vectors, and each pixel's input value is broadcast from the run, so
//! nothing is packed per tile and every output is one chain of fused
//! multiply-adds over the taps, on every instruction set.

use super::BLOCK;
use crate::kernels::conv::ConvParams;
use crate::kernels::direct::SplitInput;
use crate::kernels::gemm::{Isa, SendPtr};
use crate::kernels::parallel::on_each;
use crate::kernels::pool::BlockedPool;
use ndarray::{ArrayView1, ArrayView4};

/// Output pixels a tile on AVX-512 (28 accumulators of 32 channels).
const TILE: usize = 14;

/// A convolution from NCHW input into blocked output, with its bias and
/// optional ReLU.
#[derive(Clone, Debug)]
pub struct BlockedStem {
    isa: Isa,
    params: ConvParams,
    split: SplitInput,
    /// Step `k = (c, ky, kx)`'s offset in the split copy from a tile's base.
    offsets: Vec<usize>,
    /// Output channels a panel: 32 on AVX-512, 16 otherwise.
    panel: usize,
    /// Each panel's weights, `[step][width]`.
    weights: Vec<f32>,
    bias: Vec<f32>,
}

impl BlockedStem {
    /// Whether `p` can run here: ungrouped, its output channels a multiple
    /// of [`BLOCK`].
    pub fn fits(p: &ConvParams) -> bool {
        p.groups == 1 && p.out_channels.is_multiple_of(BLOCK) && p.out_channels > 0
    }

    /// Packs `weight` (`[out, in, k, k]`) for `isa`.
    ///
    /// # Panics
    /// If `p` does not [fit](BlockedStem::fits), `weight` or `bias` does
    /// not match it, or this CPU lacks `isa`.
    pub fn new(
        isa: Isa,
        p: ConvParams,
        weight: ArrayView4<f32>,
        bias: Option<ArrayView1<f32>>,
    ) -> Self {
        assert!(Self::fits(&p), "not a blocked stem: {p:?}");
        assert!(isa.is_supported(), "{isa:?} is not supported by this CPU");
        let (cin, cout, k) = (p.in_channels, p.out_channels, p.kernel);
        assert_eq!(weight.dim(), (cout, cin, k, k), "weights of {p:?}");
        let split = SplitInput::new(&p);
        let offsets = split.offsets(&p).into_iter().map(|o| o as usize).collect();
        let panel = if isa == Isa::Avx512 { 32 } else { 16 };
        let steps = cin * k * k;
        let mut weights = Vec::with_capacity(cout * steps);
        for o0 in (0..cout).step_by(panel) {
            let width = panel.min(cout - o0);
            for c in 0..cin {
                for (ky, kx) in (0..k).flat_map(|ky| (0..k).map(move |kx| (ky, kx))) {
                    weights.extend((o0..o0 + width).map(|o| weight[(o, c, ky, kx)]));
                }
            }
        }
        let bias = match bias {
            Some(b) => b.to_vec(),
            None => vec![0.0; cout],
        };
        assert_eq!(bias.len(), cout, "biases of {p:?}");
        BlockedStem {
            isa,
            params: p,
            split,
            offsets,
            panel,
            weights,
            bias,
        }
    }

    /// The convolution's shape.
    pub fn params(&self) -> &ConvParams {
        &self.params
    }

    /// Floats of workspace [`BlockedStem::forward`] needs: one image's split copy.
    pub fn workspace_len(&self) -> usize {
        self.split.len(self.params.in_channels)
    }

    /// `out = relu?(conv(x) + bias)` for `n` images, `x` NCHW and `out`
    /// blocked; threads take even shares of each image's output rows.
    /// Allocates nothing.
    ///
    /// # Panics
    /// If a slice's length does not match `n` images, or the workspace is short.
    pub fn forward(
        &self,
        x: &[f32],
        n: usize,
        out: &mut [f32],
        relu: bool,
        workspace: &mut [f32],
        threads: usize,
    ) {
        let p = &self.params;
        let (oh, ow) = p.out_hw();
        let (in_len, out_len) = (p.in_channels * p.in_h * p.in_w, p.out_channels * oh * ow);
        assert_eq!(x.len(), n * in_len, "input of {n} images of {p:?}");
        assert_eq!(out.len(), n * out_len, "output of {n} images of {p:?}");
        let copy = &mut workspace[..self.workspace_len()];
        let threads = threads.clamp(1, oh);
        for (x, out) in x.chunks_exact(in_len).zip(out.chunks_exact_mut(out_len)) {
            self.split.fill(p, x, self.isa, copy);
            let (copy, out) = (&*copy, SendPtr(out.as_mut_ptr()));
            on_each(threads, |t| {
                for oy in t * oh / threads..(t + 1) * oh / threads {
                    // SAFETY: row `oy` of this image's output is this
                    // thread's; the copy holds every tap of the row's
                    // pixels (`SplitInput` pads a tile's width past it).
                    unsafe {
                        let to = out.add(oy * ow * BLOCK);
                        self.row(copy, oy, (to, oh * ow * BLOCK), relu);
                    }
                }
            });
        }
    }

    /// Floats of workspace [`BlockedStem::forward_pooled`] needs with
    /// `threads` threads and a pool of `kernel x kernel` windows: the split
    /// copy, and each thread's last `kernel` rows of the stem's output.
    pub fn pooled_workspace_len(&self, threads: usize, kernel: usize) -> usize {
        let ow = self.params.out_hw().1;
        self.workspace_len() + threads.max(1) * kernel * self.params.out_channels * ow
    }

    /// [`BlockedStem::forward`] followed by max pooling over `(kernel,
    /// stride, padding)` windows, `out` the pool's blocked output: each
    /// thread computes the stem's rows its share of pooled rows reads into
    /// a ring of `kernel` rows, which it pools while they are in cache, so
    /// the stem's output never reaches memory. The same bits as the two
    /// steps apart. Allocates nothing.
    ///
    /// # Panics
    /// If a slice's length does not match `n` images, or the workspace
    /// (see [`BlockedStem::pooled_workspace_len`]) is short.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_pooled(
        &self,
        x: &[f32],
        n: usize,
        out: &mut [f32],
        window: (usize, usize, usize),
        relu: bool,
        workspace: &mut [f32],
        threads: usize,
    ) {
        let p = &self.params;
        let (oh, ow) = p.out_hw();
        let pool = BlockedPool::new(self.isa, (oh, ow), window);
        let (ph, pw) = pool.out_hw();
        let in_len = p.in_channels * p.in_h * p.in_w;
        let out_len = p.out_channels * ph * pw;
        assert_eq!(x.len(), n * in_len, "input of {n} images of {p:?}");
        assert_eq!(
            out.len(),
            n * out_len,
            "pooled output of {n} images of {p:?}"
        );
        let threads = threads.clamp(1, ph);
        let kernel = window.0;
        assert!(
            workspace.len() >= self.pooled_workspace_len(threads, kernel),
            "workspace of {} floats for the stem and its pool",
            workspace.len()
        );
        let (copy, rings) = workspace.split_at_mut(self.workspace_len());
        let ring_row = p.out_channels * ow;
        let rings = SendPtr(rings.as_mut_ptr());
        for (x, out) in x.chunks_exact(in_len).zip(out.chunks_exact_mut(out_len)) {
            self.split.fill(p, x, self.isa, copy);
            let (copy, out) = (&*copy, SendPtr(out.as_mut_ptr()));
            on_each(threads, |t| {
                // SAFETY: each thread has its own `kernel` rows of the rings.
                let ring = unsafe { rings.add(t * kernel * ring_row) };
                // Stem row `y` lives in ring row `y % kernel`, blocks `ow`
                // pixels apart.
                let at = |y: usize| (y % kernel) * ring_row;
                let mut next = None;
                for py in t * ph / threads..(t + 1) * ph / threads {
                    let rows = pool.rows(py);
                    for y in next.map_or(rows.start, |n: usize| n.max(rows.start))..rows.end {
                        // SAFETY: ring row `y % kernel` is this thread's; no
                        // row the pool still reads is overwritten (a window
                        // spans at most `kernel` rows); the copy as in
                        // `forward`.
                        unsafe { self.row(copy, y, (ring.add(at(y)), ow * BLOCK), relu) };
                    }
                    next = Some(rows.end);
                    for b in 0..p.out_channels / BLOCK {
                        // SAFETY: pooled row `py` of block `b` is this
                        // thread's; its input rows lie in the ring (above).
                        unsafe {
                            let to = out.add(((b * ph + py) * pw) * BLOCK).0;
                            let to = std::slice::from_raw_parts_mut(to, pw * BLOCK);
                            let row = |y: usize| ring.add(at(y) + b * ow * BLOCK).0.cast_const();
                            pool.row(py, row, to);
                        }
                    }
                }
            });
        }
    }

    /// Output row `oy` of one image, every panel, tile by tile, into
    /// `(to, block)`: the row's first pixel of the first output block, and
    /// the floats from one block to the next.
    ///
    /// # Safety
    /// `to` holds the row's `ow` pixels of every block, which no other
    /// thread writes; `copy` is the image's split input.
    unsafe fn row(&self, copy: &[f32], oy: usize, (to, block): (SendPtr, usize), relu: bool) {
        let p = &self.params;
        let ow = p.out_hw().1;
        let steps = self.offsets.len();
        let mut ox = 0;
        while ox < ow {
            let px = [TILE, 7, 4, 2, 1]
                .into_iter()
                .find(|&px| px <= ow - ox)
                .expect("1 divides everything");
            for o0 in (0..p.out_channels).step_by(self.panel) {
                let width = self.panel.min(p.out_channels - o0);
                let tile = Tile {
                    x: copy[self.split.base(oy, ox)..].as_ptr(),
                    offsets: &self.offsets,
                    w: self.weights[o0 * steps..][..width * steps].as_ptr(),
                    width,
                    bias: self.bias[o0..][..width].as_ptr(),
                    // SAFETY: pixel `ox` of block `o0 / 16` lies in the
                    // row (the caller's contract).
                    out: unsafe { to.add(o0 / BLOCK * block + ox * BLOCK).0 },
                    out_block: block,
                    relu,
                };
                // SAFETY: the tile's `px` pixels, at every step, lie in the
                // copy; its outputs in the caller's row (above); the
                // weights were packed for this CPU's instruction set.
                unsafe {
                    #[cfg(target_arch = "x86_64")]
                    match self.isa {
                        Isa::Avx512 => {
                            x86::avx512(&tile, px);
                            continue;
                        }
                        Isa::Avx2 => {
                            x86::avx2(&tile, px);
                            continue;
                        }
                        Isa::Portable => {}
                    }
                    portable(&tile, px);
                }
            }
            ox += px;
        }
    }
}

/// One tile: its first pixel's input run and output, and a panel's weights.
#[derive(Clone, Copy)]
struct Tile<'a> {
    /// The split copy at the tile's first pixel, before any step's offset.
    x: *const f32,
    offsets: &'a [usize],
    /// The panel's weights, `[step][width]`.
    w: *const f32,
    /// Output channels: 32, or 16.
    width: usize,
    bias: *const f32,
    /// The tile's first pixel in the panel's first output block.
    out: *mut f32,
    /// Floats from one output block to the next.
    out_block: usize,
    relu: bool,
}

/// The reference for the SIMD kernels: per output, the chain of fused
/// multiply-adds over the steps, then the bias and the clamp.
///
/// # Safety
/// `t` holds `px` pixels at every step and of output, for its channels.
unsafe fn portable(t: &Tile, px: usize) {
    for j in 0..px {
        for o in 0..t.width {
            let mut acc = 0f32;
            for (k, &offset) in t.offsets.iter().enumerate() {
                // SAFETY: the caller's contract.
                unsafe { acc = (*t.x.add(offset + j)).mul_add(*t.w.add(k * t.width + o), acc) };
            }
            // SAFETY: the caller's contract.
            unsafe {
                let mut v = acc + *t.bias.add(o);
                if t.relu {
                    v = v.max(0.0);
                }
                *t.out.add(o / BLOCK * t.out_block + j * BLOCK + o % BLOCK) = v;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Tile, BLOCK, TILE};
    use std::arch::x86_64::*;

    /// A tile of `px` pixels on AVX-512.
    ///
    /// # Safety
    /// As [`super::portable`]; the CPU supports AVX-512F.
    pub(super) unsafe fn avx512(t: &Tile, px: usize) {
        macro_rules! go {
            ($($px:literal)*) => {
                match (px, t.width) {
                    $(
                        ($px, 32) => avx512_tile::<$px, 2>(t),
                        ($px, _) => avx512_tile::<$px, 1>(t),
                    )*
                    _ => unreachable!("tile sizes are listed here"),
                }
            };
        }
        const _: () = assert!(TILE == 14);
        // SAFETY: the caller's contract.
        unsafe { go!(14 7 4 2 1) }
    }

    /// `PX` pixels by `V` vectors of 16 output channels.
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn avx512_tile<const PX: usize, const V: usize>(t: &Tile) {
        let mut acc = [[_mm512_setzero_ps(); V]; PX];
        for (k, &offset) in t.offsets.iter().enumerate() {
            // SAFETY: step `k`'s weights and the tile's pixels at it (the
            // caller's contract).
            unsafe {
                let w: [__m512; V] =
                    std::array::from_fn(|v| _mm512_loadu_ps(t.w.add((k * V + v) * 16)));
                let x = t.x.add(offset);
                for (j, acc) in acc.iter_mut().enumerate() {
                    let xj = _mm512_set1_ps(*x.add(j));
                    for v in 0..V {
                        acc[v] = _mm512_fmadd_ps(xj, w[v], acc[v]);
                    }
                }
            }
        }
        let zero = _mm512_setzero_ps();
        for v in 0..V {
            // SAFETY: the panel's biases and the tile's outputs (the
            // caller's contract).
            unsafe {
                let bias = _mm512_loadu_ps(t.bias.add(v * 16));
                for (j, acc) in acc.iter().enumerate() {
                    let mut y = _mm512_add_ps(acc[v], bias);
                    if t.relu {
                        y = _mm512_max_ps(y, zero);
                    }
                    _mm512_storeu_ps(t.out.add(v * t.out_block + j * BLOCK), y);
                }
            }
        }
    }

    /// A tile of `px` pixels on AVX2, 6 at a time, 16 channels as two halves.
    ///
    /// # Safety
    /// As [`super::portable`]; the CPU supports AVX2 and FMA.
    pub(super) unsafe fn avx2(t: &Tile, px: usize) {
        let mut j0 = 0;
        while j0 < px {
            let n = [6, 4, 2, 1]
                .into_iter()
                .find(|&n| n <= px - j0)
                .expect("1 divides all");
            // SAFETY: pixel `j0` of the tile, at every step and of output
            // (the caller's contract).
            let tile = unsafe {
                Tile {
                    x: t.x.add(j0),
                    out: t.out.add(j0 * BLOCK),
                    ..*t
                }
            };
            // SAFETY: the caller's contract.
            unsafe {
                match n {
                    6 => avx2_tile::<6>(&tile),
                    4 => avx2_tile::<4>(&tile),
                    2 => avx2_tile::<2>(&tile),
                    _ => avx2_tile::<1>(&tile),
                }
            }
            j0 += n;
        }
    }

    /// `PX` pixels by 16 output channels.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_tile<const PX: usize>(t: &Tile) {
        let mut acc = [[_mm256_setzero_ps(); 2]; PX];
        for (k, &offset) in t.offsets.iter().enumerate() {
            // SAFETY: as in `avx512_tile`.
            unsafe {
                let w = [
                    _mm256_loadu_ps(t.w.add(k * 16)),
                    _mm256_loadu_ps(t.w.add(k * 16 + 8)),
                ];
                let x = t.x.add(offset);
                for (j, acc) in acc.iter_mut().enumerate() {
                    let xj = _mm256_set1_ps(*x.add(j));
                    acc[0] = _mm256_fmadd_ps(xj, w[0], acc[0]);
                    acc[1] = _mm256_fmadd_ps(xj, w[1], acc[1]);
                }
            }
        }
        let zero = _mm256_setzero_ps();
        for h in 0..2 {
            // SAFETY: as in `avx512_tile`.
            unsafe {
                let bias = _mm256_loadu_ps(t.bias.add(h * 8));
                for (j, acc) in acc.iter().enumerate() {
                    let mut y = _mm256_add_ps(acc[h], bias);
                    if t.relu {
                        y = _mm256_max_ps(y, zero);
                    }
                    _mm256_storeu_ps(t.out.add(j * BLOCK + h * 8), y);
                }
            }
        }
    }
}
