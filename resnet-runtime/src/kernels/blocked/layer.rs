//! One convolution of a network's blocked stages: the strategy it is
//! built with, and its pass from a blocked input (padded or not) to a
//! blocked, padded blocked or NCHW output.

use super::winograd::BlockedWinograd;
use super::{BlockedConv, BlockedIo, BlockedOutput};
use crate::kernels::conv::{Conv2d, ConvParams, ConvStrategy, Shortcut};
use crate::kernels::gemm::Isa;
use ndarray::{ArrayView1, ArrayView4};

/// How a [`BlockedLayer`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockedStrategy {
    /// The tile kernels over the (zero-padded) input, the weights as the
    /// vector side ([`BlockedConv`]).
    Direct,
    /// Winograd F(2x2, 3x3): 3x3 stride-1 layers with outputs of 7 to 27
    /// a side (ResNet's 14x14 stage, and the 7x7 stage of a network of
    /// basic blocks; a bottleneck's 3x3 layers there read a padded input,
    /// which puts them on the direct kernel).
    Winograd2x2,
    /// Winograd F(4x4, 3x3): 3x3 stride-1 layers with outputs of 28 and more.
    Winograd4x4,
    /// The NCHW patch GEMM, gathering its patches from the blocks: strided
    /// 1x1 layers that write NCHW outputs narrower than 14 a side (the
    /// shortcut into the first NCHW stage of a network whose images are
    /// too small for its last stage to run blocked).
    Patches,
}

/// The output side below which a strided 1x1 layer that writes NCHW runs
/// the patch GEMM ([`BlockedStrategy::Patches`]). The direct kernels sweep
/// its weights every few tiles of such small images, where the GEMM blocks
/// them by depth: ResNet-50's shortcut into 7x7 (8 MB of weights), when
/// that stage ran NCHW, went from 0.94 to 0.79-0.82 ms at batch 1 and from
/// 7.2-7.4 to 5.7-5.8 ms at batch 8 on a Sapphire Rapids machine. The
/// strided 3x3 layer beside it reads a padded input in place, and the
/// patch GEMM gathering from it was no faster at batch 1 and 7% slower at
/// batch 8.
pub(crate) const PATCHES_BELOW: usize = 14;

impl BlockedStrategy {
    /// The strategy for `p` reading and writing as `io` says. Winograd
    /// reads plain blocks and writes them. F(4x4)'s filters are four times
    /// the plain weights and F(2x2)'s 16/9 of them: F(4x4) takes the wide
    /// outputs (at 14x14 it was faster than F(2x2), 3.16 against 3.75 ms
    /// alone at batch 8, but ResNet-50's five such layers would hold 26 MB
    /// more), and F(2x2) goes down to 7x7. There a 7x7 image's 16 tiles
    /// take 1.7 times fewer products than the direct kernel's 49 pixels
    /// and stream 1.8 times the weights: ResNet-18's three 512-channel
    /// layers 2.25-2.37 -> 2.00-2.17 ms at batch 1, its pass 2.5% faster
    /// at batch 1 and 6% at batch 8, for 22 MB more filters (the compiler
    /// gives a bottleneck's 3x3 layers at 7x7 a padded input, and so the
    /// direct kernel, rather than 15 MB more in ResNet-50).
    pub fn for_params(p: &ConvParams, io: BlockedIo) -> BlockedStrategy {
        let side = p.out_hw().0.min(p.out_hw().1);
        let strided_1x1 = p.kernel == 1 && p.stride > 1;
        let patches = strided_1x1 && side < PATCHES_BELOW && Conv2d::reads_blocked(p);
        if patches && io.output == BlockedOutput::Planar && !io.padded_input {
            return BlockedStrategy::Patches;
        }
        match BlockedWinograd::fits(p) && io == BlockedIo::default() {
            true if side >= 28 => BlockedStrategy::Winograd4x4,
            true if side >= 7 => BlockedStrategy::Winograd2x2,
            _ => BlockedStrategy::Direct,
        }
    }
}

/// A convolution on a blocked input, with its folded bias and epilogue,
/// writing blocked output, blocked with a border of zeros for a padded
/// layer after it, or, at a network's last blocked stage, NCHW.
#[derive(Clone, Debug)]
pub struct BlockedLayer {
    kernel: Kernel,
    io: BlockedIo,
}

