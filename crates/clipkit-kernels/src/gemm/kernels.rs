//! The tile functions the driver (and attention) call: each checks the slices it is given,
//! picks the fastest kernel this CPU runs ([`super::avx512`], [`super::avx2`] or
//! [`super::portable`]) and instantiates it for the tile's row count.

use super::portable;
use super::tile::{Quant, Tile, MR, NR, STRIP};
#[cfg(target_arch = "x86_64")]
use super::{avx2, avx512};

/// `f::<R>(args)` with the row count `h` (1 to [`MR`]) as the const generic `R` that the
/// micro-kernels are compiled for.
#[cfg(target_arch = "x86_64")]
macro_rules! by_rows {
    ($h:expr, $($f:ident)::+ ($($arg:expr),* $(,)?)) => {
        match $h {
            6 => $($f)::+::<6>($($arg),*),
            5 => $($f)::+::<5>($($arg),*),
            4 => $($f)::+::<4>($($arg),*),
            3 => $($f)::+::<3>($($arg),*),
            2 => $($f)::+::<2>($($arg),*),
            _ => $($f)::+::<1>($($arg),*),
        }
    };
}

/// A micro-tile kernel over packed panels (or, for f32, any `b`).
pub(crate) type TileFn<A, B> = unsafe fn(&Tile<A, B>);

/// An int8 tile: `A` is one quad of activations (`u32` of bytes, or `u64` of i16 on AVX2).
pub(crate) type Int8TileFn<A> = unsafe fn(&Tile<A, i8>, &Quant);

