//! The weights formula shared with `tools/make_fixtures.py`, and the
//! fixture it wrote.
#![allow(dead_code)] // each test crate uses part of it

use resnet_runtime::Batch;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::Value;

/// FNV-1a over the name's bytes.
pub fn fnv1a(name: &str) -> u32 {
    name.bytes()
        .fold(0x811C_9DC5, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

/// `u(i)` in [0, 1) for tensor `name` (murmur3's finaliser of a hashed index).
pub fn uniform(name: &str, i: usize) -> f64 {
    let mut x = (i as u32).wrapping_add(fnv1a(name).wrapping_mul(0x9E37_79B1));
    x ^= x >> 16;
    x = x.wrapping_mul(0x85EB_CA6B);
    x ^= x >> 13;
    x = x.wrapping_mul(0xC2B2_AE35);
    x ^= x >> 16;
    x as f64 / 4_294_967_296.0
}

/// Element `i` of tensor `name`, as `tools/make_fixtures.py` defines it.
pub fn formula(name: &str, shape: &[usize], i: usize) -> f32 {
    let u = uniform(name, i);
    let v = if name.ends_with("running_var") {
        0.5 + u
    } else if name.ends_with("running_mean") || name.ends_with("bias") {
        0.2 * (u - 0.5)
    } else if shape.len() == 4 {
        (u - 0.5) * (24.0 / (shape[1] * shape[2] * shape[3]) as f64).sqrt()
    } else if shape.len() == 2 {
        (u - 0.5) * (12.0 / shape[1] as f64).sqrt()
    } else {
        0.1 + 0.3 * u
    };
    v as f32
}

pub fn fixture(key: &str) -> Value {
    static FIXTURES: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    let all = FIXTURES.get_or_init(|| {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/parity.json"
        ))
        .expect("tests/fixtures/parity.json (made by tools/make_fixtures.py)");
        serde_json::from_str(&text).expect("valid fixture JSON")
    });
    all[key].clone()
}

/// A tensor to write into a safetensors file.
pub struct Tensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// The fixture's tensors, made by the formula, as f32 (and an I64
/// `num_batches_tracked`, as torchvision saves it).
pub fn tensors(fixture: &Value) -> Vec<Tensor> {
    fixture["tensors"]
        .as_array()
        .expect("a tensor list")
        .iter()
        .map(|t| {
            let name = t[0].as_str().expect("a name").to_owned();
            let shape: Vec<usize> = t[1]
                .as_array()
                .expect("a shape")
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            if name.ends_with("num_batches_tracked") {
                return Tensor {
                    name,
                    dtype: Dtype::I64,
                    shape,
                    bytes: 0i64.to_le_bytes().to_vec(),
                };
            }
            let count: usize = shape.iter().product();
            let bytes = (0..count)
                .flat_map(|i| formula(&name, &shape, i).to_le_bytes())
                .collect();
            Tensor {
                name,
                dtype: Dtype::F32,
                shape,
                bytes,
            }
        })
        .collect()
}

/// A safetensors file holding `tensors`.
pub fn serialize(tensors: &[Tensor]) -> Vec<u8> {
    let views = tensors.iter().map(|t| {
        (
            t.name.clone(),
            TensorView::new(t.dtype, t.shape.clone(), &t.bytes).expect("consistent tensor"),
        )
    });
    safetensors::serialize(views, None).expect("serializable")
}

/// The fixture's weights as a safetensors file.
pub fn weights(fixture: &Value) -> Vec<u8> {
    serialize(&tensors(fixture))
}

/// The fixture's input batch: `2 u - 1` in f32 for tensor "input".
pub fn input<const C: usize, const H: usize, const W: usize>() -> Batch<C, H, W> {
    Batch::from_fn(2, |(n, c, y, x)| {
        2.0 * uniform("input", ((n * C + c) * H + y) * W + x) as f32 - 1.0
    })
}
