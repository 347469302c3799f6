//! The transforms with AVX2, eight tiles a vector, where the portable code
//! runs loops of a run's few tiles (7 at 14x14) with strided loads and
//! stores. F(2x2): the whole input transform, the input rows split into
//! even and odd columns in registers, and the output transform whole.
//! F(4x4): the input transform's step down the rows straight from the
//! plane, and its step across the columns, each row's windows transposed
//! so that column `x` of every tile is one vector;
//! the whole output transform, its rows transposed back and stored straight
//! into the plane. The arithmetic is the portable code's,
//! operation for operation, so the results are the same to the bit.

use super::BLOCK;
use std::arch::x86_64::*;

/// Eight tiles' values, for [`super::at`] and [`super::bt`].
#[derive(Clone, Copy)]
pub(super) struct V8(pub(super) __m256);

// The operations run only where a `V8` exists: inside this module's
// AVX2 functions, which run where the CPU has AVX2 (`Winograd::new`
// checked). Inlined there, each is one instruction.
super::simd_lanes!(
    V8,
    _mm256_add_ps,
    _mm256_sub_ps,
    _mm256_mul_ps,
    _mm256_set1_ps
);

/// Row `I` of `A^T` on six columns of eight tiles.
#[target_feature(enable = "avx2")]
#[inline]
fn at<const I: usize>(m: [__m256; 6]) -> __m256 {
    super::at::<I, V8>(m.map(V8)).0
}

/// [`super::bt_down_f4`], eight columns a vector, with no copy of the
/// rows: plain loads inside them, masked ones across their ends, which
/// read only the columns inside.
///
/// # Safety
/// The CPU supports AVX2; `width + 7 <= 4 * BLOCK + 32`; rows are
/// shorter than `i32::MAX`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn bt_down_f4(
    rows: [Option<&[f32]>; 6],
    x0: isize,
    width: usize,
    r: &mut [[f32; 4 * BLOCK + 32]; 6],
) {
    assert!(width + 7 <= 4 * BLOCK + 32);
    // The input rows are one plane's: one length, one mask per step.
    let len = rows.iter().flatten().next().map_or(0, |row| row.len());
    assert!(rows.iter().flatten().all(|row| row.len() == len));
    for x in (0..width).step_by(8) {
        let from = x0 + x as isize;
        let inside = from >= 0 && from + 8 <= len as isize;
        let mask = column_mask(len, from);
        let d: [__m256; 6] = std::array::from_fn(|i| match rows[i] {
            // SAFETY: eight floats from `from` lie inside the row.
            Some(row) if inside => unsafe { _mm256_loadu_ps(row.as_ptr().offset(from)) },
            // SAFETY: the mask leaves only lanes inside the row.
            Some(row) => unsafe { _mm256_maskload_ps(row.as_ptr().wrapping_offset(from), mask) },
            None => _mm256_setzero_ps(),
        });
        let outs = bt_rows(d);
        for (r, v) in r.iter_mut().zip(outs) {
            // SAFETY: `x + 8 <= width + 7`, inside the row.
            unsafe { _mm256_storeu_ps(r[x..].as_mut_ptr(), v) };
        }
    }
}

/// [`super::at_down_f2`], eight tiles a vector.
///
/// # Safety
/// The CPU supports AVX2; `block` holds `15 * stride + nt` floats and
/// `nt <= BLOCK`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn at_down_f2(
    block: &[f32],
    stride: usize,
    nt: usize,
    s: &mut [[[f32; BLOCK + 8]; 4]; 6],
) {
    assert!(nt == 0 || (nt <= BLOCK && block.len() >= 15 * stride + nt));
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let (add, sub) = (_mm256_add_ps, _mm256_sub_ps);
    for g in (0..nt).step_by(8) {
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((nt - g) as i32), lanes);
        for (j, [s0, s1, ..]) in s[..4].iter_mut().enumerate() {
            // SAFETY: the masked loads read lanes below `nt - g` of
            // positions `4i + j`, inside `block`; the stores write
            // `s[j][i][g .. g + 8]`, `g + 8 <= BLOCK + 8`.
            unsafe {
                let [a, b, c, d] = [j, 4 + j, 8 + j, 12 + j]
                    .map(|xi| _mm256_maskload_ps(block.as_ptr().add(xi * stride + g), mask));
                _mm256_storeu_ps(s0[g..].as_mut_ptr(), add(add(a, b), c));
                _mm256_storeu_ps(s1[g..].as_mut_ptr(), sub(sub(b, c), d));
            }
        }
    }
}

