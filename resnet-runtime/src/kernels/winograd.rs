//! Winograd convolution for 3x3, stride-1, ungrouped layers: F(2x2, 3x3)
//! computes each 2x2 block of outputs with 16 multiplications per channel
//! pair instead of 36, F(4x4, 3x3) each 4x4 block with 36 instead of 144.
//!
//! For F(2x2, 3x3), with `d` a 4x4 input tile, `g` a 3x3 filter and
//!
//! ```text
//! B^T = | 1  0 -1  0 |     G = | 1    0    0  |     A^T = | 1  1  1  0 |
//!       | 0  1  1  0 |         | 1/2  1/2  1/2|           | 0  1 -1 -1 |
//!       | 0 -1  1  0 |         | 1/2 -1/2  1/2|
//!       | 0  1  0 -1 |         | 0    0    1  |
//! ```
//!
//! the 2x2 output is `A^T [(G g G^T) ⊙ (B^T d B)] A`; F(4x4, 3x3) is the
//! same with 6x6 input tiles and the matrices at [`Tile::g`],
//! [`transform_input_tiles_f4`] and [`transform_output_run_f4`]. Summed over
//! input channels, the element-wise product becomes one GEMM per position
//! `ξ` of the input tile (16 or 36): `M[ξ] = U[ξ] · V[ξ]`, `U[ξ]` the
//! transformed filters (`out x in`, packed once) and `V[ξ]` the transformed
//! tiles (`in x tiles`).
//!
//! The batch's tiles are taken `NR` at a time, the micro-kernel's width, and
//! each block goes through all three steps on one thread while it is in
//! cache: the input transform writes each `V[ξ]` as one packed panel, the
//! micro-kernel multiplies it by `U[ξ]`'s row panels, and the output
//! transform applies the epilogue (bias, residual, ReLU) as it writes.
//! Threads take contiguous runs of blocks and never wait on each other.

use super::conv::ConvParams;
use super::gemm::{self, Isa, PackedWeights, SendPtr};
#[cfg(target_arch = "x86_64")]
use super::micro::{Avx2, Avx512};
use super::micro::{MicroKernel, Portable};
use ndarray::{Array2, ArrayView4};

/// The block of outputs one transformed tile yields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tile {
    /// F(2x2, 3x3): 4x4 input tiles, 16 positions, 2.25x fewer multiplications.
    F2,
    /// F(4x4, 3x3): 6x6 input tiles, 36 positions, 4x fewer multiplications.
    F4,
}

