//! [`Dense`]: a linear layer that runs either on candle (any device, the reference path) or on
//! clipkit's packed CPU GEMM (f32, bf16, f16 or int8 weights), chosen once when the model is
//! loaded ([`MatmulPath`], decided in [`crate::device::matmul_path`]).
//!
//! The model code calls the same three methods either way — plain, with the activation fused,
//! or with the residual fused — so the layer structs read like the reference model while the
//! CPU path does one pass over memory per layer.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Module, Shape, Tensor};
use candle_nn::Linear;
use clipkit_kernels::{Epilogue, PackedWeights};

use crate::config::Activation;
pub use crate::device::MatmulPath;
use crate::error::Result;
use crate::weights::Scope;

impl From<Activation> for clipkit_kernels::Activation {
    fn from(a: Activation) -> Self {
        match a {
            Activation::QuickGelu => Self::QuickGelu,
            Activation::Gelu => Self::Gelu,
            Activation::GeluNew => Self::GeluTanh,
            Activation::Relu => Self::Relu,
        }
    }
}

pub struct Dense {
    kind: Kind,
}

enum Kind {
    Candle(Linear),
    Packed(PackedWeights),
}

impl Dense {
    /// `weight` (`[out_dim, in_dim]`) and, with `bias`, `bias` in scope `w`.
    pub fn load(
        w: &Scope,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        path: MatmulPath,
    ) -> Result<Self> {
        Self::load_stacked(std::slice::from_ref(w), in_dim, out_dim, bias, path)
    }

    /// Layers `scopes` (each `[out_dim, in_dim]`) stacked along the output axis as one
    /// layer, e.g. q, k and v as one QKV projection.
    pub fn load_stacked(
        scopes: &[Scope],
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        path: MatmulPath,
    ) -> Result<Self> {
        let MatmulPath::Packed(format) = path else {
            let get_all = |leaf: &str, shape: &[usize]| -> Result<Tensor> {
                let parts = scopes
                    .iter()
                    .map(|s| s.get(leaf, shape))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Tensor::cat(&parts, 0)?)
            };
            let weight = get_all("weight", &[out_dim, in_dim])?;
            let bias = bias.then(|| get_all("bias", &[out_dim])).transpose()?;
            return Self::new(weight, bias, path);
        };
        let n = out_dim * scopes.len();
        // The pack cache's layer key: the layers' full names, as files written before scoped
        // names were introduced have them.
        let key = scopes
            .iter()
            .map(Scope::prefix)
            .collect::<Vec<_>>()
            .join("+");
        let cache = scopes.first().and_then(|s| s.weights().pack_cache());
        if let Some(packed) = cache.and_then(|c| c.get(&key, n, in_dim)) {
            return Ok(Self {
                kind: Kind::Packed(packed),
            });
        }
        // Packed: straight from the file into one buffer, then into panels.
        let mut weight = Vec::with_capacity(n * in_dim);
        let mut biases = Vec::with_capacity(n);
        for s in scopes {
            s.read_f32("weight", &[out_dim, in_dim], &mut weight)?;
            if bias {
                s.read_f32("bias", &[out_dim], &mut biases)?;
            }
        }
        let b = bias.then_some(biases.as_slice());
        let packed = PackedWeights::new(&weight, n, in_dim, b, format);
        if let Some(c) = cache {
            c.put(&key, &packed);
        }
        Ok(Self {
            kind: Kind::Packed(packed),
        })
    }

    /// From an `[out, in]` weight (e.g. q, k and v concatenated) and an optional `[out]` bias.
    pub fn new(weight: Tensor, bias: Option<Tensor>, path: MatmulPath) -> Result<Self> {
        let kind = match path {
            MatmulPath::Candle => Kind::Candle(Linear::new(weight, bias)),
            MatmulPath::Packed(format) => {
                let (n, k) = weight.dims2()?;
                let w = weight
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let b = bias
                    .map(|b| b.to_dtype(DType::F32)?.to_vec1::<f32>())
                    .transpose()?;
                Kind::Packed(PackedWeights::new(&w, n, k, b.as_deref(), format))
            }
        };
        Ok(Self { kind })
    }

    /// `xs·Wᵀ + b`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_epilogue(xs, clipkit_kernels::Activation::Identity)
    }

    /// `act(xs·Wᵀ + b)`.
    pub fn forward_act(&self, xs: &Tensor, act: Activation) -> Result<Tensor> {
        match &self.kind {
            Kind::Candle(l) => Ok(act.forward(&l.forward(xs)?)?),
            Kind::Packed(_) => self.forward_epilogue(xs, act.into()),
        }
    }

    /// `xs·Wᵀ + b + residual`.
    pub fn forward_residual(&self, xs: &Tensor, residual: &Tensor) -> Result<Tensor> {
        match &self.kind {
            Kind::Candle(l) => Ok((l.forward(xs)? + residual)?),
            Kind::Packed(w) => Ok(xs.apply_op2_no_bwd(residual, &PackedLinear { w, act: None })?),
        }
    }

    fn forward_epilogue(&self, xs: &Tensor, act: clipkit_kernels::Activation) -> Result<Tensor> {
        match &self.kind {
            Kind::Candle(l) => Ok(l.forward(xs)?),
            Kind::Packed(w) => Ok(xs.apply_op1_no_bwd(&PackedLinear { w, act: Some(act) })?),
        }
    }
}

/// The packed GEMM as a candle op, so it takes and returns ordinary tensors.
struct PackedLinear<'a> {
    w: &'a PackedWeights,
    /// `None` for the residual form (`CustomOp2`), which has no activation.
    act: Option<clipkit_kernels::Activation>,
}

/// The contiguous f32 data of a CPU tensor.
pub(crate) fn f32_slice<'a>(
    op: &str,
    s: &'a CpuStorage,
    l: &Layout,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("{op}: expected an f32 input");
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input is not contiguous"),
    }
}

impl PackedLinear<'_> {
    fn run(
        &self,
        x: &[f32],
        shape: &Shape,
        residual: Option<&[f32]>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (k, n) = (self.w.k(), self.w.n());
        let mut dims = shape.dims().to_vec();
        match dims.last_mut() {
            Some(last) if *last == k => *last = n,
            _ => candle_core::bail!("packed linear: input {shape:?} does not end in {k}"),
        }
        let m = x.len() / k;
        let mut out = Vec::with_capacity(m * n);
        let epilogue = Epilogue {
            act: self.act.unwrap_or(clipkit_kernels::Activation::Identity),
            residual,
        };
        self.w
            .matmul_uninit(x, m, epilogue, &mut out.spare_capacity_mut()[..m * n]);
        // SAFETY: `matmul_uninit` wrote all `m * n` elements.
        unsafe { out.set_len(m * n) };
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

impl CustomOp1 for PackedLinear<'_> {
    fn name(&self) -> &'static str {
        "clipkit-packed-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run(f32_slice(CustomOp1::name(self), s, l)?, l.shape(), None)
    }
}

impl CustomOp2 for PackedLinear<'_> {
    fn name(&self) -> &'static str {
        "clipkit-packed-linear-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(CustomOp2::name(self), s1, l1)?;
        let residual = f32_slice(CustomOp2::name(self), s2, l2)?;
        let out_elems = x.len() / self.w.k() * self.w.n();
        if residual.len() != out_elems {
            candle_core::bail!(
                "packed linear: residual {:?} does not match the output",
                l2.shape()
            );
        }
        self.run(x, l1.shape(), Some(residual))
    }
}
