//! Convolutions on channel-blocked activations: `[N][C / 16][H][W][16]`
//! (NCHW16c, the layout of oneDNN and ONNX Runtime's MLAS), where the 16
//! channels of a block lie together at each pixel.
//!
//! In that layout the kernel packs nothing while the layer runs. Output
//! channels are the vector side: each panel of 32 (or 16) output channels
//! keeps its weights as `[in][tap][32]`, two vectors an input channel and
//! tap, packed once. The input supplies the broadcasts: for a tile of `PX`
//! output pixels, input channel `c` at tap `(ky, kx)` of pixel `j` is one
//! float of channel block `c / 16`, and the tile's pixels lie `stride`
//! pixels apart. A tile keeps `PX x 2` vector accumulators and sums over
//! the input channel blocks, taps and channels in that order, so every
//! output is one chain of fused multiply-adds, the same on every
//! instruction set and for any number of threads. On NCHW activations the
//! same broadcasts would come from a different row per input channel, each
//! a page or more from the next: half the speed.
//!
//! Tiles of a 1x1 stride-1 layer run along the flattened image; others keep
//! each tile within an output row, and rows of half a tile pair up.
//!
//! [`BlockedConv::forward`] runs on blocked tensors, and
//! [`Conv2d::forward`](super::Conv2d::forward) with this strategy on NCHW
//! ones: it copies each image once into a zero-padded blocked
//! buffer and stores each tile's outputs back into NCHW rows, which is
//! [`ConvStrategy::Blocked`](super::ConvStrategy::Blocked): for the strided
//! 3x3 layers that copy costs less than packing their patches did.
//!
//! A network whose early stages run blocked (the compiler's
//! `passes::layouts` decides) holds a [`BlockedLayer`] per convolution
//! there: these kernels, on a zero-padded copy where the layer pads, or
//! [`winograd::BlockedWinograd`] for its 3x3 stride-1 layers.

use super::conv::{bias_or_zeros, ConvParams, Shortcut};
use super::gemm::{Isa, SendPtr};
use super::pages::HugeBuf;
use super::parallel::on_each;
use ndarray::{ArrayView1, ArrayView4, ArrayViewMut4};

mod layer;
mod stem;
pub mod winograd;

pub use layer::{BlockedLayer, BlockedStrategy};
pub use stem::BlockedStem;

/// Channels per block.
pub const BLOCK: usize = 16;

/// Copies `x` (`[N, C, H, W]`, `C` a multiple of [`BLOCK`]) into `out` as
/// `[N][C / 16][H][W][16]`.
///
/// # Panics
/// If `C` is not a multiple of [`BLOCK`] or `out` does not hold `x.len()` floats.
pub fn to_blocked(x: ArrayView4<f32>, out: &mut [f32]) {
    let x = x.as_standard_layout();
    let planar = x.as_slice().expect("a standard layout");
    for_each_place(x.dim(), out.len(), |p, b| out[b] = planar[p]);
}

/// Copies a blocked tensor (`[N][C / 16][H][W][16]`) into `out` (`[N, C, H, W]`,
/// in standard layout).
///
/// # Panics
/// As [`to_blocked`], the other way round; or if `out` is not in standard layout.
pub fn to_planar(x: &[f32], mut out: ArrayViewMut4<f32>) {
    let dim = out.dim();
    let planar = out.as_slice_mut().expect("a standard layout");
    for_each_place(dim, x.len(), |p, b| planar[p] = x[b]);
}

/// Calls `f(planar, blocked)` with each element's index in the two layouts
/// of a `dim` tensor, checking that the blocked one holds `len` floats.
fn for_each_place(dim: (usize, usize, usize, usize), len: usize, mut f: impl FnMut(usize, usize)) {
    let (n, c, h, w) = dim;
    assert!(
        c % BLOCK == 0,
        "{c} channels do not split into blocks of {BLOCK}"
    );
    assert_eq!(len, n * c * h * w, "a blocked copy of {dim:?}");
    let hw = h * w;
    for (image, channel) in (0..n).flat_map(|i| (0..c).map(move |c| (i, c))) {
        let planar = (image * c + channel) * hw;
        let blocked = (image * c + channel / BLOCK * BLOCK) * hw + channel % BLOCK;
        for pixel in 0..hw {
            f(planar + pixel, blocked + pixel * BLOCK);
        }
    }
}

/// Where a blocked convolution's input and output lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BlockedIo {
    /// The input already has the layer's zero padding around each plane
    /// (`[N][C / 16][H + 2p][W + 2p][16]`), so nothing is copied.
    pub padded_input: bool,
    /// The layout of the output (and of its residual).
    pub output: BlockedOutput,
}

/// The layout a blocked convolution writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BlockedOutput {
    /// `[N][C / 16][H][W][16]`.
    #[default]
    Blocked,
    /// Blocked with a one-pixel border of zeros around each plane
    /// (`[N][C / 16][H + 2][W + 2][16]`), for a padded layer to read
    /// without a copy.
    Padded,
    /// NCHW.
    Planar,
}

/// The narrowest output rows [`ConvStrategy::Blocked`](super::ConvStrategy::Blocked)
/// is chosen for: two AVX-512 tiles. In the network, ResNet-50's strided
/// 3x3 layer to 28x28 is 8 to 11% faster than the patch GEMM at batch 1
/// and 18% at batch 8. The one to 14x14, 12% faster alone, is not in the
/// network, where its 2.4 MB of weights stream from memory rather than
/// cache. At 7x7 an image is four tiles, each 590 KiB panel of a 3x3
/// layer's weights streaming in for 49 pixels: since the blocked tiles
/// read in place and stream the next panel in under a panel's later
/// tiles, the 512-channel layer alone takes 0.78 ms there against the
/// patch GEMM's 0.87 at batch 1 (6.3 against 6.2 at batch 8). In ResNet-50,
/// with its filters made from the blocked packing for batch 8's Winograd
/// ([`ConvStrategy::WinogradOnTheFly`](super::ConvStrategy::WinogradOnTheFly)),
/// its two such layers were no faster at batch 1 (1.79-1.86 against
/// 1.81-1.83 ms), where its weights come from memory, and the pass at
/// batch 8 was 4% slower (that gather not tuned): the patch GEMM stays.
pub const MIN_ROW: usize = 28;

/// Tiles a thread's chunk must average for threads to share a layer's
/// tiles rather than its panels where the weights outweigh the input
/// ([`BlockedConv::run`]). At ResNet-50's 14x14 stage at batch 1 (seven
/// tiles a thread in chunks of 4 to 18) the input's other half, written
/// by the other core, cost more than streaming in all the weights: its
/// five 1024->256 layers 1.71-1.84 -> 1.55-1.61 ms, the pass 1.4% faster.
/// At 7x7 (two tiles a thread at batch 1, chunks of 3 of sixteen at batch
/// 8) the strided 3x3 layer went from 0.83-0.92 to 1.00-1.03 ms at batch 1
/// and from 5.8 to 7.2-7.5 ms at batch 8.
const TILES_PER_SWEEP: usize = 3;

