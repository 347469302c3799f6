//! Winograd convolution for 3x3, stride-1, ungrouped layers: F(2x2, 3x3)
//! computes each 2x2 block of outputs with 16 multiplications per channel
//! pair instead of 36, F(4x4, 3x3) each 4x4 block with 36 instead of 144.
//!
//! For F(2x2, 3x3), with `d` a 4x4 input tile, `g` a 3x3 filter and
//!
//! ```text
//! B^T = | 1  0 -1  0 |     G = | 1    0    0  |     A^T = | 1  1  1  0 |
//!       | 0  1  1  0 |         | 1/2  1/2  1/2|           | 0  1 -1 -1 |
//!       | 0 -1  1  0 |         | 1/2 -1/2  1/2|
//!       | 0  1  0 -1 |         | 0    0    1  |
//! ```
//!
//! the 2x2 output is `A^T [(G g G^T) ⊙ (B^T d B)] A`; F(4x4, 3x3) is the
//! same with 6x6 input tiles and the matrices at [`Tile::g`],
//! [`transform_input_tiles_f4`] and [`at_down_f4`]. Summed over
//! input channels, the element-wise product becomes one GEMM per position
//! `ξ` of the input tile (16 or 36): `M[ξ] = U[ξ] · V[ξ]`, `U[ξ]` the
//! transformed filters (`out x in`, packed once) and `V[ξ]` the transformed
//! tiles (`in x tiles`).
//!
//! The batch's tiles are taken `NR` at a time, the micro-kernel's width, and
//! each block goes through all three steps on one thread while it is in
//! cache: the input transform writes each `V[ξ]` as one packed panel, the
//! micro-kernel multiplies it by `U[ξ]`'s row panels, and the output
//! transform applies the epilogue (bias, residual, ReLU) as it writes.
//! Threads take even, contiguous shares of the tiles (or of the output
//! channels, where a share of the tiles would leave the micro-kernel's
//! tiles half empty) and never wait on each other.

use super::conv::{ConvEpilogue, ConvParams, Shortcut};
use super::gemm::{self, Isa, PackedWeights, SendPtr};
#[cfg(target_arch = "x86_64")]
use super::micro::{Avx2, Avx512};
use super::micro::{MicroKernel, Portable, THIN_PANELS};
use ndarray::{Array2, ArrayView4};
use std::ops::{Add, Mul, Sub};

/// The block of outputs one transformed tile yields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tile {
    /// F(2x2, 3x3): 4x4 input tiles, 16 positions, 2.25x fewer multiplications.
    F2,
    /// F(4x4, 3x3): 6x6 input tiles, 36 positions, 4x fewer multiplications.
    F4,
}

impl Tile {
    /// Output rows (and columns) per tile.
    const fn outputs(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// The tile of `n` outputs a side.
    pub(crate) const fn with_outputs(n: usize) -> Tile {
        match n {
            2 => Tile::F2,
            4 => Tile::F4,
            _ => panic!("F(2x2) and F(4x4) only"),
        }
    }

    /// Tiles of `p`'s output in a batch of `batch`.
    fn count(self, p: &ConvParams, batch: usize) -> usize {
        let (oh, ow) = p.out_hw();
        batch * oh.div_ceil(self.outputs()) * ow.div_ceil(self.outputs())
    }

    /// Positions `ξ` of an input tile: one GEMM each.
    fn positions(self) -> usize {
        (self.outputs() + 2) * (self.outputs() + 2)
    }

    /// Rows of `G`, whose products `G_i g G_j^T` are the transformed filters.
    pub(crate) fn g(self) -> &'static [[f64; 3]] {
        match self {
            Tile::F2 => &[
                [1.0, 0.0, 0.0],
                [0.5, 0.5, 0.5],
                [0.5, -0.5, 0.5],
                [0.0, 0.0, 1.0],
            ],
            Tile::F4 => &[
                [1.0 / 4.0, 0.0, 0.0],
                [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
                [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
                [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
                [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
                [0.0, 0.0, 1.0],
            ],
        }
    }
}

/// The transformed filters of a 3x3 stride-1 convolution.
#[derive(Clone, Debug)]
pub(crate) struct Winograd {
    tile: Tile,
    /// Whether the transforms run on AVX2, eight tiles at a time: the
    /// weights were packed for a SIMD kernel and the CPU has AVX2 (never
    /// off x86-64).
    avx2: bool,
    /// `U[ξ]`, `out x in`, one per position `ξ = (i, j)` of the input tile.
    u: Vec<PackedWeights>,
}

/// Whether Winograd's transforms may use AVX2 with weights packed for `isa`.
fn avx2_for(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    return isa != Isa::Portable && std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        false
    }
}

impl Winograd {
    /// Whether `p` can run as Winograd: 3x3, stride 1, one group.
    pub fn fits(p: &ConvParams) -> bool {
        p.kernel == 3 && p.stride == 1 && p.groups == 1
    }

    /// Transforms `weight` (`[out, in, 3, 3]`): `U = G g G^T` per channel pair.
    pub fn new(isa: Isa, tile: Tile, p: &ConvParams, weight: ArrayView4<f32>) -> Self {
        let (cout, cin) = (p.out_channels, p.in_channels);
        // U[ξ] for ξ = (i, j) is G_i g G_j^T, one position at a time, so only
        // one transformed matrix exists before it is packed.
        let g = tile.g();
        let u = (0..g.len() * g.len())
            .map(|xi| {
                let (gi, gj) = (g[xi / g.len()], g[xi % g.len()]);
                let m = Array2::from_shape_fn((cout, cin), |(o, c)| {
                    let mut v = 0.0;
                    for (a, ga) in gi.iter().enumerate() {
                        for (b, gb) in gj.iter().enumerate() {
                            v += ga * weight[(o, c, a, b)] as f64 * gb;
                        }
                    }
                    v as f32
                });
                PackedWeights::new(isa, m.view())
            })
            .collect();
        Winograd {
            tile,
            avx2: avx2_for(isa),
            u,
        }
    }

    /// The layer as a forward pass runs it ([`Pass::forward`]).
    pub fn pass(&self) -> Pass<'_> {
        let u = &self.u[0];
        Pass {
            tile: self.tile,
            avx2: self.avx2,
            shape: (u.isa(), u.rows(), u.depth()),
            filters: Filters::Packed(&self.u),
        }
    }
}

/// F(2x2, 3x3) on the patch GEMM's packed weights (`out x in·9`, step
/// `9c + 3a + b` holding tap `(a, b)` of input channel `c`), whose
/// transformed filters are made in the workspace for each pass rather than
/// kept with the layer: for layers that run the patch GEMM at small
/// batches, where transformed filters would only double their memory, and
/// Winograd at large ones, where one transform serves many tiles.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OnTheFly<'a> {
    weights: &'a PackedWeights,
}

impl<'a> OnTheFly<'a> {
    /// The pass over `weights`, the packed `out x in·9` matrix of a 3x3 layer.
    pub fn new(weights: &'a PackedWeights) -> Self {
        OnTheFly { weights }
    }

