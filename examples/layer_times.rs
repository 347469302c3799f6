//! Where a forward pass spends its time: every step of the zoo's ResNet-50
//! or ResNet-18 (random weights) timed inside the network, its median over
//! the passes, then the same summed by kind of layer, for comparison with
//! ONNX Runtime's profiler (`tools/ort_layers.py`, also medians). The whole
//! pass's median shows what lies between the steps.
//!
//!     cargo run --release --example layer_times -- resnet50 1 [passes]

use resnet_rs::{ResNet18, ResNet50};
use resnet_runtime::{Batch, Logits, Workspace};
use std::collections::BTreeMap;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).map_or("resnet50", String::as_str);
    let batch: usize = args.get(2).and_then(|b| b.parse().ok()).unwrap_or(1);
    let passes: usize = args.get(3).and_then(|p| p.parse().ok()).unwrap_or(30);
    let x = Batch::<3, 224, 224>::from_fn(batch, |(n, c, h, w)| {
        (((n + c * 7 + h * 3 + w) % 17) as f32 - 8.0) / 8.0
    });
    let mut logits = Logits::<1000>::zeros(batch);
    // Each step's label, from a warm-up pass, and its time in every pass
    // after it, read a pass at a time.
    let mut run = |forward: &dyn Fn(&mut Workspace, &mut Logits<1000>)| {
        let mut workspace = Workspace::profiled();
        forward(&mut workspace, &mut logits);
        let profile = workspace.profile().expect("a profiled workspace");
        let labels: Vec<String> = profile.steps().map(|(label, _)| label.to_owned()).collect();
        let mut times = vec![Vec::with_capacity(passes); labels.len()];
        let mut walls = Vec::with_capacity(passes);
        for _ in 0..passes {
            workspace.profile_mut().expect("profiled").clear();
            let start = std::time::Instant::now();
            forward(&mut workspace, &mut logits);
            walls.push(start.elapsed().as_secs_f64() * 1e3);
            let profile = workspace.profile().expect("profiled");
            for (times, (_, took)) in times.iter_mut().zip(profile.steps()) {
                times.push(took.as_secs_f64() * 1e3);
            }
        }
        walls.sort_by(f64::total_cmp);
        let steps = labels.into_iter().zip(times).collect::<Vec<_>>();
        (steps, walls[walls.len() / 2])
    };
    let (steps, pass) = match model {
        "resnet50" => {
            let m = ResNet50::new_random(0);
            run(&|w, out| m.forward_with(w, &x, out))
        }
        "resnet18" => {
            let m = ResNet18::new_random(0);
            run(&|w, out| m.forward_with(w, &x, out))
        }
        other => {
            eprintln!("unknown model {other}: resnet50 or resnet18");
            std::process::exit(2);
        }
    };
    let medians: Vec<(&str, f64)> = steps
        .iter()
        .map(|(label, times)| {
            let mut times = times.clone();
            times.sort_by(f64::total_cmp);
            (label.as_str(), times[times.len() / 2])
        })
        .collect();
    let total: f64 = medians.iter().map(|(_, ms)| ms).sum();
    println!("{model}, batch {batch}, median of {passes} passes\n");
    for (i, (label, ms)) in medians.iter().enumerate() {
        println!(
            "{i:>4}  {label:<58} {ms:>8.3} ms {:>5.1}%",
            100.0 * ms / total
        );
    }
    println!("      {:<58} {total:>8.3} ms", "all steps");
    println!(
        "      {:<58} {pass:>8.3} ms\n\nby kind of layer:",
        "whole pass (median)"
    );
    // The steps summed by what they compute: the label without the layer's name.
    let mut kinds = BTreeMap::<&str, (usize, f64)>::new();
    for (label, ms) in medians {
        let kind = label.split_once(": ").map_or(label, |(_, kind)| kind);
        let entry = kinds.entry(kind).or_default();
        (entry.0, entry.1) = (entry.0 + 1, entry.1 + ms);
    }
    for (kind, (count, ms)) in kinds {
        println!("{ms:9.3} ms  x{count:<3} {kind}");
    }
}