/// An ungrouped convolution on channel counts that are multiples of
/// [`BLOCK`], with its bias and epilogue: `relu?(conv(x) + bias + residual)`.
#[derive(Clone, Debug)]
pub struct BlockedConv {
    params: ConvParams,
    isa: Isa,
    /// Output channels per panel of weights; a last panel of an odd number
    /// of blocks holds 16.
    panel: usize,
    /// The panels one after another, each `[in / 16][tap][16][width]`.
    weights: HugeBuf,
    bias: Vec<f32>,
    /// Tap `(ky, kx)`'s offset from tap `(0, 0)` in the input the kernel
    /// reads (padded, for [`BlockedConv::forward_planar`]), in floats.
    taps: Vec<usize>,
}

impl BlockedConv {
    /// Packs `weight` (`[out, in, k, k]`) for `isa`, a panel at a time (a
    /// panel's output channels are neighbouring rows of the weight), into
    /// a buffer of huge pages (see the `pages` module), which the kernels
    /// stream from at batch 1.
    ///
    /// # Panics
    /// If `params` is grouped or its channel counts are not multiples of
    /// [`BLOCK`], if `weight` or `bias` does not match it, or if `isa` is
    /// not supported by this CPU.
    pub fn new(
        isa: Isa,
        params: ConvParams,
        weight: ArrayView4<f32>,
        bias: Option<ArrayView1<f32>>,
    ) -> Self {
        let ConvParams {
            in_channels: cin,
            out_channels: cout,
            kernel: k,
            ..
        } = params;
        assert!(
            Self::fits(&params),
            "not an ungrouped convolution on blocks of {BLOCK} channels: {params:?}"
        );
        assert_eq!(weight.dim(), (cout, cin, k, k), "weight of {params:?}");
        assert!(isa.is_supported(), "{isa:?} is not supported by this CPU");
        let panel = match isa {
            Isa::Avx512 => 2 * BLOCK,
            Isa::Avx2 | Isa::Portable => BLOCK,
        };
        // Each panel of `width` output channels becomes rows of `width`,
        // one per input channel block, tap and lane in that order.
        let depth = cin * k * k;
        let source = weight.as_standard_layout();
        let source = source.as_slice().expect("a standard layout");
        let mut weights = HugeBuf::zeros(source.len());
        for (packed, rows) in weights
            .chunks_mut(panel * depth)
            .zip(source.chunks(panel * depth))
        {
            let width = packed.len() / depth;
            let order = (0..cin / BLOCK).flat_map(|block| {
                (0..k * k)
                    .flat_map(move |tap| (0..BLOCK).map(move |lane| (block * BLOCK + lane, tap)))
            });
            for (row, (i, tap)) in packed.chunks_exact_mut(width).zip(order) {
                for (o, v) in row.iter_mut().enumerate() {
                    *v = rows[o * depth + i * k * k + tap];
                }
            }
        }
        let width = params.in_w + 2 * params.padding;
        let taps = (0..k)
            .flat_map(|ky| (0..k).map(move |kx| (ky * width + kx) * BLOCK))
            .collect();
        BlockedConv {
            params,
            isa,
            panel,
            weights,
            bias: bias_or_zeros(bias, &params),
            taps,
        }
    }

    /// Whether `params` can run blocked: ungrouped, on channel counts that
    /// are multiples of [`BLOCK`].
    pub fn fits(params: &ConvParams) -> bool {
        let (cin, cout) = (params.in_channels, params.out_channels);
        params.groups == 1 && cin % BLOCK == 0 && cout % BLOCK == 0 && cin > 0 && cout > 0
    }

    /// The convolution's shape.
    pub fn params(&self) -> &ConvParams {
        &self.params
    }

    /// Pixels per tile on this instruction set.
    fn tile_len(&self) -> usize {
        match self.isa {
            Isa::Avx512 => 14,
            Isa::Avx2 => 6,
            Isa::Portable => 8,
        }
    }

    /// Floats of workspace that a [`Conv2d`](super::Conv2d) with this
    /// strategy needs, on NCHW tensors: one image's padded, blocked copy,
    /// and room to start it on a cache line.
    pub fn workspace_len(&self) -> usize {
        let p = &self.params;
        p.in_channels * (p.in_h + 2 * p.padding) * (p.in_w + 2 * p.padding) + BLOCK
    }

    /// What every tile of a call shares, reading an input of
    /// `(in_h, in_w)` pixels (padded or not) and writing blocked or
    /// planar output.
    fn plan(&self, (in_h, in_w): (usize, usize), planar: bool, padded_out: bool) -> Plan {
        let p = &self.params;
        let (oh, ow) = p.out_hw();
        let px = self.tile_len();
        // A 1x1 stride-1 layer's tiles run along the image, others' within
        // an output row; output rows of half a tile pair up, and a tile
        // then reads the second row's pixels from one jump further on. A
        // padded output's rows are apart, so its tiles keep to a row.
        let flat = p.kernel == 1 && p.stride == 1 && in_w == ow && !padded_out;
        let per_row = if flat { oh * ow } else { ow };
        let pair = !flat && !padded_out && 2 * ow == px;
        let border = usize::from(padded_out);
        let (out_h, out_w) = (oh + 2 * border, ow + 2 * border);
        let tiles_per_row = per_row.div_ceil(px);
        let rows = oh * ow / per_row;
        Plan {
            px,
            per_row,
            tiles_per_row,
            pair,
            stride: p.stride,
            rows,
            tiles: if pair {
                rows.div_ceil(2)
            } else {
                rows * tiles_per_row
            },
            in_row: if flat { oh * ow } else { in_w * p.stride },
            jump: if flat {
                0
            } else {
                (in_w - ow) * p.stride * BLOCK
            },
            in_len: p.in_channels * in_h * in_w,
            out_len: p.out_channels * out_h * out_w,
            x_plane: BLOCK * in_h * in_w,
            out_block: BLOCK * out_h * out_w,
            out_row: out_w,
            out_first: border * out_w + border,
            out_px: if planar { 1 } else { BLOCK },
            planar,
        }
    }

    /// `out = relu?(conv(x) + bias + residual)` for `n` images, all of
    /// `x`, `out` and `residual` blocked (`[N][C / 16][H][W][16]`).
    ///
    /// # Panics
    /// If the convolution pads its input, or a slice's length does not
    /// match `n` images of its shape.
    pub fn forward(
        &self,
        x: &[f32],
        n: usize,
        out: &mut [f32],
        residual: Option<&[f32]>,
        relu: bool,
        threads: usize,
    ) {
        let p = &self.params;
        assert_eq!(p.padding, 0, "a blocked input is not padded: {p:?}");
        let shortcut = match residual {
            Some(r) => Shortcut::Add(r, p.out_channels),
            None => Shortcut::None,
        };
        // Unpadded, it needs no workspace.
        let epilogue = (relu, BlockedIo::default());
        self.forward_blocked(x, n, out, shortcut, epilogue, &mut [], threads);
    }

