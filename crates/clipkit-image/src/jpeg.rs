//! JPEG through libjpeg-turbo, the library PIL decodes with.
//!
//! Two reasons to not use the pure-Rust decoder here: libjpeg-turbo's integer IDCT and "fancy"
//! chroma upsampling give the very bytes PIL gives (the Rust decoders round a level differently
//! here and there), and it can decode at 1/2, 1/4 or 1/8 scale inside the IDCT, which turns a
//! 12-megapixel photo that costs more to decode than CLIP costs to run into a cheap one
//! ([`DecodeOptions::draft_shortest_edge`], PIL's `Image.draft`).
//!
//! Lossless JPEG goes back to the `image` crate ([`decode`] answers `None` for it).

use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, RgbImage};
use turbojpeg::{Colorspace, Decompressor, Image, PixelFormat, ScalingFactor};

use crate::decoded::{check_frame_size, DecodeOptions, DecodedImage, Pixels, SourceMode};
use crate::error::ImageProblem;
use crate::jpeg_eighth;

/// Does the buffer start like a JPEG (SOI followed by another marker)?
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.len() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF
}

/// Decodes a JPEG; `None` where the general decoder should take it.
pub fn decode(bytes: &[u8], options: &DecodeOptions) -> Result<Option<DecodedImage>, ImageProblem> {
    let mut decompressor = Decompressor::new().map_err(corrupt)?;
    let header = decompressor.read_header(bytes).map_err(corrupt)?;
    let (width, height) = (header.width, header.height);
    // JPEG dimensions are 16-bit, so they fit.
    check_frame_size(width as u32, height as u32, options.max_pixels)?;
    let (format, mode) = match header.colorspace {
        Colorspace::YCbCr | Colorspace::RGB => (PixelFormat::RGB, SourceMode::Rgb),
        Colorspace::Gray => (PixelFormat::GRAY, SourceMode::Gray),
        Colorspace::CMYK | Colorspace::YCCK => (PixelFormat::CMYK, SourceMode::Other),
    };
    if header.is_lossless {
        return Ok(None);
    }
    // A progressive file can be built to need unbounded work per pixel; PIL caps nothing, but
    // an indexer fed untrusted files should (libjpeg-turbo's own tools suggest this limit).
    decompressor.set_scan_limit(500).map_err(corrupt)?;

    let factor = options
        .draft_shortest_edge
        .map_or(ScalingFactor::ONE, |edge| draft_factor(width, height, edge));
    decompressor.set_scaling_factor(factor).map_err(corrupt)?;
    let scaled = header.scaled(factor);
    let channels = format.size();
    // At 1/8 scale the common baseline files have a faster decoder with the same output.
    let eighth = (factor.denom() == 8 && header.colorspace != Colorspace::RGB && eighth_enabled())
        .then(|| jpeg_eighth::decode(bytes))
        .flatten()
        .filter(|e| (e.width, e.height, e.channels) == (scaled.width, scaled.height, channels));
    let pixels = match eighth {
        Some(e) => e.pixels,
        None => {
            let mut image = blank_image(scaled.width, scaled.height, format);
            match decompressor.decompress(bytes, image.as_deref_mut()) {
                Ok(()) => {}
                // libjpeg carried on past damage it can mend, and so does PIL: keep the pixels.
                Err(e) if is_recoverable_warning(&e) => {}
                Err(e) => return Err(corrupt(e)),
            }
            image.pixels
        }
    };

    let (w, h) = (scaled.width as u32, scaled.height as u32);
    let rgb = match format {
        PixelFormat::GRAY => {
            let gray = GrayImage::from_raw(w, h, pixels).expect("buffer matches its size");
            DynamicImage::ImageLuma8(gray).to_rgb8()
        }
        PixelFormat::CMYK => cmyk_to_rgb(w, h, &pixels, has_adobe_marker(bytes)),
        _ => RgbImage::from_raw(w, h, pixels).expect("buffer matches its size"),
    };
    let rgb = match options
        .apply_exif_orientation
        .then(|| exif_orientation(bytes))
        .flatten()
    {
        Some(o) if o != Orientation::NoTransforms => {
            let mut img = DynamicImage::ImageRgb8(rgb);
            img.apply_orientation(o);
            img.into_rgb8()
        }
        _ => rgb,
    };
    Ok(Some(DecodedImage {
        pixels: Pixels::Rgb(rgb),
        mode,
    }))
}

