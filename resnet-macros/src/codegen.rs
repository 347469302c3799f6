//! Rust items for a compiled model: `quote!` only, every decision was made
//! by the passes before.

use crate::ir::Shortcut;
use crate::spec::BlockKind;
use crate::table;
use crate::Model;
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
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
    let doc = format!("# Architecture\n\n```text\n{summary}```");

    let [c, h, w] = [
        graph.nodes[0].shape.c,
        graph.nodes[0].shape.h,
        graph.nodes[0].shape.w,
    ];
    let output = table::output_dims(graph);
    let n_output = output.len();
    let features = graph.nodes[graph.features].shape;
    let (fc, fh, fw) = (features.c, features.h, features.w);
    // `lower` rejected networks whose totals overflow u64.
    let params = u64::try_from(graph.total_params()).unwrap_or(u64::MAX);
    let macs = u64::try_from(graph.total_macs()).unwrap_or(u64::MAX);

    let layers = graph.nodes.iter().enumerate().skip(1).map(|(id, node)| {
        let (name, kind) = (&node.name, node.op.describe());
        let (oc, oh, ow) = (node.shape.c, node.shape.h, node.shape.w);
        let (params, macs) = (graph.params(id) as u64, graph.macs(id) as u64);
        quote! {
            #private::LayerInfo { name: #name, kind: #kind, output: [#oc, #oh, #ow], params: #params, macs: #macs }
        }
    });
    let blocks = graph.blocks.iter().map(|block| {
        let name = &block.name;
        let stage = block.stage;
        let kind = match block.kind {
            BlockKind::Basic => format_ident!("Basic"),
            BlockKind::Bottleneck => format_ident!("Bottleneck"),
        };
        let shortcut = match block.shortcut {
            Shortcut::Identity => format_ident!("Identity"),
            Shortcut::Projection => format_ident!("Projection"),
            Shortcut::ZeroPad => format_ident!("ZeroPad"),
        };
        let out = graph.nodes[block.nodes.end - 1].shape;
        let (oc, oh, ow) = (out.c, out.h, out.w);
        let params: u128 = block.nodes.clone().map(|i| graph.params(i)).sum();
        let macs: u128 = block.nodes.clone().map(|i| graph.macs(i)).sum();
        let (params, macs) = (params as u64, macs as u64);
        quote! {
            #private::BlockInfo {
                name: #name,
                stage: #stage,
                kind: #private::BlockKind::#kind,
                shortcut: #private::Shortcut::#shortcut,
                output: [#oc, #oh, #ow],
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
        #[doc = #doc]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        #vis struct #name;

        impl #name {
            /// Input `[channels, height, width]` per image; the batch size is chosen at run time.
            pub const INPUT: [usize; 3] = [#c, #h, #w];
            /// Output per image: `[classes]`, or `[channels, height, width]` for a headless backbone.
            pub const OUTPUT: [usize; #n_output] = [#(#output),*];
            /// The backbone's output `[channels, height, width]`, before pooling and the classifier.
            pub const FEATURES: [usize; 3] = [#fc, #fh, #fw];
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
