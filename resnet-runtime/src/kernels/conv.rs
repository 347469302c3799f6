//! 2-D convolution on NCHW tensors as GEMM: for each image and group,
//! `out (Cout x OH*OW) = W (Cout x Cin*KH*KW) · patches (Cin*KH*KW x OH*OW)`.
//!
//! The weights are packed once ([`Conv2d::new`]). The patches are never
//! materialised: a 1x1 stride-1 convolution multiplies the input as it lies
//! (rows are channels, columns pixels), and every other shape packs its
//! patches straight from the input block by block (the private `Patches`
//! packer), from NCHW planes or, for a layer that reads a network's last
//! blocked value, from channel blocks (`Conv2d::forward_blocked`). Layers
//! with output rows at least a tile wide (the stem) copy each image once,
//! padded and split by column phase, and the micro-kernel reads their
//! patches in place (`direct.rs`). 3x3 stride-1 layers run as
//! Winograd F(4x4, 3x3) or F(2x2, 3x3) instead ([`ConvStrategy::for_params`]
//! says where).

use super::blocked::{self, BlockedConv};
use super::direct::{self, SplitInput};
use super::gather::{gather, strided_run};
use super::gemm::{self, DenseB, Epilogue, Isa, Job, PackB, PackedWeights, Residual, SendPtr};
use super::winograd::{OnTheFly, Tile, Winograd};
use ndarray::{s, ArrayView1, ArrayView4, ArrayViewMut4};

/// A convolution's shape: channels, kernel, stride, padding, groups and the
/// input's height and width. Weights are `[out, in / groups, k, k]` as in PyTorch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvParams {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel height and width.
    pub kernel: usize,
    /// Stride in both directions.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// Channel groups (ResNeXt); 1 for a dense convolution.
    pub groups: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
}

impl ConvParams {
    /// An ungrouped convolution padded by half its kernel, as every ResNet
    /// convolution is: a stride-1 one keeps the input's size.
    pub fn same(
        (in_channels, out_channels): (usize, usize),
        kernel: usize,
        stride: usize,
        (in_h, in_w): (usize, usize),
    ) -> Self {
        ConvParams {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding: kernel / 2,
            groups: 1,
            in_h,
            in_w,
        }
    }

    /// Output height and width (PyTorch's floor rounding).
    pub fn out_hw(&self) -> (usize, usize) {
        let side = |n: usize| (n + 2 * self.padding - self.kernel) / self.stride + 1;
        (side(self.in_h), side(self.in_w))
    }

    /// Multiply-accumulates per image.
    pub fn macs(&self) -> usize {
        let (oh, ow) = self.out_hw();
        self.out_channels * oh * ow * (self.in_channels / self.groups) * self.kernel * self.kernel
    }

    fn check(&self) {
        let ConvParams {
            in_channels,
            out_channels,
            kernel,
            stride,
            groups,
            in_h,
            in_w,
            padding,
        } = *self;
        assert!(
            kernel > 0
                && stride > 0
                && groups > 0
                && in_channels % groups == 0
                && out_channels % groups == 0,
            "invalid convolution {self:?}"
        );
        assert!(
            in_h + 2 * padding >= kernel && in_w + 2 * padding >= kernel,
            "kernel larger than the padded input: {self:?}"
        );
    }
}

/// How a convolution is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvStrategy {
    /// 1x1, stride 1, no padding: a GEMM on the input as it lies.
    Pointwise,
    /// Any shape: patches packed from the input as the GEMM needs them.
    Patches,
    /// Ungrouped, any shape: the input copied once, padded and split by
    /// column phase, so that the micro-kernel reads each patch row where it
    /// lies and nothing is packed per tile; for output rows at least a tile
    /// wide (ResNet's stem).
    Direct,
    /// Ungrouped, channels in blocks of 16: each image copied once, padded
    /// and channel-blocked, and computed with the input as the broadcast
    /// side and the weights as the vectors ([`super::blocked`]); nothing is
    /// packed per tile, and each tile's outputs go back to NCHW rows.
    Blocked,
    /// 3x3, stride 1, ungrouped: Winograd F(2x2, 3x3), 2.25x fewer multiplications.
    Winograd,
    /// 3x3, stride 1, ungrouped: Winograd F(4x4, 3x3), 4x fewer multiplications,
    /// with filters kept at 4x their size.
    Winograd4x4,
    /// 3x3, stride 1, ungrouped: the patch GEMM's packed weights, and from
    /// a batch of four blocks of tiles on ([`Conv2d::strategy_for`]),
    /// Winograd F(2x2, 3x3) with filters transformed into the workspace for
    /// each pass: no transformed copy is kept with the layer.
    WinogradOnTheFly,
}

