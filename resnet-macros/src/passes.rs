//! Inference passes over the IR, which itself stays the unfused training
//! graph:
//!
//! - [`fuse`]: each convolution takes the batch norm after it (folded at
//!   load time), then the residual add and the ReLU after those; a global
//!   average pool and the linear layer after it become one head; a batch
//!   norm that precedes its convolution (pre-activation) stays an affine step.
//! - [`schedule`]: the fused steps in an order that computes each block's
//!   shortcut before the convolution that adds it.
//! - [`plan`]: every value an offset in one arena, by liveness, so values
//!   that are never alive together share memory.
//! - [`layouts`]: whether each value is NCHW or channel-blocked.

use crate::ir::{Graph, NodeId, Op, Shape};
use std::collections::BinaryHeap;

/// What a fused step does; the node ids name the IR nodes it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// A convolution, its batch norm if any, then `relu?(y + residual)`;
    /// for a blocked network's stem, then the max pool after it
    /// (`(kernel, stride, padding)`, see [`fuse_stem_pool`]).
    Conv {
        conv: NodeId,
        bn: Option<NodeId>,
        relu: bool,
        pool: Option<(usize, usize, usize)>,
    },
    /// A batch norm before its convolution, and its ReLU if any.
    Affine { bn: NodeId, relu: bool },
    MaxPool {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    /// The spatial half of a zero-padded shortcut.
    Subsample { stride: usize },
    /// Global average pool and the classifier.
    Head { fc: NodeId },
}

/// A fused step: reads `input` (and `residual`), writes `output`. Values
/// are named by the IR node that produces them (0 is the network input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub kind: StepKind,
    pub input: NodeId,
    pub residual: Option<NodeId>,
    pub output: NodeId,
    /// What `output` holds per image: the IR node's shape, except that a
    /// subsampled shortcut keeps its input's channels (the add pads them).
    pub shape: Shape,
    /// The first IR node of the step, for a stable order.
    first: NodeId,
}

/// Fuses the graph's nodes into steps (in IR order; see [`schedule`]).
/// Errors name a node the pass cannot place, which would be a compiler bug.
pub fn fuse(graph: &Graph) -> Result<Vec<Step>, String> {
    let nodes = &graph.nodes;
    let mut users = vec![Vec::new(); nodes.len()];
    for (id, node) in nodes.iter().enumerate() {
        for &input in &node.inputs {
            users[input].push(id);
        }
    }
    // The node holding a node's value after fusion.
    let mut value: Vec<NodeId> = (0..nodes.len()).collect();
    let only_user = |id: NodeId, op: fn(&Op) -> bool| match users[id][..] {
        [user] if op(&nodes[user].op) => Some(user),
        _ => None,
    };
    let mut fused = vec![false; nodes.len()];
    let mut steps = Vec::new();
    for (id, node) in nodes.iter().enumerate().skip(1) {
        if fused[id] {
            continue;
        }
        let input = value[node.inputs[0]];
        let mut step = |kind, residual: Option<NodeId>, members: &[NodeId]| {
            let output = *members.last().unwrap_or(&id);
            for &m in members {
                fused[m] = true;
                value[m] = output;
            }
            let mut shape = nodes[output].shape;
            if let StepKind::Subsample { .. } = kind {
                shape.c = nodes[input].shape.c;
            }
            steps.push(Step {
                kind,
                input,
                residual,
                output,
                shape,
                first: id,
            });
        };
        match node.op {
            Op::Conv(_) => {
                let mut members = vec![id];
                let bn = only_user(id, |op| matches!(op, Op::BatchNorm));
                members.extend(bn);
                let last = *members.last().unwrap_or(&id);
                let add = only_user(last, |op| matches!(op, Op::Add))
                    .filter(|&add| nodes[add].inputs[0] == last);
                members.extend(add);
                let residual = add.map(|add| nodes[add].inputs[1]);
                let last = *members.last().unwrap_or(&id);
                let relu = only_user(last, |op| matches!(op, Op::Relu));
                members.extend(relu);
                // The residual is resolved after scheduling, when its producer is known.
                step(
                    StepKind::Conv {
                        conv: id,
                        bn,
                        relu: relu.is_some(),
                        pool: None,
                    },
                    residual,
                    &members,
                );
            }
            Op::BatchNorm => {
                let relu = only_user(id, |op| matches!(op, Op::Relu));
                let members: Vec<NodeId> = [id].into_iter().chain(relu).collect();
                step(
                    StepKind::Affine {
                        bn: id,
                        relu: relu.is_some(),
                    },
                    None,
                    &members,
                );
            }
            Op::MaxPool {
                kernel,
                stride,
                padding,
            } => step(
                StepKind::MaxPool {
                    kernel,
                    stride,
                    padding,
                },
                None,
                &[id],
            ),
            Op::ZeroPad { stride, .. } if stride > 1 => {
                step(StepKind::Subsample { stride }, None, &[id])
            }
            // Channel padding alone is the zero-padded residual add itself.
            Op::ZeroPad { .. } => value[id] = input,
            Op::GlobalAvgPool => match only_user(id, |op| matches!(op, Op::Linear { .. })) {
                Some(fc) => step(StepKind::Head { fc }, None, &[id, fc]),
                None => return Err(format!("`{}` is not followed by the classifier", node.name)),
            },
            Op::Input | Op::Relu | Op::Add | Op::Linear { .. } => {
                return Err(format!(
                    "`{}` ({}) has no fused step",
                    node.name,
                    node.op.describe()
                ))
            }
        }
    }
    for step in &mut steps {
        step.residual = step.residual.map(|r| value[r]);
    }
    Ok(steps)
}

