//! An XLM-RoBERTa text tower as the multilingual CLIPs use it: the encoder (transformers'
//! `XLMRobertaModel`), a pooling over its last hidden state, and a projection into the shared
//! space — open_clip's `HFTextEncoder` (`text.transformer.*`, `text.proj.*`), and M-CLIP's
//! mean pooling + `LinearTransformation`.
//!
//! Padding never reaches the encoder. transformers masks padding out as attention keys, skips
//! it when numbering positions and leaves it out of the mean, so a real token's output is the
//! same with or without the padding: each input's padding tokens (`pad_token_id` anywhere in
//! it) are dropped, and the real tokens run back to back under a block-diagonal mask on the
//! packed kernels, or padded at the end under a key-padding mask on candle.

use candle_core::{DType, Module, Tensor};
use candle_nn::LayerNorm;

use super::config::XlmRobertaConfig;
use super::encoder::BertEncoder;
use crate::config::Activation;
use crate::error::{ClipError, Result};
use crate::model::dense::{Dense, MatmulPath};
use crate::model::layers::{layer_norm, Mask};
use crate::model::tower::{TextBatch, TextLayout};
use crate::weights::Scope;

/// Word, position and token-type embeddings, summed and normalised (`embeddings.*`).
pub struct XlmRobertaEmbeddings {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    /// Row 0 of `token_type_embeddings`: a single text is all type 0.
    token_type: Tensor,
    norm: LayerNorm,
    /// RoBERTa's `padding_idx`: the first real token is at position `padding_idx + 1`.
    padding_idx: u32,
    max_positions: usize,
}

impl XlmRobertaEmbeddings {
    pub fn load(w: &Scope, c: &XlmRobertaConfig) -> Result<Self> {
        let h = c.hidden_size;
        let token_types = w.get("token_type_embeddings.weight", &[c.type_vocab_size, h])?;
        Ok(Self {
            word_embeddings: w.get("word_embeddings.weight", &[c.vocab_size, h])?,
            position_embeddings: w.get(
                "position_embeddings.weight",
                &[c.max_position_embeddings, h],
            )?,
            token_type: token_types.get(0)?,
            norm: layer_norm(&w.pp("LayerNorm"), h, c.layer_norm_eps)?,
            padding_idx: c.pad_token_id,
            max_positions: c.max_position_embeddings,
        })
    }

    /// `ids` and their `positions` (same shape, `[n]` or `[b, n]`) → `[…, hidden]`, summed in
    /// transformers' order (word + token type, then + position).
    fn forward(&self, ids: &Tensor, positions: &Tensor) -> Result<Tensor> {
        let gather = |table: &Tensor, index: &Tensor| -> Result<Tensor> {
            let mut dims = index.dims().to_vec();
            dims.push(table.dim(1)?);
            Ok(table
                .index_select(&index.flatten_all()?, 0)?
                .reshape(dims)?)
        };
        let xs = gather(&self.word_embeddings, ids)?.broadcast_add(&self.token_type)?;
        let xs = (xs + gather(&self.position_embeddings, positions)?)?;
        Ok(self.norm.forward(&xs)?)
    }
}

/// What an input is pooled to, by open_clip's pooler names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolerType {
    /// `mean_pooler`: the mean of the last hidden state over the real tokens.
    Mean,
    /// `cls_pooler`: the encoder's own pooler, `tanh(pooler.dense(h[<s>]))`.
    Cls,
    /// `cls_last_hidden_state_pooler`: the last hidden state at `<s>`.
    ClsLastHiddenState,
}

impl PoolerType {
    /// open_clip's `hf_pooler_type` → the pooling, `None` for a name it does not have (or
    /// `max_pooler`, which in open_clip fills the real tokens, not the padding, with -inf).
    pub fn from_open_clip(name: &str) -> Option<Self> {
        match name {
            "mean_pooler" => Some(Self::Mean),
            "cls_pooler" => Some(Self::Cls),
            "cls_last_hidden_state_pooler" => Some(Self::ClsLastHiddenState),
            _ => None,
        }
    }
}