impl ConvStrategy {
    /// The strategy [`Conv2d::new`] picks for `p`.
    ///
    /// Winograd keeps its filters transformed, at 16/9 (F(2x2)) or 4x
    /// (F(4x4)) their size, so it is used where that memory buys the most:
    /// with at least 16 channels each way, F(4x4, 3x3) on outputs of at least
    /// 28x28 (7x7 tiles of 4x4 per image, enough to share among threads at
    /// batch 1), F(2x2, 3x3) down to 8x8. Below that (ResNet's 7x7 last
    /// stage) 2x2 tiles waste a quarter of their work on the odd edge, an
    /// image's 16 tiles are one thread's block, and a 512-channel layer
    /// would hold 7.3 MB more for a gain that only comes at larger batches:
    /// [`ConvStrategy::WinogradOnTheFly`] runs the patch GEMM on small
    /// batches and transforms its filters for each pass on larger ones.
    ///
    /// Other ungrouped layers with stride 1 or 2 whose output rows are at
    /// least a tile wide go [`ConvStrategy::Direct`]: ResNet's stem, 35%
    /// faster than packing its patches. On narrower rows a tile would span
    /// several output rows, which lie apart in the split copy.
    ///
    /// The remaining kxk layers on channels in blocks of 16, with output
    /// rows of at least [`blocked::MIN_ROW`], go [`ConvStrategy::Blocked`]:
    /// ResNet's strided 3x3 layer from 56x56, 8 to 18% faster than packing
    /// its patches. Strided 1x1 layers would copy four times the pixels
    /// they read, and stay with the patch GEMM.
    pub fn for_params(p: &ConvParams) -> ConvStrategy {
        let side = {
            let (oh, ow) = p.out_hw();
            oh.min(ow)
        };
        let winograd = Winograd::fits(p) && p.in_channels >= 16 && p.out_channels >= 16;
        if p.kernel == 1 && p.stride == 1 && p.padding == 0 {
            ConvStrategy::Pointwise
        } else if winograd && side >= 28 {
            ConvStrategy::Winograd4x4
        } else if winograd && side >= 8 {
            ConvStrategy::Winograd
        } else if winograd {
            ConvStrategy::WinogradOnTheFly
        } else if p.groups == 1 && p.stride <= 2 && p.out_hw().1 >= gemm::TILE_NR {
            ConvStrategy::Direct
        } else if p.kernel > 1 && p.out_hw().1 >= blocked::MIN_ROW && BlockedConv::fits(p) {
            ConvStrategy::Blocked
        } else {
            ConvStrategy::Patches
        }
    }

    /// Whether this strategy can compute `p`.
    pub fn fits(self, p: &ConvParams) -> bool {
        match self {
            ConvStrategy::Pointwise => p.kernel == 1 && p.stride == 1 && p.padding == 0,
            ConvStrategy::Patches => true,
            ConvStrategy::Direct => p.groups == 1,
            ConvStrategy::Blocked => BlockedConv::fits(p),
            ConvStrategy::Winograd | ConvStrategy::Winograd4x4 | ConvStrategy::WinogradOnTheFly => {
                Winograd::fits(p)
            }
        }
    }
}

/// What a convolution adds to its output before the clamp.
#[derive(Clone, Copy, Debug)]
pub enum Shortcut<'a> {
    /// Nothing.
    None,
    /// A residual laid out as the output (`[N, R, OH, OW]` in NCHW), with
    /// its channel count `R` (channels from `R` on add nothing: the paper's
    /// zero-padded shortcut; a blocked residual has every channel).
    Add(&'a [f32], usize),
    /// The output itself, which holds the residual when the convolution
    /// starts.
    InPlace,
}