    /// Whether a batch of `batch` of `p` makes at least
    /// [`ON_THE_FLY_BLOCKS`] blocks of tiles, over which the filter
    /// transform pays. The thread count has no say, so that it never
    /// changes a result's bits.
    pub fn pays(&self, p: &ConvParams, batch: usize) -> bool {
        Tile::F2.count(p, batch) >= ON_THE_FLY_BLOCKS * self.weights.isa().tile().1
    }

    /// The weights' instruction set, rows (`out`) and input channels.
    fn shape(&self) -> (Isa, usize, usize) {
        let w = self.weights;
        (w.isa(), w.rows(), w.depth() / 9)
    }

    /// Floats of all positions' transformed filters.
    fn filters_len(&self) -> usize {
        let (isa, rows, cin) = self.shape();
        Tile::F2.positions() * rows.next_multiple_of(isa.tile().0) * cin
    }

    fn pass<'u>(&self, u: &'u [f32]) -> Pass<'u> {
        let (isa, rows, cin) = self.shape();
        Pass {
            tile: Tile::F2,
            avx2: avx2_for(isa),
            shape: (isa, rows, cin),
            filters: Filters::Flat(u),
        }
    }

    /// Floats of workspace [`OnTheFly::prepare`] and the pass it returns
    /// need with `threads` threads.
    pub fn workspace_len(&self, threads: usize) -> usize {
        let (isa, _, cin) = self.shape();
        let transform = threads.max(1) * gemm::per_thread(filter_scratch_len(cin, isa.tile().0));
        self.filters_len() + self.pass(&[]).workspace_len(threads).max(transform)
    }

    /// Transforms the filters into the start of `workspace` and returns
    /// the pass that runs on them, with the rest of the workspace for it.
    ///
    /// # Panics
    /// If `workspace` is shorter than [`OnTheFly::workspace_len`].
    pub fn prepare<'w>(
        &self,
        workspace: &'w mut [f32],
        threads: usize,
    ) -> (Pass<'w>, &'w mut [f32]) {
        let threads = threads.max(1);
        gemm::check_workspace(workspace, self.workspace_len(threads), threads);
        let (u, rest) = workspace.split_at_mut(self.filters_len());
        self.transform_filters(u, rest, threads);
        (self.pass(u), rest)
    }

    /// All positions' filters into `u`, position after position, each as
    /// [`PackedWeights`] lays out an `out x in` matrix; threads take row
    /// panels.
    fn transform_filters(&self, u: &mut [f32], workspace: &mut [f32], threads: usize) {
        let (isa, rows, cin) = self.shape();
        let mr = isa.tile().0;
        let panels = rows.div_ceil(mr);
        let (panel_len, positions) = (mr * cin, Tile::F2.positions());
        let avx2 = avx2_for(isa);
        let to = SendPtr(u.as_mut_ptr());
        let threads = threads.min(panels);
        let work = |(thread, scratch): (usize, &mut [f32])| {
            let stride = filter_panel_stride(cin, mr);
            for panel in thread * panels / threads..(thread + 1) * panels / threads {
                transform_filter_panel(mr, self.weights.panel(panel, 0), scratch, avx2);
                for xi in 0..positions {
                    let from = &scratch[xi * stride..][..panel_len];
                    // SAFETY: panel `panel` of position `xi` lies inside `u`
                    // (`positions x panels x panel_len` floats), and only
                    // this thread writes it.
                    unsafe {
                        let to = to.add((xi * panels + panel) * panel_len).0;
                        std::ptr::copy_nonoverlapping(from.as_ptr(), to, panel_len);
                    }
                }
            }
        };
        gemm::on_threads(workspace, filter_scratch_len(cin, mr), threads, work);
    }
}

/// Blocks of tiles from which [`OnTheFly`] runs Winograd. Its filter
/// transform costs about what two blocks' products gain over the patch
/// GEMM, and the pass shares blocks among threads: four is two for each
/// of two threads (ResNet's 7x7 layers from a batch of 8 on AVX-512).
pub(crate) const ON_THE_FLY_BLOCKS: usize = 4;

/// Whether `threads` share a pass's `panels` row panels of output
/// channels rather than its `tiles`: where a thread's share of the tiles
/// would leave its micro-kernel tiles half empty and all the tiles fill
/// them. Then each thread transforms every tile's input, which the
/// products must make up for: they must cost at most three quarters. An
/// 8x8 image's 16 F(2x2) tiles at batch 1 (a CIFAR ResNet's last stage)
/// fill one tile of 16 columns on each thread for half the channels,
/// rather than half of one for all of them (64 channels, alone: 0.038 ->
/// 0.026 ms; CIFAR ResNet-56 at batch 1, 1.74 -> 1.52 ms, ResNet-20 0.60
/// -> 0.53 ms); a 14x14 image's 49 cost a whole tile and a half either way,
/// and stay shared as tiles (with the channels shared they took 0.60
/// rather than 0.53 ms at 256 channels).
fn share_channels<K: MicroKernel>(tiles: usize, panels: usize, threads: usize) -> bool {
    // Columns the micro-kernel computes for a block of `n` tiles.
    let columns = |n: usize| {
        let left = n % K::NR;
        n - left
            + match left {
                0 => 0,
                _ if left <= THIN_TILES.min(K::THIN) => left,
                _ if K::HALF_TILES && left <= K::NR / 2 => K::NR / 2,
                _ => K::NR,
            }
    };
    let by_tiles = columns(tiles.div_ceil(threads)) * panels;
    let by_channels = columns(tiles) * panels.div_ceil(threads);
    threads > 1 && panels >= threads && 4 * by_channels <= 3 * by_tiles
}

/// Where a pass finds `U[ξ]`'s row panels.
#[derive(Clone, Copy, Debug)]
enum Filters<'a> {
    /// One packed `out x in` matrix per position, made with the layer.
    Packed(&'a [PackedWeights]),
    /// All positions' matrices in one buffer, position after position,
    /// laid out as the packed ones: made for this pass ([`OnTheFly`]).
    Flat(&'a [f32]),
}

/// One Winograd layer as a forward pass sees it: its filters, kept
/// ([`Winograd::pass`]) or made for the pass ([`OnTheFly::prepare`]).
pub(crate) struct Pass<'a> {
    tile: Tile,
    /// Whether the transforms may use AVX2 (see [`Winograd`]).
    avx2: bool,
    /// The filters' instruction set, rows (`out`) and input channels.
    shape: (Isa, usize, usize),
    filters: Filters<'a>,
}

