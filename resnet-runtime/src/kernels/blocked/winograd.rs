//! Winograd F(2x2, 3x3) and F(4x4, 3x3) on channel-blocked activations
//! (`[N][C / 16][H][W][16]`), with the NCHW path's transform matrices:
//! each transform works on whole vectors, one pixel's 16 channels each,
//! with no shuffles, and the products per position `ξ` run on the blocked
//! tile kernels, the transformed filters as the vector side and the
//! transformed tiles broadcast.
//!
//! A block of 28 tiles (two of the AVX-512 tile kernel's) goes through
//! the three steps on one thread: the input transform writes `V[ξ]` as a
//! blocked "image" of the block's tiles (`[in / 16][tile][16]`), the tile
//! kernels multiply it by `U[ξ]` into `M[ξ]` (`[out / 16][tile][16]`), and
//! the output transform adds the bias and the residual, clamps, and
//! stores each tile's pixels.

use super::{Far, Panel, Tile as Place, BLOCK};
use crate::kernels::conv::{ConvParams, Shortcut};
use crate::kernels::gemm::{self, Isa, SendPtr};
use crate::kernels::pages::HugeBuf;
use crate::kernels::winograd::{at, bt, Lanes, Tile};
use ndarray::{ArrayView1, ArrayView4};
use std::ops::{Add, Mul, Sub};

/// Tiles a block: two of the AVX-512 tile kernel's 14.
const TILES: usize = 28;

/// Winograd F(2x2, 3x3) or F(4x4, 3x3) on blocked tensors.
#[derive(Clone, Debug)]
pub struct BlockedWinograd {
    isa: Isa,
    params: ConvParams,
    /// Outputs a tile side: 2 or 4.
    n: usize,
    /// Output channels a panel of `U`: 32 on AVX-512, 16 otherwise.
    panel: usize,
    /// `U[ξ]` per position, each as panels of `panel` output channels,
    /// `[in][width]`, in huge pages.
    u: HugeBuf,
    bias: Vec<f32>,
    zeros: [f32; 32],
}

impl BlockedWinograd {
    /// Whether `p` can run here: 3x3, stride 1, padding 1, ungrouped, on
    /// channel counts that are multiples of [`BLOCK`].
    pub fn fits(p: &ConvParams) -> bool {
        p.kernel == 3
            && p.stride == 1
            && p.padding == 1
            && p.groups == 1
            && p.in_channels.is_multiple_of(BLOCK)
            && p.out_channels.is_multiple_of(BLOCK)
    }

    /// Transforms `weight` (`[out, in, 3, 3]`) for tiles of `outputs` (2
    /// or 4) outputs a side: `U = G g G^T`.
    ///
    /// # Panics
    /// If `p` does not [fit](BlockedWinograd::fits), or `weight` or `bias`
    /// does not match it.
    pub fn new(
        isa: Isa,
        outputs: usize,
        params: ConvParams,
        weight: ArrayView4<f32>,
        bias: Option<ArrayView1<f32>>,
    ) -> Self {
        assert!(
            Self::fits(&params),
            "not a blocked Winograd layer: {params:?}"
        );
        let (cin, cout) = (params.in_channels, params.out_channels);
        assert_eq!(weight.dim(), (cout, cin, 3, 3), "weights of {params:?}");
        let g = Tile::with_outputs(outputs).g();
        let side = g.len();
        let panel = if isa == Isa::Avx512 { 32 } else { 16 };
        let mut u = HugeBuf::zeros(side * side * cin * cout);
        for (xi, u) in u.chunks_exact_mut(cin * cout).enumerate() {
            let (gi, gj) = (g[xi / side], g[xi % side]);
            for o in 0..cout {
                let (q, lane) = (o / panel, o % panel);
                let width = panel.min(cout - q * panel);
                for c in 0..cin {
                    let mut v = 0.0;
                    for (a, ga) in gi.iter().enumerate() {
                        for (b, gb) in gj.iter().enumerate() {
                            v += ga * weight[(o, c, a, b)] as f64 * gb;
                        }
                    }
                    u[q * panel * cin + c * width + lane] = v as f32;
                }
            }
        }
        let bias = match bias {
            Some(b) => b.to_vec(),
            None => vec![0.0; cout],
        };
        assert_eq!(bias.len(), cout, "biases of {params:?}");
        BlockedWinograd {
            isa,
            params,
            n: side - 2,
            panel,
            u,
            bias,
            zeros: [0.0; 32],
        }
    }

