//! The transformer pieces both towers share: pre-LN encoder layers with multi-head attention
//! and a two-layer MLP.

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Module, Shape, Tensor, D};
use candle_nn::LayerNorm;
use clipkit_kernels::attention::{attention, attention_packed, AttentionShape};

use super::dense::{f32_slice, Dense, MatmulPath};
use crate::config::Activation;
pub use crate::config::EncoderShape;
use crate::error::Result;
use crate::weights::Scope;

/// A LayerNorm's `weight` and `bias` in scope `w`.
pub fn layer_norm(w: &Scope, dim: usize, eps: f64) -> Result<LayerNorm> {
    let weight = w.get("weight", &[dim])?;
    let bias = w.get("bias", &[dim])?;
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
    /// One batch item holding sequences of these lengths back to back, each token seeing
    /// every token of its own sequence (bidirectional text towers such as XLM-R, packed CPU
    /// path): block-diagonal attention, the padding mask without the padding.
    Packed(Vec<usize>),
    /// Batch items padded at the end: item `i`'s first `lengths[i]` tokens are real and see
    /// each other, the padding is masked out as a key (bidirectional towers on candle, as
    /// transformers' attention mask does it).
    PaddedEnd(Vec<usize>),
}

impl Mask {
    /// Whether a token sees only the tokens before it.
    fn is_causal(&self) -> bool {
        matches!(self, Mask::Causal | Mask::CausalPacked(_))
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
    /// `q_proj`, `k_proj`, `v_proj` and `out_proj` in scope `w`.
    pub fn load(w: &Scope, hidden: usize, num_heads: usize, path: MatmulPath) -> Result<Self> {
        let projections = ["q_proj", "k_proj", "v_proj"].map(|p| w.pp(p));
        let qkv = Dense::load_stacked(&projections, hidden, hidden, true, path)?;
        let out_proj = Dense::load(&w.pp("out_proj"), hidden, hidden, true, path)?;
        Ok(Self::new(qkv, out_proj, hidden, num_heads, path))
    }

    /// From the fused `[3·hidden, hidden]` QKV projection (q, k, v stacked in that order) and
    /// the output projection, for families whose weights have other names (BERT's
    /// `query`/`key`/`value` and `output.dense`).
    pub fn new(
        qkv: Dense,
        out_proj: Dense,
        hidden: usize,
        num_heads: usize,
        path: MatmulPath,
    ) -> Self {
        let head_dim = hidden / num_heads;
        Self {
            qkv,
            out_proj,
            num_heads,
            head_dim,
            scale: (head_dim as f64).powf(-0.5),
            fused: path.is_packed(),
        }
    }

    /// `residual + out_proj(attention(xs))`; `xs`: `[batch, seq, hidden]`.
    pub fn forward(&self, xs: &Tensor, residual: &Tensor, mask: &Mask) -> Result<Tensor> {
        self.out_proj
            .forward_residual(&self.attend(xs, mask)?, residual)
    }

    /// The heads' outputs before `out_proj`: `[batch, seq, hidden]`.
    fn attend(&self, xs: &Tensor, mask: &Mask) -> Result<Tensor> {
        let (b, n, hidden) = xs.dims3()?;
        let qkv = self.qkv.forward(xs)?;
        let shape = AttentionShape {
            batch: b,
            seq: n,
            heads: self.num_heads,
            head_dim: self.head_dim,
            causal: mask.is_causal(),
        };
        let out = if self.fused {
            let segments = match mask {
                Mask::Full | Mask::Causal => Segments::Batch,
                Mask::CausalPacked(lengths) | Mask::Packed(lengths) => {
                    Segments::Packed(lengths.clone())
                }
                Mask::PaddedEnd(lengths) => Segments::PaddedEnd(lengths.clone()),
            };
            qkv.apply_op1_no_bwd(&FusedAttention { shape, segments })?
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
                Mask::Causal => Some(block_mask(&[n], true, xs.device())?),
                Mask::CausalPacked(lengths) => Some(block_mask(lengths, true, xs.device())?),
                Mask::Packed(lengths) => Some(block_mask(lengths, false, xs.device())?),
                Mask::PaddedEnd(lengths) => Some(key_padding_mask(lengths, n, xs.device())?),
            };
            if let Some(m) = additive {
                scores = scores.broadcast_add(&m.to_dtype(scores.dtype())?)?;
            }
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            probs.matmul(&v)?.transpose(1, 2)?.reshape((b, n, hidden))?
        };
        Ok(out)
    }
}

