//! Output shapes, one rule per op (PyTorch's: floor division, so odd sizes
//! work as they do in torchvision).

use crate::ir::{Op, Shape};

/// Why a shape rule rejected its inputs.
#[derive(Debug, PartialEq, Eq)]
pub enum ShapeError {
    /// A strided layer would get a 1-pixel-wide input: its downsampling is void.
    NothingToDownsample { stride: usize, input: Shape },
    /// Anything else, in words.
    Mismatch(String),
}

/// The output shape of `op` applied to `inputs`.
pub fn out_shape(op: &Op, inputs: &[Shape]) -> Result<Shape, ShapeError> {
    let &[x, ..] = inputs else {
        return Err(ShapeError::Mismatch(format!(
            "{} has no input",
            op.describe()
        )));
    };
    match *op {
        Op::Input => Ok(x),
        Op::Conv(conv) => {
            if x.c % conv.groups != 0 || conv.out_channels % conv.groups != 0 {
                return Err(ShapeError::Mismatch(format!(
                    "a convolution in {} groups needs channel counts divisible by {0}, found {} in and {} out",
                    conv.groups, x.c, conv.out_channels
                )));
            }
            let (h, w) = window(x, conv.kernel, conv.stride, conv.padding)?;
            Ok(Shape {
                c: conv.out_channels,
                h,
                w,
            })
        }
        Op::MaxPool {
            kernel,
            stride,
            padding,
        } => {
            let (h, w) = window(x, kernel, stride, padding)?;
            Ok(Shape { c: x.c, h, w })
        }
        Op::BatchNorm | Op::Relu => Ok(x),
        Op::Add => match inputs {
            [a, b] if a == b => Ok(*a),
            _ => Err(ShapeError::Mismatch(format!(
                "the residual add needs two inputs of one shape, found {}",
                inputs
                    .iter()
                    .map(Shape::to_string)
                    .collect::<Vec<_>>()
                    .join(" and ")
            ))),
        },
        Op::ZeroPad { stride, channels } => {
            if channels < x.c {
                return Err(ShapeError::Mismatch(format!(
                    "a zero-pad shortcut cannot narrow {} channels to {channels}",
                    x.c
                )));
            }
            let (h, w) = window(x, 1, stride, 0)?;
            Ok(Shape { c: channels, h, w })
        }
        Op::GlobalAvgPool => Ok(Shape { c: x.c, h: 1, w: 1 }),
        Op::Linear { out_features } => {
            if (x.h, x.w) != (1, 1) {
                return Err(ShapeError::Mismatch(format!(
                    "a linear layer needs a [C, 1, 1] input, found {x}"
                )));
            }
            Ok(Shape {
                c: out_features,
                h: 1,
                w: 1,
            })
        }
    }
}

/// Height and width after a `kernel`x`kernel` window with `stride` and `padding`.
fn window(
    x: Shape,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<(usize, usize), ShapeError> {
    if stride > 1 && (x.h == 1 || x.w == 1) {
        return Err(ShapeError::NothingToDownsample { stride, input: x });
    }
    let side = |n: usize| {
        (n + 2 * padding)
            .checked_sub(kernel)
            .map(|room| room / stride + 1)
            .ok_or_else(|| {
                ShapeError::Mismatch(format!(
                    "a {kernel}x{kernel} window with padding {padding} does not fit a {x} input"
                ))
            })
    };
    Ok((side(x.h)?, side(x.w)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Conv;

    fn conv(
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        groups: usize,
    ) -> Op {
        Op::Conv(Conv {
            out_channels,
            kernel,
            stride,
            padding,
            groups,
        })
    }

    fn s(c: usize, h: usize, w: usize) -> Shape {
        Shape { c, h, w }
    }

    #[test]
    fn convolutions_and_pools_follow_pytorch_floor_rounding() {
        // torchvision's resnet stem on 224x224: 112 after conv1, 56 after the pool.
        assert_eq!(
            out_shape(&conv(64, 7, 2, 3, 1), &[s(3, 224, 224)]),
            Ok(s(64, 112, 112))
        );
        let pool = Op::MaxPool {
            kernel: 3,
            stride: 2,
            padding: 1,
        };
        assert_eq!(out_shape(&pool, &[s(64, 112, 112)]), Ok(s(64, 56, 56)));
        // Odd sizes: (7 + 2 - 3) / 2 + 1 = 4, and (225 + 6 - 7) / 2 + 1 = 113.
        assert_eq!(
            out_shape(&conv(8, 3, 2, 1, 1), &[s(4, 7, 7)]),
            Ok(s(8, 4, 4))
        );
        assert_eq!(
            out_shape(&conv(8, 7, 2, 3, 1), &[s(3, 225, 160)]),
            Ok(s(8, 113, 80))
        );
        assert_eq!(
            out_shape(&conv(8, 1, 2, 0, 1), &[s(4, 7, 6)]),
            Ok(s(8, 4, 3))
        );
    }

    #[test]
    fn zero_pad_matches_strided_slicing() {
        let pad = Op::ZeroPad {
            stride: 2,
            channels: 32,
        };
        // x[:, :, ::2, ::2] of 7 rows keeps rows 0, 2, 4, 6.
        assert_eq!(out_shape(&pad, &[s(16, 7, 8)]), Ok(s(32, 4, 4)));
        assert!(matches!(
            out_shape(&pad, &[s(64, 8, 8)]),
            Err(ShapeError::Mismatch(_))
        ));
    }

    #[test]
    fn strided_layers_reject_one_pixel_inputs() {
        assert_eq!(
            out_shape(&conv(8, 3, 2, 1, 1), &[s(4, 1, 5)]),
            Err(ShapeError::NothingToDownsample {
                stride: 2,
                input: s(4, 1, 5)
            })
        );
        assert_eq!(
            out_shape(&conv(8, 3, 1, 1, 1), &[s(4, 1, 1)]),
            Ok(s(8, 1, 1))
        );
    }

    #[test]
    fn mismatches_are_reported() {
        assert!(out_shape(&conv(8, 3, 1, 1, 3), &[s(4, 5, 5)]).is_err());
        assert!(out_shape(&conv(8, 7, 1, 0, 1), &[s(4, 5, 5)]).is_err());
        assert!(out_shape(&Op::Add, &[s(4, 5, 5), s(4, 5, 4)]).is_err());
        assert!(out_shape(&Op::Linear { out_features: 10 }, &[s(4, 2, 2)]).is_err());
        assert_eq!(
            out_shape(&Op::Linear { out_features: 10 }, &[s(4, 1, 1)]),
            Ok(s(10, 1, 1))
        );
    }
}
