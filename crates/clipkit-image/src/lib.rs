//! clipkit-image: from image files to the pixels CLIP is fed, matching transformers' PIL
//! processor (or OpenAI's original transform) byte for byte.
//!
//! The modules, in the order an image goes through them:
//! - [`files`] finds image files in folders,
//! - [`decode`] turns bytes into 8-bit RGB(A) pixels, with a pixel limit checked from the
//!   header (decompression bombs) and EXIF orientation; it hands JPEGs to [`jpeg`]
//!   (libjpeg-turbo, PIL's own decoder, with PIL's draft mode), which sends 1/8-scale drafts of
//!   common baseline files to a faster in-house decoder (`jpeg_eighth`, private),
//! - [`decoded`] holds what those decoders share: [`DecodeOptions`] in, [`DecodedImage`] out,
//! - [`config`] reads `preprocessor_config.json`,
//! - [`mode`] names the reference to match: [`PreprocessMode`], `hf` or `openai`,
//! - [`preprocess`] chains resize, centre crop, rescale and normalise in that reference's
//!   order ([`Preprocessor`]), using [`resample`] (PIL's fixed-point resize) and [`pil`]
//!   (PIL's integer arithmetic for alpha and crop offsets),
//! - [`metadata`] reads what a photo says about itself (capture date, GPS, camera) for
//!   collections' filters,
//! - [`error`] holds [`ImageError`] and the per-file [`ImageProblem`].
//!
//! Dependencies between the modules run one way: `preprocess` → `decode` → `jpeg` →
//! `jpeg_eighth`, and each of them → `decoded`/`error`; nothing points back.

pub mod config;
pub mod decode;
pub mod decoded;
pub mod error;
pub mod files;
pub mod jpeg;
mod jpeg_eighth;
pub mod metadata;
pub mod mode;
pub mod pil;
pub mod preprocess;
pub mod resample;
#[cfg(test)]
mod test_support;

pub use config::{PreprocessorConfig, ResizeTarget};
pub use decode::{decode_bytes, decode_file};
pub use decoded::{DecodeOptions, DecodedImage, Pixels, SourceMode};
pub use error::{ImageError, ImageProblem};
pub use metadata::PhotoMetadata;
pub use mode::{PreprocessMode, UnknownPreprocessMode};
pub use preprocess::Preprocessor;
