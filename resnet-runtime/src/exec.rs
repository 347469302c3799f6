//! What a generated forward pass calls: one method per fused step, each
//! reading and writing activations in an arena whose layout the compiler
//! planned (`Slot`s with constant offsets). A batch of `n` images scales
//! every offset and length by `n`.

use crate::kernels::blocked::to_planar;
use crate::kernels::conv::Shortcut;
use crate::kernels::elementwise::{channel_affine, subsample};
use crate::kernels::pool::{
    avg_pool_linear, avg_pool_linear_blocked, avg_pool_linear_scratch, max_pool2d,
    max_pool2d_blocked, max_pool2d_to_blocked, max_pool2d_to_blocked_scratch,
};
use crate::layers::{Affine, ConvKernel, ConvLayer, Linear};
use ndarray::{ArrayView4, ArrayViewMut2, ArrayViewMut4};
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// An activation in the arena: its offset in floats per image, its
/// `[C, H, W]` and how its elements are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Offset per image: the value starts at `offset * n` for a batch of `n`.
    pub offset: usize,
    /// `[C, H, W]` per image.
    pub shape: [usize; 3],
    /// The order of its elements.
    pub layout: Layout,
}

/// The order of an activation's elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// NCHW: each channel's plane, row by row.
    Planar,
    /// Channel-blocked, `[N][C / 16][H][W][16]`: the 16 channels of a
    /// block together at each pixel ([`crate::kernels::blocked`]).
    Blocked,
    /// Blocked, with a one-pixel border of zeros around each plane
    /// (`[N][C / 16][H + 2][W + 2][16]`): the input of a padded layer,
    /// which then reads it without a copy.
    BlockedPadded,
}

impl Slot {
    /// `[C, H, W]` as stored: a padded slot's planes are 2 wider each way.
    fn stored(&self) -> [usize; 3] {
        let [c, h, w] = self.shape;
        match self.layout {
            Layout::BlockedPadded => [c, h + 2, w + 2],
            Layout::Planar | Layout::Blocked => [c, h, w],
        }
    }

    fn range(&self, n: usize) -> Range<usize> {
        let [c, h, w] = self.stored();
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
/// pass allocates nothing: the activation arena and the kernels' scratch;
/// and, if asked for, the time each step of its passes took.
#[derive(Clone, Debug, Default)]
pub struct Workspace {
    arena: Vec<f32>,
    scratch: Vec<f32>,
    profile: Option<Profile>,
}

impl Workspace {
    /// An empty workspace; it grows on its first pass with each larger batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty workspace that times every step of the passes it runs
    /// ([`Workspace::profile`]). Timing costs two clock reads a step; the
    /// first pass also names its steps, after which a pass still allocates
    /// nothing. Run one kind of pass on it (`forward_with` or
    /// `features_with`), whose steps it lines up pass by pass.
    pub fn profiled() -> Self {
        Workspace {
            profile: Some(Profile::default()),
            ..Self::default()
        }
    }

    /// The steps' times so far, for a workspace made by [`Workspace::profiled`].
    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_ref()
    }

    /// The same, to clear between passes ([`Profile::clear`]).
    pub fn profile_mut(&mut self) -> Option<&mut Profile> {
        self.profile.as_mut()
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
        if let Some(profile) = &mut self.profile {
            profile.start_pass();
        }
        Exec {
            arena: &mut self.arena,
            scratch: &mut self.scratch,
            profile: self.profile.as_mut(),
            input,
            n,
            threads,
        }
    }
}

/// How long each step of a workspace's passes took: a step is one call a
/// generated forward pass makes, a fused convolution (labelled with its
/// torchvision name, `layer1.0.conv1: 1x1/1 64->64 to 56x56 (Pointwise)`),
/// the max pool, a shortcut's subsampling, the head. Its `Display` is a
/// table of the steps and each one's share of their total.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    /// Each step's label and its time summed over the passes.
    steps: Vec<(String, Duration)>,
    passes: u32,
    /// The step the current pass is at.
    next: usize,
}

impl Profile {
    /// Passes timed.
    pub fn passes(&self) -> u32 {
        self.passes
    }

