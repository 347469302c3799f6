//! The kernels touch nothing outside their tensors, on every instruction
//! set: here each tensor and each scratch buffer lies flush against a page
//! the process may not touch, once before its first value and once after
//! its last, so a load or store one float out of bounds (a lane a mask
//! should have dropped, an offset one row too far) kills the test with a
//! segmentation fault. Valgrind checks the portable and AVX2 paths, but it
//! cannot run AVX-512; this test can. Each result must also equal, bit for
//! bit, the same kernel's on ordinary buffers.

#![cfg(unix)]

use ndarray::{Array1, Array2, Array4, ArrayView2, ArrayView4, ArrayViewMut2, ArrayViewMut4};
use resnet_runtime::kernels::blocked::{
    BlockedConv, BlockedIo, BlockedLayer, BlockedOutput, BlockedStem,
};
use resnet_runtime::kernels::pool::{
    avg_pool_linear, avg_pool_linear_blocked, avg_pool_linear_scratch, max_pool2d,
    max_pool2d_blocked, max_pool2d_to_blocked, max_pool2d_to_blocked_scratch,
};
use resnet_runtime::kernels::{
    gemm, workspace_len, Conv2d, ConvParams, ConvStrategy, Epilogue, Isa, PackedWeights, Residual,
    Shortcut,
};

/// Which end of its pages a buffer lies against.
#[derive(Clone, Copy, Debug)]
enum Flush {
    Start,
    End,
}

/// Floats between two inaccessible pages, flush against one of them.
struct Guarded {
    map: *mut libc::c_void,
    map_len: usize,
    data: *mut f32,
    len: usize,
}

impl Guarded {
    fn new(values: &[f32], flush: Flush) -> Self {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let bytes = std::mem::size_of_val(values);
        let body = bytes.max(1).next_multiple_of(page);
        let map_len = body + 2 * page;
        // SAFETY: a fresh anonymous private mapping; no existing memory is involved.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED, "mmap of {map_len} bytes");
        let start = match flush {
            Flush::Start => page,
            Flush::End => page + body - bytes,
        };
        // SAFETY: the first and last pages lie inside the mapping just made,
        // and nothing else uses them; `start .. start + bytes` lies between
        // them, is 4-byte aligned (the page size is a multiple of 4), and is
        // written before it is read.
        unsafe {
            assert_eq!(libc::mprotect(map, page, libc::PROT_NONE), 0);
            let tail = map.cast::<u8>().add(page + body).cast();
            assert_eq!(libc::mprotect(tail, page, libc::PROT_NONE), 0);
            let data = map.cast::<u8>().add(start).cast::<f32>();
            std::ptr::copy_nonoverlapping(values.as_ptr(), data, values.len());
            Guarded {
                map,
                map_len,
                data,
                len: values.len(),
            }
        }
    }

    fn zeros(len: usize, flush: Flush) -> Self {
        Self::new(&vec![0.0; len], flush)
    }

    fn slice(&self) -> &[f32] {
        // SAFETY: `len` initialised floats at `data`, borrowed with `self`.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }

    fn slice_mut(&mut self) -> &mut [f32] {
        // SAFETY: as `slice`, borrowed mutably with `self`.
        unsafe { std::slice::from_raw_parts_mut(self.data, self.len) }
    }

    fn view4(&self, shape: (usize, usize, usize, usize)) -> ArrayView4<'_, f32> {
        ArrayView4::from_shape(shape, self.slice()).unwrap()
    }

    fn view4_mut(&mut self, shape: (usize, usize, usize, usize)) -> ArrayViewMut4<'_, f32> {
        ArrayViewMut4::from_shape(shape, self.slice_mut()).unwrap()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made, unmapped once; no borrow of it outlives `self`.
        unsafe { libc::munmap(self.map, self.map_len) };
    }
}

