//! Winograd F(2x2, 3x3) convolution for 3x3, stride-1, ungrouped layers:
//! each 2x2 block of outputs costs 16 multiplications per channel pair
//! instead of 36.
//!
//! With `d` a 4x4 input tile, `g` a 3x3 filter and
//!
//! ```text
//! B^T = | 1  0 -1  0 |     G = | 1    0    0  |     A^T = | 1  1  1  0 |
//!       | 0  1  1  0 |         | 1/2  1/2  1/2|           | 0  1 -1 -1 |
//!       | 0 -1  1  0 |         | 1/2 -1/2  1/2|
//!       | 0  1  0 -1 |         | 0    0    1  |
//! ```
//!
//! the 2x2 output is `A^T [(G g G^T) ⊙ (B^T d B)] A`. Summed over input
//! channels, the element-wise product becomes 16 independent GEMMs, one
//! per position of the 4x4 transform: `M[ξ] = U[ξ] · V[ξ]`, `U[ξ]` the
//! transformed filters (`out x in`, packed once) and `V[ξ]` the transformed
//! tiles (`in x tiles`). Tiles are processed in chunks sized so that the
//! transformed data stays in cache; the output transform applies the
//! epilogue (bias, residual, ReLU) as it writes.

use super::conv::ConvParams;
use super::gemm::{self, DenseB, Epilogue, Isa, Job, PackedWeights, SendPtr};
use ndarray::{Array2, ArrayView4};
use rayon::prelude::*;

/// Floats of transformed tiles and products to aim for per chunk (4 MiB).
const CHUNK_FLOATS: usize = 1 << 20;
/// Most tiles in a chunk.
const MAX_CHUNK: usize = 1024;
/// Positions of the 4x4 transform.
const POSITIONS: usize = 16;

/// The transformed filters of a 3x3 stride-1 convolution.
#[derive(Clone, Debug)]
pub(crate) struct Winograd {
    /// `U[ξ]`, `out x in`, one per position.
    u: Vec<PackedWeights>,
}

impl Winograd {
    /// Whether `p` can run as Winograd F(2x2, 3x3): 3x3, stride 1, one
    /// group, and a row of output tiles that fits a chunk.
    pub fn fits(p: &ConvParams) -> bool {
        p.kernel == 3 && p.stride == 1 && p.groups == 1 && p.out_hw().1.div_ceil(2) <= MAX_CHUNK
    }

