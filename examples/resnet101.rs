//! Compiles ResNet-101 with `resnet!` and prints what the compiler knows
//! about it: the layer table (torchvision names, shapes, parameters and
//! multiply-adds), and each stage's convolution and identity blocks.
//!
//!     cargo run --release --example resnet101

use resnet_runtime::resnet;

resnet! {
    /// ImageNet ResNet-101, torchvision layout.
    pub ResNet101<stages: [3, 4, 23, 3], bottleneck: true>
}

fn main() {
    println!("{ResNet101}");
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
    println!(
        "{} parameters, {:.2} GMACs per {:?} image",
        ResNet101::PARAMS,
        ResNet101::MACS as f64 / 1e9,
        ResNet101::INPUT
    );
}
