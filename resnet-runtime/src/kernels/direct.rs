//! Direct convolution, for layers whose output rows are at least a tile
//! wide (ResNet's 7x7 stem): each image is copied once, padded and split by
//! column phase, after which each row of a tile's patches is a contiguous
//! run of that copy, which the micro-kernel reads where it lies
//! ([`MicroKernel::run_rows`]). Nothing is packed per tile: packing the
//! stem's patches had cost a third of its time.
//!
//! Output column `ox` of row `oy` reads, at tap `(ky, kx)`, the padded
//! input at `(oy * s + ky, ox * s + kx)` for stride `s`: phase `kx % s` of
//! padded row `oy * s + ky`, at `ox + kx / s`. Each padded row is stored as
//! its `s` phases one after another, so the columns of a tile from `ox0` at
//! tap `(c, ky, kx)` start at `base(oy, ox0) + offset(c, ky, kx)`: one offset
//! per row of the weights, worked out when the layer is built.

use super::conv::ConvParams;
use super::gather::strided_run;
use super::gemm::{Block, Epilogue, Isa, PackedWeights, SendPtr, KC, TILE_NR};
#[cfg(target_arch = "x86_64")]
use super::micro::{Avx2, Avx512, Avx512Wide};
use super::micro::{MicroKernel, Portable};
use super::parallel::on_each;
use rayon::prelude::*;

/// Where the split copy of one image keeps each padded row's phases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SplitInput {
    stride: usize,
    padding: usize,
    /// Floats of one phase of a padded row: the output's width, plus the
    /// columns the kernel's widest tap reaches past it.
    phase: usize,
    /// Padded rows of one channel that some output row reads.
    rows: usize,
}

impl SplitInput {
    pub(crate) fn new(p: &ConvParams) -> Self {
        let (oh, ow) = p.out_hw();
        SplitInput {
            stride: p.stride,
            padding: p.padding,
            phase: ow + (p.kernel - 1) / p.stride,
            rows: (oh - 1) * p.stride + p.kernel,
        }
    }

    /// Floats of one padded row, all its phases.
    fn row(&self) -> usize {
        self.stride * self.phase
    }

    /// Floats of the copy of an image of `channels` channels, and a tile's
    /// width more: a tile reads whole rows of `TILE_NR` floats, even where
    /// only its first columns are kept.
    pub(crate) fn len(&self, channels: usize) -> usize {
        channels * self.rows * self.row() + TILE_NR
    }

    /// The offset of row `k = (c, ky, kx)` of the weights' patches, for each `k`.
    pub(crate) fn offsets(&self, p: &ConvParams) -> Vec<isize> {
        let (plane, k) = (self.rows * self.row(), p.kernel);
        let at = move |c: usize, ky: usize, kx: usize| {
            (c * plane + ky * self.row() + kx % self.stride * self.phase + kx / self.stride)
                as isize
        };
        (0..p.in_channels)
            .flat_map(|c| (0..k).flat_map(move |ky| (0..k).map(move |kx| at(c, ky, kx))))
            .collect()
    }

    /// Where output `(oy, ox)` reads its first tap.
    pub(crate) fn base(&self, oy: usize, ox: usize) -> usize {
        oy * self.stride * self.row() + ox
    }

    /// Copies one image of `p`'s input (`[C][H][W]`) into `out`, padded and split.
    pub(crate) fn fill(&self, p: &ConvParams, image: &[f32], isa: Isa, out: &mut [f32]) {
        let (in_h, in_w) = (p.in_h, p.in_w);
        let rows = &mut out[..p.in_channels * self.rows * self.row()];
        rows.par_chunks_mut(self.row())
            .enumerate()
            .for_each(|(r, dst)| {
                let (c, y) = (
                    r / self.rows,
                    (r % self.rows) as isize - self.padding as isize,
                );
                if !(0..in_h as isize).contains(&y) {
                    dst.fill(0.0);
                    return;
                }
                let row = &image[(c * in_h + y as usize) * in_w..][..in_w];
                for (q, dst) in dst.chunks_exact_mut(self.phase).enumerate() {
                    let x0 = q as isize - self.padding as isize;
                    strided_run(isa, dst, row, x0, self.stride);
                }
            });
    }
}