    /// The convolution's shape.
    pub fn params(&self) -> &ConvParams {
        &self.params
    }

    /// Outputs a tile side: 2 (F(2x2, 3x3)) or 4 (F(4x4, 3x3)).
    pub fn outputs(&self) -> usize {
        self.n
    }

    /// Positions of an input tile.
    fn positions(&self) -> usize {
        (self.n + 2) * (self.n + 2)
    }

    /// Floats from one position to the next in a block's `V` and in its
    /// `M`: a block's tiles of every channel, and one line more. Without
    /// that line the positions lie a multiple of 4 KiB apart whenever the
    /// channel blocks are a multiple of 4 (at 256 channels, every one of
    /// them maps to one set of the L1 cache), so the transforms' stores
    /// and loads, one per position, evict each other.
    fn position_strides(&self) -> (usize, usize) {
        let stride = |channels: usize| channels * TILES + BLOCK;
        (
            stride(self.params.in_channels),
            stride(self.params.out_channels),
        )
    }

    /// Floats of one thread's scratch: `V` and `M` of a block.
    fn scratch_len(&self) -> usize {
        let (v, m) = self.position_strides();
        self.positions() * (v + m)
    }

    /// Floats of workspace [`BlockedWinograd::forward`] needs with `threads` threads.
    pub fn workspace_len(&self, threads: usize) -> usize {
        threads.max(1) * gemm::per_thread(self.scratch_len())
    }

