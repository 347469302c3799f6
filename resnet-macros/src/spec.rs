//! From untyped entries to a checked [`Spec`]: every key read, typed,
//! range-checked and defaulted (defaults reproduce torchvision), every
//! mistake reported with its location, all of them in one pass.

use crate::diag::{suggestion, Errors, Loc};
use crate::parse::{Entry, Value, ValueKind};
use std::collections::btree_map::{BTreeMap, Entry as Slot};
use std::ops::RangeInclusive;

/// Residual block design.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convolutions (ResNet-18/34).
    Basic,
    /// 1x1 reduce, 3x3, 1x1 expand (ResNet-50 and deeper).
    Bottleneck,
}

/// The layers before the first stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stem {
    /// 7x7/2 convolution and 3x3/2 max pool (torchvision).
    ImageNet,
    /// One 3x3/1 convolution (the paper's CIFAR-10 networks).
    Cifar,
    /// Three 3x3 convolutions, the first with stride 2, and the max pool
    /// (ResNet-C of "Bag of Tricks"; timm's `conv1.0 .. conv1.6` names).
    Deep,
}

/// What a block adds to its residual branch (the paper's options A, B, C).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShortcutPolicy {
    /// B: 1x1 convolution + BN where the shape changes, identity elsewhere.
    Projection,
    /// A: subsample and zero-pad the channels where the shape changes.
    ZeroPad,
    /// C: a projection in every block.
    AllProjection,
}

/// Which convolution of a bottleneck carries the stage's stride.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrideOn {
    /// ResNet v1.5 (torchvision): the 3x3.
    Conv3x3,
    /// ResNet v1 (the paper, Keras): the first 1x1.
    Conv1x1,
}

/// A model's architecture, checked and with every default filled in.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Blocks per stage, each with the location of its count.
    pub stages: Vec<(usize, Loc)>,
    pub block: BlockKind,
    /// Each stage's width ("planes"); its output has `width * expansion` channels.
    pub widths: Vec<usize>,
    pub expansion: usize,
    /// `[C, H, W]`, and where it was written (`None`: the default).
    pub input: [usize; 3],
    pub input_loc: Option<Loc>,
    /// `None` for a headless backbone.
    pub classes: Option<usize>,
    pub stem: Stem,
    pub shortcut: ShortcutPolicy,
    pub shortcut_loc: Loc,
    pub stride_on: StrideOn,
    pub groups: usize,
    pub width_per_group: usize,
    pub width_per_group_loc: Loc,
    pub preact: bool,
}

/// Every key, in the order the README documents them.
pub const KEYS: &[&str] = &[
    "stages",
    "bottleneck",
    "block",
    "widths",
    "expansion",
    "input",
    "classes",
    "stem",
    "shortcut",
    "stride_on",
    "groups",
    "width_per_group",
    "preact",
];

const MAX_STAGES: usize = 8;
const MAX_BLOCKS: u64 = 1000;
const MAX_WIDTH: u64 = 16_384;
const MAX_EXPANSION: u64 = 16;
const MAX_INPUT_CHANNELS: u64 = 4096;
const MAX_INPUT_SIDE: u64 = 8192;
const MAX_CLASSES: u64 = 1_000_000;
const MAX_GROUPS: u64 = 1024;
const MAX_WIDTH_PER_GROUP: u64 = 4096;

