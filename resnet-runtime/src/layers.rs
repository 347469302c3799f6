//! The layers a compiled model holds, after batch norm is folded: each loads
//! from torchvision's names or starts from torchvision's random init.

use crate::exec::Layout;
use crate::kernels::blocked::{BlockedIo, BlockedLayer, BlockedOutput, BlockedStem};
use crate::kernels::elementwise::{fold_batch_norm_in_place, BN_EPS};
use crate::kernels::pages::HugeBuf;
use crate::kernels::{Conv2d, ConvParams, Isa};
use crate::weights::{Weights, WeightsError};
use ndarray::Array;
use ndarray::{Array1, ArrayView2, ArrayViewMut4, Ix1};

/// A deterministic random source for `new_random(seed)` (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// The generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// The statistics of a batch norm as torchvision stores them.
struct BatchNorm {
    gamma: Array1<f32>,
    beta: Array1<f32>,
    mean: Array1<f32>,
    var: Array1<f32>,
}

impl BatchNorm {
    /// `{name}.weight`, `.bias`, `.running_mean`, `.running_var`
    /// (`.num_batches_tracked` is accepted and unused).
    fn load(w: &mut Weights, name: &str, channels: usize) -> Result<Self, WeightsError> {
        let mut vector = |part: &str| -> Result<Array1<f32>, WeightsError> {
            let t = w.tensor(&format!("{name}.{part}"), &[channels])?;
            Ok(t.into_dimensionality::<Ix1>().expect("shape checked"))
        };
        let bn = BatchNorm {
            gamma: vector("weight")?,
            beta: vector("bias")?,
            mean: vector("running_mean")?,
            var: vector("running_var")?,
        };
        w.skip(&format!("{name}.num_batches_tracked"));
        Ok(bn)
    }

    /// torchvision's init: weight 1, bias 0, and fresh running statistics.
    fn identity(channels: usize) -> Self {
        BatchNorm {
            gamma: Array1::ones(channels),
            beta: Array1::zeros(channels),
            mean: Array1::zeros(channels),
            var: Array1::ones(channels),
        }
    }

    /// `(scale, shift)` with `bn(x) = x * scale + shift`.
    fn affine(&self) -> (Vec<f32>, Vec<f32>) {
        let scale: Vec<f32> = self
            .gamma
            .iter()
            .zip(&self.var)
            .map(|(g, v)| g / (v + BN_EPS).sqrt())
            .collect();
        let shift = self
            .beta
            .iter()
            .zip(&self.mean)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        (scale, shift)
    }
}

/// A convolution, with the batch norm after it folded in if it has one,
/// and its torchvision name (`layer1.0.conv1`), packed for the layout of
/// the activations it runs on.
#[derive(Clone, Debug)]
pub struct ConvLayer {
    name: Box<str>,
    kernel: ConvKernel,
    layout: ConvLayout,
}

/// The layouts a [`ConvLayer`] reads and writes (its residual is laid out
/// as its output).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvLayout {
    /// What it reads.
    pub input: Layout,
    /// What it writes.
    pub output: Layout,
}

impl ConvLayout {
    /// NCHW to NCHW.
    pub const PLANAR: ConvLayout = ConvLayout {
        input: Layout::Planar,
        output: Layout::Planar,
    };
}

/// A [`ConvLayer`]'s packed convolution.
#[derive(Clone, Debug)]
pub(crate) enum ConvKernel {
    /// On NCHW activations.
    Planar(Conv2d),
    /// On channel-blocked ones.
    Blocked(BlockedLayer),
    /// From an NCHW image into blocked output.
    Stem(BlockedStem),
}

