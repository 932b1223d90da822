//! The AVX-512 kernels: the f32 (F), bf16 (BF16 `vdpbf16ps`), int8 (VNNI `vpdpbusd`) and f16
//! (FP16 `vfmadd231ph`) tiles, the epilogue store they and the AMX path share, and the
//! vectorised operand conversions (bf16 and f16 rounding, int8 quantisation).
//!
//! Each tile holds `R ≤ MR` rows × four 16-lane vectors of accumulators (two for f16, whose
//! vectors hold 32 columns), walks the pass's depth with one broadcast of `a` per row and
//! step, and runs the epilogue on the registers before storing them.
//!
//! Every function here is compiled for its instruction set; the callers check the CPU.

use std::arch::x86_64::*;

use super::tile::{to_f16_bits, Prefetch, Quant, Tile, TileEpilogue, F16_MAX, NR};
use crate::act::avx512 as act;

/// The `kk`-th cache line after `pf` into L2 (a hint: it never faults).
///
/// # Safety
/// The CPU has SSE (every x86-64 does); `pf` need not point at anything.
#[inline(always)]
unsafe fn prefetch_line(pf: Prefetch, kk: usize) {
    if !pf.0.is_null() {
        // SAFETY: a prefetch is a hint that never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(pf.0.wrapping_add(kk * 64) as *const i8) };
    }
}

/// `body` twice, behind one test of `pf` for null: in each copy the test in
/// [`prefetch_line`] is then known, so the depth loop inside carries no branch for it. LLVM
/// unswitches that test by itself only for some row counts (not for the 6-row f32 and bf16
/// tiles, the hot ones), so it is done here for all.
macro_rules! prefetch_unswitched {
    ($pf:expr, $body:block) => {
        if $pf.0.is_null() {
            $body
        } else {
            $body
        }
    };
}

/// Lane masks of the four vectors of a panel row with `cols` valid columns.
#[inline(always)]
fn masks(cols: usize) -> [u16; 4] {
    std::array::from_fn(|v| {
        let lanes = cols.saturating_sub(16 * v).min(16);
        ((1u32 << lanes) - 1) as u16
    })
}

/// Adds the previous passes' partial sums (unless `first`), applies the epilogue, and
/// stores `R` rows of accumulators.
///
/// # Safety
/// The CPU has AVX-512 F and DQ (this is inlined into such functions). `c` is valid for writes
/// (and, unless `first`, reads) of `R` rows × `cols` columns with row stride `ldc`; with
/// `epi`, its bias (if not null) for `cols` reads and its residual (if not null) for the same
/// `R × cols` block at the same stride.
#[inline(always)]
unsafe fn finish<const R: usize>(
    acc: &mut [[__m512; 4]; R],
    c: *mut f32,
    ldc: usize,
    cols: usize,
    first: bool,
    epi: Option<&TileEpilogue>,
) {
    let m = masks(cols);
    let full = cols == NR;
    for (i, row) in acc.iter_mut().enumerate() {
        for (v, x) in row.iter_mut().enumerate() {
            // SAFETY: every access is to element `i · ldc + 16v + lane` of `c` (or of the
            // residual, or `16v + lane` of the bias) for a lane below `cols`, through a mask
            // unless the whole row is valid (`full`): inside the contract's ranges.
            unsafe {
                let p = c.add(i * ldc + 16 * v);
                if !first {
                    let prev = if full {
                        _mm512_loadu_ps(p)
                    } else {
                        _mm512_maskz_loadu_ps(m[v], p)
                    };
                    *x = _mm512_add_ps(*x, prev);
                }
                if let Some(e) = epi {
                    if !e.bias.is_null() {
                        *x = _mm512_add_ps(*x, _mm512_maskz_loadu_ps(m[v], e.bias.add(16 * v)));
                    }
                    *x = act::apply(e.act, *x);
                    if !e.residual.is_null() {
                        let r = e.residual.add(i * ldc + 16 * v);
                        *x = _mm512_add_ps(*x, _mm512_maskz_loadu_ps(m[v], r));
                    }
                }
                if full {
                    _mm512_storeu_ps(p, *x);
                } else {
                    _mm512_mask_storeu_ps(p, m[v], *x);
                }
            }
        }
    }
}

/// One row of finished f32 sums (the AMX tiles' output) through the epilogue into `c`.
///
/// # Safety
/// The CPU has AVX-512 F and DQ; `c` and `epi` as in [`finish`] for one row.
#[target_feature(enable = "avx512f,avx512dq")]
pub unsafe fn store_sums(sums: &[f32; NR], c: *mut f32, cols: usize, epi: Option<&TileEpilogue>) {
    let s = sums.as_ptr();
    // SAFETY: `sums` holds four vectors; `c` and `epi` are the caller's contract.
    unsafe {
        let mut row = [[
            _mm512_loadu_ps(s),
            _mm512_loadu_ps(s.add(16)),
            _mm512_loadu_ps(s.add(32)),
            _mm512_loadu_ps(s.add(48)),
        ]];
        finish::<1>(&mut row, c, 0, cols, true, epi);
    }
}

