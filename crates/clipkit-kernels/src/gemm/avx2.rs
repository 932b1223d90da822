//! The AVX2 + FMA kernels, for the x86-64 CPUs without AVX-512 (Zen 1–3, Intel's client
//! cores before and after Ice Lake): without them the packed GEMM fell back to the portable
//! loops and ran at 29 GFLOP/s on a 2-core Zen 3, a sixth of its FMA peak.
//!
//! Same tile contract and epilogue as the AVX-512 kernels ([`super::tile`]): a 64-column
//! panel is eight 8-float vectors, more than the 16 `ymm` registers hold for several rows, so
//! a tile walks it as four strips of 16 columns, each `R ≤ 6` rows × 2 vectors of
//! accumulators (the classic 6×16 Haswell micro-kernel). The rows of `a` a tile reads
//! (6 × 768 floats at most) stay in L1 across the four strips. Also here: the AVX2 versions
//! of the int8 row quantisation.
//!
//! Every function here is compiled for AVX2 (and FMA); the callers check the CPU.

use std::arch::x86_64::*;

use super::tile::{Quant, Tile, TileEpilogue, MR, NR, STRIP};
use crate::act::avx2::{apply, lane_mask};

/// A pointer `n` floats on, for addresses that may lie past the end of a strip's valid
/// columns (only ever read through masked loads there).
#[inline(always)]
fn at(p: *const f32, n: usize) -> *const f32 {
    p.wrapping_add(n)
}

/// Finishes one strip (`lanes` valid columns of `8·V`) of `R` rows: adds the earlier passes'
/// partial sums unless `first`, applies the epilogue, stores.
///
/// # Safety
/// The CPU has AVX2 and FMA (this is inlined into such functions). `c` is valid for writes
/// (and, unless `first`, reads) of columns `col..col + lanes` of `R` rows with row stride
/// `ldc`; with `epi`, its bias (if not null) for those columns and its residual (if not null)
/// for that block at the same stride.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn finish_strip<const R: usize, const V: usize>(
    acc: &mut [[__m256; V]; R],
    c: *mut f32,
    ldc: usize,
    col: usize,
    lanes: usize,
    first: bool,
    epi: Option<&TileEpilogue>,
) {
    let full = lanes == 8 * V;
    // SAFETY: AVX2 is the caller's guarantee; every load and store below touches only the
    // first `lanes` columns of the strip (masked unless `full`), inside the contract's ranges.
    unsafe {
        let masks: [__m256i; V] =
            std::array::from_fn(|v| lane_mask(lanes.saturating_sub(8 * v).min(8)));
        let load = |p: *const f32, v: usize| {
            if full {
                _mm256_loadu_ps(p)
            } else {
                _mm256_maskload_ps(p, masks[v])
            }
        };
        for (i, row) in acc.iter_mut().enumerate() {
            for (v, x) in row.iter_mut().enumerate() {
                let off = i * ldc + col + 8 * v;
                let p = c.add(off);
                if !first {
                    *x = _mm256_add_ps(*x, load(p, v));
                }
                if let Some(e) = epi {
                    if !e.bias.is_null() {
                        *x = _mm256_add_ps(*x, load(at(e.bias, col + 8 * v), v));
                    }
                    *x = apply(e.act, *x);
                    if !e.residual.is_null() {
                        *x = _mm256_add_ps(*x, load(at(e.residual, off), v));
                    }
                }
                if full {
                    _mm256_storeu_ps(p, *x);
                } else {
                    _mm256_maskstore_ps(p, masks[v], *x);
                }
            }
        }
    }
}

