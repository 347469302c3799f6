//! GEMM micro-kernels: one `MR x NR` tile of `C` from packed panels.
//!
//! Every kernel computes, for `i < MR` and the tile's first `cols` columns
//! `j < cols <= NR`,
//!
//! ```text
//! c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0) + sum over k < kc of a[k * MR + i] * b[k * NR + j]
//! ```
//!
//! with `k` ascending, so an element's rounding never depends on threading,
//! and then, given a [`TileEpilogue`], adds `bias[i]` and row `i` of the
//! residual and clamps at zero in registers, before the tile's one store.
//! Columns from `cols` on are neither read nor written (the SIMD kernels
//! mask them), so the last, partial tile of a row needs no copy.
//! `a` is an `MR`-row panel of the packed weights and `b` an `NR`-column
//! panel of the packed activations (see `gemm.rs`).
//!
//! A row of tiles rarely ends on a whole tile: a 7x7 image is 49 columns,
//! which two 32-column tiles would cover with 15 columns of padding. So the
//! AVX-512 kernel runs a tile of at most 16 columns on half its registers,
//! at half the cost, and the last few columns of a row ride along with the
//! row's last tile ([`MicroKernel::run_extra`]): one more multiply-add per
//! step and column, on the weights the tile has already loaded. 49 columns
//! cost 32 + 16 + 1, not 64; with the 48-column kernel (`Avx512Wide`, for
//! rows that end a column or two past a multiple of 48), 48 + 1. Rows that
//! make no whole panel, and kernels without extra columns, take those
//! columns through [`MicroKernel::run_thin`] instead, one column across
//! several row panels.

use super::gemm::{KC, MAX_NR};

/// A full tile's epilogue, as raw pointers into the caller's slices.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TileEpilogue {
    /// `MR` values, or null.
    pub bias: *const f32,
    /// Row 0 of the tile's residual (`cols` floats a row), rows at stride
    /// `residual_ld`; or null.
    pub residual: *const f32,
    pub residual_ld: usize,
    /// Rows of the tile that have a residual.
    pub residual_rows: usize,
    pub relu: bool,
}

impl TileEpilogue {
    /// Bias of row `i`, or zero.
    ///
    /// # Safety
    /// A non-null `bias` holds more than `i` values.
    unsafe fn bias(&self, i: usize) -> f32 {
        if self.bias.is_null() {
            0.0
        } else {
            // SAFETY: the caller's contract.
            unsafe { *self.bias.add(i) }
        }
    }

    /// Residual row `i`, if it has one.
    ///
    /// # Safety
    /// A non-null `residual` is valid for `residual_rows` rows of `NR` floats
    /// at stride `residual_ld`.
    unsafe fn residual_row(&self, i: usize) -> Option<*const f32> {
        if self.residual.is_null() || i >= self.residual_rows {
            return None;
        }
        // SAFETY: `i < residual_rows`, so the row is inside the residual.
        Some(unsafe { self.residual.add(i * self.residual_ld) })
    }
}

/// A micro-kernel and its tile shape.
pub(crate) trait MicroKernel {
    /// Rows of the tile (output channels).
    const MR: usize;
    /// Columns of the tile (output pixels).
    const NR: usize;

