//! Cache-blocked, packed GEMM with fused epilogues: `C = epilogue(A · B)`.
//!
//! `A` (`M x K`, the weights) is packed once, ahead of time, into `MR`-row
//! panels ([`PackedWeights`]). `B` (`K x N`, the activations) is packed on
//! the fly, `KC x NC` at a time, into `NR`-column panels by a [`PackB`], so
//! a convolution packs straight from its input image (no im2col buffer).
//! Each `MR x NR` tile of `C` is computed by a SIMD micro-kernel chosen at
//! run time (`micro.rs`), and its epilogue (bias, residual add, ReLU) is
//! applied while the tile is still in L1, so every output is written once.
//!
//! Work is split into tasks (blocks of `C`) and the tasks into `threads`
//! contiguous runs. Every output element is reduced by one task in
//! ascending `k`, so results are bit-identical for any number of threads.

#[cfg(target_arch = "x86_64")]
use super::micro::{Avx2, Avx512, Avx512Wide};
use super::micro::{MicroKernel, Portable, TileEpilogue, THIN_PANELS};
use super::pages::HugeBuf;
use super::parallel::join_awake;
use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;
use std::sync::OnceLock;

/// Depth of one packed block of `B` (rows of `K`). The deep layers (`K` of
/// 1024 to 4608) then sum into `C` over half as many blocks as at 256,
/// 1.3% off ResNet-50 at batch 1; an `MR x KC` panel of `A` (16 KiB)
/// still sits in L1 beside its tile. A product whose whole `B` packs
/// into 1 MiB takes it in one block instead.
pub const KC: usize = 512;
/// Most rows of `C` in one task.
const MC: usize = 512;
/// Most columns of `C` in one task, whose `KC x NC` packed block of `B`
/// each `MR x KC` panel of `A` is swept along. At batch 1 below 56x56 a
/// task has at most 784 columns; a 14x14 image's 196 make a 400 KiB block,
/// which stays in L2.
pub const NC: usize = 1024;
/// Most floats of a task's packed block of `B`: 1 MiB, half of L2, so that
/// the block and the panels of `A` swept along it stay there. It holds
/// `NC` columns up to 256 deep; deeper layers take fewer columns a task
/// (a 28x28 image's 784 columns 512 deep went 11% faster at batch 8 in
/// two tasks than in one 1.6 MiB block; batch 1 unchanged).
const PACKED_B: usize = 1 << 18;
/// The widest tile (`NR`) of an instruction set's kernel ([`Isa::tile`]),
/// which every strategy runs on.
pub(crate) const TILE_NR: usize = 32;
/// The widest tile of any kernel, the GEMM's wider one included.
pub(crate) const MAX_NR: usize = 48;
/// The largest `MR x NR` of any kernel.
const MAX_TILE: usize = 8 * MAX_NR;
// Every kernel's tile fits the bounds above.
const _: () = assert!(Portable::NR <= TILE_NR && Portable::MR * Portable::NR <= MAX_TILE);
#[cfg(target_arch = "x86_64")]
const _: () = assert!(
    Avx512::NR <= TILE_NR
        && Avx2::NR <= TILE_NR
        && Avx512Wide::NR <= MAX_NR
        && Avx512::MR * Avx512::NR <= MAX_TILE
        && Avx2::MR * Avx2::NR <= MAX_TILE
        && Avx512Wide::MR == Avx512::MR
        && Avx512Wide::MR * Avx512Wide::NR <= MAX_TILE
);

/// Floats of workspace that [`gemm`] and the convolutions need for
/// `threads` threads: one packed block of `B` per thread.
pub const fn workspace_len(threads: usize) -> usize {
    threads * per_thread(KC * NC)
}

/// Floats of workspace one thread takes for `floats` of scratch: with room
/// to start it on a cache line (see [`on_threads`]).
pub(crate) const fn per_thread(floats: usize) -> usize {
    floats + ALIGN
}

/// Floats in a 64-byte cache line.
const ALIGN: usize = 16;

/// The instruction set a micro-kernel uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512F, 8 x 32 tiles.
    Avx512,
    /// AVX2 with FMA, 6 x 16 tiles.
    Avx2,
    /// Plain Rust, 4 x 16 tiles: runs anywhere, the reference for the others.
    Portable,
}

impl Isa {
    /// The fastest instruction set this CPU supports (detected once).
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            [Isa::Avx512, Isa::Avx2]
                .into_iter()
                .find(|isa| isa.is_supported())
                .unwrap_or(Isa::Portable)
        })
    }

    /// Whether this CPU can run the instruction set.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every instruction set this CPU supports.
    pub fn supported() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx2, Isa::Portable]
            .into_iter()
            .filter(|isa| isa.is_supported())
            .collect()
    }

    /// `(MR, NR)` of this instruction set's micro-kernel.
    pub fn tile(self) -> (usize, usize) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => (Avx512::MR, Avx512::NR),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => (Avx2::MR, Avx2::NR),
            _ => (Portable::MR, Portable::NR),
        }
    }
}