/// The map from the pooled vector into the shared space.
pub enum Projection {
    /// The pooled vector is the embedding (open_clip: width equal to `embed_dim`, no
    /// `hf_proj_type`).
    Identity,
    /// open_clip's `linear` (`proj`, no bias); M-CLIP's `LinearTransformation` (with bias).
    Linear(Dense),
    /// open_clip's `mlp`: `proj.0` (no bias) → GELU → `proj.2` (no bias), hidden width
    /// `(width + embed_dim) / 2`.
    Mlp { fc1: Dense, fc2: Dense },
}

impl Projection {
    /// open_clip's `hf_proj_type` (`linear`, `mlp`, or none) from `width` to `embed_dim`, in
    /// scope `w` (`text.proj`); `None` for a type it does not know.
    pub fn load_open_clip(
        w: &Scope,
        proj_type: Option<&str>,
        width: usize,
        embed_dim: usize,
        path: MatmulPath,
    ) -> Result<Option<Self>> {
        Ok(Some(match proj_type {
            Some("linear") => Self::Linear(Dense::load(w, width, embed_dim, false, path)?),
            Some("mlp") => {
                let hidden = (width + embed_dim) / 2;
                Self::Mlp {
                    fc1: Dense::load(&w.pp(0), width, hidden, false, path)?,
                    fc2: Dense::load(&w.pp(2), hidden, embed_dim, false, path)?,
                }
            }
            None | Some("none") if width == embed_dim => Self::Identity,
            _ => return Ok(None),
        }))
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Identity => Ok(xs.clone()),
            Self::Linear(dense) => dense.forward(xs),
            Self::Mlp { fc1, fc2 } => fc2.forward(&fc1.forward_act(xs, Activation::Gelu)?),
        }
    }
}

/// Embeddings → post-LN encoder → pooling → projection.
pub struct XlmRobertaTextTower {
    embeddings: XlmRobertaEmbeddings,
    encoder: BertEncoder,
    pooler: PoolerType,
    /// `pooler.dense`, for [`PoolerType::Cls`].
    pooler_dense: Option<Dense>,
    projection: Projection,
    pad_id: u32,
    /// Whether the packed kernels run (then inputs go back to back, with no padding).
    packed: bool,
}

impl XlmRobertaTextTower {
    /// The encoder in scope `w` (open_clip's `text.transformer`, M-CLIP's `transformer`),
    /// pooled by `pooler` and projected by `projection`.
    pub fn load(
        w: &Scope,
        c: &XlmRobertaConfig,
        pooler: PoolerType,
        projection: Projection,
        path: MatmulPath,
    ) -> Result<Self> {
        let h = c.hidden_size;
        let pooler_dense = match pooler {
            PoolerType::Cls => Some(Dense::load(&w.pp("pooler").pp("dense"), h, h, true, path)?),
            _ => None,
        };
        Ok(Self {
            embeddings: XlmRobertaEmbeddings::load(&w.pp("embeddings"), c)?,
            encoder: BertEncoder::load(&w.pp("encoder"), &c.encoder_shape(), path)?,
            pooler,
            pooler_dense,
            projection,
            pad_id: c.pad_token_id,
            packed: path.is_packed(),
        })
    }

    /// The dtype the tower computes in (its weights').
    pub fn dtype(&self) -> DType {
        self.embeddings.word_embeddings.dtype()
    }

    /// The id that marks padding (and is masked wherever it occurs).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Projected, not yet normalised, features `[inputs, embedding_dim]` of a padded or packed
    /// batch (the batch's own pool positions are not read: the pooling is the tower's).
    pub fn forward(&self, batch: &TextBatch) -> Result<Tensor> {
        let pooled = self.pool(batch)?;
        self.projection.forward(&pooled)
    }

