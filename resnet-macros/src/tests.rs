//! Front-end tests on proc_macro2 token streams: collected errors, and
//! property tests that throw random token streams and YAML documents at the
//! parser and checks. Exact messages are pinned by the trybuild cases in the
//! workspace's `tests/ui`.

use crate::diag::Loc;
use crate::spec::KEYS;
use crate::{check, compile_spec, expand, yaml};
use proc_macro2::{Span, TokenStream};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use std::str::FromStr;

fn errors_of(src: &str) -> Vec<String> {
    match check(TokenStream::from_str(src).expect("test input lexes")) {
        Ok(_) => vec![],
        Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn one_invocation_reports_every_mistake_of_every_model() {
    let errors = errors_of(
        "pub A<stagse: [3, 4], widths: [64, 128, 256], classes: 0>
         pub B<stages: [2, 0], stem: imagnet>",
    );
    assert_eq!(
        errors,
        [
            "unknown key `stagse`; did you mean `stages`?",
            "missing `stages`: give the number of blocks in each stage, such as `stages: [3, 4, 6, 3]`",
            "`classes: 0`: a classifier needs at least one class; write `classes: none` for a headless backbone",
            "stage 2 has 0 blocks; every stage needs at least one",
            "unknown stem `imagnet`: expected one of imagenet, cifar, deep; did you mean `imagenet`?",
        ]
    );
}

#[test]
fn shape_errors_explain_the_numbers() {
    let errors = errors_of("pub A<stages: [1, 1, 1, 1], input: [3, 16, 16]>");
    assert_eq!(
        errors,
        ["`layer4.0.conv1` (stride 2) would downsample a 1x1 feature map: input [3, 16, 16] is too small for \
          this network's 5 downsamplings, which need at least 32x32; use a larger `input` or `stem: cifar`"]
    );
    // 32x32 is exactly enough: the last stage runs at 1x1.
    let graphs =
        check(TokenStream::from_str("pub A<stages: [1, 1, 1, 1], input: [3, 32, 32]>").unwrap())
            .unwrap();
    let out = graphs[0].nodes[graphs[0].features].shape;
    assert_eq!((out.c, out.h, out.w), (512, 1, 1));
}

#[test]
fn yaml_spec_errors_name_the_file() {
    let span = Span::call_site();
    let entries = yaml::parse_str("stages: [3, 4]\nwidth: [1, 2]\n", "net.yaml", span).unwrap();
    let e = compile_spec(entries, &Loc::in_file(span, "net.yaml", 1, 1)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "net.yaml:2:1: unknown key `width`; did you mean `widths`?"
    );
}

// ---- property tests ----

const CASES: u32 = 10_000;

/// Values and words that appear in specs besides the keys, and near misses.
const OTHER_WORDS: &[&str] = &[
    "basic",
    "imagenet",
    "cifar",
    "deep",
    "projection",
    "zero_pad",
    "all_projection",
    "conv3x3",
    "conv1x1",
    "none",
    "true",
    "false",
    "stagse",
    "widht",
    "pub",
    "crate",
    "self",
    "Res",
    "_",
    "r#type",
    "ResNet50",
];

/// Every key and every other word a spec may hold.
fn words() -> Vec<&'static str> {
    KEYS.iter().chain(OTHER_WORDS).copied().collect()
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0u64..5).prop_map(|n| n.to_string()),
        2 => (5u64..300).prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => "[1-9][0-9]{19,24}",
        1 => prop::sample::select(vec!["-3", "2.5", "1e3", "3u8", "0x10", "-0"]).prop_map(String::from),
    ]
}

/// A spec value: number, word, string or (nested) list.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        4 => number(),
        3 => prop::sample::select(words()).prop_map(String::from),
        1 => "\"[a-z_.]{0,8}\"",
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop::collection::vec(inner, 0..6).prop_map(|items| format!("[{}]", items.join(", ")))
    })
}

/// A key that is usually right, with a value that is usually plausible.
fn entry() -> impl Strategy<Value = String> {
    let stages = prop::collection::vec(1u64..4, 1..5).prop_map(|v| {
        format!(
            "stages: [{}]",
            v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        )
    });
    let input =
        (1u64..4, 1u64..80, 1u64..80).prop_map(|(c, h, w)| format!("input: [{c}, {h}, {w}]"));
    prop_oneof![
        3 => stages,
        2 => input,
        2 => valid_entry(),
        4 => (prop::sample::select(words()), value()).prop_map(|(k, v)| format!("{k}: {v}")),
        1 => (prop::sample::select(words()), value()).prop_map(|(k, v)| format!("{k} {v}")),
    ]
}

