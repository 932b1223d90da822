//! Resize, centre crop, rescale and normalise: transformers' `CLIPImageProcessor` (PIL
//! backend) by default, OpenAI's original `clip.load` transform on request.

use std::path::Path;

use image::{RgbImage, RgbaImage};

use crate::config::{PreprocessorConfig, Resample, ResizeMode};
use crate::decode::{decode_bytes, decode_file};
use crate::decoded::{DecodeOptions, DecodedImage, Pixels, SourceMode};
use crate::error::{ImageError, Result};
use crate::mode::PreprocessMode;
use crate::pil::{self, CropRounding};
use crate::resample;

#[derive(Debug, Clone)]
pub struct Preprocessor {
    pub config: PreprocessorConfig,
    pub mode: PreprocessMode,
    pub decode: DecodeOptions,
}

impl Preprocessor {
    pub fn new(config: PreprocessorConfig, mode: PreprocessMode, decode: DecodeOptions) -> Self {
        Self {
            config,
            mode,
            decode,
        }
    }

    /// `(height, width)` of the model input this produces.
    pub fn output_size(&self) -> (u32, u32) {
        self.config.crop_size
    }

    pub fn decode_file(&self, path: &Path) -> Result<DecodedImage> {
        decode_file(path, &self.decode).map_err(|problem| ImageError::image(path, problem))
    }

    pub fn decode_bytes(&self, name: &Path, bytes: &[u8]) -> Result<DecodedImage> {
        decode_bytes(bytes, &self.decode).map_err(|problem| ImageError::image(name, problem))
    }

    /// Normalised `[3, H, W]` values of an image file.
    pub fn preprocess_file(&self, path: &Path) -> Result<Vec<f32>> {
        let decoded = self.decode_file(path)?;
        Ok(self.normalize(&self.resize_and_crop(&decoded)))
    }

    /// The 8-bit RGB crop, before rescaling: what the model sees, as a picture.
    pub fn resize_and_crop(&self, image: &DecodedImage) -> RgbImage {
        let c = &self.config;
        match self.mode {
            PreprocessMode::Transformers => {
                let converted;
                let rgb = match &image.pixels {
                    Pixels::Rgb(rgb) => rgb,
                    Pixels::Rgba(rgba) => {
                        converted = if c.do_convert_rgb {
                            pil::composite_on_white(rgba)
                        } else {
                            drop_alpha(rgba)
                        };
                        &converted
                    }
                };
                let (w, h) = c.resized_size(rgb.width(), rgb.height());
                let crop = c
                    .do_center_crop
                    .then_some((c.crop_size, CropRounding::Floor));
                resize_crop(rgb.as_raw(), rgb.dimensions(), 3, (w, h), c.resample, crop).into_rgb()
            }
            PreprocessMode::OpenAi => {
                let nearest = image.mode == SourceMode::Palette;
                // PIL resizes palette images with NEAREST whatever filter is asked for.
                let alg = if nearest {
                    Resample::Nearest
                } else {
                    c.resample
                };
                let (w0, h0) = (image.width(), image.height());
                let (w, h) = c.resized_size(w0, h0);
                // torchvision's CenterCrop (offset rounded half to even); open_clip's
                // `longest` pads instead (CenterCropOrPad), rounding the padding down.
                let rounding = match c.resize_mode {
                    ResizeMode::Longest => CropRounding::PadFloor,
                    _ => CropRounding::HalfToEven,
                };
                let crop = c.do_center_crop.then_some((c.crop_size, rounding));
                match &image.pixels {
                    Pixels::Rgb(rgb) => {
                        resize_crop(rgb.as_raw(), rgb.dimensions(), 3, (w, h), alg, crop).into_rgb()
                    }
                    Pixels::Rgba(rgba) => {
                        let mut pre = rgba.clone();
                        if !nearest {
                            pil::premultiply(&mut pre);
                        }
                        let resized =
                            resize_crop(pre.as_raw(), pre.dimensions(), 4, (w, h), alg, crop);
                        let mut rgba = resized.into_rgba();
                        if !nearest {
                            pil::unpremultiply(&mut rgba);
                        }
                        drop_alpha(&rgba)
                    }
                }
            }
        }
    }

    /// `[3, H, W]` floats: `(x * rescale_factor - mean) / std` per channel.
    pub fn normalize(&self, rgb: &RgbImage) -> Vec<f32> {
        let mut out = vec![0f32; 3 * rgb.width() as usize * rgb.height() as usize];
        self.normalize_to(rgb, &mut out);
        out
    }

    /// [`Self::normalize`] into `out`, which holds exactly `3 × H × W` values (one image's
    /// place in a batch's input).
    pub fn normalize_to(&self, rgb: &RgbImage, out: &mut [f32]) {
        let c = &self.config;
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        assert_eq!(out.len(), 3 * w * h, "output is not [3, H, W]");
        let scale = if c.do_rescale { c.rescale_factor } else { 1.0 };
        let (mean, std) = if c.do_normalize {
            (c.image_mean, c.image_std)
        } else {
            ([0.0; 3], [1.0; 3])
        };
        let plane = w * h;
        for (i, p) in rgb.pixels().enumerate() {
            for ch in 0..3 {
                out[ch * plane + i] = (f32::from(p[ch]) * scale - mean[ch]) / std[ch];
            }
        }
    }
}

