//! Resize, centre crop, rescale and normalise: transformers' `CLIPImageProcessor` (PIL
//! backend) by default, OpenAI's original `clip.load` transform on request.

use std::path::Path;

use image::{RgbImage, RgbaImage};

use super::config::{PreprocessorConfig, Resample};
use super::decode::{decode_bytes, decode_file, DecodeOptions, DecodedImage, Pixels, SourceMode};
use super::pil::{self, CropRounding};
use super::resample;
use crate::error::{ClipError, ImageProblem, Result};

/// Which reference the pixels should match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreprocessMode {
    /// transformers' PIL image processor (`CLIPProcessor` as most people ran it): RGB first
    /// (transparent pixels on white), resize, crop with the offset rounded down.
    #[default]
    Transformers,
    /// OpenAI's `clip` package: resize in the file's own mode (premultiplied alpha, nearest
    /// neighbour for palette images), crop with the offset rounded half to even, then RGB
    /// (alpha dropped).
    OpenAi,
}

impl std::str::FromStr for PreprocessMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hf" | "transformers" => Ok(Self::Transformers),
            "openai" => Ok(Self::OpenAi),
            other => Err(format!(
                "unknown preprocessing `{other}` (expected `hf` or `openai`)"
            )),
        }
    }
}

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
        decode_file(path, &self.decode).map_err(|problem| image_error(path, problem))
    }

    pub fn decode_bytes(&self, name: &Path, bytes: &[u8]) -> Result<DecodedImage> {
        decode_bytes(bytes, &self.decode).map_err(|problem| image_error(name, problem))
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
                let rgb = match &image.pixels {
                    Pixels::Rgb(rgb) => rgb.clone(),
                    Pixels::Rgba(rgba) if c.do_convert_rgb => pil::composite_on_white(rgba),
                    Pixels::Rgba(rgba) => drop_alpha(rgba),
                };
                let resized = if c.do_resize {
                    let (w, h) =
                        pil::shortest_edge_size(rgb.width(), rgb.height(), c.shortest_edge);
                    resize_rgb(&rgb, w, h, c.resample)
                } else {
                    rgb
                };
                if c.do_center_crop {
                    center_crop(&resized, c.crop_size, CropRounding::Floor)
                } else {
                    resized
                }
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
                let (w, h) = if c.do_resize {
                    pil::shortest_edge_size(w0, h0, c.shortest_edge)
                } else {
                    (w0, h0)
                };
                let rgb = match &image.pixels {
                    Pixels::Rgb(rgb) => resize_rgb(rgb, w, h, alg),
                    Pixels::Rgba(rgba) if nearest => drop_alpha(&resize_rgba(rgba, w, h, alg)),
                    Pixels::Rgba(rgba) => {
                        let mut pre = rgba.clone();
                        pil::premultiply(&mut pre);
                        let mut resized = resize_rgba(&pre, w, h, alg);
                        pil::unpremultiply(&mut resized);
                        drop_alpha(&resized)
                    }
                };
                if c.do_center_crop {
                    center_crop(&rgb, c.crop_size, CropRounding::HalfToEven)
                } else {
                    rgb
                }
            }
        }
    }

    /// `[3, H, W]` floats: `(x * rescale_factor - mean) / std` per channel.
    pub fn normalize(&self, rgb: &RgbImage) -> Vec<f32> {
        let c = &self.config;
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        let mut out = vec![0f32; 3 * w * h];
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
        out
    }
}

fn image_error(path: &Path, problem: ImageProblem) -> ClipError {
    ClipError::Image {
        path: path.to_path_buf(),
        problem,
    }
}

fn resize_rgb(img: &RgbImage, nw: u32, nh: u32, alg: Resample) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = resample::resize(img.as_raw(), w, h, 3, nw as usize, nh as usize, alg);
    RgbImage::from_raw(nw, nh, raw).expect("resized buffer matches its size")
}

fn resize_rgba(img: &RgbaImage, nw: u32, nh: u32, alg: Resample) -> RgbaImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = resample::resize(img.as_raw(), w, h, 4, nw as usize, nh as usize, alg);
    RgbaImage::from_raw(nw, nh, raw).expect("resized buffer matches its size")
}

fn drop_alpha(rgba: &RgbaImage) -> RgbImage {
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y);
        image::Rgb([p[0], p[1], p[2]])
    })
}

/// Crops `(height, width)` around the centre, padding with zeros where the image is smaller.
fn center_crop(img: &RgbImage, (ch, cw): (u32, u32), rounding: CropRounding) -> RgbImage {
    let top = pil::crop_offset(img.height(), ch, rounding);
    let left = pil::crop_offset(img.width(), cw, rounding);
    if top >= 0 && left >= 0 {
        return image::imageops::crop_imm(img, left as u32, top as u32, cw, ch).to_image();
    }
    RgbImage::from_fn(cw, ch, |x, y| {
        let (sx, sy) = (i64::from(x) + left, i64::from(y) + top);
        if sx >= 0 && sy >= 0 && sx < i64::from(img.width()) && sy < i64::from(img.height()) {
            *img.get_pixel(sx as u32, sy as u32)
        } else {
            image::Rgb([0, 0, 0])
        }
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
