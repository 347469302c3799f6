//! Diagnostics: where a spec value came from, and the collector that gathers
//! every error of one invocation so a single build reports all of them.

use proc_macro2::Span;
use std::fmt::Display;
use std::rc::Rc;

/// Where a spec value was written: a token of the macro input, or a line of a
/// YAML file (then `span` is the path literal and `file_pos` says where in the
/// file, since rustc cannot point inside a file it never tokenised).
#[derive(Clone, Debug)]
pub struct Loc {
    pub span: Span,
    pub file_pos: Option<Rc<str>>,
}

impl Loc {
    /// A location on a token of the macro input.
    pub fn token(span: Span) -> Self {
        Loc {
            span,
            file_pos: None,
        }
    }

    /// A location inside a YAML file, reported on the path literal `span`.
    pub fn in_file(span: Span, file: &str, line: usize, column: usize) -> Self {
        Loc {
            span,
            file_pos: Some(format!("{file}:{line}:{column}").into()),
        }
    }

    /// Builds the error for `message` at this location.
    pub fn error(&self, message: impl Display) -> syn::Error {
        match &self.file_pos {
            Some(pos) => syn::Error::new(self.span, format!("{pos}: {message}")),
            None => syn::Error::new(self.span, message),
        }
    }
}

/// Collects errors instead of stopping at the first (serde_derive's `Ctxt`).
#[derive(Default)]
pub struct Errors {
    errors: Vec<syn::Error>,
}

impl Errors {
    pub fn push(&mut self, loc: &Loc, message: impl Display) {
        self.errors.push(loc.error(message));
    }

    /// How many errors were reported so far.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// `Ok(value)` when nothing was reported, else every error combined.
    pub fn finish<T>(self, value: T) -> syn::Result<T> {
        let mut errors = self.errors.into_iter();
        match errors.next() {
            None => Ok(value),
            Some(mut first) => {
                first.extend(errors);
                Err(first)
            }
        }
    }
}

/// The closest of `candidates` to a misspelt `word`, if any is close enough
/// to be what the user meant.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|&c| (strsim::jaro_winkler(word, c), c))
        .filter(|&(score, _)| score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// `" (did you mean `x`?)"`, or nothing.
pub fn suggestion(word: &str, candidates: &[&str]) -> String {
    did_you_mean(word, candidates)
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}