/// A key with a value that is valid on its own (combinations may still clash).
fn valid_entry() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "bottleneck: true",
        "bottleneck: false",
        "block: bottleneck",
        "stem: cifar",
        "stem: deep",
        "shortcut: zero_pad",
        "shortcut: all_projection",
        "classes: 10",
        "classes: none",
        "preact: true",
        "stride_on: conv1x1",
        "groups: 2",
        "width_per_group: 4",
        "expansion: 2",
        "widths: [8, 16]",
        "input: [1, 40, 24]",
    ])
    .prop_map(String::from)
}

/// One `Name<...>` or `Name = "..."` model, with attributes now and then:
/// mostly plausible specs, some with random keys and values.
fn model() -> impl Strategy<Value = String> {
    let plausible = (
        prop::collection::vec(1u64..4, 1..5),
        prop::collection::vec(valid_entry(), 0..4),
    )
        .prop_map(|(stages, mut entries)| {
            let stages: Vec<String> = stages.iter().map(u64::to_string).collect();
            entries.insert(0, format!("stages: [{}]", stages.join(", ")));
            entries
        });
    let random = prop::collection::vec(entry(), 0..7);
    let entries = prop_oneof![3 => plausible, 2 => random];
    let form = prop::sample::select(vec!["", ",", ";", ", ,", "yaml"]);
    (any::<bool>(), form, entries).prop_map(|(doc, form, entries)| {
        let doc = if doc {
            "/// A model.\n#[allow(dead_code)]\n"
        } else {
            ""
        };
        match form {
            "yaml" => format!("{doc}pub Net = \"{}\"", entries.join(",")),
            sep => format!("{doc}pub Net<{}{sep}>", entries.join(", ")),
        }
    })
}

/// Token soup: fragments of the grammar in any order.
fn soup() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        3 => prop::sample::select(vec![
            "<", ">", ">>", ":", "::", ",", ";", "=", "[", "]", "[]", "()", "{}", "#[doc = \"x\"]", "pub",
            "pub(crate)", "-", "!", "#", "'a", "'c'", "b\"x\"",
        ])
        .prop_map(String::from),
        2 => value(),
        1 => prop::sample::select(words()).prop_map(String::from),
    ];
    prop::collection::vec(fragment, 0..20).prop_map(|f| f.join(" "))
}

/// Runs `property` on `CASES` inputs; returns how many were accepted and rejected.
fn run_property(
    strategy: impl Strategy<Value = String>,
    property: impl Fn(&str) -> Result<bool, TestCaseError>,
) -> (usize, usize) {
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    let counts = std::cell::Cell::new((0, 0));
    // A fixed seed: the same 10,000 cases on every run, so CI cannot flake.
    TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
        .run(&strategy, |text| {
            let accepted = property(&text)?;
            let (a, r) = counts.get();
            counts.set(if accepted { (a + 1, r) } else { (a, r + 1) });
            Ok(())
        })
        .unwrap();
    counts.get()
}

#[test]
fn random_token_streams_never_panic_and_every_rejection_has_a_span() {
    let strategy = prop_oneof![
        3 => prop::collection::vec(model(), 1..3).prop_map(|m| m.join("\n")),
        1 => soup(),
        1 => (model(), soup()).prop_map(|(m, s)| format!("{m} {s}")),
    ];
    let (accepted, rejected) = run_property(strategy, |text| {
        let Ok(tokens) = TokenStream::from_str(text) else {
            return Ok(false); // not Rust tokens: rustc would reject it before the macro runs
        };
        match check(tokens.clone()) {
            Ok(graphs) => {
                prop_assert!(!graphs.is_empty());
                for graph in &graphs {
                    check_passes(graph)?;
                }
                // Code generation and the layer table run on what was accepted.
                let items = expand(tokens).to_string();
                prop_assert!(items.contains("pub const PARAMS"));
                prop_assert!(!items.contains("compile_error"));
                Ok(true)
            }
            Err(errors) => {
                for e in errors {
                    let message = e.to_string();
                    let range = e.span().byte_range();
                    prop_assert!(!message.is_empty());
                    // On a token of the input, or on the invocation itself (syn's
                    // "unexpected end of input").
                    prop_assert!(
                        (range.start < range.end && range.end <= text.len()) || range == (0..0),
                        "{message:?} at {range:?} in {text:?}"
                    );
                }
                Ok(false)
            }
        }
    });
    eprintln!("token streams: {accepted} accepted, {rejected} rejected");
    // Both outcomes must be well represented, or the property tests little.
    assert!(accepted > CASES as usize / 40, "only {accepted} accepted");
    assert!(rejected > CASES as usize / 5, "only {rejected} rejected");
}