impl Pass<'_> {
    /// Row panels `panel..` of `U[xi]`, one after another, each `in`
    /// steps of `MR` values.
    fn panels(&self, xi: usize, panel: usize) -> *const f32 {
        match self.filters {
            Filters::Packed(u) => u[xi].panels(panel, 0).as_ptr(),
            Filters::Flat(u) => {
                let (isa, rows, cin) = self.shape;
                let mr = isa.tile().0;
                u[(xi * rows.div_ceil(mr) + panel) * mr * cin..].as_ptr()
            }
        }
    }

    /// Floats of one thread's scratch: `V` (`positions` panels of `in x NR`,
    /// [`v_stride`] apart) and `M`
    /// (`out x positions x NR`, `out` rounded up to whole row panels).
    fn scratch_len(&self) -> usize {
        let (isa, rows, cin) = self.shape;
        let (mr, nr) = isa.tile();
        self.tile.positions() * (v_stride(cin, nr) + rows.next_multiple_of(mr) * nr)
    }

    /// Floats of workspace [`Pass::forward`] needs with `threads` threads.
    pub fn workspace_len(&self, threads: usize) -> usize {
        threads.max(1) * gemm::per_thread(self.scratch_len())
    }

    /// `out = relu?(conv(x) + bias + residual)` for a batch; `x` is
    /// `[N, in, H, W]` and `out` `[N, out, OH, OW]` as flat standard-layout
    /// slices, `residual` `[N, R, OH, OW]` with its channel count `R <= out`
    /// (channels from `R` on add nothing). Allocates nothing.
    ///
    /// # Panics
    /// If `workspace` is shorter than [`Pass::workspace_len`].
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        p: &ConvParams,
        batch: usize,
        x: &[f32],
        out: &mut [f32],
        epilogue: &ConvEpilogue,
        workspace: &mut [f32],
        threads: usize,
    ) {
        let threads = threads.max(1);
        gemm::check_workspace(workspace, self.workspace_len(threads), threads);
        let task = Task {
            p,
            x,
            out: SendPtr(out.as_mut_ptr()),
            epilogue,
        };
        let tiles = self.tile.count(p, batch);
        // SAFETY: the instruction set is supported (packing checked it);
        // `out` holds the batch's output (the caller's slice).
        unsafe {
            match self.shape.0 {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => self.run::<Avx512>(&task, tiles, workspace, threads),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => self.run::<Avx2>(&task, tiles, workspace, threads),
                _ => self.run::<Portable>(&task, tiles, workspace, threads),
            }
        }
    }

    /// [`Pass::forward`] of `tiles` tiles on `K`, its threads sharing the
    /// tiles or the output channels ([`share_channels`]).
    ///
    /// # Safety
    /// The CPU supports `K`'s instruction set, which the filters were packed
    /// for; `task.out` is valid for the whole output; `workspace` holds
    /// [`Pass::workspace_len`] floats.
    unsafe fn run<K: MicroKernel>(
        &self,
        task: &Task,
        tiles: usize,
        workspace: &mut [f32],
        threads: usize,
    ) {
        let panels = task.p.out_channels.div_ceil(K::MR);
        let by_channels = share_channels::<K>(tiles, panels, threads);
        let threads = if by_channels {
            threads
        } else {
            threads.min(tiles.div_ceil(K::NR))
        };
        let work = |(thread, scratch): (usize, &mut [f32])| {
            // The tiles are shared out evenly, not in whole blocks, so that
            // no thread takes a block more than another: a 56x56 image's
            // 196 F(4x4) tiles go 98 + 98 (three blocks of 32 and two thin
            // tiles each), not 96 + 100 (whose last block of four costs
            // half a block), and a 28x28 image's 49 go 24 + 25, not 32 + 17
            // (whose transforms take twice as long on one thread as on the
            // other). Those layers ran 4 to 7% faster in ResNet-18 at batch 1.
            let share = |n: usize| thread * n / threads..(thread + 1) * n / threads;
            let (tiles, panels) = if by_channels {
                (0..tiles, share(panels))
            } else {
                (share(tiles), 0..panels)
            };
            // SAFETY: the caller's contract; each thread writes only its
            // own tiles' pixels or its own channels.
            unsafe { self.blocks::<K>(task, tiles, panels, scratch) }
        };
        gemm::on_threads(workspace, self.scratch_len(), threads, work);
    }

    /// Runs tiles `tiles` in blocks of `NR`, the last maybe fewer, for the
    /// output channels of row panels `panels`, with `scratch` for `V` and
    /// `M`.
    ///
    /// # Safety
    /// The CPU supports `K`'s instruction set, which the filters were packed
    /// for; `task.out` is valid for the whole output and no other thread
    /// writes these tiles' pixels of these channels.
    unsafe fn blocks<K: MicroKernel>(
        &self,
        task: &Task,
        tiles: std::ops::Range<usize>,
        panels: std::ops::Range<usize>,
        scratch: &mut [f32],
    ) {
        let (cin, cout) = (task.p.in_channels, task.p.out_channels);
        let positions = self.tile.positions();
        let (v, m) = scratch.split_at_mut(positions * v_stride(cin, K::NR));
        let mut work = OutputWork::new(self.avx2);
        let ldc = positions * K::NR;
        let channels = panels.start * K::MR..(panels.end * K::MR).min(cout);
        for first in tiles.clone().step_by(K::NR) {
            let width = K::NR.min(tiles.end - first);
            let block = (first, width);
            self.transform_inputs::<K>(task, block, v);

            // M[ξ] = U[ξ] · V[ξ], row `o` of position `ξ` at `m[(o * positions + ξ) NR]`.
            // Only the block's tiles are multiplied: a short last block costs less.
            for xi in 0..positions {
                let b = v[xi * v_stride(cin, K::NR)..][..cin * K::NR].as_ptr();
                if width <= THIN_TILES.min(K::THIN) {
                    for panel in panels.clone().step_by(THIN_PANELS) {
                        let rows = K::MR * THIN_PANELS.min(panels.end - panel);
                        let c = m[(panel * K::MR * positions + xi) * K::NR..].as_mut_ptr();
                        // SAFETY: `U[ξ]` holds `rows / MR` panels of `cin`
                        // steps from `panel`, and `b` `cin` steps of `NR`
                        // values; `m` holds `rows` rows at stride `ldc` from
                        // `c` (its rows are rounded up to whole panels); the
                        // caller vouches for the CPU.
                        unsafe {
                            let a = self.panels(xi, panel);
                            K::run_thin(cin, a, K::MR * cin, b, width, c, ldc, rows, false)
                        };
                    }
                    continue;
                }
                for panel in panels.clone() {
                    let c = m[(panel * K::MR * positions + xi) * K::NR..].as_mut_ptr();
                    // SAFETY: `U[ξ]`'s panel and `b` hold `cin` steps of `MR`
                    // and `NR` values; `m` holds `MR` rows at stride `ldc`
                    // from `c` (its rows are rounded up to whole panels);
                    // the caller vouches for the CPU.
                    unsafe { K::run(cin, self.panels(xi, panel), b, c, ldc, width, false, None) };
                }
            }

            // SAFETY: as the caller vouches.
            unsafe { self.transform_outputs::<K>(task, block, channels.clone(), m, &mut work) };
        }
    }

    /// `V[ξ]` of the block of `width` tiles from tile `first` into `v`: one
    /// `in x NR` panel per position, [`v_stride`] apart, row `c` at `c * NR`.
    fn transform_inputs<K: MicroKernel>(
        &self,
        task: &Task,
        (first, width): (usize, usize),
        v: &mut [f32],
    ) {
        let Task { p, x, .. } = *task;
        let (oh, ow) = p.out_hw();
        let (th, tw) = (
            oh.div_ceil(self.tile.outputs()),
            ow.div_ceil(self.tile.outputs()),
        );
        let cin = p.in_channels;
        for run in Runs::new(first, width, tw) {
            let image = run.row / th;
            let plane = p.in_h * p.in_w;
            let planes = &x[image * cin * plane..][..cin * plane];
            let to = Dest {
                channel_step: K::NR,
                stride: v_stride(cin, K::NR),
                at: run.at,
                avx2: self.avx2,
            };
            let transform = match self.tile {
                Tile::F2 => transform_input_tiles,
                Tile::F4 => transform_input_tiles_f4,
            };
            transform(planes, p, (run.row % th, run.tx, run.len), v, to);
        }
    }

    /// The output transform of the block of `width` tiles from tile `first`
    /// for output channels `channels`, from `m` (`positions x NR` an output
    /// channel), with the epilogue.
    ///
    /// # Safety
    /// `task.out` is valid for the whole output, and no other thread writes
    /// this block's pixels of these channels.
    unsafe fn transform_outputs<K: MicroKernel>(
        &self,
        task: &Task,
        (first, width): (usize, usize),
        channels: std::ops::Range<usize>,
        m: &[f32],
        work: &mut OutputWork,
    ) {
        let Task {
            p, out, epilogue, ..
        } = *task;
        let (oh, ow) = p.out_hw();
        let (th, tw) = (
            oh.div_ceil(self.tile.outputs()),
            ow.div_ceil(self.tile.outputs()),
        );
        let (cout, positions) = (p.out_channels, self.tile.positions());
        let transform = match self.tile {
            Tile::F2 => transform_output_run::<2>,
            Tile::F4 => transform_output_run::<4>,
        };
        let blocks = m.chunks_exact(positions * K::NR).enumerate();
        for (o, block) in blocks.skip(channels.start).take(channels.len()) {
            for run in Runs::new(first, width, tw) {
                let image = run.row / th;
                // SAFETY: plane `(image, o)` of the output, whose pixels under
                // this run's tiles only this block writes (the caller's contract).
                let plane = unsafe {
                    std::slice::from_raw_parts_mut(out.add((image * cout + o) * oh * ow).0, oh * ow)
                };
                let residual = match epilogue.shortcut {
                    Shortcut::Add(data, channels) if o < channels => {
                        PlaneResidual::Add(&data[(image * channels + o) * oh * ow..][..oh * ow])
                    }
                    Shortcut::InPlace => PlaneResidual::InPlace,
                    Shortcut::None | Shortcut::Add(..) => PlaneResidual::None,
                };
                let epilogue = OutputEpilogue {
                    bias: epilogue.bias[o],
                    residual,
                    relu: epilogue.relu,
                };
                let ty = run.row % th;
                transform(work, block, K::NR, &run, ty, (oh, ow), plane, &epilogue);
            }
        }
    }
}

