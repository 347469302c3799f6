//! Spec to IR: torchvision's `ResNet.__init__` and `_make_layer`, node by
//! node, each node's shape inferred as it is added (`shape.rs`).

use crate::diag::Loc;
use crate::ir::{Block, Conv, Graph, Node, NodeId, Op, Shape, Shortcut};
use crate::shape::{out_shape, ShapeError};
use crate::spec::{BlockKind, ShortcutPolicy, Spec, Stem, StrideOn};

/// Builds the network `spec` describes; `spec_loc` is where errors that no
/// single key caused are reported.
pub fn lower(spec: &Spec, spec_loc: &Loc) -> syn::Result<Graph> {
    let [c, h, w] = spec.input;
    let mut b = Builder {
        spec,
        spec_loc,
        nodes: vec![Node {
            name: "input".into(),
            op: Op::Input,
            inputs: vec![],
            shape: Shape { c, h, w },
        }],
        blocks: vec![],
    };
    let mut x = b.stem(0)?;
    for (i, (blocks, loc)) in spec.stages.iter().enumerate() {
        for index in 0..*blocks {
            let stride = if i > 0 && index == 0 { 2 } else { 1 };
            x = b.block(i + 1, index, x, stride, loc)?;
        }
    }
    if spec.preact {
        x = b.push("post_bn", Op::BatchNorm, &[x], spec_loc)?;
        x = b.push("post_relu", Op::Relu, &[x], spec_loc)?;
    }
    let features = x;
    if let Some(classes) = spec.classes {
        x = b.push("avgpool", Op::GlobalAvgPool, &[x], spec_loc)?;
        x = b.push(
            "fc",
            Op::Linear {
                out_features: classes,
            },
            &[x],
            spec_loc,
        )?;
    }
    let graph = Graph {
        nodes: b.nodes,
        blocks: b.blocks,
        features,
        output: x,
    };
    if u64::try_from(graph.total_macs()).is_err() {
        return Err(spec_loc.error(
            "this network needs more than 2^64 multiply-adds per image; it is too large to compile",
        ));
    }
    Ok(graph)
}

struct Builder<'a> {
    spec: &'a Spec,
    spec_loc: &'a Loc,
    nodes: Vec<Node>,
    blocks: Vec<Block>,
}

fn conv(out_channels: usize, kernel: usize, stride: usize, groups: usize) -> Op {
    Op::Conv(Conv {
        out_channels,
        kernel,
        stride,
        padding: kernel / 2,
        groups,
    })
}

