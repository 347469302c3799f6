//! Every kernel against a naive f64 reference, on randomized shapes (odd
//! sizes, strides 1 and 2, padding, groups, batches), with every
//! instruction set this CPU supports; and 1 thread against 2, bit for bit.

use ndarray::{s, Array, Array1, Array2, Array4, ArrayView2, ArrayView4, Dimension, ShapeBuilder};
use resnet_runtime::kernels::blocked::{
    to_blocked, to_planar, BlockedConv, BlockedIo, BlockedLayer, BlockedOutput, BlockedStem,
    BlockedStrategy,
};
use resnet_runtime::kernels::elementwise::{channel_affine, fold_batch_norm, subsample, BN_EPS};
use resnet_runtime::kernels::pool::{
    avg_pool_linear, avg_pool_linear_blocked, avg_pool_linear_scratch, max_pool2d,
    max_pool2d_blocked, max_pool2d_to_blocked, max_pool2d_to_blocked_scratch,
};
use resnet_runtime::kernels::{
    gemm, workspace_len, Conv2d, ConvParams, ConvStrategy, Epilogue, Isa, PackedWeights, Residual,
    Shortcut,
};

/// The runtime's seeded generator, with what these tests draw from it.
struct Rng(resnet_runtime::layers::Rng);

impl Rng {
    /// Reproducible from `seed`, so failures reproduce.
    fn seeded(seed: u64) -> Self {
        Rng(resnet_runtime::layers::Rng::new(seed))
    }

    /// Uniform in `lo..=hi`.
    fn int(&mut self, lo: usize, hi: usize) -> usize {
        (lo + (self.0.uniform() * (hi - lo + 1) as f64) as usize).min(hi)
    }

    /// Uniform in `[-1, 1)`.
    fn float(&mut self) -> f32 {
        (2.0 * self.0.uniform() - 1.0) as f32
    }

    fn array<D: Dimension>(&mut self, shape: impl ShapeBuilder<Dim = D>) -> Array<f32, D> {
        Array::from_shape_simple_fn(shape, || self.float())
    }
}

/// Asserts `got` matches the f64 `want` to within `tol` of each element's
/// magnitude scale `scale` (the sum of |terms| that made it).
fn assert_close<D: Dimension>(
    got: &Array<f32, D>,
    want: &Array<f64, D>,
    scale: &Array<f64, D>,
    tol: f64,
    what: &str,
) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for ((g, w), s) in got.iter().zip(want).zip(scale) {
        let err = (*g as f64 - w).abs();
        assert!(
            err <= tol * (s + 1e-3),
            "{what}: got {g}, want {w} (scale {s})"
        );
    }
}

/// `relu(a · b + bias + residual)` in f64, and the sum of |terms| per element.
fn reference_gemm(
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    bias: &[f32],
    residual: Option<(&Array2<f32>, usize)>,
    relu: bool,
) -> (Array2<f64>, Array2<f64>) {
    let (m, n) = (a.dim().0, b.dim().1);
    let mut out = Array2::zeros((m, n));
    let mut scale = Array2::zeros((m, n));
    for i in 0..m {
        for j in 0..n {
            let mut acc = bias[i] as f64;
            let mut mag = (bias[i] as f64).abs();
            for k in 0..a.dim().1 {
                let t = a[(i, k)] as f64 * b[(k, j)] as f64;
                acc += t;
                mag += t.abs();
            }
            if let Some((r, rows)) = residual {
                if i < rows {
                    acc += r[(i, j)] as f64;
                    mag += (r[(i, j)] as f64).abs();
                }
            }
            out[(i, j)] = if relu { acc.max(0.0) } else { acc };
            scale[(i, j)] = mag;
        }
    }
    (out, scale)
}

#[test]
fn gemm_matches_f64_reference_on_every_isa_and_thread_count() {
    let mut rng = Rng::seeded(1);
    // Rows of columns that AVX-512 cuts into 48-column tiles (a 7x7
    // image's 49: 48 and one riding along), as well as random ones; the
    // narrow ones again on whole panels of 8 rows, whose `B` the kernel
    // reads where it lies.
    let wide = [48, 49, 50, 144, 146, 32, 48, 49, 50, 64, 96];
    for case in 0..40 + wide.len() {
        let (m, k) = (rng.int(1, 70), rng.int(1, 600));
        let m = if case >= 45 { 8 * rng.int(1, 9) } else { m };
        let n = wide.get(case.wrapping_sub(40)).copied();
        let n = n.unwrap_or_else(|| rng.int(1, 700));
        let a = rng.array((m, k));
        let b = rng.array((k, n));
        let bias: Vec<f32> = (0..m).map(|_| rng.float()).collect();
        let res_rows = rng.int(0, m);
        let residual = rng.array((m, n));
        let relu = case % 2 == 0;
        let with_residual = case % 3 != 0;
        let (want, scale) = reference_gemm(
            a.view(),
            b.view(),
            &bias,
            with_residual.then_some((&residual, res_rows)),
            relu,
        );
        let epilogue = Epilogue {
            bias: Some(&bias),
            residual: with_residual.then_some(Residual {
                data: residual.as_slice().unwrap(),
                ld: n,
                rows: res_rows,
            }),
            relu,
            accumulate: false,
        };
        let mut workspace = vec![0.0; workspace_len(2)];
        for isa in Isa::supported() {
            let packed = PackedWeights::new(isa, a.view());
            // A row-major weight packs by transposing within each panel;
            // one of other strides element by element, to the same panels.
            let column_major = a.t().as_standard_layout().into_owned();
            let strided = PackedWeights::new(isa, column_major.t());
            assert_eq!(strided, packed, "packing {m}x{k} for {isa:?}");
            let mut outs = Vec::new();
            for threads in [1, 2] {
                let mut c = Array2::from_elem((m, n), f32::NAN);
                gemm(
                    &packed,
                    b.view(),
                    c.view_mut(),
                    &epilogue,
                    &mut workspace,
                    threads,
                );
                assert_close(
                    &c,
                    &want,
                    &scale,
                    1e-6,
                    &format!("gemm {m}x{k}x{n} {isa:?} {threads} threads"),
                );
                outs.push(c);
            }
            assert!(
                outs[0] == outs[1],
                "gemm {m}x{k}x{n} {isa:?}: 1 and 2 threads differ"
            );
            // The same with `C` holding the residual, added in place.
            let mut c = Array2::zeros((m, n));
            if with_residual {
                c.slice_mut(s![..res_rows, ..])
                    .assign(&residual.slice(s![..res_rows, ..]));
            }
            let accumulate = Epilogue {
                residual: None,
                accumulate: true,
                ..epilogue
            };
            gemm(
                &packed,
                b.view(),
                c.view_mut(),
                &accumulate,
                &mut workspace,
                2,
            );
            assert_close(
                &c,
                &want,
                &scale,
                1e-6,
                &format!("gemm {m}x{k}x{n} {isa:?} accumulating"),
            );
        }
    }
}