/// Floats from one position's `V` (`in x nr`) to the next's: a cache line
/// more than the panel. The input transform stores each channel's values
/// to all positions at once; panels a power of two apart put those stores
/// in one set of the L1 cache (F(4x4) layers 7-9% slower, F(2x2) 4%).
fn v_stride(cin: usize, nr: usize) -> usize {
    cin * nr + 16
}

/// Floats from one position's transformed row panel (`in` steps of `mr`)
/// to the next's: a cache line more than the panel, so that the 16 values
/// each input channel's transform stores lie in different sets of the L1
/// cache. Panels a power of two apart all fell in one set, which a
/// transform's stores then kept evicting (2.3x slower).
fn filter_panel_stride(cin: usize, mr: usize) -> usize {
    cin * mr + 16
}

/// Floats a thread needs to transform a row panel of filters: all its
/// positions, [`filter_panel_stride`] apart.
fn filter_scratch_len(cin: usize, mr: usize) -> usize {
    Tile::F2.positions() * filter_panel_stride(cin, mr)
}

/// `U = G g G^T` of F(2x2, 3x3) for one row panel of `mr` output
/// channels: `g` is the panel as the patch GEMM packs it (step `9c + 3a + b`
/// holds tap `(a, b)` of input channel `c`, one value per row), and `u`
/// receives position `ξ`'s panel (`in` steps of `MR`) at `ξ` times
/// [`filter_panel_stride`].
/// With `G`'s rows `g0`, `(g0 + g1 + g2) / 2`, `(g0 - g1 + g2) / 2` and
/// `g2`, each step down and across is two additions, a subtraction and two
/// halvings, vectorised over the panel's rows.
fn transform_filter_panel(mr: usize, g: &[f32], u: &mut [f32], avx2: bool) {
    match mr {
        8 => filter_panel_dispatch::<8>(g, u, avx2),
        6 => filter_panel_dispatch::<6>(g, u, avx2),
        4 => filter_panel_dispatch::<4>(g, u, avx2),
        mr => unreachable!("no micro-kernel has {mr} rows"),
    }
}

/// [`filter_panel`] compiled for AVX2 where `avx2` says it may be.
fn filter_panel_dispatch<const MR: usize>(g: &[f32], u: &mut [f32], avx2: bool) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        /// [`filter_panel`] with AVX2's wider vectors: the same operations.
        #[target_feature(enable = "avx2")]
        fn on_avx2<const MR: usize>(g: &[f32], u: &mut [f32]) {
            filter_panel::<MR>(g, u);
        }
        // SAFETY: `avx2` is only set where the CPU has AVX2 (see [`avx2_for`]).
        return unsafe { on_avx2::<MR>(g, u) };
    }
    let _ = avx2;
    filter_panel::<MR>(g, u);
}

