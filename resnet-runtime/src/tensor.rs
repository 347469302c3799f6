//! Typed tensors: a batch of images whose `[C, H, W]` is part of the type,
//! so rustc checks that a model gets the input it was compiled for. The
//! batch size stays a run-time value.

use ndarray::{Array2, Array4, ArrayView2, ArrayView4, ArrayViewMut4};

/// Why a dynamic array cannot become a typed tensor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a tensor of shape {expected}, found {found:?}")]
pub struct ShapeError {
    /// The shape the type asks for, with `N` for the run-time batch size.
    pub expected: String,
    /// The array's shape.
    pub found: Vec<usize>,
}

/// A batch of `N` images of `C` channels, `H x W`, NCHW in standard layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch<const C: usize, const H: usize, const W: usize> {
    data: Array4<f32>,
}

impl<const C: usize, const H: usize, const W: usize> Batch<C, H, W> {
    /// `n` images of zeros.
    pub fn zeros(n: usize) -> Self {
        Batch {
            data: Array4::zeros((n, C, H, W)),
        }
    }

    /// `n` images with `f(n, c, h, w)` at each element.
    pub fn from_fn(n: usize, f: impl FnMut((usize, usize, usize, usize)) -> f32) -> Self {
        Batch {
            data: Array4::from_shape_fn((n, C, H, W), f),
        }
    }

    /// Takes an `[N, C, H, W]` array (copying it into standard layout if needed).
    ///
    /// # Errors
    /// If its shape is not `[N, C, H, W]`: the error names both shapes.
    pub fn from_array(data: Array4<f32>) -> Result<Self, ShapeError> {
        let (_, c, h, w) = data.dim();
        if (c, h, w) != (C, H, W) {
            return Err(ShapeError {
                expected: format!("[N, {C}, {H}, {W}]"),
                found: data.shape().to_vec(),
            });
        }
        let data = if data.is_standard_layout() {
            data
        } else {
            data.as_standard_layout().into_owned()
        };
        Ok(Batch { data })
    }

    /// Images in the batch.
    pub fn len(&self) -> usize {
        self.data.dim().0
    }

    /// Whether the batch holds no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `[N, C, H, W]` view.
    pub fn view(&self) -> ArrayView4<'_, f32> {
        self.data.view()
    }

    /// The `[N, C, H, W]` mutable view.
    pub fn view_mut(&mut self) -> ArrayViewMut4<'_, f32> {
        self.data.view_mut()
    }

    /// The `[N, C, H, W]` array.
    pub fn into_array(self) -> Array4<f32> {
        self.data
    }
}

impl<const C: usize, const H: usize, const W: usize> TryFrom<Array4<f32>> for Batch<C, H, W> {
    type Error = ShapeError;

    fn try_from(data: Array4<f32>) -> Result<Self, ShapeError> {
        Self::from_array(data)
    }
}

/// `N` rows of `K` class scores.
#[derive(Clone, Debug, PartialEq)]
pub struct Logits<const K: usize> {
    data: Array2<f32>,
}

impl<const K: usize> Logits<K> {
    /// `n` rows of zeros.
    pub fn zeros(n: usize) -> Self {
        Logits {
            data: Array2::zeros((n, K)),
        }
    }

    /// Takes an `[N, K]` array.
    ///
    /// # Errors
    /// If its shape is not `[N, K]`: the error names both shapes.
    pub fn from_array(data: Array2<f32>) -> Result<Self, ShapeError> {
        if data.dim().1 != K {
            return Err(ShapeError {
                expected: format!("[N, {K}]"),
                found: data.shape().to_vec(),
            });
        }
        let data = if data.is_standard_layout() {
            data
        } else {
            data.as_standard_layout().into_owned()
        };
        Ok(Logits { data })
    }

    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.data.dim().0
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `[N, K]` view.
    pub fn view(&self) -> ArrayView2<'_, f32> {
        self.data.view()
    }

    /// The `[N, K]` mutable view.
    pub fn view_mut(&mut self) -> ndarray::ArrayViewMut2<'_, f32> {
        self.data.view_mut()
    }

    /// The `[N, K]` array.
    pub fn into_array(self) -> Array2<f32> {
        self.data
    }

    /// The `k` highest-scoring classes of row `row`, best first, as `(class, score)`.
    ///
    /// # Panics
    /// If `row` is out of range.
    pub fn top_k(&self, row: usize, k: usize) -> Vec<(usize, f32)> {
        let mut scored: Vec<(usize, f32)> =
            self.data.row(row).iter().copied().enumerate().collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(k);
        scored
    }
}

impl<const K: usize> TryFrom<Array2<f32>> for Logits<K> {
    type Error = ShapeError;

    fn try_from(data: Array2<f32>) -> Result<Self, ShapeError> {
        Self::from_array(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_check_the_static_shape() {
        let ok = Batch::<3, 4, 5>::from_array(Array4::zeros((2, 3, 4, 5))).unwrap();
        assert_eq!(ok.len(), 2);
        let err = Batch::<3, 224, 224>::from_array(Array4::zeros((1, 3, 32, 32))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected a tensor of shape [N, 3, 224, 224], found [1, 3, 32, 32]"
        );
        let err = Logits::<1000>::try_from(Array2::zeros((2, 10))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected a tensor of shape [N, 1000], found [2, 10]"
        );
    }

    #[test]
    fn transposed_arrays_are_stored_in_standard_layout() {
        let a = Array4::from_shape_fn((2, 3, 4, 5), |(n, c, h, w)| {
            (n * 1000 + c * 100 + h * 10 + w) as f32
        });
        let swapped = a
            .clone()
            .permuted_axes([0, 1, 3, 2])
            .as_standard_layout()
            .into_owned()
            .permuted_axes([0, 1, 3, 2]);
        assert!(!swapped.is_standard_layout());
        let batch = Batch::<3, 4, 5>::from_array(swapped).unwrap();
        assert!(batch.view().is_standard_layout());
        assert_eq!(batch.into_array(), a);
    }

    #[test]
    fn top_k_orders_by_score_then_class() {
        let logits = Logits::<4>::from_array(
            Array2::from_shape_vec((1, 4), vec![0.5, 2.0, 0.5, -1.0]).unwrap(),
        )
        .unwrap();
        assert_eq!(logits.top_k(0, 3), [(1, 2.0), (0, 0.5), (2, 0.5)]);
    }
}
