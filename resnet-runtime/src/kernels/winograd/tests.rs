//! The filter transform against its f64 form, and the AVX2 transforms
//! against the portable ones, bit for bit. (Whole passes are checked
//! against direct convolution in the crate's kernel tests.)

use super::*;

/// Values that make every rounding count: no two alike, mixed signs
/// and magnitudes.
fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| {
            let h = (i ^ seed).wrapping_mul(2_654_435_761).rotate_left(13) as f32;
            (h / u32::MAX as f32 - 0.5) * (1 + i % 7) as f32
        })
        .collect()
}

/// The filter transform of [`OnTheFly`], for each instruction set's
/// panels: within a rounding of the transform [`Winograd::new`] makes
/// in f64, and the same to the bit on AVX2 as portable.
#[test]
fn filter_panels_match_the_packed_transform() {
    let (cout, cin) = (13, 5);
    let w = values(cout * cin * 9, 11);
    let weight = ArrayView4::from_shape((cout, cin, 3, 3), &w).unwrap();
    let p = ConvParams {
        in_channels: cin,
        out_channels: cout,
        kernel: 3,
        stride: 1,
        padding: 1,
        groups: 1,
        in_h: 6,
        in_w: 6,
    };
    for isa in Isa::supported() {
        let mr = isa.tile().0;
        let plain = PackedWeights::new(isa, weight.to_shape((cout, cin * 9)).unwrap().view());
        let packed = Winograd::new(isa, Tile::F2, &p, weight);
        let on_the_fly = OnTheFly::new(&plain);
        let mut u = vec![f32::NAN; on_the_fly.filters_len()];
        let mut scratch = vec![0.0; on_the_fly.workspace_len(2)];
        on_the_fly.transform_filters(&mut u, &mut scratch, 2);
        let pass = on_the_fly.pass(&u);
        for xi in 0..16 {
            for panel in 0..cout.div_ceil(mr) {
                let want = packed.u[xi].panel(panel, 0);
                // SAFETY: a row panel holds `cin * mr` floats.
                let got = unsafe { std::slice::from_raw_parts(pass.panels(xi, panel), cin * mr) };
                for (g, w) in got.iter().zip(want) {
                    assert!(
                        (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                        "{isa:?} ξ {xi}: {g} for {w}"
                    );
                }
            }
        }
        let stride = filter_panel_stride(cin, mr);
        let run = |avx2| {
            let mut u = vec![f32::NAN; 16 * stride];
            transform_filter_panel(mr, plain.panel(1, 0), &mut u, avx2);
            u.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        };
        assert_eq!(run(avx2_for(isa)), run(false), "{isa:?}");
    }
}

/// Whole transforms, AVX2 against portable, to the bit: F(2x2) and
/// F(4x4), input and output, on runs that start and end in the padding
/// or inside the plane, with and without a residual (from its own
/// tensor, or in place) and ReLU.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_transforms_match_the_portable_ones() {
    if !std::arch::is_x86_feature_detected!("avx2") {
        return;
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (tile, side, pad) in [
        (Tile::F2, 14, 1),
        (Tile::F2, 9, 0),
        (Tile::F4, 28, 1),
        (Tile::F4, 23, 2),
    ] {
        let p = ConvParams {
            in_channels: 3,
            out_channels: 2,
            kernel: 3,
            stride: 1,
            padding: pad,
            groups: 1,
            in_h: side,
            in_w: side + 5,
        };
        let (oh, ow) = p.out_hw();
        let n = tile.outputs();
        let (th, tw) = (oh.div_ceil(n), ow.div_ceil(n));
        let planes = values(3 * side * (side + 5), side as u32);
        let positions = (n + 2) * (n + 2);
        for (ty, t0, nt) in [
            (0, 0, tw),
            (th - 1, 1, tw - 1),
            (th / 2, tw / 2, 1),
            (1, 0, tw.min(9)),
        ] {
            let stride = 3 * BLOCK;
            let run = |avx2| {
                let mut block = vec![f32::NAN; positions * stride];
                let to = Dest {
                    channel_step: BLOCK,
                    stride,
                    at: 3,
                    avx2,
                };
                match tile {
                    Tile::F2 => transform_input_tiles(&planes, &p, (ty, t0, nt), &mut block, to),
                    Tile::F4 => transform_input_tiles_f4(&planes, &p, (ty, t0, nt), &mut block, to),
                }
                block
            };
            assert_eq!(
                bits(&run(true)),
                bits(&run(false)),
                "{tile:?} input, tiles {ty} {t0} {nt}"
            );

            let block = values(positions * BLOCK, 7 + nt as u32);
            let residual = values(oh * ow, 3);
            let tiles = Run {
                row: ty,
                tx: t0,
                len: nt,
                at: 1.min(BLOCK - nt),
            };
            let run = |avx2, epilogue: &OutputEpilogue, plane: &[f32]| {
                let mut plane = plane.to_vec();
                let mut work = OutputWork::new(avx2);
                let transform = match tile {
                    Tile::F2 => transform_output_run::<2>,
                    Tile::F4 => transform_output_run::<4>,
                };
                transform(
                    &mut work,
                    &block,
                    BLOCK,
                    &tiles,
                    ty,
                    (oh, ow),
                    &mut plane,
                    epilogue,
                );
                plane
            };
            let unwritten = vec![f32::NAN; oh * ow];
            for (shortcut, relu) in [
                (PlaneResidual::None, false),
                (PlaneResidual::None, true),
                (PlaneResidual::Add(&residual), true),
                (PlaneResidual::InPlace, true),
            ] {
                let epilogue = OutputEpilogue {
                    bias: 0.5,
                    residual: shortcut,
                    relu,
                };
                let start = match shortcut {
                    PlaneResidual::InPlace => &residual,
                    _ => &unwritten,
                };
                let portable = run(false, &epilogue, start);
                assert_eq!(
                    bits(&run(true, &epilogue, start)),
                    bits(&portable),
                    "{tile:?} output, tiles {ty} {t0} {nt}"
                );
                if let PlaneResidual::InPlace = shortcut {
                    // Where the plane holds the residual, the outputs
                    // are those that add it from a tensor of its own.
                    let add = OutputEpilogue {
                        residual: PlaneResidual::Add(&residual),
                        ..epilogue
                    };
                    assert_eq!(
                        bits(&portable),
                        bits(&run(false, &add, &residual)),
                        "{tile:?} output in place, tiles {ty} {t0} {nt}"
                    );
                }
            }
        }
    }
}

/// The AVX2 steps across the columns equal the portable ones to the
/// bit, for every run length, and write nothing past the run.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_f4_steps_match_the_portable_ones() {
    if !std::arch::is_x86_feature_detected!("avx2") {
        return;
    }
    for nt in 0..=BLOCK {
        let r = values(4 * BLOCK + 32, nt as u32);
        let stride = BLOCK + 5;
        let (mut want, mut got) = (vec![f32::NAN; 6 * stride], vec![f32::NAN; 6 * stride]);
        bt_across::<0>(&r, &mut want[..nt]);
        bt_across::<1>(&r, &mut want[stride..][..nt]);
        bt_across::<2>(&r, &mut want[2 * stride..][..nt]);
        bt_across::<3>(&r, &mut want[3 * stride..][..nt]);
        bt_across::<4>(&r, &mut want[4 * stride..][..nt]);
        bt_across::<5>(&r, &mut want[5 * stride..][..nt]);
        // SAFETY: AVX2 is present; `r` and `got` are long enough.
        unsafe { x86::bt_across_f4(&r, nt, &mut got, stride) };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "input step, {nt} tiles");

        let s: Vec<[f32; BLOCK + 8]> = (0..6)
            .map(|x| std::array::from_fn(|t| values(BLOCK + 8, 100 + x)[t]))
            .collect();
        let columns = std::array::from_fn(|x| &s[x]);
        // A row of whole tiles, and one clipped short of its last tile.
        for len in [4 * nt, (4 * nt).saturating_sub(3)] {
            let (mut want, mut got) = (vec![f32::NAN; 4 * BLOCK], vec![f32::NAN; 4 * BLOCK]);
            at_across_f4(columns, 0.25, &mut want[..len]);
            // SAFETY: AVX2 is present; the row is at most `4 * BLOCK` floats.
            unsafe { x86::at_across_f4(columns, 0.25, &mut got[..len]) };
            assert_eq!(bits(&got), bits(&want), "output step, {len} columns");
        }
    }
}