    /// `out = relu?(conv(x) + bias + shortcut)` for `n` images, all
    /// blocked: a residual of every output channel, or with
    /// [`Shortcut::InPlace`] what `out` holds on entry.
    ///
    /// Threads take even shares of the batch's tiles, a block at a time;
    /// or, where there are fewer blocks than threads or (F(2x2)) the
    /// filters outweigh the transformed tiles, each thread transforms every
    /// block's inputs and takes a share of the output channels.
    ///
    /// # Panics
    /// If a slice's length does not match `n` images, or the workspace is short.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        x: &[f32],
        n: usize,
        out: &mut [f32],
        shortcut: Shortcut,
        relu: bool,
        workspace: &mut [f32],
        threads: usize,
    ) {
        let p = &self.params;
        let (h, w) = (p.in_h, p.in_w);
        assert_eq!(x.len(), n * p.in_channels * h * w, "input of {n} images");
        assert_eq!(
            out.len(),
            n * p.out_channels * h * w,
            "output of {n} images"
        );
        if let Shortcut::Add(r, channels) = shortcut {
            assert_eq!(channels, p.out_channels, "a residual of every channel");
            assert_eq!(r.len(), out.len(), "residual of {n} images");
        }
        let threads = threads.max(1);
        gemm::check_workspace(workspace, self.workspace_len(threads), threads);
        let tiles = n * h.div_ceil(self.n) * w.div_ceil(self.n);
        let blocks = tiles.div_ceil(TILES);
        let panels = p.out_channels.div_ceil(self.panel);
        let out = SendPtr(out.as_mut_ptr());
        let residual = match shortcut {
            Shortcut::Add(r, _) => r.as_ptr(),
            Shortcut::InPlace => out.0.cast_const(),
            Shortcut::None => std::ptr::null(),
        };
        let residual = SendPtr(residual.cast_mut());
        // As for the blocked direct kernels: threads share the tiles when
        // there are enough and the transformed inputs outweigh the filters
        // (each such thread reads all of them), else the output panels. But
        // threads that share the panels each transform every tile, reading
        // the input that the other threads wrote, and F(4x4)'s transform,
        // 36 positions a tile, outweighs reading all its filters: so F(4x4)
        // shares the tiles wherever every thread has a block: at batch 1
        // the three 128-channel layers at 28x28 went 0.85-0.87 -> 0.74-0.80
        // ms in ResNet-18 and 0.88-1.01 -> 0.84-0.92 ms in ResNet-50. F(2x2)
        // at 14x14 (4.2 MB of filters at 256 channels) was slower so.
        let by_tiles = blocks >= threads
            && (self.n == 4 || self.u.len() <= tiles * self.positions() * p.in_channels);
        let threads = threads.min(if by_tiles { blocks } else { panels });
        let work = |(thread, scratch): (usize, &mut [f32])| {
            let (share, panels) = if by_tiles {
                (
                    thread * tiles / threads..(thread + 1) * tiles / threads,
                    0..panels,
                )
            } else {
                (
                    0..tiles,
                    thread * panels / threads..(thread + 1) * panels / threads,
                )
            };
            for t0 in share.clone().step_by(TILES) {
                let block = t0..(t0 + TILES).min(share.end);
                // SAFETY: each tile's output pixels of these panels are this
                // thread's alone (the shares partition tiles or panels); the
                // lengths were checked.
                unsafe { self.block(x, block, panels.clone(), out, residual, relu, scratch) };
            }
        };
        gemm::on_threads(workspace, self.scratch_len(), threads, work);
    }

    /// The three steps for tiles `block` and output panels `panels`.
    ///
    /// # Safety
    /// `out` (and `residual`, if not null) hold the batch; no other thread
    /// writes these tiles' pixels of these panels' channels.
    #[allow(clippy::too_many_arguments)]
    unsafe fn block(
        &self,
        x: &[f32],
        block: std::ops::Range<usize>,
        panels: std::ops::Range<usize>,
        out: SendPtr,
        residual: SendPtr,
        relu: bool,
        scratch: &mut [f32],
    ) {
        let p = &self.params;
        let (cin, cout, h, w, n) = (p.in_channels, p.out_channels, p.in_h, p.in_w, self.n);
        let (th, tw) = (h.div_ceil(n), w.div_ceil(n));
        let (cb, positions) = (cin / BLOCK, self.positions());
        let (v_pos, m_pos) = self.position_strides();
        let (v, m) = scratch.split_at_mut(positions * v_pos);
        let nt = block.len();
        let place = |t: usize| {
            let (image, r) = (t / (th * tw), t % (th * tw));
            (image, n * (r / tw), n * (r % tw))
        };
        #[cfg(target_arch = "x86_64")]
        let simd = self.isa;
        // Input transform, block by block: one block's tiles read
        // neighbouring pixels of one plane and write neighbouring lines of
        // each position, streams the prefetcher follows; tile by tile, each
        // step jumped to another plane (128 channels at 28x28 alone, batch
        // 8: 2.00 -> 1.89 ms; with the output's below, 1.81 ms).
        for b in 0..cb {
            let mut i = 0;
            while i < nt {
                // A run of the block's tiles along one row of tiles.
                let (image, y0, x0) = place(block.start + i);
                let run = (tw - x0 / n).min(nt - i);
                let plane = &x[((image * cb + b) * h * w) * BLOCK..][..h * w * BLOCK];
                let to = v[(b * TILES + i) * BLOCK..][..((positions - 1) * v_pos + run * BLOCK)]
                    .as_mut_ptr();
                i += run;
                let at = (y0 as isize - 1, x0 as isize - 1);
                // SAFETY: the run's tiles, `BLOCK` apart, and their
                // positions, `v_pos` apart, lie in `v` (sliced above).
                unsafe {
                    #[cfg(target_arch = "x86_64")]
                    if simd == Isa::Avx512 {
                        match n {
                            2 => x86::input_run::<2>(plane, (h, w), at, run, to, v_pos),
                            _ => x86::input_run::<4>(plane, (h, w), at, run, to, v_pos),
                        }
                        continue;
                    }
                    match n {
                        2 => input_run::<Portable, 2>(plane, (h, w), at, run, to, v_pos),
                        _ => input_run::<Portable, 4>(plane, (h, w), at, run, to, v_pos),
                    }
                }
            }
        }
        // Products, position by position.
        let first = panels.start * self.panel;
        let last = (panels.end * self.panel).min(cout);
        for xi in 0..positions {
            for o0 in (first..last).step_by(self.panel) {
                let width = self.panel.min(cout - o0);
                let panel = Panel {
                    k: cin,
                    taps: &[0],
                    width,
                    w: self.u[(xi * cout + o0) * cin..].as_ptr(),
                    bias: self.zeros.as_ptr(),
                    first: 0,
                    relu: false,
                };
                let group = if self.panel == 32 { 14 } else { 6 };
                for g0 in (0..nt).step_by(group) {
                    let len = group.min(nt - g0);
                    let tile = Place {
                        x: v[xi * v_pos + g0 * BLOCK..].as_ptr(),
                        x_plane: TILES * BLOCK,
                        out: m[xi * m_pos + (o0 / BLOCK * TILES + g0) * BLOCK..].as_mut_ptr(),
                        out_block: TILES * BLOCK,
                        residual: std::ptr::null(),
                        residual_rows: 0,
                        jump: 0,
                        planar: false,
                        far: Far::ahead(width),
                    };
                    // SAFETY: the tile's `len` tiles of every input block lie
                    // in `V[ξ]`, its outputs in `M[ξ]`; the weights were
                    // packed for a kernel this CPU has.
                    unsafe {
                        #[cfg(target_arch = "x86_64")]
                        match simd {
                            Isa::Avx512 => {
                                super::x86::avx512(&panel, &tile, len, 1);
                                continue;
                            }
                            Isa::Avx2 => {
                                super::x86::avx2(&panel, &tile, len, 1);
                                continue;
                            }
                            _ => {}
                        }
                        super::portable(&panel, &tile, len, 1, len);
                    }
                }
            }
        }
        // Output transform, block by block, as the input's.
        for o in first / BLOCK..last / BLOCK {
            for (i, t) in block.clone().enumerate() {
                let (image, y0, x0) = place(t);
                let from = m[(o * TILES + i) * BLOCK..].as_ptr();
                let at = ((image * cout / BLOCK + o) * h * w + y0 * w + x0) * BLOCK;
                let bias = self.bias[o * BLOCK..][..BLOCK].as_ptr();
                let rows = (n.min(h - y0), n.min(w - x0));
                // SAFETY: `M`'s positions lie in `m`; the pixels in `out`
                // (and the residual) lie in this image's block `o` (the
                // caller's contract).
                unsafe {
                    let to = out.add(at).0;
                    let r = if residual.0.is_null() {
                        std::ptr::null()
                    } else {
                        residual.add(at).0.cast_const()
                    };
                    #[cfg(target_arch = "x86_64")]
                    if simd == Isa::Avx512 {
                        match n {
                            2 => x86::output_tile::<2>(from, m_pos, bias, to, r, w, rows, relu),
                            _ => x86::output_tile::<4>(from, m_pos, bias, to, r, w, rows, relu),
                        }
                        continue;
                    }
                    match n {
                        2 => output_tile::<Portable, 2>(from, m_pos, bias, to, r, w, rows, relu),
                        _ => output_tile::<Portable, 4>(from, m_pos, bias, to, r, w, rows, relu),
                    }
                }
            }
        }
    }
}