/// `A` (`M x K`, row-major weights) packed for one instruction set's
/// micro-kernel: `MR`-row panels, each `K` steps of `MR` values; the rows
/// past `M` of the last panel are zero. The panels lie in huge pages
/// where the system grants them (see the `pages` module).
#[derive(Clone, Debug, PartialEq)]
pub struct PackedWeights {
    isa: Isa,
    m: usize,
    k: usize,
    data: HugeBuf,
}

impl PackedWeights {
    /// Packs `a` (`M x K`, any strides). Where `a` is row-major and needs
    /// no padding (`M` a multiple of `MR`), each panel's `MR` rows are
    /// contiguous, and packing is a transpose within the panel.
    ///
    /// # Panics
    /// If `a` is empty or `isa` is not supported by this CPU.
    pub fn new(isa: Isa, a: ArrayView2<f32>) -> Self {
        let (m, k) = a.dim();
        assert!(m > 0 && k > 0, "cannot pack an empty {m} x {k} matrix");
        assert!(isa.is_supported(), "{isa:?} is not supported by this CPU");
        let mr = isa.tile().0;
        let panels = m.div_ceil(mr);
        let mut data = HugeBuf::zeros(panels * mr * k);
        let panels = data.chunks_exact_mut(mr * k);
        match a.as_slice().filter(|_| m.is_multiple_of(mr)) {
            Some(rows) => {
                for (panel, rows) in panels.zip(rows.chunks_exact(mr * k)) {
                    for (i, row) in rows.chunks_exact(k).enumerate() {
                        for (kk, &v) in row.iter().enumerate() {
                            panel[kk * mr + i] = v;
                        }
                    }
                }
            }
            None => {
                for (p, panel) in panels.enumerate() {
                    for (kk, column) in panel.chunks_exact_mut(mr).enumerate() {
                        for (i, x) in column.iter_mut().enumerate() {
                            if let Some(&v) = a.get((p * mr + i, kk)) {
                                *x = v;
                            }
                        }
                    }
                }
            }
        }
        PackedWeights { isa, m, k, data }
    }

    /// Rows (`M`).
    pub fn rows(&self) -> usize {
        self.m
    }

    /// Depth (`K`).
    pub fn depth(&self) -> usize {
        self.k
    }

    /// The instruction set it was packed for.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Panel `p` from depth `k0` on.
    pub(crate) fn panel(&self, p: usize, k0: usize) -> &[f32] {
        &self.panels(p, k0)[..self.panel_len() - k0 * self.isa.tile().0]
    }

    /// Panels `p..` from depth `k0` on: panel `p + q` starts `q *`
    /// [`PackedWeights::panel_len`] floats in.
    pub(crate) fn panels(&self, p: usize, k0: usize) -> &[f32] {
        &self.data[p * self.panel_len() + k0 * self.isa.tile().0..]
    }

    /// Floats in one panel.
    pub(crate) fn panel_len(&self) -> usize {
        self.isa.tile().0 * self.k
    }
}

/// A source of `B` (`K x N`) that packs itself into `NR`-column panels.
pub trait PackB: Sync {
    /// Packs rows `k0..k0 + kc` and columns `n0..n0 + nc` of `B` into `out`:
    /// panel `j` (columns `n0 + j * nr ..`) at `out[j * kc * nr ..]`, `nr`
    /// values per row; columns past `n0 + nc` are zero.
    fn pack(&self, k0: usize, kc: usize, n0: usize, nc: usize, nr: usize, out: &mut [f32]);

    /// What packing a column of `B` costs, in row panels' worth of
    /// multiply-adds (see `Split`): 2 for a copy.
    fn pack_cost(&self) -> usize {
        2
    }

    /// `B` where it lies, if its rows can be read so: the elements, row `k`
    /// from `data[k * ld]`, and `ld`. `None` (the default) where it must
    /// be packed.
    fn in_place(&self) -> Option<(&[f32], usize)> {
        None
    }
}

/// A row-major matrix as `B`: row `k` starts at `data[k * ld]`.
#[derive(Clone, Copy, Debug)]
pub struct DenseB<'a> {
    /// The elements.
    pub data: &'a [f32],
    /// Distance between rows.
    pub ld: usize,
}

