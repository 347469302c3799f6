//! Classifies an image with torchvision's ImageNet weights:
//!
//!     cargo run --release --example classify -- --weights resnet50.safetensors --image cat.jpg [--model resnet50]
//!
//! The image is preprocessed as torchvision's ImageNet models expect: resized
//! so its shorter side is 256 (bilinear), center-cropped to 224x224, scaled
//! to [0, 1] and normalised with ImageNet's mean and standard deviation.
//! Export the weights with the five lines of Python in the README.

use image::imageops::{self, FilterType};
use resnet_rs::{ResNet101, ResNet152, ResNet18, ResNet34, ResNet50};
use resnet_runtime::{Batch, Logits, WeightsError};
use std::process::ExitCode;

const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];
const LABELS: &str = include_str!("imagenet_classes.txt");

/// Decodes, resizes (shorter side 256), center-crops 224 and normalises.
fn preprocess(path: &str) -> Result<Batch<3, 224, 224>, String> {
    let image = image::open(path)
        .map_err(|e| format!("cannot read image {path}: {e}"))?
        .to_rgb8();
    let (w, h) = image.dimensions();
    let scale = 256.0 / w.min(h) as f64;
    let (w, h) = (
        ((w as f64 * scale).round() as u32).max(224),
        ((h as f64 * scale).round() as u32).max(224),
    );
    let resized = imageops::resize(&image, w, h, FilterType::Triangle);
    let crop = imageops::crop_imm(&resized, (w - 224) / 2, (h - 224) / 2, 224, 224).to_image();
    Ok(Batch::from_fn(1, |(_, c, y, x)| {
        (crop.get_pixel(x as u32, y as u32)[c] as f32 / 255.0 - MEAN[c]) / STD[c]
    }))
}

fn classify(
    model: &str,
    weights: &str,
    x: &Batch<3, 224, 224>,
) -> Result<Logits<1000>, WeightsError> {
    Ok(match model {
        "resnet18" => ResNet18::from_safetensors(weights)?.forward(x),
        "resnet34" => ResNet34::from_safetensors(weights)?.forward(x),
        "resnet101" => ResNet101::from_safetensors(weights)?.forward(x),
        "resnet152" => ResNet152::from_safetensors(weights)?.forward(x),
        _ => ResNet50::from_safetensors(weights)?.forward(x),
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    };
    let (Some(weights), Some(image)) = (flag("--weights"), flag("--image")) else {
        eprintln!("usage: classify --weights resnet50.safetensors --image cat.jpg [--model resnet18|34|50|101|152]");
        return ExitCode::from(2);
    };
    let model = flag("--model").unwrap_or("resnet50");
    if !["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"].contains(&model) {
        eprintln!("unknown model {model}: resnet18, resnet34, resnet50, resnet101 or resnet152");
        return ExitCode::from(2);
    }
    let x = match preprocess(image) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let logits = match classify(model, weights, &x) {
        Ok(logits) => logits,
        Err(e) => {
            eprintln!("cannot load {weights} as torchvision's {model}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let labels: Vec<&str> = LABELS.lines().collect();
    let scores = logits.view();
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let total: f32 = scores.iter().map(|&v| (v - max).exp()).sum();
    for (class, logit) in logits.top_k(0, 5) {
        let p = (logit - max).exp() / total;
        println!(
            "{:5.1}%  {} ({class})",
            100.0 * p,
            labels.get(class).unwrap_or(&"?")
        );
    }
    ExitCode::SUCCESS
}
