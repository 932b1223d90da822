//! SigLIP's text tower (`text_model.*`): token and position embeddings, an encoder with full
//! (non-causal) attention and no padding mask over the prompt padded to
//! `max_position_embeddings` (as SigLIP was trained), `final_layer_norm` at the last position,
//! and `head`, a linear layer with bias into the shared space.

use candle_core::{DType, Tensor};

use super::config::SiglipTextConfig;
use crate::error::{ClipError, Result};
use crate::model::dense::{Dense, MatmulPath};
use crate::model::layers::{embed_padded, layer_norm, rows_at, Encoder, Mask};
use crate::model::tower::{Embedded, Embeddings, TextBatch, TextLayout, TokenPooling, Tower};
use crate::weights::Scope;

pub type TextTower = Tower<TextEmbeddings>;

/// `text_model` in scope `w`.
pub fn load(w: &Scope, c: &SiglipTextConfig, path: MatmulPath) -> Result<TextTower> {
    Ok(Tower::new(
        TextEmbeddings::load(&w.pp("embeddings"), c)?,
        Encoder::load(&w.pp("encoder"), &c.encoder_shape(), path)?,
        TokenPooling {
            norm: layer_norm(&w.pp("final_layer_norm"), c.hidden_size, c.layer_norm_eps)?,
        },
        Some(Dense::load(
            &w.pp("head"),
            c.hidden_size,
            c.projection_size(),
            true,
            path,
        )?),
    ))
}

pub struct TextEmbeddings {
    token_embedding: Tensor,
    position_embedding: Tensor,
}

impl TextEmbeddings {
    /// `token_embedding` and `position_embedding` in scope `w`.
    pub fn load(w: &Scope, c: &SiglipTextConfig) -> Result<Self> {
        Ok(Self {
            token_embedding: w.get("token_embedding.weight", &[c.vocab_size, c.hidden_size])?,
            position_embedding: w.get(
                "position_embedding.weight",
                &[c.max_position_embeddings, c.hidden_size],
            )?,
        })
    }
}

impl Embeddings for TextEmbeddings {
    type Input = TextBatch;

    /// Padded batches only: every position sees every other, padding included, so sequences
    /// cannot be packed.
    fn forward(&self, batch: &TextBatch) -> Result<Embedded> {
        let TextLayout::Padded { pool_positions } = &batch.layout else {
            return Err(ClipError::InvalidArgument {
                what: "SigLIP text batch",
                value: "packed".into(),
                problem: "SigLIP's text attention is not causal; prompts must be padded".into(),
            });
        };
        let len = batch.ids.dim(1)?;
        let max = self.position_embedding.dim(0)?;
        if len > max {
            return Err(ClipError::InvalidArgument {
                what: "SigLIP text batch",
                value: format!("{len} tokens"),
                problem: format!("more than the {max} positions the tower has"),
            });
        }
        Ok(Embedded {
            hidden: embed_padded(&self.token_embedding, &self.position_embedding, &batch.ids)?,
            mask: Mask::Full,
            pooled_rows: rows_at(len, pool_positions),
        })
    }

    fn dtype(&self) -> DType {
        self.position_embedding.dtype()
    }
}