    /// Transforms `weight` (`[out, in, 3, 3]`): `U = G g G^T` per channel pair.
    pub fn new(isa: Isa, p: &ConvParams, weight: ArrayView4<f32>) -> Self {
        let (cout, cin) = (p.out_channels, p.in_channels);
        // Rows of G: U[ξ] for ξ = (i, j) is G_i g G_j^T, one position at a
        // time, so only one transformed matrix exists before it is packed.
        const G: [[f64; 3]; 4] = [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5],
            [0.0, 0.0, 1.0],
        ];
        let u = (0..POSITIONS)
            .map(|xi| {
                let (gi, gj) = (G[xi / 4], G[xi % 4]);
                let m = Array2::from_shape_fn((cout, cin), |(o, c)| {
                    let mut v = 0.0;
                    for (a, ga) in gi.iter().enumerate() {
                        for (b, gb) in gj.iter().enumerate() {
                            v += ga * weight[(o, c, a, b)] as f64 * gb;
                        }
                    }
                    v as f32
                });
                PackedWeights::new(isa, m.view())
            })
            .collect();
        Winograd { u }
    }

    /// Floats of workspace [`Winograd::forward`] needs.
    pub fn workspace_len(p: &ConvParams, threads: usize) -> usize {
        POSITIONS * (p.in_channels + p.out_channels) * chunk_tiles(p) + gemm::workspace_len(threads)
    }

    /// `out = relu?(conv(x) + bias + residual)` for a batch; `x` is
    /// `[N, in, H, W]` and `out` `[N, out, OH, OW]` as flat standard-layout
    /// slices, `residual` `[N, R, OH, OW]` with its channel count `R <= out`
    /// (channels from `R` on add nothing). Allocates nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        p: &ConvParams,
        batch: usize,
        x: &[f32],
        out: &mut [f32],
        epilogue: &ConvEpilogue,
        workspace: &mut [f32],
        threads: usize,
    ) {
        let ConvEpilogue {
            bias,
            residual,
            relu,
        } = *epilogue;
        let (oh, ow) = p.out_hw();
        let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
        let (cin, cout) = (p.in_channels, p.out_channels);
        let chunk = chunk_tiles(p);
        let (v, rest) = workspace.split_at_mut(POSITIONS * cin * chunk);
        let (m, gemm_workspace) = rest.split_at_mut(POSITIONS * cout * chunk);
        let out_ptr = SendPtr(out.as_mut_ptr());

        // Chunks of whole rows of tiles, across images: tile row `r` is image
        // `r / th`, row `r % th`.
        let rows_per_chunk = chunk / tw;
        let tile_rows = batch * th;
        for first in (0..tile_rows).step_by(rows_per_chunk) {
            let rows = first..(first + rows_per_chunk).min(tile_rows);
            let tiles = rows.len() * tw;
            // V[c][ξ][tile], each channel's 16 x chunk block contiguous.
            v.par_chunks_mut(POSITIONS * chunk)
                .enumerate()
                .for_each(|(c, block)| {
                    for (i, r) in rows.clone().enumerate() {
                        let plane = &x[((r / th) * cin + c) * p.in_h * p.in_w..][..p.in_h * p.in_w];
                        transform_input_row(plane, p, r % th, tw, block, chunk, i * tw);
                    }
                });
            let v = &*v;
            let m_ptr = SendPtr(m.as_mut_ptr());
            let job = |xi: usize| Job {
                a: &self.u[xi],
                b: DenseB {
                    data: &v[xi * chunk..],
                    ld: POSITIONS * chunk,
                },
                n: tiles,
                // SAFETY: position `xi`'s columns of every row of `m`, which is
                // `cout` rows of `POSITIONS * chunk` floats.
                c: unsafe { m_ptr.add(xi * chunk) },
                ldc: POSITIONS * chunk,
                epilogue: Epilogue::default(),
            };
            // SAFETY: job `xi` writes columns `xi * chunk .. xi * chunk + tiles` of
            // each row of `m`, disjoint from the other jobs' and from `v`.
            unsafe { gemm::run_jobs(POSITIONS, &job, gemm_workspace, threads) };

            // Output transform, one output channel per task.
            let m = &*m;
            (0..cout).into_par_iter().for_each(|o| {
                let block = &m[o * POSITIONS * chunk..][..POSITIONS * chunk];
                for (i, r) in rows.clone().enumerate() {
                    let image = r / th;
                    let plane_index = image * cout + o;
                    // SAFETY: each task writes output channel `o` of each image, a
                    // plane no other task writes; `out` holds `batch * cout` planes.
                    let plane = unsafe {
                        std::slice::from_raw_parts_mut(
                            out_ptr.add(plane_index * oh * ow).0,
                            oh * ow,
                        )
                    };
                    let residual =
                        residual
                            .filter(|&(_, channels)| o < channels)
                            .map(|(data, channels)| {
                                &data[(image * channels + o) * oh * ow..][..oh * ow]
                            });
                    let epilogue = OutputEpilogue {
                        bias: bias[o],
                        residual,
                        relu,
                    };
                    transform_output_row(
                        block,
                        chunk,
                        i * tw,
                        tw,
                        r % th,
                        (oh, ow),
                        plane,
                        &epilogue,
                    );
                }
            });
        }
    }
}

