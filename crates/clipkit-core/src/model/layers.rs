//! The transformer pieces both towers share: pre-LN encoder layers with multi-head attention
//! and a two-layer MLP.

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Module, Shape, Tensor, D};
use candle_nn::LayerNorm;
use clipkit_kernels::attention::{attention, AttentionShape};

use super::dense::{f32_slice, Dense, MatmulPath};
use crate::config::Activation;
use crate::error::Result;
use crate::weights::Weights;

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
    qkv: Dense,
    out_proj: Dense,
    num_heads: usize,
    head_dim: usize,
    scale: f64,
    /// On the packed CPU path attention reads the QKV output in place (see
    /// `clipkit_kernels::attention`); on candle it is the textbook sequence of ops.
    fused: bool,
}

impl Attention {
    pub fn load(
        w: &Weights,
        prefix: &str,
        hidden: usize,
        num_heads: usize,
        path: MatmulPath,
    ) -> Result<Self> {
        let get = |name: &str, shape: &[usize]| w.get(&format!("{prefix}.{name}"), shape);
        let weight = Tensor::cat(
            &[
                get("q_proj.weight", &[hidden, hidden])?,
                get("k_proj.weight", &[hidden, hidden])?,
                get("v_proj.weight", &[hidden, hidden])?,
            ],
            0,
        )?;
        let bias = Tensor::cat(
            &[
                get("q_proj.bias", &[hidden])?,
                get("k_proj.bias", &[hidden])?,
                get("v_proj.bias", &[hidden])?,
            ],
            0,
        )?;
        let head_dim = hidden / num_heads;
        Ok(Self {
            qkv: Dense::new(weight, Some(bias), path)?,
            out_proj: Dense::load(w, &format!("{prefix}.out_proj"), hidden, hidden, true, path)?,
            num_heads,
            head_dim,
            scale: (head_dim as f64).powf(-0.5),
            fused: path.is_packed(),
        })
    }

    /// `residual + out_proj(attention(xs))`; `xs`: `[batch, seq, hidden]`. With `causal`, token
    /// `i` attends to tokens `0..=i` (the text tower).
    pub fn forward(&self, xs: &Tensor, residual: &Tensor, causal: bool) -> Result<Tensor> {
        let (b, n, hidden) = xs.dims3()?;
        let qkv = self.qkv.forward(xs)?;
        let out = if self.fused {
            qkv.apply_op1_no_bwd(&FusedAttention(AttentionShape {
                batch: b,
                seq: n,
                heads: self.num_heads,
                head_dim: self.head_dim,
                causal,
            }))?
        } else {
            let qkv = qkv
                .reshape((b, n, 3, self.num_heads, self.head_dim))?
                .permute((2, 0, 3, 1, 4))?;
            let q = (qkv.get(0)?.contiguous()? * self.scale)?;
            let k = qkv.get(1)?.contiguous()?;
            let v = qkv.get(2)?.contiguous()?;
            let mut scores = q.matmul(&k.t()?)?;
            if causal {
                let mask = causal_mask(n, xs.device())?.to_dtype(scores.dtype())?;
                scores = scores.broadcast_add(&mask)?;
            }
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            probs.matmul(&v)?.transpose(1, 2)?.reshape((b, n, hidden))?
        };
        self.out_proj.forward_residual(&out, residual)
    }
}

/// Additive `[seq, seq]` mask: `-inf` above the diagonal.
fn causal_mask(len: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..len)
        .flat_map(|i| (0..len).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(mask, (len, len), device)?)
}

/// `clipkit_kernels::attention` as a candle op: `[b, n, 3·hidden]` → `[b, n, hidden]`.
struct FusedAttention(AttentionShape);

impl CustomOp1 for FusedAttention {
    fn name(&self) -> &'static str {
        "clipkit-fused-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let qkv = f32_slice(self.name(), s, l)?;
        let shape = self.0;
        let mut out = vec![0f32; shape.batch * shape.seq * shape.hidden()];
        attention(qkv, shape, &mut out);
        Ok((
            CpuStorage::F32(out),
            Shape::from((shape.batch, shape.seq, shape.hidden())),
        ))
    }
}

pub struct Mlp {
    fc1: Dense,
    fc2: Dense,
    act: Activation,
}

impl Mlp {
    pub fn load(
        w: &Weights,
        prefix: &str,
        hidden: usize,
        inter: usize,
        act: Activation,
        path: MatmulPath,
    ) -> Result<Self> {
        Ok(Self {
            fc1: Dense::load(w, &format!("{prefix}.fc1"), hidden, inter, true, path)?,
            fc2: Dense::load(w, &format!("{prefix}.fc2"), inter, hidden, true, path)?,
            act,
        })
    }

    /// `residual + fc2(act(fc1(xs)))`.
    pub fn forward(&self, xs: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let h = self.fc1.forward_act(xs, self.act)?;
        self.fc2.forward_residual(&h, residual)
    }
}

/// `x + attn(ln1(x))`, then `x + mlp(ln2(x))` (each residual add fused into the layer's last
/// matmul).
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
    pub path: MatmulPath,
}

impl EncoderLayer {
    pub fn load(w: &Weights, prefix: &str, s: &EncoderShape) -> Result<Self> {
        Ok(Self {
            layer_norm1: layer_norm(w, &format!("{prefix}.layer_norm1"), s.hidden, s.eps)?,
            self_attn: Attention::load(
                w,
                &format!("{prefix}.self_attn"),
                s.hidden,
                s.heads,
                s.path,
            )?,
            layer_norm2: layer_norm(w, &format!("{prefix}.layer_norm2"), s.hidden, s.eps)?,
            mlp: Mlp::load(
                w,
                &format!("{prefix}.mlp"),
                s.hidden,
                s.intermediate,
                s.act,
                s.path,
            )?,
        })
    }

    pub fn forward(&self, xs: &Tensor, causal: bool) -> Result<Tensor> {
        let xs = self
            .self_attn
            .forward(&self.layer_norm1.forward(xs)?, xs, causal)?;
        self.mlp.forward(&self.layer_norm2.forward(&xs)?, &xs)
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

    pub fn forward(&self, xs: &Tensor, causal: bool) -> Result<Tensor> {
        let mut xs = xs.clone();
        for layer in &self.layers {
            xs = layer.forward(&xs, causal)?;
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
