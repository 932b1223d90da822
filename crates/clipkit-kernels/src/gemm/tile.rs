//! The micro-tile contract every kernel (portable, AVX2, AVX-512) implements, and what the
//! packing and the thread driver agree on with it: the tile and pass sizes, the epilogue, the
//! prefetch hint, the int8 dequantisation and the scalar rounding of operands.
//!
//! It sits at the bottom of the GEMM's modules so that the ISA files depend on it alone (and
//! on [`crate::act`]), never on the packing or the driver.

use crate::act::Activation;

/// Output columns per packed panel: four 16-float AVX-512 vectors.
pub const NR: usize = 64;
/// Rows of `a` per micro-tile: 6 × 4 accumulators leave registers for the loads.
pub const MR: usize = 6;
/// Rows per f16 micro-tile: a 64-column f16 row is two vectors, so 12 rows fill the same
/// 24 accumulators, and each panel row loaded serves twice the FMAs.
pub(crate) const MR_F16: usize = 12;
/// Depth of one pass over a panel: `KC × NR` floats (64 KiB) stay in L2 while every row tile
/// of `a` streams past them.
pub(crate) const KC: usize = 768;
/// Depth of one f16 pass: the f16 accumulators are converted and added to the f32 output
/// after this many steps, so a sum's rounding error stays that of a 256-term f16 sum
/// (relative ~2e-3, about bf16's input rounding) whatever `k` is; flushing costs ~4%.
pub(crate) const KC_F16: usize = 256;
/// Columns of one AVX2 f32 strip (two 8-float vectors): AVX2's panels are packed as
/// `NR / STRIP` strips, each contiguous.
pub(crate) const STRIP: usize = 16;
/// Bytes of one packed int8 panel row (`NR` quads; also `NR` f32 or bf16 pairs).
pub(crate) const PANEL_ROW_BYTES: usize = NR * 4;

/// What happens to each output element after the dot product, in this order: `+ bias` (the
/// layer's own), activation, `+ residual[row][col]`.
#[derive(Clone, Copy)]
pub struct Epilogue<'a> {
    pub act: Activation,
    /// `[m, n]`, added last (the transformer's skip connection).
    pub residual: Option<&'a [f32]>,
}

impl Default for Epilogue<'_> {
    fn default() -> Self {
        Self {
            act: Activation::Identity,
            residual: None,
        }
    }
}

/// Per micro-tile view of the epilogue, with the pointers already offset to the tile: `bias`
/// (null: none) at the tile's first column, `residual` (null: none) at its first element, with
/// the output's row stride.
pub(crate) struct TileEpilogue {
    pub(crate) act: Activation,
    pub(crate) bias: *const f32,
    pub(crate) residual: *const f32,
}

/// Where a tile pulls the weights its task reads next into L2, one cache line per step of its
/// depth loop (null: nowhere). At small batches a panel serves only a few tiles, and the
/// first of them would otherwise wait on memory for the whole panel: the hardware streamer
/// stops at every 4 KiB page, and on a Xeon that cost batch 1 a quarter of its speed.
///
/// Only ever used as a prefetch address, which never faults: it need not point at anything.
#[derive(Clone, Copy)]
pub(crate) struct Prefetch(pub(crate) *const u8);

impl Prefetch {
    pub(crate) const NONE: Prefetch = Prefetch(std::ptr::null());
}

/// What turns an int8 tile's i32 sums back into f32: `(sum − offset[col])·row_scale·col_scale`.
/// `row_scales` starts at the tile's first row; the column slices hold a whole panel (`NR`).
pub(crate) struct Quant<'a> {
    pub(crate) row_scales: &'a [f32],
    pub(crate) col_scales: &'a [f32],
    pub(crate) col_offsets: &'a [f32],
}

/// One micro-tile's work: `c[..h][..cols] (+)= a[..h][..kc] · b[..kc][..cols]`, then the
/// epilogue when `epi` is given (on the last pass over the depth).
///
/// Every kernel takes this by reference and copies the fields into locals before its loops,
/// so passing one struct costs nothing per step. Element types: `f32 × f32`, bf16 pairs
/// (`u32 × u32`), f16 broadcasts × f16 (`u32 × u16`), int8 quads (`u32` or AVX2's widened
/// `u64` × `i8`, where `kc` counts quads and `ldb` bytes).
#[derive(Clone, Copy)]
pub(crate) struct Tile<'a, A, B> {
    /// Rows of the tile: 1 to the kernel's row count ([`MR`], or [`MR_F16`]).
    pub(crate) h: usize,
    /// Row `i` of the tile starts at `a[i * lda]` (already offset to this pass's depth).
    pub(crate) a: &'a [A],
    pub(crate) lda: usize,
    /// Step `kk` of the pass starts at `b[kk * ldb]` (`NR` for a packed panel; attention passes
    /// V in place).
    pub(crate) b: &'a [B],
    pub(crate) ldb: usize,
    /// Steps of the depth in this pass.
    pub(crate) kc: usize,
    /// The tile's first output element; rows `ldc` apart. Each kernel's `# Safety` says how
    /// much of it must be valid.
    pub(crate) c: *mut f32,
    pub(crate) ldc: usize,
    /// Valid output columns (≤ [`NR`]): the rest of the panel is padding, never stored.
    pub(crate) cols: usize,
    /// The first pass over the depth: `c` is stored (it may be uninitialised), not added to.
    pub(crate) first: bool,
    pub(crate) epi: Option<&'a TileEpilogue>,
    pub(crate) pf: Prefetch,
}

/// bf16 bits of `x` (round to nearest even), in the low half of a u32.
pub(crate) fn to_bf16_bits(x: f32) -> u32 {
    half::bf16::from_f32(x).to_bits() as u32
}

/// f16's largest finite value: inputs beyond it are clamped rather than turned into infinity.
pub(crate) const F16_MAX: f32 = 65504.0;

/// f16 bits of `x` (round to nearest even, clamped to f16's range).
pub(crate) fn to_f16_bits(x: f32) -> u16 {
    half::f16::from_f32(x.clamp(-F16_MAX, F16_MAX)).to_bits()
}

/// Round half to even without a libm call: adding and removing 1.5·2²³ leaves an f32 of
/// magnitude ≤ 127 rounded to an integer in the default rounding mode (the same result as
/// `round_ties_even`, which compiles to a call to `rintf` on baseline x86-64).
#[inline]
pub(crate) fn quantize(x: f32, inv_scale: f32) -> i8 {
    const MAGIC: f32 = 12_582_912.0;
    let v = (x * inv_scale).clamp(-127.0, 127.0);
    ((v + MAGIC) - MAGIC) as i8
}

/// The int8 scale that maps a largest magnitude `max` to 127 (1 for all zeros).
pub(crate) fn scale_for(max: f32) -> f32 {
    if max > 0.0 {
        max / 127.0
    } else {
        1.0
    }
}

/// Quads of int8 along a depth of `k`: `k` is padded to a multiple of 4 with zeros.
pub(crate) fn k4(k: usize) -> usize {
    k.div_ceil(4)
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
}
