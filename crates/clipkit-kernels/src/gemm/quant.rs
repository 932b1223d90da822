//! The activations rounded, per call, to the element types the kernels multiply: bf16 pairs,
//! f16 broadcasts, and int8 quads with per-row scales.
//!
//! int8: weights are quantised once, symmetrically per output column (`w ≈ sw[n]·q`, `q ∈
//! [-127, 127]`, see [`super::pack`]); activations per row here, at run time (`a ≈ sa[m]·p`),
//! stored as `p + 128` because `vpdpbusd` multiplies unsigned by signed bytes (AVX2's kernel
//! takes `p` itself; see [`super::avx2::tile_int8`]). The `+128` is taken back out with the
//! column sums of `q`, computed at packing time: `Σ a·w ≈ sa·sw·(Σ (p+128)·q − 128·Σ q)`.
//! Accumulation is exact in i32, so the only error is the rounding of `a` and `w` to 8 bits.

use rayon::prelude::*;

use super::tile::{k4, quantize, scale_for, to_bf16_bits, to_f16_bits, MR};
#[cfg(target_arch = "x86_64")]
use super::{avx2, avx512};

/// `a` rounded to bf16 (to nearest even) and paired along `k` as the bf16 kernel broadcasts
/// it: `[m][k/2]`. Consecutive bf16 values of a row already are those pairs.
pub(crate) fn bf16_pairs(a: &[f32], m: usize, k: usize) -> Vec<u32> {
    let k2 = k.div_ceil(2);
    let mut out = vec![0u32; m * k2];
    out.par_chunks_mut(k2)
        .zip(a.par_chunks(k))
        .with_min_len(8)
        .for_each(|(dst, src)| bf16_row(src, dst));
    out
}

/// One row of `bf16_pairs`: `dst` holds `src.len() / 2` pairs (rounded up).
pub(crate) fn bf16_row(src: &[f32], dst: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512_bf16() && src.len().is_multiple_of(2) {
        // SAFETY: the CPU has AVX-512 BF16; `dst` holds `k / 2` pairs for `k` floats.
        unsafe { avx512::to_bf16_row(src, dst) };
        return;
    }
    for (d, pair) in dst.iter_mut().zip(src.chunks(2)) {
        let lo = to_bf16_bits(pair[0]);
        let hi = pair.get(1).map_or(0, |&v| to_bf16_bits(v));
        *d = lo | (hi << 16);
    }
}

/// `a` rounded to f16 (to nearest even, clamped to f16's range), each value twice in a u32
/// (`[m][k]`): a 32-bit broadcast from memory is a plain load, a 16-bit one costs a shuffle
/// as well on Intel cores.
pub(crate) fn f16_broadcasts(a: &[f32]) -> Vec<u32> {
    let mut out = vec![0u32; a.len()];
    out.par_chunks_mut(4096)
        .zip(a.par_chunks(4096))
        .for_each(|(dst, src)| {
            #[cfg(target_arch = "x86_64")]
            if crate::simd::avx512() {
                // SAFETY: the CPU has AVX-512; `dst` and `src` have the same length.
                unsafe { avx512::to_f16_broadcasts(src, dst) };
                return;
            }
            for (d, &v) in dst.iter_mut().zip(src) {
                let h = to_f16_bits(v) as u32;
                *d = h | (h << 16);
            }
        });
    out
}

/// Whether this CPU's int8 kernel is AVX2's, which takes its activations as signed `p` (see
/// [`super::avx2::tile_int8`]) rather than as `p + 128`.
pub(crate) fn signed_activations() -> bool {
    crate::simd::avx2() && !crate::simd::avx512_vnni()
}

/// [`quantize_rows`] for the AVX2 kernel: each quad as four signed `p` in i16 (no `+ 128`),
/// the form `vpmaddwd` multiplies (see [`super::avx2::tile_int8`]), and the rows of each
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

/// The largest `|x|` of `src`: whole vectors on the fastest path this CPU has, the rest here.
fn max_abs(src: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    let (max, done) = if crate::simd::avx512() {
        // SAFETY: the CPU has AVX-512.
        unsafe { avx512::max_abs(src) }
    } else if crate::simd::avx2() {
        // SAFETY: the CPU has AVX2.
        unsafe { avx2::max_abs(src) }
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
        unsafe { avx512::quantize_row(src, s, dst) }
    } else if crate::simd::avx2() {
        // SAFETY: the CPU has AVX2; `dst` as above.
        unsafe { avx2::quantize_row(src, s, dst) }
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

#[cfg(test)]
mod tests {
    use super::*;

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