/// Reproducible values in `[-1, 1)`.
fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5 - 1.0)
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn convolutions_stay_inside_their_tensors() {
    use ConvStrategy::{
        Blocked, Direct, Patches, Pointwise, Winograd, Winograd4x4, WinogradOnTheFly,
    };
    let same = ConvParams::same;
    let grouped = ConvParams {
        groups: 2,
        ..same((6, 10), 3, 2, (9, 13))
    };
    // Output channels a whole number of row panels (16) and not (9, 17);
    // rows ending inside a tile, on a half tile, and past it; strided runs
    // that end on the row's last value. The blocked path on 16 and 48
    // channels (a whole AVX-512 panel and a half one), with output rows of
    // several tiles, of half a tile (paired), and a flattened 1x1 image.
    let mut cases = vec![
        (Patches, grouped),
        (Blocked, same((16, 48), 5, 3, (13, 23))),
        (Blocked, same((32, 48), 3, 2, (57, 57))),
    ];
    for cout in [9, 16, 17] {
        cases.extend([
            (Pointwise, same((5, cout), 1, 1, (7, 9))),
            (Pointwise, same((3, cout), 1, 1, (5, 13))),
            (Patches, same((4, cout), 3, 2, (9, 11))),
            (Patches, same((3, cout), 3, 1, (5, 40))),
            (Winograd, same((16, cout), 3, 1, (10, 13))),
            (Winograd4x4, same((16, cout), 3, 1, (30, 29))),
            // Enough tiles at batch 2 for Winograd rather than the patch GEMM.
            (WinogradOnTheFly, same((16, cout), 3, 1, (16, 17))),
            (Direct, same((2, cout), 3, 1, (4, 33))),
        ]);
        if cout % 16 == 0 {
            cases.extend([
                (Blocked, same((16, cout), 3, 2, (29, 31))),
                (Blocked, same((32, cout), 3, 1, (7, 7))),
                (Blocked, same((16, cout), 1, 1, (5, 13))),
            ]);
        }
        for w in 64..=72 {
            cases.push((Patches, same((6, cout), 1, 2, (3, w))));
            cases.push((Direct, same((3, cout), 7, 2, (9, w))));
        }
    }
    for isa in Isa::supported() {
        for &(strategy, p) in &cases {
            let (batch, (oh, ow)) = (2, p.out_hw());
            let (in_shape, out_shape) = (
                (batch, p.in_channels, p.in_h, p.in_w),
                (batch, p.out_channels, oh, ow),
            );
            let res_shape = (batch, p.out_channels - 1, oh, ow);
            let weight = Array4::from_shape_vec(
                (p.out_channels, p.in_channels / p.groups, p.kernel, p.kernel),
                values(
                    p.out_channels * p.in_channels / p.groups * p.kernel * p.kernel,
                    1,
                ),
            )
            .unwrap();
            let bias = Array1::from_vec(values(p.out_channels, 2));
            let conv = Conv2d::with_strategy(isa, strategy, p, weight.view(), Some(bias.view()));
            assert_eq!(conv.strategy_for(batch), strategy);
            let x = values(in_shape.0 * in_shape.1 * in_shape.2 * in_shape.3, 3);
            let res = values(res_shape.0 * res_shape.1 * res_shape.2 * res_shape.3, 4);
            let out_len = out_shape.0 * out_shape.1 * out_shape.2 * out_shape.3;
            for threads in [1, 2] {
                let what = format!("{isa:?} {strategy:?} {p:?}, {threads} threads");
                let mut want = vec![f32::NAN; out_len];
                let mut workspace = vec![0.0; conv.workspace_len(threads)];
                conv.forward(
                    ArrayView4::from_shape(in_shape, &x).unwrap(),
                    ArrayViewMut4::from_shape(out_shape, &mut want).unwrap(),
                    Some(ArrayView4::from_shape(res_shape, &res).unwrap()),
                    true,
                    &mut workspace,
                    threads,
                );
                for flush in [Flush::Start, Flush::End] {
                    let gx = Guarded::new(&x, flush);
                    let gres = Guarded::new(&res, flush);
                    let mut gout = Guarded::new(&vec![f32::NAN; out_len], flush);
                    let mut gws = Guarded::zeros(conv.workspace_len(threads), flush);
                    conv.forward(
                        gx.view4(in_shape),
                        gout.view4_mut(out_shape),
                        Some(gres.view4(res_shape)),
                        true,
                        gws.slice_mut(),
                        threads,
                    );
                    assert_eq!(bits(gout.slice()), bits(&want), "{what}, flush {flush:?}");
                }
                // In place, the output holding a residual of all its channels.
                let full = values(out_len, 5);
                let mut want = full.clone();
                conv.forward_in_place(
                    ArrayView4::from_shape(in_shape, &x).unwrap(),
                    ArrayViewMut4::from_shape(out_shape, &mut want).unwrap(),
                    true,
                    &mut workspace,
                    threads,
                );
                for flush in [Flush::Start, Flush::End] {
                    let gx = Guarded::new(&x, flush);
                    let mut gout = Guarded::new(&full, flush);
                    let mut gws = Guarded::zeros(conv.workspace_len(threads), flush);
                    conv.forward_in_place(
                        gx.view4(in_shape),
                        gout.view4_mut(out_shape),
                        true,
                        gws.slice_mut(),
                        threads,
                    );
                    let what = format!("{what}, in place, flush {flush:?}");
                    assert_eq!(bits(gout.slice()), bits(&want), "{what}");
                }
            }
        }
    }
}

