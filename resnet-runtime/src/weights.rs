//! Weights from a safetensors file, named and shaped as torchvision's
//! `state_dict` (`conv1.weight`, `bn1.running_var`,
//! `layer1.0.downsample.0.weight`, `fc.bias`, ...), so a model exported with
//! `safetensors.torch.save_file(model.state_dict(), path)` loads as it is.
//!
//! A model asks for each tensor by name and shape; [`Weights::finish`] then
//! reports any tensor nobody asked for. Every defect is an [`WeightsError`]
//! that names the tensor, never a panic.

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::{Dtype, SafeTensors};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// What is wrong with a weights file.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not a safetensors file, or a truncated or corrupt one.
    #[error("not a valid safetensors file: {0}")]
    Format(String),
    /// The model needs a tensor the file lacks.
    #[error("missing tensor `{name}` (the model expects shape {expected:?})")]
    Missing {
        /// Its torchvision name.
        name: String,
        /// The shape the model expects.
        expected: Vec<usize>,
    },
    /// A tensor has another shape than the model's.
    #[error("tensor `{name}` has shape {found:?}, but the model expects {expected:?}")]
    Shape {
        /// Its name.
        name: String,
        /// The model's shape.
        expected: Vec<usize>,
        /// The file's shape.
        found: Vec<usize>,
    },
    /// A tensor is not floating point.
    #[error("tensor `{name}` has dtype {found}; weights must be F32, F16 or BF16")]
    Dtype {
        /// Its name.
        name: String,
        /// The file's dtype.
        found: String,
    },
    /// The file has a tensor the model does not.
    #[error("unexpected tensor `{name}` with shape {shape:?}: the model has no such parameter")]
    Unexpected {
        /// Its name.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
    },
}

/// A parsed safetensors file, and which of its tensors were read.
pub struct Weights<'a> {
    file: SafeTensors<'a>,
    read: BTreeSet<String>,
}