/// Direct convolution in f64: output and per-element magnitude scale.
fn reference_conv(
    p: &ConvParams,
    x: ArrayView4<f32>,
    w: ArrayView4<f32>,
    bias: &[f32],
) -> (Array4<f64>, Array4<f64>) {
    let (oh, ow) = p.out_hw();
    let n = x.dim().0;
    let (cin, cout) = (p.in_channels / p.groups, p.out_channels / p.groups);
    let mut out = Array4::zeros((n, p.out_channels, oh, ow));
    let mut scale = Array4::zeros((n, p.out_channels, oh, ow));
    for b in 0..n {
        for o in 0..p.out_channels {
            let g = o / cout;
            for oy in 0..oh {
                for ox in 0..ow {
                    let (mut acc, mut mag) = (bias[o] as f64, (bias[o] as f64).abs());
                    for c in 0..cin {
                        for ky in 0..p.kernel {
                            for kx in 0..p.kernel {
                                let iy = (oy * p.stride + ky) as isize - p.padding as isize;
                                let ix = (ox * p.stride + kx) as isize - p.padding as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy >= p.in_h as isize
                                    || ix >= p.in_w as isize
                                {
                                    continue;
                                }
                                let t = x[(b, g * cin + c, iy as usize, ix as usize)] as f64
                                    * w[(o, c, ky, kx)] as f64;
                                acc += t;
                                mag += t.abs();
                            }
                        }
                    }
                    out[(b, o, oy, ox)] = acc;
                    scale[(b, o, oy, ox)] = mag;
                }
            }
        }
    }
    (out, scale)
}

/// [`reference_conv`] followed by the epilogue: `relu?(conv + bias +
/// residual)`, where the residual may have fewer channels than the output.
fn reference_epilogue(
    p: &ConvParams,
    x: ArrayView4<f32>,
    w: ArrayView4<f32>,
    bias: &[f32],
    residual: ArrayView4<f32>,
    relu: bool,
) -> (Array4<f64>, Array4<f64>) {
    let (mut want, mut scale) = reference_conv(p, x, w, bias);
    let res_channels = residual.dim().1;
    for ((b, o, y, x), v) in want.indexed_iter_mut() {
        if o < res_channels {
            *v += residual[(b, o, y, x)] as f64;
            scale[(b, o, y, x)] += (residual[(b, o, y, x)] as f64).abs();
        }
        if relu {
            *v = v.max(0.0);
        }
    }
    (want, scale)
}

/// Checks `run(Isa::Portable, 1)` against the f64 reference, then every
/// instruction set on 1 to 3 threads against it bit for bit.
fn assert_portable_close_and_others_equal(
    (want, scale, tol): (&Array4<f64>, &Array4<f64>, f64),
    what: &str,
    run: impl Fn(Isa, usize) -> Array4<f32>,
) {
    let portable = run(Isa::Portable, 1);
    assert_close(&portable, want, scale, tol, what);
    for isa in Isa::supported() {
        for threads in 1..=3 {
            let out = run(isa, threads);
            let same = out
                .iter()
                .zip(&portable)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{what}: {isa:?} on {threads} threads differs from portable"
            );
        }
    }
}

/// Checks each instruction set on one thread against the f64 reference,
/// and on 2 and 3 threads against itself bit for bit: for the NCHW GEMM,
/// whose portable kernel rounds each product before adding it.
fn assert_each_close_and_threads_equal(
    (want, scale, tol): (&Array4<f64>, &Array4<f64>, f64),
    what: &str,
    run: impl Fn(Isa, usize) -> Array4<f32>,
) {
    for isa in Isa::supported() {
        let one = run(isa, 1);
        assert_close(&one, want, scale, tol, &format!("{what}, {isa:?}"));
        for threads in 2..=3 {
            let out = run(isa, threads);
            let same = out
                .iter()
                .zip(&one)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{what}: {isa:?} on {threads} threads differs from one thread"
            );
        }
    }
}

fn random_conv(rng: &mut Rng) -> ConvParams {
    let kernel = [1, 1, 3, 3, 3, 5, 7][rng.int(0, 6)];
    let groups = [1, 1, 1, 2, 4][rng.int(0, 4)];
    ConvParams {
        in_channels: groups * rng.int(1, 12),
        out_channels: groups * rng.int(1, 20),
        kernel,
        stride: rng.int(1, 3),
        padding: rng.int(0, kernel / 2),
        groups,
        in_h: rng.int(kernel, 19),
        in_w: rng.int(kernel, 23),
    }
}