/// What the transforms compute with: one pixel's 16 channels.
trait Vector: Lanes
where
    f32: Mul<Self, Output = Self>,
{
    fn zero() -> Self;
    /// # Safety
    /// `p` is valid for 16 reads.
    unsafe fn load(p: *const f32) -> Self;
    /// # Safety
    /// `p` is valid for 16 writes.
    unsafe fn store(self, p: *mut f32);
    fn relu(self) -> Self;
}

/// Sixteen lanes in plain Rust.
#[derive(Clone, Copy)]
struct Portable([f32; BLOCK]);

impl Lanes for Portable {}

impl Add for Portable {
    type Output = Portable;
    #[inline(always)]
    fn add(self, o: Portable) -> Portable {
        Portable(std::array::from_fn(|i| self.0[i] + o.0[i]))
    }
}

impl Sub for Portable {
    type Output = Portable;
    #[inline(always)]
    fn sub(self, o: Portable) -> Portable {
        Portable(std::array::from_fn(|i| self.0[i] - o.0[i]))
    }
}

impl Mul<Portable> for f32 {
    type Output = Portable;
    #[inline(always)]
    fn mul(self, v: Portable) -> Portable {
        Portable(v.0.map(|x| self * x))
    }
}

impl Vector for Portable {
    fn zero() -> Self {
        Portable([0.0; BLOCK])
    }
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller's contract.
        Portable(unsafe { *p.cast::<[f32; BLOCK]>() })
    }
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller's contract.
        unsafe { *p.cast::<[f32; BLOCK]>() = self.0 }
    }
    fn relu(self) -> Self {
        Portable(self.0.map(|x| x.max(0.0)))
    }
}

