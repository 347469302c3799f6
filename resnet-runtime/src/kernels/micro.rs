//! GEMM micro-kernels: one `MR x NR` tile of `C` from packed panels.
//!
//! Every kernel computes, for `i < MR`, `j < NR`,
//!
//! ```text
//! c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0) + sum over k < kc of a[k * MR + i] * b[k * NR + j]
//! ```
//!
//! with `k` ascending, so an element's rounding never depends on threading.
//! `a` is an `MR`-row panel of the packed weights and `b` an `NR`-column
//! panel of the packed activations (see `gemm.rs`).

/// A micro-kernel and its tile shape.
pub(crate) trait MicroKernel {
    /// Rows of the tile (output channels).
    const MR: usize;
    /// Columns of the tile (output pixels).
    const NR: usize;

    /// Computes one full tile, as the module documents.
    ///
    /// # Safety
    /// `a` must be valid for `kc * MR` reads, `b` for `kc * NR` reads, and
    /// `c` for reads and writes of `MR` rows of `NR` elements at stride `ldc`;
    /// the CPU must support the kernel's instruction set.
    unsafe fn run(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    );
}

/// Plain Rust, any CPU: the reference every SIMD kernel is tested against.
pub(crate) struct Portable;

impl MicroKernel for Portable {
    const MR: usize = 4;
    const NR: usize = 16;

    unsafe fn run(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        const MR: usize = Portable::MR;
        const NR: usize = Portable::NR;
        // SAFETY: the caller guarantees the panel lengths (see the trait).
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts(a, kc * MR),
                std::slice::from_raw_parts(b, kc * NR),
            )
        };
        let mut acc = [[0f32; NR]; MR];
        for (a, b) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
            for (row, &ai) in acc.iter_mut().zip(a) {
                for (x, &bj) in row.iter_mut().zip(b) {
                    *x = ai.mul_add(bj, *x);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: row `i < MR` of `c` holds `NR` elements (see the trait).
            let out = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), NR) };
            for (o, &x) in out.iter_mut().zip(row) {
                *o = if accumulate { *o + x } else { x };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::MicroKernel;
    use std::arch::x86_64::*;

    /// AVX-512F: 8 rows x 32 columns, 16 zmm accumulators.
    pub(crate) struct Avx512;

    impl MicroKernel for Avx512 {
        const MR: usize = 8;
        const NR: usize = 32;

        unsafe fn run(
            kc: usize,
            a: *const f32,
            b: *const f32,
            c: *mut f32,
            ldc: usize,
            accumulate: bool,
        ) {
            // SAFETY: the caller guarantees the CPU supports AVX-512F and the panel lengths.
            unsafe { avx512_8x32(kc, a, b, c, ldc, accumulate) }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_8x32(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; 8];
        for k in 0..kc {
            // SAFETY: `k < kc`, so these reads stay inside the panels of `kc * 32` and `kc * 8` floats.
            unsafe {
                let b0 = _mm512_loadu_ps(b.add(k * 32));
                let b1 = _mm512_loadu_ps(b.add(k * 32 + 16));
                let a = a.add(k * 8);
                for (i, row) in acc.iter_mut().enumerate() {
                    let ai = _mm512_set1_ps(*a.add(i));
                    row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
                    row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: row `i < 8` of `c` holds 32 floats.
            unsafe {
                let out = c.add(i * ldc);
                let (mut lo, mut hi) = (row[0], row[1]);
                if accumulate {
                    lo = _mm512_add_ps(lo, _mm512_loadu_ps(out));
                    hi = _mm512_add_ps(hi, _mm512_loadu_ps(out.add(16)));
                }
                _mm512_storeu_ps(out, lo);
                _mm512_storeu_ps(out.add(16), hi);
            }
        }
    }

    /// AVX2 + FMA: 6 rows x 16 columns, 12 ymm accumulators.
    pub(crate) struct Avx2;

    impl MicroKernel for Avx2 {
        const MR: usize = 6;
        const NR: usize = 16;

        unsafe fn run(
            kc: usize,
            a: *const f32,
            b: *const f32,
            c: *mut f32,
            ldc: usize,
            accumulate: bool,
        ) {
            // SAFETY: the caller guarantees the CPU supports AVX2 and FMA and the panel lengths.
            unsafe { avx2_6x16(kc, a, b, c, ldc, accumulate) }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_6x16(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; 6];
        for k in 0..kc {
            // SAFETY: `k < kc`, so these reads stay inside the panels of `kc * 16` and `kc * 6` floats.
            unsafe {
                let b0 = _mm256_loadu_ps(b.add(k * 16));
                let b1 = _mm256_loadu_ps(b.add(k * 16 + 8));
                let a = a.add(k * 6);
                for (i, row) in acc.iter_mut().enumerate() {
                    let ai = _mm256_set1_ps(*a.add(i));
                    row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: row `i < 6` of `c` holds 16 floats.
            unsafe {
                let out = c.add(i * ldc);
                let (mut lo, mut hi) = (row[0], row[1]);
                if accumulate {
                    lo = _mm256_add_ps(lo, _mm256_loadu_ps(out));
                    hi = _mm256_add_ps(hi, _mm256_loadu_ps(out.add(8)));
                }
                _mm256_storeu_ps(out, lo);
                _mm256_storeu_ps(out.add(8), hi);
            }
        }
    }
}
