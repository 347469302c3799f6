//! `Name = "specs/resnet50.yaml"`: the same keys as the inline spec, read from
//! a YAML mapping. Errors are reported on the path literal and start with
//! `file:line:column`, since rustc cannot point inside a file it never lexed.

use crate::diag::Loc;
use crate::parse::{Entry, Value, ValueKind};
use proc_macro2::Span;
use serde_yaml::Value as Yaml;
use std::path::PathBuf;
use syn::LitStr;

/// Reads the spec at `path` (relative to the invoking crate's
/// `CARGO_MANIFEST_DIR`); returns its entries and the resolved path, which
/// the generated code includes so that editing the file triggers a rebuild.
pub fn load(path: &LitStr) -> syn::Result<(Vec<Entry>, PathBuf)> {
    let relative = path.value();
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").ok_or_else(|| {
        syn::Error::new(
            path.span(),
            "CARGO_MANIFEST_DIR is not set, so the spec's path cannot be resolved; build with cargo",
        )
    })?;
    let full = PathBuf::from(dir).join(&relative);
    let text = std::fs::read_to_string(&full).map_err(|e| {
        syn::Error::new(
            path.span(),
            format!("cannot read the spec `{relative}` (paths are relative to the crate's Cargo.toml): {e}"),
        )
    })?;
    let entries = parse_str(&text, &relative, path.span())?;
    Ok((entries, full))
}

/// Parses a YAML spec's text; `file` names it in messages and `span` is
/// where rustc reports them.
pub fn parse_str(text: &str, file: &str, span: Span) -> syn::Result<Vec<Entry>> {
    let at = |line, column| Loc::in_file(span, file, line, column);
    let document: Yaml = serde_yaml::from_str(text).map_err(|e| match e.location() {
        Some(l) => {
            let message = e.to_string();
            // The position leads the message; drop libyaml's copy of it.
            let position = format!(" at line {} column {}", l.line(), l.column());
            at(l.line(), l.column()).error(message.replacen(&position, "", 1))
        }
        None => at(1, 1).error(e),
    })?;
    let mapping = match document {
        Yaml::Mapping(mapping) => mapping,
        Yaml::Null => {
            return Err(at(1, 1).error("the spec is empty; it needs at least `stages: [...]`"))
        }
        other => {
            return Err(at(1, 1).error(format!(
                "expected a mapping of spec keys (such as `stages: [3, 4, 6, 3]`), found {}",
                convert(other, &at(1, 1)).kind.describe()
            )))
        }
    };
    let mut entries = Vec::new();
    let mut errors = crate::diag::Errors::default();
    for (key, value) in mapping {
        let Yaml::String(key) = key else {
            let loc = at(1, 1);
            errors.push(
                &loc,
                format!(
                    "spec keys are words such as `stages`, found {}",
                    convert(key, &loc).kind.describe()
                ),
            );
            continue;
        };
        let (line, column) = key_position(text, &key).unwrap_or((1, 1));
        let loc = at(line, column);
        entries.push(Entry {
            value: convert(value, &loc),
            key,
            key_loc: loc,
        });
    }
    errors.finish(entries)
}

fn convert(value: Yaml, loc: &Loc) -> Value {
    let kind = match value {
        Yaml::Bool(b) => ValueKind::Bool(b),
        Yaml::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => ValueKind::Int(u),
            (None, Some(i)) => ValueKind::Other(format!("the negative number {i}")),
            (None, None) => ValueKind::Other(format!("the decimal number {n}")),
        },
        Yaml::String(s) => ValueKind::Word(s),
        Yaml::Sequence(items) => {
            ValueKind::List(items.into_iter().map(|v| convert(v, loc)).collect())
        }
        Yaml::Null => ValueKind::Other("an empty value".into()),
        Yaml::Mapping(_) => ValueKind::Other("a mapping".into()),
        Yaml::Tagged(tagged) => ValueKind::Other(format!("a value tagged {}", tagged.tag)),
    };
    Value {
        kind,
        loc: loc.clone(),
    }
}

/// 1-based line and column of `key` as a mapping key: at the start of a line
/// in block style (`stages: [...]`, quoted or not), else its first occurrence
/// as a whole word (flow style, `{stages: [...]}`).
fn key_position(text: &str, key: &str) -> Option<(usize, usize)> {
    let block = text.lines().enumerate().find_map(|(i, line)| {
        let rest = line.trim_start();
        let indent = line.len() - rest.len();
        let unquoted = rest
            .strip_prefix(key)
            .or_else(|| rest.strip_prefix(&format!("\"{key}\"")))
            .or_else(|| rest.strip_prefix(&format!("'{key}'")))?;
        unquoted
            .trim_start()
            .starts_with(':')
            .then_some((i + 1, indent + 1))
    });
    block.or_else(|| {
        text.lines().enumerate().find_map(|(i, line)| {
            line.match_indices(key).find_map(|(at, _)| {
                let before = line[..at].chars().next_back();
                let after = line[at + key.len()..].chars().next();
                let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                (!is_word(before) && !is_word(after)).then_some((i + 1, at + 1))
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(text: &str) -> Vec<String> {
        match parse_str(text, "spec.yaml", Span::call_site()) {
            Ok(_) => vec![],
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn syntax_errors_name_file_line_and_column() {
        let msgs = messages("stages: [3, 4\nbottleneck: true\n");
        assert_eq!(msgs.len(), 1);
        assert!(msgs[0].starts_with("spec.yaml:2:"), "{msgs:?}");
    }

    #[test]
    fn keys_are_located_in_block_and_flow_style() {
        let text = "# a comment\nstages: [3, 4]\n  'widths' : [1, 2]\n";
        assert_eq!(key_position(text, "stages"), Some((2, 1)));
        assert_eq!(key_position(text, "widths"), Some((3, 3)));
        assert_eq!(
            key_position("{input: [3, 8, 8], stages: [1]}", "stages"),
            Some((1, 20))
        );
        assert_eq!(key_position("stages_x: 1", "stages"), None);
    }

    #[test]
    fn values_convert_to_spec_values() {
        let entries = parse_str(
            "stages: [2, -1, 2.5]\npreact: true\nstem: cifar\nclasses: ~\n",
            "s",
            Span::call_site(),
        )
        .unwrap();
        let kinds: Vec<String> = entries
            .iter()
            .map(|e| format!("{}={}", e.key, e.value.kind.describe()))
            .collect();
        assert_eq!(
            kinds,
            [
                "stages=a list of 3 entries",
                "preact=`true`",
                "stem=`cifar`",
                "classes=an empty value"
            ]
        );
        let ValueKind::List(items) = &entries[0].value.kind else {
            panic!("not a list")
        };
        let described: Vec<String> = items.iter().map(|v| v.kind.describe()).collect();
        assert_eq!(
            described,
            [
                "the number 2",
                "the negative number -1",
                "the decimal number 2.5"
            ]
        );
    }

    #[test]
    fn a_document_that_is_not_a_mapping_is_rejected() {
        assert_eq!(messages("- 3\n- 4\n"), ["spec.yaml:1:1: expected a mapping of spec keys (such as `stages: [3, 4, 6, 3]`), found a list of 2 entries"]);
        assert_eq!(
            messages(""),
            ["spec.yaml:1:1: the spec is empty; it needs at least `stages: [...]`"]
        );
    }
}