impl Builder<'_> {
    /// Adds a node, inferring its shape; a shape error is reported at `loc`
    /// in the user's terms.
    fn push(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: &[NodeId],
        loc: &Loc,
    ) -> syn::Result<NodeId> {
        let name = name.into();
        let shapes: Vec<Shape> = inputs.iter().map(|&i| self.nodes[i].shape).collect();
        let shape = out_shape(&op, &shapes).map_err(|e| match e {
            ShapeError::NothingToDownsample { stride, input } => {
                self.too_small(&name, stride, input, loc)
            }
            ShapeError::Mismatch(why) => loc.error(format!("`{name}`: {why}")),
        })?;
        self.nodes.push(Node {
            name,
            op,
            inputs: inputs.to_vec(),
            shape,
        });
        Ok(self.nodes.len() - 1)
    }

    fn too_small(&self, name: &str, stride: usize, input: Shape, loc: &Loc) -> syn::Error {
        let spec = self.spec;
        let stem_downsamplings = if spec.stem == Stem::Cifar { 0 } else { 2 };
        let downsamplings = stem_downsamplings + spec.stages.len() - 1;
        let need = 1u64 << downsamplings;
        let [c, h, w] = spec.input;
        let hint = if spec.stem == Stem::Cifar {
            ""
        } else {
            " or `stem: cifar`"
        };
        let message = format!(
            "`{name}` (stride {stride}) would downsample a {}x{} feature map: input [{c}, {h}, {w}] is too small \
             for this network's {downsamplings} downsamplings, which need at least {need}x{need}; \
             use a larger `input`{hint}",
            input.h, input.w
        );
        spec.input_loc.as_ref().unwrap_or(loc).error(message)
    }

    /// conv1 (+ bn1, relu) and the max pool.
    fn stem(&mut self, x: NodeId) -> syn::Result<NodeId> {
        let spec = self.spec;
        let loc = self.spec_loc;
        let width = spec.widths[0];
        let mut y = match spec.stem {
            Stem::ImageNet => self.push("conv1", conv(width, 7, 2, 1), &[x], loc)?,
            Stem::Cifar => self.push("conv1", conv(width, 3, 1, 1), &[x], loc)?,
            Stem::Deep => {
                let half = (width / 2).max(1);
                let mut y = self.push("conv1.0", conv(half, 3, 2, 1), &[x], loc)?;
                y = self.push("conv1.1", Op::BatchNorm, &[y], loc)?;
                y = self.push("conv1.2", Op::Relu, &[y], loc)?;
                y = self.push("conv1.3", conv(half, 3, 1, 1), &[y], loc)?;
                y = self.push("conv1.4", Op::BatchNorm, &[y], loc)?;
                y = self.push("conv1.5", Op::Relu, &[y], loc)?;
                self.push("conv1.6", conv(width, 3, 1, 1), &[y], loc)?
            }
        };
        // A pre-activation network normalises at the start of each block instead.
        if !spec.preact {
            y = self.push("bn1", Op::BatchNorm, &[y], loc)?;
            y = self.push("relu", Op::Relu, &[y], loc)?;
        }
        if spec.stem != Stem::Cifar {
            let pool = Op::MaxPool {
                kernel: 3,
                stride: 2,
                padding: 1,
            };
            y = self.push("maxpool", pool, &[y], loc)?;
        }
        Ok(y)
    }

    /// The convolutions of a block's residual branch, in order.
    fn branch(&self, stage: usize, stride: usize, loc: &Loc) -> syn::Result<Vec<Op>> {
        let spec = self.spec;
        let planes = spec.widths[stage - 1];
        Ok(match spec.block {
            BlockKind::Basic => vec![conv(planes, 3, stride, 1), conv(planes, 3, 1, 1)],
            BlockKind::Bottleneck => {
                let per_group = planes * spec.width_per_group / 64;
                if per_group == 0 {
                    let at = if spec.width_per_group == 64 {
                        loc
                    } else {
                        &spec.width_per_group_loc
                    };
                    return Err(at.error(format!(
                        "stage {stage}'s bottleneck has {planes} * {} / 64 = 0 channels per group; \
                         raise `width_per_group` or the stage's width",
                        spec.width_per_group
                    )));
                }
                let width = per_group * spec.groups;
                let (stride_1x1, stride_3x3) = match spec.stride_on {
                    StrideOn::Conv3x3 => (1, stride),
                    StrideOn::Conv1x1 => (stride, 1),
                };
                vec![
                    conv(width, 1, stride_1x1, 1),
                    conv(width, 3, stride_3x3, spec.groups),
                    conv(planes * spec.expansion, 1, 1, 1),
                ]
            }
        })
    }

    /// One residual block `layer{stage}.{index}` on `x`; returns its output.
    fn block(
        &mut self,
        stage: usize,
        index: usize,
        x: NodeId,
        stride: usize,
        loc: &Loc,
    ) -> syn::Result<NodeId> {
        let spec = self.spec;
        let first = self.nodes.len();
        let prefix = format!("layer{stage}.{index}");
        let name = |part: &str| format!("{prefix}.{part}");
        let in_channels = self.nodes[x].shape.c;
        let out_channels = spec.widths[stage - 1] * spec.expansion;
        let shortcut = match spec.shortcut {
            ShortcutPolicy::AllProjection => Shortcut::Projection,
            _ if stride == 1 && in_channels == out_channels => Shortcut::Identity,
            ShortcutPolicy::Projection => Shortcut::Projection,
            ShortcutPolicy::ZeroPad => Shortcut::ZeroPad,
        };

        // Residual branch: conv-bn-relu (v1), or bn-relu-conv (v2).
        let convs = self.branch(stage, stride, loc)?;
        let last = convs.len();
        let (mut y, mut preactivated) = (x, x);
        for (i, op) in (1..).zip(convs) {
            if spec.preact {
                y = self.push(name(&format!("bn{i}")), Op::BatchNorm, &[y], loc)?;
                y = self.push(name("relu"), Op::Relu, &[y], loc)?;
                if i == 1 {
                    preactivated = y;
                }
                y = self.push(name(&format!("conv{i}")), op, &[y], loc)?;
            } else {
                y = self.push(name(&format!("conv{i}")), op, &[y], loc)?;
                y = self.push(name(&format!("bn{i}")), Op::BatchNorm, &[y], loc)?;
                if i != last {
                    y = self.push(name("relu"), Op::Relu, &[y], loc)?;
                }
            }
        }

        let shortcut_loc = &spec.shortcut_loc;
        let s = match shortcut {
            Shortcut::Identity => x,
            Shortcut::Projection => {
                // In v2 the projection sees the pre-activated input and has no BN.
                let source = if spec.preact { preactivated } else { x };
                let s = self.push(
                    name("downsample.0"),
                    conv(out_channels, 1, stride, 1),
                    &[source],
                    loc,
                )?;
                if spec.preact {
                    s
                } else {
                    self.push(name("downsample.1"), Op::BatchNorm, &[s], loc)?
                }
            }
            Shortcut::ZeroPad => {
                if out_channels < in_channels {
                    return Err(shortcut_loc.error(format!(
                        "`shortcut: zero_pad` cannot narrow `{prefix}`'s shortcut from {in_channels} to \
                         {out_channels} channels; use `shortcut: projection`"
                    )));
                }
                let pad = Op::ZeroPad {
                    stride,
                    channels: out_channels,
                };
                self.push(name("shortcut"), pad, &[x], loc)?
            }
        };
        y = self.push(name("add"), Op::Add, &[y, s], loc)?;
        if !spec.preact {
            y = self.push(name("relu"), Op::Relu, &[y], loc)?;
        }
        self.blocks.push(Block {
            name: prefix,
            stage,
            kind: spec.block,
            shortcut,
            nodes: first..self.nodes.len(),
        });
        Ok(y)
    }
}
