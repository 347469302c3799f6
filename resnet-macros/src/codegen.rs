//! Rust items for a compiled model: `quote!` only, every decision was made
//! by the passes before.

use crate::ir::{Graph, NodeId, Op, Shape, Shortcut};
use crate::passes::{Layout, Step, StepKind};
use crate::spec::BlockKind;
use crate::table;
use crate::Model;
use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};
use std::ops::Range;
use syn::{Attribute, Ident, Visibility};

/// The model type: its network (see [`network`]), the consts that describe
/// it, and its `Display`.
pub fn model(model: &Model) -> TokenStream {
    let Model {
        name,
        graph,
        spec_file,
        ..
    } = model;
    let private = quote!(::resnet_runtime::__private);
    let summary = table::render(&name.to_string(), graph);
    let doc: Vec<String> = ["# Architecture", "", "```text"]
        .into_iter()
        .chain(summary.lines())
        .chain(["```"])
        .map(|line| format!(" {line}"))
        .collect();
    let network = network(model, &doc);

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
        #network

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

/// The model as a network: one field per fused layer, its constructors
/// (random, safetensors) and its forward pass over the planned arena.
pub fn network(model: &Model, doc: &[String]) -> TokenStream {
    let Model {
        attrs,
        vis,
        name,
        graph,
        steps,
        plan,
        layouts,
        ..
    } = model;
    let private = quote!(::resnet_runtime::__private);
    let node = |id: NodeId| &graph.nodes[id];
    let field = |id: NodeId| format_ident!("{}", node(id).name.replace('.', "_"));
    let params_const =
        |id: NodeId| format_ident!("{}", node(id).name.replace('.', "_").to_uppercase());
    let slot_of = |value: NodeId| match steps.iter().find(|s| s.output == value) {
        Some(step) => step_slot(graph, step),
        None => format_ident!("input"),
    };
    let src = |value: NodeId| {
        if value == 0 {
            quote!(Src::Input)
        } else {
            let slot = slot_of(value);
            quote!(Src::Arena(#slot))
        }
    };

    let mut fields = Vec::new();
    let mut params = Vec::new();
    let mut random = Vec::new();
    let mut load = Vec::new();
    let mut body = Vec::new();
    let mut head = None;
    let layout = |layout: Layout| match layout {
        Layout::Planar => format_ident!("Planar"),
        Layout::Blocked => format_ident!("Blocked"),
        Layout::BlockedPadded => format_ident!("BlockedPadded"),
    };
    for (step, &step_layout) in steps.iter().zip(layouts) {
        let input_shape = node(step.input).shape;
        match step.kind {
            StepKind::Conv {
                conv,
                bn,
                relu,
                pool,
            } => {
                let Op::Conv(c) = node(conv).op else { continue };
                let (f, p) = (field(conv), params_const(conv));
                let conv_name = &node(conv).name;
                let doc = format!(
                    " `{conv_name}`{}: {}, {} -> {}",
                    bn.map_or(String::new(), |b| format!(" + `{}`", node(b).name)),
                    node(conv).op.describe(),
                    input_shape,
                    node(conv).shape
                );
                fields.push(quote!(#[doc = #doc] #f: #private::ConvLayer));
                let [cin, h, w, cout, k, s, pad, g] = [
                    input_shape.c,
                    input_shape.h,
                    input_shape.w,
                    c.out_channels,
                    c.kernel,
                    c.stride,
                    c.padding,
                    c.groups,
                ]
                .map(|v| int(v as u128));
                params.push(quote! {
                    const #p: #private::ConvParams = #private::ConvParams {
                        in_channels: #cin, out_channels: #cout, kernel: #k, stride: #s, padding: #pad, groups: #g, in_h: #h, in_w: #w,
                    };
                });
                let with_bn = bn.is_some();
                let input_layout = steps
                    .iter()
                    .zip(layouts)
                    .find(|(s, _)| s.output == step.input)
                    .map_or(Layout::Planar, |(_, &l)| l);
                let (li, lo) = (layout(input_layout), layout(step_layout));
                let l = quote!(ConvLayout { input: Layout::#li, output: Layout::#lo });
                random.push(quote!(#f: #private::ConvLayer::random(&mut rng, #conv_name, Self::#p, #with_bn, #l)));
                let bn_name = match bn {
                    Some(b) => {
                        let b = &node(b).name;
                        quote!(Some(#b))
                    }
                    None => quote!(None),
                };
                load.push(quote!(#f: loader.conv(#conv_name, #bn_name, Self::#p, #l)));
                let (input, out) = (src(step.input), step_slot(graph, step));
                let residual = match step.residual {
                    Some(r) => {
                        let r = slot_of(r);
                        quote!(Some(#r))
                    }
                    None => quote!(None),
                };
                body.push(match pool {
                    Some(window) => {
                        let [k, s, p] = [window.0, window.1, window.2].map(|v| int(v as u128));
                        quote!(exec.conv_pool(&self.#f, #input, #out, (#k, #s, #p), #relu);)
                    }
                    None => quote!(exec.conv(&self.#f, #input, #out, #residual, #relu);),
                });
            }
            StepKind::Affine { bn, relu } => {
                let f = field(bn);
                let bn_name = &node(bn).name;
                let channels = int(input_shape.c as u128);
                let doc =
                    format!(" `{bn_name}` (before its convolution): BatchNorm2d, {input_shape}");
                fields.push(quote!(#[doc = #doc] #f: #private::Affine));
                random.push(quote!(#f: #private::Affine::random(#channels)));
                load.push(quote!(#f: loader.affine(#bn_name, #channels)));
                let (input, out) = (src(step.input), step_slot(graph, step));
                body.push(quote!(exec.affine(&self.#f, #input, #out, #relu);));
            }
            StepKind::MaxPool {
                kernel,
                stride,
                padding,
            } => {
                let (input, out) = (src(step.input), step_slot(graph, step));
                let [k, s, p] = [kernel, stride, padding].map(|v| int(v as u128));
                body.push(quote!(exec.max_pool(#input, #out, #k, #s, #p);));
            }
            StepKind::Subsample { stride } => {
                let (input, out) = (src(step.input), step_slot(graph, step));
                let s = int(stride as u128);
                body.push(quote!(exec.subsample(#input, #out, #s);));
            }
            StepKind::Head { fc } => {
                let Op::Linear { out_features } = node(fc).op else {
                    continue;
                };
                let f = field(fc);
                let fc_name = &node(fc).name;
                let (channels, classes) = (int(input_shape.c as u128), int(out_features as u128));
                let doc = format!(
                    " `{fc_name}` after global average pooling: Linear, {} -> {out_features}",
                    input_shape.c
                );
                fields.push(quote!(#[doc = #doc] #f: #private::Linear));
                random.push(quote!(#f: #private::Linear::random(&mut rng, #channels, #classes)));
                load.push(quote!(#f: loader.linear(#fc_name, #channels, #classes)));
                head = Some((f, out_features));
            }
        }
    }
    let offset = |value: NodeId| {
        plan.offsets
            .iter()
            .find(|(v, _)| *v == value)
            .map(|&(_, o)| o)
    };
    let slots = steps
        .iter()
        .zip(layouts)
        .filter(|(s, _)| !matches!(s.kind, StepKind::Head { .. }))
        .map(|(step, &step_layout)| {
            let slot = step_slot(graph, step);
            // An output planned over its residual (values alive together
            // share no memory otherwise) is that slot: added in place.
            if let Some(r) = step.residual.filter(|&r| offset(r) == offset(step.output)) {
                let residual = slot_of(r);
                return quote!(let #slot = #residual;);
            }
            let at = int(offset(step.output).unwrap_or(0) as u128);
            let shape = dims(step.shape);
            let l = layout(step_layout);
            quote!(let #slot = Slot { offset: #at, shape: #shape, layout: Layout::#l };)
        });
    // Import only the `Option` variants each function uses.
    let options = |some: bool, none: bool| {
        [
            some.then(|| format_ident!("Some")),
            none.then(|| format_ident!("None")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
    };
    let convs = || {
        steps.iter().filter_map(|s| match s.kind {
            StepKind::Conv { bn, .. } => Some((bn.is_some(), s.residual.is_some())),
            _ => None,
        })
    };
    let load_options = options(convs().any(|(bn, _)| bn), convs().any(|(bn, _)| !bn));
    let backbone_options = options(convs().any(|(_, res)| res), convs().any(|(_, res)| !res));
    let features = src(graph.features);
    let arena_floats = int(plan.floats as u128);
    let arena_bytes = int(plan.floats as u128 * 4);
    let input = graph.nodes[0].shape;
    let [ic, ih, iw] = [input.c, input.h, input.w].map(|v| int(v as u128));
    let feat = node(graph.features).shape;
    let [fc_, fh, fw] = [feat.c, feat.h, feat.w].map(|v| int(v as u128));
    let batch_in = quote!(#private::Batch<#ic, #ih, #iw>);
    let batch_features = quote!(#private::Batch<#fc_, #fh, #fw>);
    let head_fns = match &head {
        Some((fc, classes)) => {
            let k = int(*classes as u128);
            let logits = quote!(#private::Logits<#k>);
            quote! {
                /// Class scores for a batch: `[N, classes]`.
                pub fn forward(&self, x: &#batch_in) -> #logits {
                    let mut out = <#logits>::zeros(x.len());
                    self.forward_with(&mut #private::Workspace::new(), x, &mut out);
                    out
                }

                /// As [`Self::forward`], into `out`, with a workspace kept
                /// between calls: after the first call with a batch this size,
                /// it allocates nothing.
                ///
                /// # Panics
                /// If `out` holds another number of images than `x`.
                pub fn forward_with(&self, workspace: &mut #private::Workspace, x: &#batch_in, out: &mut #logits) {
                    #private::core::assert_eq!(out.len(), x.len(), "the output holds {} rows for {} images", out.len(), x.len());
                    workspace.run(x.view(), Self::ARENA_FLOATS, |exec| {
                        let features = self.backbone(exec);
                        exec.head(&self.#fc, features, out.view_mut());
                    });
                }
            }
        }
        None => quote! {
            /// The backbone's features for a batch (this model has no classifier).
            pub fn forward(&self, x: &#batch_in) -> #batch_features {
                self.features(x)
            }
        },
    };

    quote! {
        #(#attrs)*
        #[doc = ""]
        #(#[doc = #doc])*
        #[derive(Clone, Debug)]
        #vis struct #name {
            #(#fields,)*
        }

        impl #name {
            /// Activation memory per image: the peak of the planned arena.
            pub const ARENA_BYTES: usize = #arena_bytes;
            const ARENA_FLOATS: usize = #arena_floats;
            #(#params)*

            /// Random weights as torchvision initialises them (Kaiming-normal
            /// convolutions, identity batch norms), from `seed`.
            pub fn new_random(seed: u64) -> Self {
                use #private::{ConvLayout, Layout};
                let mut rng = #private::Rng::new(seed);
                Self { #(#random,)* }
            }

            /// Loads torchvision's `state_dict` saved as safetensors.
            ///
            /// # Errors
            /// If the file cannot be read, or a tensor is missing, unexpected,
            /// mis-shaped or not floating point; the error names it.
            pub fn from_safetensors(path: impl #private::core::convert::AsRef<#private::std::path::Path>) -> #private::core::result::Result<Self, #private::WeightsError> {
                Self::from_loader(#private::Loader::open(path.as_ref())?)
            }

            /// As [`Self::from_safetensors`], from the file's bytes.
            ///
            /// # Errors
            /// As [`Self::from_safetensors`].
            pub fn from_safetensors_bytes(bytes: &[u8]) -> #private::core::result::Result<Self, #private::WeightsError> {
                Self::from_loader(#private::Loader::new(bytes)?)
            }

            /// Every layer from `loader`, then its verdict.
            fn from_loader(mut loader: #private::Loader<'_>) -> #private::core::result::Result<Self, #private::WeightsError> {
                use #private::core::option::Option::{#(#load_options),*};
                use #private::{ConvLayout, Layout};
                let model = Self { #(#load,)* };
                loader.finish()?;
                #private::core::result::Result::Ok(model)
            }

            #head_fns

            /// The backbone's output for a batch: `[N, C, H, W]` before pooling.
            pub fn features(&self, x: &#batch_in) -> #batch_features {
                let mut out = <#batch_features>::zeros(x.len());
                self.features_with(&mut #private::Workspace::new(), x, &mut out);
                out
            }

            /// As [`Self::features`], into `out`, with a kept workspace.
            ///
            /// # Panics
            /// If `out` holds another number of images than `x`.
            pub fn features_with(&self, workspace: &mut #private::Workspace, x: &#batch_in, out: &mut #batch_features) {
                #private::core::assert_eq!(out.len(), x.len(), "the output holds {} images for {}", out.len(), x.len());
                workspace.run(x.view(), Self::ARENA_FLOATS, |exec| {
                    let features = self.backbone(exec);
                    exec.copy_out(features, out.view_mut());
                });
            }

            /// Every step up to the backbone's output; returns where it is.
            fn backbone(&self, exec: &mut #private::Exec<'_>) -> #private::Src {
                use #private::core::option::Option::{#(#backbone_options),*};
                use #private::{Layout, Slot, Src};
                #(#slots)*
                #(#body)*
                #features
            }
        }
    }
}

/// The local name of the arena slot a step writes.
fn step_slot(graph: &Graph, step: &Step) -> Ident {
    let id = match step.kind {
        StepKind::Conv {
            conv, pool: None, ..
        } => conv,
        StepKind::Affine { bn, .. } => bn,
        _ => step.output,
    };
    format_ident!("{}", graph.nodes[id].name.replace('.', "_"))
}
