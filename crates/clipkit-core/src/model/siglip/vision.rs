//! SigLIP's image tower (`vision_model.*`): patches (a convolution with bias) plus position
//! embeddings — no class token, no pre-LayerNorm — the encoder, then `post_layernorm` and the
//! attention-pooling head ([`AttentionPooling`]). No projection: the head's output is the
//! image embedding.

use candle_core::{DType, Tensor};

use super::config::SiglipVisionConfig;
use super::pooling::AttentionPooling;
use crate::error::Result;
use crate::model::dense::{Dense, MatmulPath};
use crate::model::layers::{patches, Encoder, Mask};
use crate::model::tower::{Embedded, Embeddings, Tower};
use crate::weights::Scope;

pub type VisionTower = Tower<VisionEmbeddings, AttentionPooling>;

/// `vision_model` in scope `w`.
pub fn load(w: &Scope, c: &SiglipVisionConfig, path: MatmulPath) -> Result<VisionTower> {
    Ok(Tower::new(
        VisionEmbeddings::load(&w.pp("embeddings"), c, path)?,
        Encoder::load(&w.pp("encoder"), &c.encoder_shape(), path)?,
        AttentionPooling::load(w, c, path)?,
        None,
    ))
}

pub struct VisionEmbeddings {
    /// The stride-p patch convolution as a matrix `[hidden, 3·p·p]` with its bias.
    patch_embedding: Dense,
    /// `[1, patches, hidden]`.
    position_embedding: Tensor,
    patch_size: usize,
    grid: usize,
}

impl VisionEmbeddings {
    /// `patch_embedding` and `position_embedding` in scope `w` (`vision_model.embeddings`).
    pub fn load(w: &Scope, c: &SiglipVisionConfig, path: MatmulPath) -> Result<Self> {
        let (h, p, ch) = (c.hidden_size, c.patch_size, c.num_channels);
        let conv = w.get("patch_embedding.weight", &[h, ch, p, p])?;
        let bias = w.get("patch_embedding.bias", &[h])?;
        Ok(Self {
            patch_embedding: Dense::new(conv.reshape((h, ch * p * p))?, Some(bias), path)?,
            position_embedding: w
                .get("position_embedding.weight", &[c.num_patches(), h])?
                .unsqueeze(0)?,
            patch_size: p,
            grid: c.image_size / p,
        })
    }
}

impl Embeddings for VisionEmbeddings {
    /// `[batch, 3, S, S]` pixel values.
    type Input = Tensor;

    /// → `[batch, patches, hidden]`; the attention head pools every token, so no pooled rows.
    fn forward(&self, pixel_values: &Tensor) -> Result<Embedded> {
        let xs = self
            .patch_embedding
            .forward(&patches(pixel_values, self.grid, self.patch_size)?)?
            .broadcast_add(&self.position_embedding)?;
        Ok(Embedded {
            hidden: xs,
            mask: Mask::Full,
            pooled_rows: Vec::new(),
        })
    }

    fn dtype(&self) -> DType {
        self.position_embedding.dtype()
    }
}