/// `out = epilogue(conv(x))` for each image of the batch, `x` being
/// `[N, C, H, W]` and `out` `[N, M, OH, OW]`, with `epilogue(image)` the
/// image's epilogue on its `M x OH*OW` output; `workspace` holds at least
/// [`SplitInput::len`] floats.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<'a>(
    p: &ConvParams,
    weights: &PackedWeights,
    offsets: &[isize],
    x: &[f32],
    out: &mut [f32],
    epilogue: impl Fn(usize) -> Epilogue<'a>,
    workspace: &mut [f32],
    threads: usize,
) {
    let (split, threads) = (SplitInput::new(p), threads.max(1));
    let (oh, ow) = p.out_hw();
    let in_len = p.in_channels * p.in_h * p.in_w;
    let out_len = p.out_channels * oh * ow;
    let buffer = &mut workspace[..split.len(p.in_channels)];
    assert_eq!(
        offsets.len(),
        weights.depth(),
        "an offset per row of the patches"
    );
    for (image, (x, out)) in x
        .chunks_exact(in_len)
        .zip(out.chunks_exact_mut(out_len))
        .enumerate()
    {
        split.fill(p, x, weights.isa(), buffer);
        let job = Rows {
            split,
            weights,
            offsets,
            input: buffer,
            out: SendPtr(out.as_mut_ptr()),
            out_hw: (oh, ow),
            epilogue: epilogue(image),
        };
        let rows = |t: usize| t * oh / threads..(t + 1) * oh / threads;
        // SAFETY: the weights were packed for an instruction set this CPU
        // supports (`PackedWeights` checks); each thread writes its own output
        // rows, of `out`, which is this image's and borrowed mutably.
        let work = |t: usize| unsafe {
            match weights.isa() {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => job.run::<Avx512, Avx512Wide>(rows(t)),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => job.run::<Avx2, Avx2>(rows(t)),
                _ => job.run::<Portable, Portable>(rows(t)),
            }
        };
        on_each(threads, work);
    }
}

/// One image's convolution, by output rows.
struct Rows<'a> {
    split: SplitInput,
    weights: &'a PackedWeights,
    offsets: &'a [isize],
    input: &'a [f32],
    out: SendPtr,
    out_hw: (usize, usize),
    epilogue: Epilogue<'a>,
}

impl Rows<'_> {
    /// Output rows `oys`, all channels, in tiles left to right
    /// ([`Rows::tile`]) of `K`, or of `W`, a wider kernel on the same
    /// panels, for a row's last.
    ///
    /// # Safety
    /// The CPU supports `K`'s and `W`'s instruction set, for which the
    /// weights were packed; no other thread writes these output rows at the
    /// same time.
    unsafe fn run<K: MicroKernel, W: MicroKernel>(&self, oys: std::ops::Range<usize>) {
        let ow = self.out_hw.1;
        // A row that would end on a half tile ends on one tile of `W`'s
        // instead, where `W` is wider: the stem's 112 columns go 32 + 32 +
        // 48, not 32 + 32 + 32 + 16, whose half tile runs on eight
        // accumulators, one chain per row, at about 65% of a whole tile's
        // speed.
        let wide_end = W::NR > K::NR && (1..=K::NR / 2).contains(&(ow % K::NR));
        for oy in oys {
            for ox in (0..ow).step_by(K::NR) {
                let left = ow - ox;
                if wide_end && left > K::NR && left <= W::NR {
                    // SAFETY: as the caller vouches.
                    unsafe { self.tile::<W>(oy, ox, left) };
                    break;
                }
                // SAFETY: as the caller vouches.
                unsafe { self.tile::<K>(oy, ox, K::NR.min(left)) };
            }
        }
    }

    /// Columns `ox..ox + nr` (`nr <= NR`) of output row `oy`, all channels,
    /// each depth block across all row panels of the weights, so the tile's
    /// rows of the split input stay in L1 from panel to panel.
    ///
    /// # Safety
    /// As [`Rows::run`], with `K`'s `MR` the weights' panels', and `ox +
    /// NR` at most [`TILE_NR`] floats past the row's end (the split copy's
    /// spare floats cover what the tile's loads read past it).
    unsafe fn tile<K: MicroKernel>(&self, oy: usize, ox: usize, nr: usize) {
        let (m, depth) = (self.weights.rows(), self.weights.depth());
        let (oh, ow) = self.out_hw;
        let j0 = oy * ow + ox;
        let b = self.input[self.split.base(oy, ox)..].as_ptr();
        for k0 in (0..depth).step_by(KC) {
            let kc = KC.min(depth - k0);
            let (accumulate, last) = self.epilogue.depth_block(k0, kc, depth);
            let rows = self.offsets[k0..].as_ptr();
            for i0 in (0..m).step_by(K::MR) {
                let a = self.weights.panel(i0 / K::MR, k0).as_ptr();
                // SAFETY: the tile, rows `i0..` and columns `j0..j0 + nr`
                // of this image's `m x oh * ow` output, is this thread's;
                // each of its `kc` rows of patches, `b + rows[k]`, lies in
                // the split copy with `TILE_NR` floats to spare.
                unsafe {
                    let block = Block {
                        rows: (i0, K::MR.min(m - i0)),
                        cols: (j0, nr),
                        c: self.out.add(i0 * oh * ow + j0).0,
                        ldc: oh * ow,
                    };
                    block.compute::<K>(&self.epilogue, (accumulate, last), |c, ldc, cols, e| {
                        K::run_rows(kc, a, b, rows, c, ldc, cols, accumulate, e)
                    });
                }
            }
        }
    }
}