/// What a convolution does to its outputs: `relu?(y + bias + shortcut)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvEpilogue<'a> {
    pub bias: &'a [f32],
    pub shortcut: Shortcut<'a>,
    pub relu: bool,
}

/// `bias` as a vector, or zeros: one per output channel of `params`.
///
/// # Panics
/// If `bias` has another length.
pub(crate) fn bias_or_zeros(bias: Option<ArrayView1<f32>>, params: &ConvParams) -> Vec<f32> {
    match bias {
        Some(b) => {
            assert_eq!(b.len(), params.out_channels, "bias length for {params:?}");
            b.to_vec()
        }
        None => vec![0.0; params.out_channels],
    }
}

/// The weights, as the strategy uses them.
#[derive(Clone, Debug)]
enum Packed {
    /// One `out / groups x (in / groups * k * k)` matrix per group.
    Gemm(Vec<PackedWeights>),
    /// The `out x (in * k * k)` matrix and the offset of each of its
    /// columns' patch row in the split input.
    Direct(PackedWeights, Vec<isize>),
    Blocked(BlockedConv),
    Winograd(Winograd),
}

/// A convolution with packed weights and a bias (a folded batch norm's shift).
#[derive(Clone, Debug)]
pub struct Conv2d {
    params: ConvParams,
    strategy: ConvStrategy,
    packed: Packed,
    bias: Vec<f32>,
}

impl Conv2d {
    /// Packs `weight` (`[out, in / groups, k, k]`) for this CPU's fastest
    /// kernel and the strategy that suits the shape.
    ///
    /// # Panics
    /// If `weight` or `bias` does not match `params`.
    pub fn new(params: ConvParams, weight: ArrayView4<f32>, bias: Option<ArrayView1<f32>>) -> Self {
        Self::with_strategy(
            Isa::best(),
            ConvStrategy::for_params(&params),
            params,
            weight,
            bias,
        )
    }

    /// As [`Conv2d::new`], with a given instruction set and strategy (tests compare them).
    ///
    /// # Panics
    /// Also if the strategy cannot compute `params` or the CPU lacks `isa`.
    pub fn with_strategy(
        isa: Isa,
        strategy: ConvStrategy,
        params: ConvParams,
        weight: ArrayView4<f32>,
        bias: Option<ArrayView1<f32>>,
    ) -> Self {
        params.check();
        assert!(
            strategy.fits(&params),
            "{strategy:?} cannot compute {params:?}"
        );
        let ConvParams {
            in_channels,
            out_channels,
            kernel,
            groups,
            ..
        } = params;
        let (cin, cout) = (in_channels / groups, out_channels / groups);
        assert_eq!(
            weight.dim(),
            (out_channels, cin, kernel, kernel),
            "weight shape for {params:?}"
        );
        let packed = match strategy {
            ConvStrategy::Winograd => {
                Packed::Winograd(Winograd::new(isa, Tile::F2, &params, weight))
            }
            ConvStrategy::Winograd4x4 => {
                Packed::Winograd(Winograd::new(isa, Tile::F4, &params, weight))
            }
            ConvStrategy::Direct => {
                let w = weight
                    .to_shape((cout, cin * kernel * kernel))
                    .expect("whole output channels");
                let offsets = SplitInput::new(&params).offsets(&params);
                Packed::Direct(PackedWeights::new(isa, w.view()), offsets)
            }
            ConvStrategy::Blocked => Packed::Blocked(BlockedConv::new(isa, params, weight, bias)),
            ConvStrategy::Pointwise | ConvStrategy::Patches | ConvStrategy::WinogradOnTheFly => {
                Packed::Gemm(
                    (0..groups)
                        .map(|g| {
                            let w = weight.slice(s![g * cout..(g + 1) * cout, .., .., ..]);
                            let w = w
                                .to_shape((cout, cin * kernel * kernel))
                                .expect("whole output channels");
                            PackedWeights::new(isa, w.view())
                        })
                        .collect(),
                )
            }
        };
        Self::assemble(params, strategy, packed, bias)
    }

