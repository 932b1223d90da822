//! clipkit-core: CLIP-family models in Rust, numerically matching each family's reference
//! library (transformers for OpenAI's CLIP).
//!
//! The crate is laid out as the pipeline runs:
//! - [`hub`] finds a checkpoint directory (a local path or a Hugging Face Hub id),
//! - [`family`] tells which model family it holds and loads that family's parts,
//! - [`config`] and [`weights`] read `config.json` and the safetensors files ([`pack_cache`]
//!   keeps the packed CPU weights for the next load),
//! - [`tokenizer`] turns prompts into CLIP BPE ids,
//! - [`image`] (the clipkit-image crate) decodes files and reproduces `CLIPImageProcessor` (or
//!   OpenAI's original transform),
//! - [`model`] holds the towers: the shape all families share ([`model::tower`]) and each
//!   family's own,
//! - [`device`] decides once how the matmuls run (device, precision, kernels),
//! - [`scoring`] turns embeddings into logits, probabilities (the family's scoring head),
//!   rankings and prompt ensembles ([`scores`] is its older path),
//! - [`clip`] ties everything together behind [`Clip`], the type most users want,
//! - [`embedder`] is the seam the indexer, the server and evaluation embed through
//!   ([`Embedder`], implemented by [`Clip`]), and
//! - [`zoo`] lists the checkpoints clipkit knows, with published accuracy and the speed
//!   `clipkit bench` measured here.

pub mod clip;
pub mod config;
pub mod device;
pub mod embedder;
pub mod error;
pub mod family;
pub mod hub;
/// Image decoding and preprocessing live in their own crate; re-exported so that
/// `clipkit_core::image::…` paths keep working.
pub use clipkit_image as image;
pub mod model;
pub mod pack_cache;
pub mod scores;
pub mod scoring;
pub mod tokenizer;
pub mod weights;
pub mod zoo;

pub use clip::{Clip, LoadOptions};
pub use config::{ClipConfig, ClipTextConfig, ClipVisionConfig};
pub use embedder::{Crop, Embedder};
pub use error::{ClipError, Result};
pub use family::ModelFamily;
pub use image::{DecodeOptions, PreprocessMode, Preprocessor, PreprocessorConfig};
pub use scoring::Scoring;
pub use tokenizer::{TextCleaning, TextTokenizer};
