//! `preprocessor_config.json`, in both layouts transformers has used: the legacy one
//! (`"size": 224, "crop_size": 224`) and the current one (`"size": {"shortest_edge": 224},
//! "crop_size": {"height": 224, "width": 224}`).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ImageError, Result};

pub const OPENAI_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const OPENAI_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// PIL's resampling filters, by the integer codes transformers stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resample {
    Nearest,
    Box,
    Bilinear,
    Hamming,
    Bicubic,
    Lanczos,
}

impl Resample {
    pub fn from_pil_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::Nearest,
            1 => Self::Lanczos,
            2 => Self::Bilinear,
            3 => Self::Bicubic,
            4 => Self::Box,
            5 => Self::Hamming,
            _ => return None,
        })
    }
}

/// How the image is brought to the model's size before the centre crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// The shortest edge to `shortest_edge`, keeping the aspect ratio (CLIP's, open_clip's
    /// `shortest`); the crop then cuts the longer side.
    #[default]
    ShortestEdge,
    /// Exactly to the crop size, ignoring the aspect ratio (open_clip's `squash`).
    Squash,
    /// The longest edge to the crop size, keeping the aspect ratio (each side
    /// `round(side / max(h / crop_h, w / crop_w))`), then padded with black to the crop
    /// (open_clip's `longest`: `ResizeKeepRatio` + `CenterCropOrPad`).
    Longest,
}

/// The validated preprocessing settings of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessorConfig {
    pub do_convert_rgb: bool,
    pub do_resize: bool,
    /// How the resize picks its size; the file's `shortest_edge` applies to
    /// [`ResizeMode::ShortestEdge`] only.
    #[serde(default)]
    pub resize_mode: ResizeMode,
    /// Target of the shortest edge.
    pub shortest_edge: u32,
    pub resample: Resample,
    pub do_center_crop: bool,
    /// `(height, width)` of the centre crop.
    pub crop_size: (u32, u32),
    pub do_rescale: bool,
    pub rescale_factor: f32,
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

impl PreprocessorConfig {
    /// How far a JPEG may be shrunk in its DCT before the resize: the resize target. Without a
    /// resize the crop takes pixels at the file's own scale, so there is no draft.
    pub fn draft_shortest_edge(&self) -> Option<u32> {
        let shortest = match self.resize_mode {
            ResizeMode::ShortestEdge => self.shortest_edge,
            // The smaller side ends at (at most) the smaller crop side.
            ResizeMode::Squash | ResizeMode::Longest => return None,
        };
        self.do_resize.then_some(shortest)
    }

    /// The size the image of `(width, height)` is resized to, before the crop.
    pub fn resized_size(&self, width: u32, height: u32) -> (u32, u32) {
        if !self.do_resize {
            return (width, height);
        }
        let (ch, cw) = self.crop_size;
        match self.resize_mode {
            ResizeMode::ShortestEdge => {
                crate::pil::shortest_edge_size(width, height, self.shortest_edge)
            }
            ResizeMode::Squash => (cw, ch),
            ResizeMode::Longest => {
                let ratio =
                    (f64::from(height) / f64::from(ch)).max(f64::from(width) / f64::from(cw));
                // Python's round(): half to even.
                let side = |x: u32| ((f64::from(x) / ratio).round_ties_even() as u32).max(1);
                (side(width), side(height))
            }
        }
    }

    /// OpenAI's settings for a square model input of `size` pixels.
    pub fn openai(size: u32) -> Self {
        Self {
            do_convert_rgb: true,
            do_resize: true,
            resize_mode: ResizeMode::ShortestEdge,
            shortest_edge: size,
            resample: Resample::Bicubic,
            do_center_crop: true,
            crop_size: (size, size),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: OPENAI_MEAN,
            image_std: OPENAI_STD,
        }
    }

