//! Outputs against PyTorch's: `tools/make_fixtures.py` filled every tensor of
//! each model from a formula of its name and element index, ran a
//! formula-made batch of two images in eval mode, and kept the logits and
//! feature checksums in `tests/fixtures/parity.json`. Here the same formula
//! rebuilds the weights as a safetensors file with torchvision's names, the
//! model loads it like any checkpoint, and its outputs must agree within
//! 1e-4 of the largest logit.

mod common;

use common::{fixture, input, weights};
use resnet_rs::*;
use resnet_runtime::{resnet, Batch, Logits, WeightsError};
use serde_json::Value;

resnet! {
    /// The paper's v1 stride placement (on the first 1x1).
    ResNet50V1<stages: [3, 4, 6, 3], bottleneck: true, stride_on: conv1x1>
    /// Pre-activation ResNet-18 (v2).
    PreActResNet18<stages: [2, 2, 2, 2], preact: true>
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

/// Checks logits and feature checksums against the fixture.
fn check<const K: usize, const C: usize, const H: usize, const W: usize>(
    key: &str,
    logits: &Logits<K>,
    features: &Batch<C, H, W>,
) {
    let fixture = fixture(key);
    let want: Vec<f64> = fixture["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(numbers)
        .collect();
    let got: Vec<f64> = logits.view().iter().map(|&v| v as f64).collect();
    assert_eq!(got.len(), want.len(), "{key}: logit count");
    let largest = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(0f64, f64::max);
    assert!(
        worst / largest < 1e-4,
        "{key}: max |logit - PyTorch| = {worst:e}, {:e} of the largest",
        worst / largest
    );

    let f = features.view();
    for (image, (sum, abs)) in numbers(&fixture["feature_sums"])
        .into_iter()
        .zip(numbers(&fixture["feature_abs_sums"]))
        .enumerate()
    {
        let mine = f.index_axis(resnet_runtime::ndarray::Axis(0), image);
        let (my_sum, my_abs) = mine.iter().fold((0f64, 0f64), |(s, a), &v| {
            (s + v as f64, a + (v as f64).abs())
        });
        assert!(
            (my_sum - sum).abs() < 1e-4 * abs,
            "{key}: image {image} feature sum {my_sum} vs {sum}"
        );
        assert!(
            (my_abs - abs).abs() < 1e-4 * abs,
            "{key}: image {image} feature |sum| {my_abs} vs {abs}"
        );
    }
}

macro_rules! parity {
    ($test:ident, $key:literal, $model:ty, $c:literal, $side:literal) => {
        #[test]
        fn $test() -> Result<(), WeightsError> {
            let fixture = fixture($key);
            assert_eq!(fixture["input"], serde_json::json!([2, $c, $side, $side]));
            let model = <$model>::from_safetensors_bytes(&weights(&fixture))?;
            let x = input::<$c, $side, $side>();
            check($key, &model.forward(&x), &model.features(&x));
            Ok(())
        }
    };
}

parity!(resnet18_matches_pytorch, "resnet18", ResNet18, 3, 224);
parity!(resnet34_matches_pytorch, "resnet34", ResNet34, 3, 224);
parity!(resnet50_matches_pytorch, "resnet50", ResNet50, 3, 224);
parity!(resnet101_matches_pytorch, "resnet101", ResNet101, 3, 224);
parity!(resnet152_matches_pytorch, "resnet152", ResNet152, 3, 224);
parity!(
    resnext50_32x4d_matches_pytorch,
    "resnext50_32x4d",
    ResNeXt50x32x4d,
    3,
    224
);
parity!(
    wide_resnet50_2_matches_pytorch,
    "wide_resnet50_2",
    WideResNet50x2,
    3,
    224
);
parity!(
    resnet50_v1_matches_the_papers_stride_placement,
    "resnet50_v1",
    ResNet50V1,
    3,
    224
);
parity!(
    cifar_resnet20_with_zero_padded_shortcuts_matches,
    "cifar_resnet20",
    CifarResNet20,
    3,
    32
);
parity!(
    preact_resnet18_matches_resnet_v2,
    "preact_resnet18",
    PreActResNet18,
    3,
    224
);
