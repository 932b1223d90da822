//! CLIP's text tower (`text_model.*`): token and position embeddings, a causal encoder, and
//! the final LayerNorm at the end-of-text token as the pooled output.

use candle_core::{DType, Tensor};

use crate::config::ClipTextConfig;
use crate::error::{ClipError, Result};
use crate::model::dense::{Dense, MatmulPath};
use crate::model::layers::{embed_padded, layer_norm, rows_at, Encoder, Mask};
use crate::model::tower::{Embedded, Embeddings, TextBatch, TextLayout, TokenPooling, Tower};
use crate::weights::Scope;

pub type TextTower = Tower<TextEmbeddings>;

/// `text_model` in scope `w`, projected by `text_projection` (`projection`).
pub fn load(
    w: &Scope,
    c: &ClipTextConfig,
    projection: Dense,
    path: MatmulPath,
) -> Result<TextTower> {
    Ok(Tower::new(
        TextEmbeddings::load(&w.pp("embeddings"), c)?,
        Encoder::load(&w.pp("encoder"), &c.encoder_shape(), path)?,
        TokenPooling {
            norm: layer_norm(&w.pp("final_layer_norm"), c.hidden_size, c.layer_norm_eps)?,
        },
        Some(projection),
    ))
}

pub struct TextEmbeddings {
    token_embedding: Tensor,
    position_embedding: Tensor,
}

impl TextEmbeddings {
    /// `token_embedding` and `position_embedding` in scope `w`.
    pub fn load(w: &Scope, c: &ClipTextConfig) -> Result<Self> {
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

    /// Padded batches (padding at the end never influences earlier positions under the causal
    /// mask, so no padding mask is needed) or packed ones (each sequence causal within itself).
    fn forward(&self, batch: &TextBatch) -> Result<Embedded> {
        let ids = &batch.ids;
        match &batch.layout {
            TextLayout::Padded { pool_positions } => {
                let len = ids.dim(1)?;
                Ok(Embedded {
                    hidden: embed_padded(&self.token_embedding, &self.position_embedding, ids)?,
                    mask: Mask::Causal,
                    pooled_rows: rows_at(len, pool_positions),
                })
            }
            TextLayout::Packed { lengths, pool_rows } => {
                let total = ids.dim(0)?;
                let positions: Vec<u32> = lengths.iter().flat_map(|&l| 0..l as u32).collect();
                if positions.len() != total {
                    return Err(ClipError::InvalidArgument {
                        what: "packed text batch",
                        value: format!("{total} ids"),
                        problem: format!("its lengths sum to {}", positions.len()),
                    });
                }
                let positions = Tensor::from_vec(positions, total, ids.device())?;
                let xs = (self.token_embedding.index_select(ids, 0)?
                    + self.position_embedding.index_select(&positions, 0)?)?
                .unsqueeze(0)?;
                Ok(Embedded {
                    hidden: xs,
                    mask: Mask::CausalPacked(lengths.clone()),
                    pooled_rows: pool_rows.clone(),
                })
            }
        }
    }

    fn dtype(&self) -> DType {
        self.position_embedding.dtype()
    }
}
