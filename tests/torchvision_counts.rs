//! The zoo's models against torchvision's own numbers: parameter counts as
//! `sum(p.numel() for p in model.parameters())` prints them, multiply-adds as
//! torchvision's model cards list them (GFLOPS there = GMACs), and the
//! paper's CIFAR-10 networks (Table 6: 0.27M, 0.85M, 1.7M).

use resnet_rs::*;
use resnet_runtime::{BlockInfo, Shortcut};

#[test]
fn parameter_counts_match_torchvision() {
    assert_eq!(ResNet18::PARAMS, 11_689_512);
    assert_eq!(ResNet34::PARAMS, 21_797_672);
    assert_eq!(ResNet50::PARAMS, 25_557_032);
    assert_eq!(ResNet101::PARAMS, 44_549_160);
    assert_eq!(ResNet152::PARAMS, 60_192_808);
    assert_eq!(ResNeXt50x32x4d::PARAMS, 25_028_904);
    assert_eq!(WideResNet50x2::PARAMS, 68_883_240);
}

#[test]
fn cifar_networks_match_the_paper() {
    assert_eq!(CifarResNet20::PARAMS, 269_722);
    assert_eq!(CifarResNet56::PARAMS, 853_018);
    assert_eq!(CifarResNet110::PARAMS, 1_727_962);
    assert_eq!(CifarResNet56::INPUT, [3, 32, 32]);
    assert_eq!(CifarResNet56::FEATURES, [64, 8, 8]);
    assert_eq!(CifarResNet56::OUTPUT, [10]);
    // Option A: the two stage transitions pad with zeros and add no parameters.
    let zero_pad: Vec<&str> = CifarResNet56::BLOCKS
        .iter()
        .filter(|b| b.shortcut == Shortcut::ZeroPad)
        .map(|b| b.name)
        .collect();
    assert_eq!(zero_pad, ["layer2.0", "layer3.0"]);
}

/// `expected` GMACs within 0.5%.
fn assert_gmacs(macs: u64, expected: f64) {
    let g = macs as f64 / 1e9;
    assert!(
        (g - expected).abs() / expected < 0.005,
        "{g:.4} GMACs, expected {expected}"
    );
}

#[test]
fn multiply_adds_match_torchvision_at_224() {
    assert_gmacs(ResNet18::MACS, 1.814);
    assert_gmacs(ResNet50::MACS, 4.089);
    assert_gmacs(ResNet101::MACS, 7.801);
    assert_gmacs(ResNet152::MACS, 11.514);
}

/// (convolution blocks, identity blocks) of each stage.
fn roles(blocks: &[BlockInfo]) -> Vec<(usize, usize)> {
    let stages = blocks.iter().map(|b| b.stage).max().unwrap_or(0);
    (1..=stages)
        .map(|s| {
            let stage = blocks.iter().filter(|b| b.stage == s);
            let conv = stage.clone().filter(|b| b.is_convolution_block()).count();
            (conv, stage.count() - conv)
        })
        .collect()
}

#[test]
fn resnet101_has_a_convolution_block_then_identity_blocks_per_stage() {
    assert_eq!(roles(ResNet101::BLOCKS), [(1, 2), (1, 3), (1, 22), (1, 2)]);
    assert!(ResNet101::SUMMARY.contains("Blocks: 4 convolution, 29 identity"));
    // Each stage opens with its convolution block.
    for name in ["layer1.0", "layer2.0", "layer3.0", "layer4.0"] {
        let block = ResNet101::BLOCKS.iter().find(|b| b.name == name).unwrap();
        assert_eq!(block.shortcut, Shortcut::Projection, "{name}");
    }
}

#[test]
fn resnet34_keeps_64_channels_in_stage_1_so_it_has_three_convolution_blocks() {
    assert_eq!(roles(ResNet34::BLOCKS), [(0, 3), (1, 3), (1, 5), (1, 2)]);
    assert!(ResNet34::SUMMARY.contains("Blocks: 3 convolution, 13 identity"));
}

#[test]
fn layers_carry_torchvision_names_and_shapes() {
    let layer = |name: &str| ResNet50::LAYERS.iter().find(|l| l.name == name).unwrap();
    // torchvision's resnet50: conv1 [64, 112, 112] 9,408 weights;
    // layer1.0.downsample.0 1x1 64->256; layer4.2.conv3 512->2048 at 7x7; fc 2048->1000.
    assert_eq!(
        (layer("conv1").output, layer("conv1").params),
        ([64, 112, 112], 9_408)
    );
    assert_eq!(layer("maxpool").output, [64, 56, 56]);
    assert_eq!(
        (
            layer("layer1.0.downsample.0").output,
            layer("layer1.0.downsample.0").params
        ),
        ([256, 56, 56], 64 * 256)
    );
    assert_eq!(layer("layer2.0.conv2").kind, "Conv2d 3x3/2");
    assert_eq!(layer("layer4.2.conv3").output, [2048, 7, 7]);
    assert_eq!(
        (layer("fc").output, layer("fc").params),
        ([1000, 1, 1], 2048 * 1000 + 1000)
    );
    assert_eq!(ResNet50::FEATURES, [2048, 7, 7]);
    // ResNeXt's grouped 3x3: 32 groups of 4 channels at stage 1 (width 128).
    let rx = ResNeXt50x32x4d::LAYERS
        .iter()
        .find(|l| l.name == "layer1.0.conv2")
        .unwrap();
    assert_eq!((rx.kind, rx.params), ("Conv2d 3x3 g32", 128 * 4 * 9));
}

#[test]
fn the_table_is_the_display_and_lists_every_layer() {
    let table = ResNet18::new_random(0).to_string();
    assert_eq!(table, ResNet18::SUMMARY);
    assert!(table.starts_with("ResNet18: input [3, 224, 224] -> output [1000]\n"));
    for layer in ResNet18::LAYERS {
        assert!(table.contains(layer.name), "{} missing", layer.name);
    }
    assert!(table.contains("Total params: 11,689,512\n"));
    assert!(table.contains("layer2.0  "));
    assert!(table.contains("BasicBlock, convolution block (projection)"));
}
