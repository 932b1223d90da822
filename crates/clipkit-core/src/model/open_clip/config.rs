//! `open_clip_config.json`: open_clip's `model_cfg` (its `CLIPVisionCfg` / `CLIPTextCfg`
//! dataclasses, same field names and defaults) and `preprocess_cfg`, turned into the
//! [`ClipConfig`] of the equivalent transformers model plus what transformers' config cannot
//! say (text pooling, fixed-length prompts). Options open_clip has and clipkit does not run
//! (timm or Hugging Face towers, layer scale, attention pooling, …) are refused here, naming the
//! file and the field, rather than loaded as something else.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::config::{Activation, ClipConfig, ClipTextConfig, ClipVisionConfig};
use crate::error::{ClipError, Result};
use clipkit_image::config::{Resample, ResizeTarget};
use clipkit_image::PreprocessorConfig;

pub const CONFIG_FILE: &str = "open_clip_config.json";

/// An int or a pair of ints, as open_clip's `image_size` and `patch_size` may be.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Size {
    One(usize),
    Pair(Vec<usize>),
}

impl Size {
    /// The side of a square size; `None` for a non-square pair.
    fn square(&self) -> Option<usize> {
        match self {
            Size::One(n) => Some(*n),
            Size::Pair(v) if v.len() == 2 && v[0] == v[1] => Some(v[0]),
            Size::Pair(_) => None,
        }
    }
}

/// open_clip's `CLIPVisionCfg`, the fields clipkit reads (with open_clip's defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct VisionCfg {
    pub layers: Value,
    pub width: usize,
    pub head_width: usize,
    pub mlp_ratio: f64,
    pub patch_size: Size,
    pub image_size: Size,
    pub ls_init_value: Option<f64>,
    pub attentional_pool: bool,
    pub no_ln_pre: bool,
    pub pos_embed_type: String,
    pub final_ln_after_pool: bool,
    pub pool_type: String,
    pub act_kwargs: Option<Value>,
    pub norm_kwargs: Option<Value>,
    pub timm_model_name: Option<String>,
}

impl Default for VisionCfg {
    fn default() -> Self {
        Self {
            layers: Value::from(12),
            width: 768,
            head_width: 64,
            mlp_ratio: 4.0,
            patch_size: Size::One(16),
            image_size: Size::One(224),
            ls_init_value: None,
            attentional_pool: false,
            no_ln_pre: false,
            pos_embed_type: "learnable".into(),
            final_ln_after_pool: false,
            pool_type: "tok".into(),
            act_kwargs: None,
            norm_kwargs: None,
            timm_model_name: None,
        }
    }
}

/// open_clip's `CLIPTextCfg`, the fields clipkit reads (with open_clip's defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TextCfg {
    pub context_length: usize,
    pub vocab_size: usize,
    pub hf_tokenizer_name: Option<String>,
    pub tokenizer_kwargs: Option<Value>,
    pub width: usize,
    pub heads: usize,
    pub layers: usize,
    pub mlp_ratio: f64,
    pub ls_init_value: Option<f64>,
    pub embed_cls: bool,
    pub pad_id: u32,
    pub eos_id: u32,
    pub no_causal_mask: bool,
    pub final_ln_after_pool: bool,
    pub pool_type: String,
    pub proj_bias: bool,
    pub proj_type: String,
    pub act_kwargs: Option<Value>,
    pub norm_kwargs: Option<Value>,
    pub hf_model_name: Option<String>,
    /// How a Hugging Face text tower is pooled (`mean_pooler`, `cls_pooler`, …).
    pub hf_pooler_type: String,
    /// How a Hugging Face text tower is projected (`mlp`, `linear`; `null`: none).
    pub hf_proj_type: Option<String>,
}

impl Default for TextCfg {
    fn default() -> Self {
        Self {
            context_length: 77,
            vocab_size: 49408,
            hf_tokenizer_name: None,
            tokenizer_kwargs: None,
            width: 512,
            heads: 8,
            layers: 12,
            mlp_ratio: 4.0,
            ls_init_value: None,
            embed_cls: false,
            pad_id: 0,
            eos_id: 2,
            no_causal_mask: false,
            final_ln_after_pool: false,
            pool_type: "argmax".into(),
            proj_bias: false,
            proj_type: "linear".into(),
            act_kwargs: None,
            norm_kwargs: None,
            hf_model_name: None,
            hf_pooler_type: "mean_pooler".into(),
            hf_proj_type: Some("mlp".into()),
        }
    }
}

/// `model_cfg`.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelCfg {
    pub embed_dim: usize,
    #[serde(default)]
    pub quick_gelu: bool,
    #[serde(default)]
    pub vision_cfg: VisionCfg,
    #[serde(default)]
    pub text_cfg: TextCfg,
    #[serde(default)]
    pub custom_text: bool,
    #[serde(default)]
    pub multimodal_cfg: Option<Value>,
}