#[test]
fn blocked_convolutions_stay_inside_their_blocked_tensors() {
    let same = ConvParams::same;
    // Flattened 1x1 images ending inside a tile; strided ones with rows of
    // several tiles and of half a tile (paired); a 3x3 kernel without
    // padding; 16 and 48 output channels (a half AVX-512 panel last).
    let cases = [
        same((16, 48), 1, 1, (5, 13)),
        same((32, 16), 1, 2, (9, 31)),
        same((16, 48), 1, 2, (13, 13)),
        ConvParams {
            padding: 0,
            ..same((16, 32), 3, 1, (9, 20))
        },
    ];
    for isa in Isa::supported() {
        for p in cases {
            let (batch, (oh, ow)) = (2, p.out_hw());
            let k = p.kernel;
            let weight = Array4::from_shape_vec(
                (p.out_channels, p.in_channels, k, k),
                values(p.out_channels * p.in_channels * k * k, 1),
            )
            .unwrap();
            let bias = Array1::from_vec(values(p.out_channels, 2));
            let conv = BlockedConv::new(isa, p, weight.view(), Some(bias.view()));
            let x = values(batch * p.in_channels * p.in_h * p.in_w, 3);
            let out_len = batch * p.out_channels * oh * ow;
            let res = values(out_len, 4);
            for threads in [1, 2] {
                let mut want = vec![f32::NAN; out_len];
                conv.forward(&x, batch, &mut want, Some(&res), true, threads);
                for flush in [Flush::Start, Flush::End] {
                    let (gx, gres) = (Guarded::new(&x, flush), Guarded::new(&res, flush));
                    let mut gout = Guarded::new(&vec![f32::NAN; out_len], flush);
                    conv.forward(
                        gx.slice(),
                        batch,
                        gout.slice_mut(),
                        Some(gres.slice()),
                        true,
                        threads,
                    );
                    let what = format!("{isa:?} {p:?}, {threads} threads, flush {flush:?}");
                    assert_eq!(bits(gout.slice()), bits(&want), "{what}");
                }
            }
        }
    }
}

#[test]
fn gemm_stays_inside_its_matrices() {
    for isa in Isa::supported() {
        let shapes = [8, 16, 17].into_iter().flat_map(|m| {
            [3, 530]
                .into_iter()
                .flat_map(move |k| [1, 13, 17, 31, 33, 45, 49, 58, 63, 70].map(|n| (m, k, n)))
        });
        for (m, k, n) in shapes {
            let a = Array2::from_shape_vec((m, k), values(m * k, 5)).unwrap();
            let a = PackedWeights::new(isa, a.view());
            let b = values(k * n, 6);
            let (bias, res) = (values(m, 7), values((m - 1) * n, 8));
            for threads in [1, 2] {
                let run = |b: &[f32], res: &[f32], c: &mut [f32], ws: &mut [f32]| {
                    let epilogue = Epilogue {
                        bias: Some(&bias),
                        residual: Some(Residual {
                            data: res,
                            ld: n,
                            rows: m - 1,
                        }),
                        relu: true,
                        accumulate: false,
                    };
                    let b = ArrayView2::from_shape((k, n), b).unwrap();
                    let c = ArrayViewMut2::from_shape((m, n), c).unwrap();
                    gemm(&a, b, c, &epilogue, ws, threads);
                };
                let mut want = vec![f32::NAN; m * n];
                run(&b, &res, &mut want, &mut vec![0.0; workspace_len(threads)]);
                for flush in [Flush::Start, Flush::End] {
                    let (gb, gres) = (Guarded::new(&b, flush), Guarded::new(&res, flush));
                    let mut gc = Guarded::new(&vec![f32::NAN; m * n], flush);
                    let mut gws = Guarded::zeros(workspace_len(threads), flush);
                    run(gb.slice(), gres.slice(), gc.slice_mut(), gws.slice_mut());
                    let what = format!("{isa:?} {m}x{k}x{n}, {threads} threads, flush {flush:?}");
                    assert_eq!(bits(gc.slice()), bits(&want), "{what}");
                }
            }
        }
    }
}

