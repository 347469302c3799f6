//! The layer table, as torchinfo prints one: every node with its kind,
//! output shape, parameters and multiply-adds, each residual block headed by
//! its role, then the totals. The same text goes into the model's doc
//! comment and its `Display`.

use crate::ir::{Block, Graph, Op, Shape, Shortcut};
use crate::spec::BlockKind;
use std::fmt::Write;

/// Output of `id`, as the user sees it: `[classes]` after the classifier.
pub fn output_dims(graph: &Graph) -> Vec<usize> {
    let out = graph.nodes[graph.output].shape;
    match graph.nodes[graph.output].op {
        Op::Linear { .. } => vec![out.c],
        _ => vec![out.c, out.h, out.w],
    }
}

struct Row {
    name: String,
    kind: String,
    shape: String,
    params: u128,
    macs: u128,
}

pub fn role(block: &Block) -> String {
    let kind = match block.kind {
        BlockKind::Basic => "BasicBlock",
        BlockKind::Bottleneck => "Bottleneck",
    };
    let role = match block.shortcut {
        Shortcut::Identity => "identity block",
        Shortcut::Projection => "convolution block (projection)",
        Shortcut::ZeroPad => "convolution block (zero-pad)",
    };
    format!("{kind}, {role}")
}

/// The table for `graph`, titled with the model's `name`.
pub fn render(name: &str, graph: &Graph) -> String {
    let mut rows = Vec::new();
    let mut blocks = graph.blocks.iter().peekable();
    for (id, node) in graph.nodes.iter().enumerate().skip(1) {
        let mut indent = "";
        if let Some(block) = blocks.peek() {
            if block.nodes.start == id {
                let last = &graph.nodes[block.nodes.end - 1];
                rows.push(Row {
                    name: block.name.clone(),
                    kind: role(block),
                    shape: last.shape.to_string(),
                    params: block.nodes.clone().map(|i| graph.params(i)).sum(),
                    macs: block.nodes.clone().map(|i| graph.macs(i)).sum(),
                });
            }
            if block.nodes.contains(&id) {
                indent = "  ";
            }
            if block.nodes.end == id + 1 {
                blocks.next();
            }
        }
        rows.push(Row {
            name: format!("{indent}{}", node.name),
            kind: node.op.describe(),
            shape: shape_text(node.shape, &node.op),
            params: graph.params(id),
            macs: graph.macs(id),
        });
    }

    let header = Row {
        name: "Layer".into(),
        kind: "Kind".into(),
        shape: "Output".into(),
        params: 0,
        macs: 0,
    };
    let width = |f: fn(&Row) -> usize| rows.iter().chain([&header]).map(f).max().unwrap_or(0);
    let (w_name, w_kind, w_shape) = (
        width(|r| r.name.len()),
        width(|r| r.kind.len()),
        width(|r| r.shape.len()),
    );
    let (total_params, total_macs) = (graph.total_params(), graph.total_macs());
    let (w_params, w_macs) = (
        grouped(total_params).len().max(6),
        grouped(total_macs).len().max(4),
    );

    let input = graph.nodes[0].shape;
    let output = output_dims(graph);
    let mut out = String::new();
    let _ = writeln!(out, "{name}: input {input} -> output {output:?}");
    let _ = writeln!(
        out,
        "{:w_name$}  {:w_kind$}  {:w_shape$}  {:>w_params$}  {:>w_macs$}",
        "Layer", "Kind", "Output", "Params", "MACs"
    );
    let rule = "=".repeat(w_name + w_kind + w_shape + w_params + w_macs + 8);
    let _ = writeln!(out, "{rule}");
    for r in &rows {
        let _ = writeln!(
            out,
            "{:w_name$}  {:w_kind$}  {:w_shape$}  {:>w_params$}  {:>w_macs$}",
            r.name,
            r.kind,
            r.shape,
            grouped(r.params),
            grouped(r.macs)
        );
    }
    let _ = writeln!(out, "{rule}");
    let _ = writeln!(out, "Total params: {}", grouped(total_params));
    let _ = writeln!(
        out,
        "Total MACs: {} ({:.3} G)",
        grouped(total_macs),
        total_macs as f64 / 1e9
    );
    let _ = write!(out, "{}", block_counts(graph));
    out
}

/// "Blocks: 4 convolution, 29 identity (stage 1: 1 + 2, ...)".
fn block_counts(graph: &Graph) -> String {
    let stages = graph.blocks.iter().map(|b| b.stage).max().unwrap_or(0);
    let count = |stage: Option<usize>, conv: bool| {
        graph
            .blocks
            .iter()
            .filter(|b| {
                stage.is_none_or(|s| b.stage == s) && b.shortcut.is_convolution_block() == conv
            })
            .count()
    };
    let per_stage: Vec<String> = (1..=stages)
        .map(|s| {
            format!(
                "stage {s}: {} + {}",
                count(Some(s), true),
                count(Some(s), false)
            )
        })
        .collect();
    format!(
        "Blocks: {} convolution, {} identity ({})\n",
        count(None, true),
        count(None, false),
        per_stage.join(", ")
    )
}

fn shape_text(shape: Shape, op: &Op) -> String {
    match op {
        Op::Linear { .. } => format!("[{}]", shape.c),
        _ => shape.to_string(),
    }
}

/// `1234567` as `1,234,567`.
pub fn grouped(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() * 4 / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::grouped;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(25_557_032), "25,557,032");
        assert_eq!(grouped(118_013_952_000), "118,013,952,000");
    }
}
