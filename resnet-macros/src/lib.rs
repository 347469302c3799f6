//! The `resnet!` model compiler. Use it through `resnet-runtime`, which
//! re-exports the macro and holds what the generated code calls.
//!
//! One pass per module, each a plain function over plain data:
//!
//! ```text
//! tokens (parse) | YAML (yaml) --> entries --spec--> Spec --lower+shape--> ir::Graph
//!                                                      --table, codegen--> Rust items
//! ```
//!
//! Errors are collected (`diag::Errors`), so one build reports every
//! mistake, each on the user's token; the macro never panics.

mod codegen;
mod diag;
mod ir;
mod lower;
mod parse;
mod passes;
mod shape;
mod spec;
mod table;
mod yaml;

#[cfg(test)]
mod tests;

use diag::{Errors, Loc};
use parse::{Input, ModelDef, Source};
use proc_macro2::TokenStream;
use std::path::PathBuf;
use syn::{Attribute, Ident, Visibility};

/// Compiles residual networks from their specs.
///
/// ```text
/// resnet! {
///     /// ImageNet ResNet-101, torchvision layout.
///     pub ResNet101<stages: [3, 4, 23, 3], bottleneck: true>
///     pub Cifar20<stages: [3, 3, 3], stem: cifar, widths: [16, 32, 64], input: [3, 32, 32], classes: 10, shortcut: zero_pad>
///     pub ResNet50 = "specs/resnet50.yaml"   // the same keys; path relative to Cargo.toml
/// }
/// ```
///
/// Each model becomes a type with the consts `INPUT`, `OUTPUT`, `FEATURES`,
/// `PARAMS`, `MACS`, `LAYERS`, `BLOCKS` and `SUMMARY`, its layer table in
/// its doc comment and as its `Display`.
#[proc_macro]
pub fn resnet(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    expand(input.into()).into()
}

/// A model that compiled: its header and its network.
pub(crate) struct Model {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub graph: ir::Graph,
    /// The fused inference steps, in execution order.
    pub steps: Vec<passes::Step>,
    /// The activation arena.
    pub plan: passes::Plan,
    /// Each step's output layout.
    pub layouts: Vec<passes::Layout>,
    /// The YAML file it was read from, which the generated code includes.
    pub spec_file: Option<PathBuf>,
}

fn expand(input: TokenStream) -> TokenStream {
    let input: Input = match syn::parse2(input) {
        Ok(input) => input,
        Err(e) => return e.to_compile_error(),
    };
    let mut out = TokenStream::new();
    for def in input.models {
        let (attrs, vis, name) = (def.attrs.clone(), def.vis.clone(), def.name.clone());
        match compile(def) {
            Ok(model) => out.extend(codegen::model(&model)),
            Err(e) => {
                out.extend(e.to_compile_error());
                out.extend(codegen::stub(&attrs, &vis, &name));
            }
        }
    }
    out
}

/// Everything from a parsed model to its network: read the spec (inline or
/// YAML), check it, lower it. Reports every error it finds.
fn compile(def: ModelDef) -> syn::Result<Model> {
    let ModelDef {
        attrs,
        vis,
        name,
        source,
    } = def;
    let (entries, spec_loc, spec_file) = match source {
        Source::Inline(entries) => (entries, Loc::token(name.span()), None),
        Source::Yaml(path) => {
            let (entries, file) = yaml::load(&path)?;
            // Errors about the whole spec name the file.
            (
                entries,
                Loc::in_file(path.span(), &path.value(), 1, 1),
                Some(file),
            )
        }
    };
    let graph = compile_spec(entries, &spec_loc)?;
    // The passes fail only on a graph the lowering should never build.
    let steps = passes::fuse(&graph)
        .and_then(passes::schedule)
        .map_err(|e| spec_loc.error(format!("internal error while fusing layers: {e}")))?;
    let layouts = passes::layouts(&graph, &steps);
    let (steps, layouts) = passes::fuse_stem_pool(steps, layouts);
    let plan = passes::plan(&steps, &layouts);
    Ok(Model {
        attrs,
        vis,
        name,
        graph,
        steps,
        plan,
        layouts,
        spec_file,
    })
}

/// Checks a spec's entries and lowers them; `spec_loc` is where errors
/// about the spec as a whole (a missing key) are reported.
fn compile_spec(entries: Vec<parse::Entry>, spec_loc: &Loc) -> syn::Result<ir::Graph> {
    let mut errors = Errors::default();
    let spec = spec::Spec::from_entries(entries, spec_loc, &mut errors);
    match errors.finish(spec)? {
        Some(spec) => lower::lower(&spec, spec_loc),
        // `from_entries` returns `None` only after reporting an error.
        None => Err(spec_loc.error("invalid spec")),
    }
}

/// Parses and checks an invocation without generating code: every model's
/// errors, combined. For tests, which run the front end on proc_macro2.
#[cfg(test)]
fn check(input: TokenStream) -> syn::Result<Vec<ir::Graph>> {
    let input: Input = syn::parse2(input)?;
    let mut graphs = Vec::new();
    let mut errors: Option<syn::Error> = None;
    for def in input.models {
        match compile(def) {
            Ok(model) => graphs.push(model.graph),
            Err(e) => match &mut errors {
                Some(all) => all.combine(e),
                None => errors = Some(e),
            },
        }
    }
    errors.map_or(Ok(graphs), Err)
}