#[test]
fn pooling_and_the_head_stay_inside_their_tensors() {
    for (n, c, h, w) in [
        (2, 3, 17, 35),
        (1, 2, 112, 112),
        (2, 5, 7, 16),
        (1, 1, 3, 33),
    ] {
        let x = values(n * c * h * w, 9);
        let (oh, ow) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
        let mut want = vec![f32::NAN; n * c * oh * ow];
        max_pool2d(
            ArrayView4::from_shape((n, c, h, w), &x).unwrap(),
            ArrayViewMut4::from_shape((n, c, oh, ow), &mut want).unwrap(),
            3,
            2,
            1,
        );
        for flush in [Flush::Start, Flush::End] {
            let gx = Guarded::new(&x, flush);
            let mut gout = Guarded::new(&vec![f32::NAN; want.len()], flush);
            max_pool2d(
                gx.view4((n, c, h, w)),
                gout.view4_mut((n, c, oh, ow)),
                3,
                2,
                1,
            );
            assert_eq!(
                bits(gout.slice()),
                bits(&want),
                "max pool {:?}, flush {flush:?}",
                (n, c, h, w)
            );

            let classes = 11;
            let (weight, bias) = (
                values(classes * c, 10),
                Array1::from_vec(values(classes, 11)),
            );
            let head =
                |x: ArrayView4<f32>, weight: &[f32], out: &mut [f32], scratch: &mut [f32]| {
                    avg_pool_linear(
                        x,
                        ArrayView2::from_shape((classes, c), weight).unwrap(),
                        bias.view(),
                        ArrayViewMut2::from_shape((n, classes), out).unwrap(),
                        scratch,
                    )
                };
            let scratch_len = avg_pool_linear_scratch(n, c, classes);
            let mut want = vec![f32::NAN; n * classes];
            let x4 = ArrayView4::from_shape((n, c, h, w), &x).unwrap();
            head(x4, &weight, &mut want, &mut vec![0.0; scratch_len]);
            let gweight = Guarded::new(&weight, flush);
            let mut gout = Guarded::new(&vec![f32::NAN; n * classes], flush);
            let mut gscratch = Guarded::zeros(scratch_len, flush);
            head(
                gx.view4((n, c, h, w)),
                gweight.slice(),
                gout.slice_mut(),
                gscratch.slice_mut(),
            );
            assert_eq!(
                bits(gout.slice()),
                bits(&want),
                "head {:?}, flush {flush:?}",
                (n, c, h, w)
            );
        }
    }
}

