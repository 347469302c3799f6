//! The copies that pack convolution patches: a strided run of an input row,
//! zero where it falls in the padding, and a gather through a table of
//! offsets. On AVX-512 each is a few masked instructions per 16 values: the
//! masks do the zero padding and the run's ragged ends, which the portable
//! versions spend most of their time on for runs as short as a patch row's.

use super::elementwise::zip_strided;
use super::gemm::Isa;

/// `dst[t] = row[x0 + t * stride]` where that index lies in `row`, else 0.
#[inline]
pub(crate) fn strided_run(isa: Isa, dst: &mut [f32], row: &[f32], x0: isize, stride: usize) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && stride <= 2 {
        // SAFETY: AVX-512F is present (the weights were packed for it), and
        // the stride is 1 or 2.
        unsafe { x86::strided_run(dst, row, x0, stride) };
        return;
    }
    let _ = isa;
    strided_run_portable(dst, row, x0, stride);
}

/// [`strided_run`] without SIMD: zeros, an in-bounds run, zeros.
pub(crate) fn strided_run_portable(dst: &mut [f32], row: &[f32], x0: isize, stride: usize) {
    let (lo, hi) = in_bounds(x0, stride, row.len(), dst.len());
    dst[..lo].fill(0.0);
    dst[hi..].fill(0.0);
    if hi > lo {
        let (from, dst) = ((x0 + (lo * stride) as isize) as usize, &mut dst[lo..hi]);
        match stride {
            1 => dst.copy_from_slice(&row[from..from + dst.len()]),
            s => zip_strided(dst, &row[from..], s, |d, x| *d = x),
        }
    }
}

/// The `t` in `0..run` for which `x0 + t * stride` lies in `0..len`, as
/// `lo..hi` (empty when none does).
#[inline]
fn in_bounds(x0: isize, stride: usize, len: usize, run: usize) -> (usize, usize) {
    // Strides 1 and 2 are nearly all there is: spare them the division.
    let div_ceil = |a: isize| match stride {
        1 => a,
        2 => (a + 1) >> 1,
        s => (a + s as isize - 1) / s as isize,
    };
    let lo = if x0 < 0 { div_ceil(-x0) } else { 0 };
    let hi = if x0 >= len as isize {
        0
    } else {
        div_ceil(len as isize - x0)
    };
    let lo = (lo as usize).min(run);
    (lo, (hi as usize).clamp(lo, run))
}

/// `dst[l] = plane[at[l]]` where `at[l] < plane.len()`, else 0, for every
/// `l` of `dst` (`at` is at least as long).
#[inline]
pub(crate) fn gather(isa: Isa, dst: &mut [f32], plane: &[f32], at: &[u32]) {
    assert!(at.len() >= dst.len(), "an offset for every value");
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && plane.len() <= i32::MAX as usize {
        // SAFETY: AVX-512F is present (the weights were packed for it); `at`
        // covers `dst`, and `plane` is short enough for 32-bit offsets.
        unsafe { x86::gather(dst, plane, at) };
        return;
    }
    let _ = isa;
    gather_portable(dst, plane, at);
}

