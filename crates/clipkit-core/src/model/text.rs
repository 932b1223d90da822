//! The causal text transformer (`text_model.*`).

use candle_core::{Module, Tensor};
use candle_nn::LayerNorm;

use super::dense::MatmulPath;
use super::layers::{layer_norm, rows_at, Encoder, EncoderShape, Mask};
use crate::config::ClipTextConfig;
use crate::error::Result;
use crate::weights::Weights;

pub struct TextTransformer {
    token_embedding: Tensor,
    position_embedding: Tensor,
    encoder: Encoder,
    final_layer_norm: LayerNorm,
    config: ClipTextConfig,
}

impl TextTransformer {
    pub fn load(w: &Weights, prefix: &str, c: &ClipTextConfig, path: MatmulPath) -> Result<Self> {
        let shape = EncoderShape {
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            heads: c.num_attention_heads,
            layers: c.num_hidden_layers,
            eps: c.layer_norm_eps,
            act: c.hidden_act,
            path,
        };
        let emb = format!("{prefix}.embeddings");
        Ok(Self {
            token_embedding: w.get(
                &format!("{emb}.token_embedding.weight"),
                &[c.vocab_size, c.hidden_size],
            )?,
            position_embedding: w.get(
                &format!("{emb}.position_embedding.weight"),
                &[c.max_position_embeddings, c.hidden_size],
            )?,
            encoder: Encoder::load(w, &format!("{prefix}.encoder"), &shape)?,
            final_layer_norm: layer_norm(
                w,
                &format!("{prefix}.final_layer_norm"),
                c.hidden_size,
                c.layer_norm_eps,
            )?,
            config: c.clone(),
        })
    }

    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// `ids`: `[batch, len]` (padded at the end; padding never influences earlier positions
    /// under the causal mask, so no padding mask is needed) → pooled `[batch, hidden]` at
    /// `eos_positions`.
    pub fn forward(&self, ids: &Tensor, eos_positions: &[usize]) -> Result<Tensor> {
        let (b, len) = ids.dims2()?;
        let tokens = self
            .token_embedding
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, len, self.config.hidden_size))?;
        let positions = self.position_embedding.narrow(0, 0, len)?.unsqueeze(0)?;
        let xs = tokens.broadcast_add(&positions)?;
        // LayerNorm is per token: normalising only the pooled rows gives the same result.
        let pooled =
            self.encoder
                .forward_pooled(&xs, &Mask::Causal, &rows_at(len, eos_positions))?;
        Ok(self.final_layer_norm.forward(&pooled)?)
    }
}

impl TextTransformer {
    /// Prompts of different lengths back to back, without padding: `ids` `[Σ lengths]`,
    /// pooled at the absolute rows `eos_rows` → `[prompts, hidden]`. Same result as
    /// [`forward`](Self::forward) on a padded batch; every matmul row is a real token.
    pub fn forward_packed(
        &self,
        ids: &Tensor,
        lengths: &[usize],
        eos_rows: &[usize],
    ) -> Result<Tensor> {
        let total = ids.dim(0)?;
        let device = ids.device();
        let positions: Vec<u32> = lengths.iter().flat_map(|&l| 0..l as u32).collect();
        if positions.len() != total {
            return Err(candle_core::Error::Msg(format!(
                "packed text: lengths sum to {}, ids has {total}",
                positions.len()
            ))
            .into());
        }
        let positions = Tensor::from_vec(positions, total, device)?;
        let xs = (self.token_embedding.index_select(ids, 0)?
            + self.position_embedding.index_select(&positions, 0)?)?
        .unsqueeze(0)?;
        let pooled =
            self.encoder
                .forward_pooled(&xs, &Mask::CausalPacked(lengths.to_vec()), eos_rows)?;
        Ok(self.final_layer_norm.forward(&pooled)?)
    }
}