/// Orders `steps` so each runs after the steps it reads, keeping IR order
/// otherwise (so a block's shortcut runs just before the convolution that
/// adds it).
pub fn schedule(steps: Vec<Step>) -> Result<Vec<Step>, String> {
    let producer = |value: NodeId| steps.iter().position(|s| s.output == value);
    let deps: Vec<Vec<usize>> = steps
        .iter()
        .map(|s| {
            [Some(s.input), s.residual]
                .into_iter()
                .flatten()
                .filter_map(producer)
                .collect()
        })
        .collect();
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut dependents = vec![Vec::new(); steps.len()];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    // Ready steps, earliest IR position first.
    let mut ready: BinaryHeap<std::cmp::Reverse<(NodeId, usize)>> = BinaryHeap::new();
    for (i, s) in steps.iter().enumerate() {
        if waiting[i] == 0 {
            ready.push(std::cmp::Reverse((s.first, i)));
        }
    }
    let mut order = Vec::with_capacity(steps.len());
    while let Some(std::cmp::Reverse((_, i))) = ready.pop() {
        order.push(i);
        for &j in &dependents[i] {
            waiting[j] -= 1;
            if waiting[j] == 0 {
                ready.push(std::cmp::Reverse((steps[j].first, j)));
            }
        }
    }
    if order.len() != steps.len() {
        return Err("the fused steps have a cycle".into());
    }
    let mut steps: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| steps[i].take()).collect())
}

/// How many steps read value `v`, as input or residual.
fn readers(steps: &[Step], v: NodeId) -> usize {
    steps
        .iter()
        .filter(|s| s.input == v || s.residual == Some(v))
        .count()
}

/// Floats per image value `v` takes in the arena: a padded one's planes
/// are 2 wider each way; 0 for a value no step writes.
fn value_floats(steps: &[Step], layouts: &[Layout], v: NodeId) -> usize {
    steps.iter().position(|s| s.output == v).map_or(0, |i| {
        let shape = steps[i].shape;
        let border = 2 * usize::from(layouts[i] == Layout::BlockedPadded);
        shape.c * (shape.h + border) * (shape.w + border)
    })
}

/// The arena: each value's offset (floats per image) and the arena's size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// `(value, offset)` for every value a step writes, except the network's
    /// output when the last step writes straight into the caller's tensor.
    pub offsets: Vec<(NodeId, usize)>,
    /// Floats per image.
    pub floats: usize,
}