/// `B^T` of F(N x N, 3x3) on the first `N + 2` of six values.
#[inline(always)]
fn bt_all<V: Vector, const N: usize>(c: [V; 6]) -> [V; 6]
where
    f32: Mul<V, Output = V>,
{
    if N == 2 {
        let z = V::zero();
        return [c[0] - c[2], c[1] + c[2], c[2] - c[1], c[1] - c[3], z, z];
    }
    [
        bt::<0, V>(c),
        bt::<1, V>(c),
        bt::<2, V>(c),
        bt::<3, V>(c),
        bt::<4, V>(c),
        bt::<5, V>(c),
    ]
}

/// `A^T` of F(N x N, 3x3) on the first `N + 2` of six values.
#[inline(always)]
fn at_all<V: Vector, const N: usize>(m: [V; 6]) -> [V; 4]
where
    f32: Mul<V, Output = V>,
{
    if N == 2 {
        let z = V::zero();
        return [m[0] + m[1] + m[2], m[1] - m[2] - m[3], z, z];
    }
    [at::<0, V>(m), at::<1, V>(m), at::<2, V>(m), at::<3, V>(m)]
}

/// `V = B^T d B` of `tiles` tiles side by side along a row of tiles, the
/// first's `N + 2` square from `(y0, x0)` (zero outside the `(h, w)`
/// plane): tile `k`'s position `ξ` stored at `to + k * 16 + ξ * stride`.
///
/// `B^T` runs down each column of pixels once: a tile's last two columns
/// are the next one's first two.
///
/// # Safety
/// `to` is valid for 16 writes at each tile's every position.
#[inline(always)]
unsafe fn input_run<V: Vector, const N: usize>(
    plane: &[f32],
    (h, w): (usize, usize),
    (y0, x0): (isize, isize),
    tiles: usize,
    to: *mut f32,
    stride: usize,
) where
    f32: Mul<V, Output = V>,
{
    let side = N + 2;
    assert!(plane.len() >= h * w * BLOCK);
    let rows_inside = y0 >= 0 && y0 as usize + side <= h;
    let down = |x| down_column::<V, N>(plane, (h, w), (y0, x), rows_inside);
    let mut columns = [[V::zero(); 6]; 6];
    for (c, column) in columns.iter_mut().enumerate().take(side - N) {
        *column = down(x0 + c as isize);
    }
    for k in 0..tiles {
        let x = x0 + (N * k) as isize;
        for (c, column) in columns.iter_mut().enumerate().take(side).skip(side - N) {
            *column = down(x + c as isize);
        }
        // `B^T` across each row of the columns' results.
        let rows: [[V; 6]; 6] = std::array::from_fn(|i| std::array::from_fn(|c| columns[c][i]));
        for (i, row) in rows.into_iter().enumerate().take(side) {
            for (j, v) in bt_all::<V, N>(row).into_iter().enumerate().take(side) {
                // SAFETY: the caller's contract.
                unsafe { v.store(to.add(k * BLOCK + (side * i + j) * stride)) };
            }
        }
        columns.copy_within(N..side, 0);
    }
}

/// `B^T` down the `N + 2` pixels of column `x` from row `y0` (zero
/// outside the `(h, w)` plane; `rows_inside` if all those rows lie in it).
#[inline(always)]
fn down_column<V: Vector, const N: usize>(
    plane: &[f32],
    (h, w): (usize, usize),
    (y0, x): (isize, isize),
    rows_inside: bool,
) -> [V; 6]
where
    f32: Mul<V, Output = V>,
{
    let mut column = [V::zero(); 6];
    if x >= 0 && (x as usize) < w {
        let top = plane
            .as_ptr()
            .wrapping_offset((y0 * w as isize + x) * BLOCK as isize);
        for (r, v) in column.iter_mut().enumerate().take(N + 2) {
            let y = y0 + r as isize;
            if rows_inside || (y >= 0 && (y as usize) < h) {
                // SAFETY: pixel `(y, x)` lies in the plane (checked here,
                // or by the caller for every row).
                *v = unsafe { V::load(top.wrapping_add(r * w * BLOCK)) };
            }
        }
    }
    bt_all::<V, N>(column)
}

