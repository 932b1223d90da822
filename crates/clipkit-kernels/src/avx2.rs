//! The AVX2 + FMA paths, for the x86-64 CPUs without AVX-512 (Zen 1–3, Intel's client
//! cores before and after Ice Lake): without them the packed GEMM fell back to the portable
//! loops and ran at 29 GFLOP/s on a 2-core Zen 3, a sixth of its FMA peak.
//!
//! Same panel layout, tile contract and epilogue as the AVX-512 kernels in [`crate::gemm`]:
//! a 64-column panel is eight 8-float vectors, more than the 16 `ymm` registers hold for
//! several rows, so a tile walks it as four strips of 16 columns, each `R ≤ 6` rows × 2
//! vectors of accumulators (the classic 6×16 Haswell micro-kernel). The rows of `a` a tile
//! reads (6 × 768 floats at most) stay in L1 across the four strips.

use std::arch::x86_64::*;

use crate::act::{Activation, ERFC_POLY, EXP_POLY, LN2_HI, LN2_LO};
use crate::gemm::{Prefetch, Quant, TileEpilogue, MR, NR};

/// Columns of a panel per strip: two vectors.
const STRIP: usize = 16;

/// `2ⁿ` for integral `n` in `[-150, 128]`, as two factors that are each representable, so the
/// product over- and underflows as `exp` should (AVX-512's `vscalefps` does this in one).
#[inline(always)]
unsafe fn exp2_int(n: __m256) -> (__m256, __m256) {
    let n = _mm256_cvtps_epi32(n);
    let n1 = _mm256_srai_epi32::<1>(n);
    let n2 = _mm256_sub_epi32(n, n1);
    let bias = _mm256_set1_epi32(127);
    let pow = |e: __m256i| _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(e, bias)));
    (pow(n1), pow(n2))
}

/// `exp` to about 1 ulp: the AVX-512 version's reduction and polynomial.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn exp(x: __m256) -> __m256 {
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-104.0)),
        _mm256_set1_ps(89.0),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    let mut p = _mm256_set1_ps(EXP_POLY[0]);
    for &c in &EXP_POLY[1..] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let (s1, s2) = exp2_int(n);
    _mm256_mul_ps(_mm256_mul_ps(p, s1), s2)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn erfc_poly(t: __m256) -> __m256 {
    let mut p = _mm256_set1_ps(ERFC_POLY[0]);
    for &c in &ERFC_POLY[1..] {
        p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(c));
    }
    p
}

/// [`Activation::apply`] on eight lanes, with the scalar version's formulas.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn apply(act: Activation, x: __m256) -> __m256 {
    let one = _mm256_set1_ps(1.0);
    match act {
        Activation::Identity => x,
        Activation::QuickGelu => {
            let e = exp(_mm256_mul_ps(x, _mm256_set1_ps(-1.702)));
            _mm256_div_ps(x, _mm256_add_ps(one, e))
        }
        Activation::Gelu => {
            let z = _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
            let a = _mm256_and_ps(z, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff)));
            let t = _mm256_div_ps(one, _mm256_fmadd_ps(a, _mm256_set1_ps(0.5), one));
            let erfc = _mm256_mul_ps(t, exp(_mm256_fnmadd_ps(a, a, erfc_poly(t))));
            let half_x = _mm256_mul_ps(x, _mm256_set1_ps(0.5));
            let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(z, _mm256_setzero_ps());
            let pos = _mm256_mul_ps(half_x, _mm256_sub_ps(_mm256_set1_ps(2.0), erfc));
            _mm256_blendv_ps(pos, _mm256_mul_ps(half_x, erfc), neg)
        }
        Activation::GeluTanh => {
            let x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
            let y = _mm256_mul_ps(
                _mm256_fmadd_ps(x3, _mm256_set1_ps(0.044_715), x),
                _mm256_set1_ps(0.797_884_6),
            );
            let e = exp(_mm256_mul_ps(y, _mm256_set1_ps(-2.0)));
            _mm256_div_ps(x, _mm256_add_ps(one, e))
        }
        Activation::Relu => _mm256_max_ps(x, _mm256_setzero_ps()),
    }
}

