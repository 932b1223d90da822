//! The shape every family's encoders share: **embeddings → encoder → pooling → projection**.
//!
//! A [`Tower`] is those four stages, and each family supplies the parts that differ:
//! - the embeddings ([`Embeddings`]): CLIP's image tower adds a class token and a pre-LayerNorm
//!   to the patches, SigLIP's has neither; text towers add token and position embeddings and say
//!   which token each input is pooled at, and under which attention mask;
//! - the pooling ([`Pooling`]): a final LayerNorm on one token per input ([`TokenPooling`]: CLIP's
//!   class and end-of-text tokens, SigLIP's last text token), or SigLIP's multi-head attention
//!   pooling head over all tokens;
//! - the projection into the shared space (absent where the family has none).
//!
//! The encoder stack itself ([`Encoder`]) is the same pre-LN transformer for every family.
//! [`DualEncoder`] is what [`crate::Clip`] drives: a family's two towers and its scores.

use candle_core::{DType, Module, Tensor};
use candle_nn::LayerNorm;

use super::dense::Dense;
use super::layers::{Encoder, Mask};
use crate::config::EosRule;
use crate::error::Result;
use crate::scoring::Scoring;

/// What the embeddings stage hands the encoder: the hidden states `[batch, seq, hidden]`, the
/// attention mask, and the flat rows (of `[batch·seq, hidden]`) a token pooling reads.
pub struct Embedded {
    pub hidden: Tensor,
    pub mask: Mask,
    pub pooled_rows: Vec<usize>,
}

/// The first stage of a tower: inputs (pixels, token ids) to hidden states.
pub trait Embeddings: Send + Sync {
    type Input: ?Sized;
    fn forward(&self, input: &Self::Input) -> Result<Embedded>;
    /// The dtype the tower computes in (its weights').
    fn dtype(&self) -> DType;
}

/// The stage after the encoder: one vector per input.
pub trait Pooling: Send + Sync {
    /// Runs `encoder` on `embedded` and pools → `[inputs, hidden]`. The pooling drives the
    /// encoder because it decides what the last layer must compute: a token pooling needs only
    /// the pooled rows ([`Encoder::forward_pooled`]), an attention head needs every token.
    fn pool(&self, encoder: &Encoder, embedded: Embedded) -> Result<Tensor>;
}

/// A LayerNorm on the pooled token of each input (CLIP's `post_layernorm` on the class token
/// and `final_layer_norm` at end-of-text). LayerNorm is per token, so normalising only the
/// pooled rows gives the full output's rows.
pub struct TokenPooling {
    pub norm: LayerNorm,
}

impl Pooling for TokenPooling {
    fn pool(&self, encoder: &Encoder, e: Embedded) -> Result<Tensor> {
        let pooled = encoder.forward_pooled(&e.hidden, &e.mask, &e.pooled_rows)?;
        Ok(self.norm.forward(&pooled)?)
    }
}

/// One encoder of a family: embeddings → encoder → pooling → projection.
pub struct Tower<E, P = TokenPooling> {
    embeddings: E,
    encoder: Encoder,
    pooling: P,
    projection: Option<Dense>,
}

impl<E: Embeddings, P: Pooling> Tower<E, P> {
    pub fn new(embeddings: E, encoder: Encoder, pooling: P, projection: Option<Dense>) -> Self {
        Self {
            embeddings,
            encoder,
            pooling,
            projection,
        }
    }

    /// Projected, not yet normalised, features `[inputs, embedding_dim]`.
    pub fn forward(&self, input: &E::Input) -> Result<Tensor> {
        let pooled = self
            .pooling
            .pool(&self.encoder, self.embeddings.forward(input)?)?;
        match &self.projection {
            Some(projection) => projection.forward(&pooled),
            None => Ok(pooled),
        }
    }

    pub fn embeddings(&self) -> &E {
        &self.embeddings
    }
}

/// A batch of token ids for a text tower, laid out as the family's [`TextInput`] allows.
pub struct TextBatch {
    /// `[batch, len]` when padded, `[Σ lengths]` when packed.
    pub ids: Tensor,
    pub layout: TextLayout,
}

pub enum TextLayout {
    /// Every sequence padded at the end to one length; pooled at these positions.
    Padded { pool_positions: Vec<usize> },
    /// Sequences back to back without padding (only for causal towers, whose tokens never see
    /// what follows them); pooled at these absolute rows.
    Packed {
        lengths: Vec<usize>,
        pool_rows: Vec<usize>,
    },
}

/// How a family wants its prompts laid out: where it pools, and what padding it was trained
/// with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextInput {
    pub pooling: TextPoolingRule,
    /// Pad every sequence to exactly this length (SigLIP: 64, as it was trained, with no
    /// mask); `None` pads only to the longest in the batch.
    pub pad_to: Option<usize>,
    /// Whether the tower's attention is causal, so padding never influences a real token and
    /// sequences may be packed back to back.
    pub causal: bool,
}

/// Which token a text tower pools at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextPoolingRule {
    /// The end-of-text token, found as transformers' CLIP finds it.
    EndOfText(EosRule),
    /// The last position of the (padded) sequence.
    Last,
    /// The tower pools by its own rule over each input's real tokens (XLM-R's mean over the
    /// attention mask, or its `<s>` token), whatever the layout's positions say.
    Tower,
}

impl TextPoolingRule {
    /// The position to pool in `ids` once padded to `padded_len`.
    pub fn position(&self, ids: &[u32], padded_len: usize) -> usize {
        match self {
            TextPoolingRule::EndOfText(rule) => rule.position(ids),
            TextPoolingRule::Last => padded_len.saturating_sub(1),
            TextPoolingRule::Tower => 0,
        }
    }
}

/// A family's two towers and how its scores are formed: what [`crate::Clip`] runs.
pub trait DualEncoder: Send + Sync {
    /// Projected, not yet normalised, image features of `[batch, 3, S, S]` pixels.
    fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor>;
    /// Projected, not yet normalised, text features `[batch, embedding_dim]`.
    fn text_features(&self, batch: &TextBatch) -> Result<Tensor>;
    /// How prompts must be laid out for [`text_features`](Self::text_features).
    fn text_input(&self) -> TextInput;
    /// The family's scoring head with this checkpoint's learned scale (and bias).
    fn scoring(&self) -> Scoring;
    /// Size of the shared embedding space.
    fn embedding_dim(&self) -> usize;
    /// Side of the square input image, in pixels.
    fn image_size(&self) -> usize;
    /// Tokens the image tower reads per image (patches, plus a class token where the family
    /// has one): what an image "costs" in usage reports.
    fn image_tokens(&self) -> usize;
    /// Floating-point operations of one image through the image tower (2 per multiply-add).
    fn image_flops(&self) -> f64;
}