impl ConvLayer {
    /// Loads `{conv}.weight` and, if `bn` is given, folds that batch norm
    /// into it; packs it to run on the layouts of `layout`.
    ///
    /// # Errors
    /// If a tensor is missing or mis-shaped.
    pub fn load(
        w: &mut Weights,
        conv: &str,
        bn: Option<&str>,
        p: ConvParams,
        layout: ConvLayout,
    ) -> Result<Self, WeightsError> {
        let shape = [p.out_channels, p.in_channels / p.groups, p.kernel, p.kernel];
        let weight = read_weight(w, &format!("{conv}.weight"), &shape)?;
        let bn = bn
            .map(|name| BatchNorm::load(w, name, p.out_channels))
            .transpose()?;
        Ok(Self::build(conv, p, weight, bn, layout))
    }

    /// Convolution `name` with torchvision's init: Kaiming-normal weights
    /// (fan-out, ReLU gain) and an identity batch norm if it has one.
    pub fn random(
        rng: &mut Rng,
        name: &str,
        p: ConvParams,
        with_bn: bool,
        layout: ConvLayout,
    ) -> Self {
        let len = p.out_channels * p.in_channels / p.groups * p.kernel * p.kernel;
        let std = (2.0 / (p.out_channels * p.kernel * p.kernel) as f64).sqrt();
        let weight = HugeBuf::from_fn(len, || (rng.normal() * std) as f32);
        Self::build(
            name,
            p,
            weight,
            with_bn.then(|| BatchNorm::identity(p.out_channels)),
            layout,
        )
    }

    /// Convolution `name` from its weight (`[out, in / groups, k, k]`,
    /// row-major), which the kernels pack into their own buffers. The
    /// weight itself comes in a [`HugeBuf`], whose large buffers go back
    /// to the system when dropped: read into the heap, the weights the
    /// kernels had packed left ResNet-50's peak resident size at 130 MB
    /// rather than 127.
    ///
    /// # Panics
    /// If `layout` is blocked and `p` cannot run blocked.
    fn build(
        name: &str,
        p: ConvParams,
        mut weight: HugeBuf,
        bn: Option<BatchNorm>,
        layout: ConvLayout,
    ) -> Self {
        let shape = (p.out_channels, p.in_channels / p.groups, p.kernel, p.kernel);
        let mut weight = ArrayViewMut4::from_shape(shape, &mut weight).expect("a weight of `p`");
        let bias = bn.map(|bn| {
            fold_batch_norm_in_place(
                weight.view_mut(),
                bn.gamma.view(),
                bn.beta.view(),
                bn.mean.view(),
                bn.var.view(),
                BN_EPS,
            )
        });
        let bias = bias.as_ref().map(|b| b.view());
        let output = match layout.output {
            Layout::Planar => BlockedOutput::Planar,
            Layout::Blocked => BlockedOutput::Blocked,
            Layout::BlockedPadded => BlockedOutput::Padded,
        };
        let kernel = match (layout.input, layout.output) {
            (Layout::Planar, Layout::Planar) => {
                ConvKernel::Planar(Conv2d::new(p, weight.view(), bias))
            }
            (Layout::Planar, Layout::Blocked) => {
                assert!(
                    BlockedStem::fits(&p),
                    "{name} cannot write blocked output: {p:?}"
                );
                ConvKernel::Stem(BlockedStem::new(Isa::best(), p, weight.view(), bias))
            }
            (Layout::Planar, Layout::BlockedPadded) => {
                panic!("{name}: a stem writes no padded blocks")
            }
            (Layout::Blocked | Layout::BlockedPadded, _) => {
                assert!(BlockedLayer::fits(&p), "{name} cannot run blocked: {p:?}");
                let io = BlockedIo {
                    padded_input: layout.input == Layout::BlockedPadded,
                    output,
                };
                ConvKernel::Blocked(BlockedLayer::new(p, weight.view(), bias, io))
            }
        };
        ConvLayer {
            name: name.into(),
            kernel,
            layout,
        }
    }