impl PackB for DenseB<'_> {
    fn in_place(&self) -> Option<(&[f32], usize)> {
        Some((self.data, self.ld))
    }

    fn pack(&self, k0: usize, kc: usize, n0: usize, nc: usize, nr: usize, out: &mut [f32]) {
        // Rows outer: each row's columns are read front to back, a stream
        // the prefetcher follows; panels outer read a cache line or two from
        // each of `kc` rows a page or more apart.
        for k in 0..kc {
            let row = &self.data[(k0 + k) * self.ld + n0..][..nc];
            for (j, src) in row.chunks(nr).enumerate() {
                let dst = &mut out[(j * kc + k) * nr..][..nr];
                match (
                    <&[f32; 32]>::try_from(src),
                    <&mut [f32; 32]>::try_from(&mut *dst),
                ) {
                    // A whole panel row of the widest kernel's, copied inline.
                    (Ok(src), Ok(dst)) => *dst = *src,
                    _ => {
                        dst[..src.len()].copy_from_slice(src);
                        dst[src.len()..].fill(0.0);
                    }
                }
            }
        }
    }
}

/// What is applied to each element of `C` after the product:
/// `relu(c + bias[row] + residual[row][col])`, each part optional, where
/// `c` is the product, or with `accumulate` the product added to `C`'s
/// value on entry.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// One value per row of `C` (a folded batch norm's shift).
    pub bias: Option<&'a [f32]>,
    /// Added element by element.
    pub residual: Option<Residual<'a>>,
    /// Clamp at zero last.
    pub relu: bool,
    /// Add the product to what `C` holds rather than replace it: `C` is
    /// then its own residual, added in place.
    pub accumulate: bool,
}

/// A residual added to `C`: row `i < rows` starts at `data[i * ld]`; rows
/// from `rows` on add nothing, which is the paper's zero-padded shortcut
/// (option A) when the residual has fewer channels than the output.
#[derive(Clone, Copy, Debug)]
pub struct Residual<'a> {
    /// The elements.
    pub data: &'a [f32],
    /// Distance between rows.
    pub ld: usize,
    /// Rows present.
    pub rows: usize,
}

impl Epilogue<'_> {
    /// For the depth block `k0..k0 + kc` of a product `depth` deep: whether
    /// the micro-kernel adds to `C` (every block after the first, or all of
    /// them with `accumulate`), and whether the block is the last, which
    /// applies the epilogue.
    pub(crate) fn depth_block(&self, k0: usize, kc: usize, depth: usize) -> (bool, bool) {
        (k0 > 0 || self.accumulate, k0 + kc == depth)
    }

    fn is_identity(&self) -> bool {
        self.bias.is_none() && self.residual.is_none() && !self.relu
    }

    /// The epilogue of the tile of whole rows at `(m0, n0)`, for the micro-kernel.
    fn tile(&self, m0: usize, n0: usize) -> TileEpilogue {
        let residual = self.residual.filter(|r| m0 < r.rows);
        TileEpilogue {
            bias: self.bias.map_or(std::ptr::null(), |b| b[m0..].as_ptr()),
            residual: residual.map_or(std::ptr::null(), |r| r.data[m0 * r.ld + n0..].as_ptr()),
            residual_ld: residual.map_or(0, |r| r.ld),
            residual_rows: residual.map_or(0, |r| r.rows - m0),
            relu: self.relu,
        }
    }

    /// Applies to rows `m0..m0 + mr`, columns `n0..n0 + nr` of `C`.
    ///
    /// # Safety
    /// `c` must point at element `(m0, n0)` of `C` with rows at stride `ldc`,
    /// valid for `mr` rows of `nr` elements.
    unsafe fn apply(&self, m0: usize, mr: usize, n0: usize, nr: usize, c: *mut f32, ldc: usize) {
        if self.is_identity() {
            return;
        }
        for i in 0..mr {
            // SAFETY: row `i < mr` of the tile holds `nr` elements (the caller's contract).
            let row = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), nr) };
            let m = m0 + i;
            if let Some(bias) = self.bias {
                let b = bias[m];
                row.iter_mut().for_each(|x| *x += b);
            }
            if let Some(r) = self.residual.filter(|r| m < r.rows) {
                let add = &r.data[m * r.ld + n0..m * r.ld + n0 + nr];
                row.iter_mut().zip(add).for_each(|(x, a)| *x += a);
            }
            if self.relu {
                row.iter_mut().for_each(|x| *x = x.max(0.0));
            }
        }
    }
}

/// One product `C = epilogue(A · B)`, `C` at `c` with rows at stride `ldc`.
#[derive(Clone, Copy)]
pub(crate) struct Job<'a, B> {
    pub a: &'a PackedWeights,
    pub b: B,
    pub n: usize,
    pub c: SendPtr,
    pub ldc: usize,
    pub epilogue: Epilogue<'a>,
}

