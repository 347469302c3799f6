//! Loading a real model's weights: every defect of the file is an `Err`
//! that names the tensor (and both shapes), and F16/BF16 files load.

mod common;

use common::{fixture, input, serialize, tensors, Tensor};
use resnet_rs::CifarResNet20;
use resnet_runtime::WeightsError;
use safetensors::tensor::Dtype;

fn load(tensors: &[Tensor]) -> Result<CifarResNet20, WeightsError> {
    CifarResNet20::from_safetensors_bytes(&serialize(tensors))
}

#[test]
fn the_complete_file_loads() {
    let model = load(&tensors(&fixture("cifar_resnet20"))).unwrap();
    assert!(model
        .forward(&input::<3, 32, 32>())
        .view()
        .iter()
        .all(|v| v.is_finite()));
}

#[test]
fn a_missing_tensor_is_named_with_its_expected_shape() {
    let mut t = tensors(&fixture("cifar_resnet20"));
    t.retain(|t| t.name != "layer2.1.bn2.running_var");
    let err = load(&t).unwrap_err();
    assert!(matches!(err, WeightsError::Missing { .. }));
    assert_eq!(
        err.to_string(),
        "missing tensor `layer2.1.bn2.running_var` (the model expects shape [32])"
    );
}

#[test]
fn a_wrong_shape_names_both_shapes() {
    let mut t = tensors(&fixture("cifar_resnet20"));
    let fc = t.iter_mut().find(|t| t.name == "fc.weight").unwrap();
    fc.shape = vec![64, 10];
    let err = load(&t).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor `fc.weight` has shape [64, 10], but the model expects [10, 64]"
    );
}

#[test]
fn an_unexpected_tensor_is_named() {
    let mut t = tensors(&fixture("cifar_resnet20"));
    // A projection this zero-padded network does not have.
    t.push(Tensor {
        name: "layer2.0.downsample.0.weight".into(),
        dtype: Dtype::F32,
        shape: vec![32, 16, 1, 1],
        bytes: vec![0; 32 * 16 * 4],
    });
    let err = load(&t).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unexpected tensor `layer2.0.downsample.0.weight` with shape [32, 16, 1, 1]: the model has no such parameter"
    );
}

#[test]
fn integer_weights_are_a_dtype_error() {
    let mut t = tensors(&fixture("cifar_resnet20"));
    let conv = t.iter_mut().find(|t| t.name == "conv1.weight").unwrap();
    conv.dtype = Dtype::I32;
    let err = load(&t).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor `conv1.weight` has dtype I32; weights must be F32, F16 or BF16"
    );
}

#[test]
fn truncated_files_and_missing_paths_are_errors() {
    let bytes = serialize(&tensors(&fixture("cifar_resnet20")));
    for cut in [0, 7, 100, bytes.len() / 2, bytes.len() - 1] {
        let err = CifarResNet20::from_safetensors_bytes(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(err, WeightsError::Format(_)),
            "cut at {cut}: {err}"
        );
    }
    let err = CifarResNet20::from_safetensors("no/such/weights.safetensors").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot read no/such/weights.safetensors: "),
        "{err}"
    );
}

#[test]
fn files_are_read_a_tensor_at_a_time_and_corrupt_ones_are_errors() {
    let bytes = serialize(&tensors(&fixture("cifar_resnet20")));
    let dir = std::env::temp_dir().join(format!("resnet-rs-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("complete.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let from_file = CifarResNet20::from_safetensors(&path).unwrap();
    let from_bytes = CifarResNet20::from_safetensors_bytes(&bytes).unwrap();
    let x = input::<3, 32, 32>();
    assert!(from_file.forward(&x).view() == from_bytes.forward(&x).view());
    // Truncated files, a header length past the file (or absurd), a header
    // that is not JSON.
    let mut corrupt: Vec<(String, Vec<u8>)> = [0, 7, 100, bytes.len() / 2, bytes.len() - 1]
        .into_iter()
        .map(|cut| (format!("cut at {cut}"), bytes[..cut].to_vec()))
        .collect();
    for len in [bytes.len() as u64, u64::MAX] {
        let mut b = bytes.clone();
        b[..8].copy_from_slice(&len.to_le_bytes());
        corrupt.push((format!("header length {len}"), b));
    }
    let mut garbage = bytes.clone();
    garbage[8] = b'#';
    corrupt.push(("a header that is not JSON".into(), garbage));
    for (i, (what, b)) in corrupt.iter().enumerate() {
        let path = dir.join(format!("corrupt{i}.safetensors"));
        std::fs::write(&path, b).unwrap();
        let err = CifarResNet20::from_safetensors(&path).unwrap_err();
        assert!(matches!(err, WeightsError::Format(_)), "{what}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn half_precision_files_load_and_agree_with_f32() {
    let full = tensors(&fixture("cifar_resnet20"));
    let reference = load(&full).unwrap().forward(&input::<3, 32, 32>());
    for dtype in [Dtype::F16, Dtype::BF16] {
        let half: Vec<Tensor> = full
            .iter()
            .map(|t| match t.dtype {
                Dtype::F32 => Tensor {
                    name: t.name.clone(),
                    dtype,
                    shape: t.shape.clone(),
                    bytes: t
                        .bytes
                        .chunks_exact(4)
                        .flat_map(|b| {
                            let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                            match dtype {
                                Dtype::F16 => half::f16::from_f32(v).to_le_bytes(),
                                _ => half::bf16::from_f32(v).to_le_bytes(),
                            }
                        })
                        .collect(),
                },
                _ => Tensor {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    bytes: t.bytes.clone(),
                },
            })
            .collect();
        let logits = load(&half).unwrap().forward(&input::<3, 32, 32>());
        let largest = reference.view().iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = logits
            .view()
            .iter()
            .zip(reference.view())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // 8 (BF16) or 11 (F16) bits of mantissa in every weight.
        let bound = if dtype == Dtype::F16 { 0.01 } else { 0.05 };
        assert!(worst / largest < bound, "{dtype:?}: {}", worst / largest);
        assert!(worst > 0.0, "{dtype:?} weights should round");
    }
}