/// [`transform_filter_panel`] for panels of `MR` rows.
#[inline(always)]
fn filter_panel<const MR: usize>(g: &[f32], u: &mut [f32]) {
    /// `G`'s step on three rows of lanes: `[x0, (x0 + x1 + x2) / 2,
    /// (x0 - x1 + x2) / 2, x2]`.
    #[inline(always)]
    fn step<const MR: usize>(x0: &[f32; MR], x1: &[f32; MR], x2: &[f32; MR], y: &mut [[f32; MR]]) {
        for l in 0..MR {
            let s = x0[l] + x2[l];
            y[0][l] = x0[l];
            y[1][l] = (s + x1[l]) * 0.5;
            y[2][l] = (s - x1[l]) * 0.5;
            y[3][l] = x2[l];
        }
    }
    let stride = filter_panel_stride(g.len() / (9 * MR), MR);
    for (c, taps) in g.chunks_exact(9 * MR).enumerate() {
        // The weights come from memory: ask for them some channels ahead.
        #[cfg(target_arch = "x86_64")]
        for line in (0..9 * MR).step_by(16) {
            let ahead = g.as_ptr().wrapping_add((c + 8) * 9 * MR + line);
            // SAFETY: prefetching cannot fault or change memory.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ahead.cast())
            };
        }
        let taps: &[[f32; MR]; 9] = taps.as_chunks().0.try_into().expect("9 taps");
        // `G g` (4 x 3, transposed: column `b` at `gg[4b..]`), down the
        // filter's rows a column at a time; then `(G g) G^T` (4 x 4),
        // across each row of `G g`.
        let mut gg = [[0.0; MR]; 12];
        for b in 0..3 {
            step(&taps[b], &taps[3 + b], &taps[6 + b], &mut gg[4 * b..]);
        }
        let mut ggg = [[0.0; MR]; 16];
        for i in 0..4 {
            step(&gg[i], &gg[4 + i], &gg[8 + i], &mut ggg[4 * i..]);
        }
        for (xi, values) in ggg.iter().enumerate() {
            u[xi * stride + c * MR..][..MR].copy_from_slice(values);
        }
    }
}

/// What every block of one call shares.
struct Task<'a> {
    p: &'a ConvParams,
    x: &'a [f32],
    out: SendPtr,
    epilogue: &'a ConvEpilogue<'a>,
}

/// Consecutive tiles of one row of tiles inside a block.
#[derive(Clone, Copy, Debug)]
struct Run {
    /// Row of tiles, counted across the batch (image `row / th`).
    row: usize,
    /// First tile's column.
    tx: usize,
    /// Tiles.
    len: usize,
    /// First tile's place in the block.
    at: usize,
}

/// The runs of tiles `first .. first + tiles`, `tw` tiles to a row.
struct Runs {
    next: usize,
    end: usize,
    first: usize,
    tw: usize,
}

impl Runs {
    fn new(first: usize, tiles: usize, tw: usize) -> Self {
        Runs {
            next: first,
            end: first + tiles,
            first,
            tw,
        }
    }
}

impl Iterator for Runs {
    type Item = Run;

    fn next(&mut self) -> Option<Run> {
        (self.next < self.end).then(|| {
            let (row, tx) = (self.next / self.tw, self.next % self.tw);
            let len = (self.tw - tx).min(self.end - self.next);
            let run = Run {
                row,
                tx,
                len,
                at: self.next - self.first,
            };
            self.next += len;
            run
        })
    }
}

/// What the output transform adds to one output plane.
struct OutputEpilogue<'a> {
    bias: f32,
    residual: PlaneResidual<'a>,
    relu: bool,
}

/// An output plane's residual.
#[derive(Clone, Copy)]
enum PlaneResidual<'a> {
    None,
    /// Laid out as the plane.
    Add(&'a [f32]),
    /// The plane itself holds it.
    InPlace,
}

impl OutputEpilogue<'_> {
    /// The residual of the `len` outputs from plane offset `start`: the
    /// residual's own, or, in place, a copy in `kept` of what the plane
    /// holds there, to take before the transform overwrites it.
    fn residual<'s>(
        &'s self,
        plane: &[f32],
        start: usize,
        len: usize,
        kept: &'s mut [f32; ROW],
    ) -> Option<&'s [f32]> {
        match self.residual {
            PlaneResidual::None => None,
            PlaneResidual::Add(residual) => Some(&residual[start..][..len]),
            PlaneResidual::InPlace => {
                kept[..len].copy_from_slice(&plane[start..][..len]);
                Some(&kept[..len])
            }
        }
    }

    /// Adds `residual` (from [`OutputEpilogue::residual`]) to `row`, which
    /// holds outputs with their bias, then clamps at zero if asked.
    fn finish(&self, row: &mut [f32], residual: Option<&[f32]>) {
        if let Some(residual) = residual {
            row.iter_mut().zip(residual).for_each(|(y, r)| *y += r);
        }
        if self.relu {
            row.iter_mut().for_each(|y| *y = y.max(0.0));
        }
    }
}

/// Most tiles a block multiplies a column at a time across the row panels,
/// as a GEMM's thin columns ([`MicroKernel::run_thin`]), where a half tile
/// costs eight multiply-adds a step: the two left at the end of each
/// thread's share of a 56x56 image's 196 F(4x4) tiles. Each column loads
/// the weights again, so from three or four columns on the half tile is as
/// fast (F(2x2) at 14x14, batch 8, four columns: 2% slower).
const THIN_TILES: usize = 2;

/// Tiles transformed together: small enough for stack arrays, which are
/// cleared once per run of tiles and then serve all its input channels.
const BLOCK: usize = 32;

/// The most outputs one row of a run of tiles holds: a block of F(4x4) tiles.
const ROW: usize = 4 * BLOCK;

/// Where one run of tiles' transforms go: `V` of input channel `c` at
/// `c * channel_step` of `block`, position `ξ` at `ξ * stride`, from column `at`.
#[derive(Clone, Copy)]
struct Dest {
    channel_step: usize,
    stride: usize,
    at: usize,
    /// Whether AVX2 may be used (see [`Winograd`]).
    avx2: bool,
}

