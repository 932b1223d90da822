//! clipkit-core: OpenAI's CLIP in Rust, numerically matching Hugging Face transformers.
//!
//! The crate is laid out as the pipeline runs:
//! - [`hub`] finds a checkpoint directory (a local path or a Hugging Face Hub id),
//! - [`config`] and [`weights`] read `config.json` and the safetensors files ([`pack_cache`]
//!   keeps the packed CPU weights for the next load),
//! - [`tokenizer`] turns prompts into CLIP BPE ids,
//! - [`image`] (the clipkit-image crate) decodes files and reproduces `CLIPImageProcessor` (or
//!   OpenAI's original transform),
//! - [`model`] holds the two towers,
//! - [`scores`] turns embeddings into logits, probabilities and prompt ensembles,
//! - [`clip`] ties everything together behind [`Clip`], the type most users want.

pub mod clip;
pub mod config;
pub mod device;
pub mod error;
pub mod hub;
/// Image decoding and preprocessing live in their own crate; re-exported so that
/// `clipkit_core::image::…` paths keep working.
pub use clipkit_image as image;
pub mod model;
pub mod pack_cache;
pub mod scores;
pub mod tokenizer;
pub mod weights;

pub use clip::{Clip, LoadOptions};
pub use config::{ClipConfig, ClipTextConfig, ClipVisionConfig};
pub use error::{ClipError, Result};
pub use image::{DecodeOptions, PreprocessMode, Preprocessor, PreprocessorConfig};
pub use tokenizer::ClipTokenizer;
