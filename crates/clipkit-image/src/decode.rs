//! Image files to 8-bit RGB(A) pixels.
//!
//! The pixel count is checked from the header before any pixel is decoded, so a tiny file that
//! claims to be 100 000 × 100 000 fails fast instead of exhausting memory. 16-bit images keep
//! their high byte, as PIL does when it opens them for transformers.

use std::io::{Cursor, Read, Seek};
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageError, ImageReader, RgbImage, RgbaImage};

use crate::decoded::check_frame_size;
pub use crate::decoded::{DecodeOptions, DecodedImage, Pixels, SourceMode, DEFAULT_MAX_PIXELS};
use crate::error::ImageProblem;
use crate::jpeg;

pub fn decode_file(path: &Path, options: &DecodeOptions) -> Result<DecodedImage, ImageProblem> {
    decode_bytes(&std::fs::read(path)?, options)
}

/// JPEGs go to libjpeg-turbo (PIL's decoder), everything else, and the JPEG colour spaces
/// that path leaves out, to the `image` crate.
pub fn decode_bytes(bytes: &[u8], options: &DecodeOptions) -> Result<DecodedImage, ImageProblem> {
    if bytes.is_empty() {
        return Err(ImageProblem::Empty);
    }
    if jpeg::is_jpeg(bytes) {
        if let Some(decoded) = jpeg::decode(bytes, options)? {
            return Ok(decoded);
        }
    }
    decode_reader(Cursor::new(bytes), options)
}

fn decode_reader<R: std::io::BufRead + Seek>(
    mut reader: R,
    options: &DecodeOptions,
) -> Result<DecodedImage, ImageProblem> {
    let mut header = [0u8; 32];
    let n = read_up_to(&mut reader, &mut header)?;
    reader.rewind()?;
    let header = &header[..n];

    let reader = ImageReader::new(reader).with_guessed_format()?;
    let format = reader.format().ok_or(ImageProblem::UnknownFormat)?;
    let mut decoder = reader.into_decoder().map_err(problem)?;
    let (width, height) = decoder.dimensions();
    check_frame_size(width, height, options.max_pixels)?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(options.max_pixels.saturating_mul(8).max(64 << 20));
    decoder.set_limits(limits).map_err(problem)?;
    let orientation = if options.apply_exif_orientation {
        decoder.orientation().ok()
    } else {
        None
    };
    let mut image = DynamicImage::from_decoder(decoder).map_err(problem)?;
    if let Some(o) = orientation {
        image.apply_orientation(o);
    }

    let palette = match format {
        image::ImageFormat::Gif => true,
        // IHDR colour type 3 = indexed.
        image::ImageFormat::Png => header.len() > 25 && header[25] == 3,
        _ => false,
    };
    Ok(widen(image, palette))
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn problem(e: ImageError) -> ImageProblem {
    match e {
        ImageError::Unsupported(u) => ImageProblem::Unsupported(u.to_string()),
        ImageError::Limits(l) => ImageProblem::Corrupt(format!("exceeds decoding limits: {l}")),
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ImageProblem::Corrupt("file is truncated".into())
        }
        ImageError::IoError(io) => ImageProblem::Io(io),
        other => ImageProblem::Corrupt(other.to_string()),
    }
}

/// Widens any decoded layout to 8-bit RGB, or RGBA when transparency matters.
fn widen(image: DynamicImage, palette: bool) -> DecodedImage {
    let high_byte = |v: u16| (v >> 8) as u8;
    let (pixels, mode) = match image {
        DynamicImage::ImageRgb8(i) => (Pixels::Rgb(i), SourceMode::Rgb),
        DynamicImage::ImageRgba8(i) => (Pixels::Rgba(i), SourceMode::Rgba),
        DynamicImage::ImageLuma8(i) => (
            Pixels::Rgb(DynamicImage::ImageLuma8(i).to_rgb8()),
            SourceMode::Gray,
        ),
        DynamicImage::ImageLumaA8(i) => (
            Pixels::Rgba(DynamicImage::ImageLumaA8(i).to_rgba8()),
            SourceMode::GrayAlpha,
        ),
        DynamicImage::ImageRgb16(i) => {
            let raw = i.as_raw().iter().map(|&v| high_byte(v)).collect();
            let rgb = RgbImage::from_raw(i.width(), i.height(), raw).expect("same size");
            (Pixels::Rgb(rgb), SourceMode::Rgb)
        }
        DynamicImage::ImageRgba16(i) => {
            let raw = i.as_raw().iter().map(|&v| high_byte(v)).collect();
            let rgba = RgbaImage::from_raw(i.width(), i.height(), raw).expect("same size");
            (Pixels::Rgba(rgba), SourceMode::Rgba)
        }
        DynamicImage::ImageLuma16(i) => {
            let rgb = RgbImage::from_fn(i.width(), i.height(), |x, y| {
                let v = high_byte(i.get_pixel(x, y)[0]);
                image::Rgb([v, v, v])
            });
            (Pixels::Rgb(rgb), SourceMode::Gray)
        }
        DynamicImage::ImageLumaA16(i) => {
            let rgba = RgbaImage::from_fn(i.width(), i.height(), |x, y| {
                let p = i.get_pixel(x, y);
                let v = high_byte(p[0]);
                image::Rgba([v, v, v, high_byte(p[1])])
            });
            (Pixels::Rgba(rgba), SourceMode::GrayAlpha)
        }
        other => (Pixels::Rgba(other.to_rgba8()), SourceMode::Other),
    };
    let pixels = match pixels {
        Pixels::Rgba(i) if i.pixels().all(|p| p[3] == 255) => {
            Pixels::Rgb(DynamicImage::ImageRgba8(i).to_rgb8())
        }
        p => p,
    };
    let mode = if palette { SourceMode::Palette } else { mode };
    DecodedImage { pixels, mode }
}
