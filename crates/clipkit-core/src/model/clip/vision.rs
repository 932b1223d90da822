//! CLIP's image tower (`vision_model.*`): patches, a class token and positions, a
//! pre-LayerNorm, the encoder, and the post-LayerNorm class token as the pooled output.

use candle_core::{DType, Module, Tensor};
use candle_nn::LayerNorm;

use crate::config::ClipVisionConfig;
use crate::error::Result;
use crate::model::dense::{Dense, MatmulPath};
use crate::model::layers::{layer_norm, patches, rows_at, Encoder, Mask};
use crate::model::tower::{Embedded, Embeddings, TokenPooling, Tower};
use crate::weights::Scope;

pub type VisionTower = Tower<VisionEmbeddings>;

/// `vision_model` in scope `w`, projected by `visual_projection` (`projection`).
pub fn load(
    w: &Scope,
    c: &ClipVisionConfig,
    projection: Dense,
    path: MatmulPath,
) -> Result<VisionTower> {
    Ok(Tower::new(
        VisionEmbeddings::load(w, c, path)?,
        Encoder::load(&w.pp("encoder"), &c.encoder_shape(), path)?,
        TokenPooling {
            norm: layer_norm(&w.pp("post_layernorm"), c.hidden_size, c.layer_norm_eps)?,
        },
        Some(projection),
    ))
}

pub struct VisionEmbeddings {
    /// The patch convolution as a matrix `[hidden, 3·p·p]`: a stride-p conv is a matmul over
    /// non-overlapping patches, with no im2col copy.
    patch_embedding: Dense,
    class_embedding: Tensor,
    position_embedding: Tensor,
    /// Applied to the embeddings before the encoder ("layrnorm" is the Hugging Face name).
    pre_layrnorm: LayerNorm,
    patch_size: usize,
    grid: usize,
}

impl VisionEmbeddings {
    /// `embeddings.*` and `pre_layrnorm` in the tower's scope `w`.
    pub fn load(w: &Scope, c: &ClipVisionConfig, path: MatmulPath) -> Result<Self> {
        let (h, p) = (c.hidden_size, c.patch_size);
        let e = w.pp("embeddings");
        let conv = e.get("patch_embedding.weight", &[h, c.num_channels, p, p])?;
        Ok(Self {
            patch_embedding: Dense::new(conv.reshape((h, c.num_channels * p * p))?, None, path)?,
            class_embedding: e.get("class_embedding", &[h])?.reshape((1, 1, h))?,
            position_embedding: e
                .get("position_embedding.weight", &[c.num_patches() + 1, h])?
                .unsqueeze(0)?,
            pre_layrnorm: layer_norm(&w.pp("pre_layrnorm"), h, c.layer_norm_eps)?,
            patch_size: p,
            grid: c.image_size / p,
        })
    }
}

impl Embeddings for VisionEmbeddings {
    /// `[batch, 3, S, S]` pixel values.
    type Input = Tensor;

    /// → `[batch, patches + 1, hidden]`, pooled at each image's class token.
    fn forward(&self, pixel_values: &Tensor) -> Result<Embedded> {
        let b = pixel_values.dim(0)?;
        let g = self.grid;
        let embeds = self
            .patch_embedding
            .forward(&patches(pixel_values, g, self.patch_size)?)?;
        let hidden = embeds.dim(2)?;
        let cls = self.class_embedding.broadcast_as((b, 1, hidden))?;
        let xs = Tensor::cat(&[&cls, &embeds], 1)?;
        let xs = self
            .pre_layrnorm
            .forward(&xs.broadcast_add(&self.position_embedding)?)?;
        let seq = g * g + 1;
        Ok(Embedded {
            hidden: xs,
            mask: Mask::Full,
            pooled_rows: rows_at(seq, &vec![0; b]),
        })
    }

    fn dtype(&self) -> DType {
        self.position_embedding.dtype()
    }
}
