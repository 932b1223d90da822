//! What decoding takes and gives: [`DecodeOptions`] in, [`DecodedImage`] out. Its own module
//! so that the general decoder ([`crate::decode`]) and the JPEG ones ([`crate::jpeg`]) both
//! build on it without knowing each other's insides: `decode` calls `jpeg`, never the reverse.

use image::{RgbImage, RgbaImage};

use crate::error::ImageProblem;

/// PIL's `Image.MAX_IMAGE_PIXELS` doubled: the point where PIL itself refuses to decode.
pub const DEFAULT_MAX_PIXELS: u64 = 2 * 89_478_485;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    pub max_pixels: u64,
    /// Rotate/flip according to the EXIF orientation tag. transformers does not do this, so
    /// a phone photo taken upright is embedded sideways there; we default to what the user sees.
    pub apply_exif_orientation: bool,
    /// JPEGs only: decode at 1/2, 1/4 or 1/8 scale inside the IDCT when the shortest edge
    /// stays at least this long (PIL's `Image.draft`). Several times faster on photos much
    /// larger than the model input, but the pixels differ from a full decode and resize, so
    /// it is off unless asked for (docs/parity.md gives its measured effect on embeddings).
    pub draft_shortest_edge: Option<u32>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
            apply_exif_orientation: true,
            draft_shortest_edge: None,
        }
    }
}

/// What the file stored, before it was widened to RGB(A); PIL's mode decides a few steps of
/// OpenAI's transform (palette images are resized with nearest neighbour there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceMode {
    Rgb,
    Rgba,
    Gray,
    GrayAlpha,
    Palette,
    Other,
}

#[derive(Debug, Clone)]
pub enum Pixels {
    Rgb(RgbImage),
    /// Only kept when some pixel is not fully opaque.
    Rgba(RgbaImage),
}

#[derive(Debug, Clone)]
pub struct DecodedImage {
    pub pixels: Pixels,
    pub mode: SourceMode,
}

impl DecodedImage {
    pub fn width(&self) -> u32 {
        match &self.pixels {
            Pixels::Rgb(i) => i.width(),
            Pixels::Rgba(i) => i.width(),
        }
    }

    pub fn height(&self) -> u32 {
        match &self.pixels {
            Pixels::Rgb(i) => i.height(),
            Pixels::Rgba(i) => i.height(),
        }
    }
}

/// Refuses a frame with no pixels, or more than `max_pixels`, from its header: the check every
/// decoder makes before it allocates anything.
pub(crate) fn check_frame_size(
    width: u32,
    height: u32,
    max_pixels: u64,
) -> Result<(), ImageProblem> {
    if width == 0 || height == 0 {
        return Err(ImageProblem::ZeroSize);
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(ImageProblem::TooManyPixels {
            width,
            height,
            pixels,
            limit: max_pixels,
        });
    }
    Ok(())
}
