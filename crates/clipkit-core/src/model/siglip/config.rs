//! `config.json` of a transformers `SiglipModel` checkpoint (`model_type: siglip`, SigLIP and
//! SigLIP 2 FixRes). Field names and defaults are those of transformers' `SiglipTextConfig` and
//! `SiglipVisionConfig`, so a config that omits a field means what it means to transformers.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{check_dual_towers, Activation, DualTowerShape, EncoderShape};
use crate::error::{ClipError, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SiglipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// The length every prompt is padded to (64): the text tower pools at its last position.
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    pub pad_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// Width of `text_model.head` (the shared space); `None` means `hidden_size`, as in
    /// transformers. siglip2-giant-opt's text tower is wider than its image tower.
    pub projection_size: Option<usize>,
}

impl Default for SiglipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 32000,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 64,
            hidden_act: Activation::GeluNew,
            layer_norm_eps: 1e-6,
            pad_token_id: Some(1),
            eos_token_id: Some(49407),
            projection_size: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SiglipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    /// Whether the tower ends in the attention-pooling head (every `SiglipModel` does).
    pub vision_use_head: bool,
}

impl Default for SiglipVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 16,
            hidden_act: Activation::GeluNew,
            layer_norm_eps: 1e-6,
            vision_use_head: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SiglipConfig {
    #[serde(default)]
    pub text_config: SiglipTextConfig,
    #[serde(default)]
    pub vision_config: SiglipVisionConfig,
}

fn shape(
    hidden: usize,
    intermediate: usize,
    heads: usize,
    layers: usize,
    eps: f64,
    act: Activation,
) -> EncoderShape {
    EncoderShape {
        hidden,
        intermediate,
        heads,
        layers,
        eps,
        act,
    }
}

impl SiglipTextConfig {
    pub fn encoder_shape(&self) -> EncoderShape {
        shape(
            self.hidden_size,
            self.intermediate_size,
            self.num_attention_heads,
            self.num_hidden_layers,
            self.layer_norm_eps,
            self.hidden_act,
        )
    }

    pub fn projection_size(&self) -> usize {
        self.projection_size.unwrap_or(self.hidden_size)
    }
}

impl SiglipVisionConfig {
    pub fn encoder_shape(&self) -> EncoderShape {
        shape(
            self.hidden_size,
            self.intermediate_size,
            self.num_attention_heads,
            self.num_hidden_layers,
            self.layer_norm_eps,
            self.hidden_act,
        )
    }

    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Multiply-adds ×2 of one image: patches, encoder, and the attention-pooling head (one
    /// query over every patch, its MLP).
    pub fn flops_per_image(&self) -> f64 {
        let n = self.num_patches() as f64;
        let h = self.hidden_size as f64;
        let i = self.intermediate_size as f64;
        let patch = (self.num_channels * self.patch_size * self.patch_size) as f64;
        let per_layer = n * (4.0 * h * h + 2.0 * h * i) + 2.0 * n * n * h;
        let head = 2.0 * n * h * h + 2.0 * h * h + 2.0 * n * h + 2.0 * h * i;
        2.0 * (n * patch * h + self.num_hidden_layers as f64 * per_layer + head)
    }
}

impl SiglipConfig {
    /// Reads and validates a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ClipError::io(path, e))?;
        let config: Self = serde_json::from_str(&text).map_err(|source| ClipError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks the invariants the model code relies on, naming the field that breaks one.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let (t, v) = (&self.text_config, &self.vision_config);
        let positive = [
            ("text_config.vocab_size", t.vocab_size),
            ("text_config.hidden_size", t.hidden_size),
            ("text_config.intermediate_size", t.intermediate_size),
            ("text_config.num_hidden_layers", t.num_hidden_layers),
            ("text_config.num_attention_heads", t.num_attention_heads),
            (
                "text_config.max_position_embeddings",
                t.max_position_embeddings,
            ),
            ("text_config.projection_size", t.projection_size()),
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
        if !v.vision_use_head {
            return Err(ClipError::config(
                path,
                "vision_config.vision_use_head",
                "is false: a SigLIP image embedding is the attention-pooling head's output",
            ));
        }
        if t.projection_size() != v.hidden_size {
            return Err(ClipError::config(
                path,
                "text_config.projection_size",
                format!(
                    "{} differs from the image embedding width (vision hidden_size {})",
                    t.projection_size(),
                    v.hidden_size
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_transformers_and_projection_follows_hidden() {
        let c: SiglipConfig =
            serde_json::from_str(r#"{"text_config": {"hidden_size": 48}}"#).expect("parses");
        assert_eq!(c.text_config.max_position_embeddings, 64);
        assert_eq!(c.text_config.layer_norm_eps, 1e-6);
        assert_eq!(c.text_config.hidden_act, Activation::GeluNew);
        assert_eq!(c.text_config.projection_size(), 48);
        assert_eq!(c.vision_config.patch_size, 16);
        let err = c
            .validate(Path::new("config.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("projection_size"), "{err}");
    }
}