#[test]
fn convolutions_match_f64_reference_on_every_isa_strategy_and_thread_count() {
    let mut rng = Rng::seeded(2);
    let strategies = [
        ConvStrategy::Pointwise,
        ConvStrategy::Patches,
        ConvStrategy::Direct,
        ConvStrategy::Blocked,
        ConvStrategy::Winograd,
        ConvStrategy::Winograd4x4,
        ConvStrategy::WinogradOnTheFly,
    ];
    let mut ran = [0; 7];
    // Runs of `WinogradOnTheFly` on batches whose tiles make Winograd pay,
    // rather than the patch GEMM.
    let mut on_the_fly = 0;
    for case in 0..80 {
        let mut p = random_conv(&mut rng);
        match case % 6 {
            // The pointwise path.
            0 => (p.kernel, p.stride, p.padding) = (1, 1, 0),
            // The Winograd path: odd sizes and every padding.
            1 => {
                (p.kernel, p.stride, p.in_channels, p.groups) = (3, 1, p.in_channels / p.groups, 1)
            }
            // Patches deeper than one block of `K` (so a block starts inside
            // a channel's taps), from rows narrower and wider than a panel.
            2 => {
                (p.kernel, p.padding, p.in_channels, p.groups) = (3, 1, 60, 1);
                p.in_w = [9, 40, 70][case / 6 % 3];
            }
            // Stem-like: a wide, strided kernel over rows of several tiles,
            // the last one partial (the direct path's case): rows of 33, 35,
            // 48 and 50 columns, the first three ending in one wider tile on
            // AVX-512.
            3 => {
                (p.kernel, p.stride, p.padding, p.groups) = (7, 2, 3, 1);
                p.in_w = [65, 70, 95, 100][case / 6 % 4];
            }
            // Channels in blocks of 16 (the blocked path), with output rows
            // of half an AVX-512 tile (7 pixels) in some.
            4 => {
                (p.in_channels, p.out_channels, p.groups) = (16 * (case % 3 + 1), 48, 1);
                if case % 4 == 0 {
                    p.in_w = (7 - 1) * p.stride + p.kernel - 2 * p.padding;
                }
            }
            _ => {}
        }
        (p.in_h, p.in_w) = (p.in_h.max(p.kernel), p.in_w.max(p.kernel));
        // Winograd cases from the fifth on run batches of up to 8, whose
        // tiles may make the blocks `WinogradOnTheFly` needs.
        let batch = rng.int(1, if case % 6 == 1 && case >= 24 { 8 } else { 3 });
        let (oh, ow) = p.out_hw();
        let x = rng.array((batch, p.in_channels, p.in_h, p.in_w));
        let w = rng.array((p.out_channels, p.in_channels / p.groups, p.kernel, p.kernel));
        let bias: Array1<f32> = rng.array(p.out_channels);
        // A residual with up to all output channels; the rest are zero-padded.
        let res_channels = rng.int(0, p.out_channels);
        let residual = rng.array((batch, res_channels, oh, ow));
        let relu = case % 2 == 1;
        let bias_slice = bias.as_slice().unwrap();
        let (want, scale) =
            reference_epilogue(&p, x.view(), w.view(), bias_slice, residual.view(), relu);
        let largest_scale = scale.fold(0f64, |m, &s| m.max(s));
        for isa in Isa::supported() {
            for strategy in strategies.into_iter().filter(|s| s.fits(&p)) {
                ran[strategy as usize] += 1;
                let conv = Conv2d::with_strategy(isa, strategy, p, w.view(), Some(bias.view()));
                on_the_fly +=
                    usize::from(conv.strategy_for(batch) == ConvStrategy::WinogradOnTheFly);
                let mut workspace = vec![0.0; conv.workspace_len(2)];
                let what = format!("{p:?} batch {batch} {isa:?} {strategy:?}");
                let mut outs = Vec::new();
                for threads in [1, 2] {
                    let mut out = Array4::from_elem((batch, p.out_channels, oh, ow), f32::NAN);
                    conv.forward(
                        x.view(),
                        out.view_mut(),
                        Some(residual.view()),
                        relu,
                        &mut workspace,
                        threads,
                    );
                    // Winograd's transforms add a few roundings per term,
                    // and spread them over a tile's outputs: an output that
                    // sees only padding still gets its tile's rounding. So
                    // its error is held to the largest scale of all.
                    let (tol, scale) = match strategy {
                        ConvStrategy::Winograd
                        | ConvStrategy::Winograd4x4
                        | ConvStrategy::WinogradOnTheFly => (1e-5, scale.mapv(|_| largest_scale)),
                        _ => (1e-6, scale.clone()),
                    };
                    assert_close(
                        &out,
                        &want,
                        &scale,
                        tol,
                        &format!("{what}, {threads} threads"),
                    );
                    outs.push(out);
                    // The same with the residual already in the output,
                    // zero-padded to all its channels.
                    let mut out = Array4::zeros((batch, p.out_channels, oh, ow));
                    out.slice_mut(s![.., ..res_channels, .., ..])
                        .assign(&residual);
                    conv.forward_in_place(x.view(), out.view_mut(), relu, &mut workspace, threads);
                    assert_close(
                        &out,
                        &want,
                        &scale,
                        tol,
                        &format!("{what}, {threads} threads, in place"),
                    );
                    outs.push(out);
                }
                assert!(outs[0] == outs[2], "{what}: 1 and 2 threads differ");
                assert!(
                    outs[1] == outs[3],
                    "{what}: 1 and 2 threads differ in place"
                );
            }
        }
    }
    assert!(ran.iter().all(|&n| n >= 10), "runs per strategy: {ran:?}");
    assert!(
        on_the_fly >= 5,
        "{on_the_fly} runs of WinogradOnTheFly's Winograd"
    );
}

#[test]
fn simd_kernels_agree_with_the_portable_kernel() {
    let mut rng = Rng::seeded(3);
    let p = ConvParams {
        in_channels: 64,
        out_channels: 96,
        kernel: 3,
        stride: 1,
        padding: 1,
        groups: 1,
        in_h: 28,
        in_w: 28,
    };
    let x = rng.array((2, 64, 28, 28));
    let w = rng.array((96, 64, 3, 3));
    let run = |isa| {
        let mut out = Array4::zeros((2, 96, 28, 28));
        let conv = Conv2d::with_strategy(isa, ConvStrategy::Patches, p, w.view(), None);
        conv.forward(
            x.view(),
            out.view_mut(),
            None,
            false,
            &mut vec![0.0; conv.workspace_len(2)],
            2,
        );
        out
    };
    let portable = run(Isa::Portable);
    for isa in Isa::supported() {
        let out = run(isa);
        let worst = out
            .iter()
            .zip(&portable)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        // 576-term sums of products of [-1, 1) values: |sum| <~ 30, f32 rounding ~1e-5.
        assert!(
            worst < 1e-4,
            "{isa:?} differs from the portable kernel by {worst}"
        );
    }
}