/// [`super::at_down_f4`], eight tiles a vector.
///
/// # Safety
/// The CPU supports AVX2; `block` holds `35 * stride + nt` floats and
/// `nt <= BLOCK`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn at_down_f4(
    block: &[f32],
    stride: usize,
    nt: usize,
    s: &mut [[[f32; BLOCK + 8]; 4]; 6],
) {
    assert!(nt == 0 || (nt <= BLOCK && block.len() >= 35 * stride + nt));
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for g in (0..nt).step_by(8) {
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((nt - g) as i32), lanes);
        for (j, s) in s.iter_mut().enumerate() {
            // SAFETY: the masked loads read lanes below `nt - g` of
            // positions `6r + j`, inside `block`; the stores write
            // `s[i][g .. g + 8]`, `g + 8 <= BLOCK + 8`.
            unsafe {
                let m: [__m256; 6] = std::array::from_fn(|r| {
                    _mm256_maskload_ps(block.as_ptr().add((6 * r + j) * stride + g), mask)
                });
                _mm256_storeu_ps(s[0][g..].as_mut_ptr(), at::<0>(m));
                _mm256_storeu_ps(s[1][g..].as_mut_ptr(), at::<1>(m));
                _mm256_storeu_ps(s[2][g..].as_mut_ptr(), at::<2>(m));
                _mm256_storeu_ps(s[3][g..].as_mut_ptr(), at::<3>(m));
            }
        }
    }
}

/// [`super::at_across_f4`]: `row[4t + c] = at::<c>(columns[..][t]) + bias`.
///
/// # Safety
/// The CPU supports AVX2; `row.len() <= 4 * BLOCK`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn at_across_f4(columns: [&[f32; BLOCK + 8]; 6], bias: f32, row: &mut [f32]) {
    assert!(row.len() <= 4 * BLOCK);
    let (bias, lanes) = (
        _mm256_set1_ps(bias),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    for g in (0..row.len().div_ceil(4)).step_by(8) {
        // SAFETY: the loads read `columns[x][g .. g + 8]`, `g + 8 <= BLOCK + 8`;
        // the stores are masked to the lanes below `left`, inside `row`.
        unsafe {
            let m: [__m256; 6] = std::array::from_fn(|x| _mm256_loadu_ps(columns[x][g..].as_ptr()));
            let add = |v| _mm256_add_ps(v, bias);
            let (y0, y1) = (add(at::<0>(m)), add(at::<1>(m)));
            let (y2, y3) = (add(at::<2>(m)), add(at::<3>(m)));
            // Four rows of eight tiles into eight tiles of four, in order.
            let (a, b) = (_mm256_unpacklo_ps(y0, y1), _mm256_unpackhi_ps(y0, y1));
            let (c, d) = (_mm256_unpacklo_ps(y2, y3), _mm256_unpackhi_ps(y2, y3));
            let (e0, e1) = (
                _mm256_shuffle_ps::<0x44>(a, c),
                _mm256_shuffle_ps::<0xEE>(a, c),
            );
            let (e2, e3) = (
                _mm256_shuffle_ps::<0x44>(b, d),
                _mm256_shuffle_ps::<0xEE>(b, d),
            );
            let out = [
                _mm256_permute2f128_ps::<0x20>(e0, e1),
                _mm256_permute2f128_ps::<0x20>(e2, e3),
                _mm256_permute2f128_ps::<0x31>(e0, e1),
                _mm256_permute2f128_ps::<0x31>(e2, e3),
            ];
            let left = (row.len() - 4 * g) as i32;
            let at = row.as_mut_ptr().add(4 * g);
            for (q, v) in out.into_iter().enumerate() {
                let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(left - 8 * q as i32), lanes);
                _mm256_maskstore_ps(at.wrapping_add(8 * q), mask, v);
            }
        }
    }
}

/// All six rows of `B^T` on six columns of eight tiles.
#[target_feature(enable = "avx2")]
#[inline]
fn bt_rows(c: [__m256; 6]) -> [__m256; 6] {
    [
        bt::<0>(c),
        bt::<1>(c),
        bt::<2>(c),
        bt::<3>(c),
        bt::<4>(c),
        bt::<5>(c),
    ]
}