    /// As [`BlockedConv::forward`], for a convolution that may pad its
    /// input, with the input and output as `io` says: a padded input that
    /// is not already padded is first copied, image by image and
    /// zero-padded, into `workspace` ([`BlockedConv::workspace_len`]); a
    /// padded output gets its border of zeros. With [`Shortcut::InPlace`]
    /// the residual is what `out` holds on entry. Allocates nothing.
    ///
    /// # Panics
    /// If a slice's length does not match `n` images of its shape, a
    /// residual has fewer channels than the output or goes with a padded
    /// output, or `workspace` is too short.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_blocked(
        &self,
        x: &[f32],
        n: usize,
        out: &mut [f32],
        shortcut: Shortcut,
        (relu, io): (bool, BlockedIo),
        workspace: &mut [f32],
        threads: usize,
    ) {
        let p = &self.params;
        let pad = if io.padded_input { p.padding } else { 0 };
        let image_len = p.in_channels * (p.in_h + 2 * pad) * (p.in_w + 2 * pad);
        assert_eq!(x.len(), n * image_len, "input of {n} images of {p:?}");
        if let Shortcut::Add(r, channels) = shortcut {
            assert_eq!(channels, p.out_channels, "a residual of every channel");
            assert_eq!(r.len(), out.len(), "residual of {n} images of {p:?}");
        }
        let padded_out = io.output == BlockedOutput::Padded;
        assert!(
            !padded_out || matches!(shortcut, Shortcut::None),
            "a padded output adds no residual"
        );
        let planar = io.output == BlockedOutput::Planar;
        if p.padding == 0 || io.padded_input {
            let plan = self.plan((p.in_h + 2 * pad, p.in_w + 2 * pad), planar, padded_out);
            assert_eq!(out.len(), n * plan.out_len, "output of {n} images of {p:?}");
            self.run(&plan, n, x, out, shortcut, relu, threads);
            if padded_out {
                self.zero_border(out, n, threads);
            }
            return;
        }
        let padded = (p.in_h + 2 * p.padding, p.in_w + 2 * p.padding);
        let plan = self.plan(padded, planar, padded_out);
        assert_eq!(out.len(), n * plan.out_len, "output of {n} images of {p:?}");
        let io = (x, &mut *out, shortcut, plan.out_len);
        self.run_padded(Source::Blocked, &plan, io, relu, workspace, threads);
        if padded_out {
            self.zero_border(out, n, threads);
        }
    }

    /// Zeros the one-pixel border of each of `n` images' output planes
    /// (`[C / 16][OH + 2][OW + 2][16]`), around what the tiles wrote.
    fn zero_border(&self, out: &mut [f32], n: usize, threads: usize) {
        let (oh, ow) = self.params.out_hw();
        let row = (ow + 2) * BLOCK;
        let planes = n * self.params.out_channels / BLOCK;
        let threads = threads.clamp(1, planes);
        let out = SendPtr(out.as_mut_ptr());
        on_each(threads, |t| {
            for i in t * planes / threads..(t + 1) * planes / threads {
                // SAFETY: each thread writes its own planes of the output,
                // which holds `planes` of `oh + 2` rows.
                let plane = unsafe {
                    std::slice::from_raw_parts_mut(out.add(i * (oh + 2) * row).0, (oh + 2) * row)
                };
                let (top, rest) = plane.split_at_mut(row);
                let (inside, bottom) = rest.split_at_mut(oh * row);
                top.fill(0.0);
                bottom.fill(0.0);
                for r in inside.chunks_exact_mut(row) {
                    r[..BLOCK].fill(0.0);
                    r[row - BLOCK..].fill(0.0);
                }
            }
        });
    }

    /// `out = relu?(conv(x) + bias + shortcut)` for `n` images, `x`, `out`
    /// and the shortcut's residual in NCHW (as
    /// [`Conv2d::forward`](super::Conv2d::forward), whose residual may have
    /// fewer channels than the output). Each image is first copied, padded
    /// and blocked, into `workspace` ([`BlockedConv::workspace_len`]).
    /// Allocates nothing.
    ///
    /// # Panics
    /// If a slice's length does not match `n` images of its shape, or
    /// `workspace` is too short.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_planar(
        &self,
        x: &[f32],
        n: usize,
        out: &mut [f32],
        shortcut: Shortcut,
        relu: bool,
        workspace: &mut [f32],
        threads: usize,
    ) {
        let p = &self.params;
        let padded = (p.in_h + 2 * p.padding, p.in_w + 2 * p.padding);
        let plan = self.plan(padded, true, false);
        let image_len = p.in_channels * p.in_h * p.in_w;
        assert_eq!(x.len(), n * image_len, "input of {n} images of {p:?}");
        assert_eq!(out.len(), n * plan.out_len, "output of {n} images of {p:?}");
        // Floats of one image's residual, whose channels may be fewer.
        let res_len = match shortcut {
            Shortcut::Add(r, channels) => {
                let len = channels * (plan.out_len / p.out_channels);
                assert_eq!(r.len(), n * len, "residual of {n} images of {p:?}");
                len
            }
            Shortcut::None | Shortcut::InPlace => 0,
        };
        let io = (x, out, shortcut, res_len);
        self.run_padded(Source::Planar, &plan, io, relu, workspace, threads);
    }

    /// Runs `plan` image by image, each first copied, zero-padded and
    /// blocked, into `workspace`: `(x, out, shortcut, residual_len)`, the
    /// input in `source`'s layout, the output as `plan` writes it, and the
    /// residual of `residual_len` floats an image.
    fn run_padded(
        &self,
        source: Source,
        plan: &Plan,
        (x, out, shortcut, residual_len): (&[f32], &mut [f32], Shortcut, usize),
        relu: bool,
        workspace: &mut [f32],
        threads: usize,
    ) {
        let p = &self.params;
        let image_len = p.in_channels * p.in_h * p.in_w;
        let start = workspace.as_ptr().align_offset(64).min(BLOCK);
        let copy = &mut workspace[start..start + plan.in_len];
        for (image, (x, out)) in x
            .chunks_exact(image_len)
            .zip(out.chunks_exact_mut(plan.out_len))
            .enumerate()
        {
            self.pad(source, x, copy, threads);
            let shortcut = match shortcut {
                Shortcut::Add(r, channels) => {
                    Shortcut::Add(&r[image * residual_len..][..residual_len], channels)
                }
                other => other,
            };
            self.run(plan, 1, copy, out, shortcut, relu, threads);
        }
    }

    /// Copies one image, NCHW or blocked as `source` says, into `copy`,
    /// zero-padded and blocked.
    fn pad(&self, source: Source, x: &[f32], copy: &mut [f32], threads: usize) {
        let p = &self.params;
        let (h, w, pad) = (p.in_h, p.in_w, p.padding);
        let (hp, wp) = (h + 2 * pad, w + 2 * pad);
        let blocks = p.in_channels / BLOCK;
        let threads = threads.clamp(1, blocks);
        let copy = SendPtr(copy.as_mut_ptr());
        on_each(threads, |t| {
            for block in t * blocks / threads..(t + 1) * blocks / threads {
                // SAFETY: each thread writes its own blocks of the copy,
                // which holds `blocks` planes of `hp * wp` pixels.
                let plane = unsafe {
                    std::slice::from_raw_parts_mut(
                        copy.add(block * hp * wp * BLOCK).0,
                        hp * wp * BLOCK,
                    )
                };
                for (y, row) in plane.chunks_exact_mut(wp * BLOCK).enumerate() {
                    let Some(y) = (y >= pad && y < pad + h).then(|| y - pad) else {
                        row.fill(0.0);
                        continue;
                    };
                    row[..pad * BLOCK].fill(0.0);
                    row[(pad + w) * BLOCK..].fill(0.0);
                    let inside = &mut row[pad * BLOCK..(pad + w) * BLOCK];
                    match source {
                        Source::Planar => {
                            gather_row(self.isa, x, (block * BLOCK * h + y) * w, h * w, inside)
                        }
                        Source::Blocked => {
                            inside.copy_from_slice(&x[(block * h + y) * w * BLOCK..][..w * BLOCK])
                        }
                    }
                }
            }
        });
    }

    /// Runs every tile of `plan` for `n` images of `x` into `out`.
    ///
    /// Threads take runs of tiles, or of panels where each thread would
    /// stream in weights larger than the input for too few tiles; each
    /// thread sweeps every panel of weights over a few tiles at a time, few
    /// enough that their input stays in L2.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        plan: &Plan,
        n: usize,
        x: &[f32],
        out: &mut [f32],
        shortcut: Shortcut,
        relu: bool,
        threads: usize,
    ) {
        let p = &self.params;
        let (tiles, panels) = (n * plan.tiles, p.out_channels.div_ceil(self.panel));
        // Each panel of weights is swept over a chunk of tiles before the
        // next: all of a thread's tiles when threads split the panels, else
        // as many as have new input to fill a quarter of L2 (256 KiB),
        // which then stays there. An output pixel brings in `kernel` rows of
        // `stride` new pixels (a 1x1 layer's stride skips pixels whole, a
        // cache line each): counting `stride^2` made the chunks of the
        // strided 1x1 layers a quarter of that and those of the strided 3x3
        // ones too large (ResNet-50 at batch 8, in the network: its four
        // strided blocked layers 0.85 ms faster together).
        let new_pixels = p.kernel * p.stride.min(p.kernel);
        let in_l2 = (256 * 1024 / (4 * plan.px * new_pixels * p.in_channels)).max(1);
        // Threads that share the tiles each stream in all the weights, once
        // a chunk; threads that share the panels each read all the input,
        // which the layer before wrote from every thread, so that most of
        // it comes from another core's cache (a third of the speed of a
        // read from this core's own). So tiles, where there are enough to
        // share and the weights are the smaller (ResNet at batch 8, and its
        // wide images at batch 1), or where a thread's chunks average
        // [`TILES_PER_SWEEP`] tiles or more (its 14x14 layers at batch 1);
        // else panels (its 7x7 layers, whose 2 to 9 MB of weights would
        // each feed only a tile or two of a thread's).
        let per_thread = tiles.div_ceil(threads.max(1));
        let sweeps = per_thread.div_ceil(in_l2);
        let by_tiles = tiles >= 2 * threads
            && (self.weights.len() <= n * plan.in_len || per_thread >= TILES_PER_SWEEP * sweeps);
        let threads = threads.clamp(1, if by_tiles { tiles } else { panels });
        let depth = p.in_channels * self.taps.len();
        let chunk = if by_tiles { in_l2 } else { tiles };
        let out = SendPtr(out.as_mut_ptr());
        let work = |t: usize| {
            let (tile_range, panel_range) = if by_tiles {
                (t * tiles / threads..(t + 1) * tiles / threads, 0..panels)
            } else {
                (0..tiles, t * panels / threads..(t + 1) * panels / threads)
            };
            for t0 in tile_range.clone().step_by(chunk) {
                let chunk = t0..(t0 + chunk).min(tile_range.end);
                for q in panel_range.clone() {
                    let o0 = q * self.panel;
                    let panel = Panel {
                        k: p.in_channels,
                        taps: &self.taps,
                        width: self.panel.min(p.out_channels - o0),
                        w: self.weights[o0 * depth..].as_ptr(),
                        bias: self.bias[o0..].as_ptr(),
                        first: o0 / BLOCK * plan.out_block,
                        relu,
                    };
                    // The residual's channels from the panel's first on.
                    let shortcut = match shortcut {
                        Shortcut::Add(r, channels) if o0 < channels => {
                            Shortcut::Add(&r[panel.first..], channels - o0)
                        }
                        Shortcut::Add(..) => Shortcut::None,
                        other => other,
                    };
                    for (i, place) in plan.places(chunk.clone()).enumerate() {
                        let far = Far::for_tile(i, chunk.len(), panel.width, self.panel * depth);
                        // SAFETY: each (tile, panel) is one thread's (the ranges
                        // above partition them); the slices' lengths were
                        // checked by the callers.
                        unsafe { self.tile(plan, &panel, &place, x.as_ptr(), out, shortcut, far) };
                    }
                }
            }
        };
        on_each(threads, work);
    }

    /// Computes `panel` of the tile at `place`.
    ///
    /// # Safety
    /// `x` and `out` hold the images of `plan`, and the shortcut's
    /// residual (its channels from the panel's first, and how many there
    /// are) is laid out as `out`; no other thread writes this tile of this
    /// panel at the same time.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn tile(
        &self,
        plan: &Plan,
        panel: &Panel,
        place: &Place,
        x: *const f32,
        out: SendPtr,
        shortcut: Shortcut,
        far: Far,
    ) {
        let (stride, len) = (self.params.stride, place.len);
        // SAFETY: both offsets lie in their images (the tile is one of them).
        let out = unsafe { out.add(panel.first + place.out).0 };
        let (residual, residual_rows) = match shortcut {
            Shortcut::None => (std::ptr::null(), 0),
            Shortcut::Add(r, rows) => (r[place.out..].as_ptr(), rows),
            // The kernels read each output's residual before they store it.
            Shortcut::InPlace => (out.cast_const(), panel.width),
        };
        // SAFETY: the input's offset lies in its image.
        let tile = unsafe {
            Tile {
                x: x.add(place.input),
                x_plane: plan.x_plane,
                out,
                out_block: plan.out_block,
                residual,
                residual_rows,
                jump: plan.jump,
                planar: plan.planar,
                far,
            }
        };
        // SAFETY: the tile's reads stay in its `len` pixels of every
        // channel and tap, and its writes in the same pixels of the panel's
        // channels (the caller's contract); the kernels are for instruction
        // sets this CPU has (checked when packing).
        unsafe {
            match self.isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 if plan.pair && len == plan.px => {
                    x86::avx512_pair(panel, &tile, stride)
                }
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => x86::avx512(panel, &tile, len, stride),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 if plan.pair && len == plan.px => x86::avx2_pair(panel, &tile, stride),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => x86::avx2(panel, &tile, len, stride),
                _ => portable(panel, &tile, len, stride, plan.per_row),
            }
        }
    }
}

