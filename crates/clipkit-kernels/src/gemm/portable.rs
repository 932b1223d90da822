//! The portable tiles: plain loops with the vector kernels' arithmetic contract, for CPUs
//! without the instruction sets (and the reference the vector kernels are tested against
//! through the public API).

use super::tile::{Quant, Tile, TileEpilogue, NR};

/// [`Tile`] in f32.
///
/// # Safety
/// `t.c` is valid for writes (and, unless `t.first`, reads) of `t.h` rows × `t.cols` columns
/// with row stride `t.ldc`; `t.epi`'s pointers as in [`store_row`]; `t.a` holds `t.h` rows of
/// `t.kc` and `t.b` `t.kc` steps of `t.cols`.
pub(crate) unsafe fn tile_f32(t: &Tile<f32, f32>) {
    let Tile {
        h,
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
        ..
    } = *t;
    for i in 0..h {
        let mut acc = [0f32; NR];
        let row = &a[i * lda..][..kc];
        for (kk, &av) in row.iter().enumerate() {
            let brow = &b[kk * ldb..][..cols];
            for (x, &bv) in acc.iter_mut().zip(brow) {
                *x += av * bv;
            }
        }
        // SAFETY: row `i` of the tile is inside `c`'s `h × cols` block (the caller's contract).
        unsafe { store_row(&acc, c.add(i * ldc), cols, first, epi, i * ldc) };
    }
}

/// [`Tile`] in bf16 pairs (`b` a packed panel, steps `NR` apart).
///
/// # Safety
/// As [`tile_f32`].
pub(crate) unsafe fn tile_bf16(t: &Tile<u32, u32>) {
    let Tile {
        h,
        a,
        lda,
        b,
        kc,
        c,
        ldc,
        cols,
        first,
        epi,
        ..
    } = *t;
    let lo = |v: u32| f32::from_bits(v << 16);
    let hi = |v: u32| f32::from_bits(v & 0xffff_0000);
    for i in 0..h {
        let mut acc = [0f32; NR];
        for (kk, &av) in a[i * lda..][..kc].iter().enumerate() {
            let (a0, a1) = (lo(av), hi(av));
            for (j, &bv) in b[kk * NR..][..NR].iter().enumerate() {
                acc[j] += a0 * lo(bv) + a1 * hi(bv);
            }
        }
        // SAFETY: as in `tile_f32`.
        unsafe { store_row(&acc, c.add(i * ldc), cols, first, epi, i * ldc) };
    }
}

/// [`Tile`] on f16 operands: the same f16-rounded values, summed in f32 (no f16
/// accumulation).
///
/// # Safety
/// As [`tile_f32`].
pub(crate) unsafe fn tile_f16(t: &Tile<u32, u16>) {
    let Tile {
        h,
        a,
        lda,
        b,
        kc,
        c,
        ldc,
        cols,
        first,
        epi,
        ..
    } = *t;
    let f = |bits: u16| half::f16::from_bits(bits).to_f32();
    for i in 0..h {
        let mut acc = [0f32; NR];
        for (kk, &av) in a[i * lda..][..kc].iter().enumerate() {
            let x = f(av as u16);
            for (j, &bv) in b[kk * NR..][..NR].iter().enumerate() {
                acc[j] += x * f(bv);
            }
        }
        // SAFETY: as in `tile_f32`.
        unsafe { store_row(&acc, c.add(i * ldc), cols, first, epi, i * ldc) };
    }
}

/// One int8 tile over the whole depth (`t.kc` quads of `p + 128` bytes against a packed
/// panel), exact i32 sums dequantised by `q`, then the epilogue.
///
/// # Safety
/// As [`tile_f32`] (the whole depth is one pass: `c` is only written).
pub(crate) unsafe fn tile_int8(t: &Tile<u32, i8>, q: &Quant) {
    let Tile {
        h,
        a,
        lda,
        b,
        kc,
        c,
        ldc,
        cols,
        epi,
        ..
    } = *t;
    for i in 0..h {
        let mut sums = [0i32; NR];
        dot_panel(&a[i * lda..], b, kc, &mut sums);
        let mut acc = [0f32; NR];
        for (j, x) in acc.iter_mut().enumerate() {
            *x = (sums[j] as f32 - q.col_offsets[j]) * q.row_scales[i] * q.col_scales[j];
        }
        // SAFETY: as in `tile_f32`.
        unsafe { store_row(&acc, c.add(i * ldc), cols, true, epi, i * ldc) };
    }
}

/// One row × one int8 panel: exact i32 sums of `kq` quads.
fn dot_panel(a: &[u32], b: &[i8], kq: usize, acc: &mut [i32; NR]) {
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

/// Portable store of one accumulated row, with the epilogue on the last pass.
///
/// # Safety
/// `c` is valid for `cols` writes (and reads unless `first`); with `epi`, its bias (if not
/// null) for `cols` reads and its residual (if not null) for `cols` reads at offset `res_off`.
unsafe fn store_row(
    acc: &[f32; NR],
    c: *mut f32,
    cols: usize,
    first: bool,
    epi: Option<&TileEpilogue>,
    res_off: usize,
) {
    for (j, &v) in acc.iter().enumerate().take(cols) {
        // SAFETY: `j < cols`, inside every range the contract above makes valid.
        unsafe {
            let mut v = if first { v } else { v + *c.add(j) };
            if let Some(e) = epi {
                if !e.bias.is_null() {
                    v += *e.bias.add(j);
                }
                v = e.act.apply(v);
                if !e.residual.is_null() {
                    v += *e.residual.add(res_off + j);
                }
            }
            *c.add(j) = v;
        }
    }
}
