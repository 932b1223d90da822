//! int8 weights and activations for the packed GEMM (AVX-512 VNNI `vpdpbusd`, or AVX2).
//!
//! Weights are quantised once, symmetrically per output column (`w ≈ sw[n]·q`, `q ∈ [-127,
//! 127]`); activations per row at run time (`a ≈ sa[m]·p`), stored as `p + 128` because
//! `vpdpbusd` multiplies unsigned by signed bytes (AVX2's kernel takes `p` itself; see
//! [`crate::avx2::tile_int8`]). The `+128` is taken back out with the
//! column sums of `q`, computed at packing time:
//! `Σ a·w ≈ sa·sw·(Σ (p+128)·q − 128·Σ q)`. Accumulation is exact in i32, so the only error
//! is the rounding of `a` and `w` to 8 bits.

use rayon::prelude::*;

use crate::buf::Buf;
use crate::gemm::{MR, NR};

/// Quantised, packed weights: `[panel][k/4][NR][4]` bytes, with per-column scales and sums.
pub(crate) struct Int8Panels {
    pub data: Buf<i8>,
    pub scales: Vec<f32>,
    /// `128 · Σ_k q[n][k]`, as f32 for the epilogue.
    pub offsets: Vec<f32>,
}

pub(crate) fn k4(k: usize) -> usize {
    k.div_ceil(4)
}

/// Whether this CPU's int8 kernel is AVX2's, which takes its activations as signed `p` (see
/// [`crate::avx2::tile_int8`]) rather than as `p + 128`.
pub(crate) fn signed_activations() -> bool {
    crate::simd::avx2() && !crate::simd::avx512_vnni()
}

