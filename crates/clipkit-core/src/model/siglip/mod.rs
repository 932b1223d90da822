//! The SigLIP family (transformers' `SiglipModel`, `model_type: siglip`: SigLIP and SigLIP 2
//! FixRes): an image tower pooled by a multi-head attention head, a text tower with full
//! attention over the prompt padded to 64 and pooled at its last position;
//! `logits = exp(logit_scale)·cos + logit_bias`, probabilities by an element-wise sigmoid.

pub mod config;
pub mod pooling;
pub mod text;
pub mod vision;

use candle_core::Tensor;

use super::dense::MatmulPath;
use super::tower::{DualEncoder, Embeddings, TextBatch, TextInput, TextPoolingRule};
use crate::error::Result;
use crate::scoring::Scoring;
use crate::weights::Scope;

pub use config::{SiglipConfig, SiglipTextConfig, SiglipVisionConfig};
pub use text::TextTower;
pub use vision::VisionTower;

pub struct SiglipModel {
    pub text: TextTower,
    pub vision: VisionTower,
    /// `exp(logit_scale)`.
    logit_scale: f32,
    logit_bias: f32,
    config: SiglipConfig,
}

impl SiglipModel {
    /// A whole `SiglipModel` checkpoint from its root scope `w`.
    pub fn load(w: &Scope, config: &SiglipConfig, path: MatmulPath) -> Result<Self> {
        Ok(Self {
            text: text::load(&w.pp("text_model"), &config.text_config, path)?,
            vision: vision::load(&w.pp("vision_model"), &config.vision_config, path)?,
            logit_scale: w.get_scalar("logit_scale")?.exp(),
            logit_bias: w.get_scalar("logit_bias")?,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &SiglipConfig {
        &self.config
    }
}

impl DualEncoder for SiglipModel {
    fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let dtype = self.vision.embeddings().dtype();
        self.vision.forward(&pixel_values.to_dtype(dtype)?)
    }

    fn text_features(&self, batch: &TextBatch) -> Result<Tensor> {
        self.text.forward(batch)
    }

    fn text_input(&self) -> TextInput {
        TextInput {
            pooling: TextPoolingRule::Last,
            pad_to: Some(self.config.text_config.max_position_embeddings),
            causal: false,
        }
    }

    fn scoring(&self) -> Scoring {
        Scoring::Sigmoid {
            logit_scale: self.logit_scale,
            logit_bias: self.logit_bias,
        }
    }

    fn embedding_dim(&self) -> usize {
        self.config.vision_config.hidden_size
    }

    fn image_size(&self) -> usize {
        self.config.vision_config.image_size
    }

    fn image_tokens(&self) -> usize {
        self.config.vision_config.num_patches()
    }

    fn image_flops(&self) -> f64 {
        self.config.vision_config.flops_per_image()
    }
}