/// Tiles per chunk for `p`: about [`CHUNK_FLOATS`] of transformed data,
/// at least one row of tiles.
fn chunk_tiles(p: &ConvParams) -> usize {
    let tw = p.out_hw().1.div_ceil(2);
    (CHUNK_FLOATS / (POSITIONS * (p.in_channels + p.out_channels)))
        .clamp(64, MAX_CHUNK)
        .max(tw)
}

/// What a convolution adds to its output: `relu?(y + bias + residual)`,
/// `residual` `[N, R, OH, OW]` with its channel count `R` (channels from `R`
/// on add nothing).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvEpilogue<'a> {
    pub bias: &'a [f32],
    pub residual: Option<(&'a [f32], usize)>,
    pub relu: bool,
}

/// What the output transform adds to one output plane.
struct OutputEpilogue<'a> {
    bias: f32,
    residual: Option<&'a [f32]>,
    relu: bool,
}

/// Tiles transformed together: small enough for stack arrays that cost
/// nothing to clear.
const BLOCK: usize = 32;

/// Transforms the `tw` tiles of tile row `ty` of one input channel `plane`
/// into `block` (`[ξ][chunk]`), at column `at`: `V = B^T d B`.
fn transform_input_row(
    plane: &[f32],
    p: &ConvParams,
    ty: usize,
    tw: usize,
    block: &mut [f32],
    chunk: usize,
    at: usize,
) {
    for t0 in (0..tw).step_by(BLOCK) {
        let nt = BLOCK.min(tw - t0);
        transform_input_tiles(plane, p, ty, t0, nt, block, chunk, at + t0);
    }
}

/// Tiles `t0 .. t0 + nt` of tile row `ty`. Tile `t` reads padded columns
/// `2t .. 2t + 4`: even columns `e[t]`, `e[t + 1]` and odd ones `o[t]`,
/// `o[t + 1]`; split that way, every step is a loop over `t` that vectorises.
#[allow(clippy::too_many_arguments)]
fn transform_input_tiles(
    plane: &[f32],
    p: &ConvParams,
    ty: usize,
    t0: usize,
    nt: usize,
    block: &mut [f32],
    chunk: usize,
    at: usize,
) {
    let (h, w, pad) = (p.in_h, p.in_w, p.padding as isize);
    let n = nt + 1;
    let mut even = [[0f32; BLOCK + 1]; 4];
    let mut odd = [[0f32; BLOCK + 1]; 4];
    for i in 0..4 {
        let iy = (2 * ty + i) as isize - pad;
        if iy < 0 || iy >= h as isize {
            continue;
        }
        // Padded columns 2 t0 .. 2 t0 + 2n are input columns from x0 = 2 t0 - pad.
        let src = &plane[iy as usize * w..][..w];
        let mut padded = [0f32; 2 * BLOCK + 2];
        let x0 = (2 * t0) as isize - pad;
        let lo = (-x0).clamp(0, 2 * n as isize) as usize;
        let hi = (w as isize - x0).clamp(lo as isize, 2 * n as isize) as usize;
        if hi > lo {
            let from = (x0 + lo as isize) as usize;
            padded[lo..hi].copy_from_slice(&src[from..from + hi - lo]);
        }
        for ((e, o), pair) in even[i][..n]
            .iter_mut()
            .zip(&mut odd[i][..n])
            .zip(padded.chunks_exact(2))
        {
            (*e, *o) = (pair[0], pair[1]);
        }
    }
    // B^T d, down the rows: (d0 - d2, d1 + d2, d2 - d1, d1 - d3).
    let rows = |d: &[[f32; BLOCK + 1]; 4]| {
        let mut r = [[0f32; BLOCK + 1]; 4];
        for t in 0..n {
            r[0][t] = d[0][t] - d[2][t];
            r[1][t] = d[1][t] + d[2][t];
            r[2][t] = d[2][t] - d[1][t];
            r[3][t] = d[1][t] - d[3][t];
        }
        r
    };
    let (re, ro) = (rows(&even), rows(&odd));
    // (B^T d) B, across the columns (c0, c1, c2, c3) = (e[t], o[t], e[t + 1], o[t + 1]).
    for k in 0..4 {
        let (c0, c1, c2, c3) = (&re[k][..nt], &ro[k][..nt], &re[k][1..n], &ro[k][1..n]);
        let out = column(block, chunk, k * 4, at, nt);
        for t in 0..nt {
            out[t] = c0[t] - c2[t];
        }
        let out = column(block, chunk, k * 4 + 1, at, nt);
        for t in 0..nt {
            out[t] = c1[t] + c2[t];
        }
        let out = column(block, chunk, k * 4 + 2, at, nt);
        for t in 0..nt {
            out[t] = c2[t] - c1[t];
        }
        let out = column(block, chunk, k * 4 + 3, at, nt);
        for t in 0..nt {
            out[t] = c1[t] - c3[t];
        }
    }
}