/// The layout of an image [`BlockedConv::pad`] copies.
#[derive(Clone, Copy)]
enum Source {
    Planar,
    Blocked,
}

/// What every tile of one call shares.
struct Plan {
    /// Pixels per tile.
    px: usize,
    /// Output pixels per row of tiles: the image (1x1, stride 1) or an output row.
    per_row: usize,
    /// Tiles per row of tiles.
    tiles_per_row: usize,
    /// Whether a tile takes two rows of half a tile each.
    pair: bool,
    /// Input pixels from one output pixel to the next within a row.
    stride: usize,
    /// Rows of tiles per image.
    rows: usize,
    /// Tiles per image.
    tiles: usize,
    /// Input pixels from one row of tiles to the next.
    in_row: usize,
    /// For a tile of two rows: floats from where its second row's first
    /// input pixel would follow the first row's to where it lies.
    jump: usize,
    /// Floats per image of input and output.
    in_len: usize,
    out_len: usize,
    /// Floats from one block of channels to the next, input and output.
    x_plane: usize,
    out_block: usize,
    /// Pixels from one output row to the next (a padded output's are wider).
    out_row: usize,
    /// The first output pixel's place in its plane (past a padded
    /// output's border).
    out_first: usize,
    /// Floats from one output pixel to the next: 16 blocked, 1 planar.
    out_px: usize,
    /// Whether the output is NCHW.
    planar: bool,
}

