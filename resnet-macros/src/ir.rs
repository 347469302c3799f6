//! The IR: a network as a list of nodes in execution order, each one
//! torchvision module application (or a functional op such as the residual
//! add), with its inputs and output shape.
//!
//! The IR is the unfused training-time graph: batch norm, ReLU and the add
//! are nodes of their own. Folding and fusion for inference are passes over
//! it, so a backward pass can be generated from the same nodes.

use crate::spec::BlockKind;
use std::fmt;
use std::ops::Range;

/// A feature map's `[channels, height, width]`; the batch size is a run-time value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "[{}, {}, {}]", self.c, self.h, self.w)
    }
}

/// Index of a node in [`Graph::nodes`].
pub type NodeId = usize;

/// A 2-D convolution; its input channels are its input's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv {
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// The network's input.
    Input,
    /// Convolution without bias (every ResNet convolution is followed by BN).
    Conv(Conv),
    /// Batch norm with affine weight and bias (eps 1e-5).
    BatchNorm,
    Relu,
    MaxPool {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    /// Residual add; inputs are `[residual, shortcut]`.
    Add,
    /// The paper's option A shortcut: `x[:, :, ::stride, ::stride]`, zero-padded
    /// to `channels`.
    ZeroPad {
        stride: usize,
        channels: usize,
    },
    /// Mean over height and width: `[C, H, W]` to `[C, 1, 1]`.
    GlobalAvgPool,
    /// Fully connected layer with bias, on a `[C, 1, 1]` input.
    Linear {
        out_features: usize,
    },
}

impl Op {
    /// The op as the layer table names it ("Conv2d 3x3/2").
    pub fn describe(&self) -> String {
        match *self {
            Op::Input => "Input".into(),
            Op::Conv(c) => {
                let mut s = format!("Conv2d {0}x{0}", c.kernel);
                if c.stride != 1 {
                    s += &format!("/{}", c.stride);
                }
                if c.groups != 1 {
                    s += &format!(" g{}", c.groups);
                }
                s
            }
            Op::BatchNorm => "BatchNorm2d".into(),
            Op::Relu => "ReLU".into(),
            Op::MaxPool { kernel, stride, .. } => format!("MaxPool2d {kernel}x{kernel}/{stride}"),
            Op::Add => "Add".into(),
            Op::ZeroPad { stride, .. } => format!("ZeroPad shortcut /{stride}"),
            Op::GlobalAvgPool => "AdaptiveAvgPool2d 1x1".into(),
            Op::Linear { .. } => "Linear".into(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    /// The torchvision module key (`layer3.21.conv2`), so that parameters are
    /// named `{name}.weight`; functional ops get a descriptive one (`layer3.21.add`).
    pub name: String,
    pub op: Op,
    pub inputs: Vec<NodeId>,
    pub shape: Shape,
}

/// What a block adds to its residual branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shortcut {
    /// `x` itself: an identity block.
    Identity,
    /// 1x1 convolution + BN (`downsample.0`, `downsample.1`): a convolution block.
    Projection,
    /// Subsample and zero-pad channels: a convolution block without parameters.
    ZeroPad,
}

impl Shortcut {
    /// Whether the block is a *convolution block* (its shortcut is not `x` itself).
    pub fn is_convolution_block(self) -> bool {
        self != Shortcut::Identity
    }
}

/// A residual block: the nodes it spans and how its shortcut is made.
#[derive(Clone, Debug)]
pub struct Block {
    /// `layer{stage}.{index}`, 1-based stage and 0-based index as in torchvision.
    pub name: String,
    pub stage: usize,
    pub kind: BlockKind,
    pub shortcut: Shortcut,
    pub nodes: Range<NodeId>,
}

/// A whole network.
#[derive(Clone, Debug)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub blocks: Vec<Block>,
    /// The backbone's last node (what `features` returns).
    pub features: NodeId,
    /// The network's output: the classifier, or `features` when headless.
    pub output: NodeId,
}

impl Graph {
    /// Trainable parameters of node `id` (BN's running statistics are buffers, not parameters).
    pub fn params(&self, id: NodeId) -> u128 {
        let node = &self.nodes[id];
        let (input, out) = (self.input_shape(id), node.shape);
        match node.op {
            Op::Conv(conv) => {
                wide(out.c) * wide(input.c / conv.groups) * wide(conv.kernel * conv.kernel)
            }
            Op::BatchNorm => 2 * wide(out.c),
            Op::Linear { out_features } => wide(input.c) * wide(out_features) + wide(out_features),
            _ => 0,
        }
    }

    /// Multiply-accumulates of node `id` for one image (convolutions and the
    /// linear layer; BN, ReLU, adds and pooling count none).
    pub fn macs(&self, id: NodeId) -> u128 {
        let node = &self.nodes[id];
        let (input, out) = (self.input_shape(id), node.shape);
        match node.op {
            Op::Conv(conv) => {
                wide(out.c)
                    * wide(out.h)
                    * wide(out.w)
                    * wide(input.c / conv.groups)
                    * wide(conv.kernel * conv.kernel)
            }
            Op::Linear { out_features } => wide(input.c) * wide(out_features),
            _ => 0,
        }
    }

    /// The shape node `id` reads (its own for the input node).
    fn input_shape(&self, id: NodeId) -> Shape {
        match self.nodes[id].inputs.first() {
            Some(&input) => self.nodes[input].shape,
            None => self.nodes[id].shape,
        }
    }

    pub fn total_params(&self) -> u128 {
        (0..self.nodes.len()).map(|id| self.params(id)).sum()
    }

    pub fn total_macs(&self) -> u128 {
        (0..self.nodes.len()).map(|id| self.macs(id)).sum()
    }
}

fn wide(n: usize) -> u128 {
    n as u128
}