/// Columns `at .. at + n` of position `xi` in a `[ξ][chunk]` block.
fn column(block: &mut [f32], chunk: usize, xi: usize, at: usize, n: usize) -> &mut [f32] {
    &mut block[xi * chunk + at..][..n]
}

/// Transforms tile row `ty` of one output channel from `block`
/// (`[ξ][chunk]`, columns `at .. at + tw`) into `plane` (`oh x ow`):
/// `Y = A^T M A`, then the epilogue.
#[allow(clippy::too_many_arguments)]
fn transform_output_row(
    block: &[f32],
    chunk: usize,
    at: usize,
    tw: usize,
    ty: usize,
    (oh, ow): (usize, usize),
    plane: &mut [f32],
    epilogue: &OutputEpilogue,
) {
    for t0 in (0..tw).step_by(BLOCK) {
        let nt = BLOCK.min(tw - t0);
        let m = |xi: usize| &block[xi * chunk + at + t0..][..nt];
        // A^T M, down the rows: s[0][j] = m0j + m1j + m2j, s[1][j] = m1j - m2j - m3j.
        let mut s = [[[0f32; BLOCK]; 4]; 2];
        let [s0, s1] = &mut s;
        for (j, (s0, s1)) in s0.iter_mut().zip(s1.iter_mut()).enumerate() {
            let (a, b, c, d) = (m(j), m(4 + j), m(8 + j), m(12 + j));
            for t in 0..nt {
                s0[t] = a[t] + b[t] + c[t];
                s1[t] = b[t] - c[t] - d[t];
            }
        }
        // Output columns 2 t0 .. 2 (t0 + nt), clipped to the plane.
        let (x0, x1) = (2 * t0, (2 * (t0 + nt)).min(ow));
        for (i, [a, b, c, d]) in s.iter().enumerate() {
            let oy = 2 * ty + i;
            if oy >= oh {
                continue;
            }
            let row = &mut plane[oy * ow + x0..oy * ow + x1];
            // (A^T M) A, across the columns: y[2t] = a + b + c, y[2t + 1] = b - c - d.
            let (pairs, tail) = row.split_at_mut((x1 - x0) / 2 * 2);
            for (t, pair) in pairs.chunks_exact_mut(2).enumerate() {
                pair[0] = a[t] + b[t] + c[t] + epilogue.bias;
                pair[1] = b[t] - c[t] - d[t] + epilogue.bias;
            }
            if let Some(y) = tail.first_mut() {
                let t = (x1 - x0) / 2;
                *y = a[t] + b[t] + c[t] + epilogue.bias;
            }
            if let Some(residual) = epilogue.residual {
                row.iter_mut()
                    .zip(&residual[oy * ow + x0..oy * ow + x1])
                    .for_each(|(y, r)| *y += r);
            }
            if epilogue.relu {
                row.iter_mut().for_each(|y| *y = y.max(0.0));
            }
        }
    }
}
