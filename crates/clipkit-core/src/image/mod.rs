//! From image files to the `pixel_values` tensor CLIP expects.
//!
//! [`decode`] turns bytes into pixels (with limits against decompression bombs and EXIF
//! orientation), [`config`] reads `preprocessor_config.json`, [`pil`] reproduces the integer
//! arithmetic of the PIL operations transformers relies on, and [`preprocess`] chains resize,
//! centre crop, rescale and normalise in either transformers' or OpenAI's order.

pub mod config;
pub mod decode;
pub mod files;
pub mod jpeg;
mod jpeg_eighth;
pub mod pil;
pub mod preprocess;
pub mod resample;

pub use config::PreprocessorConfig;
pub use decode::{decode_bytes, decode_file, DecodeOptions, DecodedImage, Pixels, SourceMode};
pub use preprocess::{PreprocessMode, Preprocessor};