impl Plan {
    /// Where tiles `tiles` (of all images') lie, in order: each found
    /// from the one before, the first by division.
    fn places(&self, tiles: std::ops::Range<usize>) -> impl Iterator<Item = Place> + '_ {
        let t = tiles.start;
        let (image, t) = (t / self.tiles, t % self.tiles);
        let (rows_per_tile, tiles_per_row) = if self.pair {
            (2, 1)
        } else {
            (1, self.tiles_per_row)
        };
        let mut at = (
            image,
            t / tiles_per_row * rows_per_tile,
            t % tiles_per_row * self.px,
        );
        tiles.map(move |_| {
            let (image, row, col) = at;
            let len = if self.pair {
                self.per_row * (self.rows - row).min(2)
            } else {
                self.px.min(self.per_row - col)
            };
            at = if col + len < self.per_row {
                (image, row, col + len)
            } else if row + rows_per_tile < self.rows {
                (image, row + rows_per_tile, 0)
            } else {
                (image + 1, 0, 0)
            };
            Place {
                out: image * self.out_len
                    + (self.out_first + row * self.out_row + col) * self.out_px,
                input: image * self.in_len + (row * self.in_row + col * self.stride) * BLOCK,
                len,
            }
        })
    }
}

/// Where one tile lies, in floats from the start of the batch: its first
/// output pixel (in channel 0) and first input pixel (in block 0); and
/// its pixels.
struct Place {
    out: usize,
    input: usize,
    len: usize,
}

/// One panel of output channels, as its tiles' kernels see it.
struct Panel<'a> {
    /// Input channels.
    k: usize,
    /// Each tap's offset in the input, in floats.
    taps: &'a [usize],
    /// Output channels: 32 or 16.
    width: usize,
    /// The weights, `[k / 16][tap][16][width]`.
    w: *const f32,
    /// The biases, `width` of them.
    bias: *const f32,
    /// The panel's first output channel, in floats from an image's start.
    first: usize,
    relu: bool,
}

/// Where one tile reads and writes.
#[derive(Clone, Copy)]
struct Tile {
    /// The first input pixel in block 0.
    x: *const f32,
    /// Floats from one input block to the next.
    x_plane: usize,
    /// The first output pixel in the panel's first channel.
    out: *mut f32,
    /// Floats from one block of 16 output channels to the next.
    out_block: usize,
    /// The residual at the first output pixel (laid out as `out`), or null.
    residual: *const f32,
    /// The panel's channels that have a residual (the rest add nothing).
    residual_rows: usize,
    /// For a tile of two rows: floats from where the second row's first
    /// input pixel would follow the first row's to where it lies.
    jump: usize,
    /// Whether the output is NCHW: a channel's pixels lie together, 16
    /// channels to `out_block`.
    planar: bool,
    /// What the steps ask for into L2.
    far: Far,
}

/// What a tile's steps ask for into L2 beside the weights they read: the
/// row `ahead` floats on from each step's, for the lanes (rows of a block)
/// in `lanes`.
///
/// At batch 1 a layer's weights come from beyond L2 on every pass, at
/// about 5 GB/s a core, and a panel's first tile would wait on them while
/// the tiles after it find them in L2. So the first tile asks for its own
/// panel's rows [`FAR_BLOCKS`] blocks ahead, and the tiles after it for
/// the next panel's rows, each a share of the lanes, so that the next
/// panel streams in under the products of all of them rather than of its
/// own first tile. In ResNet-50 at batch 1 (`layer_times`, alternated
/// runs) that took the strided 3x3 layer into 7x7 0.93-0.96 -> 0.85-0.87
/// ms and its 1x1 layers at 14x14 2 to 3% faster; ResNet-18's 3x3 layers
/// at 7x7 2.33-2.43 -> 2.22-2.29 ms; batch 8 unchanged. Winograd's
/// products, two tiles a panel, were no faster so (ResNet-50's five
/// F(2x2) layers 2.26-2.32 -> 2.31-2.45 ms), and keep [`Far::ahead`].
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Far {
    ahead: usize,
    lanes: u16,
}

/// Input blocks ahead that a panel's first tile asks for its weights into
/// L2: 16 KiB of a 32-wide panel. The hardware's prefetcher does not run
/// that far ahead: blocked F(2x2) at 14x14 with cold filters, alone,
/// 0.63-0.65 -> 0.54-0.58 ms; in ResNet-50 at batch 1 its five layers
/// 2.72-2.79 -> 2.41-2.53 ms. Batch 8, whose tiles share each row, is
/// unchanged; 4 and 16 blocks did no better.
const FAR_BLOCKS: usize = 8;

impl Far {
    /// A panel of `width` channels' own rows [`FAR_BLOCKS`] blocks ahead,
    /// every lane.
    fn ahead(width: usize) -> Far {
        Far {
            ahead: FAR_BLOCKS * BLOCK * width,
            lanes: u16::MAX,
        }
    }