/// The f32 tile (`R = t.h` rows): strip `s` of `b` starts `s · strip_stride` floats on
/// (`STRIP` for a plain row-major `b`, `k · STRIP` for a panel packed in strips), its steps
/// `t.ldb` apart. Loads past `t.cols` are masked, so a narrow `b` such as attention's V is
/// never read past its end.
///
/// # Safety
/// The CPU has AVX2 and FMA; `t.a` holds `R` rows of `t.kc` at stride `t.lda`, `t.b` the
/// `t.kc` steps of every strip up to `t.cols`; `t.c` and `t.epi` as in [`finish_strip`] for
/// columns `0..t.cols`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn tile_f32<const R: usize>(t: &Tile<f32, f32>, strip_stride: usize) {
    let Tile {
        a,
        lda,
        b,
        ldb,
        kc,
        c,
        ldc,
        cols,
        first,
        epi,
        pf,
        ..
    } = *t;
    let (a, b) = (a.as_ptr(), b.as_ptr());
    let mut col = 0;
    while col < cols {
        let lanes = STRIP.min(cols - col);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        // SAFETY: the reads stay inside `t.a` and `t.b` (masked past `cols`), the stores
        // inside `c`'s block, and a prefetch never faults: the caller's contract.
        unsafe {
            if lanes == STRIP {
                for kk in 0..kc {
                    // The next pass's lines, spread over the first strip's steps.
                    if col == 0 && !pf.0.is_null() {
                        _mm_prefetch::<_MM_HINT_T1>(pf.0.wrapping_add(kk * 64) as *const i8);
                    }
                    let bp = b.add(col / STRIP * strip_stride + kk * ldb);
                    let b0 = _mm256_loadu_ps(bp);
                    let b1 = _mm256_loadu_ps(bp.add(8));
                    for (i, row) in acc.iter_mut().enumerate() {
                        let av = _mm256_broadcast_ss(&*a.add(i * lda + kk));
                        row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                        row[1] = _mm256_fmadd_ps(av, b1, row[1]);
                    }
                }
            } else {
                let m = [lane_mask(lanes.min(8)), lane_mask(lanes.saturating_sub(8))];
                for kk in 0..kc {
                    let bp = at(b, col / STRIP * strip_stride + kk * ldb);
                    let b0 = _mm256_maskload_ps(bp, m[0]);
                    let b1 = _mm256_maskload_ps(at(bp, 8), m[1]);
                    for (i, row) in acc.iter_mut().enumerate() {
                        let av = _mm256_broadcast_ss(&*a.add(i * lda + kk));
                        row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                        row[1] = _mm256_fmadd_ps(av, b1, row[1]);
                    }
                }
            }
            finish_strip::<R, 2>(&mut acc, c, ldc, col, lanes, first, epi);
        }
        col += STRIP;
    }
    debug_assert!(cols <= NR);
}

