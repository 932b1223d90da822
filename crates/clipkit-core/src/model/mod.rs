//! The model families' towers, in the style of candle-transformers: a serde config, one struct
//! per layer with a `forward`, weights loaded by scoped Hugging Face names.
//!
//! - [`tower`]: the shape every family shares (embeddings → encoder → pooling → projection)
//!   and [`DualEncoder`], the two towers as [`crate::Clip`] drives them;
//! - [`layers`]: the pre-LN transformer encoder every family uses; [`dense`]: its linear layers
//!   on candle or on the packed CPU kernels;
//! - one module per family: [`clip`] (transformers' `CLIPModel`), [`siglip`] (`SiglipModel`),
//!   [`open_clip`] (open_clip's CLIP checkpoints, read into [`clip`]'s towers through a tensor
//!   naming); [`xlm_roberta`] is the multilingual text tower open_clip and M-CLIP pair with a
//!   CLIP image tower, [`mclip`] M-CLIP's pairing of one with a CLIP checkpoint's image tower.

pub mod clip;
pub mod dense;
pub mod layers;
pub mod mclip;
pub mod open_clip;
pub mod siglip;
pub mod tower;
pub mod xlm_roberta;

pub use clip::ClipModel;
pub use dense::MatmulPath;
pub use siglip::SiglipModel;
pub use tower::{DualEncoder, TextBatch, TextInput, TextLayout, TextPoolingRule, Tower};