/// `V = B^T d B` for tiles `t0 .. t0 + nt` (`nt <= BLOCK`) of tile row `ty`
/// of every input channel in `planes` (`[in, H, W]`), into `block` as `to`
/// says. Tile `t` reads padded columns `2t .. 2t + 4`: even columns `e[t]`,
/// `e[t + 1]` and odd ones `o[t]`, `o[t + 1]`; split that way, every step
/// is a loop over `t` that vectorises.
fn transform_input_tiles(
    planes: &[f32],
    p: &ConvParams,
    (ty, t0, nt): (usize, usize, usize),
    block: &mut [f32],
    to: Dest,
) {
    let (h, w, pad) = (p.in_h, p.in_w, p.padding as isize);
    let n = nt + 1;
    // Padded columns 2 t0 .. 2 t0 + 2n are input columns from x0 = 2 t0 - pad;
    // rows and columns in the padding stay zero for every channel.
    let x0 = (2 * t0) as isize - pad;
    let lo = (-x0).clamp(0, 2 * n as isize) as usize;
    let hi = (w as isize - x0).clamp(lo as isize, 2 * n as isize) as usize;
    let rows: [Option<usize>; 4] = std::array::from_fn(|i| {
        let iy = (2 * ty + i) as isize - pad;
        (0..h as isize).contains(&iy).then_some(iy as usize)
    });
    let mut padded = [0f32; 2 * BLOCK + 2];
    let mut even = [[0f32; BLOCK + 1]; 4];
    let mut odd = [[0f32; BLOCK + 1]; 4];
    let (mut re, mut ro) = ([[0f32; BLOCK + 1]; 4], [[0f32; BLOCK + 1]; 4]);
    for (c, plane) in planes.chunks_exact(h * w).enumerate() {
        #[cfg(target_arch = "x86_64")]
        if to.avx2 {
            let row = |i: usize| rows[i].map(|iy| &plane[iy * w..][..w]);
            let out = &mut block[c * to.channel_step + to.at..];
            // SAFETY: the CPU has AVX2 (`Winograd::new` checked); position
            // `ξ < 16`'s columns `.. nt` lie in `out` at `ξ * stride`.
            unsafe { x86::input_f2([row(0), row(1), row(2), row(3)], x0, nt, out, to.stride) };
            continue;
        }
        for (i, iy) in rows.iter().enumerate() {
            let Some(iy) = iy else { continue };
            if hi > lo {
                let from = (iy * w) as isize + x0 + lo as isize;
                padded[lo..hi].copy_from_slice(&plane[from as usize..][..hi - lo]);
            }
            for ((e, o), pair) in even[i][..n]
                .iter_mut()
                .zip(&mut odd[i][..n])
                .zip(padded.chunks_exact(2))
            {
                (*e, *o) = (pair[0], pair[1]);
            }
        }
        // B^T d, down the rows: (d0 - d2, d1 + d2, d2 - d1, d1 - d3).
        for (d, r) in [(&even, &mut re), (&odd, &mut ro)] {
            for t in 0..n {
                r[0][t] = d[0][t] - d[2][t];
                r[1][t] = d[1][t] + d[2][t];
                r[2][t] = d[2][t] - d[1][t];
                r[3][t] = d[1][t] - d[3][t];
            }
        }
        // (B^T d) B, across the columns (c0, c1, c2, c3) = (e[t], o[t], e[t + 1], o[t + 1]).
        let block = &mut block[c * to.channel_step..];
        for k in 0..4 {
            let (c0, c1, c2, c3) = (&re[k][..nt], &ro[k][..nt], &re[k][1..n], &ro[k][1..n]);
            let out = column(block, to.stride, k * 4, to.at, nt);
            for t in 0..nt {
                out[t] = c0[t] - c2[t];
            }
            let out = column(block, to.stride, k * 4 + 1, to.at, nt);
            for t in 0..nt {
                out[t] = c1[t] + c2[t];
            }
            let out = column(block, to.stride, k * 4 + 2, to.at, nt);
            for t in 0..nt {
                out[t] = c2[t] - c1[t];
            }
            let out = column(block, to.stride, k * 4 + 3, to.at, nt);
            for t in 0..nt {
                out[t] = c1[t] - c3[t];
            }
        }
    }
}

/// Columns `at .. at + n` of position `xi`, positions `stride` apart.
fn column(block: &mut [f32], stride: usize, xi: usize, at: usize, n: usize) -> &mut [f32] {
    &mut block[xi * stride + at..][..n]
}

/// Stack space for the output transforms, cleared once for a thread's
/// blocks rather than for each channel's run of tiles.
struct OutputWork {
    atm: AtM,
    /// A row's residual, where the output holds it (in place).
    kept: [f32; ROW],
}

impl OutputWork {
    fn new(avx2: bool) -> Self {
        OutputWork {
            atm: AtM {
                s: [[[0.0; BLOCK + 8]; 4]; 6],
                avx2,
            },
            kept: [0.0; ROW],
        }
    }
}

/// `A^T M` of a run of tiles, the output transform's first step.
struct AtM {
    /// By column and row of the tile (eight tiles to spare, which the AVX2
    /// steps read past a run's end).
    s: [[[f32; BLOCK + 8]; 4]; 6],
    /// Whether the steps may use AVX2 (see [`Winograd`]).
    avx2: bool,
}

impl AtM {
    /// `A^T M` down the rows of a run of `nt` tiles into `s` (`s[j][i]` is
    /// row `i` of column `j`), position `ξ`'s values at `block[ξ * stride ..]`.
    fn down(&mut self, tile: Tile, block: &[f32], stride: usize, nt: usize) {
        let s = &mut self.s;
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: the CPU has AVX2 (`Winograd::new` checked); position
            // `ξ`'s `nt` values lie in `block` at `ξ * stride`.
            unsafe {
                match tile {
                    Tile::F2 => x86::at_down_f2(block, stride, nt, s),
                    Tile::F4 => x86::at_down_f4(block, stride, nt, s),
                }
            };
            return;
        }
        match tile {
            Tile::F2 => at_down_f2(block, stride, nt, s),
            Tile::F4 => at_down_f4(block, stride, nt, s),
        }
    }

    /// `(A^T M) A` across output row `i` of the run [`AtM::down`]
    /// took, as many columns as `row` has, plus `bias`.
    fn across(&self, tile: Tile, i: usize, bias: f32, row: &mut [f32]) {
        let [a0, a1, a2, a3, a4, a5] = &self.s;
        match tile {
            Tile::F2 => {
                let columns = [&a0[i], &a1[i], &a2[i], &a3[i]];
                #[cfg(target_arch = "x86_64")]
                if self.avx2 {
                    // SAFETY: the CPU has AVX2 (`Winograd::new` checked); the
                    // rows of `s` hold `BLOCK + 8 >= row.len() / 2 + 7` floats.
                    unsafe { x86::at_across_f2(columns, bias, row) };
                    return;
                }
                at_across_f2(columns, bias, row);
            }
            Tile::F4 => {
                let columns = [&a0[i], &a1[i], &a2[i], &a3[i], &a4[i], &a5[i]];
                #[cfg(target_arch = "x86_64")]
                if self.avx2 {
                    // SAFETY: the CPU has AVX2 (`Winograd::new` checked); the
                    // rows of `s` hold `BLOCK + 8 >= row.len() / 4 + 7` floats.
                    unsafe { x86::at_across_f4(columns, bias, row) };
                    return;
                }
                at_across_f4(columns, bias, row);
            }
        }
    }
}