#[derive(Clone, Debug)]
enum Kernel {
    Direct(BlockedConv),
    Winograd(BlockedWinograd),
    Patches(Conv2d),
}

impl BlockedLayer {
    /// Whether `p` can run blocked: ungrouped, on channel counts that are
    /// multiples of [`super::BLOCK`].
    pub fn fits(p: &ConvParams) -> bool {
        BlockedConv::fits(p)
    }

    /// Packs `weight` (`[out, in, k, k]`) for the best instruction set,
    /// to read and write as `io` says.
    ///
    /// # Panics
    /// If `p` does not [fit](BlockedLayer::fits), or `weight` or `bias`
    /// does not match it.
    pub fn new(
        p: ConvParams,
        weight: ArrayView4<f32>,
        bias: Option<ArrayView1<f32>>,
        io: BlockedIo,
    ) -> Self {
        Self::with_isa(Isa::best(), p, weight, bias, io)
    }

    /// As [`BlockedLayer::new`], for instruction set `isa`.
    ///
    /// # Panics
    /// As [`BlockedLayer::new`]; or if this CPU lacks `isa`.
    pub fn with_isa(
        isa: Isa,
        p: ConvParams,
        weight: ArrayView4<f32>,
        bias: Option<ArrayView1<f32>>,
        io: BlockedIo,
    ) -> Self {
        assert!(isa.is_supported(), "{isa:?} is not supported by this CPU");
        let kernel = match BlockedStrategy::for_params(&p, io) {
            BlockedStrategy::Direct => Kernel::Direct(BlockedConv::new(isa, p, weight, bias)),
            BlockedStrategy::Winograd2x2 => {
                Kernel::Winograd(BlockedWinograd::new(isa, 2, p, weight, bias))
            }
            BlockedStrategy::Winograd4x4 => {
                Kernel::Winograd(BlockedWinograd::new(isa, 4, p, weight, bias))
            }
            BlockedStrategy::Patches => Kernel::Patches(Conv2d::with_strategy(
                isa,
                ConvStrategy::Patches,
                p,
                weight,
                bias,
            )),
        };
        BlockedLayer { kernel, io }
    }

    /// Where its input and output lie.
    pub fn io(&self) -> BlockedIo {
        self.io
    }

    /// The convolution's shape.
    pub fn params(&self) -> &ConvParams {
        match &self.kernel {
            Kernel::Direct(c) => c.params(),
            Kernel::Winograd(c) => c.params(),
            Kernel::Patches(c) => c.params(),
        }
    }

    /// How it computes.
    pub fn strategy(&self) -> BlockedStrategy {
        match &self.kernel {
            Kernel::Direct(_) => BlockedStrategy::Direct,
            Kernel::Winograd(w) if w.outputs() == 2 => BlockedStrategy::Winograd2x2,
            Kernel::Winograd(_) => BlockedStrategy::Winograd4x4,
            Kernel::Patches(_) => BlockedStrategy::Patches,
        }
    }

    /// Floats of workspace [`BlockedLayer::forward`] needs with `threads` threads.
    pub fn workspace_len(&self, threads: usize) -> usize {
        match &self.kernel {
            Kernel::Direct(c) => c.workspace_len(),
            Kernel::Winograd(c) => c.workspace_len(threads),
            Kernel::Patches(c) => c.workspace_len(threads),
        }
    }

    /// `out = relu?(conv(x) + bias + shortcut)` for `n` blocked images, the
    /// output (and the shortcut's residual, which has every output channel,
    /// or is `out` itself: [`Shortcut::InPlace`]) blocked or NCHW as built.
    /// Allocates nothing.
    ///
    /// # Panics
    /// If a slice's length does not match `n` images, a residual has fewer
    /// channels than the output, or the workspace is short.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        x: &[f32],
        n: usize,
        out: &mut [f32],
        shortcut: Shortcut,
        relu: bool,
        workspace: &mut [f32],
        threads: usize,
    ) {
        match &self.kernel {
            Kernel::Direct(c) => {
                let epilogue = (relu, self.io);
                c.forward_blocked(x, n, out, shortcut, epilogue, workspace, threads)
            }
            Kernel::Winograd(c) => c.forward(x, n, out, shortcut, relu, workspace, threads),
            Kernel::Patches(c) => c.forward_blocked(x, n, out, shortcut, relu, workspace, threads),
        }
    }
}