pub(crate) fn pack(w: &[f32], n: usize, k: usize) -> Int8Panels {
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

/// Panels of [`pack`] (`[panel][k/4][NR][4]`) rearranged for the AVX2 kernel:
/// `[panel][NR / 8][k/4][8][4]`, so each 8-column strip it walks is one contiguous stream.
pub(crate) fn to_strips(data: &[u8], n: usize, k: usize) -> Vec<i8> {
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

/// [`quantize_rows`] for the AVX2 kernel: each quad as four signed `p` in i16 (no `+ 128`),
/// the form `vpmaddwd` multiplies (see [`crate::avx2::tile_int8`]), and the rows of each
/// `MR`-row tile interleaved by step (`[m / MR][k/4][MR]`, rows past `m` zero): the kernel's
/// broadcasts for one step are then `MR` neighbours at fixed offsets from one pointer, not
/// `MR` rows a whole row apart (each needing its own address arithmetic per step, which
/// left the loop bound by instruction dispatch rather than by its multiplies). Tile `t`
/// starts at `t · MR · k/4`, which is where row `t · MR` starts in the row-major form.
pub(crate) fn quantize_rows_wide(a: &[f32], m: usize, k: usize) -> (Vec<u64>, Vec<f32>) {
    let kq = k4(k);
    let scales = row_scales(a, m, k);
    let mut out = vec![0u64; m.div_ceil(MR) * MR * kq];
    out.par_chunks_mut(MR * kq).enumerate().for_each_init(
        || vec![0x8080_8080u32; kq], // padding bytes past `k` read as zero
        |quads, (t, tile)| {
            for i in 0..MR.min(m - t * MR) {
                let r = t * MR + i;
                quantize_row(&a[r * k..][..k], scales[r], quads);
                for (kk, &q) in quads.iter().enumerate() {
                    tile[kk * MR + i] = widen(q);
                }
            }
        },
    );
    (out, scales)
}

/// One quad of `p + 128` bytes → four signed `p` as i16 lanes.
#[inline]
fn widen(quad: u32) -> u64 {
    let bytes = (quad ^ 0x8080_8080).to_le_bytes();
    let lanes = bytes.map(|b| b as i8 as i16 as u16 as u64);
    lanes[0] | lanes[1] << 16 | lanes[2] << 32 | lanes[3] << 48
}

/// Round half to even without a libm call: adding and removing 1.5·2²³ leaves an f32 of
/// magnitude ≤ 127 rounded to an integer in the default rounding mode (the same result as
/// `round_ties_even`, which compiles to a call to `rintf` on baseline x86-64).
#[inline]
fn quantize(x: f32, inv_scale: f32) -> i8 {
    const MAGIC: f32 = 12_582_912.0;
    let v = (x * inv_scale).clamp(-127.0, 127.0);
    ((v + MAGIC) - MAGIC) as i8
}

/// Activations `[m, k]` → (`[m][k/4]` quads of `p + 128` bytes, per-row scales).
pub(crate) fn quantize_rows(a: &[f32], m: usize, k: usize) -> (Vec<u32>, Vec<f32>) {
    let kq = k4(k);
    let scales = row_scales(a, m, k);
    let mut out = vec![0x8080_8080u32; m * kq];
    out.par_chunks_mut(kq)
        .zip(&scales)
        .zip(a.par_chunks(k))
        .with_min_len(8)
        .for_each(|((dst, &s), src)| quantize_row(src, s, dst));
    (out, scales)
}

/// Each row's scale: its largest magnitude over 127 (1 for a row of zeros).
pub(crate) fn row_scales(a: &[f32], m: usize, k: usize) -> Vec<f32> {
    let mut scales = vec![1f32; m];
    scales
        .par_iter_mut()
        .zip(a.par_chunks(k))
        .with_min_len(8)
        .for_each(|(scale, src)| *scale = scale_for(max_abs(src)));
    scales
}

/// The scale that maps a largest magnitude `max` to 127.
fn scale_for(max: f32) -> f32 {
    if max > 0.0 {
        max / 127.0
    } else {
        1.0
    }
}

/// The largest `|x|` of `src`: whole vectors on the fastest path this CPU has, the rest here.
fn max_abs(src: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    let (max, done) = if crate::simd::avx512() {
        // SAFETY: the CPU has AVX-512.
        unsafe { x86::max_abs(src) }
    } else if crate::simd::avx2() {
        // SAFETY: the CPU has AVX2.
        unsafe { x86_avx2::max_abs(src) }
    } else {
        (0.0, 0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let (max, done) = (0f32, 0);
    src[done..].iter().fold(max, |m, &x| m.max(x.abs()))
}

/// One row to `p + 128` bytes at scale `s`; `dst` has room for `src.len()` bytes. The vector
/// paths do whole vectors, the rest is finished here with the same rounding.
pub(crate) fn quantize_row(src: &[f32], s: f32, dst: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    let done = if crate::simd::avx512() {
        // SAFETY: the CPU has AVX-512; `dst` has room for `k` bytes (rounded up to 4).
        unsafe { x86::quantize_row(src, s, dst) }
    } else if crate::simd::avx2() {
        // SAFETY: the CPU has AVX2; `dst` as above.
        unsafe { x86_avx2::quantize_row(src, s, dst) }
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    let bytes: &mut [u8] = bytemuck_u8(dst);
    for (b, &x) in bytes.iter_mut().zip(src).skip(done) {
        *b = (quantize(x, 1.0 / s) as i32 + 128) as u8;
    }
}

fn bytemuck_u8(v: &mut [u32]) -> &mut [u8] {
    // SAFETY: u32 has no padding and any byte pattern is a valid u8; the length is exact.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, v.len() * 4) }
}

/// Portable reference of one row × one panel, for machines without VNNI: exact i32 sums.
pub(crate) fn dot_panel(a: &[u32], b: &[i8], kq: usize, acc: &mut [i32; NR]) {
    for (kk, &quad) in a[..kq].iter().enumerate() {
        let ab = quad.to_le_bytes();
        let brow = &b[kk * NR * 4..][..NR * 4];
        for (j, x) in acc.iter_mut().enumerate() {
            for q in 0..4 {
                *x += ab[q] as i32 * brow[j * 4 + q] as i32;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// The largest `|x|` over the whole 16-float vectors of `src`, and how many floats that
    /// covered.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn max_abs(src: &[f32]) -> (f32, usize) {
        let mut vmax = _mm512_setzero_ps();
        let chunks = src.chunks_exact(16);
        let done = src.len() - chunks.remainder().len();
        for c in chunks {
            vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(c.as_ptr())));
        }
        (_mm512_reduce_max_ps(vmax), done)
    }

    /// `src` to `p + 128` bytes at scale `s`, 16 at a time; returns how many it did.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn quantize_row(src: &[f32], s: f32, dst: &mut [u32]) -> usize {
        let inv = _mm512_set1_ps(1.0 / s);
        let bias = _mm512_set1_epi32(128);
        let out = dst.as_mut_ptr() as *mut u8;
        let mut i = 0;
        while i + 16 <= src.len() {
            let x = _mm512_mul_ps(_mm512_loadu_ps(src.as_ptr().add(i)), inv);
            // Round to nearest even (the default MXCSR mode), then shift to unsigned.
            let q = _mm512_add_epi32(_mm512_cvtps_epi32(x), bias);
            _mm_storeu_si128(out.add(i) as *mut __m128i, _mm512_cvtusepi32_epi8(q));
            i += 16;
        }
        i
    }
}

#[cfg(target_arch = "x86_64")]
mod x86_avx2 {
    use std::arch::x86_64::*;

    /// [`super::x86::max_abs`] with 8-float vectors.
    #[target_feature(enable = "avx2")]
    pub unsafe fn max_abs(src: &[f32]) -> (f32, usize) {
        let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let mut vmax = _mm256_setzero_ps();
        let chunks = src.chunks_exact(8);
        let done = src.len() - chunks.remainder().len();
        for c in chunks {
            vmax = _mm256_max_ps(vmax, _mm256_and_ps(abs, _mm256_loadu_ps(c.as_ptr())));
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), vmax);
        (lanes.iter().fold(0f32, |m, &x| m.max(x)), done)
    }

    /// [`super::x86::quantize_row`] 32 values at a time: packed to bytes with saturation
    /// (which the row scale makes a no-op) and put back in order.
    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize_row(src: &[f32], s: f32, dst: &mut [u32]) -> usize {
        let inv = _mm256_set1_ps(1.0 / s);
        let bias = _mm256_set1_epi32(128);
        let out = dst.as_mut_ptr() as *mut u8;
        let q = |i: usize| {
            let x = _mm256_mul_ps(_mm256_loadu_ps(src.as_ptr().add(i)), inv);
            _mm256_add_epi32(_mm256_cvtps_epi32(x), bias)
        };
        let mut i = 0;
        while i + 32 <= src.len() {
            let lo = _mm256_packs_epi32(q(i), q(i + 8));
            let hi = _mm256_packs_epi32(q(i + 16), q(i + 24));
            let bytes = _mm256_packus_epi16(lo, hi);
            // The packs work within 128-bit lanes: dwords 0,4,1,5,2,6,3,7 back to 0..7.
            let ordered =
                _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(out.add(i) as *mut __m256i, ordered);
            i += 32;
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_rounding_is_round_half_to_even_with_clamping() {
        let mut x = -140.0f32;
        while x <= 140.0 {
            for v in [x, x + 1e-4, x - 1e-4] {
                let want = v.round_ties_even().clamp(-127.0, 127.0) as i8;
                assert_eq!(quantize(v, 1.0), want, "{v}");
            }
            x += 0.125;
        }
    }

    #[test]
    fn rows_quantise_to_the_same_bytes_on_both_paths() {
        let a: Vec<f32> = (0..3 * 37)
            .map(|i| ((i * 7919) % 201) as f32 / 50.0 - 2.0)
            .collect();
        let (q, s) = quantize_rows(&a, 3, 37);
        for r in 0..3 {
            let row = &a[r * 37..][..37];
            let max = row.iter().fold(0f32, |m, &x| m.max(x.abs()));
            assert!((s[r] - max / 127.0).abs() <= 1e-7 * max);
            let bytes: Vec<u8> = q[r * 10..][..10]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            for (kk, &x) in row.iter().enumerate() {
                let want = ((x / s[r]).round_ties_even() as i32 + 128) as u8;
                assert!(
                    bytes[kk].abs_diff(want) <= 1,
                    "row {r} k {kk}: {} vs {want}",
                    bytes[kk]
                );
            }
            // Padding quads read as zero activations.
            assert!(bytes[37..].iter().all(|&b| b == 128));
        }
    }
}