/// Assigns arena offsets by liveness: largest buffers first, each at the
/// lowest offset free for its whole lifetime (greedy by size). A
/// convolution whose residual no later step reads, and is as large as its
/// output, writes its output over the residual, in place (`Exec::conv`
/// sees the two slots are one): a chain of residual blocks runs in one
/// buffer, and their adds read no tensor besides the one they write.
pub fn plan(steps: &[Step], layouts: &[Layout]) -> Plan {
    let size = |v: NodeId| value_floats(steps, layouts, v);
    // The last step that reads a value; the backbone's output, which no
    // step reads, is copied out after the last step.
    let last_read = |v: NodeId| {
        steps
            .iter()
            .rposition(|s| s.input == v || s.residual == Some(v))
            .unwrap_or(steps.len())
    };
    // Buffers: the values sharing one, the step that writes the first and
    // the last step that reads one of them.
    let mut buffers: Vec<(Vec<NodeId>, usize, usize)> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        if matches!(step.kind, StepKind::Head { .. }) {
            continue; // writes the caller's logits
        }
        let over = step
            .residual
            .filter(|&r| {
                matches!(step.kind, StepKind::Conv { .. })
                    && r != step.input
                    && last_read(r) == i
                    && size(r) == size(step.output)
            })
            .and_then(|r| buffers.iter().position(|(values, ..)| values.contains(&r)));
        match over {
            Some(b) => {
                buffers[b].0.push(step.output);
                buffers[b].2 = last_read(step.output);
            }
            None => buffers.push((vec![step.output], i, last_read(step.output))),
        }
    }
    buffers.sort_by_key(|(values, def, _)| (std::cmp::Reverse(size(values[0])), *def));
    let mut placed: Vec<(usize, usize, usize, usize)> = Vec::new(); // (offset, end, def, last)
    let mut offsets = Vec::new();
    for (values, def, last) in buffers {
        let len = size(values[0]);
        let mut conflicts: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&(_, _, d, l)| d <= last && def <= l)
            .map(|&(o, e, _, _)| (o, e))
            .collect();
        conflicts.sort_unstable();
        let mut offset = 0;
        for (o, e) in conflicts {
            if offset + len <= o {
                break;
            }
            offset = offset.max(e);
        }
        placed.push((offset, offset + len, def, last));
        offsets.extend(values.into_iter().map(|v| (v, offset)));
    }
    offsets.sort_unstable();
    let floats = placed.iter().map(|&(_, e, _, _)| e).max().unwrap_or(0);
    Plan { offsets, floats }
}

/// How a value's elements are laid out (the runtime's `Layout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// NCHW.
    Planar,
    /// `[N][C / 16][H][W][16]`: the layout the runtime's blocked kernels
    /// (Winograd with whole-vector transforms, 1x1 layers that stream their
    /// input) run fastest on.
    Blocked,
    /// Blocked with a one-pixel border of zeros around each plane: what a
    /// padded layer that does not run Winograd reads without copying (see
    /// [`layouts`]).
    BlockedPadded,
}

/// The narrowest output the blocked layers run at: ResNet's 7x7 stage runs
/// blocked too. A network of basic blocks runs its 3x3 layers there on
/// blocked Winograd F(2x2) at 0.65 to 0.73 ms each at batch 1, where the
/// NCHW patch GEMM took 0.85 and the blocked direct kernel 0.75
/// (ResNet-18's pass: 8.1 ms NCHW, 7.7 on the direct kernel, then
/// 7.33-7.59 -> 7.13-7.40 with Winograd; at batch 8 the NCHW layers had
/// been 3% faster than the direct kernel, and Winograd is 6% faster than
/// it, 58.3-59.5 -> 55.0-55.4 ms). A bottleneck's 3x3 layers there read
/// their input padded and run the direct kernel (see [`layouts`]).
/// ResNet-50's stage ran NCHW until measured on a Zen 4 machine: blocked,
/// its two 3x3 layers at 7x7 take 1.03 against the patch GEMM's 1.21 ms at
/// batch 1, its shortcut into 7x7 0.93 against 1.01, and its pass the
/// fastest of each of eight alternated runs 0.3 to 0.5 ms lower in six
/// (equal in one, higher in one burst); at batch 8 within noise, with a
/// peak RSS 22 MB lower (no workspace for Winograd with filters made in
/// each pass). On a Sapphire Rapids machine, the stage blocked (its 3x3
/// layers then on a padded copy) had run the pass no faster.
pub const BLOCKED_MIN_SIDE: usize = 7;

