//! The keys torchvision's defaults do not exercise, against counts derived
//! by hand from the architectures (each derivation is in the comment).

use resnet_runtime::{resnet, Shortcut};

resnet! {
    ResNet50<stages: [3, 4, 6, 3], bottleneck: true>
    ResNet50V1<stages: [3, 4, 6, 3], bottleneck: true, stride_on: conv1x1>
    ResNet50Backbone<stages: [3, 4, 6, 3], bottleneck: true, classes: none>
    ResNet50DeepStem<stages: [3, 4, 6, 3], bottleneck: true, stem: deep>
    ResNet18PreAct<stages: [2, 2, 2, 2], preact: true>
    ResNet34OptionC<stages: [3, 4, 6, 3], shortcut: all_projection>
    Cifar20<stages: [3, 3, 3], stem: cifar, widths: [16, 32, 64], input: [3, 32, 32], classes: 10, shortcut: zero_pad>
    Odd<stages: [1, 1], widths: [8, 16], input: [1, 33, 20], classes: 3, stem: cifar>
}

#[test]
fn v1_moves_the_stride_to_the_first_1x1_and_saves_its_work() {
    // Same weights as v1.5, but the first block of stages 2-4 runs conv1 at
    // the output resolution: each saves 3/4 of planes * in_channels * H * W,
    // which is 0.75 * 128 * 256 * 56^2 = 0.75 * 256 * 512 * 28^2
    // = 0.75 * 512 * 1024 * 14^2 = 77,070,336 per stage.
    assert_eq!(ResNet50V1::PARAMS, ResNet50::PARAMS);
    assert_eq!(ResNet50V1::MACS, ResNet50::MACS - 3 * 77_070_336);
    assert_eq!(ResNet50V1::MACS, 3_857_973_248);
    let conv1 = ResNet50V1::LAYERS
        .iter()
        .find(|l| l.name == "layer2.0.conv1")
        .unwrap();
    assert_eq!((conv1.kind, conv1.output), ("Conv2d 1x1/2", [128, 28, 28]));
}

#[test]
fn a_headless_backbone_ends_at_the_last_stage() {
    // Without avgpool and fc (2048 * 1000 + 1000 parameters).
    assert_eq!(ResNet50Backbone::PARAMS, 25_557_032 - 2_049_000);
    assert_eq!(ResNet50Backbone::OUTPUT, [2048, 7, 7]);
    assert_eq!(ResNet50Backbone::FEATURES, [2048, 7, 7]);
    assert!(!ResNet50Backbone::LAYERS
        .iter()
        .any(|l| l.name == "fc" || l.name == "avgpool"));
}

#[test]
fn the_deep_stem_is_three_3x3_convolutions() {
    // conv1.0 3->32 (864) + BN (64) + conv1.3 32->32 (9,216) + BN (64)
    // + conv1.6 32->64 (18,432) = 28,640 in place of the 7x7's 9,408.
    assert_eq!(ResNet50DeepStem::PARAMS, 25_557_032 - 9_408 + 28_640);
    let names: Vec<&str> = ResNet50DeepStem::LAYERS
        .iter()
        .take(9)
        .map(|l| l.name)
        .collect();
    assert_eq!(
        names,
        [
            "conv1.0", "conv1.1", "conv1.2", "conv1.3", "conv1.4", "conv1.5", "conv1.6", "bn1",
            "relu"
        ]
    );
    let maxpool = ResNet50DeepStem::LAYERS
        .iter()
        .find(|l| l.name == "maxpool")
        .unwrap();
    assert_eq!(maxpool.output, [64, 56, 56]);
}

#[test]
fn pre_activation_moves_batch_norm_before_each_convolution() {
    // From ResNet-18's 11,689,512: no stem BN (-128); projections without BN
    // (-2 * (128 + 256 + 512) = -1,792); each stage's first bn1 normalises the
    // block's input, not its planes (-(128 - 64) - (256 - 128) - (512 - 256)
    // = -448 per weight and bias, -896); a final post_bn over 512 (+1,024).
    assert_eq!(
        ResNet18PreAct::PARAMS,
        11_689_512 - 128 - 1_792 - 896 + 1_024
    );
    let names: Vec<&str> = ResNet18PreAct::LAYERS.iter().map(|l| l.name).collect();
    assert_eq!(names[..3], ["conv1", "maxpool", "layer1.0.bn1"]);
    assert_eq!(
        names[names.len() - 4..],
        ["post_bn", "post_relu", "avgpool", "fc"]
    );
    assert!(!names.contains(&"layer2.0.downsample.1"));
}

#[test]
fn option_c_projects_in_every_block() {
    // ResNet-34's 13 identity blocks each gain a 1x1 convolution + BN:
    // 3 * (64^2 + 128) + 3 * (128^2 + 256) + 5 * (256^2 + 512) + 2 * (512^2 + 1024)
    // = 12,672 + 49,920 + 330,240 + 526,336 = 919,168.
    assert_eq!(ResNet34OptionC::PARAMS, 21_797_672 + 919_168);
    assert!(ResNet34OptionC::BLOCKS
        .iter()
        .all(|b| b.shortcut == Shortcut::Projection));
}

#[test]
fn cifar_resnet20_multiply_adds() {
    // conv1 16*32*32*3*9 = 442,368; stage 1: 6 convs of 16*32*32*16*9 = 2,359,296;
    // stages 2 and 3: a first conv of 1,179,648 and 5 of 2,359,296 each; fc 640.
    let expected = 442_368 + 6 * 2_359_296 + 2 * (1_179_648 + 5 * 2_359_296) + 640;
    assert_eq!(Cifar20::MACS, expected);
    assert_eq!(Cifar20::MACS, 40_551_040);
}

#[test]
fn odd_sizes_round_down_as_pytorch_does() {
    // stage 2's stride-2 3x3 with padding 1: (33 + 2 - 3) / 2 + 1 = 17, (20 - 1) / 2 + 1 = 10.
    assert_eq!(Odd::FEATURES, [16, 17, 10]);
    let shortcut = Odd::BLOCKS.iter().find(|b| b.name == "layer2.0").unwrap();
    assert_eq!(
        (shortcut.shortcut, shortcut.output),
        (Shortcut::Projection, [16, 17, 10])
    );
    // conv1 1->8: 72 + BN 16; layer1.0: 2 * (576 + 16); layer2.0: 1,152 + 2,304 + 2 * 32
    // + projection 128 + 32; fc 16 * 3 + 3.
    assert_eq!(
        Odd::PARAMS,
        72 + 16 + 2 * (576 + 16) + 1_152 + 2_304 + 64 + 128 + 32 + 51
    );
}