impl Spec {
    /// Reads `entries` (from tokens or YAML). `spec_loc` is where errors
    /// about a missing key go. `None` means at least one error was reported.
    pub fn from_entries(entries: Vec<Entry>, spec_loc: &Loc, errors: &mut Errors) -> Option<Spec> {
        let reported = errors.len();
        let keys = Keys::collect(entries, errors);

        // Each key on its own. Outer `None`: invalid (reported); inner `None`: not given.
        let stages = match keys.get("stages") {
            Some(v) => read_stages(v, errors),
            None => {
                errors.push(
                    spec_loc,
                    "missing `stages`: give the number of blocks in each stage, such as `stages: [3, 4, 6, 3]`",
                );
                None
            }
        };
        let block = match (keys.get("bottleneck"), keys.get("block")) {
            (Some(_), Some(b)) => {
                errors.push(&b.loc, "give either `bottleneck` or `block`, not both");
                None
            }
            (Some(v), None) => boolean(v, "bottleneck", errors).map(|b| {
                if b {
                    BlockKind::Bottleneck
                } else {
                    BlockKind::Basic
                }
            }),
            (None, Some(v)) => word(
                v,
                "block",
                &[
                    ("basic", BlockKind::Basic),
                    ("bottleneck", BlockKind::Bottleneck),
                ],
                errors,
            ),
            (None, None) => Some(BlockKind::Basic),
        };
        let stem = keys.read("stem", errors, |v, e| {
            word(
                v,
                "stem",
                &[
                    ("imagenet", Stem::ImageNet),
                    ("cifar", Stem::Cifar),
                    ("deep", Stem::Deep),
                ],
                e,
            )
        });
        let shortcut = keys.read_spanned("shortcut", errors, |v, e| {
            word(
                v,
                "shortcut",
                &[
                    ("projection", ShortcutPolicy::Projection),
                    ("zero_pad", ShortcutPolicy::ZeroPad),
                    ("all_projection", ShortcutPolicy::AllProjection),
                ],
                e,
            )
        });
        let stride_on = keys.read_spanned("stride_on", errors, |v, e| {
            word(
                v,
                "stride_on",
                &[
                    ("conv3x3", StrideOn::Conv3x3),
                    ("conv1x1", StrideOn::Conv1x1),
                ],
                e,
            )
        });
        let preact = keys.read("preact", errors, |v, e| boolean(v, "preact", e));
        let widths = keys.read("widths", errors, |v, e| {
            int_list(v, "widths", 1..=MAX_WIDTH, e)
        });
        let expansion = keys.read_spanned("expansion", errors, |v, e| {
            int(v, "expansion", 1..=MAX_EXPANSION, e)
        });
        let groups =
            keys.read_spanned("groups", errors, |v, e| int(v, "groups", 1..=MAX_GROUPS, e));
        let width_per_group = keys.read_spanned("width_per_group", errors, |v, e| {
            int(v, "width_per_group", 1..=MAX_WIDTH_PER_GROUP, e)
        });
        let input = keys.read_spanned("input", errors, read_input);
        let classes = keys.read("classes", errors, read_classes);

        // Keys that only make sense together.
        if let (Some(stages), Some(Some(widths))) = (&stages, &widths) {
            if widths.len() != stages.len() {
                errors.push(
                    &keys.0["widths"].loc,
                    format!(
                        "`widths` has {} entries but `stages` has {}; give one width per stage",
                        widths.len(),
                        stages.len()
                    ),
                );
            }
        }
        if block == Some(BlockKind::Basic) {
            let bottleneck_only = [
                (
                    &expansion,
                    "expansion",
                    1,
                    "a basic block's output width is its stage's width",
                ),
                (&groups, "groups", 1, "basic blocks are not grouped"),
                (
                    &width_per_group,
                    "width_per_group",
                    64,
                    "basic blocks have no inner width",
                ),
            ];
            for (value, key, neutral, why) in bottleneck_only {
                if let Some(Some((n, loc))) = value {
                    if *n != neutral {
                        errors.push(loc, format!("`{key}: {n}` applies to bottleneck blocks; {why} (add `bottleneck: true`)"));
                    }
                }
            }
            if let Some(Some((_, loc))) = &stride_on {
                errors.push(
                    loc,
                    "`stride_on` applies to bottleneck blocks; a basic block's stride is always on its first 3x3 convolution",
                );
            }
        }
        if errors.len() > reported {
            return None;
        }

        let stages = stages?;
        let block = block?;
        let default_expansion = if block == BlockKind::Bottleneck { 4 } else { 1 };
        let (shortcut, shortcut_loc) =
            shortcut?.unwrap_or((ShortcutPolicy::Projection, spec_loc.clone()));
        let (width_per_group, width_per_group_loc) =
            width_per_group?.unwrap_or((64, spec_loc.clone()));
        let input = input?;
        Some(Spec {
            widths: widths?.map_or_else(
                || (0..stages.len()).map(|i| 64 << i).collect(),
                |list| list.into_iter().map(|(w, _)| w).collect(),
            ),
            stages,
            block,
            expansion: expansion?.map_or(default_expansion, |(n, _)| n),
            input: input.as_ref().map_or([3, 224, 224], |(shape, _)| *shape),
            input_loc: input.map(|(_, loc)| loc),
            classes: classes?.unwrap_or(Some(1000)),
            stem: stem?.unwrap_or(Stem::ImageNet),
            shortcut,
            shortcut_loc,
            stride_on: stride_on?.map_or(StrideOn::Conv3x3, |(s, _)| s),
            groups: groups?.map_or(1, |(n, _)| n),
            width_per_group,
            width_per_group_loc,
            preact: preact?.unwrap_or(false),
        })
    }
}