#[test]
fn winograd_matches_direct_convolution_on_resnet_layers() {
    let mut rng = Rng::seeded(8);
    // ResNet-50's 3x3 stride-1 layers (and ResNet-18/34's), and a CIFAR
    // ResNet's last stage, batch 8, with the strategy each gets by default
    // (see `ConvStrategy::for_params`).
    let batch = 8;
    for (channels, side) in [(64, 56), (128, 28), (256, 14), (512, 7), (64, 8)] {
        let p = ConvParams {
            in_channels: channels,
            out_channels: channels,
            kernel: 3,
            stride: 1,
            padding: 1,
            groups: 1,
            in_h: side,
            in_w: side,
        };
        let default = match side {
            28.. => ConvStrategy::Winograd4x4,
            8.. => ConvStrategy::Winograd,
            _ => ConvStrategy::WinogradOnTheFly,
        };
        assert_eq!(ConvStrategy::for_params(&p), default);
        if default == ConvStrategy::WinogradOnTheFly {
            let conv = Conv2d::new(p, Array4::zeros((channels, channels, 3, 3)).view(), None);
            assert_eq!(conv.strategy_for(1), ConvStrategy::Patches);
            assert_eq!(conv.strategy_for(batch), ConvStrategy::WinogradOnTheFly);
        }
        // Kaiming-scaled weights and post-ReLU inputs, as in a trained network.
        let gain = (6.0 / (9.0 * channels as f32)).sqrt();
        let w = rng.array((channels, channels, 3, 3)).mapv(|v| v * gain);
        let x = rng
            .array((batch, channels, side, side))
            .mapv(|v: f32| v.max(0.0));
        let run_on = |strategy, x: ArrayView4<f32>, threads| {
            let conv = Conv2d::with_strategy(Isa::best(), strategy, p, w.view(), None);
            let mut out = Array4::zeros((x.dim().0, channels, side, side));
            conv.forward(
                x,
                out.view_mut(),
                None,
                false,
                &mut vec![0.0; conv.workspace_len(threads)],
                threads,
            );
            out
        };
        let run = |strategy| run_on(strategy, x.view(), 2);
        // The direct convolution, as the patch GEMM computes it.
        let plain = run(ConvStrategy::Patches);
        let largest = plain.iter().fold(0f32, |m, v| m.max(v.abs()));
        for strategy in [
            ConvStrategy::Winograd,
            ConvStrategy::Winograd4x4,
            ConvStrategy::WinogradOnTheFly,
        ] {
            let winograd = run(strategy);
            let worst = plain
                .iter()
                .zip(&winograd)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst / largest < 1e-4,
                "{channels}x{side} {strategy:?}: relative error {}",
                worst / largest
            );
            // One image on 1 to 3 threads, bit for bit the batch's first:
            // a thread's share of tiles may end in a few that go a column
            // at a time (on 2 threads, 98 of 56x56's 196 F(4x4) tiles are
            // three blocks and two), where 1 thread takes them in a block;
            // and an 8x8 image's 16 F(2x2) tiles (a 7x7 one's too) are
            // shared as output channels, the batch's as tiles.
            // (`WinogradOnTheFly` runs one image as the patch GEMM.)
            if strategy == ConvStrategy::WinogradOnTheFly {
                continue;
            }
            let image = x.slice(s![..1, .., .., ..]);
            let first = winograd.slice(s![..1, .., .., ..]);
            for threads in 1..=3 {
                assert!(
                    run_on(strategy, image, threads) == first,
                    "{channels}x{side} {strategy:?}: one image on {threads} threads"
                );
            }
        }
    }
}

#[test]
fn max_pool_matches_a_direct_loop() {
    let mut rng = Rng::seeded(4);
    let mut cases: Vec<_> = (0..40)
        .map(|_| {
            let (k, stride) = (rng.int(1, 4), rng.int(1, 3));
            let pad = rng.int(0, k - 1);
            // Down to planes narrower than the window, which only padding fills.
            let least = k.saturating_sub(2 * pad).max(1);
            let shape = (
                rng.int(1, 2),
                rng.int(1, 5),
                rng.int(least, 13),
                rng.int(least, 11),
            );
            (shape, k, stride, pad)
        })
        .collect();
    // torchvision's stem pool (112 -> 56), and rows longer than the pool's
    // chunks of columns.
    cases.push(((1, 2, 112, 112), 3, 2, 1));
    cases.push(((1, 2, 5, 300), 3, 1, 1));
    cases.push(((1, 1, 4, 301), 4, 3, 2));
    for ((n, c, h, w), k, stride, pad) in cases {
        let x = rng.array((n, c, h, w));
        let (oh, ow) = (
            (h + 2 * pad - k) / stride + 1,
            (w + 2 * pad - k) / stride + 1,
        );
        let mut out = Array4::zeros((n, c, oh, ow));
        max_pool2d(x.view(), out.view_mut(), k, stride, pad);
        for ((b, ch, oy, ox), &got) in out.indexed_iter() {
            let mut want = f32::NEG_INFINITY;
            for ky in 0..k {
                for kx in 0..k {
                    let (iy, ix) = (
                        (oy * stride + ky) as isize - pad as isize,
                        (ox * stride + kx) as isize - pad as isize,
                    );
                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                        want = want.max(x[(b, ch, iy as usize, ix as usize)]);
                    }
                }
            }
            assert_eq!(got, want, "k{k} s{stride} p{pad} at {:?}", (b, ch, oy, ox));
        }
    }
}