/// [`gather`] without SIMD.
pub(crate) fn gather_portable(dst: &mut [f32], plane: &[f32], at: &[u32]) {
    for (v, &at) in dst.iter_mut().zip(at) {
        *v = plane.get(at as usize).copied().unwrap_or(0.0);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// The first `n` lanes (`n <= 16`).
    fn first(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    /// [`super::strided_run`], 16 values at a time: zeros stored by masked
    /// stores, and the in-bounds part by loads masked to the values it needs.
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `stride` is 1 or 2.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn strided_run(dst: &mut [f32], row: &[f32], x0: isize, stride: usize) {
        let (lo, hi) = super::in_bounds(x0, stride, row.len(), dst.len());
        let out = dst.as_mut_ptr();
        let zero = _mm512_setzero_ps();
        for (from, to) in [(0, lo), (hi, dst.len())] {
            for t0 in (from..to).step_by(16) {
                // SAFETY: lanes `t0 .. min(t0 + 16, to)` of `dst`, `to <= dst.len()`.
                unsafe { _mm512_mask_storeu_ps(out.add(t0), first((to - t0).min(16)), zero) };
            }
        }
        if hi == lo {
            return;
        }
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        // `in_bounds` put `x0 + t * stride` inside `row` for `t` in `lo..hi`.
        let src = row[(x0 + (lo * stride) as isize) as usize..].as_ptr();
        for t0 in (lo..hi).step_by(16) {
            let n = (hi - t0).min(16);
            // SAFETY: the loads read `row` from `x0 + t0 * stride`, the
            // `(n - 1) * stride + 1` values the `n` outputs need, all inside
            // `row` (a masked-off lane is never touched, so the second
            // load's address may lie past it); the store writes `dst[t0..t0 + n]`.
            unsafe {
                let p = src.add((t0 - lo) * stride);
                let v = if stride == 1 {
                    _mm512_maskz_loadu_ps(first(n), p)
                } else {
                    let need = 2 * n - 1;
                    let a = _mm512_maskz_loadu_ps(first(need.min(16)), p);
                    let b =
                        _mm512_maskz_loadu_ps(first(need.saturating_sub(16)), p.wrapping_add(16));
                    _mm512_permutex2var_ps(a, even, b)
                };
                _mm512_mask_storeu_ps(out.add(t0), first(n), v);
            }
        }
    }

    /// [`super::gather`], 16 values a gather instruction, masked to the
    /// offsets inside `plane`.
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `at.len() >= dst.len()` and
    /// `plane.len() <= i32::MAX`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gather(dst: &mut [f32], plane: &[f32], at: &[u32]) {
        let len = _mm512_set1_epi32(plane.len() as i32);
        for l0 in (0..dst.len()).step_by(16) {
            let lanes = first((dst.len() - l0).min(16));
            // SAFETY: the offsets' load and the store touch the lanes below
            // `dst.len() <= at.len()`; the gather reads only lanes whose
            // offset is below `plane.len()`, as an unsigned compare finds.
            unsafe {
                let at = _mm512_maskz_loadu_epi32(lanes, at.as_ptr().add(l0).cast());
                let valid = _mm512_mask_cmplt_epu32_mask(lanes, at, len);
                let v =
                    _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), valid, at, plane.as_ptr());
                _mm512_mask_storeu_ps(dst.as_mut_ptr().add(l0), lanes, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every instruction set against the direct definition: runs that start
    /// and end in the padding on either side, inside, or miss the row.
    #[test]
    fn strided_runs_match_their_definition() {
        let row: Vec<f32> = (0..37).map(|i| i as f32 + 0.5).collect();
        for isa in Isa::supported() {
            for stride in 1..=3 {
                for len in [0, 1, 5, 15, 16, 17, 31, 32, 33, 40] {
                    for x0 in [-40, -17, -3, -1, 0, 1, 2, 7, 20, 36, 37, 50] {
                        let mut got = vec![f32::NAN; len];
                        strided_run(isa, &mut got, &row, x0, stride);
                        let want: Vec<f32> = (0..len)
                            .map(|t| {
                                let at = x0 + (t * stride) as isize;
                                usize::try_from(at)
                                    .ok()
                                    .and_then(|at| row.get(at))
                                    .copied()
                                    .unwrap_or(0.0)
                            })
                            .collect();
                        assert_eq!(got, want, "{isa:?} stride {stride} len {len} x0 {x0}");
                    }
                }
            }
        }
    }

    #[test]
    fn gathers_match_their_definition() {
        let plane: Vec<f32> = (0..50).map(|i| i as f32 - 7.25).collect();
        let at: Vec<u32> = (0..40u32)
            .map(|l| match l % 5 {
                0 => u32::MAX,
                1 => 50,
                _ => (l * 7) % 50,
            })
            .collect();
        for isa in Isa::supported() {
            for len in [0, 1, 15, 16, 17, 32, 40] {
                let mut got = vec![f32::NAN; len];
                gather(isa, &mut got, &plane, &at);
                let want: Vec<f32> = at[..len]
                    .iter()
                    .map(|&a| plane.get(a as usize).copied().unwrap_or(0.0))
                    .collect();
                assert_eq!(got, want, "{isa:?} len {len}");
            }
        }
    }
}