impl<'a> Weights<'a> {
    /// Parses the file's header (the bytes stay borrowed, nothing is copied).
    ///
    /// # Errors
    /// [`WeightsError::Format`] if the bytes are not a complete safetensors file.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WeightsError> {
        let file =
            SafeTensors::deserialize(bytes).map_err(|e| WeightsError::Format(e.to_string()))?;
        Ok(Weights {
            file,
            read: BTreeSet::new(),
        })
    }

    /// Reads a whole file into memory.
    ///
    /// # Errors
    /// [`WeightsError::Io`] naming the path.
    pub fn read_file(path: impl Into<PathBuf>) -> Result<Vec<u8>, WeightsError> {
        let path = path.into();
        std::fs::read(&path).map_err(|source| WeightsError::Io { path, source })
    }

    /// Tensor `name`, which must have shape `shape`, as `f32` (F16 and BF16
    /// are converted).
    ///
    /// # Errors
    /// If it is missing, has another shape, or is not floating point.
    pub fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<ArrayD<f32>, WeightsError> {
        let view = self.file.tensor(name).map_err(|_| WeightsError::Missing {
            name: name.to_owned(),
            expected: shape.to_vec(),
        })?;
        if view.shape() != shape {
            return Err(WeightsError::Shape {
                name: name.to_owned(),
                expected: shape.to_vec(),
                found: view.shape().to_vec(),
            });
        }
        let bytes = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(WeightsError::Dtype {
                    name: name.to_owned(),
                    found: format!("{other:?}"),
                });
            }
        };
        self.read.insert(name.to_owned());
        // The safetensors header check guarantees the byte length matches the shape.
        ArrayD::from_shape_vec(IxDyn(shape), values)
            .map_err(|e| WeightsError::Format(format!("tensor `{name}`: {e}")))
    }

    /// Marks `name` as known if the file has it, without reading it: for
    /// buffers the model does not use, such as batch norm's `num_batches_tracked`.
    pub fn skip(&mut self, name: &str) {
        if self.file.tensor(name).is_ok() {
            self.read.insert(name.to_owned());
        }
    }

    /// Checks that every tensor of the file was read or skipped.
    ///
    /// # Errors
    /// [`WeightsError::Unexpected`] for the first (by name) that was not.
    pub fn finish(self) -> Result<(), WeightsError> {
        let mut names: Vec<&str> = self.file.names();
        names.sort();
        match names.into_iter().find(|n| !self.read.contains(*n)) {
            None => Ok(()),
            Some(name) => Err(WeightsError::Unexpected {
                name: name.to_owned(),
                shape: self
                    .file
                    .tensor(name)
                    .map(|t| t.shape().to_vec())
                    .unwrap_or_default(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    /// A file with `conv.weight` [2, 1, 1, 1] = [1.5, -2], in `dtype`, and extras.
    fn file(dtype: Dtype, extra: &[(&str, Dtype, Vec<usize>)]) -> Vec<u8> {
        let bytes: Vec<u8> = match dtype {
            Dtype::F32 => [1.5f32, -2.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            Dtype::F16 => [1.5f32, -2.0]
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
            Dtype::BF16 => [1.5f32, -2.0]
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
            _ => vec![0; 2 * dtype.bitsize() / 8],
        };
        let extra_bytes: Vec<Vec<u8>> = extra
            .iter()
            .map(|(_, d, s)| vec![0u8; s.iter().product::<usize>() * d.bitsize() / 8])
            .collect();
        let mut tensors = vec![(
            "conv.weight".to_string(),
            TensorView::new(dtype, vec![2, 1, 1, 1], &bytes).unwrap(),
        )];
        for ((name, d, shape), data) in extra.iter().zip(&extra_bytes) {
            tensors.push((
                name.to_string(),
                TensorView::new(*d, shape.clone(), data).unwrap(),
            ));
        }
        safetensors::serialize(tensors, None).unwrap()
    }

    #[test]
    fn floats_of_every_width_load_as_f32() {
        for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            let bytes = file(dtype, &[]);
            let mut w = Weights::parse(&bytes).unwrap();
            let t = w.tensor("conv.weight", &[2, 1, 1, 1]).unwrap();
            assert_eq!(
                t.iter().copied().collect::<Vec<_>>(),
                [1.5, -2.0],
                "{dtype:?}"
            );
            w.finish().unwrap();
        }
    }

    #[test]
    fn every_defect_names_the_tensor() {
        let bytes = file(
            Dtype::F32,
            &[
                ("bn.num_batches_tracked", Dtype::I64, vec![]),
                ("extra.bias", Dtype::F32, vec![3]),
            ],
        );
        let mut w = Weights::parse(&bytes).unwrap();
        assert_eq!(
            w.tensor("conv.weight", &[2, 1, 3, 3])
                .unwrap_err()
                .to_string(),
            "tensor `conv.weight` has shape [2, 1, 1, 1], but the model expects [2, 1, 3, 3]"
        );
        assert_eq!(
            w.tensor("fc.bias", &[10]).unwrap_err().to_string(),
            "missing tensor `fc.bias` (the model expects shape [10])"
        );
        assert_eq!(
            w.tensor("bn.num_batches_tracked", &[])
                .unwrap_err()
                .to_string(),
            "tensor `bn.num_batches_tracked` has dtype I64; weights must be F32, F16 or BF16"
        );
        w.tensor("conv.weight", &[2, 1, 1, 1]).unwrap();
        w.skip("bn.num_batches_tracked");
        w.skip("layer9.absent");
        assert_eq!(
            w.finish().unwrap_err().to_string(),
            "unexpected tensor `extra.bias` with shape [3]: the model has no such parameter"
        );
    }

    #[test]
    fn truncated_and_garbage_files_are_format_errors() {
        let bytes = file(Dtype::F32, &[]);
        for cut in [0, 4, 8, 20, bytes.len() - 1] {
            let err = Weights::parse(&bytes[..cut])
                .err()
                .expect("a truncated file must not parse");
            assert!(
                matches!(err, WeightsError::Format(_)),
                "cut at {cut}: {err}"
            );
        }
        let garbage = b"\xff\xff\xff\xff\xff\xff\xff\x7fnot a header".to_vec();
        assert!(matches!(
            Weights::parse(&garbage),
            Err(WeightsError::Format(_))
        ));
        let err = Weights::read_file("/nonexistent/resnet.safetensors").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read /nonexistent/resnet.safetensors:"),
            "{err}"
        );
    }
}