/// One row of exact i32 sums (as f32 bits, the AMX int8 tiles' output), dequantised as
/// [`tile_int8`] does, through the epilogue into `c`.
///
/// # Safety
/// As [`store_sums`]; `q`'s column slices hold `NR` values and its row scales at least one.
#[target_feature(enable = "avx512f,avx512dq")]
pub unsafe fn store_int8_sums(
    sums: &[f32; NR],
    c: *mut f32,
    cols: usize,
    q: &Quant,
    epi: Option<&TileEpilogue>,
) {
    let s = sums.as_ptr() as *const __m512i;
    let rs = _mm512_set1_ps(q.row_scales[0]);
    // SAFETY: `sums` and `q`'s column slices hold four vectors; `c` and `epi` are the
    // caller's contract.
    unsafe {
        let mut row = [std::array::from_fn(|v| {
            let x = _mm512_cvtepi32_ps(_mm512_loadu_si512(s.add(v)));
            let x = _mm512_sub_ps(x, _mm512_loadu_ps(q.col_offsets.as_ptr().add(16 * v)));
            _mm512_mul_ps(
                x,
                _mm512_mul_ps(rs, _mm512_loadu_ps(q.col_scales.as_ptr().add(16 * v))),
            )
        })];
        finish::<1>(&mut row, c, 0, cols, true, epi);
    }
}

/// The f32 tile (`R = t.h` rows) with any `b` row stride; loads past `t.cols` are masked, so a
/// narrow `b` (attention's V with a head_dim under 64) is never read past its end.
///
/// # Safety
/// The CPU has AVX-512 F and DQ; `t.a` holds `R` rows of `t.kc` at stride `t.lda`, `t.b`
/// `t.kc` steps of `t.cols` at stride `t.ldb` (a whole `NR` when `t.cols == NR`); `t.c` and
/// `t.epi` as in [`finish`].
#[target_feature(enable = "avx512f,avx512dq")]
pub unsafe fn tile_f32<const R: usize>(t: &Tile<f32, f32>) {
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
    let mut acc = [[_mm512_setzero_ps(); 4]; R];
    // SAFETY: the reads stay inside `t.a` and `t.b` (masked past `cols`) and the stores
    // inside `c`'s block: the caller's contract.
    unsafe {
        if cols < NR {
            // Narrow B (attention's V with a head_dim under 64): masked loads, never past it.
            let m = masks(cols);
            for kk in 0..kc {
                let bp = b.add(kk * ldb);
                let bv: [__m512; 4] =
                    std::array::from_fn(|v| _mm512_maskz_loadu_ps(m[v], bp.add(16 * v)));
                for (i, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a.add(i * lda + kk));
                    for v in 0..4 {
                        row[v] = _mm512_fmadd_ps(av, bv[v], row[v]);
                    }
                }
            }
            finish::<R>(&mut acc, c, ldc, cols, first, epi);
            return;
        }
        prefetch_unswitched!(pf, {
            for kk in 0..kc {
                prefetch_line(pf, kk);
                let bp = b.add(kk * ldb);
                let b0 = _mm512_loadu_ps(bp);
                let b1 = _mm512_loadu_ps(bp.add(16));
                let b2 = _mm512_loadu_ps(bp.add(32));
                let b3 = _mm512_loadu_ps(bp.add(48));
                for (i, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a.add(i * lda + kk));
                    row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm512_fmadd_ps(av, b1, row[1]);
                    row[2] = _mm512_fmadd_ps(av, b2, row[2]);
                    row[3] = _mm512_fmadd_ps(av, b3, row[3]);
                }
            }
        });
        finish::<R>(&mut acc, c, ldc, cols, first, epi);
    }
}

