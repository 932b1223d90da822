//! The ViT image tower (`vision_model.*`).

use candle_core::{Module, Tensor};
use candle_nn::LayerNorm;

use super::dense::{Dense, MatmulPath};
use super::layers::{layer_norm, rows_at, Encoder, EncoderShape, Mask};
use crate::config::ClipVisionConfig;
use crate::error::Result;
use crate::weights::Weights;

pub struct VisionEmbeddings {
    /// The patch convolution as a matrix `[hidden, 3·p·p]`: a stride-p conv is a matmul over
    /// non-overlapping patches, with no im2col copy.
    patch_embedding: Dense,
    class_embedding: Tensor,
    position_embedding: Tensor,
    patch_size: usize,
    grid: usize,
}

impl VisionEmbeddings {
    pub fn load(w: &Weights, prefix: &str, c: &ClipVisionConfig, path: MatmulPath) -> Result<Self> {
        let (h, p) = (c.hidden_size, c.patch_size);
        let conv = w.get(
            &format!("{prefix}.patch_embedding.weight"),
            &[h, c.num_channels, p, p],
        )?;
        Ok(Self {
            patch_embedding: Dense::new(conv.reshape((h, c.num_channels * p * p))?, None, path)?,
            class_embedding: w
                .get(&format!("{prefix}.class_embedding"), &[h])?
                .reshape((1, 1, h))?,
            position_embedding: w
                .get(
                    &format!("{prefix}.position_embedding.weight"),
                    &[c.num_patches() + 1, h],
                )?
                .unsqueeze(0)?,
            patch_size: p,
            grid: c.image_size / p,
        })
    }

    /// `[batch, 3, S, S]` → `[batch, patches + 1, hidden]`.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (b, ch, _, _) = pixel_values.dims4()?;
        let (g, p) = (self.grid, self.patch_size);
        let patches = pixel_values
            .reshape((b, ch, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, g * g, ch * p * p))?;
        let embeds = self.patch_embedding.forward(&patches)?;
        let hidden = embeds.dim(2)?;
        let cls = self.class_embedding.broadcast_as((b, 1, hidden))?;
        let xs = Tensor::cat(&[&cls, &embeds], 1)?;
        Ok(xs.broadcast_add(&self.position_embedding)?)
    }
}

pub struct VisionTransformer {
    embeddings: VisionEmbeddings,
    pre_layrnorm: LayerNorm,
    encoder: Encoder,
    post_layernorm: LayerNorm,
    config: ClipVisionConfig,
}

impl VisionTransformer {
    pub fn load(w: &Weights, prefix: &str, c: &ClipVisionConfig, path: MatmulPath) -> Result<Self> {
        let shape = EncoderShape {
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            heads: c.num_attention_heads,
            layers: c.num_hidden_layers,
            eps: c.layer_norm_eps,
            act: c.hidden_act,
            path,
        };
        Ok(Self {
            embeddings: VisionEmbeddings::load(w, &format!("{prefix}.embeddings"), c, path)?,
            // "layrnorm" is the Hugging Face weight name.
            pre_layrnorm: layer_norm(
                w,
                &format!("{prefix}.pre_layrnorm"),
                c.hidden_size,
                c.layer_norm_eps,
            )?,
            encoder: Encoder::load(w, &format!("{prefix}.encoder"), &shape)?,
            post_layernorm: layer_norm(
                w,
                &format!("{prefix}.post_layernorm"),
                c.hidden_size,
                c.layer_norm_eps,
            )?,
            config: c.clone(),
        })
    }

    /// The dtype inputs must have (the weights').
    pub fn dtype(&self) -> candle_core::DType {
        self.embeddings.position_embedding.dtype()
    }

    pub fn config(&self) -> &ClipVisionConfig {
        &self.config
    }

    /// `[batch, 3, S, S]` → pooled `[batch, hidden]` (post-LN class token).
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let xs = self.embeddings.forward(pixel_values)?;
        let xs = self.pre_layrnorm.forward(&xs)?;
        let (b, seq, _) = xs.dims3()?;
        let cls = self
            .encoder
            .forward_pooled(&xs, &Mask::Full, &rows_at(seq, &vec![0; b]))?;
        Ok(self.post_layernorm.forward(&cls)?)
    }
}
