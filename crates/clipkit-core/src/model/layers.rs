//! The transformer pieces both towers share: pre-LN encoder layers with multi-head attention
//! and a two-layer MLP.

use candle_core::{Module, Tensor, D};
use candle_nn::{LayerNorm, Linear};

use crate::config::Activation;
use crate::error::Result;
use crate::weights::Weights;

pub fn linear(
    w: &Weights,
    prefix: &str,
    in_dim: usize,
    out_dim: usize,
    bias: bool,
) -> Result<Linear> {
    let weight = w.get(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
    let bias = if bias {
        Some(w.get(&format!("{prefix}.bias"), &[out_dim])?)
    } else {
        None
    };
    Ok(Linear::new(weight, bias))
}

pub fn layer_norm(w: &Weights, prefix: &str, dim: usize, eps: f64) -> Result<LayerNorm> {
    let weight = w.get(&format!("{prefix}.weight"), &[dim])?;
    let bias = w.get(&format!("{prefix}.bias"), &[dim])?;
    Ok(LayerNorm::new(weight, bias, eps))
}

impl Activation {
    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            Activation::Gelu => xs.gelu_erf(),
            Activation::GeluNew => xs.gelu(),
            Activation::Relu => xs.relu(),
        }
    }
}

/// Multi-head self-attention with the q/k/v projections fused into one matmul at load time.
pub struct Attention {
    qkv: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
    scale: f64,
}

impl Attention {
    pub fn load(w: &Weights, prefix: &str, hidden: usize, num_heads: usize) -> Result<Self> {
        let proj = |name: &str| linear(w, &format!("{prefix}.{name}"), hidden, hidden, true);
        let (q, k, v) = (proj("q_proj")?, proj("k_proj")?, proj("v_proj")?);
        let weight = Tensor::cat(&[q.weight(), k.weight(), v.weight()], 0)?;
        let bias = Tensor::cat(
            &[
                q.bias().expect("loaded with bias"),
                k.bias().expect("loaded with bias"),
                v.bias().expect("loaded with bias"),
            ],
            0,
        )?;
        let head_dim = hidden / num_heads;
        Ok(Self {
            qkv: Linear::new(weight, Some(bias)),
            out_proj: proj("out_proj")?,
            num_heads,
            head_dim,
            scale: (head_dim as f64).powf(-0.5),
        })
    }

    /// `xs`: `[batch, seq, hidden]`; `mask`: additive `[seq, seq]` (causal text attention).
    pub fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, n, hidden) = xs.dims3()?;
        let qkv = self
            .qkv
            .forward(xs)?
            .reshape((b, n, 3, self.num_heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)?.contiguous()? * self.scale)?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, n, hidden))?;
        Ok(self.out_proj.forward(&out)?)
    }
}

pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl Mlp {
    pub fn load(
        w: &Weights,
        prefix: &str,
        hidden: usize,
        inter: usize,
        act: Activation,
    ) -> Result<Self> {
        Ok(Self {
            fc1: linear(w, &format!("{prefix}.fc1"), hidden, inter, true)?,
            fc2: linear(w, &format!("{prefix}.fc2"), inter, hidden, true)?,
            act,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = self.act.forward(&self.fc1.forward(xs)?)?;
        Ok(self.fc2.forward(&h)?)
    }
}

/// `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
pub struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: Attention,
    layer_norm2: LayerNorm,
    mlp: Mlp,
}

/// The sizes an encoder stack is built from, shared by both towers' configs.
#[derive(Debug, Clone, Copy)]
pub struct EncoderShape {
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub layers: usize,
    pub eps: f64,
    pub act: Activation,
}

impl EncoderLayer {
    pub fn load(w: &Weights, prefix: &str, s: &EncoderShape) -> Result<Self> {
        Ok(Self {
            layer_norm1: layer_norm(w, &format!("{prefix}.layer_norm1"), s.hidden, s.eps)?,
            self_attn: Attention::load(w, &format!("{prefix}.self_attn"), s.hidden, s.heads)?,
            layer_norm2: layer_norm(w, &format!("{prefix}.layer_norm2"), s.hidden, s.eps)?,
            mlp: Mlp::load(w, &format!("{prefix}.mlp"), s.hidden, s.intermediate, s.act)?,
        })
    }

    pub fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let h = self
            .self_attn
            .forward(&self.layer_norm1.forward(xs)?, mask)?;
        let xs = (xs + h)?;
        let h = self.mlp.forward(&self.layer_norm2.forward(&xs)?)?;
        Ok((xs + h)?)
    }
}

pub struct Encoder {
    layers: Vec<EncoderLayer>,
}

impl Encoder {
    pub fn load(w: &Weights, prefix: &str, s: &EncoderShape) -> Result<Self> {
        let layers = (0..s.layers)
            .map(|i| EncoderLayer::load(w, &format!("{prefix}.layers.{i}"), s))
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    pub fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let mut xs = xs.clone();
        for layer in &self.layers {
            xs = layer.forward(&xs, mask)?;
        }
        Ok(xs)
    }
}

/// Rows of `xs` (`[batch, seq, hidden]`) at one position per batch item → `[batch, hidden]`.
pub fn gather_positions(xs: &Tensor, positions: &[usize]) -> Result<Tensor> {
    let (b, n, hidden) = xs.dims3()?;
    let index: Vec<u32> = positions
        .iter()
        .enumerate()
        .map(|(i, &p)| (i * n + p) as u32)
        .collect();
    let index = Tensor::from_vec(index, b, xs.device())?;
    Ok(xs.reshape((b * n, hidden))?.index_select(&index, 0)?)
}

/// Squared L2 norm to 1 along the last dimension.
pub fn l2_normalize(xs: &Tensor) -> Result<Tensor> {
    let norm = xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    Ok(xs.broadcast_div(&norm)?)
}