    /// For tile `i` of the `tiles` that a panel of `width` channels sweeps
    /// in a row, the next panel's weights `next` floats on from its own:
    /// the first tile [`Far::ahead`]; tile `i` after it the next panel's
    /// rows of the lanes `i - 1` apart from a multiple of `tiles - 1`.
    fn for_tile(i: usize, tiles: usize, width: usize, next: usize) -> Far {
        if i == 0 {
            return Far::ahead(width);
        }
        let lanes = (0..BLOCK)
            .filter(|lane| lane % (tiles - 1) == i - 1)
            .fold(0u16, |m, lane| m | 1 << lane);
        Far { ahead: next, lanes }
    }
}

impl Tile {
    /// The same tile from its `px`-th pixel on, input pixels `stride` apart.
    ///
    /// # Safety
    /// The tile has more than `px` pixels.
    unsafe fn skip(&self, px: usize, stride: usize) -> Tile {
        let out_px = if self.planar { 1 } else { BLOCK };
        // SAFETY: the pixels lie in the tile (the caller's contract).
        unsafe {
            Tile {
                x: self.x.add(px * stride * BLOCK),
                out: self.out.add(px * out_px),
                residual: if self.residual.is_null() {
                    self.residual
                } else {
                    self.residual.add(px * out_px)
                },
                ..*self
            }
        }
    }

    /// Floats from the tile's first input pixel to its `j`-th: `step`
    /// apart, and those from the `second`-th on (a second row's) one jump
    /// further.
    #[inline(always)]
    fn input(&self, j: usize, step: usize, second: usize) -> usize {
        j * step + if j >= second { self.jump } else { 0 }
    }

    /// Where output channel `o` (of the panel) of pixel `j` lies, from `out`.
    fn at(&self, o: usize, j: usize) -> usize {
        let (block, lane) = (o / BLOCK, o % BLOCK);
        if self.planar {
            block * self.out_block + lane * (self.out_block / BLOCK) + j
        } else {
            block * self.out_block + j * BLOCK + lane
        }
    }

    /// Stores `y[j][o]`, the sums plus bias of `len` pixels of `width`
    /// channels, to NCHW output with the residual and clamp.
    ///
    /// # Safety
    /// The tile's output (and residual) holds those pixels and channels.
    unsafe fn store_planar<const W: usize>(&self, y: &[[f32; W]], width: usize, relu: bool) {
        for o in 0..width {
            for (j, y) in y.iter().enumerate() {
                let at = self.at(o, j);
                let mut v = y[o];
                // SAFETY: the caller's contract.
                unsafe {
                    if o < self.residual_rows {
                        v += *self.residual.add(at);
                    }
                    if relu {
                        v = v.max(0.0);
                    }
                    *self.out.add(at) = v;
                }
            }
        }
    }
}

/// Copies 16 channels of one row of an NCHW image into a blocked row:
/// `out[x * 16 + lane] = image[first + lane * plane + x]`.
pub(crate) fn gather_row(isa: Isa, image: &[f32], first: usize, plane: usize, out: &mut [f32]) {
    let w = out.len() / BLOCK;
    assert!(first + 15 * plane + w <= image.len(), "a row of the image");
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the assert above bounds every index; the CPU has AVX-512F
        // (the weights were packed for it).
        Isa::Avx512 => unsafe { x86::gather_row(image[first..].as_ptr(), plane, out) },
        _ => {
            for (x, out) in out.chunks_exact_mut(BLOCK).enumerate() {
                for (lane, out) in out.iter_mut().enumerate() {
                    *out = image[first + lane * plane + x];
                }
            }
        }
    }
}