    /// The layer from its packed weights; `bias` defaults to zeros.
    fn assemble(
        params: ConvParams,
        strategy: ConvStrategy,
        packed: Packed,
        bias: Option<ArrayView1<f32>>,
    ) -> Self {
        let bias = bias_or_zeros(bias, &params);
        Conv2d {
            params,
            strategy,
            packed,
            bias,
        }
    }

    /// A convolution with no weights, which allocates nothing: what a model
    /// holds for a layer whose weights failed to load, until it is dropped.
    /// It must never run.
    pub(crate) fn unloaded(params: ConvParams) -> Self {
        Conv2d {
            params,
            strategy: ConvStrategy::Patches,
            packed: Packed::Gemm(Vec::new()),
            bias: Vec::new(),
        }
    }

    /// The convolution's shape.
    pub fn params(&self) -> &ConvParams {
        &self.params
    }

    /// How it is computed.
    pub fn strategy(&self) -> ConvStrategy {
        self.strategy
    }

    /// How a batch of `batch` is computed: the strategy, except that
    /// [`ConvStrategy::WinogradOnTheFly`] runs [`ConvStrategy::Patches`]
    /// while the batch has fewer than four blocks of tiles (each the
    /// micro-kernel's width).
    pub fn strategy_for(&self, batch: usize) -> ConvStrategy {
        match self.strategy {
            ConvStrategy::WinogradOnTheFly if self.winograd_for(batch).is_none() => {
                ConvStrategy::Patches
            }
            strategy => strategy,
        }
    }