#[test]
fn pooled_classifier_matches_a_direct_loop() {
    let mut rng = Rng::seeded(5);
    // More classes than one parallel task takes, an odd number of them,
    // channels past a whole number of 32, and batches that fill blocks of
    // four images or leave some over.
    for n in [1, 2, 3, 5, 8] {
        pooled_classifier_case(&mut rng, n);
    }
}

fn pooled_classifier_case(rng: &mut Rng, n: usize) {
    let (c, h, w, k) = (37, 5, 7, 151);
    let x = rng.array((n, c, h, w));
    let weight = rng.array((k, c));
    let bias = rng.array(k);
    let mut out = Array2::zeros((n, k));
    avg_pool_linear(
        x.view(),
        weight.view(),
        bias.view(),
        out.view_mut(),
        &mut vec![0.0; avg_pool_linear_scratch(n, c, k)],
    );
    for ((b, class), &got) in out.indexed_iter() {
        let mut want = bias[class] as f64;
        for ch in 0..c {
            let mean = x
                .slice(s![b, ch, .., ..])
                .iter()
                .map(|&v| v as f64)
                .sum::<f64>()
                / (h * w) as f64;
            want += weight[(class, ch)] as f64 * mean;
        }
        assert!(
            (got as f64 - want).abs() < 1e-5,
            "logit {b},{class}: {got} vs {want}"
        );
    }
}

#[test]
fn folded_batch_norm_equals_convolution_then_batch_norm() {
    let mut rng = Rng::seeded(6);
    let p = ConvParams {
        in_channels: 5,
        out_channels: 7,
        kernel: 3,
        stride: 2,
        padding: 1,
        groups: 1,
        in_h: 9,
        in_w: 8,
    };
    let x = rng.array((2, 5, 9, 8));
    let w = rng.array((7, 5, 3, 3));
    let gamma = rng.array(7);
    let beta = rng.array(7);
    let mean = rng.array(7);
    let var = rng.array(7).mapv(|v: f32| v.abs() + 0.1);
    let (folded_w, folded_b) = fold_batch_norm(
        w.view(),
        gamma.view(),
        beta.view(),
        mean.view(),
        var.view(),
        BN_EPS,
    );
    let (oh, ow) = p.out_hw();
    let mut out = Array4::zeros((2, 7, oh, ow));
    let conv = Conv2d::new(p, folded_w.view(), Some(folded_b.view()));
    conv.forward(
        x.view(),
        out.view_mut(),
        None,
        false,
        &mut vec![0.0; conv.workspace_len(1)],
        1,
    );
    let (plain, scale) = reference_conv(&p, x.view(), w.view(), &[0.0; 7]);
    for ((b, o, y, xx), &got) in out.indexed_iter() {
        let inv = 1.0 / (var[o] as f64 + BN_EPS as f64).sqrt();
        let want = (plain[(b, o, y, xx)] - mean[o] as f64) * inv * gamma[o] as f64 + beta[o] as f64;
        let tol = 1e-5 * (scale[(b, o, y, xx)] * inv * (gamma[o] as f64).abs() + 1.0);
        assert!((got as f64 - want).abs() < tol, "{got} vs {want}");
    }
}

#[test]
fn channel_affine_and_subsample() {
    let mut rng = Rng::seeded(7);
    let x = rng.array((2, 3, 5, 4));
    let (scale, shift) = ([2.0, -1.0, 0.5], [0.25, 0.0, -3.0]);
    let mut out = Array4::zeros((2, 3, 5, 4));
    channel_affine(x.view(), &scale, &shift, true, out.view_mut());
    for ((b, c, y, xx), &got) in out.indexed_iter() {
        assert_eq!(got, (x[(b, c, y, xx)] * scale[c] + shift[c]).max(0.0));
    }
    let mut half = Array4::zeros((2, 3, 3, 2));
    subsample(x.view(), 2, half.view_mut());
    for ((b, c, y, xx), &got) in half.indexed_iter() {
        assert_eq!(got, x[(b, c, 2 * y, 2 * xx)]);
    }
}

#[test]
fn blocked_layout_puts_each_block_of_16_channels_together_at_each_pixel() {
    let mut rng = Rng::seeded(8);
    let x: Array4<f32> = rng.array((2, 48, 5, 7));
    let mut blocked = vec![f32::NAN; x.len()];
    to_blocked(x.view(), &mut blocked);
    for ((n, c, h, w), &v) in x.indexed_iter() {
        let at = (((n * 3 + c / 16) * 5 + h) * 7 + w) * 16 + c % 16;
        assert_eq!(blocked[at], v, "element {:?}", (n, c, h, w));
    }
    let mut back = Array4::from_elem(x.dim(), f32::NAN);
    to_planar(&blocked, back.view_mut());
    assert_eq!(back, x);
}