/// The reference for the SIMD kernels: the same chain of fused
/// multiply-adds per output, then bias, residual and clamp in that order.
///
/// # Safety
/// `t` holds `len` pixels of input, `stride` apart (the pixels from `row`
/// on one jump further), at every tap, and of output and residual, for
/// the panel's channels.
unsafe fn portable(panel: &Panel, t: &Tile, len: usize, stride: usize, row: usize) {
    for j in 0..len {
        let from = t.input(j, stride * BLOCK, row);
        for o in 0..panel.width {
            let mut acc = 0f32;
            for block in 0..panel.k / BLOCK {
                for (tap, &offset) in panel.taps.iter().enumerate() {
                    let w = panel
                        .w
                        .wrapping_add((block * panel.taps.len() + tap) * BLOCK * panel.width);
                    for lane in 0..BLOCK {
                        // SAFETY: pixel `j` of input block `block` at the tap,
                        // and the panel's row for it, lie in the tile (the
                        // caller's contract).
                        unsafe {
                            let x = *t.x.add(block * t.x_plane + offset + from + lane);
                            acc = x.mul_add(*w.add(lane * panel.width + o), acc);
                        }
                    }
                }
            }
            let at = t.at(o, j);
            // SAFETY: as above, for output pixel `j` of channel `o`.
            unsafe {
                let mut v = acc + *panel.bias.add(o);
                if o < t.residual_rows {
                    v += *t.residual.add(at);
                }
                if panel.relu {
                    v = v.max(0.0);
                }
                *t.out.add(at) = v;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Panel, Tile, BLOCK};
    use std::arch::x86_64::*;

    /// Asks for the cache lines where a blocked tile of `px` pixels and
    /// `blocks` blocks of 16 channels will store its outputs (to own them)
    /// and read its residual, so that the epilogue does not wait on them.
    /// A layer's output outgrows L2, and without this the stores stalled
    /// on their misses (64->256 at 56x56, batch 8, alone: 3.36 -> 3.08 ms).
    #[inline(always)]
    fn prefetch_output(t: &Tile, px: usize, blocks: usize) {
        if t.planar {
            return;
        }
        for v in 0..blocks {
            for j in 0..px {
                let at = v * t.out_block + j * BLOCK;
                // SAFETY: a prefetch never faults, whatever the address.
                unsafe {
                    _mm_prefetch::<_MM_HINT_ET0>(t.out.wrapping_add(at).cast_const().cast());
                    if !t.residual.is_null() {
                        _mm_prefetch::<_MM_HINT_T0>(t.residual.wrapping_add(at).cast());
                    }
                }
            }
        }
    }

    /// What step `lane` of tile `t` asks for ahead: its pixel of the next
    /// input block (`next`; pixel `lane` of `px`, as [`Tile::input`] places
    /// it with `step` and `second`), its row of the panel's weights one
    /// block on (`w` the block's first row, `blocks` vectors of 16 a row),
    /// and into L2 the row `t.far` says ([`super::Far`]). A tile reads each
    /// block's pixels from `px` cache lines at once, and the weights stream
    /// from L2 (1024->256 at 14x14, batch 8, alone: 2.57 -> 2.44 ms;
    /// 256->64 at 56x56: 2.68 -> 2.53 ms), or from beyond it at batch 1.
    #[inline(always)]
    fn prefetch_step(
        t: &Tile,
        next: *const f32,
        w: *const f32,
        lane: usize,
        (px, step, second): (usize, usize, usize),
        blocks: usize,
    ) {
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe {
            if lane < px {
                let at = t.input(lane, step, second);
                _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(at).cast());
            }
            for v in 0..blocks {
                let ahead = w.wrapping_add((BLOCK + lane) * blocks * 16 + v * 16);
                _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                if t.far.lanes & (1 << lane) != 0 {
                    let far = w.wrapping_add(t.far.ahead + lane * blocks * 16 + v * 16);
                    _mm_prefetch::<_MM_HINT_T1>(far.cast());
                }
            }
        }
    }

    /// A tile of `len` pixels, `stride` apart in the input, in the
    /// kernel's tile sizes: 14 pixels at a time, then 7, 4, 2, 1.
    ///
    /// # Safety
    /// As [`super::portable`]; the CPU supports AVX-512F.
    #[inline]
    pub(super) unsafe fn avx512(panel: &Panel, t: &Tile, len: usize, stride: usize) {
        let px = [14, 7, 4, 2, 1]
            .into_iter()
            .find(|&px| px <= len)
            .expect("1 divides everything");
        // SAFETY: the tile's first `px` pixels (the caller's contract).
        unsafe {
            macro_rules! go {
                ($($px:literal)*) => {
                    match (px, stride, panel.width) {
                        $(
                            ($px, 1, 32) => avx512_tile::<$px, 1, 2, $px>(panel, t, 1),
                            ($px, 1, _) => avx512_tile::<$px, 1, 1, $px>(panel, t, 1),
                            ($px, 2, 32) => avx512_tile::<$px, 2, 2, $px>(panel, t, 2),
                            ($px, 2, _) => avx512_tile::<$px, 2, 1, $px>(panel, t, 2),
                            ($px, _, 32) => avx512_tile::<$px, 0, 2, $px>(panel, t, stride),
                            ($px, _, _) => avx512_tile::<$px, 0, 1, $px>(panel, t, stride),
                        )*
                        _ => unreachable!("tile sizes are listed above"),
                    }
                };
            }
            go!(14 7 4 2 1);
        }
        // The caller's tile is read in place, not copied: a copy, loaded in
        // 16-byte halves of what the caller has just stored 8 bytes at a
        // time, waits for the stores to reach the cache, on every tile.
        if px < len {
            // SAFETY: the rest of the tile (the caller's contract).
            unsafe { avx512(panel, &t.skip(px, stride), len - px, stride) };
        }
    }

    /// A tile of two rows of 7 pixels.
    ///
    /// # Safety
    /// As [`avx512`], for 14 pixels, the last 7 one jump further on.
    #[inline]
    pub(super) unsafe fn avx512_pair(panel: &Panel, t: &Tile, stride: usize) {
        // SAFETY: the caller's contract.
        unsafe {
            match (stride, panel.width) {
                (1, 32) => avx512_tile::<14, 1, 2, 7>(panel, t, 1),
                (1, _) => avx512_tile::<14, 1, 1, 7>(panel, t, 1),
                (2, 32) => avx512_tile::<14, 2, 2, 7>(panel, t, 2),
                (2, _) => avx512_tile::<14, 2, 1, 7>(panel, t, 2),
                (_, 32) => avx512_tile::<14, 0, 2, 7>(panel, t, stride),
                _ => avx512_tile::<14, 0, 1, 7>(panel, t, stride),
            }
        }
    }

    /// `PX` pixels `stride` apart (`S`, or `stride` where `S` is 0), those
    /// from the `A`-th on one jump further; `V` vectors of 16 output
    /// channels; then the epilogue (bias, residual, clamp) and the store.
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn avx512_tile<const PX: usize, const S: usize, const V: usize, const A: usize>(
        panel: &Panel,
        t: &Tile,
        stride: usize,
    ) {
        let step = if S == 0 { stride } else { S } * BLOCK;
        prefetch_output(t, PX, V);
        let mut acc = [[_mm512_setzero_ps(); V]; PX];
        let mut w = panel.w;
        for block in 0..panel.k / BLOCK {
            for &tap in panel.taps {
                // SAFETY: block `block` of the input at this tap, and its 16
                // rows of the panel, lie in the tile (the caller's contract).
                unsafe {
                    let x = t.x.add(block * t.x_plane + tap);
                    let next = x.wrapping_add(t.x_plane);
                    for lane in 0..BLOCK {
                        prefetch_step(t, next, w, lane, (PX, step, A), V);
                        let mut wv = [_mm512_setzero_ps(); V];
                        for (v, wv) in wv.iter_mut().enumerate() {
                            *wv = _mm512_loadu_ps(w.add((lane * V + v) * 16));
                        }
                        for (j, acc) in acc.iter_mut().enumerate() {
                            let at = t.input(j, step, A);
                            let xj = _mm512_set1_ps(*x.add(at + lane));
                            for v in 0..V {
                                acc[v] = _mm512_fmadd_ps(xj, wv[v], acc[v]);
                            }
                        }
                    }
                    w = w.add(BLOCK * V * 16);
                }
            }
        }
        let zero = _mm512_setzero_ps();
        if t.planar {
            let mut y = [[0f32; 32]; PX];
            for v in 0..V {
                // SAFETY: the panel has `V * 16` biases; `y` rows hold 32.
                unsafe {
                    let bias = _mm512_loadu_ps(panel.bias.add(v * 16));
                    for (y, acc) in y.iter_mut().zip(&acc) {
                        _mm512_storeu_ps(y[v * 16..].as_mut_ptr(), _mm512_add_ps(acc[v], bias));
                    }
                }
            }
            // SAFETY: the tile's output holds its pixels (the caller's contract).
            unsafe { store_planar(t, &y, V * 16, panel.relu) };
            return;
        }
        for v in 0..V {
            // SAFETY: the panel has `V * 16` biases; output block `v` of the
            // panel holds the tile's `PX` pixels (the caller's contract).
            unsafe {
                let bias = _mm512_loadu_ps(panel.bias.add(v * 16));
                for (j, acc) in acc.iter().enumerate() {
                    let at = v * t.out_block + j * BLOCK;
                    let mut y = _mm512_add_ps(acc[v], bias);
                    if !t.residual.is_null() {
                        y = _mm512_add_ps(y, _mm512_loadu_ps(t.residual.add(at)));
                    }
                    if panel.relu {
                        y = _mm512_max_ps(y, zero);
                    }
                    _mm512_storeu_ps(t.out.add(at), y);
                }
            }
        }
    }

    /// [`Tile::store_planar`] on AVX-512, to the same bits: each channel's
    /// `PX` sums gathered from `y`, then one masked load of its residual
    /// and one masked store, the tile's pixels lying together in NCHW rows.
    ///
    /// # Safety
    /// As [`Tile::store_planar`]; `PX <= 16`; the CPU supports AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn store_planar<const PX: usize>(
        t: &Tile,
        y: &[[f32; 32]; PX],
        width: usize,
        relu: bool,
    ) {
        let mask: __mmask16 = ((1u32 << PX) - 1) as __mmask16;
        let rows = _mm512_mullo_epi32(
            _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
            _mm512_set1_epi32(32),
        );
        let zero = _mm512_setzero_ps();
        for o in 0..width {
            let at = t.at(o, 0);
            // SAFETY: `y` holds `PX` rows of 32 (the mask keeps to them);
            // channel `o`'s `PX` outputs (and residuals) lie together from
            // `at` (the caller's contract).
            unsafe {
                let base = y.as_ptr().cast::<f32>().add(o);
                let mut v = _mm512_mask_i32gather_ps::<4>(zero, mask, rows, base.cast());
                if o < t.residual_rows {
                    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, t.residual.add(at)));
                }
                if relu {
                    v = _mm512_max_ps(v, zero);
                }
                _mm512_mask_storeu_ps(t.out.add(at), mask, v);
            }
        }
    }

    /// As [`avx512`] on AVX2: tiles of 6 pixels (then 4, 2, 1) and 16 channels.
    ///
    /// # Safety
    /// As [`super::portable`], for a panel of 16 channels; the CPU supports
    /// AVX2 and FMA.
    #[inline]
    pub(super) unsafe fn avx2(panel: &Panel, t: &Tile, len: usize, stride: usize) {
        let px = [6, 4, 2, 1]
            .into_iter()
            .find(|&px| px <= len)
            .expect("1 divides everything");
        // SAFETY: the tile's first `px` pixels (the caller's contract).
        unsafe {
            match px {
                6 => avx2_tile::<6, 6>(panel, t, stride),
                4 => avx2_tile::<4, 4>(panel, t, stride),
                2 => avx2_tile::<2, 2>(panel, t, stride),
                _ => avx2_tile::<1, 1>(panel, t, stride),
            }
        }
        // Read in place, as in `avx512`.
        if px < len {
            // SAFETY: the rest of the tile (the caller's contract).
            unsafe { avx2(panel, &t.skip(px, stride), len - px, stride) };
        }
    }

    /// A tile of two rows of 3 pixels.
    ///
    /// # Safety
    /// As [`avx2`], for 6 pixels, the last 3 one jump further on.
    #[inline]
    pub(super) unsafe fn avx2_pair(panel: &Panel, t: &Tile, stride: usize) {
        // SAFETY: the caller's contract.
        unsafe { avx2_tile::<6, 3>(panel, t, stride) }
    }

    /// `PX` pixels `stride` apart, those from the `A`-th on one jump
    /// further; 16 output channels as two halves.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_tile<const PX: usize, const A: usize>(panel: &Panel, t: &Tile, stride: usize) {
        // Only the output: on this kernel's tiles of 6 pixels, the steps'
        // prefetches took load slots from the broadcasts (256->64 at 56x56,
        // batch 8, alone: 5.1 -> 5.5 ms); the output's alone took 64->256
        // from 6.15 to 5.86 ms.
        prefetch_output(t, PX, 1);
        let mut acc = [[_mm256_setzero_ps(); 2]; PX];
        let mut w = panel.w;
        for block in 0..panel.k / BLOCK {
            for &tap in panel.taps {
                // SAFETY: as in `avx512_tile`, with 16-wide panel rows.
                unsafe {
                    let x = t.x.add(block * t.x_plane + tap);
                    for lane in 0..BLOCK {
                        let wv = [
                            _mm256_loadu_ps(w.add(lane * 16)),
                            _mm256_loadu_ps(w.add(lane * 16 + 8)),
                        ];
                        for (j, acc) in acc.iter_mut().enumerate() {
                            let at = t.input(j, stride * BLOCK, A);
                            let xj = _mm256_set1_ps(*x.add(at + lane));
                            acc[0] = _mm256_fmadd_ps(xj, wv[0], acc[0]);
                            acc[1] = _mm256_fmadd_ps(xj, wv[1], acc[1]);
                        }
                    }
                    w = w.add(BLOCK * 16);
                }
            }
        }
        let zero = _mm256_setzero_ps();
        if t.planar {
            let mut y = [[0f32; 16]; PX];
            for h in 0..2 {
                // SAFETY: the panel has 16 biases; `y` rows hold 16.
                unsafe {
                    let bias = _mm256_loadu_ps(panel.bias.add(h * 8));
                    for (y, acc) in y.iter_mut().zip(&acc) {
                        _mm256_storeu_ps(y[h * 8..].as_mut_ptr(), _mm256_add_ps(acc[h], bias));
                    }
                }
            }
            // SAFETY: the tile's output holds its pixels (the caller's contract).
            unsafe { t.store_planar(&y, 16, panel.relu) };
            return;
        }
        for h in 0..2 {
            // SAFETY: as in `avx512_tile`, one 16-channel block in halves.
            unsafe {
                let bias = _mm256_loadu_ps(panel.bias.add(h * 8));
                for (j, acc) in acc.iter().enumerate() {
                    let at = j * BLOCK + h * 8;
                    let mut y = _mm256_add_ps(acc[h], bias);
                    if !t.residual.is_null() {
                        y = _mm256_add_ps(y, _mm256_loadu_ps(t.residual.add(at)));
                    }
                    if panel.relu {
                        y = _mm256_max_ps(y, zero);
                    }
                    _mm256_storeu_ps(t.out.add(at), y);
                }
            }
        }
    }

    /// `out[x * 16 + lane] = row[lane * plane + x]`, a gather a pixel.
    ///
    /// # Safety
    /// `row` is valid for reads at every such index; the CPU supports AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gather_row(row: *const f32, plane: usize, out: &mut [f32]) {
        assert!(
            15 * plane <= i32::MAX as usize,
            "planes of fewer than 2^31 / 15 floats"
        );
        let plane = plane as i32;
        let lanes = _mm512_mullo_epi32(
            _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
            _mm512_set1_epi32(plane),
        );
        for (x, out) in out.chunks_exact_mut(BLOCK).enumerate() {
            // SAFETY: the caller's contract; `out` holds 16 floats.
            unsafe {
                let v = _mm512_i32gather_ps::<4>(lanes, row.add(x).cast());
                _mm512_storeu_ps(out.as_mut_ptr(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Far, BLOCK, FAR_BLOCKS};

    /// A panel's first tile asks for its own rows ahead, every lane; the
    /// tiles after it ask for each lane of the next panel exactly once
    /// between them, however many they are.
    #[test]
    fn the_tiles_after_a_panels_first_ask_for_each_row_of_the_next_once() {
        for tiles in 1..40 {
            let first = Far::for_tile(0, tiles, 32, 1000);
            assert_eq!(
                (first.ahead, first.lanes),
                (FAR_BLOCKS * BLOCK * 32, u16::MAX)
            );
            let mut asked = [0; BLOCK];
            for i in 1..tiles {
                let far = Far::for_tile(i, tiles, 32, 1000);
                assert_eq!(far.ahead, 1000, "tile {i} of {tiles}");
                for (lane, asked) in asked.iter_mut().enumerate() {
                    *asked += usize::from(far.lanes & 1 << lane != 0);
                }
            }
            let want = if tiles > 1 { 1 } else { 0 };
            assert_eq!(asked, [want; BLOCK], "{tiles} tiles");
        }
    }
}
