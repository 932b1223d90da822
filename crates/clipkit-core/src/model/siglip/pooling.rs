//! SigLIP's multi-head attention pooling (MAP) head (`vision_model.head`): one learned query
//! (`probe`) attends over every token of the image, then a LayerNorm'd MLP is added to the
//! result. It is the vision tower's [`Pooling`] stage: unlike a token pooling it needs the last
//! layer's output at every position, so the encoder runs in full.

use candle_core::{Module, Tensor, D};
use candle_nn::LayerNorm;

use super::config::SiglipVisionConfig;
use crate::error::Result;
use crate::model::dense::{Dense, MatmulPath};
use crate::model::layers::{layer_norm, Encoder, Mlp};
use crate::model::tower::{Embedded, Pooling};
use crate::weights::Scope;

/// `post_layernorm` over the encoder output, then the MAP head.
pub struct AttentionPooling {
    post_layernorm: LayerNorm,
    /// `[1, hidden]`.
    probe: Tensor,
    /// The query rows of `in_proj_weight` (applied to the probe).
    q: Dense,
    /// The key and value rows of `in_proj_weight`, one matmul over the tokens.
    kv: Dense,
    out_proj: Dense,
    layernorm: LayerNorm,
    mlp: Mlp,
    heads: usize,
    head_dim: usize,
}

impl AttentionPooling {
    /// `post_layernorm` and `head` in the vision tower's scope `w`.
    pub fn load(w: &Scope, c: &SiglipVisionConfig, path: MatmulPath) -> Result<Self> {
        let h = c.hidden_size;
        let head = w.pp("head");
        let attn = head.pp("attention");
        // torch.nn.MultiheadAttention keeps q, k and v stacked: `in_proj_weight` [3h, h].
        let in_w = attn.get("in_proj_weight", &[3 * h, h])?;
        let in_b = attn.get("in_proj_bias", &[3 * h])?;
        let q = Dense::new(
            in_w.narrow(0, 0, h)?.contiguous()?,
            Some(in_b.narrow(0, 0, h)?.contiguous()?),
            path,
        )?;
        let kv = Dense::new(
            in_w.narrow(0, h, 2 * h)?.contiguous()?,
            Some(in_b.narrow(0, h, 2 * h)?.contiguous()?),
            path,
        )?;
        Ok(Self {
            post_layernorm: layer_norm(&w.pp("post_layernorm"), h, c.layer_norm_eps)?,
            probe: head.get("probe", &[1, 1, h])?.reshape((1, h))?,
            q,
            kv,
            out_proj: Dense::load(&attn.pp("out_proj"), h, h, true, path)?,
            layernorm: layer_norm(&head.pp("layernorm"), h, c.layer_norm_eps)?,
            mlp: Mlp::load(&head.pp("mlp"), h, c.intermediate_size, c.hidden_act, path)?,
            heads: c.num_attention_heads,
            head_dim: h / c.num_attention_heads,
        })
    }

    /// The head on post-LayerNorm'd hidden states `[batch, seq, hidden]` → `[batch, hidden]`.
    pub fn head(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, n, h) = xs.dims3()?;
        let (heads, hd) = (self.heads, self.head_dim);
        // The query is the same for every image: one row.
        let q = self.q.forward(&self.probe.to_dtype(xs.dtype())?)?; // [1, h]
        let q = (q.reshape((1, heads, 1, hd))? * (hd as f64).powf(-0.5))?;
        let kv = self.kv.forward(xs)?; // [b, n, 2h]
        let kv = kv.reshape((b, n, 2, heads, hd))?.permute((2, 0, 3, 1, 4))?;
        let k = kv.get(0)?.contiguous()?; // [b, heads, n, hd]
        let v = kv.get(1)?.contiguous()?;
        let scores = q
            .broadcast_as((b, heads, 1, hd))?
            .contiguous()?
            .matmul(&k.t()?)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?; // [b, heads, 1, n]
        let attended = probs.matmul(&v)?.reshape((b, h))?;
        let x = self.out_proj.forward(&attended)?;
        let pooled = self.mlp.forward(&self.layernorm.forward(&x)?, &x)?;
        debug_assert_eq!(pooled.dim(D::Minus1)?, h);
        Ok(pooled)
    }
}

impl Pooling for AttentionPooling {
    fn pool(&self, encoder: &Encoder, e: Embedded) -> Result<Tensor> {
        let hidden = encoder.forward(&e.hidden, &e.mask)?;
        self.head(&self.post_layernorm.forward(&hidden)?)
    }
}
