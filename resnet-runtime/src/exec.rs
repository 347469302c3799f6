//! What a generated forward pass calls: one method per fused step, each
//! reading and writing activations in an arena whose layout the compiler
//! planned (`Slot`s with constant offsets). A batch of `n` images scales
//! every offset and length by `n`.

use crate::kernels::elementwise::{channel_affine, subsample};
use crate::kernels::pool::{avg_pool_linear, avg_pool_linear_scratch, max_pool2d};
use crate::layers::{Affine, ConvLayer, Linear};
use ndarray::{ArrayView4, ArrayViewMut2, ArrayViewMut4};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// An activation in the arena: its offset in floats per image and its
/// `[C, H, W]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Offset per image: the value starts at `offset * n` for a batch of `n`.
    pub offset: usize,
    /// `[C, H, W]` per image.
    pub shape: [usize; 3],
}

impl Slot {
    fn range(&self, n: usize) -> Range<usize> {
        let [c, h, w] = self.shape;
        self.offset * n..(self.offset + c * h * w) * n
    }
}

/// Where a step reads its main input: the model's input, or the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Src {
    /// The batch given to `forward`.
    Input,
    /// A value in the arena.
    Arena(Slot),
}

/// Memory a model needs for a forward pass, kept between calls so that a
/// pass allocates nothing: the activation arena and the kernels' scratch.
#[derive(Clone, Debug, Default)]
pub struct Workspace {
    arena: Vec<f32>,
    scratch: Vec<f32>,
}

impl Workspace {
    /// An empty workspace; it grows on its first pass with each larger batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs one pass, `f`, with an [`Exec`] from [`Workspace::exec`], on a
    /// thread of the current rayon pool: entered once here when the caller
    /// is outside it, so that every kernel's parallel section starts from
    /// inside the pool. From outside, each would hand its work over to the
    /// pool and sleep until it is done, about 20 µs a layer. (Handing over
    /// goes through rayon's job queue, which allocates a small block about
    /// once every 63 hand-overs: a pass run from inside a pool allocates
    /// nothing at all.) While the pass runs, the pool's other threads stay
    /// awake taking its work rather than sleep between kernels: waking a
    /// sleeping thread costs tens of microseconds a layer.
    pub fn run<'a, R: Send>(
        &'a mut self,
        input: ArrayView4<'a, f32>,
        arena_per_image: usize,
        f: impl FnOnce(&mut Exec<'a>) -> R + Send,
    ) -> R {
        let mut exec = self.exec(input, arena_per_image);
        let helpers = exec.threads - 1;
        let pass = move |exec: &mut Exec<'a>| {
            let done = AtomicBool::new(false);
            let (out, ()) = rayon::join(
                || {
                    let out = f(exec);
                    done.store(true, Ordering::Release);
                    out
                },
                || keep_busy(&done, helpers),
            );
            out
        };
        if rayon::current_thread_index().is_some() {
            pass(&mut exec)
        } else {
            rayon::scope(|_| pass(&mut exec))
        }
    }

    /// Makes room for a batch of `input.len()` images with
    /// `arena_per_image` floats of activations each, and starts a pass on
    /// the current rayon pool's threads. Only the first pass of a larger
    /// batch (and each kernel's first use of scratch) allocates.
    pub fn exec<'a>(&'a mut self, input: ArrayView4<'a, f32>, arena_per_image: usize) -> Exec<'a> {
        let n = input.dim().0;
        if self.arena.len() < arena_per_image * n {
            self.arena = grown(arena_per_image * n);
        }
        let threads = rayon::current_num_threads();
        Exec {
            arena: &mut self.arena,
            scratch: &mut self.scratch,
            input,
            n,
            threads,
        }
    }
}

/// A fresh buffer of `len` zeros, to replace one that is too short: its
/// contents need no keeping, and dropping the old buffer before the new one
/// is touched keeps the two from adding up in the peak resident set.
fn grown(len: usize) -> Vec<f32> {
    vec![0.0; len]
}

/// Keeps `helpers` more threads of the pool taking work until `done`, so
/// that each kernel's parallel section finds them awake: a rayon thread with
/// nothing to do sleeps, and waking it costs tens of microseconds, a few
/// percent of a batch-1 pass. A helper that finds no work for
/// [`IDLE_LIMIT`] returns (and sleeps as usual): a helper that rayon runs
/// inside a wait of the pass itself can then never hold the pass up.
fn keep_busy(done: &AtomicBool, helpers: usize) {
    if helpers == 0 {
        return;
    }
    rayon::join(
        || {
            let mut last_work = Instant::now();
            while !done.load(Ordering::Acquire) {
                if rayon::yield_now() == Some(rayon::Yield::Executed) {
                    last_work = Instant::now();
                } else if last_work.elapsed() > IDLE_LIMIT {
                    return;
                } else {
                    std::hint::spin_loop();
                }
            }
        },
        || keep_busy(done, helpers - 1),
    );
}

/// How long a helper of [`keep_busy`] waits for work before it gives up.
const IDLE_LIMIT: Duration = Duration::from_millis(1);

