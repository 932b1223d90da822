//! Packing a layer's weights, once at load time, into the panels the kernels this CPU runs
//! stream: `NR` output columns per panel, laid out step by step along `k` in each kernel's
//! element type (or retiled for AMX, or cut into AVX2's strips).

use rayon::prelude::*;

use super::amx;
use super::quant::signed_activations;
use super::tile::{k4, quantize, scale_for, to_bf16_bits, to_f16_bits, NR, STRIP};
use crate::buf::Buf;

/// A layer's packed weights, in the layout of the kernel that multiplies them.
pub(crate) enum Panels {
    /// `[panel][k][NR]`.
    F32(Buf<f32>),
    /// `[panel][NR / 16][k][16]`: AVX2's 16-column strips, each contiguous.
    F32Strips(Buf<f32>),
    /// `[panel][k/2][NR]` pairs of bf16 (the even `k` in the low half), as `vdpbf16ps` reads
    /// them; `k` is padded to even with zeros.
    Bf16(Buf<u32>),
    /// The bf16 pairs retiled for AMX: see [`amx::retile`].
    Bf16Amx(Buf<u32>),
    Int8(Int8Panels),
    /// `[panel][NR / 8][k/4][8][4]`: AVX2's 8-column strips, each contiguous.
    Int8Strips(Int8Panels),
    /// The int8 quads retiled for AMX, with the same scales and offsets.
    Int8Amx(Int8Panels),
    /// `[panel][k][NR]` f16 bits.
    F16(Buf<u16>),
}

/// Quantised, packed weights: `[panel][k/4][NR][4]` bytes (or a layout derived from it), with
/// per-column scales and sums.
pub(crate) struct Int8Panels {
    pub data: Buf<i8>,
    pub scales: Vec<f32>,
    /// `128 · Σ_k q[n][k]`, as f32 for the epilogue.
    pub offsets: Vec<f32>,
}

impl Panels {
    /// Bytes held (what replaces the f32 weight tensor in memory).
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Panels::F32(d) | Panels::F32Strips(d) => d.len() * 4,
            Panels::Bf16(d) | Panels::Bf16Amx(d) => d.len() * 4,
            Panels::Int8(p) | Panels::Int8Amx(p) | Panels::Int8Strips(p) => {
                p.data.len() + p.scales.len() * 8
            }
            Panels::F16(d) => d.len() * 2,
        }
    }
}

/// Whether f32 layers are packed in [`Panels::F32Strips`] for the AVX2 kernel.
pub(crate) fn strips_kernel() -> bool {
    crate::simd::avx2() && !crate::simd::avx512()
}

/// `w` (`[n, k]`) in f32 panels, or AVX2's strips where that is the kernel.
pub(crate) fn f32(w: &[f32], n: usize, k: usize) -> Panels {
    let np = n.div_ceil(NR);
    let strips = strips_kernel();
    let mut data = vec![0f32; np * k * NR];
    data.par_chunks_mut(k * NR)
        .enumerate()
        .for_each(|(p, panel)| {
            for j in 0..NR.min(n - p * NR) {
                let row = &w[(p * NR + j) * k..][..k];
                for (kk, &v) in row.iter().enumerate() {
                    if strips {
                        panel[(j / STRIP) * k * STRIP + kk * STRIP + j % STRIP] = v;
                    } else {
                        panel[kk * NR + j] = v;
                    }
                }
            }
        });
    if strips {
        Panels::F32Strips(Buf::Owned(data))
    } else {
        Panels::F32(Buf::Owned(data))
    }
}

/// `w` (`[n, k]`) in bf16-pair panels, retiled for AMX where the CPU has it.
pub(crate) fn bf16(w: &[f32], n: usize, k: usize) -> Panels {
    let np = n.div_ceil(NR);
    let k2 = k.div_ceil(2);
    let mut data = vec![0u32; np * k2 * NR];
    data.par_chunks_mut(k2 * NR)
        .enumerate()
        .for_each(|(p, panel)| {
            for j in 0..NR.min(n - p * NR) {
                let row = &w[(p * NR + j) * k..][..k];
                for (kk2, pair) in row.chunks(2).enumerate() {
                    let lo = to_bf16_bits(pair[0]);
                    let hi = pair.get(1).map_or(0, |&v| to_bf16_bits(v));
                    panel[kk2 * NR + j] = lo | (hi << 16);
                }
            }
        });
    if amx::bf16_available() {
        let bytes = Buf::Owned(data);
        Panels::Bf16Amx(Buf::Owned(amx::retile(bytes.as_bytes(), n, k2)))
    } else {
        Panels::Bf16(Buf::Owned(data))
    }
}