/// The blocked 1x1 convolution against the f64 reference, on every
/// instruction set and 1 to 3 threads, and bit for bit against the portable
/// kernel: every image size splits into tiles of every length, strided
/// layers keep tiles within output rows (or take two rows of half a
/// tile), odd block counts of output
/// channels end on a half panel (AVX-512), and the wide layers take
/// several chunks of tiles and several threads' runs of panels.
#[test]
fn blocked_pointwise_matches_f64_reference_and_the_portable_kernel_bit_for_bit() {
    let mut rng = Rng::seeded(7);
    for case in 0..36 {
        let (blocks_in, blocks_out) = match case % 6 {
            // Deep enough for several chunks of tiles per thread.
            0 => (24, 3),
            _ => (rng.int(1, 5), rng.int(1, 5)),
        };
        let stride = [1, 2, 3][case % 3];
        let side = |rng: &mut Rng| rng.int(1, 33);
        let mut p = ConvParams {
            in_channels: 16 * blocks_in,
            out_channels: 16 * blocks_out,
            kernel: 1,
            stride,
            padding: 0,
            groups: 1,
            in_h: side(&mut rng),
            in_w: side(&mut rng),
        };
        // Output rows of half a tile (7, 3 and 4 pixels on AVX-512, AVX2
        // and portable), which strided layers pair up.
        if stride > 1 && case % 2 == 1 {
            p.in_w = stride * [7, 3, 4][case / 6 % 3] - rng.int(0, stride - 1);
        }
        let batch = rng.int(1, 3);
        let (oh, ow) = p.out_hw();
        let x = rng.array((batch, p.in_channels, p.in_h, p.in_w));
        let w = rng.array((p.out_channels, p.in_channels, 1, 1));
        let bias: Array1<f32> = rng.array(p.out_channels);
        let residual = rng.array((batch, p.out_channels, oh, ow));
        let relu = case % 2 == 0;
        let bias_slice = bias.as_slice().unwrap();
        let (want, scale) =
            reference_epilogue(&p, x.view(), w.view(), bias_slice, residual.view(), relu);
        let mut blocked_x = vec![0.0; x.len()];
        to_blocked(x.view(), &mut blocked_x);
        let mut blocked_residual = vec![0.0; residual.len()];
        to_blocked(residual.view(), &mut blocked_residual);
        let run = |isa, threads| {
            let conv = BlockedConv::new(isa, p, w.view(), Some(bias.view()));
            let mut out = vec![f32::NAN; residual.len()];
            conv.forward(
                &blocked_x,
                batch,
                &mut out,
                Some(&blocked_residual),
                relu,
                threads,
            );
            let mut planar = Array4::from_elem(residual.dim(), f32::NAN);
            to_planar(&out, planar.view_mut());
            planar
        };
        let what = format!("{p:?} batch {batch}");
        assert_portable_close_and_others_equal((&want, &scale, 1e-6), &what, run);
    }
}

/// The blocked strategy on NCHW tensors (padded, blocked copy; outputs
/// stored back to NCHW rows) against the f64 reference, and every
/// instruction set and thread count bit for bit against the portable
/// kernel: kernels of 1 to 7 with every padding, strides 1 to 3, rows of
/// half a tile on each instruction set, and residuals of fewer channels
/// than the output (the zero-padded shortcut).
#[test]
fn blocked_convolutions_on_nchw_agree_bit_for_bit_across_isas() {
    let mut rng = Rng::seeded(9);
    for case in 0..30 {
        let kernel = [1, 3, 3, 5, 7][case % 5];
        let stride = [1, 2, 3][case % 3];
        let mut p = ConvParams {
            in_channels: 16 * rng.int(1, 3),
            out_channels: 16 * rng.int(1, 3),
            kernel,
            stride,
            padding: rng.int(0, kernel / 2),
            groups: 1,
            in_h: rng.int(kernel, 20),
            in_w: rng.int(kernel, 40),
        };
        if case % 2 == 1 {
            // Output rows of 7, 3 or 4 pixels: half a tile on AVX-512, AVX2, portable.
            let ow = [7, 3, 4][case / 2 % 3];
            p.in_w = (ow - 1) * stride + kernel - 2 * p.padding;
        }
        let batch = rng.int(1, 2);
        let (oh, ow) = p.out_hw();
        let x = rng.array((batch, p.in_channels, p.in_h, p.in_w));
        let w = rng.array((p.out_channels, p.in_channels, kernel, kernel));
        let bias: Array1<f32> = rng.array(p.out_channels);
        let res_channels = rng.int(0, p.out_channels);
        let residual = rng.array((batch, res_channels, oh, ow));
        let relu = case % 4 < 2;
        let bias_slice = bias.as_slice().unwrap();
        let (want, scale) =
            reference_epilogue(&p, x.view(), w.view(), bias_slice, residual.view(), relu);
        let run = |isa, threads| {
            let conv =
                Conv2d::with_strategy(isa, ConvStrategy::Blocked, p, w.view(), Some(bias.view()));
            let mut out = Array4::from_elem((batch, p.out_channels, oh, ow), f32::NAN);
            conv.forward(
                x.view(),
                out.view_mut(),
                Some(residual.view()),
                relu,
                &mut vec![f32::NAN; conv.workspace_len(threads)],
                threads,
            );
            out
        };
        let what = format!("{p:?} batch {batch}, residual of {res_channels}");
        assert_portable_close_and_others_equal((&want, &scale, 1e-6), &what, run);
    }
}