/// The layers of a network's blocked stages: Winograd F(4x4) and F(2x2)
/// with partial last tiles, the direct kernels over a padded copy, and a
/// layer writing NCHW; input, output, residual and workspace each against
/// a guard page.
#[test]
fn blocked_layers_stay_inside_their_tensors() {
    let same = ConvParams::same;
    let io = |padded_input, output| BlockedIo {
        padded_input,
        output,
    };
    let cases = [
        (
            same((16, 32), 3, 1, (29, 30)),
            io(false, BlockedOutput::Blocked),
        ),
        (
            same((32, 16), 3, 1, (9, 13)),
            io(false, BlockedOutput::Blocked),
        ),
        (
            same((16, 48), 3, 2, (13, 15)),
            io(false, BlockedOutput::Blocked),
        ),
        (
            same((32, 16), 1, 2, (14, 14)),
            io(false, BlockedOutput::Planar),
        ),
        (
            same((16, 16), 3, 2, (28, 28)),
            io(false, BlockedOutput::Planar),
        ),
        (
            same((16, 32), 3, 2, (13, 14)),
            io(true, BlockedOutput::Blocked),
        ),
        (
            same((32, 16), 1, 1, (11, 9)),
            io(false, BlockedOutput::Padded),
        ),
    ];
    for isa in Isa::supported() {
        for (p, io) in cases {
            let (batch, (oh, ow), k) = (2, p.out_hw(), p.kernel);
            let weight = Array4::from_shape_vec(
                (p.out_channels, p.in_channels, k, k),
                values(p.out_channels * p.in_channels * k * k, 12),
            )
            .unwrap();
            let bias = Array1::from_vec(values(p.out_channels, 13));
            let layer = BlockedLayer::with_isa(isa, p, weight.view(), Some(bias.view()), io);
            let pad = if io.padded_input { 2 * p.padding } else { 0 };
            let x = values(batch * p.in_channels * (p.in_h + pad) * (p.in_w + pad), 14);
            let border = if io.output == BlockedOutput::Padded {
                2
            } else {
                0
            };
            let out_len = batch * p.out_channels * (oh + border) * (ow + border);
            let res = values(out_len, 15);
            // A padded output adds no residual.
            fn shortcut(res: &[f32], io: BlockedIo, channels: usize) -> Shortcut<'_> {
                match io.output {
                    BlockedOutput::Padded => Shortcut::None,
                    _ => Shortcut::Add(res, channels),
                }
            }
            for threads in [1, 2] {
                let len = layer.workspace_len(threads);
                let mut want = vec![f32::NAN; out_len];
                let mut workspace = vec![0.0; len];
                layer.forward(
                    &x,
                    batch,
                    &mut want,
                    shortcut(&res, io, p.out_channels),
                    true,
                    &mut workspace,
                    threads,
                );
                for flush in [Flush::Start, Flush::End] {
                    let (gx, gres) = (Guarded::new(&x, flush), Guarded::new(&res, flush));
                    let mut gout = Guarded::new(&vec![f32::NAN; out_len], flush);
                    let mut gwork = Guarded::zeros(len, flush);
                    layer.forward(
                        gx.slice(),
                        batch,
                        gout.slice_mut(),
                        shortcut(gres.slice(), io, p.out_channels),
                        true,
                        gwork.slice_mut(),
                        threads,
                    );
                    let what = format!("{isa:?} {p:?} {io:?}, {threads} threads, flush {flush:?}");
                    assert_eq!(bits(gout.slice()), bits(&want), "{what}");
                }
            }
        }
    }
}

/// The stem into a blocked network and the pool after it.
#[test]
fn blocked_stem_and_pool_stay_inside_their_tensors() {
    for isa in Isa::supported() {
        for (k, stride, cout, side) in [(7, 2, 64, 37), (3, 1, 48, 11)] {
            let p = ConvParams::same((3, cout), k, stride, (side, side + 4));
            let (batch, (oh, ow)) = (2, p.out_hw());
            let weight =
                Array4::from_shape_vec((cout, 3, k, k), values(cout * 3 * k * k, 19)).unwrap();
            let bias = Array1::from_vec(values(cout, 20));
            let stem = BlockedStem::new(isa, p, weight.view(), Some(bias.view()));
            let x = values(batch * 3 * p.in_h * p.in_w, 21);
            let len = stem.workspace_len();
            let mut want = vec![f32::NAN; batch * cout * oh * ow];
            stem.forward(&x, batch, &mut want, true, &mut vec![0.0; len], 2);
            let (ph, pw) = ((oh - 1) / 2 + 1, (ow - 1) / 2 + 1);
            let mut want_pool = vec![f32::NAN; batch * cout * ph * pw];
            max_pool2d_blocked(&want, (batch, cout, oh, ow), &mut want_pool, (3, 2, 1), 2);
            for flush in [Flush::Start, Flush::End] {
                let gx = Guarded::new(&x, flush);
                let mut gout = Guarded::new(&vec![f32::NAN; want.len()], flush);
                let mut gwork = Guarded::zeros(len, flush);
                stem.forward(
                    gx.slice(),
                    batch,
                    gout.slice_mut(),
                    true,
                    gwork.slice_mut(),
                    2,
                );
                let what = format!("{isa:?} {p:?}, flush {flush:?}");
                assert_eq!(bits(gout.slice()), bits(&want), "stem {what}");
                let mut gpool = Guarded::new(&vec![f32::NAN; want_pool.len()], flush);
                let dim = (batch, cout, oh, ow);
                max_pool2d_blocked(gout.slice(), dim, gpool.slice_mut(), (3, 2, 1), 2);
                assert_eq!(bits(gpool.slice()), bits(&want_pool), "pool {what}");
                let mut gpool = Guarded::new(&vec![f32::NAN; want_pool.len()], flush);
                let mut gwork = Guarded::zeros(stem.pooled_workspace_len(2, 3), flush);
                let (pooled, work) = (gpool.slice_mut(), gwork.slice_mut());
                stem.forward_pooled(gx.slice(), batch, pooled, (3, 2, 1), true, work, 2);
                assert_eq!(bits(gpool.slice()), bits(&want_pool), "stem pooled {what}");
            }
        }
    }
}