fn read_stages(v: &Value, errors: &mut Errors) -> Option<Vec<(usize, Loc)>> {
    let list = int_list(v, "stages", 1..=MAX_BLOCKS, errors)?;
    if list.is_empty() || list.len() > MAX_STAGES {
        errors.push(
            &v.loc,
            format!(
                "`stages` has {} entries; a network has 1 to {MAX_STAGES} stages",
                list.len()
            ),
        );
        return None;
    }
    Some(list)
}

fn read_input(v: &Value, errors: &mut Errors) -> Option<[usize; 3]> {
    match int_list(v, "input", 1..=MAX_INPUT_SIDE, errors)?[..] {
        [(c, ref c_loc), (h, _), (w, _)] => {
            if c as u64 > MAX_INPUT_CHANNELS {
                errors.push(
                    c_loc,
                    format!(
                        "an input of {c} channels is more than the {MAX_INPUT_CHANNELS} supported"
                    ),
                );
                return None;
            }
            Some([c, h, w])
        }
        ref other => {
            errors.push(
                &v.loc,
                format!(
                    "`input` is [channels, height, width], such as [3, 224, 224]; found {} entries",
                    other.len()
                ),
            );
            None
        }
    }
}

fn read_classes(v: &Value, errors: &mut Errors) -> Option<Option<usize>> {
    match &v.kind {
        ValueKind::Word(w) if w == "none" => Some(None),
        ValueKind::Int(0) => {
            errors.push(
                &v.loc,
                "`classes: 0`: a classifier needs at least one class; write `classes: none` for a headless backbone",
            );
            None
        }
        _ => int(v, "classes", 1..=MAX_CLASSES, errors).map(Some),
    }
}

/// A whole number in `range`.
fn int(v: &Value, key: &str, range: RangeInclusive<u64>, errors: &mut Errors) -> Option<usize> {
    match v.kind {
        ValueKind::Int(n) if range.contains(&n) => Some(n as usize),
        ValueKind::Int(n) => {
            errors.push(
                &v.loc,
                format!(
                    "`{key}` must be between {} and {}, found {n}",
                    range.start(),
                    range.end()
                ),
            );
            None
        }
        ref other => {
            errors.push(
                &v.loc,
                format!("`{key}` expects a whole number, found {}", other.describe()),
            );
            None
        }
    }
}

