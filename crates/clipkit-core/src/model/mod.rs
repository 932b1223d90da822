//! The two CLIP towers, in the style of candle-transformers: a config, one struct per layer,
//! a `forward` each, weights loaded by their Hugging Face names.

pub mod clip_model;
pub mod dense;
pub mod layers;
pub mod text;
pub mod vision;

pub use clip_model::ClipModel;
pub use dense::MatmulPath;
pub use text::TextTransformer;
pub use vision::VisionTransformer;