/// The output side below which Winograd's kept filters are left to
/// networks of basic blocks: a bottleneck's 3x3 layers narrower than this
/// read their input padded, from the 1x1 layer before them, which Winograd
/// does not take, and run the direct kernel. At 7x7 F(2x2)'s filters are
/// 16/9 of the plain weights: ResNet-50's two 512-channel layers there
/// would take 0.69 to 0.75 ms each at batch 1 on Zen 4 rather than 1.03,
/// but hold 15 MB more, past its memory target (102.2 + 32 MB; its peak
/// is 129.6 MB without them).
pub const KEPT_FILTERS_MIN_SIDE: usize = 14;

/// Each step's output layout. A network whose stem is followed by a max
/// pool runs blocked from the stem on (it reads the NCHW image and writes
/// blocks; a stem the blocked kernel cannot take writes NCHW, and the pool
/// interleaves its channels) while its values are at least
/// [`BLOCKED_MIN_SIDE`] a side, then NCHW: the first layers to narrower
/// outputs (strided, so never Winograd) read blocked and write NCHW (the
/// runtime runs a strided 1x1 one as the patch GEMM, gathering from the
/// blocks). It
/// does when every blocked layer is one the blocked kernels take:
/// ungrouped, on multiples of 16 channels, adding a residual of all its
/// output channels, and reading only values from the pool on. Any other
/// network (a CIFAR stem, grouped or pre-activation blocks, zero-padded
/// shortcuts) runs NCHW throughout.
pub fn layouts(graph: &Graph, steps: &[Step]) -> Vec<Layout> {
    let planar = vec![Layout::Planar; steps.len()];
    let Some(pool) = steps
        .iter()
        .position(|s| matches!(s.kind, StepKind::MaxPool { .. }))
    else {
        return planar;
    };
    // The stem itself writes blocks when the pool alone reads it and its
    // output channels make blocks.
    let stem = pool.checked_sub(1).filter(|&i| {
        let step = &steps[i];
        let fits = match step.kind {
            StepKind::Conv { conv, .. } => matches!(graph.nodes[conv].op,
                Op::Conv(c) if c.groups == 1 && c.out_channels.is_multiple_of(16)),
            _ => false,
        };
        fits && step.input == 0
            && step.residual.is_none()
            && steps[pool].input == step.output
            && readers(steps, step.output) == 1
    });
    let first = stem.unwrap_or(pool);
    let layouts: Vec<Layout> = steps
        .iter()
        .enumerate()
        .map(
            |(i, s)| match i >= first && s.shape.h.min(s.shape.w) >= BLOCKED_MIN_SIDE {
                true => Layout::Blocked,
                false => Layout::Planar,
            },
        )
        .collect();
    let layout_of = |v: NodeId| match steps.iter().position(|s| s.output == v) {
        Some(i) => layouts[i],
        None => Layout::Planar,
    };
    let early: Vec<NodeId> = steps[..first].iter().map(|s| s.output).chain([0]).collect();
    let shape = |v: NodeId| graph.nodes[v].shape;
    let takes = |(step, &out): (&Step, &Layout)| {
        let input = layout_of(step.input);
        if input == Layout::Planar {
            // Past the blocked stages: NCHW steps take anything.
            return out == Layout::Planar;
        }
        let reads_early =
            early.contains(&step.input) || step.residual.is_some_and(|r| early.contains(&r));
        let fits = match step.kind {
            StepKind::Conv { conv, .. } => match graph.nodes[conv].op {
                Op::Conv(c) => {
                    c.groups == 1
                        && shape(step.input).c.is_multiple_of(16)
                        && c.out_channels.is_multiple_of(16)
                        && step
                            .residual
                            .is_none_or(|r| shape(r) == step.shape && layout_of(r) == out)
                }
                _ => false,
            },
            StepKind::Head { .. } => true,
            _ => false,
        };
        fits && !reads_early
    };
    let blocked = steps[pool].shape.c.is_multiple_of(16)
        && layouts[first..=pool].iter().all(|&l| l == Layout::Blocked)
        && steps[pool + 1..]
            .iter()
            .zip(&layouts[pool + 1..])
            .all(takes);
    if !blocked {
        return planar;
    }
    // A padded layer that does not run Winograd reads its input without a
    // copy where that input comes padded: from a 1x1 layer it alone reads,
    // which then writes the border of zeros too. Those are the strided
    // layers, and a bottleneck's 3x3 layers narrower than
    // [`KEPT_FILTERS_MIN_SIDE`], which a padded input puts on the direct
    // kernel (a basic block's 3x3 layers read a 3x3 layer's output).
    let mut layouts = layouts;
    for step in steps {
        let StepKind::Conv { conv, .. } = step.kind else {
            continue;
        };
        let Op::Conv(c) = graph.nodes[conv].op else {
            continue;
        };
        let Some(producer) = steps.iter().position(|s| s.output == step.input) else {
            continue;
        };
        let from_1x1 = match steps[producer].kind {
            StepKind::Conv {
                conv, pool: None, ..
            } => {
                matches!(graph.nodes[conv].op, Op::Conv(p) if p.kernel == 1 && p.stride == 1)
            }
            _ => false,
        };
        let side = step.shape.h.min(step.shape.w);
        let padded = c.padding == 1
            && (c.stride > 1 || side < KEPT_FILTERS_MIN_SIDE)
            && layouts[producer] == Layout::Blocked
            && from_1x1
            && steps[producer].residual.is_none()
            && readers(steps, step.input) == 1;
        if padded {
            layouts[producer] = Layout::BlockedPadded;
        }
    }
    layouts
}

