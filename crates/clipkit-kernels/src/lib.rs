//! CPU kernels for the parts of a CLIP forward pass where a measurement showed the general
//! tensor library to be the bottleneck (docs/kernels.md and docs/benchmarks.md have the measurements):
//!
//! - [`gemm`]: `y = act(x·Wᵀ + b) + residual` with the weights packed once at load time into
//!   the panel layout the micro-kernel streams, and the bias, activation and residual applied
//!   while the output tile is still in registers — one pass over memory per linear layer
//!   instead of four.
//! - [`attention`]: multi-head softmax attention read straight from the fused QKV projection's
//!   output, so no permuted copies of Q, K and V are made.
//! - [`act`]: the activations (and `exp`) vectorised, shared by both.
//!
//! Every kernel has an AVX-512 path, chosen at run time, an AVX2 + FMA path for the x86 CPUs
//! without AVX-512 (f32 and int8), and a portable path with the same arithmetic contract; the
//! tests hold all of them to a plain reference.
//!
//! Modules, lowest first (each uses only those before it): `simd` (feature checks), [`buf`],
//! [`act`], [`gemm`] (its own order is in its documentation), [`attention`].

#![deny(unsafe_op_in_unsafe_fn)]

pub mod act;
pub mod attention;
pub mod buf;
pub mod gemm;
mod simd;

pub use act::Activation;
pub use buf::Backing;
pub use gemm::{Epilogue, PackedWeights, WeightFormat};

/// Whether this CPU runs the AVX2 + FMA paths (and not the AVX-512 ones).
pub fn has_avx2() -> bool {
    simd::avx2() && !simd::avx512()
}

/// Whether this CPU runs the AVX-512 paths (checked once; cheap to call).
pub fn has_avx512() -> bool {
    simd::avx512()
}

/// Whether this CPU runs the int8 dot-product path (AVX-512 VNNI).
pub fn has_avx512_vnni() -> bool {
    simd::avx512_vnni()
}

/// Whether this CPU runs the bf16 dot-product path (AVX-512 BF16).
pub fn has_avx512_bf16() -> bool {
    simd::avx512_bf16()
}

/// Whether this CPU runs the f16 path (AVX-512 FP16: Sapphire Rapids and later Xeons).
pub fn has_avx512_fp16() -> bool {
    simd::avx512_fp16()
}

/// Whether this CPU and OS run the bf16 path on AMX tiles (Sapphire Rapids and later Xeons).
pub fn has_amx_bf16() -> bool {
    gemm::amx::bf16_available()
}

/// Whether this CPU and OS run the int8 path on AMX tiles.
pub fn has_amx_int8() -> bool {
    gemm::amx::int8_available()
}