/// A zeroed buffer for TurboJPEG to decode `width × height` pixels of `format` into.
fn blank_image(width: usize, height: usize, format: PixelFormat) -> Image<Vec<u8>> {
    Image {
        pixels: vec![0u8; width * height * format.size()],
        width,
        pitch: width * format.size(),
        height,
        format,
    }
}

/// `CLIPKIT_JPEG_EIGHTH=off` sends 1/8-scale decodes to libjpeg-turbo too (to compare the
/// two, or should a file ever decode differently).
fn eighth_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os("CLIPKIT_JPEG_EIGHTH").is_none_or(|v| v != "off"))
}

/// PIL's draft rule applied to the shortest edge: the largest of 1/8, 1/4, 1/2 that keeps the
/// (rounded-up) shortest edge at least `min_edge`, else full size.
pub fn draft_factor(width: usize, height: usize, min_edge: u32) -> ScalingFactor {
    let short = width.min(height);
    for denom in [8, 4, 2] {
        if short.div_ceil(denom) >= min_edge as usize {
            return ScalingFactor::new(1, denom);
        }
    }
    ScalingFactor::ONE
}

/// PIL's CMYK → RGB (`cmyk2rgb` in Convert.c): each channel times the inverse of black.
/// Photoshop (and PIL when it writes CMYK) stores the channels inverted and marks the file with
/// an Adobe APP14 segment; PIL undoes that on reading ("CMYK;I"), and so do we.
fn cmyk_to_rgb(width: u32, height: u32, cmyk: &[u8], inverted: bool) -> RgbImage {
    let mul_div_255 = |a: u32, b: u32| {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    };
    let mut rgb = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        let v = |c: u8| u32::from(if inverted { 255 - c } else { c });
        let nk = 255 - v(px[3]);
        for &c in &px[..3] {
            rgb.push(nk.saturating_sub(mul_div_255(v(c), nk)) as u8);
        }
    }
    RgbImage::from_raw(width, height, rgb).expect("buffer matches its size")
}

fn has_adobe_marker(bytes: &[u8]) -> bool {
    header_segments(bytes).any(|(marker, body)| marker == 0xEE && body.starts_with(b"Adobe"))
}

/// The orientation tag of the first APP1 "Exif" segment.
fn exif_orientation(bytes: &[u8]) -> Option<Orientation> {
    header_segments(bytes)
        .find_map(|(marker, body)| (marker == 0xE1).then(|| body.strip_prefix(b"Exif\0\0"))?)
        .and_then(Orientation::from_exif_chunk)
}

/// `(width, height)` from the first start-of-frame segment (any SOF but DHT, JPG and DAC,
/// which share the marker range), without touching the entropy-coded data.
pub(crate) fn frame_size(bytes: &[u8]) -> Option<(u32, u32)> {
    let (_, body) = header_segments(bytes).find(|(marker, _)| {
        (0xC0..=0xCF).contains(marker) && ![0xC4, 0xC8, 0xCC].contains(marker)
    })?;
    let height = u16::from_be_bytes([*body.get(1)?, *body.get(2)?]);
    let width = u16::from_be_bytes([*body.get(3)?, *body.get(4)?]);
    (width > 0 && height > 0).then_some((u32::from(width), u32::from(height)))
}

/// `(marker, body)` of each segment before the start of scan, so nothing past the headers is
/// touched; stops at the first malformed one.
fn header_segments(bytes: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut i = 2;
    std::iter::from_fn(move || loop {
        if i + 4 > bytes.len() || bytes[i] != 0xFF {
            return None;
        }
        let marker = bytes[i + 1];
        if marker == 0xFF {
            i += 1; // fill byte
            continue;
        }
        if marker == 0xDA || marker == 0xD9 {
            return None; // start of scan / end of image
        }
        let len = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
        let body = bytes.get(i + 4..(i + 2 + len).max(i + 4))?;
        i += 2 + len;
        return Some((marker, body));
    })
}

