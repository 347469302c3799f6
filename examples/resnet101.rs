//! Compiles ResNet-101 with `resnet!`, prints its layer table (each stage:
//! one convolution block, then identity blocks), and runs it with random
//! weights on a generated image, timing the forward pass.
//!
//!     cargo run --release --example resnet101

use resnet_runtime::{resnet, Batch, Logits, Workspace};
use std::time::Instant;

resnet! {
    /// ImageNet ResNet-101, torchvision layout.
    pub ResNet101<stages: [3, 4, 23, 3], bottleneck: true>
}

fn main() {
    println!("{}", ResNet101::SUMMARY);
    let stages = ResNet101::BLOCKS.iter().map(|b| b.stage).max().unwrap_or(0);
    for stage in 1..=stages {
        let blocks: Vec<_> = ResNet101::BLOCKS
            .iter()
            .filter(|b| b.stage == stage)
            .collect();
        let conv = blocks.iter().filter(|b| b.is_convolution_block()).count();
        let out = blocks.last().map(|b| b.output).unwrap_or_default();
        println!(
            "stage {stage}: {conv} convolution block + {} identity blocks -> {out:?}",
            blocks.len() - conv
        );
    }

    let start = Instant::now();
    let model = ResNet101::new_random(2015);
    println!(
        "\n{:.1} M parameters initialised and packed in {:.2?}; {:.2} GMACs per image; {:.1} MB of activations per image",
        ResNet101::PARAMS as f64 / 1e6,
        start.elapsed(),
        ResNet101::MACS as f64 / 1e9,
        ResNet101::ARENA_BYTES as f64 / 1e6,
    );

    // A smooth synthetic image, normalised as ImageNet inputs are.
    let image = Batch::<3, 224, 224>::from_fn(1, |(_, c, y, x)| {
        let (fy, fx) = (y as f32 / 224.0, x as f32 / 224.0);
        ((fy * 6.0 + c as f32).sin() * (fx * 4.0).cos() - 0.1 * c as f32) * 1.5
    });
    let mut workspace = Workspace::new();
    let mut logits = Logits::zeros(1);
    model.forward_with(&mut workspace, &image, &mut logits); // warm-up: sizes the workspace
    let runs = 10;
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            model.forward_with(&mut workspace, &image, &mut logits);
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "forward, batch 1, {} threads: median {:.1} ms (min {:.1}, max {:.1}) over {runs} runs",
        rayon_threads(),
        times[runs / 2],
        times[0],
        times[runs - 1]
    );
    println!("top-5 classes (random weights): {:?}", logits.top_k(0, 5));
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