/// Eight floats of `row` from `from`, zero where they fall outside it
/// (those lanes are neither read nor faulted on).
#[target_feature(enable = "avx2")]
#[inline]
fn row_at(row: &[f32], from: isize) -> __m256 {
    // SAFETY: the mask leaves only lanes inside `row`.
    unsafe {
        _mm256_maskload_ps(
            row.as_ptr().wrapping_offset(from),
            column_mask(row.len(), from),
        )
    }
}

/// The lanes of eight columns from `from` that lie inside a row of `len`.
#[target_feature(enable = "avx2")]
#[inline]
fn column_mask(len: usize, from: isize) -> __m256i {
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let at = _mm256_add_epi32(_mm256_set1_epi32(from as i32), lanes);
    _mm256_and_si256(
        _mm256_cmpgt_epi32(at, _mm256_set1_epi32(-1)),
        _mm256_cmpgt_epi32(_mm256_set1_epi32(len as i32), at),
    )
}

/// Row `J` of `B^T` on six columns of eight tiles.
#[target_feature(enable = "avx2")]
#[inline]
fn bt<const J: usize>(c: [__m256; 6]) -> __m256 {
    super::bt::<J, V8>(c.map(V8)).0
}

/// Writes `out[j * stride + t] = bt::<j>(r[4t .. 4t + 6])` for `j < 6`
/// and `t < nt`.
///
/// Eight tiles at a time, each vector holds two tiles' first four
/// columns (tiles `t` and `t + 4`, one in each 128-bit lane), so that a
/// 4x4 transpose within the lanes gives columns 0 to 3 of the eight
/// tiles in order; columns 4 and 5 are the next tiles' columns 0 and 1.
/// Twelve shuffles where a whole 8x8 transpose took 24.
///
/// # Safety
/// The CPU supports AVX2; `r` holds at least `4 * nt.next_multiple_of(8) + 4`
/// floats, and `out` at least `5 * stride + nt`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn bt_across_f4(r: &[f32], nt: usize, out: &mut [f32], stride: usize) {
    assert!(nt == 0 || (r.len() >= 4 * nt.next_multiple_of(8) + 4 && out.len() >= 5 * stride + nt));
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for g in (0..nt).step_by(8) {
        // SAFETY: tile `t`'s columns `4t .. 4t + 4` for `t <= g + 8`
        // lie inside `r`; the stores write lanes below `nt - g` of `out`'s rows.
        unsafe {
            let at = r.as_ptr().add(4 * g);
            let pair = |t: usize| _mm256_loadu2_m128(at.add(4 * (t + 4)), at.add(4 * t));
            let [v0, v1, v2, v3, v4] = std::array::from_fn(pair);
            let (lo, hi) = (_mm256_unpacklo_ps, _mm256_unpackhi_ps);
            let (a, b, c, d) = (lo(v0, v1), hi(v0, v1), lo(v2, v3), hi(v2, v3));
            let (e, f) = (lo(v1, v2), lo(v3, v4));
            let six = [
                _mm256_shuffle_ps::<0x44>(a, c),
                _mm256_shuffle_ps::<0xEE>(a, c),
                _mm256_shuffle_ps::<0x44>(b, d),
                _mm256_shuffle_ps::<0xEE>(b, d),
                _mm256_shuffle_ps::<0x44>(e, f),
                _mm256_shuffle_ps::<0xEE>(e, f),
            ];
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((nt - g) as i32), lanes);
            let ys = bt_rows(six);
            for (j, y) in ys.into_iter().enumerate() {
                _mm256_maskstore_ps(out.as_mut_ptr().add(j * stride + g), mask, y);
            }
        }
    }
}

