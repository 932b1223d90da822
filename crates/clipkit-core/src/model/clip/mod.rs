//! The CLIP family (transformers' `CLIPModel`): a ViT image tower pooled at the class token, a
//! causal text tower pooled at end-of-text, both projected without bias into one space;
//! `logits = exp(logit_scale)·cos`, probabilities by softmax over the labels.

pub mod text;
pub mod vision;

use candle_core::Tensor;

use super::dense::{Dense, MatmulPath};
use super::tower::{DualEncoder, Embeddings, TextBatch, TextInput, TextPoolingRule};
use crate::config::ClipConfig;
use crate::error::Result;
use crate::scoring::Scoring;
use crate::weights::Scope;

pub use text::TextTower;
pub use vision::VisionTower;

pub struct ClipModel {
    pub text: TextTower,
    pub vision: VisionTower,
    /// The learned temperature, already exponentiated (≈ 100 for the OpenAI checkpoints).
    logit_scale: f32,
    config: ClipConfig,
}

impl ClipModel {
    /// A whole `CLIPModel` checkpoint from its root scope `w`.
    pub fn load(w: &Scope, config: &ClipConfig, path: MatmulPath) -> Result<Self> {
        let (t, v) = (&config.text_config, &config.vision_config);
        let dim = config.projection_dim;
        let text_projection =
            Dense::load(&w.pp("text_projection"), t.hidden_size, dim, false, path)?;
        let visual_projection =
            Dense::load(&w.pp("visual_projection"), v.hidden_size, dim, false, path)?;
        Ok(Self {
            text: text::load(&w.pp("text_model"), t, text_projection, path)?,
            vision: vision::load(&w.pp("vision_model"), v, visual_projection, path)?,
            logit_scale: w.get_scalar("logit_scale")?.exp(),
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &ClipConfig {
        &self.config
    }
}

impl DualEncoder for ClipModel {
    fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let dtype = self.vision.embeddings().dtype();
        self.vision.forward(&pixel_values.to_dtype(dtype)?)
    }

    fn text_features(&self, batch: &TextBatch) -> Result<Tensor> {
        self.text.forward(batch)
    }

    fn text_input(&self) -> TextInput {
        TextInput {
            pooling: TextPoolingRule::EndOfText(self.config.eos_rule()),
            pad_to: None,
            causal: true,
        }
    }

    fn scoring(&self) -> Scoring {
        Scoring::Softmax {
            logit_scale: self.logit_scale,
        }
    }

    fn embedding_dim(&self) -> usize {
        self.config.projection_dim
    }

    fn image_size(&self) -> usize {
        self.config.vision_config.image_size
    }

    fn image_tokens(&self) -> usize {
        self.config.vision_config.num_patches() + 1
    }

    fn image_flops(&self) -> f64 {
        self.config.vision_config.flops_per_image()
    }
}