/// A pointer to one job's `C`, shared by the tasks that write its disjoint blocks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SendPtr(pub *mut f32);
// SAFETY: tasks write disjoint blocks of `C` (`run_jobs` splits each job's
// rows and columns without overlap), and jobs' `C`s are disjoint by the
// contract of `run_jobs`.
unsafe impl Send for SendPtr {}
// SAFETY: as above; the pointer is only dereferenced inside its own task's block.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer `count` floats on, as `<*mut f32>::add`. Taking `self` by
    /// value makes closures capture the `Sync` wrapper, not the raw pointer.
    ///
    /// # Safety
    /// As `<*mut f32>::add`: the result must stay inside the same allocation.
    pub unsafe fn add(self, count: usize) -> SendPtr {
        // SAFETY: the caller's contract.
        SendPtr(unsafe { self.0.add(count) })
    }
}

/// How a call's jobs, all of one shape, are cut into tasks: blocks of `C`
/// of at most `MC` rows and `NC` columns, enough of them to give each thread
/// one or two, each thread taking a contiguous run of tasks. Of the ways to
/// cut, cutting columns first or rows first, it keeps the one whose busiest
/// thread has the least work, counting packing: a task packs its columns of
/// `B` once per depth block, however many rows it has.
#[derive(Clone, Copy, Debug)]
struct Split {
    m: usize,
    n: usize,
    mc: usize,
    nc: usize,
    /// Depth of a packed block of `B`.
    kc: usize,
    row_blocks: usize,
    col_blocks: usize,
}

impl Split {
    fn new<K: MicroKernel>(
        (m, k, n): (usize, usize, usize),
        jobs: usize,
        threads: usize,
        pack_cost: usize,
    ) -> Split {
        let (mr, nr) = (K::MR, K::NR);
        // One depth block where a job's whole `B` fits the budget (the
        // narrow layers of small batches): each row panel of `A` then
        // streams from memory in one run, its prefetch reaching on into
        // the next panel, which follows it in memory, rather than jumping
        // to the next panel's block a panel's length away (ResNet-50 at
        // batch 1: 0.2 to 0.4 ms a pass, 9 of 13 alternated runs faster).
        let kc = if k * n.next_multiple_of(nr) <= PACKED_B {
            k
        } else {
            k.min(KC)
        };
        let most = (PACKED_B / kc).clamp(nr, NC) / nr * nr;
        let cut = |wanted: usize, columns_first: bool| {
            // Column blocks of whole panels, as even as their count allows.
            let panels = n.div_ceil(nr);
            let col_blocks = if columns_first {
                wanted.min(panels).max(n.div_ceil(most))
            } else {
                n.div_ceil(most)
            };
            let nc = (panels.div_ceil(col_blocks) * nr).min(most);
            let col_blocks = n.div_ceil(nc);
            let rows = m.div_ceil(wanted.div_ceil(col_blocks).max(m.div_ceil(MC)));
            let mc = rows.next_multiple_of(mr).min(MC / mr * mr);
            Split {
                m,
                n,
                mc,
                nc,
                kc,
                row_blocks: m.div_ceil(mc),
                col_blocks,
            }
        };
        let wanted = |per_thread: usize| (per_thread * threads).div_ceil(jobs);
        [
            cut(wanted(2), true),
            cut(wanted(1), true),
            cut(wanted(2), false),
            cut(wanted(1), false),
        ]
        .into_iter()
        .min_by_key(|split| split.busiest::<K>(jobs, threads, pack_cost))
        .expect("four candidates")
    }

    /// Work of the busiest thread: for each of its tasks, its row panels
    /// times their work across its columns ([`row_work`]), plus packing its
    /// columns (counted as `pack_cost` whole row panels' worth, see
    /// [`PackB::pack_cost`]).
    fn busiest<K: MicroKernel>(&self, jobs: usize, threads: usize, pack_cost: usize) -> usize {
        let (mr, nr) = (K::MR, K::NR);
        let total = jobs * self.per_job();
        let threads = threads.min(total).max(1);
        (0..threads)
            .map(|thread| {
                (thread * total / threads..(thread + 1) * total / threads)
                    .map(|t| {
                        let (_, (r0, r1), (c0, c1)) = self.task(t);
                        let rows = (r1 - r0).div_ceil(mr);
                        rows * row_work::<K>(c1 - c0) + pack_cost * (c1 - c0).next_multiple_of(nr)
                    })
                    .sum::<usize>()
            })
            .max()
            .unwrap_or(0)
    }

    fn per_job(&self) -> usize {
        self.row_blocks * self.col_blocks
    }

    /// Task `t`: its job, rows and columns. A job's tasks that share columns are consecutive.
    fn task(&self, t: usize) -> (usize, (usize, usize), (usize, usize)) {
        let (job, t) = (t / self.per_job(), t % self.per_job());
        let (r0, c0) = (t % self.row_blocks * self.mc, t / self.row_blocks * self.nc);
        (
            job,
            (r0, (r0 + self.mc).min(self.m)),
            (c0, (c0 + self.nc).min(self.n)),
        )
    }
}