    /// Reads `preprocessor_config.json`; `image_size` (from the model config) fills what the
    /// file leaves out.
    pub fn from_file(path: &Path, image_size: u32) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ImageError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let raw: Value = serde_json::from_str(&text).map_err(|source| ImageError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&raw, image_size, path)
    }

    pub fn from_json(raw: &Value, image_size: u32, path: &Path) -> Result<Self> {
        let mut c = Self::openai(image_size);
        let bad = |field: &str, problem: &str| ImageError::Config {
            path: path.to_path_buf(),
            field: field.to_string(),
            problem: problem.to_string(),
        };
        let flag = |name: &str, default: bool| -> Result<bool> {
            match raw.get(name) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(bad(name, "must be true or false")),
            }
        };
        let positive = |field: &str, v: &Value| -> Result<u32> {
            v.as_u64()
                .filter(|&n| n > 0 && n <= 16384)
                .map(|n| n as u32)
                .ok_or_else(|| bad(field, "must be a positive integer"))
        };
        c.do_convert_rgb = flag("do_convert_rgb", true)?;
        c.do_resize = flag("do_resize", true)?;
        c.do_center_crop = flag("do_center_crop", true)?;
        c.do_rescale = flag("do_rescale", true)?;
        c.do_normalize = flag("do_normalize", true)?;
        match raw.get("size") {
            None | Some(Value::Null) => {}
            Some(v @ Value::Number(_)) => c.shortest_edge = positive("size", v)?,
            Some(Value::Object(m)) => {
                if let Some(v) = m.get("shortest_edge") {
                    c.shortest_edge = positive("size.shortest_edge", v)?;
                } else if let (Some(h), Some(w)) = (m.get("height"), m.get("width")) {
                    let (h, w) = (positive("size.height", h)?, positive("size.width", w)?);
                    if h != w {
                        return Err(bad(
                            "size",
                            "a fixed non-square resize is not supported; use shortest_edge",
                        ));
                    }
                    c.shortest_edge = h;
                } else {
                    return Err(bad("size", "expected shortest_edge or height/width"));
                }
            }
            Some(_) => return Err(bad("size", "expected a number or an object")),
        }
        match raw.get("crop_size") {
            None | Some(Value::Null) => c.crop_size = (c.shortest_edge, c.shortest_edge),
            Some(v @ Value::Number(_)) => {
                let s = positive("crop_size", v)?;
                c.crop_size = (s, s);
            }
            Some(Value::Object(m)) => {
                let h = m
                    .get("height")
                    .ok_or_else(|| bad("crop_size.height", "missing"))?;
                let w = m
                    .get("width")
                    .ok_or_else(|| bad("crop_size.width", "missing"))?;
                c.crop_size = (
                    positive("crop_size.height", h)?,
                    positive("crop_size.width", w)?,
                );
            }
            Some(_) => return Err(bad("crop_size", "expected a number or an object")),
        }
        if let Some(v) = raw.get("resample").filter(|v| !v.is_null()) {
            c.resample = v
                .as_i64()
                .and_then(Resample::from_pil_code)
                .ok_or_else(|| bad("resample", "expected a PIL filter code 0-5"))?;
        }
        if let Some(v) = raw.get("rescale_factor").filter(|v| !v.is_null()) {
            c.rescale_factor = v
                .as_f64()
                .filter(|f| f.is_finite() && *f > 0.0)
                .ok_or_else(|| bad("rescale_factor", "must be a positive number"))?
                as f32;
        }
        for (field, target) in [
            ("image_mean", &mut c.image_mean),
            ("image_std", &mut c.image_std),
        ] {
            if let Some(v) = raw.get(field).filter(|v| !v.is_null()) {
                let values: Vec<f64> = match v {
                    Value::Number(n) => vec![n.as_f64().unwrap_or(f64::NAN); 3],
                    Value::Array(a) => a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect(),
                    _ => vec![],
                };
                if values.len() != 3 || values.iter().any(|x| !x.is_finite()) {
                    return Err(bad(field, "expected three finite numbers"));
                }
                for (t, v) in target.iter_mut().zip(values) {
                    *t = v as f32;
                }
            }
        }
        if c.image_std.contains(&0.0) {
            return Err(bad("image_std", "contains zero"));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_layouts_parse_to_the_same_settings() {
        let p = Path::new("preprocessor_config.json");
        let legacy = json!({"size": 224, "crop_size": 224, "resample": 3,
            "image_mean": OPENAI_MEAN, "image_std": OPENAI_STD});
        let modern = json!({"size": {"shortest_edge": 224},
            "crop_size": {"height": 224, "width": 224}, "resample": 3});
        let a = PreprocessorConfig::from_json(&legacy, 336, p).unwrap();
        let b = PreprocessorConfig::from_json(&modern, 336, p).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.shortest_edge, 224);
        assert_eq!(a.crop_size, (224, 224));
    }

    #[test]
    fn bad_fields_are_named() {
        let p = Path::new("pp.json");
        for (raw, field) in [
            (json!({"size": -3}), "size"),
            (json!({"resample": 9}), "resample"),
            (json!({"image_std": [1.0, 0.0, 1.0]}), "image_std"),
            (json!({"image_mean": [1.0]}), "image_mean"),
            (json!({"do_resize": "yes"}), "do_resize"),
        ] {
            let err = PreprocessorConfig::from_json(&raw, 224, p).unwrap_err();
            assert!(err.to_string().contains(field), "{err}");
        }
    }
}