    /// The Winograd pass of a [`ConvStrategy::WinogradOnTheFly`] layer,
    /// where a batch of `batch` runs it.
    fn winograd_for(&self, batch: usize) -> Option<OnTheFly<'_>> {
        self.on_the_fly().filter(|w| w.pays(&self.params, batch))
    }

    /// The Winograd pass of a [`ConvStrategy::WinogradOnTheFly`] layer.
    fn on_the_fly(&self) -> Option<OnTheFly<'_>> {
        match &self.packed {
            Packed::Gemm(weights) if self.strategy == ConvStrategy::WinogradOnTheFly => {
                Some(OnTheFly::new(&weights[0]))
            }
            _ => None,
        }
    }

    /// Floats of workspace [`Conv2d::forward`] needs with `threads` threads,
    /// whatever the batch size. For [`ConvStrategy::WinogradOnTheFly`] that
    /// includes the transformed filters, which only batches that run
    /// Winograd write: at smaller ones that part of a freshly allocated
    /// workspace is never touched, and so never resident.
    pub fn workspace_len(&self, threads: usize) -> usize {
        match &self.packed {
            Packed::Gemm(_) => {
                let winograd = self.on_the_fly().map_or(0, |w| w.workspace_len(threads));
                gemm::workspace_len(threads).max(winograd)
            }
            Packed::Direct(..) => SplitInput::new(&self.params).len(self.params.in_channels),
            Packed::Blocked(conv) => conv.workspace_len(),
            Packed::Winograd(w) => w.pass().workspace_len(threads),
        }
    }

    /// `out = relu?(conv(x) + bias + residual)`, for a batch. Allocates nothing.
    ///
    /// `x` is `[N, in, H, W]` and `out` `[N, out, OH, OW]`, both standard
    /// layout. `residual`, if given, is `[N, R, OH, OW]` with `R <= out`
    /// channels: channels from `R` on add nothing (the zero-padded shortcut).
    ///
    /// # Panics
    /// If a shape disagrees with the convolution's, a tensor is not in
    /// standard layout, or `workspace` is shorter than [`Conv2d::workspace_len`].
    pub fn forward(
        &self,
        x: ArrayView4<f32>,
        out: ArrayViewMut4<f32>,
        residual: Option<ArrayView4<f32>>,
        relu: bool,
        workspace: &mut [f32],
        threads: usize,
    ) {
        let p = &self.params;
        let (oh, ow) = p.out_hw();
        let batch = x.dim().0;
        let shortcut = match &residual {
            Some(r) => {
                let (rn, rc, rh, rw) = r.dim();
                assert!(
                    rn == batch && rc <= p.out_channels && (rh, rw) == (oh, ow),
                    "residual {:?} for output {:?}",
                    r.dim(),
                    (batch, p.out_channels, oh, ow)
                );
                Shortcut::Add(r.to_slice().expect("residual in standard layout"), rc)
            }
            None => Shortcut::None,
        };
        self.run(x, out, shortcut, relu, workspace, threads);
    }

    /// `out = relu?(conv(x) + bias + out)`: as [`Conv2d::forward`] with the
    /// residual already in `out`, which saves a tensor of memory and a pass
    /// over it. Allocates nothing.
    ///
    /// # Panics
    /// As [`Conv2d::forward`].
    pub fn forward_in_place(
        &self,
        x: ArrayView4<f32>,
        out: ArrayViewMut4<f32>,
        relu: bool,
        workspace: &mut [f32],
        threads: usize,
    ) {
        self.run(x, out, Shortcut::InPlace, relu, workspace, threads);
    }

    /// `out = relu?(conv(x) + bias + shortcut)`, for [`Conv2d::forward`] and
    /// [`Conv2d::forward_in_place`]: checks the input and output, then runs
    /// the layer's strategy.
    fn run(
        &self,
        x: ArrayView4<f32>,
        mut out: ArrayViewMut4<f32>,
        shortcut: Shortcut,
        relu: bool,
        workspace: &mut [f32],
        threads: usize,
    ) {
        let p = &self.params;
        let (oh, ow) = p.out_hw();
        let batch = x.dim().0;
        assert_eq!(
            x.dim(),
            (batch, p.in_channels, p.in_h, p.in_w),
            "input shape for {p:?}"
        );
        assert_eq!(
            out.dim(),
            (batch, p.out_channels, oh, ow),
            "output shape for {p:?}"
        );
        let x = x.to_slice().expect("input in standard layout");
        let out = out.as_slice_mut().expect("output in standard layout");
        let epilogue = ConvEpilogue {
            bias: &self.bias,
            shortcut,
            relu,
        };
        if let Some(winograd) = self.winograd_for(batch) {
            let (pass, workspace) = winograd.prepare(workspace, threads);
            pass.forward(p, batch, x, out, &epilogue, workspace, threads);
            return;
        }
        match &self.packed {
            Packed::Gemm(weights) => {
                let input = (x, Planes::Planar);
                self.forward_gemm(weights, batch, input, out, &epilogue, workspace, threads)
            }
            Packed::Direct(weights, offsets) => {
                let epilogue = |image| self.epilogue(image, 0, &epilogue);
                direct::forward(p, weights, offsets, x, out, epilogue, workspace, threads);
            }
            Packed::Blocked(conv) => {
                conv.forward_planar(x, batch, out, shortcut, relu, workspace, threads)
            }
            Packed::Winograd(w) => w
                .pass()
                .forward(p, batch, x, out, &epilogue, workspace, threads),
        }
    }

    /// The GEMM epilogue of image `image`'s group `g` of output channels:
    /// their bias, and their rows of the image's residual, or adding to
    /// the output where it holds the residual.
    fn epilogue<'a>(&'a self, image: usize, g: usize, conv: &ConvEpilogue<'a>) -> Epilogue<'a> {
        let cout = self.params.out_channels / self.params.groups;
        let (oh, ow) = self.params.out_hw();
        let residual = match conv.shortcut {
            Shortcut::Add(data, channels) => Some(Residual {
                data: &data[(image * channels + (g * cout).min(channels)) * oh * ow..],
                ld: oh * ow,
                rows: channels.saturating_sub(g * cout).min(cout),
            }),
            Shortcut::None | Shortcut::InPlace => None,
        };
        Epilogue {
            bias: Some(&conv.bias[g * cout..(g + 1) * cout]),
            residual,
            relu: conv.relu,
            accumulate: matches!(conv.shortcut, Shortcut::InPlace),
        }
    }

    /// Whether [`Conv2d::forward_blocked`] can run `p`.
    pub(crate) fn reads_blocked(p: &ConvParams) -> bool {
        Planes::Blocked.fit(p)
    }

    /// `out = relu?(conv(x) + bias + shortcut)` for `batch` channel-blocked
    /// images (`[N][C / 16][H][W][16]`), the output NCHW: the patch GEMM
    /// gathering its patches from the blocks. The strided 1x1 shortcut into
    /// a network's first NCHW stage reads the last blocked value so.
    /// Allocates nothing.
    ///
    /// # Panics
    /// If the layer does not run [`ConvStrategy::Patches`] on a kernel of
    /// at most 3x3, a slice's length does not match `batch` images, or the
    /// workspace is short.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_blocked(
        &self,
        x: &[f32],
        batch: usize,
        out: &mut [f32],
        shortcut: Shortcut,
        relu: bool,
        workspace: &mut [f32],
        threads: usize,
    ) {
        let p = &self.params;
        let planes = Planes::Blocked;
        assert!(planes.fit(p), "no blocked patches for {p:?}");
        assert_eq!(self.strategy, ConvStrategy::Patches, "blocked patches");
        let Packed::Gemm(weights) = &self.packed else {
            unreachable!("the patch GEMM's weights are packed for it")
        };
        let (oh, ow) = p.out_hw();
        assert_eq!(
            x.len(),
            batch * p.in_channels * p.in_h * p.in_w,
            "blocked input of {p:?}"
        );
        assert_eq!(
            out.len(),
            batch * p.out_channels * oh * ow,
            "output of {p:?}"
        );
        if let Shortcut::Add(residual, channels) = shortcut {
            assert_eq!(
                residual.len(),
                batch * channels * oh * ow,
                "residual of {p:?}"
            );
        }
        let epilogue = ConvEpilogue {
            bias: &self.bias,
            shortcut,
            relu,
        };
        let input = (x, planes);
        self.forward_gemm(weights, batch, input, out, &epilogue, workspace, threads);
    }

    /// One GEMM per image and group, packing `B` as the strategy says from
    /// input laid out as `planes` says.
    #[allow(clippy::too_many_arguments)]
    fn forward_gemm(
        &self,
        weights: &[PackedWeights],
        batch: usize,
        (x, planes): (&[f32], Planes),
        out: &mut [f32],
        epilogue: &ConvEpilogue,
        workspace: &mut [f32],
        threads: usize,
    ) {
        let p = &self.params;
        let (oh, ow) = p.out_hw();
        let (cin, cout) = (p.in_channels / p.groups, p.out_channels / p.groups);
        let (in_plane, out_plane) = (p.in_h * p.in_w, oh * ow);
        let out_ptr = SendPtr(out.as_mut_ptr());
        let job = |j: usize| {
            let (image, g) = (j / p.groups, j % p.groups);
            let input = &x[(image * p.in_channels + g * cin) * in_plane..][..cin * in_plane];
            let epilogue = self.epilogue(image, g, epilogue);
            let b = match self.strategy {
                ConvStrategy::Pointwise => ConvB::Dense(DenseB {
                    data: input,
                    ld: in_plane,
                }),
                _ => ConvB::Patches(Patches {
                    input,
                    isa: weights[g].isa(),
                    params: *p,
                    planes,
                    out_w: ow,
                }),
            };
            // SAFETY: `(image * out + g * cout) * out_plane` starts this image's
            // group of `cout` output channels inside `out`.
            let c = unsafe { out_ptr.add((image * p.out_channels + g * cout) * out_plane) };
            Job {
                a: &weights[g],
                b,
                n: out_plane,
                c,
                ldc: out_plane,
                epilogue,
            }
        };
        // SAFETY: job `(image, g)` writes that image's group of output channels
        // of `out`, which is borrowed mutably and so overlaps no input; the
        // residual rows each job reads were checked against the output's shape.
        unsafe { gemm::run_jobs(batch * p.groups, &job, workspace, threads) };
    }
}