/// Computes jobs `job(0) .. job(count - 1)`, which all have the shape of
/// the first, spread over `threads` threads. Allocates nothing.
///
/// # Safety
/// Each job's `C` must be valid for writes of `a.rows()` rows of `n` elements
/// at stride `ldc`, and no two jobs' `C`s may overlap each other or any
/// input. All jobs' weights must be packed for one instruction set.
///
/// # Panics
/// If the workspace is shorter than [`workspace_len`]`(threads)` or a job's
/// shape differs from the first's.
pub(crate) unsafe fn run_jobs<'a, B, F>(
    count: usize,
    job: &F,
    workspace: &mut [f32],
    threads: usize,
) where
    B: PackB,
    F: Fn(usize) -> Job<'a, B> + Sync,
{
    if count == 0 {
        return;
    }
    let first = job(0);
    let threads = threads.max(1);
    check_workspace(workspace, workspace_len(threads), threads);
    // SAFETY: forwarded from the caller; the instruction set is supported
    // because packing checked it.
    unsafe {
        match first.a.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if wide_suits(first.n) => {
                run_on::<Avx512Wide, B, F>(&first, count, job, workspace, threads)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => run_on::<Avx512, B, F>(&first, count, job, workspace, threads),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => run_on::<Avx2, B, F>(&first, count, job, workspace, threads),
            _ => run_on::<Portable, B, F>(&first, count, job, workspace, threads),
        }
    }
}

/// [`run_jobs`] on micro-kernel `K`, `first` being `job(0)`.
///
/// # Safety
/// As [`run_jobs`]; the CPU supports `K`'s instruction set, whose panels
/// of `A` the weights are packed in.
unsafe fn run_on<'a, K, B, F>(
    first: &Job<'a, B>,
    count: usize,
    job: &F,
    workspace: &mut [f32],
    threads: usize,
) where
    K: MicroKernel,
    B: PackB,
    F: Fn(usize) -> Job<'a, B> + Sync,
{
    let (m, k, n) = (first.a.m, first.a.k, first.n);
    let split = Split::new::<K>((m, k, n), count, threads, first.b.pack_cost());
    let shape = (m, k, n, first.a.isa);
    let total = count * split.per_job();
    let threads = threads.min(total);
    let work = |(thread, buffer): (usize, &mut [f32])| {
        let tasks = thread * total / threads..(thread + 1) * total / threads;
        // SAFETY: forwarded from the caller.
        unsafe { worker::<K, B, F>(job, shape, &split, tasks, buffer) }
    };
    on_threads(workspace, KC * NC, threads, work);
}

/// Panics unless `workspace` holds the `need` floats that `threads`
/// threads need.
pub(crate) fn check_workspace(workspace: &[f32], need: usize, threads: usize) {
    assert!(
        workspace.len() >= need,
        "workspace of {} floats is less than the {need} that {threads} threads need",
        workspace.len(),
    );
}

/// Calls `work((thread, scratch))` for each of `threads` threads, each with
/// its own `floats` of scratch from `workspace` (which holds `threads *`
/// [`per_thread`]`(floats)`), starting on a cache line; thread 0 is the
/// caller's, which waits for the others awake ([`join_awake`]).
/// Allocates nothing: rayon's `join` and indexed iterators don't.
pub(crate) fn on_threads<F>(workspace: &mut [f32], floats: usize, threads: usize, work: F)
where
    F: Fn((usize, &mut [f32])) + Send + Sync,
{
    let aligned = |buffer: &mut [f32]| {
        let start = buffer.as_ptr().align_offset(64).min(ALIGN);
        start..start + floats
    };
    let chunk = per_thread(floats);
    let (first, others) = workspace[..threads.max(1) * chunk].split_at_mut(chunk);
    let range = aligned(first);
    if threads <= 1 {
        work((0, &mut first[range]));
        return;
    }
    join_awake(
        || work((0, &mut first[range])),
        || {
            others
                .par_chunks_mut(chunk)
                .enumerate()
                .for_each(|(thread, buffer)| {
                    let range = aligned(buffer);
                    work((thread + 1, &mut buffer[range]));
                })
        },
    );
}