/// One int8 tile over the whole depth (`t.kc` quads) of a panel in 8-column strips
/// (`[NR / 8][kq][8][4]` bytes, see [`super::pack`]'s `to_strips`), dequantised, then the
/// epilogue: the contract of the VNNI kernel, with the same exact i32 sums.
///
/// `vpmaddubsw` multiplies unsigned by signed bytes and adds pairs into i16 with saturation,
/// which `p + 128` against weights of up to ±127 would pass (2 · 255 · 127 > 32767); ONNX
/// Runtime accepts that. Keeping it exact with bytes takes a `vpsignb` per row and step
/// (`|w| · p·sign(w)`), and on Zen 3 that third op on the multiply pipes cost a third of the
/// throughput. So the products are formed in i16 instead: the activations come as four i16
/// per quad (`a`, widened once per matmul), each weight vector is widened once per step for
/// all rows (`vpmovsxbw`, cols 0–3 and 4–7), and `vpmaddwd` adds the pairs into i32 directly:
/// two multiply-adds per row and step, as many as the byte path without its sign, and exact.
/// Each i32 lane holds half a column's sum (`k` pairs 0–1 or 2–3 of every quad); one
/// `vphaddd` per row folds them at the end. `t.a` is one tile of
/// [`super::quant::quantize_rows_wide`]: step `kk` of row `i` at `kk · MR + i`, for every
/// `R ≤ MR` (`t.lda` is not used).
///
/// # Safety
/// The CPU has AVX2 and FMA; `t.a` holds a whole interleaved tile of `t.kc` steps, `t.b` the
/// whole panel, `q` a panel's column scales and `R` row scales; `t.c` and `t.epi` as in
/// [`finish_strip`] for columns `0..t.cols`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn tile_int8<const R: usize>(t: &Tile<u64, i8>, q: &Quant) {
    let Tile {
        a,
        b,
        kc: kq,
        c,
        ldc,
        cols,
        epi,
        pf,
        ..
    } = *t;
    let (a, b) = (a.as_ptr(), b.as_ptr());
    let mut col = 0;
    // Strips of 8 columns: 2 · R accumulators, the two widened weight vectors and the
    // broadcast fit in 16 registers.
    while col < cols {
        let mut lo = [_mm256_setzero_si256(); R];
        let mut hi = [_mm256_setzero_si256(); R];
        // SAFETY: the reads stay inside `t.a`, `t.b` and `q`, the stores inside `c`'s block,
        // and a prefetch never faults: the caller's contract.
        unsafe {
            for kk in 0..kq {
                if col == 0 && !pf.0.is_null() {
                    _mm_prefetch::<_MM_HINT_T1>(pf.0.wrapping_add(kk * 64) as *const i8);
                }
                let wp = b.add(col * 4 * kq + kk * 32);
                let w_lo = _mm256_cvtepi8_epi16(_mm_loadu_si128(wp as *const __m128i));
                let w_hi = _mm256_cvtepi8_epi16(_mm_loadu_si128(wp.add(16) as *const __m128i));
                for i in 0..R {
                    let p = _mm256_set1_epi64x(*a.add(kk * MR + i) as i64);
                    lo[i] = _mm256_add_epi32(lo[i], _mm256_madd_epi16(w_lo, p));
                    hi[i] = _mm256_add_epi32(hi[i], _mm256_madd_epi16(w_hi, p));
                }
            }
            let cs = _mm256_loadu_ps(q.col_scales.as_ptr().add(col));
            let mut accf = [[_mm256_setzero_ps(); 1]; R];
            for i in 0..R {
                // [c0 c1 c4 c5 | c2 c3 c6 c7] → columns in order.
                let sums =
                    _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(lo[i], hi[i]));
                let x = _mm256_cvtepi32_ps(sums);
                accf[i][0] = _mm256_mul_ps(x, _mm256_mul_ps(_mm256_set1_ps(q.row_scales[i]), cs));
            }
            finish_strip::<R, 1>(&mut accf, c, ldc, col, (cols - col).min(8), true, epi);
        }
        col += 8;
    }
}

/// The largest `|x|` over the whole 8-float vectors of `src`, and how many floats that
/// covered.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn max_abs(src: &[f32]) -> (f32, usize) {
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut vmax = _mm256_setzero_ps();
    let chunks = src.chunks_exact(8);
    let done = src.len() - chunks.remainder().len();
    for c in chunks {
        // SAFETY: `c` is 8 floats.
        vmax = _mm256_max_ps(
            vmax,
            _mm256_and_ps(abs, unsafe { _mm256_loadu_ps(c.as_ptr()) }),
        );
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` is 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), vmax) };
    (lanes.iter().fold(0f32, |m, &x| m.max(x)), done)
}

/// `src` to `p + 128` bytes at scale `s`, 32 at a time (packed to bytes with saturation,
/// which the row scale makes a no-op, and put back in order); returns how many it did.
///
/// # Safety
/// The CPU has AVX2; `dst` has room for `src.len()` bytes.
#[target_feature(enable = "avx2")]
pub unsafe fn quantize_row(src: &[f32], s: f32, dst: &mut [u32]) -> usize {
    let inv = _mm256_set1_ps(1.0 / s);
    let bias = _mm256_set1_epi32(128);
    let out = dst.as_mut_ptr() as *mut u8;
    // SAFETY: called below only with `i + 8 ≤ src.len()`.
    let q = |i: usize| unsafe {
        let x = _mm256_mul_ps(_mm256_loadu_ps(src.as_ptr().add(i)), inv);
        _mm256_add_epi32(_mm256_cvtps_epi32(x), bias)
    };
    let mut i = 0;
    while i + 32 <= src.len() {
        let lo = _mm256_packs_epi32(q(i), q(i + 8));
        let hi = _mm256_packs_epi32(q(i + 16), q(i + 24));
        let bytes = _mm256_packus_epi16(lo, hi);
        // The packs work within 128-bit lanes: dwords 0,4,1,5,2,6,3,7 back to 0..7.
        let ordered = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: 32 bytes of `dst` from `i` (the contract).
        unsafe { _mm256_storeu_si256(out.add(i) as *mut __m256i, ordered) };
        i += 32;
    }
    i
}