/// The int8 tile over the whole depth (`t.kc` quads of `p + 128` bytes, rows `t.lda` apart,
/// against a packed panel of `t.kc × NR` quads), dequantised by `q`, then the epilogue.
///
/// # Safety
/// The CPU has AVX-512 F, DQ and VNNI; `t.a` holds `R` rows, `t.b` the whole panel, `q` a
/// panel's column values and `R` row scales; `t.c` and `t.epi` as in [`finish`].
#[target_feature(enable = "avx512f,avx512dq,avx512vnni")]
pub unsafe fn tile_int8<const R: usize>(t: &Tile<u32, i8>, q: &Quant) {
    let Tile {
        a,
        lda,
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
    let mut acc = [[_mm512_setzero_si512(); 4]; R];
    // SAFETY: the reads stay inside `t.a`, `t.b` and `q`, the stores inside `c`'s block: the
    // caller's contract.
    unsafe {
        prefetch_unswitched!(pf, {
            for kk in 0..kq {
                prefetch_line(pf, kk);
                let bp = b.add(kk * NR * 4) as *const __m512i;
                let b0 = _mm512_loadu_si512(bp);
                let b1 = _mm512_loadu_si512(bp.add(1));
                let b2 = _mm512_loadu_si512(bp.add(2));
                let b3 = _mm512_loadu_si512(bp.add(3));
                for (i, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_epi32(*a.add(i * lda + kk) as i32);
                    row[0] = _mm512_dpbusd_epi32(row[0], av, b0);
                    row[1] = _mm512_dpbusd_epi32(row[1], av, b1);
                    row[2] = _mm512_dpbusd_epi32(row[2], av, b2);
                    row[3] = _mm512_dpbusd_epi32(row[3], av, b3);
                }
            }
        });
        let cs: [__m512; 4] =
            std::array::from_fn(|v| _mm512_loadu_ps(q.col_scales.as_ptr().add(16 * v)));
        let co: [__m512; 4] =
            std::array::from_fn(|v| _mm512_loadu_ps(q.col_offsets.as_ptr().add(16 * v)));
        let mut accf = [[_mm512_setzero_ps(); 4]; R];
        for i in 0..R {
            let rs = _mm512_set1_ps(q.row_scales[i]);
            for v in 0..4 {
                let x = _mm512_sub_ps(_mm512_cvtepi32_ps(acc[i][v]), co[v]);
                accf[i][v] = _mm512_mul_ps(x, _mm512_mul_ps(rs, cs[v]));
            }
        }
        finish::<R>(&mut accf, c, ldc, cols, true, epi);
    }
}

/// The f16 tile: f16 sums over the pass's `t.kc` steps (`a` as f16 broadcast pairs, `b` a
/// packed panel of f16), added to `c` in f32.
///
/// # Safety
/// The CPU has AVX-512 F, DQ, BW, VL and FP16; `t.a` holds `R` rows, `t.b` `t.kc` whole panel
/// rows; `t.c` and `t.epi` as in [`finish`].
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx512fp16")]
pub unsafe fn tile_f16<const R: usize>(t: &Tile<u32, u16>) {
    let Tile {
        a,
        lda,
        b,
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
    let mut acc = [[_mm512_setzero_ph(); 2]; R];
    // SAFETY: the reads stay inside `t.a` and `t.b`, the stores inside `c`'s block: the
    // caller's contract.
    unsafe {
        prefetch_unswitched!(pf, {
            for kk in 0..kc {
                prefetch_line(pf, kk);
                let bp = b.add(kk * NR) as *const __m512i;
                let b0 = _mm512_castsi512_ph(_mm512_loadu_si512(bp));
                let b1 = _mm512_castsi512_ph(_mm512_loadu_si512(bp.add(1)));
                for (i, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_castsi512_ph(_mm512_set1_epi32(*a.add(i * lda + kk) as i32));
                    row[0] = _mm512_fmadd_ph(av, b0, row[0]);
                    row[1] = _mm512_fmadd_ph(av, b1, row[1]);
                }
            }
        });
        // Columns 0–31 are in `row[0]`, 32–63 in `row[1]`, each as two 16-lane halves.
        let mut accf = [[_mm512_setzero_ps(); 4]; R];
        for (i, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                let x = _mm512_castph_si512(x);
                accf[i][2 * v] = _mm512_cvtph_ps(_mm512_castsi512_si256(x));
                accf[i][2 * v + 1] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(x));
            }
        }
        finish::<R>(&mut accf, c, ldc, cols, first, epi);
    }
}

/// The bf16 tile: `a` and `b` (a packed panel) as bf16 pairs along the depth, f32 sums.
///
/// # Safety
/// The CPU has AVX-512 F, DQ and BF16; `t.a` holds `R` rows, `t.b` `t.kc` whole panel rows;
/// `t.c` and `t.epi` as in [`finish`].
#[target_feature(enable = "avx512f,avx512dq,avx512bf16")]
pub unsafe fn tile_bf16<const R: usize>(t: &Tile<u32, u32>) {
    let Tile {
        a,
        lda,
        b,
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
    let mut acc = [[_mm512_setzero_ps(); 4]; R];
    // SAFETY: the reads stay inside `t.a` and `t.b`, the stores inside `c`'s block: the
    // caller's contract. The transmutes reinterpret 512 bits as 32 bf16 lanes.
    unsafe {
        prefetch_unswitched!(pf, {
            for kk in 0..kc {
                prefetch_line(pf, kk);
                let bp = b.add(kk * NR) as *const __m512i;
                let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp));
                let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(1)));
                let b2: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(2)));
                let b3: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(3)));
                for (i, row) in acc.iter_mut().enumerate() {
                    let av: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*a.add(i * lda + kk) as i32));
                    row[0] = _mm512_dpbf16_ps(row[0], av, b0);
                    row[1] = _mm512_dpbf16_ps(row[1], av, b1);
                    row[2] = _mm512_dpbf16_ps(row[2], av, b2);
                    row[3] = _mm512_dpbf16_ps(row[3], av, b3);
                }
            }
        });
        finish::<R>(&mut acc, c, ldc, cols, first, epi);
    }
}