/// Runs tasks `tasks` on one thread, with `buffer` for packing `B`.
///
/// # Safety
/// As [`run_jobs`]; the CPU supports `K`'s instruction set.
unsafe fn worker<'a, K, B, F>(
    job: &F,
    shape: (usize, usize, usize, Isa),
    split: &Split,
    tasks: std::ops::Range<usize>,
    buffer: &mut [f32],
) where
    K: MicroKernel,
    B: PackB,
    F: Fn(usize) -> Job<'a, B>,
{
    for t in tasks {
        let (j, (m0, m1), (n0, n1)) = split.task(t);
        let job = job(j);
        // The split assumed the first job's shape: a different one could write out of bounds.
        assert_eq!(
            (job.a.m, job.a.k, job.n, job.a.isa),
            shape,
            "jobs of one call must share a shape"
        );
        let in_place = job
            .b
            .in_place()
            .filter(|&(_, ld)| reads_in_place::<K>((m0, m1), (n0, n1), ld));
        for k0 in (0..job.a.k).step_by(split.kc) {
            let kc = split.kc.min(job.a.k - k0);
            let b = match in_place {
                Some((data, ld)) => BSource::InPlace(data[k0 * ld + n0..].as_ptr(), ld),
                None => {
                    job.b.pack(k0, kc, n0, n1 - n0, K::NR, buffer);
                    BSource::Packed(buffer)
                }
            };
            // SAFETY: this task's block of `C` is its own (the caller's
            // contract); `b` holds the block's `B`.
            unsafe { compute_block::<K, B>(&job, (m0, m1), (n0, n1), (k0, kc), b) };
        }
    }
}

/// Where a depth block of a task's `B` lies for the micro-kernels.
#[derive(Clone, Copy)]
enum BSource<'p> {
    /// Packed: the task's columns' panels at that depth ([`PackB::pack`]).
    Packed(&'p [f32]),
    /// Where it lies: the block's first row from the task's first column,
    /// and the floats from one row to the next.
    InPlace(*const f32, usize),
}

/// Whether a task of rows `m0..m1` and columns `n0..n1` reads `B` where it
/// lies, rows `ld` apart, rather than packing it: where the kernel can
/// ([`MicroKernel::STRIDED`]), on rows of `B` at most two tiles apart (so
/// that the rows a tile reads do not fall in a few sets of the cache), in
/// row panels all whole, and tiles of whole vectors, with the columns past
/// them riding along with the last. A 7x7 image's 49 columns at batch 1:
/// packing them was each thread copying the whole of `B`.
fn reads_in_place<K: MicroKernel>(
    (m0, m1): (usize, usize),
    (n0, n1): (usize, usize),
    ld: usize,
) -> bool {
    let tiled = n1 - thin_columns::<K>(n1 - n0);
    let rides_along = tiled == n1 || (tiled > n0 && n1 - tiled <= K::EXTRA);
    K::STRIDED
        && ld <= 2 * K::NR
        && (m1 - m0).is_multiple_of(K::MR)
        && (tiled - n0).is_multiple_of(16)
        && rides_along
}

