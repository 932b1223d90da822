//! The transformer pieces both towers share: pre-LN encoder layers with multi-head attention
//! and a two-layer MLP.

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Module, Shape, Tensor, D};
use candle_nn::LayerNorm;
use clipkit_kernels::attention::{attention, attention_packed, AttentionShape};

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

/// Who attends to whom.
#[derive(Debug, Clone)]
pub enum Mask {
    /// Every token sees every token (the image tower).
    Full,
    /// Token `i` sees tokens `0..=i` of its own batch item (the text tower, padded batches).
    Causal,
    /// One batch item holding sequences of these lengths back to back, each causal within
    /// itself: the text tower without padding (packed CPU path).
    CausalPacked(Vec<usize>),
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
        let projections = ["q_proj", "k_proj", "v_proj"].map(|p| format!("{prefix}.{p}"));
        let projections = projections.each_ref().map(String::as_str);
        let qkv = Dense::load_stacked(w, &projections, hidden, hidden, true, path)?;
        let head_dim = hidden / num_heads;
        Ok(Self {
            qkv,
            out_proj: Dense::load(w, &format!("{prefix}.out_proj"), hidden, hidden, true, path)?,
            num_heads,
            head_dim,
            scale: (head_dim as f64).powf(-0.5),
            fused: path.is_packed(),
        })
    }

    /// `residual + out_proj(attention(xs))`; `xs`: `[batch, seq, hidden]`.
    pub fn forward(&self, xs: &Tensor, residual: &Tensor, mask: &Mask) -> Result<Tensor> {
        let (b, n, hidden) = xs.dims3()?;
        let qkv = self.qkv.forward(xs)?;
        let shape = AttentionShape {
            batch: b,
            seq: n,
            heads: self.num_heads,
            head_dim: self.head_dim,
            causal: !matches!(mask, Mask::Full),
        };
        let out = if self.fused {
            let lengths = match mask {
                Mask::CausalPacked(lengths) => Some(lengths.clone()),
                _ => None,
            };
            qkv.apply_op1_no_bwd(&FusedAttention { shape, lengths })?
        } else {
            let qkv = qkv
                .reshape((b, n, 3, self.num_heads, self.head_dim))?
                .permute((2, 0, 3, 1, 4))?;
            let q = (qkv.get(0)?.contiguous()? * self.scale)?;
            let k = qkv.get(1)?.contiguous()?;
            let v = qkv.get(2)?.contiguous()?;
            let mut scores = q.matmul(&k.t()?)?;
            let additive = match mask {
                Mask::Full => None,
                Mask::Causal => Some(causal_mask(&[n], xs.device())?),
                Mask::CausalPacked(lengths) => Some(causal_mask(lengths, xs.device())?),
            };
            if let Some(m) = additive {
                scores = scores.broadcast_add(&m.to_dtype(scores.dtype())?)?;
            }
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            probs.matmul(&v)?.transpose(1, 2)?.reshape((b, n, hidden))?
        };
        self.out_proj.forward_residual(&out, residual)
    }
}

/// Additive `[Σ lengths, Σ lengths]` mask: 0 where row `i` may see column `j` (same
/// sequence, `j ≤ i`), `-inf` elsewhere.
fn causal_mask(lengths: &[usize], device: &Device) -> Result<Tensor> {
    let total: usize = lengths.iter().sum();
    let mut seq_start = Vec::with_capacity(total);
    for (start, &len) in lengths
        .iter()
        .scan(0, |acc, &l| {
            let s = *acc;
            *acc += l;
            Some(s)
        })
        .zip(lengths)
    {
        seq_start.extend(std::iter::repeat_n(start, len));
    }
    let mask: Vec<f32> = (0..total)
        .flat_map(|i| {
            let first = seq_start[i];
            (0..total).map(move |j| {
                if j < first || j > i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (total, total), device)?)
}

/// `clipkit_kernels::attention` as a candle op: `[b, n, 3·hidden]` → `[b, n, hidden]`.
struct FusedAttention {
    shape: AttentionShape,
    /// Packed sequences (`batch` is 1), see [`Mask::CausalPacked`].
    lengths: Option<Vec<usize>>,
}

impl CustomOp1 for FusedAttention {
    fn name(&self) -> &'static str {
        "clipkit-fused-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let qkv = f32_slice(self.name(), s, l)?;
        let shape = self.shape;
        let mut out = vec![0f32; shape.batch * shape.seq * shape.hidden()];
        match &self.lengths {
            Some(lengths) => {
                if shape.batch != 1 || lengths.iter().sum::<usize>() != shape.seq {
                    candle_core::bail!("packed attention: lengths do not cover the sequence");
                }
                attention_packed(qkv, lengths, shape.heads, shape.head_dim, true, &mut out)
            }
            None => attention(qkv, shape, &mut out),
        }
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

    pub fn forward(&self, xs: &Tensor, mask: &Mask) -> Result<Tensor> {
        let xs = self
            .self_attn
            .forward(&self.layer_norm1.forward(xs)?, xs, mask)?;
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

    pub fn forward(&self, xs: &Tensor, mask: &Mask) -> Result<Tensor> {
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
    // In f32 whatever the model ran in: the scores computed from these compare small differences.
    let xs = &xs.to_dtype(candle_core::DType::F32)?;
    let norm = xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    Ok(xs.broadcast_div(&norm)?)
}