/// The f32 tile: `c (+)= a·b` over `t.kc` steps, then the epilogue when `t.epi` is given. `b`
/// has any row stride `t.ldb` (`NR` for a packed panel; attention passes V in place), and is
/// never read past column `t.cols`.
///
/// # Safety
/// `t.c` is valid for writes (and, unless `t.first`, reads) of `t.h` rows × `t.cols` columns
/// with row stride `t.ldc`; with `t.epi`, its bias (if not null) for `t.cols` reads and its
/// residual (if not null) for the same block as `c`. (`t.a` and `t.b` are checked here.)
pub(crate) unsafe fn tile_f32(t: &Tile<f32, f32>) {
    assert!(t.h >= 1 && t.a.len() >= (t.h - 1) * t.lda + t.kc);
    assert!(t.kc == 0 || t.b.len() >= (t.kc - 1) * t.ldb + t.cols);
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512() {
        // SAFETY: the CPU has AVX-512; the slices cover what the kernel reads (asserted
        // above; the kernel's loads past `cols` are masked) and `c` is valid for `h` rows of
        // `cols` columns (the caller's contract).
        unsafe { by_rows!(t.h, avx512::tile_f32(t)) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2() {
        // SAFETY: as above, with AVX2 and FMA (the loads past `cols` are masked too); with a
        // strip stride of `STRIP` the strips are simply the row's next 16 columns.
        unsafe { by_rows!(t.h, avx2::tile_f32(t, STRIP)) };
        return;
    }
    // SAFETY: the caller's contract is the portable tile's, the slices checked above.
    unsafe { portable::tile_f32(t) }
}

/// The AVX2 f32 tile on one pass of a panel packed in strips: `t.b` starts at the pass in
/// strip 0, steps `STRIP` floats apart (`t.ldb`); strip `s` is `s · k · STRIP` floats on.
///
/// # Safety
/// As [`tile_f32`]; the CPU has AVX2 and FMA.
// Only x86-64 packs strips; elsewhere the body is `unreachable!`.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
pub(crate) unsafe fn tile_f32_strips(t: &Tile<f32, f32>, k: usize) {
    assert!(t.h >= 1 && t.a.len() >= (t.h - 1) * t.lda + t.kc);
    debug_assert_eq!(t.ldb, STRIP);
    assert!(t.b.len() >= (t.cols.div_ceil(STRIP) - 1) * k * STRIP + t.kc * STRIP);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has AVX2 (the caller's contract); the strips of this pass lie within
    // `t.b` (asserted above); `c` as the caller promises.
    unsafe {
        by_rows!(t.h, avx2::tile_f32(t, k * STRIP))
    };
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("AVX2 strips are packed only on x86-64")
}

/// The bf16 tile on a packed panel (`t.ldb` is `NR`).
///
/// # Safety
/// As [`tile_f32`].
pub(crate) unsafe fn tile_bf16(t: &Tile<u32, u32>) {
    debug_assert!(t.a.len() >= (t.h - 1) * t.lda + t.kc && t.b.len() >= t.kc * NR);
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512_bf16() {
        // SAFETY: as in `tile_f32`, with AVX-512 BF16.
        unsafe { by_rows!(t.h, avx512::tile_bf16(t)) };
        return;
    }
    // SAFETY: the caller's contract is the portable tile's.
    unsafe { portable::tile_bf16(t) }
}

/// The f16 tile on a packed panel: f16 sums over `t.kc` steps, added to `c` in f32. Up to
/// [`super::tile::MR_F16`] rows.
///
/// # Safety
/// As [`tile_f32`].
pub(crate) unsafe fn tile_f16(t: &Tile<u32, u16>) {
    assert!(t.h >= 1 && t.a.len() >= (t.h - 1) * t.lda + t.kc && t.b.len() >= t.kc * NR);
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512_fp16() {
        // SAFETY: as in `tile_f32`, with AVX-512 FP16.
        unsafe {
            match t.h {
                12 => avx512::tile_f16::<12>(t),
                11 => avx512::tile_f16::<11>(t),
                10 => avx512::tile_f16::<10>(t),
                9 => avx512::tile_f16::<9>(t),
                8 => avx512::tile_f16::<8>(t),
                7 => avx512::tile_f16::<7>(t),
                6 => avx512::tile_f16::<6>(t),
                5 => avx512::tile_f16::<5>(t),
                4 => avx512::tile_f16::<4>(t),
                3 => avx512::tile_f16::<3>(t),
                2 => avx512::tile_f16::<2>(t),
                _ => avx512::tile_f16::<1>(t),
            }
        }
        return;
    }
    // SAFETY: the caller's contract is the portable tile's.
    unsafe { portable::tile_f16(t) }
}

/// One int8 tile over the whole depth `t.kc` (quads), then the epilogue.
///
/// # Safety
/// As [`tile_f32`]; `q` holds the tile's `t.h` row scales and a whole panel's column values.
pub(crate) unsafe fn tile_int8(t: &Tile<u32, i8>, q: &Quant) {
    let (h, kq) = (t.h, t.kc);
    assert!(h >= 1 && t.a.len() >= (h - 1) * t.lda + kq && t.b.len() >= kq * NR * 4);
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512_vnni() {
        // SAFETY: as in `tile_f32`, with AVX-512 VNNI.
        unsafe { by_rows!(h, avx512::tile_int8(t, q)) };
        return;
    }
    // SAFETY: the caller's contract is the portable tile's.
    unsafe { portable::tile_int8(t, q) }
}

/// [`tile_int8`] on an AVX2 strips panel, with the activations of
/// [`super::quant::quantize_rows_wide`].
///
/// # Safety
/// As [`tile_int8`]; the CPU has AVX2.
// Only x86-64 packs strips; elsewhere the body is `unreachable!`.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
pub(crate) unsafe fn tile_int8_strips(t: &Tile<u64, i8>, q: &Quant) {
    // A whole interleaved tile, padded past `m` (see `quantize_rows_wide`).
    assert!((1..=MR).contains(&t.h) && t.a.len() >= t.kc * MR && t.b.len() >= t.kc * NR * 4);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has AVX2 (the caller's contract); the slices are checked above.
    unsafe {
        by_rows!(t.h, avx2::tile_int8(t, q))
    };
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("AVX2 strips are packed only on x86-64")
}