/// `preprocess_cfg` (open_clip's `PreprocessCfg`); `size` defaults to the model's image size.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PreprocessCfg {
    pub size: Option<Size>,
    pub mode: String,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub interpolation: String,
    pub resize_mode: String,
    pub fill_color: i64,
}

impl Default for PreprocessCfg {
    fn default() -> Self {
        let openai = PreprocessorConfig::openai(224);
        Self {
            size: None,
            mode: "RGB".into(),
            mean: openai.image_mean.iter().map(|&x| f64::from(x)).collect(),
            std: openai.image_std.iter().map(|&x| f64::from(x)).collect(),
            interpolation: "bicubic".into(),
            resize_mode: "shortest".into(),
            fill_color: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
struct File {
    model_cfg: Option<ModelCfg>,
    #[serde(default)]
    preprocess_cfg: PreprocessCfg,
}

/// How the text tower picks the token it pools (open_clip's `text_global_pool`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextPool {
    /// The highest token id (`argmax`, CLIP's end-of-text).
    Argmax,
    /// The first `eos_id` (`eos`).
    Eos(u32),
    /// The last position of the prompt padded to the context length (`last`).
    Last,
}

/// An `open_clip_config.json` read and checked.
#[derive(Debug, Clone)]
pub struct OpenClipConfig {
    pub path: PathBuf,
    pub model: ModelCfg,
    pub preprocess: PreprocessCfg,
    /// The equivalent transformers config, which the shared CLIP towers are built from.
    pub clip: ClipConfig,
    pub text_pool: TextPool,
}

impl OpenClipConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ClipError::io(path, e))?;
        let file: File = serde_json::from_str(&text).map_err(|source| ClipError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let model = file
            .model_cfg
            .ok_or_else(|| ClipError::config(path, "model_cfg", "missing"))?;
        let unsupported = |field: &str, what: String| Err(ClipError::config(path, field, what));
        let (v, t) = (&model.vision_cfg, &model.text_cfg);
        if model.multimodal_cfg.is_some() {
            return unsupported(
                "model_cfg.multimodal_cfg",
                "CoCa models are not supported".into(),
            );
        }
        if let Some(name) = &v.timm_model_name {
            return unsupported(
                "model_cfg.vision_cfg.timm_model_name",
                format!("`{name}`: timm image towers are not supported, only open_clip's ViT"),
            );
        }
        // A Hugging Face text tower (`text_cfg.hf_model_name`) is XLM-RoBERTa's, loaded by
        // `crate::model::xlm_roberta::open_clip`; the CLIP text fields below keep their
        // defaults then and are not used.
        let layers = v.layers.as_u64().filter(|&n| n > 0).map(|n| n as usize);
        let Some(vision_layers) = layers else {
            return unsupported(
                "model_cfg.vision_cfg.layers",
                format!(
                    "{}: only a ViT (a positive layer count) is supported, not a ResNet",
                    v.layers
                ),
            );
        };
        let checks: [(&str, bool, &str); 12] = [
            (
                "vision_cfg.ls_init_value",
                v.ls_init_value.is_some(),
                "layer scale is not supported",
            ),
            (
                "vision_cfg.attentional_pool",
                v.attentional_pool,
                "attention pooling is not supported",
            ),
            (
                "vision_cfg.no_ln_pre",
                v.no_ln_pre,
                "a tower without ln_pre is not supported",
            ),
            (
                "vision_cfg.pos_embed_type",
                v.pos_embed_type != "learnable",
                "only `learnable` is supported",
            ),
            (
                "vision_cfg.pool_type",
                v.pool_type != "tok",
                "only `tok` (class token) is supported",
            ),
            (
                "text_cfg.ls_init_value",
                t.ls_init_value.is_some(),
                "layer scale is not supported",
            ),
            (
                "text_cfg.embed_cls",
                t.embed_cls,
                "a text class token is not supported",
            ),
            (
                "text_cfg.no_causal_mask",
                t.no_causal_mask,
                "only causal text towers are supported",
            ),
            (
                "text_cfg.proj_bias",
                t.proj_bias,
                "a text projection with a bias is not supported",
            ),
            (
                "text_cfg.proj_type",
                t.proj_type != "linear",
                "only `linear` is supported",
            ),
            (
                "vision_cfg.act_kwargs",
                v.act_kwargs.is_some(),
                "custom activations are not supported",
            ),
            (
                "text_cfg.act_kwargs",
                t.act_kwargs.is_some(),
                "custom activations are not supported",
            ),
        ];
        for (field, bad, why) in checks {
            if bad {
                return unsupported(&format!("model_cfg.{field}"), why.to_string());
            }
        }
        let text_pool = match t.pool_type.as_str() {
            "argmax" => TextPool::Argmax,
            "eos" => TextPool::Eos(t.eos_id),
            "last" => TextPool::Last,
            other => {
                return unsupported(
                    "model_cfg.text_cfg.pool_type",
                    format!("`{other}` is not supported (expected argmax, eos or last)"),
                )
            }
        };
        let image_size = v.image_size.square().ok_or_else(|| {
            ClipError::config(
                path,
                "model_cfg.vision_cfg.image_size",
                "only square images are supported",
            )
        })?;
        let patch_size = v.patch_size.square().ok_or_else(|| {
            ClipError::config(
                path,
                "model_cfg.vision_cfg.patch_size",
                "only square patches are supported",
            )
        })?;
        if v.head_width == 0 || v.width % v.head_width != 0 {
            return unsupported(
                "model_cfg.vision_cfg.head_width",
                format!("{} does not divide width {}", v.head_width, v.width),
            );
        }
        let act = if model.quick_gelu {
            Activation::QuickGelu
        } else {
            Activation::Gelu
        };
        let eps = |kwargs: &Option<Value>, field: &str| -> Result<f64> {
            match kwargs {
                None => Ok(1e-5),
                Some(k) => k.get("eps").and_then(Value::as_f64).ok_or_else(|| {
                    ClipError::config(
                        path,
                        format!("model_cfg.{field}"),
                        "only `eps` is supported",
                    )
                }),
            }
        };
        let clip = ClipConfig {
            text_config: ClipTextConfig {
                vocab_size: t.vocab_size,
                hidden_size: t.width,
                intermediate_size: (t.width as f64 * t.mlp_ratio) as usize,
                num_hidden_layers: t.layers,
                num_attention_heads: t.heads,
                max_position_embeddings: t.context_length,
                hidden_act: act,
                layer_norm_eps: eps(&t.norm_kwargs, "text_cfg.norm_kwargs")?,
                pad_token_id: Some(t.pad_id),
                bos_token_id: None,
                eos_token_id: None,
            },
            vision_config: ClipVisionConfig {
                hidden_size: v.width,
                intermediate_size: (v.width as f64 * v.mlp_ratio) as usize,
                num_hidden_layers: vision_layers,
                num_attention_heads: v.width / v.head_width,
                num_channels: 3,
                image_size,
                patch_size,
                hidden_act: act,
                layer_norm_eps: eps(&v.norm_kwargs, "vision_cfg.norm_kwargs")?,
            },
            projection_dim: model.embed_dim,
            logit_scale_init_value: 2.6592,
        };
        clip.validate(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            model,
            preprocess: file.preprocess_cfg,
            clip,
            text_pool,
        })
    }

    /// open_clip's eval transform as clipkit's preprocessing settings.
    pub fn preprocessor(&self) -> Result<PreprocessorConfig> {
        let p = &self.preprocess;
        let path = &self.path;
        let size = match &p.size {
            None => self.clip.vision_config.image_size,
            Some(s) => s.square().ok_or_else(|| {
                ClipError::config(
                    path,
                    "preprocess_cfg.size",
                    "only square sizes are supported",
                )
            })?,
        };
        if size != self.clip.vision_config.image_size {
            return Err(ClipError::config(
                path,
                "preprocess_cfg.size",
                format!(
                    "{size} does not match the model's image_size {}",
                    self.clip.vision_config.image_size
                ),
            ));
        }
        let mut c = PreprocessorConfig::openai(size as u32);
        c.resample = match p.interpolation.as_str() {
            "bicubic" => Resample::Bicubic,
            "bilinear" => Resample::Bilinear,
            other => {
                return Err(ClipError::config(
                    path,
                    "preprocess_cfg.interpolation",
                    format!("`{other}` is not supported (expected bicubic or bilinear)"),
                ))
            }
        };
        let side = size as u32;
        c.resize = match p.resize_mode.as_str() {
            "shortest" => ResizeTarget::ShortestEdge(side),
            "squash" => ResizeTarget::Exact {
                height: side,
                width: side,
            },
            "longest" => ResizeTarget::Longest {
                height: side,
                width: side,
            },
            other => {
                return Err(ClipError::config(
                    path,
                    "preprocess_cfg.resize_mode",
                    format!("`{other}` is not supported (expected shortest, longest or squash)"),
                ))
            }
        };
        if p.fill_color != 0 {
            return Err(ClipError::config(
                path,
                "preprocess_cfg.fill_color",
                "only 0 is supported",
            ));
        }
        if p.mode != "RGB" {
            return Err(ClipError::config(
                path,
                "preprocess_cfg.mode",
                "only RGB is supported",
            ));
        }
        for (field, values, target) in [
            ("preprocess_cfg.mean", &p.mean, &mut c.image_mean),
            ("preprocess_cfg.std", &p.std, &mut c.image_std),
        ] {
            if values.len() != 3 || values.iter().any(|x| !x.is_finite()) {
                return Err(ClipError::config(
                    path,
                    field,
                    "expected three finite numbers",
                ));
            }
            for (t, v) in target.iter_mut().zip(values) {
                *t = *v as f32;
            }
        }
        if c.image_std.contains(&0.0) {
            return Err(ClipError::config(
                path,
                "preprocess_cfg.std",
                "contains zero",
            ));
        }
        Ok(c)
    }
}