/// Where one job's `B` comes from.
#[derive(Clone, Copy)]
enum ConvB<'a> {
    Dense(DenseB<'a>),
    Patches(Patches<'a>),
}

impl PackB for ConvB<'_> {
    fn pack_cost(&self) -> usize {
        match self {
            ConvB::Dense(b) => b.pack_cost(),
            ConvB::Patches(b) => b.pack_cost(),
        }
    }

    fn pack(&self, k0: usize, kc: usize, n0: usize, nc: usize, nr: usize, out: &mut [f32]) {
        match self {
            ConvB::Dense(b) => b.pack(k0, kc, n0, nc, nr, out),
            ConvB::Patches(b) => b.pack(k0, kc, n0, nc, nr, out),
        }
    }

    fn in_place(&self) -> Option<(&[f32], usize)> {
        match self {
            ConvB::Dense(b) => b.in_place(),
            ConvB::Patches(b) => b.in_place(),
        }
    }
}

/// The patch matrix of one image's group of input channels, packed on
/// demand: row `k = (c, ky, kx)`, column `n = (oy, ox)` holds
/// `input[c][oy * stride + ky - pad][ox * stride + kx - pad]`, zero outside.
/// A panel copies run by run (one run per output row it crosses), or, for
/// 3x3 and smaller kernels on output rows narrower than a panel and on
/// blocked input, gathers through a table of offsets.
#[derive(Clone, Copy)]
struct Patches<'a> {
    input: &'a [f32],
    /// The instruction set the packer's copies use: the weights'.
    isa: Isa,
    params: ConvParams,
    planes: Planes,
    out_w: usize,
}