/// The pool into a blocked network and the head on one.
#[test]
fn blocked_pooling_and_head_stay_inside_their_tensors() {
    for (n, c, h, w) in [(2, 16, 17, 35), (1, 32, 112, 112)] {
        let x = values(n * c * h * w, 16);
        let (oh, ow) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
        let scratch_len = max_pool2d_to_blocked_scratch(ow, 2);
        let pool = |x: ArrayView4<f32>, out: &mut [f32], scratch: &mut [f32]| {
            max_pool2d_to_blocked(x, out, (3, 2, 1), scratch, 2)
        };
        let mut want = vec![f32::NAN; n * c * oh * ow];
        let x4 = ArrayView4::from_shape((n, c, h, w), &x).unwrap();
        pool(x4, &mut want, &mut vec![0.0; scratch_len]);
        let classes = 11;
        let (weight, bias) = (
            values(classes * c, 17),
            Array1::from_vec(values(classes, 18)),
        );
        let head = |x: &[f32], out: &mut [f32], scratch: &mut [f32]| {
            avg_pool_linear_blocked(
                x,
                (n, c, oh, ow),
                ArrayView2::from_shape((classes, c), &weight).unwrap(),
                bias.view(),
                ArrayViewMut2::from_shape((n, classes), out).unwrap(),
                scratch,
            )
        };
        let head_scratch = avg_pool_linear_scratch(n, c, classes);
        let mut want_logits = vec![f32::NAN; n * classes];
        head(&want, &mut want_logits, &mut vec![0.0; head_scratch]);
        for flush in [Flush::Start, Flush::End] {
            let gx = Guarded::new(&x, flush);
            let mut gout = Guarded::new(&vec![f32::NAN; want.len()], flush);
            let mut gscratch = Guarded::zeros(scratch_len, flush);
            pool(
                gx.view4((n, c, h, w)),
                gout.slice_mut(),
                gscratch.slice_mut(),
            );
            let what = format!("{:?}, flush {flush:?}", (n, c, h, w));
            assert_eq!(bits(gout.slice()), bits(&want), "pool {what}");
            let mut glogits = Guarded::new(&vec![f32::NAN; n * classes], flush);
            let mut gscratch = Guarded::zeros(head_scratch, flush);
            head(gout.slice(), glogits.slice_mut(), gscratch.slice_mut());
            assert_eq!(bits(glogits.slice()), bits(&want_logits), "head {what}");
        }
    }
}

/// Whether the process may read the float at `at`: the kernel copies it
/// into a pipe, and answers EFAULT where the process may not read, without
/// the process touching it.
fn readable(at: *const f32) -> bool {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let (mut reader, writer) = std::io::pipe().unwrap();
    // SAFETY: `write` only reads the 4 bytes at `at`, and the kernel checks
    // that they are mapped rather than faulting.
    let written = unsafe { libc::write(writer.as_raw_fd(), at.cast(), 4) };
    if written == 4 {
        reader.read_exact(&mut [0; 4]).unwrap();
    }
    written == 4
}

/// The guard pages are there: the floats at a buffer's ends are readable,
/// the one before its start (flush at the start) or after its end (flush
/// at the end) is not.
#[test]
fn guard_pages_lie_against_the_buffers() {
    for len in [1, 3, 1024, 1500] {
        for flush in [Flush::Start, Flush::End] {
            let g = Guarded::new(&values(len, 12), flush);
            let (first, last) = (g.slice().as_ptr(), g.slice()[len - 1..].as_ptr());
            assert!(readable(first) && readable(last), "{len} floats, {flush:?}");
            let outside = match flush {
                Flush::Start => first.wrapping_sub(1),
                Flush::End => last.wrapping_add(1),
            };
            assert!(
                !readable(outside),
                "{len} floats, {flush:?}: the guard page"
            );
            assert_eq!(g.slice(), &values(len, 12)[..]);
        }
    }
}
