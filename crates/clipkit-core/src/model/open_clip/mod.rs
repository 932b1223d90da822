//! open_clip checkpoints (`open_clip_config.json` + `open_clip_model.safetensors` or
//! `open_clip_pytorch_model.bin`) whose towers are CLIP's: LAION, DataComp, DFN, MetaCLIP.
//!
//! open_clip's `CLIP` is transformers' `CLIPModel` under other tensor names, so the towers are
//! CLIP's own ([`ClipModel`]), read through [`naming`] and built from the equivalent
//! transformers config ([`config::OpenClipConfig`]). What open_clip adds on top is here: its
//! text pooling rules and an optional `logit_bias` (sigmoid scoring).

pub mod config;
pub mod naming;

use candle_core::Tensor;

use super::clip::ClipModel;
use super::dense::MatmulPath;
use super::tower::{DualEncoder, TextBatch, TextInput, TextPoolingRule};
use crate::config::EosRule;
use crate::error::Result;
use crate::scoring::Scoring;
use crate::weights::Scope;
use config::{OpenClipConfig, TextPool};

pub struct OpenClipModel {
    clip: ClipModel,
    text_pool: TextPool,
    context_length: usize,
    scoring: Scoring,
}

impl OpenClipModel {
    /// The model from its root scope `w`, whose weights read through [`naming::naming`].
    pub fn load(w: &Scope, config: &OpenClipConfig, path: MatmulPath) -> Result<Self> {
        let clip = ClipModel::load(w, &config.clip, path)?;
        let logit_scale = clip.scoring().logit_scale();
        let scoring = if w.weights().contains("logit_bias") {
            Scoring::Sigmoid {
                logit_scale,
                logit_bias: w.get_scalar("logit_bias")?,
            }
        } else {
            Scoring::Softmax { logit_scale }
        };
        Ok(Self {
            clip,
            text_pool: config.text_pool,
            context_length: config.clip.text_config.max_position_embeddings,
            scoring,
        })
    }
}

impl DualEncoder for OpenClipModel {
    fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.clip.image_features(pixel_values)
    }

    fn text_features(&self, batch: &TextBatch) -> Result<Tensor> {
        self.clip.text_features(batch)
    }

    /// open_clip's `text_global_pool`: `argmax` pools at the highest id (CLIP's end-of-text),
    /// `eos` at the first `eos_id`, `last` at the last of the context's positions (open_clip's
    /// tokenizers always pad to the context length).
    fn text_input(&self) -> TextInput {
        let (pooling, pad_to) = match self.text_pool {
            TextPool::Argmax => (TextPoolingRule::EndOfText(EosRule::ArgmaxId), None),
            TextPool::Eos(id) => (TextPoolingRule::EndOfText(EosRule::FirstId(id)), None),
            TextPool::Last => (TextPoolingRule::Last, Some(self.context_length)),
        };
        TextInput {
            pooling,
            pad_to,
            causal: true,
        }
    }

    fn scoring(&self) -> Scoring {
        self.scoring
    }

    fn embedding_dim(&self) -> usize {
        self.clip.embedding_dim()
    }

    fn image_size(&self) -> usize {
        self.clip.image_size()
    }

    fn image_tokens(&self) -> usize {
        self.clip.image_tokens()
    }

    fn image_flops(&self) -> f64 {
        self.clip.image_flops()
    }
}