/// [`super::transform_input_tiles`] for one input channel: `V` of
/// tiles `t < nt`, whose padded columns `2t .. 2t + 4` of row `i` are
/// `rows[i]` (`None`: all padding) from `x0 + 2t`, zero outside the
/// row; position `ξ` of tile `t` to `out[ξ * stride + t]`.
///
/// # Safety
/// The CPU supports AVX2; `out` holds `15 * stride + nt` floats; rows
/// are shorter than `i32::MAX`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn input_f2(
    rows: [Option<&[f32]>; 4],
    x0: isize,
    nt: usize,
    out: &mut [f32],
    stride: usize,
) {
    assert!(nt == 0 || out.len() >= 15 * stride + nt);
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for g in (0..nt).step_by(8) {
        // Tile `g + t`'s columns of each row as four vectors over `t`:
        // padded columns 2t, 2t + 1, 2t + 2 and 2t + 3 from `x0 + 2g`.
        let mut d = [[_mm256_setzero_ps(); 4]; 4];
        for (d, row) in d.iter_mut().zip(rows) {
            let Some(row) = row else { continue };
            let from = x0 + 2 * g as isize;
            let load = |from| row_at(row, from);
            let (a, b) = (load(from), load(from + 8));
            let (a1, b1) = (load(from + 2), load(from + 10));
            *d = [even(a, b), odd(a, b), even(a1, b1), odd(a1, b1)];
        }
        // B^T d, down the rows, for each of the four columns.
        let (sub, add) = (_mm256_sub_ps, _mm256_add_ps);
        let r: [[__m256; 4]; 4] = std::array::from_fn(|x| {
            let [d0, d1, d2, d3] = [d[0][x], d[1][x], d[2][x], d[3][x]];
            [sub(d0, d2), add(d1, d2), sub(d2, d1), sub(d1, d3)]
        });
        // (B^T d) B, across: (c0 - c2, c1 + c2, c2 - c1, c1 - c3) of row k.
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((nt - g) as i32), lanes);
        let [e, o, e1, o1] = r;
        let rows = e.into_iter().zip(o).zip(e1).zip(o1);
        for (k, (((c0, c1), c2), c3)) in rows.enumerate() {
            let ys = [sub(c0, c2), add(c1, c2), sub(c2, c1), sub(c1, c3)];
            for (j, y) in ys.into_iter().enumerate() {
                // SAFETY: lanes below `nt - g` of position `4k + j`'s columns.
                unsafe {
                    _mm256_maskstore_ps(out.as_mut_ptr().add((4 * k + j) * stride + g), mask, y)
                };
            }
        }
    }
}

/// The even lanes of `a` then of `b`.
#[target_feature(enable = "avx2")]
#[inline]
fn even(a: __m256, b: __m256) -> __m256 {
    let v = _mm256_castps_pd(_mm256_shuffle_ps::<0x88>(a, b));
    _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(v))
}

/// The odd lanes of `a` then of `b`.
#[target_feature(enable = "avx2")]
#[inline]
fn odd(a: __m256, b: __m256) -> __m256 {
    let v = _mm256_castps_pd(_mm256_shuffle_ps::<0xDD>(a, b));
    _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(v))
}

/// [`super::transform_output_run`]'s step across one output row:
/// `row[2t] = a + b + c + bias`, `row[2t + 1] = b - c - d + bias` from
/// `[a, b, c, d][..][t]`, as many columns as `row` has.
///
/// # Safety
/// The CPU supports AVX2; each of `s` holds `row.len().div_ceil(2) + 7` floats.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn at_across_f2(s: [&[f32; BLOCK + 8]; 4], bias: f32, row: &mut [f32]) {
    assert!(row.len() <= 2 * BLOCK);
    let (bias, lanes) = (
        _mm256_set1_ps(bias),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    let (add, sub) = (_mm256_add_ps, _mm256_sub_ps);
    for g in (0..row.len().div_ceil(2)).step_by(8) {
        // SAFETY: `g + 8 <= BLOCK + 8`: inside each row of `s`.
        let [a, b, c, d] = s.map(|s| unsafe { _mm256_loadu_ps(s[g..].as_ptr()) });
        let y0 = add(add(add(a, b), c), bias);
        let y1 = add(sub(sub(b, c), d), bias);
        // Interleaved: tiles 0-3 then 4-7 of (y0, y1).
        let (lo, hi) = (_mm256_unpacklo_ps(y0, y1), _mm256_unpackhi_ps(y0, y1));
        let first = _mm256_permute2f128_ps::<0x20>(lo, hi);
        let second = _mm256_permute2f128_ps::<0x31>(lo, hi);
        let left = (row.len() - 2 * g) as i32;
        let at = row[2 * g..].as_mut_ptr();
        // SAFETY: the masks keep the lanes below `left`, inside `row`.
        unsafe {
            _mm256_maskstore_ps(
                at,
                _mm256_cmpgt_epi32(_mm256_set1_epi32(left), lanes),
                first,
            );
            let second_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(left - 8), lanes);
            _mm256_maskstore_ps(at.wrapping_add(8), second_mask, second);
        }
    }
}
