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
//! println!("{}", ResNet50::SUMMARY); // the layer table
//!
//! // Random weights here; `ResNet50::from_safetensors("resnet50.safetensors")`
//! // loads torchvision's.
//! let model = ResNet50::new_random(0);
//! let images = resnet_runtime::Batch::<3, 224, 224>::zeros(1);
//! let logits: resnet_runtime::Logits<1000> = model.forward(&images);
//! assert_eq!(logits.len(), 1);
//! ```

pub mod exec;
pub mod info;
pub mod kernels;
pub mod layers;
pub mod tensor;
pub mod weights;

pub use exec::{Profile, Workspace};
pub use info::{BlockInfo, BlockKind, LayerInfo, Shortcut};
/// The array crate the tensors are built on, re-exported so users need no second dependency.
pub use ndarray;
pub use tensor::{Batch, Logits, ShapeError};
pub use weights::{Weights, WeightsError};

/// Compiles a residual network from its spec; see the crate's README for
/// the keys, and [`resnet_macros`](https://docs.rs/resnet-macros) for the grammar.
pub use resnet_macros::resnet;

/// Paths the generated code uses; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::exec::{Exec, Layout, Slot, Src, Workspace};
    pub use crate::info::{BlockInfo, BlockKind, LayerInfo, Shortcut};
    pub use crate::kernels::ConvParams;
    pub use crate::layers::{Affine, ConvLayer, ConvLayout, Linear, Loader, Rng};
    pub use crate::tensor::{Batch, Logits};
    pub use crate::weights::{Weights, WeightsError};
    pub use ::core;
    pub use ::std;
}
