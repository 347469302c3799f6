//! The `resnet! { ... }` grammar.
//!
//! ```text
//! Input  := Model (";"? Model)* ";"?
//! Model  := OuterAttribute* Visibility Ident Source
//! Source := "<" (Key ":" Value),* ">"      // spec written inline
//!         | "=" StringLiteral              // the same keys in a YAML file
//! Value  := Integer | Word | String | "[" Value,* "]"
//! ```
//!
//! Values are kept untyped here ([`Value`]); `spec.rs` gives them meaning,
//! so a YAML file and inline tokens go through the same checks.

use crate::diag::Loc;
use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{bracketed, token, Attribute, Ident, LitStr, Token, Visibility};

/// One model of the invocation, before its spec is read.
pub struct ModelDef {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub source: Source,
}

/// Where a model's keys come from.
pub enum Source {
    Inline(Vec<Entry>),
    Yaml(LitStr),
}

/// `key: value`, as written.
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: String,
    pub key_loc: Loc,
    pub value: Value,
}

/// An untyped spec value with its location.
#[derive(Clone, Debug)]
pub struct Value {
    pub kind: ValueKind,
    pub loc: Loc,
}

#[derive(Clone, Debug)]
pub enum ValueKind {
    Int(u64),
    Bool(bool),
    Word(String),
    List(Vec<Value>),
    /// Anything no key accepts, described for the error message
    /// ("the negative number -3", "the decimal number 2.5").
    Other(String),
}

impl ValueKind {
    /// How the value reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            ValueKind::Int(n) => format!("the number {n}"),
            ValueKind::Bool(b) => format!("`{b}`"),
            ValueKind::Word(w) => format!("`{w}`"),
            ValueKind::List(items) => format!("a list of {} entries", items.len()),
            ValueKind::Other(what) => what.clone(),
        }
    }
}

/// Every model of one invocation.
pub struct Input {
    pub models: Vec<ModelDef>,
}

impl Parse for Input {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(syn::Error::new(
                Span::call_site(),
                "expected a model, such as `pub ResNet50<stages: [3, 4, 6, 3], bottleneck: true>`",
            ));
        }
        let mut models = Vec::new();
        while !input.is_empty() {
            models.push(input.parse()?);
            while input.peek(Token![;]) {
                input.parse::<Token![;]>()?;
            }
        }
        Ok(Input { models })
    }
}

impl Parse for ModelDef {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let name: Ident = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected the model's name, such as `pub ResNet50<stages: [3, 4, 6, 3], bottleneck: true>`",
            )
        })?;
        let source = if input.peek(Token![<]) {
            input.parse::<Token![<]>()?;
            let mut entries = Vec::new();
            while !input.peek(Token![>]) {
                if input.is_empty() {
                    return Err(input.error("expected `>` to close the spec"));
                }
                entries.push(input.parse()?);
                if !input.peek(Token![>]) {
                    input.parse::<Token![,]>().map_err(|e| {
                        syn::Error::new(e.span(), "expected `,` between keys or `>` after the last")
                    })?;
                }
            }
            input.parse::<Token![>]>()?;
            Source::Inline(entries)
        } else if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            let path: LitStr = input.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected the YAML spec's path as a string literal",
                )
            })?;
            Source::Yaml(path)
        } else {
            return Err(syn::Error::new(
                name.span(),
                format!(
                    "expected `<` and the spec after `{name}`, such as \
                 `{name}<stages: [3, 4, 6, 3], bottleneck: true>`, or `= \"path/to/spec.yaml\"`"
                ),
            ));
        };
        Ok(ModelDef {
            attrs,
            vis,
            name,
            source,
        })
    }
}

impl Parse for Entry {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let key: Ident = input.call(Ident::parse_any).map_err(|e| {
            syn::Error::new(e.span(), "expected a key, such as `stages` or `bottleneck`")
        })?;
        input
            .parse::<Token![:]>()
            .map_err(|e| syn::Error::new(e.span(), format!("expected `:` after `{key}`")))?;
        let value = input.parse()?;
        Ok(Entry {
            key: key.to_string(),
            key_loc: Loc::token(key.span()),
            value,
        })
    }
}

impl Parse for Value {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut span = input.span();
        let kind = if input.peek(token::Bracket) {
            let content;
            span = bracketed!(content in input).span.join();
            let items = content.parse_terminated(Value::parse, Token![,])?;
            ValueKind::List(items.into_iter().collect())
        } else if input.peek(syn::LitInt) {
            // syn reads `-3` as one literal.
            let lit: syn::LitInt = input.parse()?;
            if let Some(magnitude) = lit.base10_digits().strip_prefix('-') {
                ValueKind::Other(format!("the negative number -{magnitude}"))
            } else if !lit.suffix().is_empty() {
                return Err(syn::Error::new(
                    lit.span(),
                    format!(
                        "write `{}` without the `{}` suffix",
                        lit.base10_digits(),
                        lit.suffix()
                    ),
                ));
            } else {
                match lit.base10_parse::<u64>() {
                    Ok(n) => ValueKind::Int(n),
                    Err(_) => ValueKind::Other(format!("the number {lit}, which is too large")),
                }
            }
        } else if input.peek(syn::LitFloat) {
            let lit: syn::LitFloat = input.parse()?;
            ValueKind::Other(format!("the decimal number {lit}"))
        } else if input.peek(Token![-]) {
            input.parse::<Token![-]>()?;
            let number: syn::Lit = input
                .parse()
                .map_err(|e| syn::Error::new(e.span(), "expected a number after `-`"))?;
            let digits = match &number {
                syn::Lit::Int(n) => n.base10_digits().to_owned(),
                syn::Lit::Float(f) => f.base10_digits().to_owned(),
                _ => {
                    return Err(syn::Error::new(
                        number.span(),
                        "expected a number after `-`",
                    ))
                }
            };
            ValueKind::Other(format!("the negative number -{digits}"))
        } else if input.peek(LitStr) {
            ValueKind::Word(input.parse::<LitStr>()?.value())
        } else if input.peek(Ident::peek_any) {
            let word = input.call(Ident::parse_any)?.to_string();
            match word.as_str() {
                "true" => ValueKind::Bool(true),
                "false" => ValueKind::Bool(false),
                _ => ValueKind::Word(word),
            }
        } else {
            return Err(input.error("expected a value: a number, a word or a [list]"));
        };
        Ok(Value {
            kind,
            loc: Loc::token(span),
        })
    }
}