/// Transforms one run of tiles of one output channel from `block`
/// (position `ξ` at `ξ * stride`) into `plane` (`oh x ow`, tile row `ty`):
/// `Y = A^T M A`, then the epilogue. `N` is the tile's outputs a side
/// ([`Tile::outputs`]): a constant, so that each tile's loops are its own.
#[allow(clippy::too_many_arguments)]
fn transform_output_run<const N: usize>(
    work: &mut OutputWork,
    block: &[f32],
    stride: usize,
    run: &Run,
    ty: usize,
    (oh, ow): (usize, usize),
    plane: &mut [f32],
    epilogue: &OutputEpilogue,
) {
    let tile = Tile::with_outputs(N);
    for t0 in (0..run.len).step_by(BLOCK) {
        let nt = BLOCK.min(run.len - t0);
        work.atm.down(tile, &block[run.at + t0..], stride, nt);
        // Output columns N (tx + t0) .. N (tx + t0 + nt), clipped to the plane.
        let (x0, x1) = (N * (run.tx + t0), (N * (run.tx + t0 + nt)).min(ow));
        for i in 0..N {
            let oy = N * ty + i;
            if oy >= oh {
                continue;
            }
            let start = oy * ow + x0;
            let residual = epilogue.residual(plane, start, x1 - x0, &mut work.kept);
            let row = &mut plane[start..oy * ow + x1];
            work.atm.across(tile, i, epilogue.bias, row);
            epilogue.finish(row, residual);
        }
    }
}

/// `A^T M` of F(2x2, 3x3) down the rows of a run of `nt` tiles:
/// `s[j][0] = m0j + m1j + m2j` and `s[j][1] = m1j - m2j - m3j`, position
/// `ξ = 4i + j`'s values at `block[ξ * stride ..]`.
fn at_down_f2(block: &[f32], stride: usize, nt: usize, s: &mut [[[f32; BLOCK + 8]; 4]; 6]) {
    let m = |xi: usize| &block[xi * stride..][..nt];
    for (j, [s0, s1, ..]) in s[..4].iter_mut().enumerate() {
        let (a, b, c, d) = (m(j), m(4 + j), m(8 + j), m(12 + j));
        for t in 0..nt {
            s0[t] = a[t] + b[t] + c[t];
            s1[t] = b[t] - c[t] - d[t];
        }
    }
}

/// `(A^T M) A` of F(2x2, 3x3) across one output row, then the bias:
/// `row[2t] = a + b + c`, `row[2t + 1] = b - c - d` from `[a, b, c, d][..][t]`,
/// as many columns as `row` has.
fn at_across_f2([a, b, c, d]: [&[f32; BLOCK + 8]; 4], bias: f32, row: &mut [f32]) {
    for (t, y) in row.chunks_mut(2).enumerate() {
        y[0] = a[t] + b[t] + c[t] + bias;
        if let Some(y) = y.get_mut(1) {
            *y = b[t] - c[t] - d[t] + bias;
        }
    }
}

/// `V = B^T d B` of F(4x4, 3x3) for tiles `t0 .. t0 + nt` (`nt <= BLOCK`)
/// of tile row `ty`, laid out as [`transform_input_tiles`] does; tile `t`
/// reads padded rows `4 ty .. 4 ty + 6` and columns `4t .. 4t + 6`, and
///
/// ```text
/// B^T = | 4  0 -5  0  1  0 |
///       | 0 -4 -4  1  1  0 |
///       | 0  4 -4 -1  1  0 |
///       | 0 -2 -1  2  1  0 |
///       | 0  2 -1 -2  1  0 |
///       | 0  4  0 -5  0  1 |
/// ```
fn transform_input_tiles_f4(
    planes: &[f32],
    p: &ConvParams,
    (ty, t0, nt): (usize, usize, usize),
    block: &mut [f32],
    to: Dest,
) {
    let (h, w, pad) = (p.in_h, p.in_w, p.padding as isize);
    // Padded columns 4 t0 .. 4 t0 + width are input columns from x0; rows
    // and columns in the padding are zero.
    let width = 4 * nt + 2;
    let x0 = (4 * t0) as isize - pad;
    let rows: [Option<usize>; 6] = std::array::from_fn(|i| {
        let iy = (4 * ty + i) as isize - pad;
        (0..h as isize).contains(&iy).then_some(iy as usize)
    });
    // Rows 30 floats longer than a run's columns: the AVX2 steps read eight
    // from each of eight tiles' starts, past the run's end in its last group.
    let mut d = [[0f32; 4 * BLOCK + 32]; 6];
    let mut r = [[0f32; 4 * BLOCK + 32]; 6];
    for (c, plane) in planes.chunks_exact(h * w).enumerate() {
        // B^T d, down the rows.
        let input = std::array::from_fn(|i| rows[i].map(|iy| &plane[iy * w..][..w]));
        if to.avx2 {
            // SAFETY: the CPU has AVX2 (`Winograd::new` checked); `r`'s rows
            // hold `width + 7` floats.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                x86::bt_down_f4(input, x0, width, &mut r)
            };
        } else {
            bt_down_f4(input, x0, width, &mut d, &mut r);
        }
        // (B^T d) B, across the columns, written straight into each position.
        let block = &mut block[c * to.channel_step..];
        for (k, r) in r.iter().enumerate() {
            let (stride, at) = (to.stride, to.at);
            #[cfg(target_arch = "x86_64")]
            if to.avx2 {
                // SAFETY: the CPU has AVX2 (`Winograd::new` checked); `r`
                // holds `4 * BLOCK + 32` floats (`nt <= BLOCK`), and
                // position `6k + j`'s columns `at .. at + nt` lie in `block`.
                unsafe { x86::bt_across_f4(r, nt, &mut block[6 * k * stride + at..], stride) };
                continue;
            }
            bt_across::<0>(r, column(block, stride, 6 * k, at, nt));
            bt_across::<1>(r, column(block, stride, 6 * k + 1, at, nt));
            bt_across::<2>(r, column(block, stride, 6 * k + 2, at, nt));
            bt_across::<3>(r, column(block, stride, 6 * k + 3, at, nt));
            bt_across::<4>(r, column(block, stride, 6 * k + 4, at, nt));
            bt_across::<5>(r, column(block, stride, 6 * k + 5, at, nt));
        }
    }
}