/// An interleaved 8-bit result of [`resize_crop`]: RGB or RGBA by its channel count.
struct Interleaved {
    raw: Vec<u8>,
    width: u32,
    height: u32,
}

impl Interleaved {
    fn into_rgb(self) -> RgbImage {
        RgbImage::from_raw(self.width, self.height, self.raw).expect("buffer matches its size")
    }

    fn into_rgba(self) -> RgbaImage {
        RgbaImage::from_raw(self.width, self.height, self.raw).expect("buffer matches its size")
    }
}

/// Resize to `(nw, nh)`, then the centre crop `(height, width)` if asked for, computing only the
/// pixels the crop keeps. Where the crop is larger than the resized image, the missing border
/// is zeros (torchvision pads; transformers' PIL path does too).
fn resize_crop(
    raw: &[u8],
    (w, h): (u32, u32),
    channels: usize,
    (nw, nh): (u32, u32),
    alg: Resample,
    crop: Option<((u32, u32), CropRounding)>,
) -> Interleaved {
    let (w, h, nw_, nh_) = (w as usize, h as usize, nw as usize, nh as usize);
    let Some(((ch, cw), rounding)) = crop else {
        let raw = resample::resize(raw, w, h, channels, nw_, nh_, alg);
        return Interleaved {
            raw,
            width: nw,
            height: nh,
        };
    };
    let top = pil::crop_offset(nh, ch, rounding);
    let left = pil::crop_offset(nw, cw, rounding);
    // The part of the crop that lies on the resized image.
    let (x0, y0) = (left.max(0) as usize, top.max(0) as usize);
    let x1 = (left + i64::from(cw)).min(i64::from(nw)) as usize;
    let y1 = (top + i64::from(ch)).min(i64::from(nh)) as usize;
    let window = resample::Window {
        x: x0,
        y: y0,
        width: x1 - x0,
        height: y1 - y0,
    };
    let inside = resample::resize_window(raw, w, h, channels, nw_, nh_, alg, window);
    if (window.width, window.height) == (cw as usize, ch as usize) {
        return Interleaved {
            raw: inside,
            width: cw,
            height: ch,
        };
    }
    let mut out = vec![0u8; cw as usize * ch as usize * channels];
    let (dx, dy) = ((x0 as i64 - left) as usize, (y0 as i64 - top) as usize);
    for (r, row) in inside.chunks_exact(window.width * channels).enumerate() {
        let at = ((dy + r) * cw as usize + dx) * channels;
        out[at..at + row.len()].copy_from_slice(row);
    }
    Interleaved {
        raw: out,
        width: cw,
        height: ch,
    }
}

fn drop_alpha(rgba: &RgbaImage) -> RgbImage {
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y);
        image::Rgb([p[0], p[1], p[2]])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pre(mode: PreprocessMode) -> Preprocessor {
        Preprocessor::new(
            PreprocessorConfig::openai(224),
            mode,
            DecodeOptions::default(),
        )
    }

    #[test]
    fn output_is_the_crop_size_for_any_aspect() {
        for (w, h) in [
            (1, 1),
            (5, 3),
            (1200, 60),
            (50, 700),
            (224, 224),
            (225, 223),
        ] {
            let img = DecodedImage {
                pixels: Pixels::Rgb(RgbImage::from_pixel(w, h, image::Rgb([9, 99, 199]))),
                mode: SourceMode::Rgb,
            };
            for mode in [PreprocessMode::Transformers, PreprocessMode::OpenAi] {
                let crop = pre(mode).resize_and_crop(&img);
                assert_eq!(crop.dimensions(), (224, 224), "{w}x{h} {mode:?}");
                // A flat colour stays flat through an interpolating filter.
                assert!(
                    crop.pixels().all(|p| p.0 == [9, 99, 199]),
                    "{w}x{h} {mode:?}"
                );
            }
        }
    }

    #[test]
    fn transparent_pixels_are_white_for_transformers_and_dropped_for_openai() {
        let img = DecodedImage {
            pixels: Pixels::Rgba(RgbaImage::from_pixel(
                300,
                300,
                image::Rgba([10, 20, 30, 0]),
            )),
            mode: SourceMode::Rgba,
        };
        let hf = pre(PreprocessMode::Transformers).resize_and_crop(&img);
        assert!(hf.pixels().all(|p| p.0 == [255, 255, 255]));
        let openai = pre(PreprocessMode::OpenAi).resize_and_crop(&img);
        // Premultiplied by alpha 0 → black, as PIL's RGBa round trip gives.
        assert!(openai.pixels().all(|p| p.0 == [0, 0, 0]));
    }

    #[test]
    fn normalize_uses_mean_and_std_per_channel() {
        let p = pre(PreprocessMode::Transformers);
        let img = RgbImage::from_pixel(2, 2, image::Rgb([0, 255, 128]));
        let v = p.normalize(&img);
        assert_eq!(v.len(), 12);
        let expect =
            |x: f32, c: usize| (x / 255.0 - p.config.image_mean[c]) / p.config.image_std[c];
        assert!((v[0] - expect(0.0, 0)).abs() < 1e-6);
        assert!((v[4] - expect(255.0, 1)).abs() < 1e-6);
        assert!((v[11] - expect(128.0, 2)).abs() < 1e-6);
    }
}