    /// Computes the first `cols` columns (`1..=NR`) of one tile, as the
    /// module documents.
    ///
    /// # Safety
    /// `a` must be valid for `kc * MR` reads, `b` for `kc * NR` reads, `c`
    /// for reads and writes of `MR` rows of `cols` elements at stride `ldc`,
    /// and `epilogue` as its methods require; the CPU must support the
    /// kernel's instruction set.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        accumulate: bool,
        epilogue: Option<&TileEpilogue>,
    );

    /// As [`MicroKernel::run`], with row `k` of `b` read where it lies, at
    /// `b + rows[k]`, not packed at `b + k * NR`: a direct convolution's
    /// patches, which need no packing. By default the rows are copied into
    /// a packed panel first.
    ///
    /// # Safety
    /// As [`MicroKernel::run`], with `kc <= KC`, `rows` valid for `kc` reads
    /// and each `b.offset(rows[k])` for `NR` reads.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_rows(
        kc: usize,
        a: *const f32,
        b: *const f32,
        rows: *const isize,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        accumulate: bool,
        epilogue: Option<&TileEpilogue>,
    ) {
        let mut panel = [0f32; KC * MAX_NR];
        for (k, dst) in panel.chunks_exact_mut(Self::NR).take(kc).enumerate() {
            // SAFETY: row `k < kc` is valid for `NR` reads (the caller's contract).
            dst.copy_from_slice(unsafe {
                std::slice::from_raw_parts(b.offset(*rows.add(k)), Self::NR)
            });
        }
        // SAFETY: the panel holds `kc` packed rows; the rest is the caller's contract.
        unsafe { Self::run(kc, a, panel.as_ptr(), c, ldc, cols, accumulate, epilogue) }
    }

    /// Most columns [`MicroKernel::run_extra`] adds to a tile (0: none).
    const EXTRA: usize = 0;

    /// As [`MicroKernel::run`], and `extra` (`1..=EXTRA`) more columns of
    /// `C` after the tile's `cols`, from `bx` (row `k` at `bx + k * NR`):
    /// the few columns left past a row's last tile, computed while the
    /// tile's weights are in registers rather than by another pass over
    /// them ([`MicroKernel::run_thin`]). Those columns get exactly what
    /// `run_thin` and the epilogue would give them.
    ///
    /// # Safety
    /// As [`MicroKernel::run`], with `bx` valid for `kc * NR` reads and `c`
    /// for `cols + extra` columns; only for kernels with `EXTRA > 0`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_extra(
        _kc: usize,
        _a: *const f32,
        _b: *const f32,
        _bx: *const f32,
        _extra: usize,
        _c: *mut f32,
        _ldc: usize,
        _cols: usize,
        _accumulate: bool,
        _epilogue: Option<&TileEpilogue>,
    ) {
        unreachable!("a kernel without extra columns")
    }

    /// Whether [`MicroKernel::run_strided`] reads `B` where it lies.
    const STRIDED: bool = false;

    /// As [`MicroKernel::run`], or with `extra > 0` [`MicroKernel::run_extra`],
    /// with row `k` of `B` read where it lies, at `b + k * ldb`: the tile's
    /// `cols` columns, then the `extra` columns after them. Only for kernels
    /// with [`MicroKernel::STRIDED`].
    ///
    /// # Safety
    /// As [`MicroKernel::run_extra`], with each of the `kc` rows valid for
    /// `cols.next_multiple_of(16) + extra` reads (whole vectors: the rows
    /// are read unmasked), and `extra <= EXTRA`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_strided(
        _kc: usize,
        _a: *const f32,
        _b: *const f32,
        _ldb: usize,
        _extra: usize,
        _c: *mut f32,
        _ldc: usize,
        _cols: usize,
        _accumulate: bool,
        _epilogue: Option<&TileEpilogue>,
    ) {
        unreachable!("a kernel that reads only packed panels")
    }

    /// Whether a tile of at most `NR / 2` columns costs half a tile.
    const HALF_TILES: bool = false;

    /// Widest remainder of a row of tiles, in columns, that goes to
    /// [`MicroKernel::run_thin`] rather than to a tile (0: none does).
    const THIN: usize = 0;

    /// Computes `cols` (`1..=THIN`) whole columns of `C` for `rows` rows
    /// (`1..=THIN_PANELS * MR`), one column at a time across the row panels
    /// at once: a column costs a multiply-add per row panel and step, where
    /// even half a tile costs eight. Writes `c[i * ldc + j] = (accumulate ?
    /// c[i * ldc + j] : 0) + sum over k < kc of a[(i / MR) * panel_len + k *
    /// MR + i % MR] * b[k * NR + j]`, `k` ascending; no epilogue.
    ///
    /// # Safety
    /// `a` must be valid for reads of `rows.div_ceil(MR)` panels of `kc * MR`
    /// floats at stride `panel_len`, `b` for `kc * NR` reads, `c` for reads
    /// and writes of `rows` rows of `cols` elements at stride `ldc`; the CPU
    /// must support the kernel's instruction set.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_thin(
        kc: usize,
        a: *const f32,
        panel_len: usize,
        b: *const f32,
        cols: usize,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        accumulate: bool,
    ) {
        for j in 0..cols {
            for i in 0..rows {
                let a = a.wrapping_add(i / Self::MR * panel_len + i % Self::MR);
                let mut sum = 0f32;
                for k in 0..kc {
                    // SAFETY: `k < kc` and `i < rows`: inside the panels (the caller's contract).
                    sum += unsafe { *a.add(k * Self::MR) * *b.add(k * Self::NR + j) };
                }
                // SAFETY: `(i, j)` lies in the caller's `rows x cols` block.
                unsafe {
                    let out = c.add(i * ldc + j);
                    *out = if accumulate { *out + sum } else { sum };
                }
            }
        }
    }
}

