//! A profiled workspace times every step of a pass, in the order the
//! network runs them, each labelled as the architecture says it should be.

use resnet_rs::CifarResNet20;
use resnet_runtime::{Batch, Logits, Workspace};
use std::time::{Duration, Instant};

#[test]
fn a_profile_has_every_step_of_the_pass_in_order() {
    let model = CifarResNet20::new_random(4);
    let x = Batch::<3, 32, 32>::from_fn(2, |(n, c, h, w)| ((n + c * 3 + h * w) % 9) as f32 / 9.0);
    let (mut workspace, mut logits) = (Workspace::profiled(), Logits::zeros(2));
    let passes = 3;
    let start = Instant::now();
    for _ in 0..passes {
        model.forward_with(&mut workspace, &x, &mut logits);
    }
    let wall = start.elapsed();
    let profile = workspace.profile().expect("profiled");
    assert_eq!(profile.passes(), passes);
    let labels: Vec<String> = profile.steps().map(|(label, _)| label.to_owned()).collect();
    // The paper's CIFAR ResNet-20: the stem, nine basic blocks of two 3x3
    // convolutions (the first of stages 2 and 3 with stride 2, beside the
    // shortcut's subsampling), then the head.
    let mut want = vec!["conv1: 3x3/1 3->16 to 32x32".to_string()];
    for (stage, (cin, c, side)) in [(16, 16, 32), (16, 32, 16), (32, 64, 8)]
        .into_iter()
        .enumerate()
    {
        for block in 0..3 {
            let (cin, stride) = if block == 0 {
                (cin, 1 + (stage > 0) as usize)
            } else {
                (c, 1)
            };
            let name = format!("layer{}.{block}", stage + 1);
            want.push(format!(
                "{name}.conv1: 3x3/{stride} {cin}->{c} to {side}x{side}"
            ));
            if block == 0 && stage > 0 {
                want.push("zero-padded shortcut /2".into());
            }
            want.push(format!("{name}.conv2: 3x3/1 {c}->{c} to {side}x{side}"));
        }
    }
    want.push("average pool + fc 64->10".into());
    assert_eq!(labels.len(), want.len(), "{labels:#?}");
    for (got, want) in labels.iter().zip(&want) {
        assert!(
            got.starts_with(want.as_str()),
            "step {got:?}, want {want:?}"
        );
    }
    // The table lists every step, in order, and the passes.
    let table = profile.to_string();
    let mut rest = table.as_str();
    for label in &labels {
        rest = &rest[rest.find(label.as_str()).expect(label) + label.len()..];
    }
    assert!(rest.ends_with("mean of 3 passes"), "{table}");
    // Every step took time, and all of them less than the passes did.
    assert!(profile.steps().all(|(_, t)| t > Duration::ZERO));
    assert!(
        profile.total() * passes <= wall,
        "{:?} of {wall:?}",
        profile.total()
    );
    // Cleared, it keeps the labels and starts counting again.
    workspace.profile_mut().expect("profiled").clear();
    let cleared = workspace.profile().expect("profiled");
    assert_eq!(cleared.passes(), 0);
    assert!(cleared.steps().all(|(_, t)| t == Duration::ZERO));
    model.forward_with(&mut workspace, &x, &mut logits);
    let again = workspace.profile().expect("profiled");
    assert_eq!(again.passes(), 1);
    assert!(again
        .steps()
        .map(|(label, _)| label)
        .eq(labels.iter().map(String::as_str)));
    assert!(again.steps().all(|(_, t)| t > Duration::ZERO));
    // A plain workspace keeps no profile.
    assert!(Workspace::new().profile().is_none());
}
