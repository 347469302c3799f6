//! What a compiled model says about itself: its layers and blocks, as
//! `resnet!` lays them out in the model's `LAYERS` and `BLOCKS` consts.

/// One layer of a model, in execution order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// The torchvision module key, such as `layer3.21.conv2`; its parameters
    /// are `{name}.weight` (and `.bias`, `.running_mean`, ... for batch norm).
    /// Functional ops have descriptive names (`layer3.21.add`).
    pub name: &'static str,
    /// The op, as the layer table prints it (`Conv2d 3x3/2`, `BatchNorm2d`).
    pub kind: &'static str,
    /// Output `[channels, height, width]` per image; `[classes, 1, 1]` for `fc`.
    pub output: [usize; 3],
    /// Trainable parameters (batch norm's running statistics are not counted).
    pub params: u64,
    /// Multiply-accumulates per image.
    pub macs: u64,
}

/// Residual block design.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockKind {
    /// Two 3x3 convolutions.
    Basic,
    /// 1x1 reduce, 3x3, 1x1 expand.
    Bottleneck,
}

/// What a block adds to its residual branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shortcut {
    /// The input itself: an *identity block*.
    Identity,
    /// A 1x1 convolution + batch norm of the input: a *convolution block*.
    Projection,
    /// The input subsampled and zero-padded in channels (the paper's option A):
    /// a *convolution block* without parameters.
    ZeroPad,
}

/// One residual block of a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockInfo {
    /// `layer{stage}.{index}`, as torchvision names it.
    pub name: &'static str,
    /// 1-based stage.
    pub stage: usize,
    /// Basic or bottleneck.
    pub kind: BlockKind,
    /// How the shortcut is made.
    pub shortcut: Shortcut,
    /// Output `[channels, height, width]` per image.
    pub output: [usize; 3],
    /// Trainable parameters of the whole block.
    pub params: u64,
    /// Multiply-accumulates per image of the whole block.
    pub macs: u64,
}

impl BlockInfo {
    /// Whether this is a *convolution block*: its shortcut is not the input
    /// itself, because the shape changes there (or every block projects).
    pub fn is_convolution_block(&self) -> bool {
        self.shortcut != Shortcut::Identity
    }
}
