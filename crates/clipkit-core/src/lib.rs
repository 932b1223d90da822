//! clipkit-core: OpenAI's CLIP in Rust, numerically matching Hugging Face transformers.
//!
//! The crate is laid out as the pipeline runs:
//! - [`hub`] finds a checkpoint directory (a local path or a Hugging Face Hub id),
//! - [`config`] and [`weights`] read `config.json` and the safetensors files ([`pack_cache`]
//!   keeps the packed CPU weights for the next load),
//! - [`tokenizer`] turns prompts into CLIP BPE ids,
//! - [`image`] decodes files and reproduces `CLIPImageProcessor` (or OpenAI's original transform),
//! - [`model`] holds the two towers,
//! - [`scoring`] turns embeddings into logits, probabilities, rankings and prompt ensembles
//!   ([`scores`] is its older path),
//! - [`clip`] ties everything together behind [`Clip`], the type most users want, and
//! - [`embedder`] is the seam the indexer, the server and evaluation embed through
//!   ([`Embedder`], implemented by [`Clip`]).

pub mod clip;
pub mod config;
pub mod device;
pub mod embedder;
pub mod error;
pub mod hub;
pub mod image;
pub mod model;
pub mod pack_cache;
pub mod scores;
pub mod scoring;
pub mod tokenizer;
pub mod weights;

pub use clip::{Clip, LoadOptions};
pub use config::{ClipConfig, ClipTextConfig, ClipVisionConfig};
pub use embedder::{Crop, Embedder};
pub use error::{ClipError, Result};
pub use image::{DecodeOptions, PreprocessMode, Preprocessor, PreprocessorConfig};
pub use scoring::Scoring;
pub use tokenizer::ClipTokenizer;