/// `w` (`[n, k]`) quantised to int8 panels, retiled for AMX or cut into AVX2's strips where
/// that is the kernel.
pub(crate) fn int8(w: &[f32], n: usize, k: usize) -> Panels {
    let mut p = int8_panels(w, n, k);
    if amx::int8_available() {
        let tiles = amx::retile(p.data.as_bytes(), n, k4(k));
        p.data = Buf::Owned(
            tiles
                .iter()
                .flat_map(|q| q.to_ne_bytes().map(|b| b as i8))
                .collect(),
        );
        Panels::Int8Amx(p)
    } else if signed_activations() {
        p.data = Buf::Owned(to_strips(p.data.as_bytes(), n, k));
        Panels::Int8Strips(p)
    } else {
        Panels::Int8(p)
    }
}

/// `w` (`[n, k]`) in f16 panels.
pub(crate) fn f16(w: &[f32], n: usize, k: usize) -> Panels {
    let np = n.div_ceil(NR);
    let mut data = vec![0u16; np * k * NR];
    data.par_chunks_mut(k * NR)
        .enumerate()
        .for_each(|(p, panel)| {
            for j in 0..NR.min(n - p * NR) {
                let row = &w[(p * NR + j) * k..][..k];
                for (kk, &v) in row.iter().enumerate() {
                    panel[kk * NR + j] = to_f16_bits(v);
                }
            }
        });
    Panels::F16(Buf::Owned(data))
}

/// Weights quantised symmetrically per output column (`w ≈ sw[n]·q`, `q ∈ [-127, 127]`), in
/// `[panel][k/4][NR][4]` quads, with the column sums that take the activations' `+ 128` back
/// out (see [`super::quant`]).
fn int8_panels(w: &[f32], n: usize, k: usize) -> Int8Panels {
    let np = n.div_ceil(NR);
    let kq = k4(k);
    let mut scales = vec![1f32; np * NR];
    let mut offsets = vec![0f32; np * NR];
    let mut data = vec![0i8; np * kq * NR * 4];
    // One panel per task: each column's scale, its quantised values and their sum in two
    // passes over the column (this was a serial loop, most of an int8 load).
    data.par_chunks_mut(kq * NR * 4)
        .zip(scales.par_chunks_mut(NR))
        .zip(offsets.par_chunks_mut(NR))
        .enumerate()
        .for_each(|(p, ((panel, scales), offsets))| {
            for j in 0..NR.min(n - p * NR) {
                let row = &w[(p * NR + j) * k..][..k];
                let s = scale_for(row.iter().fold(0f32, |m, &x| m.max(x.abs())));
                let inv = 1.0 / s;
                let mut sum = 0i32;
                for (kk, &x) in row.iter().enumerate() {
                    let q = quantize(x, inv);
                    sum += i32::from(q);
                    panel[((kk / 4) * NR + j) * 4 + kk % 4] = q;
                }
                scales[j] = s;
                offsets[j] = 128.0 * sum as f32;
            }
        });
    Int8Panels {
        data: Buf::Owned(data),
        scales,
        offsets,
    }
}

/// Panels of [`int8_panels`] (`[panel][k/4][NR][4]`) rearranged for the AVX2 kernel:
/// `[panel][NR / 8][k/4][8][4]`, so each 8-column strip it walks is one contiguous stream.
fn to_strips(data: &[u8], n: usize, k: usize) -> Vec<i8> {
    let kq = k4(k);
    let mut out = vec![0i8; data.len()];
    let panel = kq * NR * 4;
    debug_assert_eq!(data.len(), n.div_ceil(NR) * panel);
    out.par_chunks_mut(panel)
        .zip(data.par_chunks(panel))
        .for_each(|(dst, src)| {
            for s in 0..NR / 8 {
                for kk in 0..kq {
                    let from = &src[(kk * NR + 8 * s) * 4..][..32];
                    let to = &mut dst[(s * kq + kk) * 32..][..32];
                    for (d, &b) in to.iter_mut().zip(from) {
                        *d = b as i8;
                    }
                }
            }
        });
    out
}
