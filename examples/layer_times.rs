//! Where a forward pass spends its time: every step of the zoo's ResNet-50
//! or ResNet-18 (random weights) timed inside the network, then the same
//! summed by kind of layer, for comparison with ONNX Runtime's profiler
//! (`tools/ort_layers.py`).
//!
//!     cargo run --release --example layer_times -- resnet50 1 [passes]

use resnet_rs::{ResNet18, ResNet50};
use resnet_runtime::{Batch, Logits, Profile, Workspace};
use std::collections::BTreeMap;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).map_or("resnet50", String::as_str);
    let batch: usize = args.get(2).and_then(|b| b.parse().ok()).unwrap_or(1);
    let passes: usize = args.get(3).and_then(|p| p.parse().ok()).unwrap_or(20);
    let x = Batch::<3, 224, 224>::from_fn(batch, |(n, c, h, w)| {
        (((n + c * 7 + h * 3 + w) % 17) as f32 - 8.0) / 8.0
    });
    let mut logits = Logits::<1000>::zeros(batch);
    // A warm-up pass on a plain workspace, then the timed ones.
    let mut run = |forward: &dyn Fn(&mut Workspace, &mut Logits<1000>)| {
        forward(&mut Workspace::new(), &mut logits);
        let mut workspace = Workspace::profiled();
        for _ in 0..passes {
            forward(&mut workspace, &mut logits);
        }
        workspace
    };
    let workspace = match model {
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
    let profile = workspace.profile().expect("a profiled workspace");
    println!("{model}, batch {batch}\n\n{profile}\n");
    println!("by kind of layer:");
    for (kind, (count, time)) in by_kind(profile) {
        let ms = time.as_secs_f64() * 1e3;
        println!("{ms:9.3} ms  x{count:<3} {kind}");
    }
}

/// The steps summed by what they compute: the label without the layer's name.
fn by_kind(profile: &Profile) -> BTreeMap<String, (usize, Duration)> {
    let mut kinds = BTreeMap::<String, (usize, Duration)>::new();
    for (label, time) in profile.steps() {
        let kind = label.split_once(": ").map_or(label, |(_, kind)| kind);
        let entry = kinds.entry(kind.to_string()).or_default();
        (entry.0, entry.1) = (entry.0 + 1, entry.1 + time);
    }
    kinds
}
