//! XLM-RoBERTa text towers (transformers' `XLMRobertaModel`): the multilingual text encoders
//! that open_clip's `xlm-roberta-*-ViT-*` models and M-CLIP pair with a CLIP image tower.
//!
//! - [`config`]: `config.json` (`XLMRobertaConfig`), and the configs of the hub checkpoints
//!   open_clip names without shipping;
//! - [`encoder`]: BERT's post-LN layers;
//! - [`text`]: embeddings (RoBERTa positions), pooling (mean, `<s>`, the tanh pooler) and the
//!   projection into the shared space.

pub mod config;
pub mod encoder;
pub mod open_clip;
pub mod text;

pub use config::XlmRobertaConfig;
pub use text::{PoolerType, Projection, XlmRobertaTextTower};