    /// The convolution's torchvision name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The convolution's shape.
    pub fn params(&self) -> &ConvParams {
        match &self.kernel {
            ConvKernel::Planar(c) => c.params(),
            ConvKernel::Blocked(c) => c.params(),
            ConvKernel::Stem(c) => c.params(),
        }
    }

    /// The layouts it reads and writes.
    pub fn layout(&self) -> ConvLayout {
        self.layout
    }

    /// The packed convolution.
    pub(crate) fn kernel(&self) -> &ConvKernel {
        &self.kernel
    }

    /// Floats of scratch a pass of `n` images needs with `threads` threads.
    pub fn workspace_len(&self, threads: usize) -> usize {
        match &self.kernel {
            ConvKernel::Planar(c) => c.workspace_len(threads),
            ConvKernel::Blocked(c) => c.workspace_len(threads),
            ConvKernel::Stem(c) => c.workspace_len(),
        }
    }

    /// How it computes a batch of `n`, for profiles: `Pointwise`, or
    /// `blocked Winograd4x4`.
    pub fn strategy_for(&self, n: usize) -> String {
        match &self.kernel {
            ConvKernel::Planar(c) => format!("{:?}", c.strategy_for(n)),
            ConvKernel::Blocked(c) => {
                let io = c.io();
                let from = if io.padded_input { " from padded" } else { "" };
                let to = match io.output {
                    BlockedOutput::Blocked => "",
                    BlockedOutput::Padded => " to padded",
                    BlockedOutput::Planar => " to NCHW",
                };
                format!("blocked {:?}{from}{to}", c.strategy())
            }
            ConvKernel::Stem(_) => "Direct to blocked".into(),
        }
    }
}

/// A batch norm that cannot be folded (it comes before its convolution, as
/// in pre-activation blocks), as a per-channel scale and shift.
#[derive(Clone, Debug)]
pub struct Affine {
    /// `gamma / sqrt(var + eps)`.
    pub scale: Vec<f32>,
    /// `beta - mean * scale`.
    pub shift: Vec<f32>,
}

impl Affine {
    /// Loads batch norm `name` over `channels`.
    ///
    /// # Errors
    /// If a tensor is missing or mis-shaped.
    pub fn load(w: &mut Weights, name: &str, channels: usize) -> Result<Self, WeightsError> {
        let (scale, shift) = BatchNorm::load(w, name, channels)?.affine();
        Ok(Affine { scale, shift })
    }

    /// torchvision's init.
    pub fn random(channels: usize) -> Self {
        let (scale, shift) = BatchNorm::identity(channels).affine();
        Affine { scale, shift }
    }
}

/// Weight `name`, which must have shape `shape`, read straight into a
/// [`HugeBuf`], in which the kernels' packed weights lie too.
///
/// # Errors
/// As [`Weights::tensor`].
fn read_weight(w: &mut Weights, name: &str, shape: &[usize]) -> Result<HugeBuf, WeightsError> {
    let mut weight = HugeBuf::zeros(shape.iter().product());
    w.read_into(name, shape, &mut weight)?;
    Ok(weight)
}

/// The classifier: `fc.weight` `[classes, channels]` and `fc.bias`.
#[derive(Clone, Debug)]
pub struct Linear {
    /// `[classes, channels]`, row-major, read straight into huge pages as
    /// the convolutions' weights are: on the heap, ResNet-50's head took
    /// 0.35-0.44 ms against 0.31-0.36.
    weight: HugeBuf,
    channels: usize,
    /// `[classes]`.
    pub bias: Array1<f32>,
}

impl Linear {
    /// Loads `{name}.weight` and `{name}.bias`.
    ///
    /// # Errors
    /// If a tensor is missing or mis-shaped.
    pub fn load(
        w: &mut Weights,
        name: &str,
        channels: usize,
        classes: usize,
    ) -> Result<Self, WeightsError> {
        let weight = read_weight(w, &format!("{name}.weight"), &[classes, channels])?;
        let bias = w.tensor(&format!("{name}.bias"), &[classes])?;
        Ok(Linear {
            weight,
            channels,
            bias: bias.into_dimensionality::<Ix1>().expect("shape checked"),
        })
    }