    /// Each step, in the order a pass runs them, with its mean time per pass.
    pub fn steps(&self) -> impl Iterator<Item = (&str, Duration)> {
        let passes = self.passes.max(1);
        self.steps
            .iter()
            .map(move |(label, total)| (label.as_str(), *total / passes))
    }

    /// Forgets the times and passes so far, keeping the steps' labels (so
    /// it allocates nothing): each pass after it can be read on its own.
    pub fn clear(&mut self) {
        self.steps.iter_mut().for_each(|(_, t)| *t = Duration::ZERO);
        (self.passes, self.next) = (0, 0);
    }

    /// The steps' mean times added up: a pass, less what lies between steps.
    pub fn total(&self) -> Duration {
        self.steps().map(|(_, t)| t).sum()
    }

    fn start_pass(&mut self) {
        (self.passes, self.next) = (self.passes + 1, 0);
    }

    /// Adds `took` to the current step, labelled by `label` on the first pass.
    fn record(&mut self, label: impl FnOnce() -> String, took: Duration) {
        if self.next == self.steps.len() {
            self.steps.push((label(), Duration::ZERO));
        }
        self.steps[self.next].1 += took;
        self.next += 1;
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.total().as_secs_f64();
        writeln!(f, "{:>4}  {:<58} {:>9} {:>6}", "step", "", "ms", "share")?;
        for (i, (label, t)) in self.steps().enumerate() {
            let ms = t.as_secs_f64() * 1e3;
            let share = 100.0 * t.as_secs_f64() / total.max(f64::MIN_POSITIVE);
            writeln!(f, "{i:>4}  {label:<58} {ms:>9.3} {share:>5.1}%")?;
        }
        write!(
            f,
            "{:>4}  {:<58} {:>9.3}   mean of {} passes",
            "",
            "all steps",
            total * 1e3,
            self.passes
        )
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
    profile: Option<&'a mut Profile>,
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
    /// The clock at a step's start, if the pass is profiled.
    fn start(&self) -> Option<Instant> {
        self.profile.is_some().then(Instant::now)
    }

    /// Records the step that began at `start` (from [`Exec::start`]).
    fn finish(&mut self, start: Option<Instant>, label: impl FnOnce() -> String) {
        if let (Some(profile), Some(start)) = (self.profile.as_deref_mut(), start) {
            profile.record(label, start.elapsed());
        }
    }

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
            (Src::Arena(s), Some(data)) => view4(data, n, s.stored()),
            _ => self.input.view(),
        };
        let extra = extra.zip(b).map(|(e, data)| view4(data, n, e.stored()));
        (view4_mut(out, n, dst.stored()), input, extra)
    }

    /// `dst = relu?(conv(src) + residual)`; a residual with fewer channels
    /// than `dst` is zero-padded, and one in `dst`'s own slot is added in
    /// place (where the plan gave the output the memory of a residual that
    /// no later step reads). The layer runs on the layout of its slots.
    ///
    /// # Panics
    /// If the slots' layouts are not the layer's.
    pub fn conv(
        &mut self,
        layer: &ConvLayer,
        src: Src,
        dst: Slot,
        residual: Option<Slot>,
        relu: bool,
    ) {
        let start = self.start();
        let threads = self.threads;
        let layout = layer.layout();
        let output = [Some(dst.layout), residual.map(|r| r.layout)];
        assert!(
            src.layout() == layout.input && output.iter().flatten().all(|&l| l == layout.output),
            "{} runs on {layout:?} activations, not {:?} to {output:?}",
            layer.name(),
            src.layout(),
        );
        let need = layer.workspace_len(threads);
        if self.scratch.len() < need {
            *self.scratch = grown(need);
        }
        // The scratch is not part of the arena, so it can be borrowed alongside.
        let mut scratch = std::mem::take(self.scratch);
        let workspace = &mut scratch[..need];
        let in_place = residual == Some(dst);
        let n = self.n;
        let (mut out, input, residual) = self.io(src, dst, residual.filter(|_| !in_place));
        match layer.kernel() {
            ConvKernel::Planar(conv) if in_place => {
                conv.forward_in_place(input, out, relu, workspace, threads)
            }
            ConvKernel::Planar(conv) => {
                conv.forward(input, out, residual, relu, workspace, threads)
            }
            ConvKernel::Blocked(conv) => {
                let shortcut = match &residual {
                    _ if in_place => Shortcut::InPlace,
                    Some(r) => Shortcut::Add(flat(r), r.dim().1),
                    None => Shortcut::None,
                };
                let out = out.as_slice_mut().expect("slots lie together");
                conv.forward(flat(&input), n, out, shortcut, relu, workspace, threads);
            }
            ConvKernel::Stem(conv) => {
                assert!(residual.is_none() && !in_place, "a stem adds no residual");
                let out = out.as_slice_mut().expect("slots lie together");
                conv.forward(flat(&input), n, out, relu, workspace, threads);
            }
        }
        *self.scratch = scratch;
        self.finish(start, || {
            let conv = layer.params();
            let (oh, ow) = conv.out_hw();
            format!(
                "{}: {}x{}/{} {}->{} to {oh}x{ow} ({})",
                layer.name(),
                conv.kernel,
                conv.kernel,
                conv.stride,
                conv.in_channels,
                conv.out_channels,
                layer.strategy_for(n)
            )
        });
    }

    /// `dst = max_pool(relu?(conv(src)))`, the stem of a blocked network and
    /// the pool after it in one pass
    /// ([`BlockedStem::forward_pooled`](crate::kernels::blocked::BlockedStem::forward_pooled)):
    /// `src` NCHW, `dst` blocked.
    ///
    /// # Panics
    /// If the layer is not a blocked stem or the slots' layouts are not its.
    pub fn conv_pool(
        &mut self,
        layer: &ConvLayer,
        src: Src,
        dst: Slot,
        window: (usize, usize, usize),
        relu: bool,
    ) {
        let start = self.start();
        let ConvKernel::Stem(stem) = layer.kernel() else {
            panic!("{} is not a blocked stem", layer.name());
        };
        assert!(
            (src.layout(), dst.layout) == (Layout::Planar, Layout::Blocked),
            "{} reads NCHW and writes blocks",
            layer.name()
        );
        let (n, threads) = (self.n, self.threads);
        let need = stem.pooled_workspace_len(threads, window.0);
        if self.scratch.len() < need {
            *self.scratch = grown(need);
        }
        let mut scratch = std::mem::take(self.scratch);
        let (mut out, input, _) = self.io(src, dst, None);
        let out = out.as_slice_mut().expect("slots lie together");
        stem.forward_pooled(
            flat(&input),
            n,
            out,
            window,
            relu,
            &mut scratch[..need],
            threads,
        );
        *self.scratch = scratch;
        self.finish(start, || {
            let (conv, (k, s, _)) = (layer.params(), window);
            let [c, h, w] = dst.shape;
            format!(
                "{} + max pool {k}x{k}/{s}: {}x{}/{} {}->{c} to {h}x{w} (Direct to blocked, pooled)",
                layer.name(),
                conv.kernel,
                conv.kernel,
                conv.stride,
                conv.in_channels,
            )
        });
    }

    /// `dst = relu?(bn(src))` for a batch norm that could not be folded.
    pub fn affine(&mut self, bn: &Affine, src: Src, dst: Slot, relu: bool) {
        let start = self.start();
        planar_only("a batch norm", [src.layout(), dst.layout]);
        let (out, input, _) = self.io(src, dst, None);
        channel_affine(input, &bn.scale, &bn.shift, relu, out);
        self.finish(start, || {
            format!("batch norm of {} channels", bn.scale.len())
        });
    }

    /// `dst = max_pool(src)`: NCHW to NCHW, blocked to blocked, or NCHW to
    /// blocked (an NCHW stem's output into a blocked network).
    ///
    /// # Panics
    /// If `src` is blocked and `dst` NCHW.
    pub fn max_pool(&mut self, src: Src, dst: Slot, kernel: usize, stride: usize, padding: usize) {
        let start = self.start();
        let window = (kernel, stride, padding);
        match (src.layout(), dst.layout) {
            (Layout::Planar, Layout::Planar) => {
                let (out, input, _) = self.io(src, dst, None);
                max_pool2d(input, out, kernel, stride, padding);
            }
            (Layout::Planar, Layout::Blocked) => {
                let threads = self.threads;
                let need = max_pool2d_to_blocked_scratch(dst.shape[2], threads);
                if self.scratch.len() < need {
                    *self.scratch = grown(need);
                }
                let mut scratch = std::mem::take(self.scratch);
                let (mut out, input, _) = self.io(src, dst, None);
                let out = out.as_slice_mut().expect("slots lie together");
                max_pool2d_to_blocked(input, out, window, &mut scratch[..need], threads);
                *self.scratch = scratch;
            }
            (Layout::Blocked, Layout::Blocked) => {
                let [c, h, w] = match src {
                    Src::Arena(s) => s.shape,
                    Src::Input => unreachable!("the input is NCHW"),
                };
                let (n, threads) = (self.n, self.threads);
                let (mut out, input, _) = self.io(src, dst, None);
                let out = out.as_slice_mut().expect("slots lie together");
                max_pool2d_blocked(flat(&input), (n, c, h, w), out, window, threads);
            }
            (Layout::Blocked, Layout::Planar) => panic!("max pooling writes no NCHW from blocks"),
            (Layout::BlockedPadded, _) | (_, Layout::BlockedPadded) => {
                panic!("max pooling reads and writes no padded blocks")
            }
        }
        self.finish(start, || {
            let [c, h, w] = dst.shape;
            format!("max pool {kernel}x{kernel}/{stride} of {c} to {h}x{w}")
        });
    }

    /// `dst = src[:, :, ::stride, ::stride]`, for a zero-padded shortcut.
    pub fn subsample(&mut self, src: Src, dst: Slot, stride: usize) {
        let start = self.start();
        planar_only("a subsampled shortcut", [src.layout(), dst.layout]);
        let (out, input, _) = self.io(src, dst, None);
        subsample(input, stride, out);
        self.finish(start, || format!("zero-padded shortcut /{stride}"));
    }

    /// `out = fc(mean over H, W of src)`.
    pub fn head(&mut self, fc: &Linear, src: Src, out: ArrayViewMut2<'_, f32>) {
        let start = self.start();
        let n = self.n;
        let (classes, channels) = fc.weight().dim();
        let need = avg_pool_linear_scratch(n, channels, classes);
        if self.scratch.len() < need {
            *self.scratch = grown(need);
        }
        let (weight, bias) = (fc.weight(), fc.bias.view());
        match src {
            Src::Input => avg_pool_linear(self.input.view(), weight, bias, out, self.scratch),
            Src::Arena(s) => {
                let x = &self.arena[s.range(n)];
                let [c, h, w] = s.shape;
                match s.layout {
                    Layout::Planar => {
                        avg_pool_linear(view4(x, n, s.shape), weight, bias, out, self.scratch)
                    }
                    Layout::Blocked => {
                        avg_pool_linear_blocked(x, (n, c, h, w), weight, bias, out, self.scratch)
                    }
                    Layout::BlockedPadded => panic!("the head reads no padded blocks"),
                }
            }
        }
        self.finish(start, || format!("average pool + fc {channels}->{classes}"));
    }

    /// `out = src`, for a backbone's features, in NCHW.
    pub fn copy_out(&mut self, src: Src, mut out: ArrayViewMut4<'_, f32>) {
        let start = self.start();
        let n = self.n;
        match src {
            Src::Input => out.assign(&self.input),
            Src::Arena(s) => {
                let x = &self.arena[s.range(n)];
                match s.layout {
                    Layout::Planar => out.assign(&view4(x, n, s.shape)),
                    Layout::Blocked => to_planar(x, out),
                    Layout::BlockedPadded => panic!("features are never padded blocks"),
                }
            }
        }
        self.finish(start, || "features out".into());
    }
}

/// A view's elements, which lie together (arena slots and inputs do).
fn flat<'a>(view: &ArrayView4<'a, f32>) -> &'a [f32] {
    view.to_slice().expect("slots lie together")
}

/// Panics unless every layout is NCHW, for a step that runs on no other.
fn planar_only(step: &str, layouts: [Layout; 2]) {
    assert!(
        layouts.iter().all(|&l| l == Layout::Planar),
        "{step} runs on NCHW activations, not {layouts:?}"
    );
}

impl Src {
    /// The layout of what it names: the model's input is NCHW.
    fn layout(&self) -> Layout {
        match self {
            Src::Input => Layout::Planar,
            Src::Arena(slot) => slot.layout,
        }
    }
}
