//! Forward-pass latency of the zoo's ResNet-50 and ResNet-18 (random
//! weights), for comparison with ONNX Runtime by `tools/bench_vs_ort.py`,
//! which runs this example between two runs of ONNX Runtime.
//!
//!     cargo run --release --example bench_forward -- resnet50 1 [runs]
//!
//! Prints one line: `model batch median_ms min_ms peak_rss_mb`.

use resnet_rs::{ResNet18, ResNet50};
use resnet_runtime::{Batch, Logits, Workspace};
use std::time::Instant;

/// Median and minimum of `runs` timed calls of `f` (ms), after one warm-up.
fn time(runs: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let mut ms: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    (ms[runs / 2], ms[0])
}

/// The process's peak resident set (VmHWM), in MB of 10^6 bytes: the unit
/// of the memory target, whose 102 MB are ResNet-50's 25.6 million f32
/// weights (the kernel reports KiB).
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib * 1024.0 / 1e6)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).map_or("resnet50", String::as_str);
    let batch: usize = args.get(2).and_then(|b| b.parse().ok()).unwrap_or(1);
    let runs: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(20);
    let x = Batch::<3, 224, 224>::from_fn(batch, |(n, c, h, w)| {
        (((n + c * 7 + h * 3 + w) % 17) as f32 - 8.0) / 8.0
    });
    let (mut workspace, mut logits) = (Workspace::new(), Logits::<1000>::zeros(batch));
    let (median, min) = match model {
        "resnet50" => {
            let m = ResNet50::new_random(0);
            time(runs, || m.forward_with(&mut workspace, &x, &mut logits))
        }
        "resnet18" => {
            let m = ResNet18::new_random(0);
            time(runs, || m.forward_with(&mut workspace, &x, &mut logits))
        }
        other => {
            eprintln!("unknown model {other}: resnet50 or resnet18");
            std::process::exit(2);
        }
    };
    println!("{model} {batch} {median:.3} {min:.3} {:.1}", peak_rss_mb());
}
