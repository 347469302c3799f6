//! The runtime for networks compiled by [`resnet!`]: users depend on this
//! crate alone.
//!
//! ```
//! use resnet_runtime::resnet;
//!
//! resnet! {
//!     /// ImageNet ResNet-50, torchvision layout.
//!     pub ResNet50<stages: [3, 4, 6, 3], bottleneck: true>
//! }
//!
//! assert_eq!(ResNet50::PARAMS, 25_557_032);
//! assert_eq!(ResNet50::INPUT, [3, 224, 224]);
//! assert_eq!(ResNet50::OUTPUT, [1000]);
//! assert_eq!(ResNet50::FEATURES, [2048, 7, 7]);
//! let convolution_blocks = ResNet50::BLOCKS.iter().filter(|b| b.is_convolution_block()).count();
//! assert_eq!(convolution_blocks, 4);
//! println!("{}", ResNet50); // the layer table
//! ```

pub mod exec;
pub mod info;
pub mod kernels;
pub mod layers;
pub mod tensor;
pub mod weights;

pub use info::{BlockInfo, BlockKind, LayerInfo, Shortcut};
pub use tensor::{Batch, Logits, ShapeError};
pub use weights::{Weights, WeightsError};

/// Compiles a residual network from its spec; see the crate's README for
/// the keys, and [`resnet_macros`](https://docs.rs/resnet-macros) for the grammar.
pub use resnet_macros::resnet;

/// Paths the generated code uses; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::exec::{Slot, Src, Workspace};
    pub use crate::info::{BlockInfo, BlockKind, LayerInfo, Shortcut};
    pub use crate::kernels::ConvParams;
    pub use crate::layers::{Affine, ConvLayer, Linear, Rng};
    pub use crate::tensor::{Batch, Logits};
    pub use crate::weights::{Weights, WeightsError};
    pub use ::core;
    pub use ::std;
}