/// libjpeg's warnings (its `JWRN_*` messages), after which TurboJPEG has still written every
/// pixel. A file that ends early is the one warning PIL turns into an error ("image file is
/// truncated"), so it is not in this list.
fn is_recoverable_warning(e: &turbojpeg::Error) -> bool {
    const WARNINGS: &[&str] = &[
        "Corrupt JPEG data",
        "Warning: unknown JFIF revision",
        "Invalid SOS parameters for sequential JPEG",
        "Inconsistent progression sequence",
        "Unknown Adobe color transform",
    ];
    let turbojpeg::Error::TurboJpegError(message) = e else {
        return false;
    };
    WARNINGS.iter().any(|w| message.contains(w))
}

fn corrupt(e: turbojpeg::Error) -> ImageProblem {
    let message = e.to_string();
    if message.contains("Premature end") {
        ImageProblem::Corrupt("file is truncated".into())
    } else {
        ImageProblem::Corrupt(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::libjpeg_eighth;

    #[test]
    fn draft_keeps_the_shortest_edge_at_or_above_the_target() {
        let denom = |w, h, e| draft_factor(w, h, e).denom();
        assert_eq!(denom(4000, 3000, 224), 8); // 500 x 375
        assert_eq!(denom(1920, 1280, 224), 4); // 480 x 320
        assert_eq!(denom(640, 480, 224), 2); // 320 x 240
        assert_eq!(denom(400, 300, 224), 1);
        assert_eq!(denom(1792, 1792, 224), 8); // exactly 224
        assert_eq!(denom(1791, 1791, 224), 8); // rounds up to 224
        assert_eq!(denom(1784, 1784, 224), 4);
    }

    fn photo() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/images/photo.jpg"
        );
        std::fs::read(path).expect("fixture photo.jpg")
    }

    fn full(bytes: &[u8]) -> DecodedImage {
        decode(bytes, &DecodeOptions::default()).unwrap().unwrap()
    }

    #[test]
    fn truncated_files_are_refused_like_pil_does() {
        let bytes = photo();
        let cut = &bytes[..bytes.len() * 3 / 5];
        match decode(cut, &DecodeOptions::default()) {
            Err(ImageProblem::Corrupt(m)) => assert_eq!(m, "file is truncated"),
            other => panic!("expected a truncation error, got {other:?}"),
        }
    }

    #[test]
    fn a_huge_frame_header_is_refused_before_decoding() {
        let mut bytes = photo();
        // Patch the frame header (SOF0/SOF2: FF C0/C2, len, precision, height, width).
        let sof = (2..bytes.len() - 9)
            .find(|&i| bytes[i] == 0xFF && matches!(bytes[i + 1], 0xC0 | 0xC2))
            .expect("a frame header");
        bytes[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]); // 60000 x 60000
        match decode(&bytes, &DecodeOptions::default()) {
            Err(ImageProblem::TooManyPixels { width, height, .. }) => {
                assert_eq!((width, height), (60_000, 60_000))
            }
            other => panic!("expected TooManyPixels, got {other:?}"),
        }
    }

    #[test]
    fn draft_decodes_at_the_dct_scale_and_stays_close_to_a_full_decode() {
        let bytes = photo();
        let reference = full(&bytes);
        let (w, h) = (reference.width(), reference.height());
        let options = DecodeOptions {
            draft_shortest_edge: Some(w.min(h) / 4),
            ..DecodeOptions::default()
        };
        let small = decode(&bytes, &options).unwrap().unwrap();
        assert_eq!(
            (small.width(), small.height()),
            (w.div_ceil(4), h.div_ceil(4))
        );
        // Each draft pixel is about the mean of its 4 x 4 block of the full decode.
        let (Pixels::Rgb(small), Pixels::Rgb(reference)) = (&small.pixels, &reference.pixels)
        else {
            panic!("RGB expected");
        };
        let mut err = 0.0;
        let blocks = (w / 4) * (h / 4);
        for y in 0..h / 4 {
            for x in 0..w / 4 {
                for c in 0..3 {
                    let mut sum = 0u32;
                    for dy in 0..4 {
                        for dx in 0..4 {
                            sum += u32::from(reference.get_pixel(4 * x + dx, 4 * y + dy)[c]);
                        }
                    }
                    let mean = f64::from(sum) / 16.0;
                    err += (mean - f64::from(small.get_pixel(x, y)[c])).abs();
                }
            }
        }
        let mean_err = err / f64::from(3 * blocks);
        assert!(
            mean_err < 3.0,
            "mean difference to 4x4 block means: {mean_err}"
        );
    }

    /// At 1/8 scale `decode` goes through `jpeg_eighth`; what comes out (EXIF rotation
    /// included) is still libjpeg-turbo's 1/8-scale decode.
    #[test]
    fn eighth_scale_drafts_are_libjpeg_turbos_pixels() {
        for name in ["photo.jpg", "rotated_exif.jpg", "progressive.jpg"] {
            let path = format!(
                "{}/../../fixtures/images/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            let bytes = std::fs::read(&path).unwrap();
            let (w, h, pixels) = libjpeg_eighth(&bytes, PixelFormat::RGB);
            let mut reference =
                DynamicImage::ImageRgb8(RgbImage::from_raw(w as u32, h as u32, pixels).unwrap());
            if let Some(o) = exif_orientation(&bytes) {
                reference.apply_orientation(o);
            }
            // The shortest edge before any rotation, over 8: exactly a 1/8-scale draft.
            let options = DecodeOptions {
                draft_shortest_edge: Some(w.min(h) as u32),
                ..DecodeOptions::default()
            };
            let decoded = decode(&bytes, &options).unwrap().unwrap();
            let Pixels::Rgb(ours) = decoded.pixels else {
                panic!("RGB expected");
            };
            assert_eq!(ours, reference.into_rgb8(), "{name}");
        }
    }

    #[test]
    fn grey_jpegs_decode_to_equal_channels() {
        let gray = Image {
            pixels: (0..64 * 48).map(|i| (i % 251) as u8).collect::<Vec<u8>>(),
            width: 64,
            pitch: 64,
            height: 48,
            format: PixelFormat::GRAY,
        };
        let mut compressor = turbojpeg::Compressor::new().unwrap();
        compressor.set_subsamp(turbojpeg::Subsamp::Gray).unwrap();
        let jpeg = compressor.compress_to_vec(gray.as_deref()).unwrap();
        let decoded = full(&jpeg);
        assert_eq!(decoded.mode, SourceMode::Gray);
        let Pixels::Rgb(rgb) = decoded.pixels else {
            panic!("RGB expected");
        };
        assert!(rgb.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
    }

    #[test]
    fn sniffs_jpeg_magic() {
        assert!(is_jpeg(&[0xFF, 0xD8, 0xFF, 0xE0]));
        assert!(!is_jpeg(b"\x89PNG\r\n"));
        assert!(!is_jpeg(&[0xFF, 0xD8]));
    }

    #[test]
    fn finds_the_exif_orientation_before_the_scan() {
        // SOI, APP1 Exif (little-endian TIFF, one IFD entry: Orientation = 6), SOS.
        let mut tiff = b"II*\0\x08\0\0\0\x01\0".to_vec();
        tiff.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]);
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE1];
        jpeg.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        jpeg.extend_from_slice(&app1);
        jpeg.extend_from_slice(&[0xFF, 0xDA, 0, 2]);
        assert_eq!(exif_orientation(&jpeg), Some(Orientation::Rotate90));
        assert_eq!(exif_orientation(&[0xFF, 0xD8, 0xFF, 0xDA, 0, 2]), None);
        // A segment length past the end of the buffer is not read.
        assert_eq!(
            exif_orientation(&[0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF]),
            None
        );
    }
}