/// The layers of a network's blocked stages (`BlockedLayer`: Winograd
/// F(2x2) and F(4x4) with whole-vector transforms, the direct kernels
/// over a zero-padded copy of a blocked input, writing blocked or NCHW
/// output, and the patch GEMM gathering from blocks) against the f64
/// reference, and every instruction set and thread count bit for bit
/// against the portable kernels (the patch GEMM: each against itself).
/// Shapes: odd sizes whose last tiles are partial, a batch's last block of
/// tiles short, and residuals added from another tensor or in place.
#[test]
fn blocked_layers_match_f64_reference_and_agree_bit_for_bit() {
    let mut rng = Rng::seeded(11);
    let mut patches = 0;
    for case in 0..60 {
        let (kernel, stride, padding) = [
            (3, 1, 1),
            (3, 1, 1),
            (3, 2, 1),
            (1, 2, 0),
            (1, 1, 0),
            (7, 2, 3),
        ][case % 6];
        // Winograd picks F(4x4) from outputs of 28 a side, F(2x2) from 7.
        let side = match case % 4 {
            0 => rng.int(28, 33),
            1 => rng.int(8, 27),
            _ => rng.int(kernel, 12),
        };
        let p = ConvParams {
            in_channels: 16 * rng.int(1, 3),
            out_channels: 16 * rng.int(1, 3),
            kernel,
            stride,
            padding,
            groups: 1,
            in_h: side,
            in_w: side + rng.int(0, 5),
        };
        let io = BlockedIo {
            // An input that comes with the layer's one-pixel padding.
            padded_input: padding == 1 && case % 4 == 2,
            output: match case % 5 {
                2 => BlockedOutput::Planar,
                4 => BlockedOutput::Padded,
                _ => BlockedOutput::Blocked,
            },
        };
        // 0: none, 1: another tensor, 2: in place; a padded output adds none.
        let shortcut = if io.output == BlockedOutput::Padded {
            0
        } else {
            case % 3
        };
        let batch = rng.int(1, 3);
        let (oh, ow) = p.out_hw();
        let x = rng.array((batch, p.in_channels, p.in_h, p.in_w));
        let w = rng.array((p.out_channels, p.in_channels, kernel, kernel));
        let bias: Array1<f32> = rng.array(p.out_channels);
        let residual = match shortcut {
            0 => Array4::zeros((batch, 0, oh, ow)),
            _ => rng.array((batch, p.out_channels, oh, ow)),
        };
        let relu = case % 2 == 0;
        let (want, scale) = reference_epilogue(
            &p,
            x.view(),
            w.view(),
            bias.as_slice().unwrap(),
            residual.view(),
            relu,
        );
        let bx = match io.padded_input {
            true => padded_blocks(x.view()),
            false => blocks(x.view()),
        };
        // The residual as the output is laid out.
        let res = match (shortcut, io.output) {
            (0, _) => Vec::new(),
            (_, BlockedOutput::Planar) => residual.iter().copied().collect(),
            _ => blocks(residual.view()),
        };
        let layer = BlockedLayer::new(p, w.view(), Some(bias.view()), io);
        let what = format!(
            "{p:?} batch {batch}, {:?}, shortcut {shortcut}, {io:?}",
            layer.strategy()
        );
        let run = |isa, threads| {
            let layer = BlockedLayer::with_isa(isa, p, w.view(), Some(bias.view()), io);
            let border = if io.output == BlockedOutput::Padded {
                2
            } else {
                0
            };
            let mut out = match shortcut {
                2 => res.clone(),
                _ => vec![f32::NAN; batch * p.out_channels * (oh + border) * (ow + border)],
            };
            let shortcut = match shortcut {
                0 => Shortcut::None,
                1 => Shortcut::Add(&res, p.out_channels),
                _ => Shortcut::InPlace,
            };
            let mut workspace = vec![f32::NAN; layer.workspace_len(threads)];
            layer.forward(
                &bx,
                batch,
                &mut out,
                shortcut,
                relu,
                &mut workspace,
                threads,
            );
            let dim = (batch, p.out_channels, oh, ow);
            match io.output {
                BlockedOutput::Planar => Array4::from_shape_vec(dim, out).unwrap(),
                BlockedOutput::Blocked => planar(&out, dim),
                BlockedOutput::Padded => planar(&unpadded_blocks(&out, dim, &what), dim),
            }
        };
        // Winograd spreads a tile's roundings over its outputs (see the
        // NCHW Winograd test): its error is held to the largest scale.
        let (tol, scale) = match layer.strategy() {
            BlockedStrategy::Direct | BlockedStrategy::Patches => (1e-6, scale),
            _ => {
                let largest = scale.iter().cloned().fold(0.0, f64::max);
                (1e-5, scale.mapv(|_| largest))
            }
        };
        match layer.strategy() {
            BlockedStrategy::Patches => {
                patches += 1;
                assert_each_close_and_threads_equal((&want, &scale, tol), &what, run)
            }
            _ => assert_portable_close_and_others_equal((&want, &scale, tol), &what, run),
        }
    }
    assert!(patches >= 2, "{patches} cases ran the patch GEMM on blocks");
}

/// `x` blocked.
fn blocks(x: ArrayView4<f32>) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    to_blocked(x, &mut out);
    out
}

/// `x` blocked, each plane inside a one-pixel border of zeros.
fn padded_blocks(x: ArrayView4<f32>) -> Vec<f32> {
    let (n, c, h, w) = x.dim();
    let mut padded = Array4::zeros((n, c, h + 2, w + 2));
    padded.slice_mut(s![.., .., 1..=h, 1..=w]).assign(&x);
    // Blocking the padded planes gives the padded blocked layout.
    blocks(padded.view())
}

/// The inside of padded blocked planes of `dim` (unpadded), after checking
/// that their borders are zeros.
fn unpadded_blocks(x: &[f32], (n, c, h, w): (usize, usize, usize, usize), what: &str) -> Vec<f32> {
    let mut planar = Array4::from_elem((n, c, h + 2, w + 2), f32::NAN);
    to_planar(x, planar.view_mut());
    for ((_, _, y, x), &v) in planar.indexed_iter() {
        if y == 0 || x == 0 || y == h + 1 || x == w + 1 {
            assert_eq!(v.to_bits(), 0, "{what}: a border of zeros");
        }
    }
    blocks(planar.slice(s![.., .., 1..=h, 1..=w]))
}

/// Blocked `x` of `dim` as an NCHW array.
fn planar(x: &[f32], dim: (usize, usize, usize, usize)) -> Array4<f32> {
    let mut out = Array4::from_elem(dim, f32::NAN);
    to_planar(x, out.view_mut());
    out
}

/// The head on a blocked input matches the NCHW head.
#[test]
fn pooled_classifier_on_blocked_input_matches_the_nchw_one() {
    let mut rng = Rng::seeded(13);
    for (n, c, h, w, k) in [(1, 16, 7, 7, 10), (3, 48, 5, 3, 151), (8, 64, 1, 1, 7)] {
        let x = rng.array((n, c, h, w));
        let (weight, bias) = (rng.array((k, c)), rng.array(k));
        let mut scratch = vec![0.0; avg_pool_linear_scratch(n, c, k)];
        let mut want = Array2::zeros((n, k));
        avg_pool_linear(
            x.view(),
            weight.view(),
            bias.view(),
            want.view_mut(),
            &mut scratch,
        );
        let mut bx = vec![0.0; x.len()];
        to_blocked(x.view(), &mut bx);
        let mut got = Array2::zeros((n, k));
        avg_pool_linear_blocked(
            &bx,
            (n, c, h, w),
            weight.view(),
            bias.view(),
            got.view_mut(),
            &mut scratch,
        );
        for ((at, &g), &v) in got.indexed_iter().zip(&want) {
            assert!(
                (g - v).abs() <= 1e-5 * (1.0 + v.abs()),
                "{:?} at {at:?}: {g} vs {v}",
                (n, c, h, w)
            );
        }
    }
}