    /// The pooler's output `[inputs, hidden]`, before the projection.
    pub fn pool(&self, batch: &TextBatch) -> Result<Tensor> {
        let sequences = self.real_tokens(batch)?;
        let lengths: Vec<usize> = sequences.iter().map(Vec::len).collect();
        let device = batch.ids.device();
        let position = |k: usize| self.embeddings.padding_idx + 1 + k as u32;
        let (hidden, starts) = if self.packed {
            let total: usize = lengths.iter().sum();
            let flat: Vec<u32> = sequences.concat();
            let positions: Vec<u32> = lengths.iter().flat_map(|&l| (0..l).map(position)).collect();
            let ids = Tensor::from_vec(flat, total, device)?;
            let positions = Tensor::from_vec(positions, total, device)?;
            let xs = self.embeddings.forward(&ids, &positions)?.unsqueeze(0)?;
            let starts = lengths
                .iter()
                .scan(0, |acc, &l| {
                    let s = *acc;
                    *acc += l;
                    Some(s)
                })
                .collect::<Vec<_>>();
            (
                self.encoder.forward(&xs, &Mask::Packed(lengths.clone()))?,
                starts,
            )
        } else {
            let n = lengths.iter().copied().max().unwrap_or(0);
            let mut ids = Vec::with_capacity(n * lengths.len());
            let mut positions = Vec::with_capacity(n * lengths.len());
            for s in &sequences {
                ids.extend_from_slice(s);
                ids.extend(std::iter::repeat_n(self.pad_id, n - s.len()));
                positions.extend((0..s.len()).map(position));
                positions.extend(std::iter::repeat_n(
                    self.embeddings.padding_idx,
                    n - s.len(),
                ));
            }
            let b = lengths.len();
            let ids = Tensor::from_vec(ids, (b, n), device)?;
            let positions = Tensor::from_vec(positions, (b, n), device)?;
            let xs = self.embeddings.forward(&ids, &positions)?;
            let starts = (0..b).map(|i| i * n).collect();
            (
                self.encoder
                    .forward(&xs, &Mask::PaddedEnd(lengths.clone()))?,
                starts,
            )
        };
        let rows = hidden.reshape(((), hidden.dim(candle_core::D::Minus1)?))?;
        match self.pooler {
            PoolerType::Mean => {
                let means = starts
                    .iter()
                    .zip(&lengths)
                    .map(|(&start, &len)| {
                        let sum = rows.narrow(0, start, len)?.sum_keepdim(0)?;
                        sum.affine(1.0 / len as f64, 0.0)
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Ok(Tensor::cat(&means, 0)?)
            }
            PoolerType::Cls | PoolerType::ClsLastHiddenState => {
                let index: Vec<u32> = starts.iter().map(|&s| s as u32).collect();
                let index = Tensor::from_vec(index, starts.len(), device)?;
                let first = rows.index_select(&index, 0)?;
                match &self.pooler_dense {
                    Some(dense) => Ok(dense.forward(&first)?.tanh()?),
                    None => Ok(first),
                }
            }
        }
    }

    /// Each input's ids without its padding, checked to fit the position table.
    fn real_tokens(&self, batch: &TextBatch) -> Result<Vec<Vec<u32>>> {
        let ids = batch.ids.to_dtype(DType::U32)?;
        let rows: Vec<Vec<u32>> = match &batch.layout {
            TextLayout::Padded { .. } => ids.to_vec2::<u32>()?,
            TextLayout::Packed { lengths, .. } => {
                let flat = ids.to_vec1::<u32>()?;
                if lengths.iter().sum::<usize>() != flat.len() {
                    return Err(ClipError::InvalidArgument {
                        what: "packed text batch",
                        value: format!("{} ids", flat.len()),
                        problem: format!("its lengths sum to {}", lengths.iter().sum::<usize>()),
                    });
                }
                let mut rest = flat.as_slice();
                lengths
                    .iter()
                    .map(|&l| {
                        let (head, tail) = rest.split_at(l);
                        rest = tail;
                        head.to_vec()
                    })
                    .collect()
            }
        };
        let limit = self.embeddings.max_positions - self.embeddings.padding_idx as usize - 1;
        rows.into_iter()
            .map(|row| {
                let real: Vec<u32> = row.into_iter().filter(|&id| id != self.pad_id).collect();
                if real.is_empty() || real.len() > limit {
                    return Err(ClipError::InvalidArgument {
                        what: "text input",
                        value: format!("{} tokens", real.len()),
                        problem: format!(
                            "an XLM-RoBERTa tower takes 1 to {limit} tokens besides padding"
                        ),
                    });
                }
                Ok(real)
            })
            .collect()
    }
}