/// `Y = A^T M A + bias (+ residual)`, clamped if `relu`, of the tile whose
/// position `ξ` is at `from + ξ * stride`, stored to its `rows` pixels
/// from `to` in a plane `w` pixels wide.
///
/// # Safety
/// `from` is valid for reads at every position, `bias` for 16; `to` (and
/// `residual` unless null) for the tile's pixels.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn output_tile<V: Vector, const N: usize>(
    from: *const f32,
    stride: usize,
    bias: *const f32,
    to: *mut f32,
    residual: *const f32,
    w: usize,
    (rows, cols): (usize, usize),
    relu: bool,
) where
    f32: Mul<V, Output = V>,
{
    let side = N + 2;
    // SAFETY: the caller's contract.
    unsafe {
        let bias = V::load(bias);
        // `A^T` down each column, then across each row of the result.
        let down: [[V; 4]; 6] = std::array::from_fn(|j| {
            let column: [V; 6] = std::array::from_fn(|i| {
                if i < side && j < side {
                    V::load(from.add((side * i + j) * stride))
                } else {
                    V::zero()
                }
            });
            at_all::<V, N>(column)
        });
        let s: [[V; 6]; 4] = std::array::from_fn(|a| std::array::from_fn(|j| down[j][a]));
        for (a, row) in s.into_iter().enumerate().take(rows) {
            for (b, y) in at_all::<V, N>(row).into_iter().enumerate().take(cols) {
                let at = (a * w + b) * BLOCK;
                let mut y = y + bias;
                if !residual.is_null() {
                    y = y + V::load(residual.add(at));
                }
                if relu {
                    y = y.relu();
                }
                y.store(to.add(at));
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Vector;
    use crate::kernels::winograd::simd_lanes;
    use std::arch::x86_64::*;

    /// One pixel's 16 channels in a register.
    #[derive(Clone, Copy)]
    pub(super) struct Z(__m512);

    // The operations run only inside this module's AVX-512 functions,
    // where the CPU has AVX-512F (the weights were packed for it).
    simd_lanes!(
        Z,
        _mm512_add_ps,
        _mm512_sub_ps,
        _mm512_mul_ps,
        _mm512_set1_ps
    );

    impl Vector for Z {
        #[inline(always)]
        fn zero() -> Self {
            // SAFETY: as above.
            Z(unsafe { _mm512_setzero_ps() })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: the caller's contract.
            Z(unsafe { _mm512_loadu_ps(p) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: the caller's contract.
            unsafe { _mm512_storeu_ps(p, self.0) }
        }
        #[inline(always)]
        fn relu(self) -> Self {
            // SAFETY: as above.
            Z(unsafe { _mm512_max_ps(self.0, _mm512_setzero_ps()) })
        }
    }

    /// [`super::input_run`] on AVX-512.
    ///
    /// # Safety
    /// As there; the CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn input_run<const N: usize>(
        plane: &[f32],
        hw: (usize, usize),
        at: (isize, isize),
        tiles: usize,
        to: *mut f32,
        stride: usize,
    ) {
        // SAFETY: the caller's contract.
        unsafe { super::input_run::<Z, N>(plane, hw, at, tiles, to, stride) }
    }

    /// [`super::output_tile`] on AVX-512.
    ///
    /// # Safety
    /// As there; the CPU has AVX-512F.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn output_tile<const N: usize>(
        from: *const f32,
        stride: usize,
        bias: *const f32,
        to: *mut f32,
        residual: *const f32,
        w: usize,
        rows: (usize, usize),
        relu: bool,
    ) {
        // SAFETY: the caller's contract.
        unsafe { super::output_tile::<Z, N>(from, stride, bias, to, residual, w, rows, relu) }
    }
}