/// A blocked network's stem and the max pool after it as one step (the
/// runtime pools the stem's rows while they are in cache, so its output
/// never reaches memory): where the stem writes blocks and the pool alone
/// reads it. Runs after [`layouts`], keeping each step's layout, and
/// before [`plan`], which then has no value for the stem's output.
pub fn fuse_stem_pool(mut steps: Vec<Step>, mut layouts: Vec<Layout>) -> (Vec<Step>, Vec<Layout>) {
    let Some(pool) = steps
        .iter()
        .position(|s| matches!(s.kind, StepKind::MaxPool { .. }))
    else {
        return (steps, layouts);
    };
    let value = steps[pool].input;
    let Some(stem) = steps.iter().position(|s| s.output == value) else {
        return (steps, layouts);
    };
    let blocked = layouts[stem] == Layout::Blocked && layouts[pool] == Layout::Blocked;
    let plain_stem = matches!(steps[stem].kind, StepKind::Conv { pool: None, .. })
        && steps[stem].input == 0
        && steps[stem].residual.is_none();
    let StepKind::MaxPool {
        kernel,
        stride,
        padding,
    } = steps[pool].kind
    else {
        return (steps, layouts);
    };
    if blocked && readers(&steps, value) == 1 && plain_stem {
        let pooled = steps.remove(pool);
        layouts.remove(pool);
        let stem = &mut steps[stem];
        if let StepKind::Conv { pool, .. } = &mut stem.kind {
            *pool = Some((kernel, stride, padding));
        }
        stem.output = pooled.output;
        stem.shape = pooled.shape;
    }
    (steps, layouts)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::check;
    use std::str::FromStr;

    fn graph(spec: &str) -> Graph {
        check(proc_macro2::TokenStream::from_str(spec).unwrap())
            .unwrap()
            .remove(0)
    }

    #[test]
    fn a_bottleneck_fuses_to_four_convolutions_with_the_add_in_the_last() {
        let g = graph("pub N<stages: [1], bottleneck: true, input: [3, 64, 64]>");
        let steps = schedule(fuse(&g).unwrap()).unwrap();
        let names: Vec<String> = steps
            .iter()
            .map(|s| match s.kind {
                StepKind::Conv { conv, relu, .. } => {
                    format!(
                        "{}{}{}",
                        g.nodes[conv].name,
                        if s.residual.is_some() { "+res" } else { "" },
                        if relu { "+relu" } else { "" }
                    )
                }
                StepKind::MaxPool { .. } => "maxpool".into(),
                StepKind::Head { .. } => "head".into(),
                ref other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            [
                "conv1+relu",
                "maxpool",
                "layer1.0.conv1+relu",
                "layer1.0.conv2+relu",
                "layer1.0.downsample.0",
                "layer1.0.conv3+res+relu",
                "head"
            ]
        );
    }

    #[test]
    fn the_arena_reuses_memory_of_dead_values() {
        // A basic stage at 8x8 with 4 channels: every value is 256 floats.
        let g =
            graph("pub N<stages: [3], widths: [4], stem: cifar, input: [1, 8, 8], classes: none>");
        let steps = schedule(fuse(&g).unwrap()).unwrap();
        let plan = plan(&steps, &vec![Layout::Planar; steps.len()]);
        // conv1 then 3 blocks of 2 convolutions: at most two values are alive
        // at once (a block's input and its middle), as each block's second
        // convolution writes over its input, the residual it adds.
        assert_eq!(steps.len(), 7);
        assert_eq!(plan.floats, 2 * 256);
        let in_place = steps
            .iter()
            .filter(|s| {
                s.residual
                    .is_some_and(|r| offset(&plan, r) == offset(&plan, s.output))
            })
            .count();
        assert_eq!(in_place, 3, "each block's add runs in place");
        assert_eq!(
            shared_memory(&steps, &vec![Layout::Planar; steps.len()], &plan),
            None
        );
    }

    /// The names of the convolutions each layout pair covers.
    fn conv_layouts(spec: &str) -> Vec<(String, Layout, Layout)> {
        let g = graph(spec);
        let steps = schedule(fuse(&g).unwrap()).unwrap();
        let layouts = layouts(&g, &steps);
        let of = |v: NodeId| {
            steps
                .iter()
                .position(|s| s.output == v)
                .map_or(Layout::Planar, |i| layouts[i])
        };
        steps
            .iter()
            .zip(&layouts)
            .filter_map(|(s, &out)| match s.kind {
                StepKind::Conv { conv, .. } => Some((g.nodes[conv].name.clone(), of(s.input), out)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn imagenet_networks_run_blocked_from_the_stem_on() {
        use Layout::{Blocked, BlockedPadded, Planar};
        for spec in [
            "pub N<stages: [3, 4, 6, 3], bottleneck: true>",
            "pub N<stages: [2, 2, 2, 2]>",
        ] {
            let bottleneck = spec.contains("bottleneck");
            for (name, input, output) in conv_layouts(spec) {
                // A bottleneck's strided conv2 (each stage's first but
                // layer1's) and its conv2 at 7x7 read its conv1's output
                // padded; a basic block's conv1 reads the block's input,
                // which others read too.
                let strided = name.contains(".0.") && !name.starts_with("layer1");
                let padded = bottleneck && (strided || name.starts_with("layer4"));
                let want = match name.as_str() {
                    "conv1" => (Planar, Blocked),
                    n if padded && n.ends_with("conv1") => (Blocked, BlockedPadded),
                    n if padded && n.ends_with("conv2") => (BlockedPadded, Blocked),
                    _ => (Blocked, Blocked),
                };
                assert_eq!((input, output), want, "{name} of {spec}");
            }
        }
    }

    #[test]
    fn cifar_grouped_and_preactivation_networks_run_nchw() {
        for spec in [
            "pub N<stages: [3, 3, 3], stem: cifar, widths: [16, 32, 64], input: [3, 32, 32], shortcut: zero_pad>",
            "pub N<stages: [3, 4, 6, 3], bottleneck: true, groups: 32, width_per_group: 4>",
            "pub N<stages: [2, 2, 2, 2], preact: true>",
            // 24 channels do not make blocks of 16.
            "pub N<stages: [2, 2], widths: [24, 48]>",
        ] {
            for (name, input, output) in conv_layouts(spec) {
                assert_eq!((input, output), (Layout::Planar, Layout::Planar), "{name} of {spec}");
            }
        }
    }

    #[test]
    fn a_blocked_stem_takes_its_pool_along() {
        for (spec, fused) in [
            ("pub N<stages: [2, 2, 2, 2]>", true),
            (
                "pub N<stages: [3, 4, 6, 3], bottleneck: true, groups: 32, width_per_group: 4>",
                false,
            ),
        ] {
            let g = graph(spec);
            let steps = schedule(fuse(&g).unwrap()).unwrap();
            let layouts = layouts(&g, &steps);
            let (steps, layouts) = fuse_stem_pool(steps, layouts);
            assert_eq!(steps.len(), layouts.len());
            let pools = steps
                .iter()
                .filter(|s| matches!(s.kind, StepKind::MaxPool { .. }))
                .count();
            let stem_pool = match steps[0].kind {
                StepKind::Conv { pool, .. } => pool,
                _ => None,
            };
            match fused {
                true => {
                    assert_eq!((pools, stem_pool), (0, Some((3, 2, 1))), "{spec}");
                    assert_eq!(
                        steps[0].shape.h, 56,
                        "the stem's step writes the pool's output"
                    );
                    assert_eq!(steps[1].input, steps[0].output);
                }
                false => assert_eq!((pools, stem_pool), (1, None), "{spec}"),
            }
        }
    }

    fn offset(plan: &Plan, value: NodeId) -> Option<usize> {
        plan.offsets
            .iter()
            .find(|&&(v, _)| v == value)
            .map(|&(_, o)| o)
    }

    /// Two values of the plan that are alive at once and overlap in the
    /// arena, other than a convolution's output written in place over the
    /// residual it last reads; `None` if the plan has none.
    pub(crate) fn shared_memory(
        steps: &[Step],
        layouts: &[Layout],
        plan: &Plan,
    ) -> Option<(NodeId, NodeId)> {
        let life = |v: NodeId| {
            let def = steps.iter().position(|s| s.output == v).unwrap_or(0);
            let last = steps
                .iter()
                .rposition(|s| s.input == v || s.residual == Some(v))
                .unwrap_or(steps.len());
            (def, last.max(def))
        };
        let size = |v: NodeId| value_floats(steps, layouts, v);
        // `b` is written in place over `a`: by the step that reads `a` last,
        // as its residual, at `a`'s offset and size.
        let in_place = |(a, oa): (NodeId, usize), (b, ob): (NodeId, usize)| {
            let (def, step) = (life(b).0, &steps[life(b).0]);
            life(a).1 == def
                && matches!(step.kind, StepKind::Conv { .. })
                && step.residual == Some(a)
                && step.input != a
                && (oa, size(a)) == (ob, size(b))
        };
        for (i, &(a, oa)) in plan.offsets.iter().enumerate() {
            for &(b, ob) in &plan.offsets[i + 1..] {
                let ((da, la), (db, lb)) = (life(a), life(b));
                let alive = da <= lb && db <= la;
                let overlap = oa < ob + size(b) && ob < oa + size(a);
                if alive && overlap && !in_place((a, oa), (b, ob)) && !in_place((b, ob), (a, oa)) {
                    return Some((a, b));
                }
            }
        }
        None
    }
}