/// Rows `m0..m1` and columns `n0..n1` of `C` over depth `k0..k0 + kc`,
/// from `b`, those columns of `B` at that depth; `C`
/// accumulates from the second depth block on (see
/// [`Epilogue::depth_block`]), and gets the epilogue on the last.
///
/// # Safety
/// As [`run_jobs`]; the block of `C` is written by this call alone; the
/// CPU supports `K`'s instruction set.
unsafe fn compute_block<K: MicroKernel, B>(
    job: &Job<'_, B>,
    (m0, m1): (usize, usize),
    (n0, n1): (usize, usize),
    (k0, kc): (usize, usize),
    b: BSource,
) {
    let (accumulate, last) = job.epilogue.depth_block(k0, kc, job.a.k);
    // Rows outer: a panel of `A` stays in L1, and the tiles of `C`
    // (and of the residual) go left to right along `MR` rows, streams
    // the hardware prefetcher follows. Columns outer went down the
    // rows, a new page each, and waited on every tile's `C`.
    let tiled = n1 - thin_columns::<K>(n1 - n0);
    // The thin columns' packed panel, from its first lane (read in place,
    // they ride along with the last tile and need none).
    let thin = match b {
        BSource::Packed(packed) => {
            let (panel, lane) = ((tiled - n0) / K::NR, (tiled - n0) % K::NR);
            packed[panel * kc * K::NR + lane..].as_ptr()
        }
        BSource::InPlace(..) => std::ptr::null(),
    };
    // Where the kernel can, each row panel's last tile takes the thin
    // columns along; only a last panel of fewer rows leaves them to
    // `run_thin`.
    let extra = (tiled > n0 && n1 - tiled <= K::EXTRA).then_some(n1 - tiled);
    for i0 in (m0..m1).step_by(K::MR) {
        let mr = K::MR.min(m1 - i0);
        let a = job.a.panel(i0 / K::MR, k0).as_ptr();
        for (p, j0) in (n0..tiled).step_by(K::NR).enumerate() {
            let nr = K::NR.min(tiled - j0);
            let b = match b {
                BSource::Packed(packed) => packed[p * kc * K::NR..].as_ptr(),
                BSource::InPlace(at, ld) => {
                    // `reads_in_place` saw to it that the thin columns ride along.
                    let extra = extra.filter(|_| j0 + nr == tiled).unwrap_or(0);
                    let epilogue =
                        (last && !job.epilogue.is_identity()).then(|| job.epilogue.tile(i0, j0));
                    // SAFETY: the tile, and the columns riding along, lie in
                    // this task's block of `C` (`reads_in_place`: its row
                    // panels are whole); the rows of `B` hold the tile's whole
                    // vectors and those columns, `kc` of them.
                    unsafe {
                        let c = job.c.0.add(i0 * job.ldc + j0);
                        let b = at.add(j0 - n0);
                        let e = epilogue.as_ref();
                        K::run_strided(kc, a, b, ld, extra, c, job.ldc, nr, accumulate, e);
                    }
                    continue;
                }
            };
            if let Some(extra) = extra.filter(|&e| e > 0 && mr == K::MR && j0 + nr == tiled) {
                let epilogue =
                    (last && !job.epilogue.is_identity()).then(|| job.epilogue.tile(i0, j0));
                // SAFETY: as for the tiles below; the thin columns
                // `tiled .. n1` follow the tile in this task's block,
                // and their panel holds `kc` steps.
                unsafe {
                    let c = job.c.0.add(i0 * job.ldc + j0);
                    K::run_extra(
                        kc,
                        a,
                        b,
                        thin,
                        extra,
                        c,
                        job.ldc,
                        nr,
                        accumulate,
                        epilogue.as_ref(),
                    );
                }
                continue;
            }
            // SAFETY: `(i0, j0)` lies in this task's block of `C`, which is
            // valid and written by this task alone (the caller's contract);
            // the panels hold `kc` steps (packing).
            unsafe {
                let c = job.c.0.add(i0 * job.ldc + j0);
                let at = Block {
                    rows: (i0, mr),
                    cols: (j0, nr),
                    c,
                    ldc: job.ldc,
                };
                at.compute::<K>(&job.epilogue, (accumulate, last), |c, ldc, cols, e| {
                    K::run(kc, a, b, c, ldc, cols, accumulate, e)
                });
            }
        }
    }
    if tiled < n1 {
        // Rows whose last tile took the thin columns are done.
        let done = match extra {
            Some(_) => (m1 - m0) / K::MR * K::MR,
            None => 0,
        };
        let b = thin;
        for i0 in (m0 + done..m1).step_by(THIN_PANELS * K::MR) {
            let rows = (THIN_PANELS * K::MR).min(m1 - i0);
            let a = job.a.panels(i0 / K::MR, k0).as_ptr();
            let (cols, panel_len) = (n1 - tiled, job.a.panel_len());
            // SAFETY: as for the tiles: this task's block of `C` from
            // `(i0, tiled)`, `rows x cols`, is valid and its own; the
            // packed panels hold `kc` steps, the weights `rows` rows.
            unsafe {
                let c = job.c.0.add(i0 * job.ldc + tiled);
                K::run_thin(kc, a, panel_len, b, cols, c, job.ldc, rows, accumulate);
                if last {
                    job.epilogue.apply(i0, rows, tiled, cols, c, job.ldc);
                }
            }
        }
    }
}

/// One tile of `C`: rows `i0..i0 + mr` (`mr <= MR`) and columns
/// `j0..j0 + nr` (`nr <= NR`), at `c` with rows at stride `ldc`.
pub(crate) struct Block {
    pub rows: (usize, usize),
    pub cols: (usize, usize),
    pub c: *mut f32,
    pub ldc: usize,
}

impl Block {
    /// Runs `kernel(c, ldc, cols, epilogue)`, a micro-kernel call of one
    /// depth block with `accumulate` as given, on this tile; on the `last`
    /// depth block the tile gets `epilogue`. A tile of whole rows runs in
    /// place with the epilogue in the kernel; one of fewer rows than `MR`
    /// runs on a copy in a full tile, written back row by row.
    ///
    /// # Safety
    /// The tile lies in `C` (valid for reads and writes), and `kernel` is a
    /// call that is sound for any `MR x NR` tile at stride `ldc`.
    #[inline(always)]
    pub(crate) unsafe fn compute<K: MicroKernel>(
        &self,
        epilogue: &Epilogue,
        (accumulate, last): (bool, bool),
        kernel: impl FnOnce(*mut f32, usize, usize, Option<&TileEpilogue>),
    ) {
        let Block {
            rows: (i0, mr),
            cols: (j0, nr),
            c,
            ldc,
        } = *self;
        if mr == K::MR {
            let epilogue = (last && !epilogue.is_identity()).then(|| epilogue.tile(i0, j0));
            kernel(c, ldc, nr, epilogue.as_ref());
            return;
        }
        let mut tile = [0f32; MAX_TILE];
        for i in 0..mr {
            // SAFETY: row `i < mr` of the tile holds `nr` floats of `C`.
            let row = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), nr) };
            let copy = &mut tile[i * K::NR..][..nr];
            if accumulate {
                copy.copy_from_slice(row);
            }
        }
        kernel(tile.as_mut_ptr(), K::NR, K::NR, None);
        for i in 0..mr {
            // SAFETY: as above.
            let row = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), nr) };
            row.copy_from_slice(&tile[i * K::NR..][..nr]);
        }
        if last {
            // SAFETY: the tile's `mr x nr` block of `C` (the caller's contract).
            unsafe { epilogue.apply(i0, mr, j0, nr, c, ldc) };
        }
    }
}

