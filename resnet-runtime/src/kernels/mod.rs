//! CPU kernels on `f32` tensors, NCHW or channel-blocked (`blocked`):
//! packed SIMD GEMM with fused epilogues, convolutions built on it or on
//! the blocked tile kernels, pooling, the classifier head and the
//! element-wise ops around them.
//!
//! Scratch memory comes from the caller (`workspace_len` says how much), so
//! no kernel allocates on the hot path, and results are bit-identical for
//! any number of threads.

pub mod blocked;
pub mod conv;
mod direct;
pub mod elementwise;
mod gather;
pub mod gemm;
mod micro;
pub(crate) mod pages;
mod parallel;
pub mod pool;
mod winograd;

pub use conv::{Conv2d, ConvParams, ConvStrategy, Shortcut};
pub use gemm::{gemm, workspace_len, DenseB, Epilogue, Isa, PackB, PackedWeights, Residual};