/// One forward pass in progress.
pub struct Exec<'a> {
    arena: &'a mut [f32],
    scratch: &'a mut Vec<f32>,
    input: ArrayView4<'a, f32>,
    n: usize,
    threads: usize,
}
/// The arena split into the region `dst` writes and the regions read.
fn split<'b>(
    arena: &'b mut [f32],
    dst: Range<usize>,
    reads: [Option<Range<usize>>; 2],
) -> (&'b mut [f32], [Option<&'b [f32]>; 2]) {
    let (before, rest) = arena.split_at_mut(dst.start);
    let (out, after) = rest.split_at_mut(dst.len());
    let (before, after): (&'b [f32], &'b [f32]) = (before, after);
    let read = |r: Range<usize>| -> &'b [f32] {
        if r.end <= dst.start {
            &before[r]
        } else {
            assert!(
                r.start >= dst.end,
                "the arena plan overlaps a step's input and output"
            );
            &after[r.start - dst.end..r.end - dst.end]
        }
    };
    (out, reads.map(|r| r.map(read)))
}

fn view4(data: &[f32], n: usize, [c, h, w]: [usize; 3]) -> ArrayView4<'_, f32> {
    ArrayView4::from_shape((n, c, h, w), data).expect("slot lengths follow their shapes")
}

fn view4_mut(data: &mut [f32], n: usize, [c, h, w]: [usize; 3]) -> ArrayViewMut4<'_, f32> {
    ArrayViewMut4::from_shape((n, c, h, w), data).expect("slot lengths follow their shapes")
}

impl Exec<'_> {
    /// Splits the arena for a step writing `dst` and reading `src` and `extra`.
    fn io(
        &mut self,
        src: Src,
        dst: Slot,
        extra: Option<Slot>,
    ) -> (
        ArrayViewMut4<'_, f32>,
        ArrayView4<'_, f32>,
        Option<ArrayView4<'_, f32>>,
    ) {
        let n = self.n;
        let src_range = match src {
            Src::Input => None,
            Src::Arena(s) => Some(s.range(n)),
        };
        let (out, [a, b]) = split(
            self.arena,
            dst.range(n),
            [src_range, extra.map(|e| e.range(n))],
        );
        let input = match (src, a) {
            (Src::Arena(s), Some(data)) => view4(data, n, s.shape),
            _ => self.input.view(),
        };
        let extra = extra.zip(b).map(|(e, data)| view4(data, n, e.shape));
        (view4_mut(out, n, dst.shape), input, extra)
    }

    /// `dst = relu?(conv(src) + residual)`; a residual with fewer channels
    /// than `dst` is zero-padded.
    pub fn conv(
        &mut self,
        layer: &ConvLayer,
        src: Src,
        dst: Slot,
        residual: Option<Slot>,
        relu: bool,
    ) {
        let threads = self.threads;
        let need = layer.conv().workspace_len(threads);
        if self.scratch.len() < need {
            *self.scratch = grown(need);
        }
        // The scratch is not part of the arena, so it can be borrowed alongside.
        let mut scratch = std::mem::take(self.scratch);
        let (out, input, residual) = self.io(src, dst, residual);
        layer
            .conv()
            .forward(input, out, residual, relu, &mut scratch[..need], threads);
        *self.scratch = scratch;
    }

    /// `dst = relu?(bn(src))` for a batch norm that could not be folded.
    pub fn affine(&mut self, bn: &Affine, src: Src, dst: Slot, relu: bool) {
        let (out, input, _) = self.io(src, dst, None);
        channel_affine(input, &bn.scale, &bn.shift, relu, out);
    }

    /// `dst = max_pool(src)`.
    pub fn max_pool(&mut self, src: Src, dst: Slot, kernel: usize, stride: usize, padding: usize) {
        let (out, input, _) = self.io(src, dst, None);
        max_pool2d(input, out, kernel, stride, padding);
    }

    /// `dst = src[:, :, ::stride, ::stride]`, for a zero-padded shortcut.
    pub fn subsample(&mut self, src: Src, dst: Slot, stride: usize) {
        let (out, input, _) = self.io(src, dst, None);
        subsample(input, stride, out);
    }

    /// `out = fc(mean over H, W of src)`.
    pub fn head(&mut self, fc: &Linear, src: Src, out: ArrayViewMut2<'_, f32>) {
        let n = self.n;
        let (classes, channels) = fc.weight.dim();
        let need = avg_pool_linear_scratch(n, channels, classes);
        if self.scratch.len() < need {
            *self.scratch = grown(need);
        }
        let input = match src {
            Src::Input => self.input.view(),
            Src::Arena(s) => view4(&self.arena[s.range(n)], n, s.shape),
        };
        avg_pool_linear(input, fc.weight.view(), fc.bias.view(), out, self.scratch);
    }
    /// `out = src`, for a backbone's features.
    pub fn copy_out(&mut self, src: Src, mut out: ArrayViewMut4<'_, f32>) {
        let n = self.n;
        match src {
            Src::Input => out.assign(&self.input),
            Src::Arena(s) => out.assign(&view4(&self.arena[s.range(n)], n, s.shape)),
        }
    }
}
