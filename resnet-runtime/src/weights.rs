//! Weights from a safetensors file, named and shaped as torchvision's
//! `state_dict` (`conv1.weight`, `bn1.running_var`,
//! `layer1.0.downsample.0.weight`, `fc.bias`, ...), so a model exported with
//! `safetensors.torch.save_file(model.state_dict(), path)` loads as it is.
//!
//! A model asks for each tensor by name and shape; [`Weights::finish`] then
//! reports any tensor nobody asked for. Every defect is an [`WeightsError`]
//! that names the tensor, never a panic.

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::{Dtype, Metadata, SafeTensors};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

/// The largest header read, as the safetensors crate allows: a corrupt
/// length must not make loading allocate gigabytes.
const MAX_HEADER: u64 = 100_000_000;

/// Reads `out.len()` bytes of the file's `what`; a short file is a format error.
fn read_exact_or_format(file: &mut File, out: &mut [u8], what: &str) -> Result<(), WeightsError> {
    file.read_exact(out)
        .map_err(|e| WeightsError::Format(format!("cannot read the {what}: {e}")))
}

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
    source: Source<'a>,
    read: BTreeSet<String>,
}

/// Where the tensors' bytes are.
enum Source<'a> {
    /// A whole file in memory.
    Bytes(SafeTensors<'a>),
    /// An open file, read one tensor at a time, so loading never holds the
    /// whole file and the model at once.
    File {
        file: File,
        path: PathBuf,
        header: Metadata,
        /// Offset of the tensors' data in the file.
        data_start: u64,
    },
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
            source: Source::Bytes(file),
            read: BTreeSet::new(),
        })
    }

    /// Opens a file and parses its header; tensors are read as they are asked for.
    ///
    /// # Errors
    /// [`WeightsError::Io`] naming the path, or [`WeightsError::Format`] if
    /// the header is malformed or the file shorter than the header says.
    pub fn open(path: impl Into<PathBuf>) -> Result<Weights<'static>, WeightsError> {
        let path = path.into();
        let io = |source| WeightsError::Io {
            path: path.clone(),
            source,
        };
        let mut file = File::open(&path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let format = |what: String| WeightsError::Format(what);
        let mut len = [0u8; 8];
        read_exact_or_format(&mut file, &mut len, "header length")?;
        let header_len = u64::from_le_bytes(len);
        if header_len > file_len.saturating_sub(8) || header_len > MAX_HEADER {
            return Err(format(format!(
                "a header of {header_len} bytes in a file of {file_len} (at most {MAX_HEADER})"
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        read_exact_or_format(&mut file, &mut header, "header")?;
        let header: Metadata =
            serde_json::from_slice(&header).map_err(|e| format(format!("invalid header: {e}")))?;
        let data_start = 8 + header_len;
        let data_len = header
            .tensors()
            .values()
            .map(|info| info.data_offsets.1 as u64)
            .max()
            .unwrap_or(0);
        if data_start + data_len != file_len {
            return Err(format(format!(
                "the header describes {} bytes, the file has {file_len}",
                data_start + data_len
            )));
        }
        Ok(Weights {
            source: Source::File {
                file,
                path,
                header,
                data_start,
            },
            read: BTreeSet::new(),
        })
    }

    /// Dtype and shape of tensor `name`, if the file has it.
    fn info(&self, name: &str) -> Option<(Dtype, Vec<usize>)> {
        match &self.source {
            Source::Bytes(file) => file
                .tensor(name)
                .ok()
                .map(|t| (t.dtype(), t.shape().to_vec())),
            Source::File { header, .. } => header
                .info(name)
                .map(|info| (info.dtype, info.shape.clone())),
        }
    }

    /// Tensor `name`, which must have shape `shape`, as `f32` (F16 and BF16
    /// are converted).
    ///
    /// # Errors
    /// If it is missing, has another shape, or is not floating point, or
    /// the file cannot be read.
    pub fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<ArrayD<f32>, WeightsError> {
        let mut values = vec![0f32; shape.iter().product()];
        self.read_into(name, shape, &mut values)?;
        ArrayD::from_shape_vec(IxDyn(shape), values)
            .map_err(|e| WeightsError::Format(format!("tensor `{name}`: {e}")))
    }

    /// As [`Weights::tensor`], into `out` (as many floats as `shape` holds,
    /// in row-major order).
    ///
    /// # Errors
    /// As [`Weights::tensor`].
    pub(crate) fn read_into(
        &mut self,
        name: &str,
        shape: &[usize],
        out: &mut [f32],
    ) -> Result<(), WeightsError> {
        let (dtype, found) = self.info(name).ok_or_else(|| WeightsError::Missing {
            name: name.to_owned(),
            expected: shape.to_vec(),
        })?;
        if found != shape {
            return Err(WeightsError::Shape {
                name: name.to_owned(),
                expected: shape.to_vec(),
                found,
            });
        }
        assert_eq!(
            out.len(),
            shape.iter().product::<usize>(),
            "floats of `{name}`"
        );
        match dtype {
            Dtype::F32 => {
                self.read_bytes(name, bytemuck::cast_slice_mut(out))?;
                // The file is little-endian; on a big-endian host, swap.
                out.iter_mut()
                    .for_each(|v| *v = f32::from_bits(u32::from_le(v.to_bits())));
            }
            Dtype::F16 | Dtype::BF16 => {
                let mut bytes = vec![0u8; 2 * out.len()];
                self.read_bytes(name, &mut bytes)?;
                let pairs = bytes.chunks_exact(2).map(|b| [b[0], b[1]]);
                for (v, b) in out.iter_mut().zip(pairs) {
                    *v = match dtype {
                        Dtype::F16 => half::f16::from_le_bytes(b).to_f32(),
                        _ => half::bf16::from_le_bytes(b).to_f32(),
                    };
                }
            }
            other => {
                return Err(WeightsError::Dtype {
                    name: name.to_owned(),
                    found: format!("{other:?}"),
                });
            }
        }
        self.read.insert(name.to_owned());
        Ok(())
    }

    /// Copies tensor `name`'s bytes, whose length the header check
    /// guarantees is `out.len()`, into `out`.
    fn read_bytes(&mut self, name: &str, out: &mut [u8]) -> Result<(), WeightsError> {
        match &mut self.source {
            Source::Bytes(file) => {
                let view = file.tensor(name).expect("the tensor's info was found");
                out.copy_from_slice(view.data());
                Ok(())
            }
            Source::File {
                file,
                path,
                header,
                data_start,
            } => {
                let info = header.info(name).expect("the tensor's info was found");
                let io = |source| WeightsError::Io {
                    path: path.clone(),
                    source,
                };
                file.seek(SeekFrom::Start(*data_start + info.data_offsets.0 as u64))
                    .map_err(io)?;
                file.read_exact(out).map_err(io)
            }
        }
    }

    /// Names of every tensor in the file.
    fn names(&self) -> Vec<String> {
        match &self.source {
            Source::Bytes(file) => file.names().into_iter().map(str::to_owned).collect(),
            Source::File { header, .. } => header.offset_keys(),
        }
    }

    /// Marks `name` as known if the file has it, without reading it: for
    /// buffers the model does not use, such as batch norm's `num_batches_tracked`.
    pub fn skip(&mut self, name: &str) {
        if self.info(name).is_some() {
            self.read.insert(name.to_owned());
        }
    }

    /// Checks that every tensor of the file was read or skipped.
    ///
    /// # Errors
    /// [`WeightsError::Unexpected`] for the first (by name) that was not.
    pub fn finish(self) -> Result<(), WeightsError> {
        let mut names = self.names();
        names.sort();
        match names.into_iter().find(|n| !self.read.contains(n)) {
            None => Ok(()),
            Some(name) => Err(WeightsError::Unexpected {
                shape: self.info(&name).map(|(_, shape)| shape).unwrap_or_default(),
                name,
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
        let err = Weights::open("/nonexistent/resnet.safetensors")
            .err()
            .expect("no such file");
        assert!(
            err.to_string()
                .starts_with("cannot read /nonexistent/resnet.safetensors:"),
            "{err}"
        );
    }
}