/// `src` rounded to f16 (clamped to its range), each value in both halves of a `dst` word.
///
/// # Safety
/// The CPU has AVX-512 F and BW; `dst` is at least as long as `src`.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn to_f16_broadcasts(src: &[f32], dst: &mut [u32]) {
    let (lo, hi) = (_mm512_set1_ps(-F16_MAX), _mm512_set1_ps(F16_MAX));
    let out = dst.as_mut_ptr();
    let mut i = 0;
    while i + 16 <= src.len() {
        // SAFETY: 16 floats of `src` from `i`, and as many words of `dst` (the contract).
        unsafe {
            let x = _mm512_min_ps(_mm512_max_ps(_mm512_loadu_ps(src.as_ptr().add(i)), lo), hi);
            let h = _mm512_cvtepu16_epi32(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x));
            let both = _mm512_or_si512(h, _mm512_slli_epi32::<16>(h));
            _mm512_storeu_si512(out.add(i) as *mut __m512i, both);
        }
        i += 16;
    }
    while i < src.len() {
        let h = to_f16_bits(src[i]) as u32;
        dst[i] = h | (h << 16);
        i += 1;
    }
}

/// `src` (even length) rounded to bf16 into `dst` (`src.len() / 2` pairs).
///
/// # Safety
/// The CPU has AVX-512 F and BF16; `dst` holds at least `src.len() / 2` words.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn to_bf16_row(src: &[f32], dst: &mut [u32]) {
    let out = dst.as_mut_ptr() as *mut u16;
    let mut i = 0;
    // SAFETY: the loads read 16 floats of `src` from `i`, the stores write the same count of
    // bf16 halves of `dst`, which holds `src.len()` of them (the contract); the transmute
    // reinterprets 16 bf16 lanes as 256 bits.
    unsafe {
        while i + 16 <= src.len() {
            let v = _mm512_cvtneps_pbh(_mm512_loadu_ps(src.as_ptr().add(i)));
            _mm256_storeu_si256(
                out.add(i) as *mut __m256i,
                std::mem::transmute::<__m256bh, __m256i>(v),
            );
            i += 16;
        }
        while i < src.len() {
            *out.add(i) = half::bf16::from_f32(src[i]).to_bits();
            i += 1;
        }
    }
}

/// The largest `|x|` over the whole 16-float vectors of `src`, and how many floats that
/// covered.
///
/// # Safety
/// The CPU has AVX-512 F and BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn max_abs(src: &[f32]) -> (f32, usize) {
    let mut vmax = _mm512_setzero_ps();
    let chunks = src.chunks_exact(16);
    let done = src.len() - chunks.remainder().len();
    for c in chunks {
        // SAFETY: `c` is 16 floats.
        vmax = _mm512_max_ps(vmax, _mm512_abs_ps(unsafe { _mm512_loadu_ps(c.as_ptr()) }));
    }
    (_mm512_reduce_max_ps(vmax), done)
}

/// `src` to `p + 128` bytes at scale `s`, 16 at a time; returns how many it did.
///
/// # Safety
/// The CPU has AVX-512 F and BW; `dst` has room for `src.len()` bytes.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn quantize_row(src: &[f32], s: f32, dst: &mut [u32]) -> usize {
    let inv = _mm512_set1_ps(1.0 / s);
    let bias = _mm512_set1_epi32(128);
    let out = dst.as_mut_ptr() as *mut u8;
    let mut i = 0;
    while i + 16 <= src.len() {
        // SAFETY: 16 floats of `src` from `i`, 16 bytes of `dst` (the contract).
        unsafe {
            let x = _mm512_mul_ps(_mm512_loadu_ps(src.as_ptr().add(i)), inv);
            // Round to nearest even (the default MXCSR mode), then shift to unsigned.
            let q = _mm512_add_epi32(_mm512_cvtps_epi32(x), bias);
            _mm_storeu_si128(out.add(i) as *mut __m128i, _mm512_cvtusepi32_epi8(q));
        }
        i += 16;
    }
    i
}