/// Additive `[b, 1, 1, n]` mask: 0 on each item's first `lengths[i]` keys, `-inf` on its
/// padding (transformers adds the dtype's minimum instead; both give the padding exactly zero
/// weight, as no row is all padding).
fn key_padding_mask(lengths: &[usize], n: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = lengths
        .iter()
        .flat_map(|&len| (0..n).map(move |j| if j < len { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Ok(Tensor::from_vec(mask, (lengths.len(), 1, 1, n), device)?)
}

/// Additive `[Σ lengths, Σ lengths]` mask: 0 where row `i` may see column `j` (same
/// sequence, and with `causal` `j ≤ i`), `-inf` elsewhere.
fn block_mask(lengths: &[usize], causal: bool, device: &Device) -> Result<Tensor> {
    let total: usize = lengths.iter().sum();
    // Each row's sequence as (first row, one past its last row).
    let mut bounds = Vec::with_capacity(total);
    let mut start = 0;
    for &len in lengths {
        bounds.extend(std::iter::repeat_n((start, start + len), len));
        start += len;
    }
    let mask: Vec<f32> = bounds
        .iter()
        .enumerate()
        .flat_map(|(i, &(first, last))| {
            let end = if causal { i + 1 } else { last };
            (0..total).map(move |j| {
                if j < first || j >= end {
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
    segments: Segments,
}

/// Which rows attend to which, for the fused kernel.
enum Segments {
    /// Each batch item is one sequence ([`Mask::Full`], [`Mask::Causal`]).
    Batch,
    /// One batch item of sequences back to back ([`Mask::CausalPacked`], [`Mask::Packed`]).
    Packed(Vec<usize>),
    /// Each batch item's first `lengths[i]` rows ([`Mask::PaddedEnd`]); padding rows are
    /// left zero (nothing reads them: a padding mask also leaves them out of the pooling).
    PaddedEnd(Vec<usize>),
}

impl CustomOp1 for FusedAttention {
    fn name(&self) -> &'static str {
        "clipkit-fused-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let qkv = f32_slice(self.name(), s, l)?;
        let shape = self.shape;
        let mut out = vec![0f32; shape.batch * shape.seq * shape.hidden()];
        match &self.segments {
            Segments::Packed(lengths) => {
                if shape.batch != 1 || lengths.iter().sum::<usize>() != shape.seq {
                    candle_core::bail!("packed attention: lengths do not cover the sequence");
                }
                let (heads, head_dim) = (shape.heads, shape.head_dim);
                attention_packed(qkv, lengths, heads, head_dim, shape.causal, &mut out)
            }
            Segments::PaddedEnd(lengths) => {
                if lengths.len() != shape.batch || lengths.iter().any(|&l| l > shape.seq) {
                    candle_core::bail!("padded attention: lengths do not fit the batch");
                }
                let (n, hidden) = (shape.seq, shape.hidden());
                for (i, &len) in lengths.iter().enumerate() {
                    let rows = i * n..i * n + len;
                    attention_packed(
                        &qkv[rows.start * 3 * hidden..rows.end * 3 * hidden],
                        &[len],
                        shape.heads,
                        shape.head_dim,
                        shape.causal,
                        &mut out[rows.start * hidden..rows.end * hidden],
                    );
                }
            }
            Segments::Batch => attention(qkv, shape, &mut out),
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
    /// From its two layers, for families whose weights have other names (BERT's
    /// `intermediate.dense` and `output.dense`).
    pub fn new(fc1: Dense, fc2: Dense, act: Activation) -> Self {
        Self { fc1, fc2, act }
    }

    /// `fc1` and `fc2` in scope `w`.
    pub fn load(
        w: &Scope,
        hidden: usize,
        inter: usize,
        act: Activation,
        path: MatmulPath,
    ) -> Result<Self> {
        Ok(Self {
            fc1: Dense::load(&w.pp("fc1"), hidden, inter, true, path)?,
            fc2: Dense::load(&w.pp("fc2"), inter, hidden, true, path)?,
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

impl EncoderLayer {
    /// `layer_norm1`, `self_attn`, `layer_norm2` and `mlp` in scope `w`.
    pub fn load(w: &Scope, s: &EncoderShape, path: MatmulPath) -> Result<Self> {
        Ok(Self {
            layer_norm1: layer_norm(&w.pp("layer_norm1"), s.hidden, s.eps)?,
            self_attn: Attention::load(&w.pp("self_attn"), s.hidden, s.heads, path)?,
            layer_norm2: layer_norm(&w.pp("layer_norm2"), s.hidden, s.eps)?,
            mlp: Mlp::load(&w.pp("mlp"), s.hidden, s.intermediate, s.act, path)?,
        })
    }

    pub fn forward(&self, xs: &Tensor, mask: &Mask) -> Result<Tensor> {
        let xs = self
            .self_attn
            .forward(&self.layer_norm1.forward(xs)?, xs, mask)?;
        self.mlp.forward(&self.layer_norm2.forward(&xs)?, &xs)
    }

    /// [`forward`](Self::forward), but only the output rows `rows` (of `xs` flattened to
    /// `[batch·seq, hidden]`) → `[rows, hidden]`. Every token's keys and values are still
    /// needed, but after attention each row is on its own: `out_proj` and the MLP, three
    /// quarters of a layer's work, run on the pooled rows alone. Row for row the result is
    /// [`forward`](Self::forward)'s (the matmuls treat rows independently).
    pub fn forward_rows(&self, xs: &Tensor, mask: &Mask, rows: &Tensor) -> Result<Tensor> {
        let heads = self
            .self_attn
            .attend(&self.layer_norm1.forward(xs)?, mask)?;
        let xs = self
            .self_attn
            .out_proj
            .forward_residual(&take_rows(&heads, rows)?, &take_rows(xs, rows)?)?;
        self.mlp.forward(&self.layer_norm2.forward(&xs)?, &xs)
    }
}

pub struct Encoder {
    layers: Vec<EncoderLayer>,
}

impl Encoder {
    /// `layers.0` … `layers.{n-1}` in scope `w`.
    pub fn load(w: &Scope, s: &EncoderShape, path: MatmulPath) -> Result<Self> {
        let layers = (0..s.layers)
            .map(|i| EncoderLayer::load(&w.pp("layers").pp(i), s, path))
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

    /// The last hidden state at the rows `rows` only (of `[batch·seq, hidden]`, the pooled
    /// tokens) → `[rows.len(), hidden]`: both towers pool one token per input, so the last
    /// layer's `out_proj` and MLP skip the others (6% of ViT-B/32's image tower).
    pub fn forward_pooled(&self, xs: &Tensor, mask: &Mask, rows: &[usize]) -> Result<Tensor> {
        let index = row_index(rows, xs.device())?;
        let Some((last, earlier)) = self.layers.split_last() else {
            return take_rows(xs, &index);
        };
        let mut xs = xs.clone();
        for layer in earlier {
            xs = layer.forward(&xs, mask)?;
        }
        last.forward_rows(&xs, mask, &index)
    }
}

/// `rows` as the index tensor [`take_rows`] takes.
fn row_index(rows: &[usize], device: &Device) -> Result<Tensor> {
    let index: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    Ok(Tensor::from_vec(index, rows.len(), device)?)
}

/// The rows `index` of `xs` flattened to `[batch·seq, hidden]` → `[index.len(), hidden]`.
fn take_rows(xs: &Tensor, index: &Tensor) -> Result<Tensor> {
    let hidden = xs.dim(D::Minus1)?;
    Ok(xs.reshape(((), hidden))?.index_select(index, 0)?)
}

/// `[batch, ch, g·p, g·p]` pixels → `[batch, g·g, ch·p·p]`, one row per patch in raster order:
/// a stride-p patch convolution is then one matmul over the rows (no im2col copy).
pub fn patches(pixel_values: &Tensor, grid: usize, patch: usize) -> Result<Tensor> {
    let (b, ch, _, _) = pixel_values.dims4()?;
    let (g, p) = (grid, patch);
    Ok(pixel_values
        .reshape((b, ch, g, p, g, p))?
        .permute((0, 2, 4, 1, 3, 5))?
        .contiguous()?
        .reshape((b, g * g, ch * p * p))?)
}

/// Token plus position embeddings of a padded `[batch, len]` id batch → `[batch, len, hidden]`.
pub fn embed_padded(
    token_embedding: &Tensor,
    position_embedding: &Tensor,
    ids: &Tensor,
) -> Result<Tensor> {
    let (b, len) = ids.dims2()?;
    let hidden = token_embedding.dim(1)?;
    let tokens = token_embedding
        .index_select(&ids.flatten_all()?, 0)?
        .reshape((b, len, hidden))?;
    let positions = position_embedding.narrow(0, 0, len)?.unsqueeze(0)?;
    Ok(tokens.broadcast_add(&positions)?)
}

/// The flat rows (of `[batch·seq, hidden]`) at one position per batch item of `seq` tokens.
pub fn rows_at(seq: usize, positions: &[usize]) -> Vec<usize> {
    positions
        .iter()
        .enumerate()
        .map(|(i, &p)| i * seq + p)
        .collect()
}

/// Squared L2 norm to 1 along the last dimension.
pub fn l2_normalize(xs: &Tensor) -> Result<Tensor> {
    // In f32 whatever the model ran in: the scores computed from these compare small differences.
    let xs = &xs.to_dtype(candle_core::DType::F32)?;
    let norm = xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    Ok(xs.broadcast_div(&norm)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClipConfig;
    use crate::weights::Weights;
    use clipkit_kernels::WeightFormat;

    fn tiny_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/tiny-gelu")
    }

    /// The tiny checkpoint's image (`vision`) or text encoder, and its width.
    fn encoder(vision: bool, path: MatmulPath) -> (Encoder, usize) {
        let dir = tiny_dir();
        let config = ClipConfig::from_file(&dir.join("config.json")).unwrap();
        let w = Weights::open(&dir, candle_core::DType::F32, &Device::Cpu).unwrap();
        let (prefix, shape) = if vision {
            ("vision_model", config.vision_config.encoder_shape())
        } else {
            ("text_model", config.text_config.encoder_shape())
        };
        let scope = w.root().pp(prefix).pp("encoder");
        (Encoder::load(&scope, &shape, path).unwrap(), shape.hidden)
    }

    fn input(b: usize, n: usize, hidden: usize) -> Tensor {
        let data: Vec<f32> = (0..b * n * hidden)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 2.0)
            .collect();
        Tensor::from_vec(data, (b, n, hidden), &Device::Cpu).unwrap()
    }

    /// The pooled rows of the full forward and of `forward_pooled`, as vectors.
    fn both(enc: &Encoder, xs: &Tensor, mask: &Mask, rows: &[usize]) -> (Vec<f32>, Vec<f32>) {
        let hidden = xs.dim(D::Minus1).unwrap();
        let index = row_index(rows, &Device::Cpu).unwrap();
        let full = take_rows(&enc.forward(xs, mask).unwrap(), &index).unwrap();
        let pooled = enc.forward_pooled(xs, mask, rows).unwrap();
        assert_eq!(pooled.dims(), &[rows.len(), hidden]);
        let flat = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (flat(full), flat(pooled))
    }

    #[test]
    fn pooled_rows_equal_the_full_forward_for_every_mask_and_path() {
        let paths = [MatmulPath::Candle, MatmulPath::Packed(WeightFormat::F32)];
        for path in paths {
            let (vision, hv) = encoder(true, path);
            let xs = input(3, 5, hv);
            let (full, pooled) = both(&vision, &xs, &Mask::Full, &rows_at(5, &[0, 0, 0]));
            assert_close(&full, &pooled, path);

            let (text, ht) = encoder(false, path);
            let xs = input(2, 6, ht);
            let (full, pooled) = both(&text, &xs, &Mask::Causal, &rows_at(6, &[3, 5]));
            assert_close(&full, &pooled, path);

            let lengths = vec![4, 2, 6];
            let xs = input(1, 12, ht);
            let mask = Mask::CausalPacked(lengths);
            let (full, pooled) = both(&text, &xs, &mask, &[3, 5, 11]);
            assert_close(&full, &pooled, path);
        }
    }

    /// A bidirectional tower's two layouts give the same rows on both paths: sequences back to
    /// back under the block-diagonal mask, and padded at the end under the key-padding mask
    /// (whatever the padding holds), and both differ from a mask that lets padding be seen.
    #[test]
    fn packed_and_padded_bidirectional_masks_agree() {
        let lengths = vec![4, 1, 6];
        let paths = [MatmulPath::Candle, MatmulPath::Packed(WeightFormat::F32)];
        for path in paths {
            let (enc, h) = encoder(false, path);
            let packed_in = input(1, 11, h);
            let packed = enc
                .forward(&packed_in, &Mask::Packed(lengths.clone()))
                .unwrap();
            // The same rows, each sequence padded to 6 with arbitrary values.
            let noise = input(3, 6, h).affine(3.0, 1.0).unwrap();
            let mut items = Vec::new();
            let mut start = 0;
            for (i, &len) in lengths.iter().enumerate() {
                let real = packed_in.narrow(1, start, len).unwrap();
                let pad = noise
                    .narrow(0, i, 1)
                    .unwrap()
                    .narrow(1, len, 6 - len)
                    .unwrap();
                items.push(Tensor::cat(&[&real, &pad], 1).unwrap());
                start += len;
            }
            let padded_in = Tensor::cat(&items, 0).unwrap();
            let padded = enc
                .forward(&padded_in, &Mask::PaddedEnd(lengths.clone()))
                .unwrap();
            let seen = enc.forward(&padded_in, &Mask::Full).unwrap();
            let row = |t: &Tensor, b: usize, r: usize| -> Vec<f32> {
                t.get(b).unwrap().get(r).unwrap().to_vec1::<f32>().unwrap()
            };
            let mut start = 0;
            for (i, &len) in lengths.iter().enumerate() {
                for r in 0..len {
                    let (a, b) = (row(&packed, 0, start + r), row(&padded, i, r));
                    for (x, y) in a.iter().zip(&b) {
                        assert!(
                            (x - y).abs() <= 1e-5,
                            "{path:?}: seq {i} row {r}: {x} vs {y}"
                        );
                    }
                }
                start += len;
            }
            // Padding seen as keys changes the short sequences' rows.
            let (a, b) = (row(&padded, 1, 0), row(&seen, 1, 0));
            assert!(
                a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-3),
                "{path:?}"
            );
        }
    }

    /// The packed kernels treat rows independently, so they agree exactly; candle's matmul
    /// may block a 1-row product differently from a 15-row one.
    fn assert_close(full: &[f32], pooled: &[f32], path: MatmulPath) {
        let tol = if path.is_packed() { 0.0 } else { 1e-5 };
        for (i, (a, b)) in full.iter().zip(pooled).enumerate() {
            assert!((a - b).abs() <= tol, "{path:?}: element {i}: {a} vs {b}");
        }
        // And the rows really are distinct outputs (a wrong index would pick another row).
        assert!(full.iter().any(|&x| x != full[0]));
    }
}
