//! XLM-RoBERTa's encoder: BERT's post-LN layers (`encoder.layer.N.*`), where each sub-block's
//! residual sum is normalised (`LayerNorm(x + attention(x))`), not its input as in CLIP.

use candle_core::{Module, Tensor};
use candle_nn::LayerNorm;

use crate::config::EncoderShape;
use crate::error::Result;
use crate::model::dense::{Dense, MatmulPath};
use crate::model::layers::{layer_norm, Attention, Mask, Mlp};
use crate::weights::Scope;

/// `attention.self.{query,key,value}` → `attention.output.{dense,LayerNorm}`, then
/// `intermediate.dense` + activation → `output.{dense,LayerNorm}`.
pub struct BertLayer {
    attention: Attention,
    attention_norm: LayerNorm,
    mlp: Mlp,
    output_norm: LayerNorm,
}

impl BertLayer {
    /// One layer in scope `w` (`encoder.layer.N`).
    pub fn load(w: &Scope, s: &EncoderShape, path: MatmulPath) -> Result<Self> {
        let (h, i) = (s.hidden, s.intermediate);
        let attn = w.pp("attention");
        let projections = ["query", "key", "value"].map(|p| attn.pp("self").pp(p));
        let qkv = Dense::load_stacked(&projections, h, h, true, path)?;
        let out = Dense::load(&attn.pp("output").pp("dense"), h, h, true, path)?;
        let fc1 = Dense::load(&w.pp("intermediate").pp("dense"), h, i, true, path)?;
        let fc2 = Dense::load(&w.pp("output").pp("dense"), i, h, true, path)?;
        Ok(Self {
            attention: Attention::new(qkv, out, h, s.heads, path),
            attention_norm: layer_norm(&attn.pp("output").pp("LayerNorm"), h, s.eps)?,
            mlp: Mlp::new(fc1, fc2, s.act),
            output_norm: layer_norm(&w.pp("output").pp("LayerNorm"), h, s.eps)?,
        })
    }

    pub fn forward(&self, xs: &Tensor, mask: &Mask) -> Result<Tensor> {
        let xs = self
            .attention_norm
            .forward(&self.attention.forward(xs, xs, mask)?)?;
        Ok(self.output_norm.forward(&self.mlp.forward(&xs, &xs)?)?)
    }
}

/// `encoder.layer.0` … `encoder.layer.{n-1}`.
pub struct BertEncoder {
    layers: Vec<BertLayer>,
}

impl BertEncoder {
    /// The layers in scope `w` (`encoder`).
    pub fn load(w: &Scope, s: &EncoderShape, path: MatmulPath) -> Result<Self> {
        let layers = (0..s.layers)
            .map(|i| BertLayer::load(&w.pp("layer").pp(i), s, path))
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    pub fn forward(&self, xs: &Tensor, mask: &Mask) -> Result<Tensor> {
        let mut xs = xs.clone();
        for layer in &self.layers {
            xs = layer.forward(&xs, mask)?;
        }
        Ok(xs)
    }
}