/// The inference passes' invariants on an accepted network: each step reads
/// only the input or earlier steps' outputs, and no two values that are
/// alive at once share arena memory.
fn check_passes(graph: &crate::ir::Graph) -> Result<(), TestCaseError> {
    use crate::passes::tests::shared_memory;
    use crate::passes::{fuse, fuse_stem_pool, layouts, plan, schedule, StepKind};
    let steps = fuse(graph)
        .and_then(schedule)
        .map_err(TestCaseError::fail)?;
    let layouts = layouts(graph, &steps);
    let (steps, layouts) = fuse_stem_pool(steps, layouts);
    let plan = plan(&steps, &layouts);
    let mut produced = vec![0];
    for step in &steps {
        for value in [Some(step.input), step.residual].into_iter().flatten() {
            prop_assert!(
                produced.contains(&value),
                "step {:?} reads {value} before it is made",
                step.kind
            );
        }
        produced.push(step.output);
    }
    let size = |v: usize| {
        steps
            .iter()
            .find(|s| s.output == v)
            .map_or(0, |s| s.shape.c * s.shape.h * s.shape.w)
    };
    for &(v, offset) in &plan.offsets {
        prop_assert!(offset + size(v) <= plan.floats);
    }
    if let Some((a, b)) = shared_memory(&steps, &layouts, &plan) {
        return Err(TestCaseError::fail(format!(
            "values {a} and {b} overlap in the arena"
        )));
    }
    prop_assert_eq!(
        plan.offsets.len(),
        steps
            .iter()
            .filter(|s| !matches!(s.kind, StepKind::Head { .. }))
            .count()
    );
    Ok(())
}

/// A YAML document: block or flow mappings of spec keys, with anchors,
/// tags, nested maps and some raw noise.
fn yaml_document() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        4 => number(),
        3 => prop::sample::select(words()).prop_map(String::from),
        1 => prop::sample::select(vec!["~", "null", "yes", "'cifar'", "\"deep\"", "!!str 3", "&a 3", "*a", "{a: 1}", "-", "|"])
            .prop_map(String::from),
    ];
    let yaml_value = scalar.prop_recursive(2, 16, 5, |inner| {
        prop::collection::vec(inner, 0..5).prop_map(|items| format!("[{}]", items.join(", ")))
    });
    let line = prop_oneof![
        6 => (prop::sample::select(words()), yaml_value.clone()).prop_map(|(k, v)| format!("{k}: {v}")),
        4 => valid_entry(),
        2 => prop::collection::vec(1u64..4, 1..5).prop_map(|v| {
            format!("stages:\n{}", v.iter().map(|n| format!("  - {n}")).collect::<Vec<_>>().join("\n"))
        }),
        1 => yaml_value.prop_map(|v| format!("- {v}")),
        1 => "[ -~\t]{0,12}",
    ];
    let stages = prop::collection::vec(1u64..4, 1..5).prop_map(|v| {
        format!(
            "stages: [{}]",
            v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        )
    });
    prop_oneof![
        4 => (stages, prop::collection::vec(line.clone(), 0..4))
            .prop_map(|(stages, lines)| format!("{stages}\n{}", lines.join("\n"))),
        3 => prop::collection::vec(line.clone(), 0..7).prop_map(|lines| lines.join("\n")),
        1 => prop::collection::vec(line, 0..5).prop_map(|lines| format!("{{{}}}", lines.join(", "))),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

#[test]
fn random_yaml_documents_never_panic_and_every_rejection_names_file_line_and_column() {
    let span = Span::call_site();
    let (accepted, rejected) = run_property(yaml_document(), |text| {
        let result = yaml::parse_str(text, "net.yaml", span)
            .and_then(|entries| compile_spec(entries, &Loc::in_file(span, "net.yaml", 1, 1)));
        match result {
            Ok(_) => Ok(true),
            Err(errors) => {
                for e in errors {
                    let message = e.to_string();
                    let position = message.strip_prefix("net.yaml:").and_then(|rest| {
                        let mut parts = rest.splitn(3, ':');
                        let line = parts.next()?.parse::<usize>().ok()?;
                        let column = parts.next()?.parse::<usize>().ok()?;
                        let what = parts.next()?;
                        Some((line, column, what.trim().len()))
                    });
                    prop_assert!(
                        matches!(position, Some((l, c, n)) if l >= 1 && c >= 1 && n > 0),
                        "{message:?} for {text:?}"
                    );
                }
                Ok(false)
            }
        }
    });
    eprintln!("YAML documents: {accepted} accepted, {rejected} rejected");
    assert!(accepted > CASES as usize / 20, "only {accepted} accepted");
    assert!(rejected > CASES as usize / 5, "only {rejected} rejected");
}