    /// The weights, `[classes, channels]`.
    pub fn weight(&self) -> ArrayView2<'_, f32> {
        let classes = self.weight.len().checked_div(self.channels).unwrap_or(0);
        ArrayView2::from_shape((classes, self.channels), &self.weight)
            .expect("classes x channels floats")
    }

    /// PyTorch's init: uniform in `±1 / sqrt(channels)`.
    pub fn random(rng: &mut Rng, channels: usize, classes: usize) -> Self {
        let bound = 1.0 / (channels as f64).sqrt();
        let mut draw = || ((2.0 * rng.uniform() - 1.0) * bound) as f32;
        let weight = HugeBuf::from_fn(classes * channels, &mut draw);
        Linear {
            weight,
            channels,
            bias: Array1::from_shape_simple_fn(classes, draw),
        }
    }
}

/// Loads a model's layers one by one, keeping the first error: each method
/// returns the layer, or after an error an unloaded placeholder (which
/// allocates nothing and is only ever dropped), and [`Loader::finish`]
/// reports the error. Generated code builds its struct with these, so it
/// needs no `?` per field, whose error paths would grow with the square of
/// the number of layers.
pub struct Loader<'a> {
    weights: Weights<'a>,
    error: Option<WeightsError>,
}

impl<'a> Loader<'a> {
    /// Parses a safetensors file's bytes.
    ///
    /// # Errors
    /// If they are not a complete safetensors file.
    pub fn new(bytes: &'a [u8]) -> Result<Self, WeightsError> {
        Ok(Loader {
            weights: Weights::parse(bytes)?,
            error: None,
        })
    }

    /// Opens a safetensors file, which is then read one tensor at a time.
    ///
    /// # Errors
    /// If it cannot be read or its header is malformed.
    pub fn open(path: &std::path::Path) -> Result<Loader<'static>, WeightsError> {
        Ok(Loader {
            weights: Weights::open(path)?,
            error: None,
        })
    }

    fn record<T>(
        &mut self,
        load: impl FnOnce(&mut Weights<'a>) -> Result<T, WeightsError>,
        unloaded: impl FnOnce() -> T,
    ) -> T {
        if self.error.is_none() {
            match load(&mut self.weights) {
                Ok(layer) => return layer,
                Err(e) => self.error = Some(e),
            }
        }
        unloaded()
    }

    /// [`ConvLayer::load`].
    pub fn conv(
        &mut self,
        conv: &str,
        bn: Option<&str>,
        p: ConvParams,
        layout: ConvLayout,
    ) -> ConvLayer {
        self.record(
            |w| ConvLayer::load(w, conv, bn, p, layout),
            || ConvLayer {
                name: conv.into(),
                kernel: ConvKernel::Planar(Conv2d::unloaded(p)),
                layout: ConvLayout::PLANAR,
            },
        )
    }

    /// [`Affine::load`].
    pub fn affine(&mut self, name: &str, channels: usize) -> Affine {
        self.record(
            |w| Affine::load(w, name, channels),
            || Affine {
                scale: Vec::new(),
                shift: Vec::new(),
            },
        )
    }

    /// [`Linear::load`].
    pub fn linear(&mut self, name: &str, channels: usize, classes: usize) -> Linear {
        self.record(
            |w| Linear::load(w, name, channels, classes),
            || Linear {
                weight: HugeBuf::zeros(0),
                channels: 0,
                bias: Array::zeros(0),
            },
        )
    }

    /// The first error, or else a check that every tensor was used.
    ///
    /// # Errors
    /// The first layer's error, or [`WeightsError::Unexpected`].
    pub fn finish(self) -> Result<(), WeightsError> {
        match self.error {
            Some(e) => Err(e),
            None => self.weights.finish(),
        }
    }
}
