//! `config.json` of an XLM-RoBERTa (or RoBERTa) encoder, as transformers' `XLMRobertaConfig`
//! reads it, and the configs of the checkpoints open_clip names without shipping them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{Activation, EncoderShape};
use crate::error::{ClipError, Result};

/// transformers' `XLMRobertaConfig`, with its defaults for absent fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct XlmRobertaConfig {
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: Activation,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    /// Padding id, and RoBERTa's `padding_idx`: positions count from `pad_token_id + 1`.
    pub pad_token_id: u32,
    pub position_embedding_type: String,
}

impl Default for XlmRobertaConfig {
    fn default() -> Self {
        Self {
            model_type: None,
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: Activation::Gelu,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 1,
            position_embedding_type: "absolute".into(),
        }
    }
}

/// The `model_type`s whose encoder is this one (RoBERTa's position ids and post-LN layers).
/// BERT is not among them: its positions start at 0.
const MODEL_TYPES: [&str; 2] = ["xlm-roberta", "roberta"];

impl XlmRobertaConfig {
    /// Reads and validates `path` (a `config.json`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ClipError::io(path, e))?;
        let config: Self = serde_json::from_str(&text).map_err(|source| ClipError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// The configs of the hub checkpoints open_clip's multilingual models name in
    /// `hf_model_name` (`xlm-roberta-base`, `xlm-roberta-large`, as `FacebookAI/…` has them),
    /// so that those models load offline, without the text model's repository.
    pub fn known(name: &str) -> Option<Self> {
        let base = Self {
            model_type: Some("xlm-roberta".into()),
            vocab_size: 250002,
            max_position_embeddings: 514,
            type_vocab_size: 1,
            layer_norm_eps: 1e-5,
            ..Self::default()
        };
        match name.strip_prefix("FacebookAI/").unwrap_or(name) {
            "xlm-roberta-base" => Some(base),
            "xlm-roberta-large" => Some(Self {
                hidden_size: 1024,
                num_hidden_layers: 24,
                num_attention_heads: 16,
                intermediate_size: 4096,
                ..base
            }),
            _ => None,
        }
    }

    /// The encoder config another checkpoint names (open_clip's `hf_model_name`, M-CLIP's
    /// `modelBase`): a directory with a `config.json` (relative to `relative_to`, the naming
    /// checkpoint's directory), one of the [`known`](Self::known) names (offline), or a hub
    /// repository whose `config.json` is fetched (or found in the HF cache).
    pub fn resolve(name: &str, relative_to: &Path) -> Result<Self> {
        let local = relative_to.join(name).join("config.json");
        if local.is_file() {
            return Self::from_file(&local);
        }
        if let Some(config) = Self::known(name) {
            return Ok(config);
        }
        Self::from_file(&crate::hub::resolve_file(name, "config.json")?)
    }

    /// The `tokenizer.json` of the encoder `name` (as [`resolve`](Self::resolve) finds it):
    /// a directory's, or the hub repository's (`FacebookAI/…` for the bare legacy names).
    pub fn resolve_tokenizer(name: &str, relative_to: &Path) -> Result<std::path::PathBuf> {
        let local = relative_to.join(name).join("tokenizer.json");
        if local.is_file() {
            return Ok(local);
        }
        let repo = match Self::known(name) {
            Some(_) if !name.contains('/') => format!("FacebookAI/{name}"),
            _ => name.to_string(),
        };
        crate::hub::resolve_file(&repo, "tokenizer.json")
    }

    /// Checks what the tower relies on; `path` names the file in the error.
    pub fn validate(&self, path: &Path) -> Result<()> {
        if let Some(t) = self
            .model_type
            .as_deref()
            .filter(|t| !MODEL_TYPES.contains(t))
        {
            return Err(ClipError::config(
                path,
                "model_type",
                format!(
                    "`{t}` is not an XLM-RoBERTa encoder (expected one of: xlm-roberta, roberta)"
                ),
            ));
        }
        if self.position_embedding_type != "absolute" {
            return Err(ClipError::config(
                path,
                "position_embedding_type",
                format!(
                    "`{}`: only absolute positions are supported",
                    self.position_embedding_type
                ),
            ));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(ClipError::config(
                path,
                "num_attention_heads",
                format!(
                    "{} does not divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            ));
        }
        if self.type_vocab_size == 0 {
            return Err(ClipError::config(
                path,
                "type_vocab_size",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The longest input (special tokens included) the position table covers: positions run
    /// from `pad_token_id + 1`.
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings
            .saturating_sub(self.pad_token_id as usize + 1)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_names_have_the_hub_configs() {
        let base = XlmRobertaConfig::known("xlm-roberta-base").unwrap();
        assert_eq!((base.hidden_size, base.num_hidden_layers), (768, 12));
        assert_eq!((base.vocab_size, base.max_tokens()), (250002, 512));
        let large = XlmRobertaConfig::known("FacebookAI/xlm-roberta-large").unwrap();
        assert_eq!((large.hidden_size, large.num_hidden_layers), (1024, 24));
        assert_eq!(
            (large.num_attention_heads, large.intermediate_size),
            (16, 4096)
        );
        assert_eq!(large.layer_norm_eps, 1e-5);
        assert!(XlmRobertaConfig::known("bert-base-uncased").is_none());
    }

    #[test]
    fn a_config_of_another_encoder_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"model_type": "bert"}"#).unwrap();
        let err = XlmRobertaConfig::from_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("model_type"),
            "{err}"
        );
        std::fs::write(&path, r#"{"hidden_size": 30, "num_attention_heads": 4}"#).unwrap();
        let err = XlmRobertaConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("num_attention_heads"), "{err}");
    }
}