/// How a patch GEMM's input lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Planes {
    /// NCHW: channel `c`'s plane whole at `c * H * W`.
    Planar,
    /// Channel-blocked (`[C / 16][H][W][16]`).
    Blocked,
}

impl Planes {
    /// Whether [`Patches`] can read `p`'s input laid out so: blocked
    /// input is gathered through the table, which takes kernels of up to
    /// [`TABLE_TAPS`] taps and 32-bit offsets.
    fn fit(self, p: &ConvParams) -> bool {
        match self {
            Planes::Planar => true,
            Planes::Blocked => {
                p.groups == 1
                    && p.in_channels.is_multiple_of(blocked::BLOCK)
                    && p.kernel * p.kernel <= TABLE_TAPS
                    && p.in_h * p.in_w * blocked::BLOCK < u32::MAX as usize
            }
        }
    }

    /// Floats from one pixel of a plane to the next.
    fn pixel(self) -> usize {
        match self {
            Planes::Planar => 1,
            Planes::Blocked => blocked::BLOCK,
        }
    }

    /// Channel `c`'s plane of `input` (one image's planes of `len` pixels),
    /// as a slice that starts at its first pixel and ends at its last:
    /// pixel `i` at `i * pixel()`.
    fn channel(self, input: &[f32], c: usize, len: usize) -> &[f32] {
        match self {
            Planes::Planar => &input[c * len..][..len],
            Planes::Blocked => {
                let (block, lane) = (c / blocked::BLOCK, c % blocked::BLOCK);
                let start = block * blocked::BLOCK * len + lane;
                &input[start..][..(len - 1) * blocked::BLOCK + 1]
            }
        }
    }
}

