//! Element-wise ops that stand beside the convolutions: batch-norm folding,
//! a per-channel affine (+ ReLU) for batch norms that cannot be folded (the
//! pre-activation block's), and the strided subsampling of the zero-padded
//! shortcut.

use ndarray::{Array1, Array4, ArrayView1, ArrayView4, ArrayViewMut4, Axis};

/// PyTorch's `BatchNorm2d` default epsilon.
pub const BN_EPS: f32 = 1e-5;

/// Folds an inference batch norm into the convolution before it:
/// `w' = w * gamma / sqrt(var + eps)` per output channel and
/// `b' = beta - mean * gamma / sqrt(var + eps)`.
///
/// # Panics
/// If the statistics do not have one value per output channel of `weight`.
pub fn fold_batch_norm(
    weight: ArrayView4<f32>,
    gamma: ArrayView1<f32>,
    beta: ArrayView1<f32>,
    mean: ArrayView1<f32>,
    var: ArrayView1<f32>,
    eps: f32,
) -> (Array4<f32>, Array1<f32>) {
    let mut folded = weight.to_owned();
    let bias = fold_batch_norm_in_place(folded.view_mut(), gamma, beta, mean, var, eps);
    (folded, bias)
}

/// As [`fold_batch_norm`], scaling `weight` where it lies and returning the bias.
///
/// # Panics
/// If the statistics do not have one value per output channel of `weight`.
pub fn fold_batch_norm_in_place(
    mut weight: ArrayViewMut4<f32>,
    gamma: ArrayView1<f32>,
    beta: ArrayView1<f32>,
    mean: ArrayView1<f32>,
    var: ArrayView1<f32>,
    eps: f32,
) -> Array1<f32> {
    let channels = weight.dim().0;
    assert!(
        [gamma.len(), beta.len(), mean.len(), var.len()]
            .iter()
            .all(|&l| l == channels),
        "batch norm statistics for {channels} channels"
    );
    let scale: Array1<f32> = gamma
        .iter()
        .zip(&var)
        .map(|(g, v)| g / (v + eps).sqrt())
        .collect();
    for (mut filter, s) in weight.axis_iter_mut(Axis(0)).zip(&scale) {
        filter *= *s;
    }
    beta.iter()
        .zip(&mean)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect()
}

/// `out[n][c] = relu?(x[n][c] * scale[c] + shift[c])`: an inference batch
/// norm (`scale = gamma / sqrt(var + eps)`, `shift = beta - mean * scale`),
/// optionally with its ReLU.
///
/// # Panics
/// If the shapes disagree.
pub fn channel_affine(
    x: ArrayView4<f32>,
    scale: &[f32],
    shift: &[f32],
    relu: bool,
    mut out: ArrayViewMut4<f32>,
) {
    let channels = x.dim().1;
    assert_eq!(x.dim(), out.dim(), "affine output shape");
    assert!(
        scale.len() == channels && shift.len() == channels,
        "affine parameters for {channels} channels"
    );
    for (image, mut out) in x.axis_iter(Axis(0)).zip(out.axis_iter_mut(Axis(0))) {
        for (c, (plane, mut out)) in image
            .axis_iter(Axis(0))
            .zip(out.axis_iter_mut(Axis(0)))
            .enumerate()
        {
            let (s, t) = (scale[c], shift[c]);
            out.zip_mut_with(&plane, |o, &v| {
                let y = v * s + t;
                *o = if relu { y.max(0.0) } else { y };
            });
        }
    }
}

/// `out = x[:, :, ::stride, ::stride]`: the spatial half of the paper's
/// option A shortcut (its channel half is the zero-padded residual add).
///
/// # Panics
/// If `out` is not `[N, C, ceil(H / stride), ceil(W / stride)]`.
pub fn subsample(x: ArrayView4<f32>, stride: usize, mut out: ArrayViewMut4<f32>) {
    let (n, c, h, w) = x.dim();
    assert_eq!(
        out.dim(),
        (n, c, h.div_ceil(stride), w.div_ceil(stride)),
        "subsampled shape"
    );
    out.assign(&x.slice(ndarray::s![.., .., ..;stride, ..;stride]));
}

/// `f(&mut dst[t], src[t * stride])` for every `t` of `dst` (and of `src`).
/// Stride 2, which nearly every strided layer has, runs with the stride a
/// constant, so that the loop vectorises.
#[inline(always)]
pub(crate) fn zip_strided(
    dst: &mut [f32],
    src: &[f32],
    stride: usize,
    f: impl Fn(&mut f32, f32) + Copy,
) {
    // `for_each`, not a `for` loop: `StepBy` folds into a loop that vectorises.
    #[inline(always)]
    fn zip(dst: &mut [f32], src: &[f32], stride: usize, f: impl Fn(&mut f32, f32)) {
        dst.iter_mut()
            .zip(src.iter().step_by(stride))
            .for_each(|(d, &x)| f(d, x));
    }
    match stride {
        2 => zip(dst, src, 2, f),
        s => zip(dst, src, s, f),
    }
}
