//! `config.json` of a Hugging Face CLIP checkpoint.
//!
//! Field names and defaults follow transformers' `CLIPConfig`, `CLIPTextConfig` and
//! `CLIPVisionConfig`, so any config-compatible directory loads, and a config that omits a field
//! means what it means to transformers. Values are validated on load: a checkpoint whose config
//! is inconsistent fails here, naming the field, instead of producing garbage later.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ClipError, Result};

/// The activation function between the two MLP layers (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`: what the OpenAI checkpoints were trained with.
    QuickGelu,
    /// The exact (erf) GELU, `transformers`' `"gelu"`.
    Gelu,
    /// The tanh approximation (`"gelu_new"`, `"gelu_pytorch_tanh"`).
    #[serde(alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluNew,
    Relu,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    pub pad_token_id: Option<u32>,
    pub bos_token_id: Option<u32>,
    /// `2` in the original OpenAI configs; transformers then pools at the argmax token id
    /// (the end-of-text token has the highest id). Any other value: the first occurrence.
    pub eos_token_id: Option<u32>,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            pad_token_id: Some(1),
            bos_token_id: Some(49406),
            eos_token_id: Some(49407),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}

/// The sizes an encoder stack is built from: what every family's tower configs share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderShape {
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub layers: usize,
    pub eps: f64,
    pub act: Activation,
}

/// `encoder_shape()` for tower configs that use transformers' field names for the encoder
/// (`hidden_size`, `intermediate_size`, `num_attention_heads`, `num_hidden_layers`,
/// `layer_norm_eps`, `hidden_act`), as CLIP's and SigLIP's do.
macro_rules! encoder_shape_from_hf_fields {
    ($($config:ty),+) => {$(
        impl $config {
            pub fn encoder_shape(&self) -> EncoderShape {
                EncoderShape {
                    hidden: self.hidden_size,
                    intermediate: self.intermediate_size,
                    heads: self.num_attention_heads,
                    layers: self.num_hidden_layers,
                    eps: self.layer_norm_eps,
                    act: self.hidden_act,
                }
            }
        }
    )+};
}

encoder_shape_from_hf_fields!(ClipTextConfig, ClipVisionConfig);

impl ClipVisionConfig {
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Multiply-adds of one image through the tower, times two (what "GFLOP" usually means),
    /// counted as transformers runs it: clipkit skips the last layer's unpooled rows (6% on
    /// ViT-B/32), so its GFLOP/s are effective rates, comparable with other engines'.
    pub fn flops_per_image(&self) -> f64 {
        let n = (self.num_patches() + 1) as f64;
        let h = self.hidden_size as f64;
        let i = self.intermediate_size as f64;
        let patch = (self.num_channels * self.patch_size * self.patch_size) as f64;
        let per_layer = n * (4.0 * h * h + 2.0 * h * i) + 2.0 * n * n * h;
        2.0 * (self.num_patches() as f64 * patch * h + self.num_hidden_layers as f64 * per_layer)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    #[serde(default, alias = "text_config_dict")]
    pub text_config: ClipTextConfig,
    #[serde(default, alias = "vision_config_dict")]
    pub vision_config: ClipVisionConfig,
    #[serde(default = "default_projection_dim")]
    pub projection_dim: usize,
    #[serde(default = "default_logit_scale")]
    pub logit_scale_init_value: f64,
}

fn default_projection_dim() -> usize {
    512
}

fn default_logit_scale() -> f64 {
    2.6592
}

impl ClipConfig {
    /// Reads and validates a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ClipError::io(path, e))?;
        let mut raw: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ClipError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        // Old exports carry both `text_config` and `text_config_dict`, one of them null.
        if let Some(obj) = raw.as_object_mut() {
            for key in ["text_config", "vision_config"] {
                let dict_key = format!("{key}_dict");
                let is_null = obj.get(key).is_none_or(|v| v.is_null());
                if is_null {
                    obj.remove(key);
                    if let Some(v) = obj.remove(&dict_key).filter(|v| !v.is_null()) {
                        obj.insert(key.to_string(), v);
                    }
                } else {
                    obj.remove(&dict_key);
                }
            }
        }
        let config: Self = serde_json::from_value(raw).map_err(|source| ClipError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks the invariants the model code relies on.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let t = &self.text_config;
        let v = &self.vision_config;
        let positive = [
            ("projection_dim", self.projection_dim),
            ("text_config.vocab_size", t.vocab_size),
            ("text_config.hidden_size", t.hidden_size),
            ("text_config.intermediate_size", t.intermediate_size),
            ("text_config.num_hidden_layers", t.num_hidden_layers),
            ("text_config.num_attention_heads", t.num_attention_heads),
            (
                "text_config.max_position_embeddings",
                t.max_position_embeddings,
            ),
            ("vision_config.hidden_size", v.hidden_size),
            ("vision_config.intermediate_size", v.intermediate_size),
            ("vision_config.num_hidden_layers", v.num_hidden_layers),
            ("vision_config.num_attention_heads", v.num_attention_heads),
            ("vision_config.image_size", v.image_size),
            ("vision_config.patch_size", v.patch_size),
        ];
        check_dual_towers(
            path,
            &positive,
            DualTowerShape {
                num_channels: v.num_channels,
                image_size: v.image_size,
                patch_size: v.patch_size,
                text: (t.hidden_size, t.num_attention_heads, t.layer_norm_eps),
                vision: (v.hidden_size, v.num_attention_heads, v.layer_norm_eps),
            },
        )?;
        if !self.logit_scale_init_value.is_finite() {
            return Err(ClipError::config(
                path,
                "logit_scale_init_value",
                "is not finite",
            ));
        }
        if t.max_position_embeddings < 2 {
            return Err(ClipError::config(
                path,
                "text_config.max_position_embeddings",
                "must leave room for the start and end tokens",
            ));
        }
        Ok(())
    }

