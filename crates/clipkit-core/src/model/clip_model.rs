//! Both towers and their projections into the shared embedding space (`CLIPModel`).

use candle_core::Tensor;

use super::dense::{Dense, MatmulPath};
use super::{TextTransformer, VisionTransformer};
use crate::config::ClipConfig;
use crate::error::Result;
use crate::weights::Weights;

pub struct ClipModel {
    pub text: TextTransformer,
    pub vision: VisionTransformer,
    text_projection: Dense,
    visual_projection: Dense,
    /// The learned temperature, already exponentiated (≈ 100 for the OpenAI checkpoints).
    logit_scale: f32,
    config: ClipConfig,
    path: MatmulPath,
}

impl ClipModel {
    pub fn load(w: &Weights, config: &ClipConfig, path: MatmulPath) -> Result<Self> {
        let (t, v) = (&config.text_config, &config.vision_config);
        Ok(Self {
            text: TextTransformer::load(w, "text_model", t, path)?,
            vision: VisionTransformer::load(w, "vision_model", v, path)?,
            text_projection: Dense::load(
                w,
                "text_projection",
                t.hidden_size,
                config.projection_dim,
                false,
                path,
            )?,
            visual_projection: Dense::load(
                w,
                "visual_projection",
                v.hidden_size,
                config.projection_dim,
                false,
                path,
            )?,
            logit_scale: w.get_scalar("logit_scale")?.exp(),
            config: config.clone(),
            path,
        })
    }

    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// `exp(logit_scale)`: multiplies cosine similarities into logits.
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale
    }

    /// Projected, not yet normalised, image features `[batch, projection_dim]`.
    pub fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let pooled = self
            .vision
            .forward(&pixel_values.to_dtype(self.vision.dtype())?)?;
        self.visual_projection.forward(&pooled)
    }

    /// Whether the matmuls run on the packed CPU kernels (which take unpadded text batches).
    pub fn is_packed(&self) -> bool {
        self.path.is_packed()
    }

    /// [`text_features`](Self::text_features) of prompts packed back to back, unpadded (see
    /// [`TextTransformer::forward_packed`]).
    pub fn text_features_packed(
        &self,
        ids: &Tensor,
        lengths: &[usize],
        eos_rows: &[usize],
    ) -> Result<Tensor> {
        let pooled = self.text.forward_packed(ids, lengths, eos_rows)?;
        self.text_projection.forward(&pooled)
    }

    /// Projected, not yet normalised, text features `[batch, projection_dim]`.
    pub fn text_features(&self, ids: &Tensor, eos_positions: &[usize]) -> Result<Tensor> {
        let pooled = self.text.forward(ids, eos_positions)?;
        self.text_projection.forward(&pooled)
    }
}