/// A list of whole numbers in `range`; reports every bad entry.
fn int_list(
    v: &Value,
    key: &str,
    range: RangeInclusive<u64>,
    errors: &mut Errors,
) -> Option<Vec<(usize, Loc)>> {
    let ValueKind::List(items) = &v.kind else {
        errors.push(
            &v.loc,
            format!(
                "`{key}` expects a list such as {}, found {}",
                example(key),
                v.kind.describe()
            ),
        );
        return None;
    };
    let mut ok = true;
    let mut list = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item.kind {
            ValueKind::Int(0) if key == "stages" => {
                errors.push(
                    &item.loc,
                    format!(
                        "stage {} has 0 blocks; every stage needs at least one",
                        i + 1
                    ),
                );
                ok = false;
            }
            ValueKind::Int(n) if range.contains(&n) => list.push((n as usize, item.loc.clone())),
            ValueKind::Int(n) => {
                errors.push(
                    &item.loc,
                    format!(
                        "`{key}` entry {} is {n}; entries must be between {} and {}",
                        i + 1,
                        range.start(),
                        range.end()
                    ),
                );
                ok = false;
            }
            ref other => {
                errors.push(
                    &item.loc,
                    format!(
                        "`{key}` entry {} must be a whole number, found {}",
                        i + 1,
                        other.describe()
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(list)
}

fn example(key: &str) -> &'static str {
    match key {
        "stages" => "[3, 4, 6, 3]",
        "widths" => "[64, 128, 256, 512]",
        _ => "[3, 224, 224]",
    }
}

fn boolean(v: &Value, key: &str, errors: &mut Errors) -> Option<bool> {
    match v.kind {
        ValueKind::Bool(b) => Some(b),
        ref other => {
            errors.push(
                &v.loc,
                format!("`{key}` is `true` or `false`, found {}", other.describe()),
            );
            None
        }
    }
}

/// One of the named `options`.
fn word<T: Copy>(v: &Value, key: &str, options: &[(&str, T)], errors: &mut Errors) -> Option<T> {
    let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
    match &v.kind {
        ValueKind::Word(w) => {
            if let Some((_, value)) = options.iter().find(|(name, _)| name == w) {
                return Some(*value);
            }
            errors.push(
                &v.loc,
                format!(
                    "unknown {key} `{w}`: expected one of {}{}",
                    names.join(", "),
                    suggestion(w, &names)
                ),
            );
            None
        }
        other => {
            errors.push(
                &v.loc,
                format!(
                    "`{key}` expects one of {}, found {}",
                    names.join(", "),
                    other.describe()
                ),
            );
            None
        }
    }
}

/// The entries by key, after reporting unknown and repeated keys.
struct Keys(BTreeMap<String, Value>);

impl Keys {
    fn collect(entries: Vec<Entry>, errors: &mut Errors) -> Keys {
        let mut map = BTreeMap::new();
        for Entry {
            key,
            key_loc,
            value,
        } in entries
        {
            if !KEYS.contains(&key.as_str()) {
                let hint = match suggestion(&key, KEYS) {
                    s if s.is_empty() => format!("; the keys are {}", KEYS.join(", ")),
                    s => s,
                };
                errors.push(&key_loc, format!("unknown key `{key}`{hint}"));
            } else if let Slot::Vacant(slot) = map.entry(key.clone()) {
                slot.insert(value);
            } else {
                errors.push(&key_loc, format!("`{key}` is given twice"));
            }
        }
        Keys(map)
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// Reads an optional key: `None` if it is invalid (reported),
    /// `Some(None)` if it is not given.
    fn read<T>(
        &self,
        key: &str,
        errors: &mut Errors,
        read: impl FnOnce(&Value, &mut Errors) -> Option<T>,
    ) -> Option<Option<T>> {
        match self.get(key) {
            None => Some(None),
            Some(v) => read(v, errors).map(Some),
        }
    }

    /// As [`Keys::read`], keeping where the value was written.
    fn read_spanned<T>(
        &self,
        key: &str,
        errors: &mut Errors,
        read: impl FnOnce(&Value, &mut Errors) -> Option<T>,
    ) -> Option<Option<(T, Loc)>> {
        match self.get(key) {
            None => Some(None),
            Some(v) => read(v, errors).map(|t| Some((t, v.loc.clone()))),
        }
    }
}