/// Lane mask for `_mm256_mask{load,store}_ps`: the first `lanes` (≤ 8) lanes set.
#[inline(always)]
unsafe fn lane_mask(lanes: usize) -> __m256i {
    let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes as i32), idx)
}

/// `f(chunk)` over `xs` eight floats at a time, the tail through masked loads and stores.
#[inline(always)]
unsafe fn map_slice(xs: &mut [f32], f: impl Fn(__m256) -> __m256) {
    let mut chunks = xs.chunks_exact_mut(8);
    for c in &mut chunks {
        let p = c.as_mut_ptr();
        _mm256_storeu_ps(p, f(_mm256_loadu_ps(p)));
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let m = lane_mask(rest.len());
        let p = rest.as_mut_ptr();
        _mm256_maskstore_ps(p, m, f(_mm256_maskload_ps(p, m)));
    }
}

#[target_feature(enable = "avx2,fma")]
pub unsafe fn apply_slice(act: Activation, xs: &mut [f32]) {
    map_slice(xs, |v| apply(act, v));
}

#[target_feature(enable = "avx2,fma")]
pub unsafe fn exp_slice(xs: &mut [f32]) {
    map_slice(xs, |v| exp(v));
}

/// A pointer `n` floats on, for addresses that may lie past the end of a strip's valid
/// columns (only ever read through masked loads there).
#[inline(always)]
fn at(p: *const f32, n: usize) -> *const f32 {
    p.wrapping_add(n)
}

/// Finishes one strip (`lanes` valid columns of `8·V`) of `R` rows: adds the earlier passes'
/// partial sums unless `first`, applies the epilogue, stores.
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

/// One `R × cols` tile of `c (+)= a·b` over `kc` steps, then the epilogue: the contract of
/// [`crate::gemm::tile_f32`] (`b` has row stride `ldb`; loads past `cols` are masked, so a
/// narrow `b` such as attention's V is never read past its end).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn tile_f32<const R: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    sstride: usize,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    first: bool,
    epi: Option<&TileEpilogue>,
    pf: Prefetch,
) {
    let mut col = 0;
    while col < cols {
        let lanes = STRIP.min(cols - col);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        if lanes == STRIP {
            for kk in 0..kc {
                // The next pass's lines, spread over the first strip's steps.
                if col == 0 && !pf.0.is_null() {
                    _mm_prefetch::<_MM_HINT_T1>(pf.0.wrapping_add(kk * 64) as *const i8);
                }
                let bp = b.add(col / STRIP * sstride + kk * ldb);
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
                let bp = at(b, col / STRIP * sstride + kk * ldb);
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
        col += STRIP;
    }
    debug_assert!(cols <= NR);
}

/// One int8 tile over the whole depth `kq` (quads) of a panel in 8-column strips
/// (`[NR / 8][kq][8][4]` bytes, see [`crate::int8::to_strips`]), dequantised, then the
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
/// `vphaddd` per row folds them at the end. `a` is one tile of
/// [`crate::int8::quantize_rows_wide`]: step `kk` of row `i` at `kk · MR + i`, for every
/// `R ≤ MR`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn tile_int8<const R: usize>(
    a: *const u64,
    b: *const i8,
    kq: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    q: &Quant,
    epi: Option<&TileEpilogue>,
    pf: Prefetch,
) {
    let mut col = 0;
    // Strips of 8 columns: 2 · R accumulators, the two widened weight vectors and the
    // broadcast fit in 16 registers.
    while col < cols {
        let mut lo = [_mm256_setzero_si256(); R];
        let mut hi = [_mm256_setzero_si256(); R];
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
            let sums = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(lo[i], hi[i]));
            let x = _mm256_cvtepi32_ps(sums);
            accf[i][0] = _mm256_mul_ps(x, _mm256_mul_ps(_mm256_set1_ps(q.row_scales[i]), cs));
        }
        finish_strip::<R, 1>(&mut accf, c, ldc, col, (cols - col).min(8), true, epi);
        col += 8;
    }
}