/// A blocked network's stem (NCHW image in, blocked output) against the
/// f64 reference, and every instruction set and thread count bit for bit
/// against the portable kernel: ResNet's 7x7 stride-2 stem on odd sizes
/// whose rows end in short tiles, and a 3x3 one.
#[test]
fn blocked_stem_matches_f64_reference_and_agrees_bit_for_bit() {
    let mut rng = Rng::seeded(14);
    for (k, stride, cout) in [(7, 2, 64), (7, 2, 16), (3, 1, 48), (3, 2, 32)] {
        let p = ConvParams::same((3, cout), k, stride, (rng.int(9, 40), rng.int(9, 40)));
        let batch = rng.int(1, 2);
        let (oh, ow) = p.out_hw();
        let x = rng.array((batch, 3, p.in_h, p.in_w));
        let w = rng.array((cout, 3, k, k));
        let bias: Array1<f32> = rng.array(cout);
        let none = Array4::zeros((batch, 0, oh, ow));
        let (want, scale) = reference_epilogue(
            &p,
            x.view(),
            w.view(),
            bias.as_slice().unwrap(),
            none.view(),
            true,
        );
        let run = |isa, threads| {
            let stem = BlockedStem::new(isa, p, w.view(), Some(bias.view()));
            let mut out = vec![f32::NAN; batch * cout * oh * ow];
            let mut workspace = vec![f32::NAN; stem.workspace_len()];
            let x = x.as_slice().unwrap();
            stem.forward(x, batch, &mut out, true, &mut workspace, threads);
            let mut planar = Array4::from_elem((batch, cout, oh, ow), f32::NAN);
            to_planar(&out, planar.view_mut());
            planar
        };
        assert_portable_close_and_others_equal((&want, &scale, 1e-6), &format!("{p:?}"), run);
    }
}

/// The stem with its pool fused (the stem's rows pooled from a ring of
/// rows) gives the bits of the two steps apart, on every instruction set
/// and thread count.
#[test]
fn the_stem_pooled_in_one_pass_gives_the_two_steps_bits() {
    let mut rng = Rng::seeded(16);
    for (side, window) in [
        (64, (3, 2, 1)),
        (37, (3, 2, 1)),
        (30, (2, 2, 0)),
        (19, (3, 1, 1)),
    ] {
        let p = ConvParams::same((3, 32), 7, 2, (side, side + 3));
        let batch = 2;
        let (oh, ow) = p.out_hw();
        let x = rng.array((batch, 3, p.in_h, p.in_w));
        let w = rng.array((32, 3, 7, 7));
        let bias: Array1<f32> = rng.array(32);
        let (k, s, pad) = window;
        let (ph, pw) = ((oh + 2 * pad - k) / s + 1, (ow + 2 * pad - k) / s + 1);
        let x = x.as_slice().unwrap();
        for isa in Isa::supported() {
            let stem = BlockedStem::new(isa, p, w.view(), Some(bias.view()));
            let mut mid = vec![f32::NAN; batch * 32 * oh * ow];
            stem.forward(
                x,
                batch,
                &mut mid,
                true,
                &mut vec![0.0; stem.workspace_len()],
                2,
            );
            let mut want = vec![f32::NAN; batch * 32 * ph * pw];
            max_pool2d_blocked(&mid, (batch, 32, oh, ow), &mut want, window, 2);
            for threads in 1..=3 {
                let mut got = vec![f32::NAN; want.len()];
                let mut workspace = vec![f32::NAN; stem.pooled_workspace_len(threads, k)];
                stem.forward_pooled(x, batch, &mut got, window, true, &mut workspace, threads);
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{isa:?} {p:?} pool {window:?}, {threads} threads");
            }
        }
    }
}

/// Max pooling into blocked output, from an NCHW stem's output or a
/// blocked one, gives the NCHW pool's bits, interleaved: NaNs skipped and
/// signed zeros kept in the same order, on every thread count.
#[test]
fn pooling_into_blocks_gives_the_nchw_pools_bits() {
    let mut rng = Rng::seeded(15);
    for ((n, c, h, w), k, stride, pad) in [
        ((2, 32, 112, 112), 3, 2, 1),
        ((1, 16, 9, 13), 3, 2, 1),
        ((3, 48, 7, 5), 2, 2, 0),
        ((1, 16, 5, 40), 3, 1, 1),
    ] {
        let mut x = rng.array((n, c, h, w));
        // Ties of 0.0 and -0.0, and NaNs, which the pool skips.
        for (i, v) in x.iter_mut().enumerate() {
            match i % 37 {
                0 => *v = 0.0,
                1 => *v = -0.0,
                2 => *v = f32::NAN,
                _ => {}
            }
        }
        let (oh, ow) = (
            (h + 2 * pad - k) / stride + 1,
            (w + 2 * pad - k) / stride + 1,
        );
        let mut planar = Array4::zeros((n, c, oh, ow));
        max_pool2d(x.view(), planar.view_mut(), k, stride, pad);
        let mut want = vec![0.0; planar.len()];
        to_blocked(planar.view(), &mut want);
        let mut bx = vec![0.0; x.len()];
        to_blocked(x.view(), &mut bx);
        let window = (k, stride, pad);
        for threads in 1..=3 {
            let (mut from_planar, mut from_blocked) =
                (vec![f32::NAN; want.len()], vec![f32::NAN; want.len()]);
            let mut scratch = vec![f32::NAN; max_pool2d_to_blocked_scratch(ow, threads)];
            max_pool2d_to_blocked(x.view(), &mut from_planar, window, &mut scratch, threads);
            max_pool2d_blocked(&bx, (n, c, h, w), &mut from_blocked, window, threads);
            for (got, from) in [(&from_planar, "NCHW"), (&from_blocked, "blocked")] {
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "from {from}: {:?} k{k} s{stride} p{pad}, {threads} threads",
                    (n, c, h, w)
                );
            }
        }
    }
}