/// `B^T d` of F(4x4, 3x3) down the rows: `r[k][x] = bt::<k>(d[i][x] for
/// i < 6)` for `x < width`, row `i` of `d` being `input[i]` (`None`: all
/// padding) from column `x0`, zero outside it. `d` is the padded rows'
/// space, its columns outside the input zero from the start.
fn bt_down_f4(
    input: [Option<&[f32]>; 6],
    x0: isize,
    width: usize,
    d: &mut [[f32; 4 * BLOCK + 32]; 6],
    r: &mut [[f32; 4 * BLOCK + 32]; 6],
) {
    for (row, input) in d.iter_mut().zip(input) {
        let Some(input) = input else { continue };
        let lo = (-x0).clamp(0, width as isize) as usize;
        let hi = (input.len() as isize - x0).clamp(lo as isize, width as isize) as usize;
        if hi > lo {
            let from = (x0 + lo as isize) as usize;
            row[lo..hi].copy_from_slice(&input[from..][..hi - lo]);
        }
    }
    for x in 0..width {
        let column = [d[0][x], d[1][x], d[2][x], d[3][x], d[4][x], d[5][x]];
        r[0][x] = bt::<0, _>(column);
        r[1][x] = bt::<1, _>(column);
        r[2][x] = bt::<2, _>(column);
        r[3][x] = bt::<3, _>(column);
        r[4][x] = bt::<4, _>(column);
        r[5][x] = bt::<5, _>(column);
    }
}

/// What F(4x4, 3x3)'s transforms compute with: one value, or eight tiles'
/// values in a vector (`x86::V8`), with the same operations in the same
/// order, so that both give the same bits.
pub(crate) trait Lanes: Copy + Add<Output = Self> + Sub<Output = Self>
where
    f32: Mul<Self, Output = Self>,
{
}

impl Lanes for f32 {}

/// [`Lanes`] for a SIMD type `$ty(vector)`: `+`, `-` and `f32 * $ty`, each
/// one instruction (`$add`, `$sub`, `$mul` after `$splat`). For types that
/// exist only inside functions compiled for their instruction set, where
/// the CPU has it.
#[cfg(target_arch = "x86_64")]
macro_rules! simd_lanes {
    ($ty:ident, $add:ident, $sub:ident, $mul:ident, $splat:ident) => {
        impl $crate::kernels::winograd::Lanes for $ty {}

        impl std::ops::Add for $ty {
            type Output = $ty;
            #[inline(always)]
            fn add(self, other: $ty) -> $ty {
                // SAFETY: the type exists only where the CPU has it.
                $ty(unsafe { $add(self.0, other.0) })
            }
        }

        impl std::ops::Sub for $ty {
            type Output = $ty;
            #[inline(always)]
            fn sub(self, other: $ty) -> $ty {
                // SAFETY: the type exists only where the CPU has it.
                $ty(unsafe { $sub(self.0, other.0) })
            }
        }

        impl std::ops::Mul<$ty> for f32 {
            type Output = $ty;
            #[inline(always)]
            fn mul(self, v: $ty) -> $ty {
                // SAFETY: the type exists only where the CPU has it.
                $ty(unsafe { $mul($splat(self), v.0) })
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use simd_lanes;

/// Row `I` of F(4x4, 3x3)'s `A^T` applied to six values.
#[inline(always)]
pub(crate) fn at<const I: usize, T: Lanes>([m0, m1, m2, m3, m4, m5]: [T; 6]) -> T
where
    f32: Mul<T, Output = T>,
{
    // The rows share their sums and differences (13 operations for all
    // four where the rows as written take 17).
    let (sum, diff) = ((m1 + m2, m3 + m4), (m1 - m2, m3 - m4));
    match I {
        0 => m0 + sum.0 + sum.1,
        1 => diff.0 + 2.0 * diff.1,
        2 => sum.0 + 4.0 * sum.1,
        _ => diff.0 + 8.0 * diff.1 + m5,
    }
}

/// Row `J` of F(4x4, 3x3)'s `B^T` applied to six values.
#[inline(always)]
pub(crate) fn bt<const J: usize, T: Lanes>([c0, c1, c2, c3, c4, c5]: [T; 6]) -> T
where
    f32: Mul<T, Output = T>,
{
    // Rows 0, 3 and 4 share `c4 - c2`, rows 3 to 5 `c1 - c3` (19
    // operations for all six where the rows as written take 24):
    // `4 c0 - 5 c2 + c4 = 4 (c0 - c2) + (c4 - c2)`, and
    // `4 c1 - 5 c3 + c5 = 4 (c1 - c3) + (c5 - c3)`.
    let (t, u) = (c4 - c2, c1 - c3);
    match J {
        0 => 4.0 * (c0 - c2) + t,
        1 => c3 + c4 - 4.0 * (c1 + c2),
        2 => 4.0 * (c1 - c2) + (c4 - c3),
        3 => t - 2.0 * u,
        4 => t + 2.0 * u,
        _ => 4.0 * u + (c5 - c3),
    }
}

/// Row `J` of `B^T` across a row of padded columns: tile `t` of `out`
/// from columns `4t .. 4t + 6` of `r`.
fn bt_across<const J: usize>(r: &[f32], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(r.windows(6).step_by(4)) {
        *o = bt::<J, _>([c[0], c[1], c[2], c[3], c[4], c[5]]);
    }
}

/// `A^T M` of F(4x4, 3x3) down the rows of a run of `nt` tiles, with
///
/// ```text
/// A^T = | 1  1  1  1  1  0 |
///       | 0  1 -1  2 -2  0 |
///       | 0  1  1  4  4  0 |
///       | 0  1 -1  8 -8  1 |
/// ```
///
/// `s[j][i][t] = at::<i>(m[6r + j][t] for r < 6)`, position `ξ`'s values
/// at `block[ξ * stride ..]`.
fn at_down_f4(block: &[f32], stride: usize, nt: usize, s: &mut [[[f32; BLOCK + 8]; 4]; 6]) {
    let m = |xi: usize| &block[xi * stride..][..nt];
    for (j, [s0, s1, s2, s3]) in s.iter_mut().enumerate() {
        let (m0, m1, m2) = (m(j), m(6 + j), m(12 + j));
        let (m3, m4, m5) = (m(18 + j), m(24 + j), m(30 + j));
        for t in 0..nt {
            let column = [m0[t], m1[t], m2[t], m3[t], m4[t], m5[t]];
            s0[t] = at::<0, _>(column);
            s1[t] = at::<1, _>(column);
            s2[t] = at::<2, _>(column);
            s3[t] = at::<3, _>(column);
        }
    }
}

/// `row[4t + c] = at::<c>(columns[..][t]) + bias` for as many columns as
/// `row` has: `(A^T M) A` across one output row of a run of tiles, then
/// the bias.
fn at_across_f4(columns: [&[f32; BLOCK + 8]; 6], bias: f32, row: &mut [f32]) {
    let [a0, a1, a2, a3, a4, a5] = columns;
    for (t, y) in row.chunks_mut(4).enumerate() {
        let m = [a0[t], a1[t], a2[t], a3[t], a4[t], a5[t]];
        let four = [at::<0, _>(m), at::<1, _>(m), at::<2, _>(m), at::<3, _>(m)];
        for (y, v) in y.iter_mut().zip(four) {
            *y = v + bias;
        }
    }
}

/// The transforms on AVX2, eight tiles a vector.
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;