impl PackB for Patches<'_> {
    /// A strided 1x1 layer's patches reuse nothing: every packed value is a
    /// gather from a different place in the input, which tasks that share
    /// columns would each gather again.
    fn pack_cost(&self) -> usize {
        if self.params.kernel == 1 && self.params.stride > 1 {
            4
        } else {
            2
        }
    }

    fn pack(&self, k0: usize, kc: usize, n0: usize, nc: usize, nr: usize, out: &mut [f32]) {
        let ConvParams {
            kernel,
            stride,
            padding,
            in_h,
            in_w,
            ..
        } = self.params;
        let ow = self.out_w;
        let panels = out[..nc.div_ceil(nr) * kc * nr].chunks_exact_mut(kc * nr);
        for (j, panel) in panels.enumerate() {
            let col = n0 + j * nr;
            let width = nr.min(n0 + nc - col);
            let table = match self.planes {
                Planes::Planar => {
                    kernel * kernel <= TABLE_TAPS && ow < nr && in_h * in_w < u32::MAX as usize
                }
                // Blocks have no runs to copy ([`Planes::fit`] checked the table's limits).
                Planes::Blocked => true,
            };
            if table {
                self.gather_panel(k0, col, width, panel, nr);
                continue;
            }
            // The panel's columns, one run per output row they cross; worked
            // out once for all its rows, so the row loop divides nothing.
            let mut runs = [OutputRun::default(); MAX_RUNS];
            let (mut oy, mut ox, mut count) = (col / ow, col % ow, 0);
            let mut lane = 0;
            while lane < width {
                let len = (width - lane).min(ow - ox);
                runs[count] = OutputRun {
                    iy: (oy * stride) as isize - padding as isize,
                    ix: (ox * stride) as isize - padding as isize,
                    lane,
                    len,
                };
                (oy, ox, lane, count) = (oy + 1, 0, lane + len, count + 1);
            }
            let runs = &runs[..count];
            // Row k is (c, ky, kx), stepped rather than divided out.
            let (mut c, mut ky, mut kx) =
                (k0 / (kernel * kernel), k0 / kernel % kernel, k0 % kernel);
            for dst in panel.chunks_exact_mut(nr) {
                let plane = &self.input[c * in_h * in_w..][..in_h * in_w];
                for run in runs {
                    let seg = &mut dst[run.lane..run.lane + run.len];
                    let iy = run.iy + ky as isize;
                    if iy < 0 || iy >= in_h as isize {
                        seg.fill(0.0);
                        continue;
                    }
                    let row = &plane[iy as usize * in_w..][..in_w];
                    strided_run(self.isa, seg, row, run.ix + kx as isize, stride);
                }
                dst[width..].fill(0.0);
                kx += 1;
                if kx == kernel {
                    (kx, ky) = (0, ky + 1);
                    if ky == kernel {
                        (ky, c) = (0, c + 1);
                    }
                }
            }
        }
    }
}

impl Patches<'_> {
    /// Packs one panel, columns `col..col + width`, through a table of the
    /// offset each column reads at each kernel tap. For output rows narrower
    /// than a panel, a row of the panel crosses several short runs, and
    /// copying run by run costs more than the copying itself; blocked
    /// input has no runs.
    fn gather_panel(&self, k0: usize, col: usize, width: usize, panel: &mut [f32], nr: usize) {
        let ConvParams {
            kernel,
            stride,
            padding,
            in_h,
            in_w,
            ..
        } = self.params;
        let pixel = self.planes.pixel();
        let taps = kernel * kernel;
        // Offset of each column's input in a channel plane, per tap; past
        // the plane (so the gather reads a zero) where it falls in the padding.
        let mut table = [[u32::MAX; gemm::MAX_NR]; TABLE_TAPS];
        for l in 0..width {
            let (oy, ox) = ((col + l) / self.out_w, (col + l) % self.out_w);
            for (t, row) in table[..taps].iter_mut().enumerate() {
                let iy = (oy * stride + t / kernel).checked_sub(padding);
                let ix = (ox * stride + t % kernel).checked_sub(padding);
                let inside = (iy.filter(|&y| y < in_h), ix.filter(|&x| x < in_w));
                if let (Some(iy), Some(ix)) = inside {
                    row[l] = ((iy * in_w + ix) * pixel) as u32;
                }
            }
        }
        let (mut c, mut t) = (k0 / taps, k0 % taps);
        for dst in panel.chunks_exact_mut(nr) {
            let plane = self.planes.channel(self.input, c, in_h * in_w);
            let (real, past) = dst.split_at_mut(width);
            gather(self.isa, real, plane, &table[t]);
            past.fill(0.0);
            t += 1;
            if t == taps {
                (t, c) = (0, c + 1);
            }
        }
    }
}

/// Most taps a kernel packed by table has: 3x3.
const TABLE_TAPS: usize = 9;

/// Most output rows one panel of columns can cross: a panel is at most
/// [`gemm::MAX_NR`] columns.
const MAX_RUNS: usize = gemm::MAX_NR + 1;

/// Columns of one panel that lie in one output row: their first input row
/// and column (before the kernel offset), and where they sit in the panel.
#[derive(Clone, Copy, Debug, Default)]
struct OutputRun {
    iy: isize,
    ix: isize,
    lane: usize,
    len: usize,
}