/// Columns at the end of a block of `cols` that no tile covers: what is
/// left past the last whole half tile, when that is at most
/// [`MicroKernel::THIN`] columns. So 49 columns (a 7x7 image) are, in
/// 32-column tiles, a tile, a half tile and one thin column, not two tiles
/// (in 48-column ones, a tile and one thin column). The last tile of each
/// whole row panel takes them along ([`MicroKernel::run_extra`]) where the
/// kernel can; the rest go to [`MicroKernel::run_thin`].
fn thin_columns<K: MicroKernel>(cols: usize) -> usize {
    let left = cols % K::NR % (K::NR / 2);
    if left <= K::THIN {
        left
    } else {
        0
    }
}

/// Whether a row of `cols` columns is better cut into [`Avx512Wide`]'s
/// tiles than into [`Avx512`]'s: where those end on a half tile, and the
/// wide kernel's a column or two past a whole tile, which ride along.
#[cfg(target_arch = "x86_64")]
fn wide_suits(cols: usize) -> bool {
    let left = (cols - thin_columns::<Avx512>(cols)) % Avx512::NR;
    let half_tile = left > 0 && left <= Avx512::NR / 2;
    half_tile && cols >= Avx512Wide::NR && cols % Avx512Wide::NR <= Avx512Wide::EXTRA
}

/// Work of one row panel across `cols` columns, in columns: whole tiles,
/// then a half tile where the kernel has them, then one per thin column.
fn row_work<K: MicroKernel>(cols: usize) -> usize {
    let thin = thin_columns::<K>(cols);
    let (whole, left) = ((cols - thin) / K::NR, (cols - thin) % K::NR);
    let last = match left {
        0 => 0,
        _ if K::HALF_TILES && left <= K::NR / 2 => K::NR / 2,
        _ => K::NR,
    };
    whole * K::NR + last + thin
}

/// `C = epilogue(A · B)` for a row-major `B` (`K x N`) and `C` (`M x N`),
/// with `threads` threads and a workspace of at least
/// [`workspace_len`]`(threads)` floats.
///
/// # Panics
/// If the shapes disagree, `B` or `C` is not row-major with unit column
/// stride, a residual or bias is too short, or the workspace is too small.
pub fn gemm(
    a: &PackedWeights,
    b: ArrayView2<f32>,
    mut c: ArrayViewMut2<f32>,
    epilogue: &Epilogue,
    workspace: &mut [f32],
    threads: usize,
) {
    let ((m, k), (kb, n)) = ((a.m, a.k), b.dim());
    assert_eq!(
        (kb, c.dim()),
        (k, (m, n)),
        "A is {m} x {k}, B {kb} x {n}, C {:?}",
        c.dim()
    );
    if n == 0 {
        return;
    }
    let b_rows = b.as_slice_memory_order().filter(|_| b.is_standard_layout());
    let b_rows = b_rows.expect("B must be row-major and contiguous");
    assert!(c.strides()[1] == 1, "C must have unit column stride");
    check_epilogue(epilogue, m, n);
    let ldc = c.strides()[0] as usize;
    let job = Job {
        a,
        b: DenseB {
            data: b_rows,
            ld: n,
        },
        n,
        c: SendPtr(c.as_mut_ptr()),
        ldc,
        epilogue: *epilogue,
    };
    // SAFETY: `C` is borrowed mutably for `m` rows of `n` at stride `ldc`, and
    // cannot overlap `B` or the epilogue's inputs, which are borrowed shared.
    unsafe { run_jobs(1, &|_| job, workspace, threads) };
}

/// Checks that the epilogue's inputs cover `rows x cols`.
pub(crate) fn check_epilogue(epilogue: &Epilogue, rows: usize, cols: usize) {
    if let Some(bias) = epilogue.bias {
        assert!(
            bias.len() >= rows,
            "bias has {} values for {rows} rows",
            bias.len()
        );
    }
    if let Some(r) = epilogue.residual {
        let present = r.rows.min(rows);
        assert!(
            present == 0 || (r.ld >= cols && r.data.len() >= (present - 1) * r.ld + cols),
            "residual of {} floats at stride {} is too small for {present} x {cols}",
            r.data.len(),
            r.ld
        );
    }
}