/// Most row panels one call of [`MicroKernel::run_thin`] takes.
pub(crate) const THIN_PANELS: usize = 8;

/// Plain Rust, any CPU: the reference every SIMD kernel is tested against.
pub(crate) struct Portable;

impl MicroKernel for Portable {
    const MR: usize = 4;
    const NR: usize = 16;
    const THIN: usize = 3;

    unsafe fn run(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        accumulate: bool,
        epilogue: Option<&TileEpilogue>,
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
                    *x += ai * bj;
                }
            }
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let row = &mut row[..cols];
            // SAFETY: row `i < MR` of `c` holds `cols` elements (see the trait).
            let out = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), cols) };
            if accumulate {
                row.iter_mut().zip(out.iter()).for_each(|(x, o)| *x += o);
            }
            if let Some(e) = epilogue {
                // SAFETY: the caller guarantees the epilogue's extents (see the trait).
                let (bias, residual) = unsafe { (e.bias(i), e.residual_row(i)) };
                row.iter_mut().for_each(|x| *x += bias);
                if let Some(r) = residual {
                    // SAFETY: as above: a residual row holds `cols` floats.
                    let r = unsafe { std::slice::from_raw_parts(r, cols) };
                    row.iter_mut().zip(r).for_each(|(x, r)| *x += r);
                }
                if e.relu {
                    row.iter_mut().for_each(|x| *x = x.max(0.0));
                }
            }
            out.copy_from_slice(row);
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512, Avx512Wide};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MicroKernel, TileEpilogue};
    use std::arch::x86_64::*;

    /// AVX-512F: 8 rows x `16 V` columns, `8 V` zmm accumulators (8 for a
    /// tile of at most 16 columns, 16 for at most 32); thin columns 8 rows
    /// a ymm accumulator.
    pub(crate) struct Avx512Tiles<const V: usize>;

    /// 8 x 32: AVX-512's kernel, on every layer.
    pub(crate) type Avx512 = Avx512Tiles<2>;

    /// 8 x 48, for rows of tiles that would end on a half tile of
    /// [`Avx512`]'s but end a column or two past a whole tile of these (a
    /// 7x7 image's 49 columns: 48 + 1, not 32 + 16 + 1). The same weights'
    /// panels as [`Avx512`]'s.
    pub(crate) type Avx512Wide = Avx512Tiles<3>;

    impl<const V: usize> MicroKernel for Avx512Tiles<V> {
        const MR: usize = 8;
        const NR: usize = 16 * V;
        const HALF_TILES: bool = V == 2;
        // Beside 24 accumulators, registers for two extra columns' sums.
        const THIN: usize = if V == 2 { 7 } else { 2 };
        const EXTRA: usize = Self::THIN;

        unsafe fn run(
            kc: usize,
            a: *const f32,
            b: *const f32,
            c: *mut f32,
            ldc: usize,
            cols: usize,
            accumulate: bool,
            epilogue: Option<&TileEpilogue>,
        ) {
            let (b, bx) = (Panel::<V>(b), None::<Panel<V>>);
            // SAFETY: the caller guarantees the CPU supports AVX-512F, and the extents.
            unsafe { avx512_tile::<V, 0>(kc, a, b, bx, c, ldc, cols, accumulate, epilogue) }
        }

        unsafe fn run_extra(
            kc: usize,
            a: *const f32,
            b: *const f32,
            bx: *const f32,
            extra: usize,
            c: *mut f32,
            ldc: usize,
            cols: usize,
            accumulate: bool,
            epilogue: Option<&TileEpilogue>,
        ) {
            let (b, bx) = (Panel::<V>(b), Panel::<V>(bx));
            // SAFETY: the caller guarantees the CPU supports AVX-512F, and the
            // extents; `extra <= EXTRA`.
            unsafe {
                avx512_tile_extra::<V>(kc, a, (b, bx, extra), c, ldc, cols, accumulate, epilogue)
            }
        }

        const STRIDED: bool = true;

        unsafe fn run_strided(
            kc: usize,
            a: *const f32,
            b: *const f32,
            ldb: usize,
            extra: usize,
            c: *mut f32,
            ldc: usize,
            cols: usize,
            accumulate: bool,
            epilogue: Option<&TileEpilogue>,
        ) {
            let rows = Strided { b, ld: ldb };
            let bx = Strided {
                b: b.wrapping_add(cols),
                ld: ldb,
            };
            // SAFETY: the caller guarantees the CPU supports AVX-512F, and the
            // extents; `extra <= EXTRA`.
            unsafe {
                avx512_tile_extra::<V>(kc, a, (rows, bx, extra), c, ldc, cols, accumulate, epilogue)
            }
        }

        unsafe fn run_rows(
            kc: usize,
            a: *const f32,
            b: *const f32,
            rows: *const isize,
            c: *mut f32,
            ldc: usize,
            cols: usize,
            accumulate: bool,
            epilogue: Option<&TileEpilogue>,
        ) {
            let (b, bx) = (InPlace { b, rows }, None::<Panel<V>>);
            // SAFETY: the caller guarantees the CPU supports AVX-512F, and the extents.
            unsafe { avx512_tile::<V, 0>(kc, a, b, bx, c, ldc, cols, accumulate, epilogue) }
        }

        unsafe fn run_thin(
            kc: usize,
            a: *const f32,
            panel_len: usize,
            b: *const f32,
            cols: usize,
            c: *mut f32,
            ldc: usize,
            rows: usize,
            accumulate: bool,
        ) {
            let thin = Thin {
                kc,
                a,
                panel_len,
                b,
                nr: Self::NR,
                c,
                ldc,
                rows,
                accumulate,
            };
            for j in 0..cols {
                // SAFETY: the caller guarantees the CPU and the extents; `j < cols`.
                unsafe {
                    match rows.div_ceil(8) {
                        1 => avx512_column::<1>(&thin, j),
                        2 => avx512_column::<2>(&thin, j),
                        3 => avx512_column::<3>(&thin, j),
                        4 => avx512_column::<4>(&thin, j),
                        5 => avx512_column::<5>(&thin, j),
                        6 => avx512_column::<6>(&thin, j),
                        7 => avx512_column::<7>(&thin, j),
                        _ => avx512_column::<8>(&thin, j),
                    }
                }
            }
        }
    }

    /// The arguments of one [`MicroKernel::run_thin`] call.
    struct Thin {
        kc: usize,
        a: *const f32,
        panel_len: usize,
        b: *const f32,
        /// Floats in a row of `b`'s panel.
        nr: usize,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        accumulate: bool,
    }

    /// Column `j` of a thin block across `P` row panels of 8, one 8-lane
    /// accumulator each, so `P` multiply-adds are in flight per step.
    ///
    /// # Safety
    /// As [`MicroKernel::run_thin`], with `P == rows.div_ceil(8)` and `j < cols`.
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn avx512_column<const P: usize>(t: &Thin, j: usize) {
        let mut acc = [_mm256_setzero_ps(); P];
        for k in 0..t.kc {
            // SAFETY: `k < kc` and `p < P`: inside `b`'s panel and `a`'s `P` panels.
            unsafe {
                let bk = _mm256_set1_ps(*t.b.add(k * t.nr + j));
                for (p, acc) in acc.iter_mut().enumerate() {
                    let a = _mm256_loadu_ps(t.a.add(p * t.panel_len + k * 8));
                    *acc = _mm256_fmadd_ps(a, bk, *acc);
                }
            }
        }
        let mut sums = [[0f32; 8]; P];
        for (sums, acc) in sums.iter_mut().zip(acc) {
            // SAFETY: `sums` holds 8 floats.
            unsafe { _mm256_storeu_ps(sums.as_mut_ptr(), acc) };
        }
        for (i, &sum) in sums.as_flattened().iter().take(t.rows).enumerate() {
            // SAFETY: `(i, j)` lies in the caller's `rows x cols` block.
            unsafe {
                let out = t.c.add(i * t.ldc + j);
                *out = if t.accumulate { *out + sum } else { sum };
            }
        }
    }

    /// Where the AVX-512 kernel finds row `k` of its `B` panel.
    trait Rows: Copy {
        /// Row `k`'s first float.
        ///
        /// # Safety
        /// `k` is below the panel's `kc`.
        unsafe fn row(self, k: usize) -> *const f32;
    }

    /// A packed panel of `V` vectors a row: row `k` at `k * 16 V`.
    #[derive(Clone, Copy)]
    struct Panel<const V: usize>(*const f32);

    impl<const V: usize> Rows for Panel<V> {
        #[inline(always)]
        unsafe fn row(self, k: usize) -> *const f32 {
            // SAFETY: `k < kc`, inside the panel of `kc * 16 V` floats.
            unsafe { self.0.add(k * 16 * V) }
        }
    }

    /// Rows where they lie: row `k` at `b + rows[k]`.
    #[derive(Clone, Copy)]
    struct InPlace {
        b: *const f32,
        rows: *const isize,
    }

    impl Rows for InPlace {
        #[inline(always)]
        unsafe fn row(self, k: usize) -> *const f32 {
            // SAFETY: `k < kc`, so `rows[k]` is valid and so is the row it gives.
            unsafe { self.b.offset(*self.rows.add(k)) }
        }
    }

    /// Rows where they lie, `ld` apart: row `k` at `b + k * ld`.
    #[derive(Clone, Copy)]
    struct Strided {
        b: *const f32,
        ld: usize,
    }

    impl Rows for Strided {
        #[inline(always)]
        unsafe fn row(self, k: usize) -> *const f32 {
            // SAFETY: `k < kc`, and the caller vouches for `kc` rows.
            unsafe { self.b.add(k * self.ld) }
        }
    }

    /// [`avx512_tile`] with `extra` (`0..=7`) columns from `bx`.
    ///
    /// # Safety
    /// As [`avx512_tile`].
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn avx512_tile_extra<const V: usize>(
        kc: usize,
        a: *const f32,
        (b, bx, extra): (impl Rows, impl Rows, usize),
        c: *mut f32,
        ldc: usize,
        cols: usize,
        accumulate: bool,
        epilogue: Option<&TileEpilogue>,
    ) {
        let bx = Some(bx);
        // SAFETY: the caller's contract.
        unsafe {
            match extra {
                0 => avx512_tile::<V, 0>(kc, a, b, bx, c, ldc, cols, accumulate, epilogue),
                1 => avx512_tile::<V, 1>(kc, a, b, bx, c, ldc, cols, accumulate, epilogue),
                2 => avx512_tile::<V, 2>(kc, a, b, bx, c, ldc, cols, accumulate, epilogue),
                3 => avx512_tile::<V, 3>(kc, a, b, bx, c, ldc, cols, accumulate, epilogue),
                4 => avx512_tile::<V, 4>(kc, a, b, bx, c, ldc, cols, accumulate, epilogue),
                5 => avx512_tile::<V, 5>(kc, a, b, bx, c, ldc, cols, accumulate, epilogue),
                6 => avx512_tile::<V, 6>(kc, a, b, bx, c, ldc, cols, accumulate, epilogue),
                _ => avx512_tile::<V, 7>(kc, a, b, bx, c, ldc, cols, accumulate, epilogue),
            }
        }
    }

    /// The 8 x `16 V` tile (only its first vectors' worth for fewer
    /// columns: a tile of at most 16 columns costs a `V`th), and `E` extra
    /// columns from `bx` after its `cols`, one 8-row accumulator each.
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn avx512_tile<const V: usize, const E: usize>(
        kc: usize,
        a: *const f32,
        b: impl Rows,
        bx: Option<impl Rows>,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        accumulate: bool,
        epilogue: Option<&TileEpilogue>,
    ) {
        let mut acc = [[_mm512_setzero_ps(); V]; 8];
        let mut extra = [_mm256_setzero_ps(); E];
        // SAFETY: the caller's extents, as `avx512_steps` requires.
        unsafe {
            match cols.div_ceil(16) {
                1 => avx512_steps::<V, 1, E>(kc, a, b, bx, &mut acc, &mut extra),
                2 if V > 2 => avx512_steps::<V, 2, E>(kc, a, b, bx, &mut acc, &mut extra),
                _ => avx512_steps::<V, V, E>(kc, a, b, bx, &mut acc, &mut extra),
            }
        }
        // Lanes of each vector that hold one of the first `cols` columns;
        // masked lanes are neither loaded nor stored.
        let masks: [__mmask16; V] = std::array::from_fn(|h| {
            ((1u32 << cols.saturating_sub(16 * h).min(16)) - 1) as __mmask16
        });
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: row `i < 8` of `c` holds `cols` floats, and the masks
            // touch no others; the epilogue's extents are the caller's contract.
            unsafe {
                let out = c.add(i * ldc);
                let mut v = *row;
                if accumulate {
                    for (h, v) in v.iter_mut().enumerate() {
                        *v = _mm512_add_ps(*v, _mm512_maskz_loadu_ps(masks[h], out.add(16 * h)));
                    }
                }
                if let Some(e) = epilogue {
                    let bias = _mm512_set1_ps(e.bias(i));
                    let residual = e.residual_row(i);
                    for (h, v) in v.iter_mut().enumerate() {
                        *v = _mm512_add_ps(*v, bias);
                        if let Some(r) = residual {
                            *v = _mm512_add_ps(*v, _mm512_maskz_loadu_ps(masks[h], r.add(16 * h)));
                        }
                        if e.relu {
                            *v = _mm512_max_ps(*v, _mm512_setzero_ps());
                        }
                    }
                }
                for (h, v) in v.into_iter().enumerate() {
                    _mm512_mask_storeu_ps(out.add(16 * h), masks[h], v);
                }
            }
        }
        if E > 0 {
            // The extra columns element by element, as `run_thin` and the
            // epilogue's `apply` would: sum, then the old value, the bias,
            // the residual, the clamp.
            let mut sums = [[0f32; 8]; E];
            for (sums, extra) in sums.iter_mut().zip(extra) {
                // SAFETY: `sums` holds 8 floats.
                unsafe { _mm256_storeu_ps(sums.as_mut_ptr(), extra) };
            }
            for (j, sums) in sums.iter().enumerate() {
                for (i, &sum) in sums.iter().enumerate() {
                    // SAFETY: column `cols + j` of row `i` lies in `c` (the
                    // caller's contract), and so in the residual's row.
                    unsafe {
                        let out = c.add(i * ldc + cols + j);
                        let mut v = if accumulate { *out + sum } else { sum };
                        if let Some(e) = epilogue {
                            v += e.bias(i);
                            if let Some(r) = e.residual_row(i) {
                                v += *r.add(cols + j);
                            }
                            if e.relu {
                                v = v.max(0.0);
                            }
                        }
                        *out = v;
                    }
                }
            }
        }
    }

    /// `acc[i][h] += a[k * 8 + i] * row(k)[16 h ..][..16]` for `k < kc`
    /// in ascending order, for the tile's first `H` of `V` vectors.
    ///
    /// # Safety
    /// `a` is valid for `kc * 8` reads and `b` gives `kc` rows valid for
    /// `16 H` reads each; the CPU supports AVX-512F.
    #[target_feature(enable = "avx512f,fma")]
    #[inline]
    unsafe fn avx512_steps<const V: usize, const H: usize, const E: usize>(
        kc: usize,
        a: *const f32,
        b: impl Rows,
        bx: Option<impl Rows>,
        acc: &mut [[__m512; V]; 8],
        extra: &mut [__m256; E],
    ) {
        for k in 0..kc {
            // SAFETY: `k < kc`, so these reads stay inside `b`'s rows and `a`'s `kc * 8` floats.
            unsafe {
                // At small batches each weight is used for only a few panels
                // of columns, so the panel streams from memory: ask for it
                // 128 steps (4 KiB) ahead, a cache line every other step. A
                // prefetch never faults, so passing the panel's end is harmless.
                if k % 2 == 0 {
                    _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add((k + 128) * 8).cast());
                }
                let (row, mut bh) = (b.row(k), [_mm512_setzero_ps(); V]);
                for (h, bh) in bh.iter_mut().enumerate().take(H) {
                    *bh = _mm512_loadu_ps(row.add(16 * h));
                }
                let a = a.add(k * 8);
                for (i, row) in acc.iter_mut().enumerate() {
                    let ai = _mm512_set1_ps(*a.add(i));
                    for h in 0..H {
                        row[h] = _mm512_fmadd_ps(ai, bh[h], row[h]);
                    }
                }
                // The extra columns: the step's eight weights as one vector,
                // times the column's value, as `avx512_column` does.
                if let (true, Some(bx)) = (E > 0, bx) {
                    let (column, rows) = (bx.row(k), _mm256_loadu_ps(a));
                    for (j, extra) in extra.iter_mut().enumerate() {
                        *extra = _mm256_fmadd_ps(rows, _mm256_set1_ps(*column.add(j)), *extra);
                    }
                }
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
            cols: usize,
            accumulate: bool,
            epilogue: Option<&TileEpilogue>,
        ) {
            // SAFETY: the caller guarantees the CPU supports AVX2 and FMA, and the extents.
            unsafe { avx2_6x16(kc, a, b, c, ldc, cols, accumulate, epilogue) }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn avx2_6x16(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        accumulate: bool,
        epilogue: Option<&TileEpilogue>,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; 6];
        for k in 0..kc {
            // SAFETY: `k < kc`, so these reads stay inside the panels of `kc * 16` and `kc * 6` floats.
            unsafe {
                // As in the AVX-512 kernel: a line of the weights' panel every
                // other step (48 bytes), 128 steps ahead.
                if k % 2 == 0 {
                    _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add((k + 128) * 6).cast());
                }
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
        // Lanes of the two halves that hold one of the first `cols` columns
        // (all ones where they do); masked lanes are neither loaded nor stored.
        let half = |from: i32| {
            let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            _mm256_cmpgt_epi32(_mm256_set1_epi32(cols as i32 - from), lanes)
        };
        let (m0, m1) = (half(0), half(8));
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: row `i < 6` of `c` holds `cols` floats, and the masks
            // touch no others; the epilogue's extents are the caller's contract.
            unsafe {
                let out = c.add(i * ldc);
                let (mut lo, mut hi) = (row[0], row[1]);
                if accumulate {
                    lo = _mm256_add_ps(lo, _mm256_maskload_ps(out, m0));
                    hi = _mm256_add_ps(hi, _mm256_maskload_ps(out.add(8), m1));
                }
                if let Some(e) = epilogue {
                    let bias = _mm256_set1_ps(e.bias(i));
                    (lo, hi) = (_mm256_add_ps(lo, bias), _mm256_add_ps(hi, bias));
                    if let Some(r) = e.residual_row(i) {
                        lo = _mm256_add_ps(lo, _mm256_maskload_ps(r, m0));
                        hi = _mm256_add_ps(hi, _mm256_maskload_ps(r.add(8), m1));
                    }
                    if e.relu {
                        let zero = _mm256_setzero_ps();
                        (lo, hi) = (_mm256_max_ps(lo, zero), _mm256_max_ps(hi, zero));
                    }
                }
                _mm256_maskstore_ps(out, m0, lo);
                _mm256_maskstore_ps(out.add(8), m1, hi);
            }
        }
    }
}
