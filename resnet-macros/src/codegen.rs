//! Rust items for a compiled model: `quote!` only, every decision was made
//! by the passes before.

use crate::ir::{Graph, NodeId, Shape, Shortcut};
use crate::spec::BlockKind;
use crate::table;
use crate::Model;
use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};
use std::ops::Range;
use syn::{Attribute, Ident, Visibility};

/// The model type, its consts and its `Display`.
pub fn model(model: &Model) -> TokenStream {
    let Model {
        attrs,
        vis,
        name,
        graph,
        spec_file,
    } = model;
    let private = quote!(::resnet_runtime::__private);
    let summary = table::render(&name.to_string(), graph);
    let doc = ["# Architecture", "", "```text"]
        .into_iter()
        .chain(summary.lines())
        .chain(["```"])
        .map(|line| format!(" {line}"));

    let input = dims(graph.nodes[0].shape);
    let output_dims = table::output_dims(graph);
    let n_output = int(output_dims.len() as u128);
    let output = output_dims.iter().map(|&d| int(d as u128));
    let features = dims(graph.nodes[graph.features].shape);
    let (params, macs) = (int(graph.total_params()), int(graph.total_macs()));

    let layers = graph.nodes.iter().enumerate().skip(1).map(|(id, node)| {
        let (name, kind) = (&node.name, node.op.describe());
        let output = dims(node.shape);
        let (params, macs) = (int(graph.params(id)), int(graph.macs(id)));
        quote! {
            #private::LayerInfo { name: #name, kind: #kind, output: #output, params: #params, macs: #macs }
        }
    });
    let blocks = graph.blocks.iter().map(|block| {
        let name = &block.name;
        let stage = int(block.stage as u128);
        let kind = match block.kind {
            BlockKind::Basic => format_ident!("Basic"),
            BlockKind::Bottleneck => format_ident!("Bottleneck"),
        };
        let shortcut = match block.shortcut {
            Shortcut::Identity => format_ident!("Identity"),
            Shortcut::Projection => format_ident!("Projection"),
            Shortcut::ZeroPad => format_ident!("ZeroPad"),
        };
        let output = dims(graph.nodes[block.nodes.end - 1].shape);
        let (params, macs) = block_totals(graph, block.nodes.clone());
        quote! {
            #private::BlockInfo {
                name: #name,
                stage: #stage,
                kind: #private::BlockKind::#kind,
                shortcut: #private::Shortcut::#shortcut,
                output: #output,
                params: #params,
                macs: #macs,
            }
        }
    });
    // Including the YAML spec makes cargo rebuild when it changes.
    let track = spec_file.as_ref().map(|path| {
        let path = path.to_string_lossy();
        quote!(
            const _: &str = ::core::include_str!(#path);
        )
    });

    quote! {
        #(#attrs)*
        #[doc = ""]
        #(#[doc = #doc])*
        #[derive(Clone, Copy, Debug, Default)]
        #vis struct #name;

        impl #name {
            /// Input `[channels, height, width]` per image; the batch size is chosen at run time.
            pub const INPUT: [usize; 3] = #input;
            /// Output per image: `[classes]`, or `[channels, height, width]` for a headless backbone.
            pub const OUTPUT: [usize; #n_output] = [#(#output),*];
            /// The backbone's output `[channels, height, width]`, before pooling and the classifier.
            pub const FEATURES: [usize; 3] = #features;
            /// Trainable parameters, counted as PyTorch's `parameters()` counts them.
            pub const PARAMS: u64 = #params;
            /// Multiply-accumulates per image (convolutions and the classifier).
            pub const MACS: u64 = #macs;
            /// Every layer, in execution order.
            pub const LAYERS: &'static [#private::LayerInfo] = &[#(#layers),*];
            /// Every residual block, in execution order.
            pub const BLOCKS: &'static [#private::BlockInfo] = &[#(#blocks),*];
            /// The layer table, as `Display` prints it.
            pub const SUMMARY: &'static str = #summary;
        }

        impl #private::core::fmt::Display for #name {
            fn fmt(&self, f: &mut #private::core::fmt::Formatter<'_>) -> #private::core::fmt::Result {
                f.write_str(Self::SUMMARY)
            }
        }

        #track
    }
}

/// What a model that failed to compile still defines, so that its errors
/// are not followed by "cannot find type" ones.
pub fn stub(attrs: &[Attribute], vis: &Visibility, name: &Ident) -> TokenStream {
    quote! {
        #(#attrs)*
        #vis struct #name;
    }
}

fn block_totals(graph: &Graph, nodes: Range<NodeId>) -> (Literal, Literal) {
    let params = nodes.clone().map(|i| graph.params(i)).sum();
    let macs = nodes.map(|i| graph.macs(i)).sum();
    (int(params), int(macs))
}

/// An integer literal as a person writes it: `25_557_032`, no type suffix.
fn int(n: u128) -> Literal {
    let digits = table::grouped(n).replace(',', "_");
    digits
        .parse()
        .unwrap_or_else(|_| Literal::u128_unsuffixed(n))
}

/// `[c, h, w]`.
fn dims(shape: Shape) -> TokenStream {
    let [c, h, w] = [shape.c, shape.h, shape.w].map(|d| int(d as u128));
    quote!([#c, #h, #w])
}