impl Tile {
    /// Output rows (and columns) per tile.
    fn outputs(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// Rows of `G`, whose products `G_i g G_j^T` are the transformed filters.
    fn g(self) -> &'static [[f64; 3]] {
        match self {
            Tile::F2 => &[
                [1.0, 0.0, 0.0],
                [0.5, 0.5, 0.5],
                [0.5, -0.5, 0.5],
                [0.0, 0.0, 1.0],
            ],
            Tile::F4 => &[
                [1.0 / 4.0, 0.0, 0.0],
                [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
                [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
                [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
                [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
                [0.0, 0.0, 1.0],
            ],
        }
    }
}

/// The transformed filters of a 3x3 stride-1 convolution.
#[derive(Clone, Debug)]
pub(crate) struct Winograd {
    tile: Tile,
    /// `U[ξ]`, `out x in`, one per position `ξ = (i, j)` of the input tile.
    u: Vec<PackedWeights>,
}

impl Winograd {
    /// Whether `p` can run as Winograd: 3x3, stride 1, one group.
    pub fn fits(p: &ConvParams) -> bool {
        p.kernel == 3 && p.stride == 1 && p.groups == 1
    }

    /// Transforms `weight` (`[out, in, 3, 3]`): `U = G g G^T` per channel pair.
    pub fn new(isa: Isa, tile: Tile, p: &ConvParams, weight: ArrayView4<f32>) -> Self {
        let (cout, cin) = (p.out_channels, p.in_channels);
        // U[ξ] for ξ = (i, j) is G_i g G_j^T, one position at a time, so only
        // one transformed matrix exists before it is packed.
        let g = tile.g();
        let u = (0..g.len() * g.len())
            .map(|xi| {
                let (gi, gj) = (g[xi / g.len()], g[xi % g.len()]);
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
        Winograd { tile, u }
    }

    /// Floats of one thread's scratch: `V` (`positions x in x NR`) and `M`
    /// (`out x positions x NR`, `out` rounded up to whole row panels).
    fn scratch_len(&self) -> usize {
        let (mr, nr) = self.u[0].isa().tile();
        let rows = self.u[0].rows().next_multiple_of(mr);
        self.u.len() * (self.u[0].depth() + rows) * nr
    }

    /// Floats of workspace [`Winograd::forward`] needs with `threads` threads.
    pub fn workspace_len(&self, threads: usize) -> usize {
        threads.max(1) * gemm::per_thread(self.scratch_len())
    }

    /// `out = relu?(conv(x) + bias + residual)` for a batch; `x` is
    /// `[N, in, H, W]` and `out` `[N, out, OH, OW]` as flat standard-layout
    /// slices, `residual` `[N, R, OH, OW]` with its channel count `R <= out`
    /// (channels from `R` on add nothing). Allocates nothing.
    ///
    /// # Panics
    /// If `workspace` is shorter than [`Winograd::workspace_len`].
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
        let threads = threads.max(1);
        assert!(
            workspace.len() >= self.workspace_len(threads),
            "workspace of {} floats is less than the {} that {threads} threads need",
            workspace.len(),
            self.workspace_len(threads)
        );
        let (oh, ow) = p.out_hw();
        let m = self.tile.outputs();
        let tiles = batch * oh.div_ceil(m) * ow.div_ceil(m);
        let nr = self.u[0].isa().tile().1;
        let blocks = tiles.div_ceil(nr);
        let threads = threads.min(blocks);
        let out = SendPtr(out.as_mut_ptr());
        let work = |(thread, scratch): (usize, &mut [f32])| {
            let blocks = thread * blocks / threads..(thread + 1) * blocks / threads;
            let task = Task {
                p,
                x,
                out,
                epilogue,
                tiles,
            };
            // SAFETY: the instruction set is supported (packing checked it);
            // `out` holds the batch's output (the caller's slice), and each
            // block writes only its own tiles' pixels.
            unsafe {
                match self.u[0].isa() {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => self.blocks::<Avx512>(&task, blocks, scratch),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => self.blocks::<Avx2>(&task, blocks, scratch),
                    _ => self.blocks::<Portable>(&task, blocks, scratch),
                }
            }
        };
        gemm::on_threads(workspace, self.scratch_len(), threads, work);
    }

    /// Runs blocks `blocks` of `NR` tiles, with `scratch` for `V` and `M`.
    ///
    /// # Safety
    /// The CPU supports `K`'s instruction set, which `U` was packed for;
    /// `task.out` is valid for the whole output and no other thread writes
    /// these blocks' pixels.
    unsafe fn blocks<K: MicroKernel>(
        &self,
        task: &Task,
        blocks: std::ops::Range<usize>,
        scratch: &mut [f32],
    ) {
        let Task {
            p,
            x,
            out,
            epilogue,
            tiles,
        } = *task;
        let (oh, ow) = p.out_hw();
        let (th, tw) = (
            oh.div_ceil(self.tile.outputs()),
            ow.div_ceil(self.tile.outputs()),
        );
        let (cin, cout) = (p.in_channels, p.out_channels);
        let positions = self.u.len();
        let (v, m) = scratch.split_at_mut(positions * cin * K::NR);
        let mut work = OutputWork::default();
        for block in blocks {
            let first = block * K::NR;
            let width = K::NR.min(tiles - first);
            let runs = || Runs::new(first, width, tw);

            // V[ξ]: one `in x NR` panel per position, row `c` at `c * NR`.
            for run in runs() {
                let image = run.row / th;
                let plane = p.in_h * p.in_w;
                let planes = &x[image * cin * plane..][..cin * plane];
                let to = Dest {
                    channel_step: K::NR,
                    stride: cin * K::NR,
                    at: run.at,
                };
                let transform = match self.tile {
                    Tile::F2 => transform_input_tiles,
                    Tile::F4 => transform_input_tiles_f4,
                };
                transform(planes, p, (run.row % th, run.tx, run.len), v, to);
            }

            // M[ξ] = U[ξ] · V[ξ], row `o` of position `ξ` at `m[(o * positions + ξ) NR]`.
            for (xi, u) in self.u.iter().enumerate() {
                let b = v[xi * cin * K::NR..][..cin * K::NR].as_ptr();
                for panel in 0..cout.div_ceil(K::MR) {
                    let a = u.panel(panel, 0).as_ptr();
                    let c = m[(panel * K::MR * positions + xi) * K::NR..].as_mut_ptr();
                    // SAFETY: the panels hold `cin` steps of `MR` and `NR` values;
                    // `m` holds `MR` rows at stride `positions * NR` from `c` (its rows are
                    // rounded up to whole panels); the caller vouches for the CPU. Only
                    // the block's `width` tiles are multiplied: a short last block
                    // costs less.
                    unsafe { K::run(cin, a, b, c, positions * K::NR, width, false, None) };
                }
            }

            // Output transform, one output channel at a time.
            for o in 0..cout {
                let block = &m[o * positions * K::NR..][..positions * K::NR];
                for run in runs() {
                    let image = run.row / th;
                    // SAFETY: plane `(image, o)` of the output, whose pixels under
                    // this run's tiles only this block writes (the caller's contract).
                    let plane = unsafe {
                        std::slice::from_raw_parts_mut(
                            out.add((image * cout + o) * oh * ow).0,
                            oh * ow,
                        )
                    };
                    let residual = epilogue.residual.filter(|&(_, channels)| o < channels).map(
                        |(data, channels)| &data[(image * channels + o) * oh * ow..][..oh * ow],
                    );
                    let epilogue = OutputEpilogue {
                        bias: epilogue.bias[o],
                        residual,
                        relu: epilogue.relu,
                    };
                    let transform = match self.tile {
                        Tile::F2 => transform_output_run,
                        Tile::F4 => transform_output_run_f4,
                    };
                    let ty = run.row % th;
                    transform(
                        &mut work,
                        block,
                        K::NR,
                        &run,
                        ty,
                        (oh, ow),
                        plane,
                        &epilogue,
                    );
                }
            }
        }
    }
}

/// What every block of one call shares.
struct Task<'a> {
    p: &'a ConvParams,
    x: &'a [f32],
    out: SendPtr,
    epilogue: &'a ConvEpilogue<'a>,
    /// Tiles in the batch.
    tiles: usize,
}

/// Consecutive tiles of one row of tiles inside a block.
#[derive(Clone, Copy, Debug)]
struct Run {
    /// Row of tiles, counted across the batch (image `row / th`).
    row: usize,
    /// First tile's column.
    tx: usize,
    /// Tiles.
    len: usize,
    /// First tile's place in the block.
    at: usize,
}

/// The runs of tiles `first .. first + tiles`, `tw` tiles to a row.
struct Runs {
    next: usize,
    end: usize,
    first: usize,
    tw: usize,
}

impl Runs {
    fn new(first: usize, tiles: usize, tw: usize) -> Self {
        Runs {
            next: first,
            end: first + tiles,
            first,
            tw,
        }
    }
}

impl Iterator for Runs {
    type Item = Run;

    fn next(&mut self) -> Option<Run> {
        (self.next < self.end).then(|| {
            let (row, tx) = (self.next / self.tw, self.next % self.tw);
            let len = (self.tw - tx).min(self.end - self.next);
            let run = Run {
                row,
                tx,
                len,
                at: self.next - self.first,
            };
            self.next += len;
            run
        })
    }
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

impl OutputEpilogue<'_> {
    /// Adds the residual from plane offset `start` to `row`, which holds
    /// outputs with their bias, then clamps at zero if asked.
    fn finish(&self, row: &mut [f32], start: usize) {
        if let Some(residual) = self.residual {
            let residual = &residual[start..][..row.len()];
            row.iter_mut().zip(residual).for_each(|(y, r)| *y += r);
        }
        if self.relu {
            row.iter_mut().for_each(|y| *y = y.max(0.0));
        }
    }
}

/// Tiles transformed together: small enough for stack arrays, which are
/// cleared once per run of tiles and then serve all its input channels.
const BLOCK: usize = 32;

/// Where one run of tiles' transforms go: `V` of input channel `c` at
/// `c * channel_step` of `block`, position `ξ` at `ξ * stride`, from column `at`.
#[derive(Clone, Copy)]
struct Dest {
    channel_step: usize,
    stride: usize,
    at: usize,
}

/// `V = B^T d B` for tiles `t0 .. t0 + nt` (`nt <= BLOCK`) of tile row `ty`
/// of every input channel in `planes` (`[in, H, W]`), into `block` as `to`
/// says. Tile `t` reads padded columns `2t .. 2t + 4`: even columns `e[t]`,
/// `e[t + 1]` and odd ones `o[t]`, `o[t + 1]`; split that way, every step
/// is a loop over `t` that vectorises.
fn transform_input_tiles(
    planes: &[f32],
    p: &ConvParams,
    (ty, t0, nt): (usize, usize, usize),
    block: &mut [f32],
    to: Dest,
) {
    let (h, w, pad) = (p.in_h, p.in_w, p.padding as isize);
    let n = nt + 1;
    // Padded columns 2 t0 .. 2 t0 + 2n are input columns from x0 = 2 t0 - pad;
    // rows and columns in the padding stay zero for every channel.
    let x0 = (2 * t0) as isize - pad;
    let lo = (-x0).clamp(0, 2 * n as isize) as usize;
    let hi = (w as isize - x0).clamp(lo as isize, 2 * n as isize) as usize;
    let rows: [Option<usize>; 4] = std::array::from_fn(|i| {
        let iy = (2 * ty + i) as isize - pad;
        (0..h as isize).contains(&iy).then_some(iy as usize)
    });
    let mut padded = [0f32; 2 * BLOCK + 2];
    let mut even = [[0f32; BLOCK + 1]; 4];
    let mut odd = [[0f32; BLOCK + 1]; 4];
    let (mut re, mut ro) = ([[0f32; BLOCK + 1]; 4], [[0f32; BLOCK + 1]; 4]);
    for (c, plane) in planes.chunks_exact(h * w).enumerate() {
        for (i, iy) in rows.iter().enumerate() {
            let Some(iy) = iy else { continue };
            if hi > lo {
                let from = (iy * w) as isize + x0 + lo as isize;
                padded[lo..hi].copy_from_slice(&plane[from as usize..][..hi - lo]);
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
        for (d, r) in [(&even, &mut re), (&odd, &mut ro)] {
            for t in 0..n {
                r[0][t] = d[0][t] - d[2][t];
                r[1][t] = d[1][t] + d[2][t];
                r[2][t] = d[2][t] - d[1][t];
                r[3][t] = d[1][t] - d[3][t];
            }
        }
        // (B^T d) B, across the columns (c0, c1, c2, c3) = (e[t], o[t], e[t + 1], o[t + 1]).
        let block = &mut block[c * to.channel_step..];
        for k in 0..4 {
            let (c0, c1, c2, c3) = (&re[k][..nt], &ro[k][..nt], &re[k][1..n], &ro[k][1..n]);
            let out = column(block, to.stride, k * 4, to.at, nt);
            for t in 0..nt {
                out[t] = c0[t] - c2[t];
            }
            let out = column(block, to.stride, k * 4 + 1, to.at, nt);
            for t in 0..nt {
                out[t] = c1[t] + c2[t];
            }
            let out = column(block, to.stride, k * 4 + 2, to.at, nt);
            for t in 0..nt {
                out[t] = c2[t] - c1[t];
            }
            let out = column(block, to.stride, k * 4 + 3, to.at, nt);
            for t in 0..nt {
                out[t] = c1[t] - c3[t];
            }
        }
    }
}

/// Columns `at .. at + n` of position `xi`, positions `stride` apart.
fn column(block: &mut [f32], stride: usize, xi: usize, at: usize, n: usize) -> &mut [f32] {
    &mut block[xi * stride + at..][..n]
}

/// Stack space for the output transforms, cleared once for a thread's
/// blocks rather than for each channel's run of tiles.
struct OutputWork {
    /// `A^T M`, by column and row of the tile.
    s: [[[f32; BLOCK]; 4]; 6],
    /// One output row of a run.
    y: [f32; 4 * BLOCK],
}

impl Default for OutputWork {
    fn default() -> Self {
        OutputWork {
            s: [[[0.0; BLOCK]; 4]; 6],
            y: [0.0; 4 * BLOCK],
        }
    }
}

/// Transforms one run of tiles of one output channel from `block`
/// (position `ξ` at `ξ * stride`) into `plane` (`oh x ow`, tile row `ty`):
/// `Y = A^T M A`, then the epilogue.
#[allow(clippy::too_many_arguments)]
fn transform_output_run(
    work: &mut OutputWork,
    block: &[f32],
    stride: usize,
    run: &Run,
    ty: usize,
    (oh, ow): (usize, usize),
    plane: &mut [f32],
    epilogue: &OutputEpilogue,
) {
    for t0 in (0..run.len).step_by(BLOCK) {
        let nt = BLOCK.min(run.len - t0);
        let m = |xi: usize| &block[xi * stride + run.at + t0..][..nt];
        // A^T M, down the rows: s[0][j] = m0j + m1j + m2j, s[1][j] = m1j - m2j - m3j.
        let [s0, s1, ..] = &mut work.s;
        for (j, (s0, s1)) in s0.iter_mut().zip(s1.iter_mut()).enumerate() {
            let (a, b, c, d) = (m(j), m(4 + j), m(8 + j), m(12 + j));
            for t in 0..nt {
                s0[t] = a[t] + b[t] + c[t];
                s1[t] = b[t] - c[t] - d[t];
            }
        }
        // Output columns 2 (tx + t0) .. 2 (tx + t0 + nt), clipped to the plane.
        let (x0, x1) = (2 * (run.tx + t0), (2 * (run.tx + t0 + nt)).min(ow));
        for (i, [a, b, c, d]) in work.s[..2].iter().enumerate() {
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
            epilogue.finish(row, oy * ow + x0);
        }
    }
}

/// `V = B^T d B` of F(4x4, 3x3) for tiles `t0 .. t0 + nt` (`nt <= BLOCK`)
/// of tile row `ty`, laid out as [`transform_input_tiles`] does; tile `t`
/// reads padded rows `4 ty .. 4 ty + 6` and columns `4t .. 4t + 6`, and
///
/// ```text
/// B^T = | 4  0 -5  0  1  0 |
///       | 0 -4 -4  1  1  0 |
///       | 0  4 -4 -1  1  0 |
///       | 0 -2 -1  2  1  0 |
///       | 0  2 -1 -2  1  0 |
///       | 0  4  0 -5  0  1 |
/// ```
fn transform_input_tiles_f4(
    planes: &[f32],
    p: &ConvParams,
    (ty, t0, nt): (usize, usize, usize),
    block: &mut [f32],
    to: Dest,
) {
    let (h, w, pad) = (p.in_h as isize, p.in_w as isize, p.padding as isize);
    // Padded columns 4 t0 .. 4 t0 + width are input columns from x0; rows
    // and columns in the padding stay zero for every channel.
    let width = 4 * nt + 2;
    let x0 = (4 * t0) as isize - pad;
    let lo = (-x0).clamp(0, width as isize);
    let hi = (w - x0).clamp(lo, width as isize);
    let mut d = [[0f32; 4 * BLOCK + 2]; 6];
    let mut r = [[0f32; 4 * BLOCK + 2]; 6];
    for (c, plane) in planes.chunks_exact((h * w) as usize).enumerate() {
        for (i, row) in d.iter_mut().enumerate() {
            let iy = (4 * ty + i) as isize - pad;
            if (0..h).contains(&iy) && hi > lo {
                let from = (iy * w + x0 + lo) as usize;
                row[lo as usize..hi as usize].copy_from_slice(&plane[from..][..(hi - lo) as usize]);
            }
        }
        // B^T d, down the rows.
        for x in 0..width {
            let column = [d[0][x], d[1][x], d[2][x], d[3][x], d[4][x], d[5][x]];
            r[0][x] = bt::<0>(column);
            r[1][x] = bt::<1>(column);
            r[2][x] = bt::<2>(column);
            r[3][x] = bt::<3>(column);
            r[4][x] = bt::<4>(column);
            r[5][x] = bt::<5>(column);
        }
        // (B^T d) B, across the columns, written straight into each position.
        let block = &mut block[c * to.channel_step..];
        for (k, r) in r.iter().enumerate() {
            let r = &r[..width];
            let (stride, at) = (to.stride, to.at);
            bt_across::<0>(r, column(block, stride, 6 * k, at, nt));
            bt_across::<1>(r, column(block, stride, 6 * k + 1, at, nt));
            bt_across::<2>(r, column(block, stride, 6 * k + 2, at, nt));
            bt_across::<3>(r, column(block, stride, 6 * k + 3, at, nt));
            bt_across::<4>(r, column(block, stride, 6 * k + 4, at, nt));
            bt_across::<5>(r, column(block, stride, 6 * k + 5, at, nt));
        }
    }
}

/// Row `I` of F(4x4, 3x3)'s `A^T` applied to six values.
#[inline(always)]
fn at<const I: usize>([m0, m1, m2, m3, m4, m5]: [f32; 6]) -> f32 {
    match I {
        0 => m0 + m1 + m2 + m3 + m4,
        1 => m1 - m2 + 2.0 * (m3 - m4),
        2 => m1 + m2 + 4.0 * (m3 + m4),
        _ => m1 - m2 + 8.0 * (m3 - m4) + m5,
    }
}

/// Row `J` of F(4x4, 3x3)'s `B^T` applied to six values.
#[inline(always)]
fn bt<const J: usize>([c0, c1, c2, c3, c4, c5]: [f32; 6]) -> f32 {
    match J {
        0 => 4.0 * c0 - 5.0 * c2 + c4,
        1 => c3 + c4 - 4.0 * (c1 + c2),
        2 => 4.0 * (c1 - c2) + c4 - c3,
        3 => 2.0 * (c3 - c1) + c4 - c2,
        4 => 2.0 * (c1 - c3) + c4 - c2,
        _ => 4.0 * c1 - 5.0 * c3 + c5,
    }
}

/// Row `J` of `B^T` across a row of padded columns: tile `t` of `out`
/// from columns `4t .. 4t + 6` of `r`.
fn bt_across<const J: usize>(r: &[f32], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(r.windows(6).step_by(4)) {
        *o = bt::<J>([c[0], c[1], c[2], c[3], c[4], c[5]]);
    }
}

/// `Y = A^T M A` of F(4x4, 3x3) for one run of tiles of one output channel,
/// then the epilogue, as [`transform_output_run`] does, with
///
/// ```text
/// A^T = | 1  1  1  1  1  0 |
///       | 0  1 -1  2 -2  0 |
///       | 0  1  1  4  4  0 |
///       | 0  1 -1  8 -8  1 |
/// ```
#[allow(clippy::too_many_arguments)]
fn transform_output_run_f4(
    work: &mut OutputWork,
    block: &[f32],
    stride: usize,
    run: &Run,
    ty: usize,
    (oh, ow): (usize, usize),
    plane: &mut [f32],
    epilogue: &OutputEpilogue,
) {
    for t0 in (0..run.len).step_by(BLOCK) {
        let nt = BLOCK.min(run.len - t0);
        let m = |xi: usize| &block[xi * stride + run.at + t0..][..nt];
        // A^T M, down the rows: s[j][i] is row i of column j.
        let s = &mut work.s;
        for (j, [s0, s1, s2, s3]) in s.iter_mut().enumerate() {
            let [m0, m1, m2, m3, m4, m5] = [0, 6, 12, 18, 24, 30].map(|row| m(row + j));
            for t in 0..nt {
                let column = [m0[t], m1[t], m2[t], m3[t], m4[t], m5[t]];
                s0[t] = at::<0>(column);
                s1[t] = at::<1>(column);
                s2[t] = at::<2>(column);
                s3[t] = at::<3>(column);
            }
        }
        // Output columns 4 (tx + t0) .. 4 (tx + t0 + nt), clipped to the plane.
        let (x0, x1) = (4 * (run.tx + t0), (4 * (run.tx + t0 + nt)).min(ow));
        for i in 0..4 {
            let [a0, a1, a2, a3, a4, a5] = s.each_ref().map(|column| &column[i]);
            let oy = 4 * ty + i;
            if oy >= oh {
                continue;
            }
            // (A^T M) A, across the columns, the same combinations.
            let y = &mut work.y;
            for (t, y) in y[..4 * nt].chunks_exact_mut(4).enumerate() {
                let row = [a0[t], a1[t], a2[t], a3[t], a4[t], a5[t]];
                let b = epilogue.bias;
                y.copy_from_slice(&[at::<0>(row), at::<1>(row), at::<2>(row), at::<3>(row)]);
                y.iter_mut().for_each(|y| *y += b);
            }
            let row = &mut plane[oy * ow + x0..oy * ow + x1];
            row.copy_from_slice(&y[..x1 - x0]);
            epilogue.finish(row, oy * ow + x0);
        }
    }
}