    /// The pooling rule transformers applies: legacy configs (`eos_token_id == 2`) pool at
    /// the highest token id, others at the first `eos_token_id`.
    pub fn eos_rule(&self) -> EosRule {
        match self.text_config.eos_token_id {
            Some(2) | None => EosRule::ArgmaxId,
            Some(id) => EosRule::FirstId(id),
        }
    }
}

/// Where the text tower reads its pooled output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EosRule {
    ArgmaxId,
    FirstId(u32),
}

impl EosRule {
    /// The position to pool for one (unpadded or end-padded) id sequence.
    pub fn position(&self, ids: &[u32]) -> usize {
        match *self {
            EosRule::ArgmaxId => {
                let mut best = 0;
                for (i, &id) in ids.iter().enumerate() {
                    if id > ids[best] {
                        best = i;
                    }
                }
                best
            }
            EosRule::FirstId(eos) => ids.iter().position(|&id| id == eos).unwrap_or(0),
        }
    }
}

/// What the families' configs share that the towers rely on: an RGB patch embedding that
/// tiles the image, and per tower `(hidden_size, num_attention_heads, layer_norm_eps)`.
pub(crate) struct DualTowerShape {
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub text: (usize, usize, f64),
    pub vision: (usize, usize, f64),
}

/// The checks every transformers-style dual-tower config needs, naming the field that breaks
/// one: the `positive` sizes, RGB input, heads dividing the width, patches tiling the image,
/// LayerNorm epsilons positive and finite.
pub(crate) fn check_dual_towers(
    path: &Path,
    positive: &[(&'static str, usize)],
    shape: DualTowerShape,
) -> Result<()> {
    for &(field, value) in positive {
        if value == 0 {
            return Err(ClipError::config(path, field, "must be positive"));
        }
    }
    if shape.num_channels != 3 {
        return Err(ClipError::config(
            path,
            "vision_config.num_channels",
            format!("is {}, only RGB (3) is supported", shape.num_channels),
        ));
    }
    for (field, hidden, heads) in [
        ("text_config", shape.text.0, shape.text.1),
        ("vision_config", shape.vision.0, shape.vision.1),
    ] {
        if hidden % heads != 0 {
            return Err(ClipError::config(
                path,
                format!("{field}.num_attention_heads"),
                format!("{heads} heads do not divide hidden_size {hidden}"),
            ));
        }
    }
    if !shape.image_size.is_multiple_of(shape.patch_size) {
        return Err(ClipError::config(
            path,
            "vision_config.patch_size",
            format!(
                "patch size {} does not divide image size {}",
                shape.patch_size, shape.image_size
            ),
        ));
    }
    for (field, eps) in [
        ("text_config.layer_norm_eps", shape.text.2),
        ("vision_config.layer_norm_eps", shape.vision.2),
    ] {
        if !eps.is_finite() || eps <= 0.0 {
            return Err(ClipError::config(
                path,
                field,
                format!("{eps} is not a positive finite number"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ClipConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, json).unwrap();
        ClipConfig::from_file(&path)
    }

    #[test]
    fn empty_config_gives_vit_b32_defaults() {
        let c = parse("{}").unwrap();
        assert_eq!(c.vision_config.patch_size, 32);
        assert_eq!(c.text_config.hidden_size, 512);
        assert_eq!(c.projection_dim, 512);
        assert!((c.vision_config.flops_per_image() / 1e9 - 8.8).abs() < 0.1);
    }

    #[test]
    fn legacy_dict_keys_are_read() {
        let c = parse(
            r#"{"text_config": null, "text_config_dict": {"hidden_size": 64, "num_attention_heads": 4},
                "vision_config_dict": {"patch_size": 16, "hidden_act": "gelu"}}"#,
        )
        .unwrap();
        assert_eq!(c.text_config.hidden_size, 64);
        assert_eq!(c.vision_config.patch_size, 16);
        assert_eq!(c.vision_config.hidden_act, Activation::Gelu);
    }

    #[test]
    fn nan_and_inconsistent_fields_are_named() {
        let err = parse(r#"{"text_config": {"layer_norm_eps": NaN}}"#).unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
        let err = parse(r#"{"vision_config": {"hidden_size": 100, "num_attention_heads": 12}}"#)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("vision_config.num_attention_heads"),
            "{err}"
        );
        let err = parse(r#"{"vision_config": {"image_size": 100, "patch_size": 32}}"#).unwrap_err();
        assert!(
            err.to_string().contains("vision_config.patch_size"),
            "{err}"
        );
        let err = parse(r#"{"text_config": {"hidden_act": "swishy"}}"#).unwrap_err();
        assert!(err.to_string().contains("swishy"), "{err}");
        let err = parse(r#"{"text_config": {"layer_norm_eps": -1.0}}"#).unwrap_err();
        assert!(err.to_string().contains("layer_norm_eps"), "{err}");
    }

    #[test]
    fn eos_rules_follow_transformers() {
        let ids = [49406, 320, 1125, 49407, 49407, 49407];
        assert_eq!(EosRule::ArgmaxId.position(&ids), 3);
        assert_eq!(EosRule::FirstId(49407).position(&ids), 3);
        let c = parse(r#"{"text_config": {"eos_token_id": 2}}"#).unwrap();
        assert_eq!(c.eos_rule(), EosRule::ArgmaxId);
        let c = parse(r#"{"text_config": {"eos_token_id": 49407}}"#).unwrap();
        assert_eq!(c.eos_rule(), EosRule::FirstId(49407));
    }
}
