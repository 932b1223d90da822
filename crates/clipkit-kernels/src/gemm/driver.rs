//! The thread driver: a matmul split into tasks on rayon's pool, each a block of rows × column
//! panels that no other task writes, walked pass by pass along the depth with a tile kernel
//! per row tile.
//!
//! Work is split by column panel (and by rows when there are too few panels to keep every
//! thread busy); f16 and AMX tasks take several panels each, so that a block of `a` is reused
//! from L2 across them.

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use super::amx;
#[cfg(target_arch = "x86_64")]
use super::avx512;
use super::kernels::{self, Int8TileFn, TileFn};
use super::pack::{Int8Panels, Panels};
use super::quant;
use super::tile::{
    k4, Epilogue, Prefetch, Quant, Tile, TileEpilogue, KC, KC_F16, MR, MR_F16, NR, PANEL_ROW_BYTES,
    STRIP,
};
use crate::buf::Buf;

/// The output pointer shared by the tasks of one matmul (or attention call); each task writes
/// a disjoint set of elements.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(*mut f32);

// SAFETY: the pointer is only dereferenced by tasks that write disjoint elements (blocks of
// (row range, column panels) here, (sequence, head) columns in attention), and the buffer
// outlives the parallel loop that uses it.
unsafe impl Send for SharedOut {}
// SAFETY: as for `Send`: no two tasks access the same element.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    pub(crate) fn new(out: *mut f32) -> Self {
        Self(out)
    }

    /// A method, so closures capture the whole (Sync) wrapper rather than its raw field.
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// `out[m, n] = act(a[m, k]·Wᵀ + bias) + residual` on `panels`: the activations converted to
/// the kernel's element type, then the tasks run. Every element of `out` is written.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    panels: &Panels,
    n: usize,
    k: usize,
    bias: Option<&[f32]>,
    a: &[f32],
    m: usize,
    epilogue: Epilogue,
    out: &mut [MaybeUninit<f32>],
) {
    let job = Job {
        n,
        k,
        bias,
        epilogue,
        out: SharedOut::new(out.as_mut_ptr() as *mut f32),
    };
    match panels {
        Panels::F32(panels) => job.run(m, |rows, p| {
            job.block(a, k, panels, rows, p, kernels::tile_f32)
        }),
        Panels::F32Strips(panels) => job.run(m, |rows, p| job.block_strips(a, panels, rows, p)),
        Panels::Bf16(panels) => {
            let k2 = k.div_ceil(2);
            let a16 = quant::bf16_pairs(a, m, k);
            job.run(m, |rows, p| {
                job.block(&a16, k2, panels, rows, p, kernels::tile_bf16)
            })
        }
        Panels::Bf16Amx(panels) => {
            let depth = k.div_ceil(2);
            let lda = amx::steps(depth) * amx::PER_STEP;
            // Whole 32-row blocks: the last block's extra rows read zeros.
            let a16 = amx::a_tiles(m, lda / amx::PER_STEP, 0, |r, dst| {
                quant::bf16_row(&a[r * k..][..k], &mut dst[..depth]);
            });
            job.run_amx(m, &a16, lda, AmxWeights::Bf16(panels))
        }
        Panels::Int8Amx(panels) => {
            let depth = k4(k);
            let lda = amx::steps(depth) * amx::PER_STEP;
            let sa = quant::row_scales(a, m, k);
            let aq = amx::a_tiles(m, lda / amx::PER_STEP, 0x8080_8080, |r, dst| {
                quant::quantize_row(&a[r * k..][..k], sa[r], dst);
            });
            job.run_amx(m, &aq, lda, AmxWeights::Int8(panels, &sa))
        }
        Panels::F16(panels) => {
            let a16 = quant::f16_broadcasts(a);
            job.run_row_blocks(m, |rows, group| job.block_f16(&a16, panels, rows, group))
        }
        Panels::Int8(panels) => {
            let (aq, sa) = quant::quantize_rows(a, m, k);
            job.run(m, |rows, p| {
                job.block_int8(&aq, &sa, panels, rows, p, kernels::tile_int8)
            })
        }
        Panels::Int8Strips(panels) => {
            let (aq, sa) = quant::quantize_rows_wide(a, m, k);
            let tile = kernels::tile_int8_strips;
            job.run(m, |rows, p| job.block_int8(&aq, &sa, panels, rows, p, tile))
        }
    }
}

struct Job<'a> {
    n: usize,
    k: usize,
    bias: Option<&'a [f32]>,
    epilogue: Epilogue<'a>,
    out: SharedOut,
}

/// The prefetch for the `j`-th row tile of a pass `depth` panel rows deep, when `next` (if
/// any) is what the task reads after this pass: a panel row is `row_bytes / 64` cache lines,
/// and tiles 1 to that many each take one line of every row (a tile issues one prefetch per
/// row it reads); tile 0 is left alone since it is itself waiting on memory.
fn prefetch_for(next: Option<*const u8>, j: usize, depth: usize, row_bytes: usize) -> Prefetch {
    match next {
        Some(p) if (1..=row_bytes / 64).contains(&j) => {
            Prefetch(p.wrapping_add((j - 1) * depth * 64))
        }
        _ => Prefetch::NONE,
    }
}

impl Job<'_> {
    /// Splits `[0, m) × panels` into tasks of whole panels × row ranges (whole multiples of
    /// `MR` where possible) and runs them on rayon's pool.
    fn run(&self, m: usize, block: impl Fn(Range<usize>, usize) + Sync) {
        let panels = self.n.div_ceil(NR);
        let want = 4 * rayon::current_num_threads();
        let row_tiles = m.div_ceil(MR);
        let row_chunks = if panels >= want {
            1
        } else {
            want.div_ceil(panels).min(row_tiles).max(1)
        };
        let tiles_per_chunk = row_tiles.div_ceil(row_chunks);
        (0..panels * row_chunks).into_par_iter().for_each(|t| {
            let (p, c) = (t / row_chunks, t % row_chunks);
            let start = (c * tiles_per_chunk * MR).min(m);
            let end = ((c + 1) * tiles_per_chunk * MR).min(m);
            if start < end {
                block(start..end, p);
            }
        });
    }

    fn tile_epilogue(&self, row: usize, col: usize, last: bool) -> Option<TileEpilogue> {
        last.then(|| TileEpilogue {
            act: self.epilogue.act,
            bias: self.bias.map_or(std::ptr::null(), |b| b[col..].as_ptr()),
            residual: self
                .epilogue
                .residual
                .map_or(std::ptr::null(), |r| r[row * self.n + col..].as_ptr()),
        })
    }

    /// One panel × row range, depth in passes of `KC`: the f32 and bf16 kernels differ only
    /// in their element type (`depth` is `k`, or `k/2` bf16 pairs) and `tile` function.
    fn block<T>(
        &self,
        a: &[T],
        depth: usize,
        panels: &[T],
        rows: Range<usize>,
        p: usize,
        tile: TileFn<T, T>,
    ) {
        let panel = &panels[p * depth * NR..][..depth * NR];
        let mut k0 = 0;
        while k0 < depth {
            let kc = KC.min(depth - k0);
            // What this task reads after this pass: the panel's next pass, or the next panel.
            let next = if k0 + kc < depth {
                Some(panel[(k0 + kc) * NR..].as_ptr() as *const u8)
            } else {
                panels
                    .get((p + 1) * depth * NR)
                    .map(|x| x as *const T as *const u8)
            };
            let b = &panel[k0 * NR..][..kc * NR];
            let pass = Pass {
                depth,
                k0,
                kc,
                mr: MR,
                next,
            };
            self.pass_rows(a, b, &pass, rows.clone(), p, tile);
            k0 += kc;
        }
    }

    /// One pass of panel `p` (its rows of that pass are `b`) against every `pass.mr`-row tile
    /// of `rows`.
    fn pass_rows<A, B>(
        &self,
        a: &[A],
        b: &[B],
        pass: &Pass,
        rows: Range<usize>,
        p: usize,
        tile: TileFn<A, B>,
    ) {
        let Pass {
            depth,
            k0,
            kc,
            mr,
            next,
        } = *pass;
        let n = self.n;
        let col = p * NR;
        let cols = NR.min(n - col);
        let last = k0 + kc == depth;
        let row_bytes = NR * std::mem::size_of::<B>();
        let mut r = rows.start;
        let mut j = 0;
        while r < rows.end {
            let h = mr.min(rows.end - r);
            let epi = self.tile_epilogue(r, col, last);
            let t = Tile {
                h,
                a: &a[r * depth + k0..],
                lda: depth,
                b,
                ldb: NR,
                kc,
                // In bounds: row `r`, column `col` of the `[m, n]` output.
                c: self.out.ptr().wrapping_add(r * n + col),
                ldc: n,
                cols,
                first: k0 == 0,
                epi: epi.as_ref(),
                pf: prefetch_for(next, j, kc, row_bytes),
            };
            // SAFETY: `c` points at row `r`, column `col` of an `[m, n]` output; the tile
            // writes `h` rows × `cols` columns of it, which no other task touches, and the
            // epilogue pointers are offset to this tile.
            unsafe { tile(&t) };
            r += h;
            j += 1;
        }
    }

    /// One panel × row range of [`Panels::F32Strips`], in passes of `KC`: every row tile
    /// against the pass's four strips (each `kc × 16` floats, contiguous).
    fn block_strips(&self, a: &[f32], panels: &[f32], rows: Range<usize>, p: usize) {
        let (n, k) = (self.n, self.k);
        let panel = &panels[p * k * NR..][..k * NR];
        let col = p * NR;
        let cols = NR.min(n - col);
        let mut k0 = 0;
        while k0 < k {
            let kc = KC.min(k - k0);
            let last = k0 + kc == k;
            // What this task reads after this pass: each strip's next pass, or the next
            // panel's strips; row tile `j` (1 to 4) pulls in strip `j - 1` of it.
            let next = |s: usize| -> Prefetch {
                let at = if !last {
                    panel.get(s * k * STRIP + (k0 + kc) * STRIP)
                } else {
                    panels.get((p + 1) * k * NR + s * k * STRIP)
                };
                at.map_or(Prefetch::NONE, |x| Prefetch(x as *const f32 as *const u8))
            };
            let mut r = rows.start;
            let mut j = 0;
            while r < rows.end {
                let h = MR.min(rows.end - r);
                let pf = if (1..=NR / STRIP).contains(&j) {
                    next(j - 1)
                } else {
                    Prefetch::NONE
                };
                let epi = self.tile_epilogue(r, col, last);
                let t = Tile {
                    h,
                    a: &a[r * k + k0..],
                    lda: k,
                    b: &panel[k0 * STRIP..],
                    ldb: STRIP,
                    kc,
                    c: self.out.ptr().wrapping_add(r * n + col),
                    ldc: n,
                    cols,
                    first: k0 == 0,
                    epi: epi.as_ref(),
                    pf,
                };
                // SAFETY: as in `pass_rows`; the strips of this pass lie within `panel`.
                unsafe { kernels::tile_f32_strips(&t, k) };
                r += h;
                j += 1;
            }
            k0 += kc;
        }
    }
}

/// Where one pass lies along the depth, and what the task reads after it.
#[derive(Clone, Copy)]
struct Pass {
    /// The whole depth (`k`, or `k/2` bf16 pairs): also the row stride of `a`.
    depth: usize,
    /// The pass is steps `k0..k0 + kc`.
    k0: usize,
    kc: usize,
    /// Rows per tile.
    mr: usize,
    /// What the task reads after this pass (see [`prefetch_for`]).
    next: Option<*const u8>,
}

/// Rows per f16 task: their slice of `a` for one pass (`F16_ROW_BLOCK × KC_F16` words,
/// 252 KiB) stays in L2 while the task's panels stream past it. With the f32 order (a task
/// per panel, every row) the whole of `a` came from L3 once per panel, and at 1,600 rows
/// that held the f16 kernel to 1.3× f32 where a cache-resident one runs at 2×.
const F16_ROW_BLOCK: usize = 21 * MR_F16;
/// Most panels per f16 task: each reuses the row block's `a` from L2, and the output block
/// (`F16_ROW_BLOCK × 8 × NR` floats, 504 KiB), revisited on every pass, stays there too.
const F16_PANEL_GROUP: usize = 8;

impl Job<'_> {
    /// Splits `[0, m) × panels` into tasks of [`F16_ROW_BLOCK`] rows × up to
    /// [`F16_PANEL_GROUP`] panels (fewer when that would leave threads idle).
    fn run_row_blocks(&self, m: usize, block: impl Fn(Range<usize>, Range<usize>) + Sync) {
        let panels = self.n.div_ceil(NR);
        let want = 4 * rayon::current_num_threads();
        let row_blocks = m.div_ceil(F16_ROW_BLOCK);
        let groups_wanted = want.div_ceil(row_blocks);
        let group = (panels / groups_wanted).clamp(1, F16_PANEL_GROUP);
        let groups = panels.div_ceil(group);
        (0..row_blocks * groups).into_par_iter().for_each(|t| {
            let (rb, g) = (t / groups, t % groups);
            let rows = rb * F16_ROW_BLOCK..((rb + 1) * F16_ROW_BLOCK).min(m);
            block(rows, g * group..((g + 1) * group).min(panels));
        });
    }

    /// A row block × a group of panels in f16: for each pass of [`KC_F16`], every panel of
    /// the group against every row tile of the block.
    fn block_f16(&self, a: &[u32], panels: &[u16], rows: Range<usize>, group: Range<usize>) {
        let k = self.k;
        let panel = |p: usize| &panels[p * k * NR..][..k * NR];
        let mut k0 = 0;
        while k0 < k {
            let kc = KC_F16.min(k - k0);
            for p in group.clone() {
                // What this task reads next: the next panel's pass, or the first panel's next.
                let next = if p + 1 < group.end {
                    Some(panel(p + 1)[k0 * NR..].as_ptr() as *const u8)
                } else if k0 + kc < k {
                    Some(panel(group.start)[(k0 + kc) * NR..].as_ptr() as *const u8)
                } else {
                    None
                };
                let b = &panel(p)[k0 * NR..][..kc * NR];
                let pass = Pass {
                    depth: k,
                    k0,
                    kc,
                    mr: MR_F16,
                    next,
                };
                self.pass_rows(a, b, &pass, rows.clone(), p, kernels::tile_f16);
            }
            k0 += kc;
        }
    }

    /// int8 runs the whole depth in one pass: the i32 sums are exact, and a panel of
    /// `k × NR` bytes (192 KiB at k = 3072) still sits in L2.
    fn block_int8<A>(
        &self,
        aq: &[A],
        sa: &[f32],
        panels: &Int8Panels,
        rows: Range<usize>,
        p: usize,
        tile: Int8TileFn<A>,
    ) {
        let n = self.n;
        let kq = k4(self.k);
        // AVX2's activations are interleaved by tile (`quant::quantize_rows_wide`): row `r`'s
        // offset `r · kq` is its tile's only where `r` starts one, as `Job::run`'s ranges do.
        debug_assert_eq!(rows.start % MR, 0, "row ranges start on whole tiles");
        let col = p * NR;
        let cols = NR.min(n - col);
        let b = &panels.data[p * kq * NR * 4..][..kq * NR * 4];
        let next = panels
            .data
            .get((p + 1) * kq * NR * 4)
            .map(|x| x as *const i8 as *const u8);
        let mut r = rows.start;
        let mut j = 0;
        while r < rows.end {
            let h = MR.min(rows.end - r);
            let q = Quant {
                row_scales: &sa[r..r + h],
                col_scales: &panels.scales[col..col + NR],
                col_offsets: &panels.offsets[col..col + NR],
            };
            let epi = self.tile_epilogue(r, col, true);
            let t = Tile {
                h,
                a: &aq[r * kq..],
                lda: kq,
                b,
                ldb: NR * 4,
                kc: kq,
                c: self.out.ptr().wrapping_add(r * n + col),
                ldc: n,
                cols,
                first: true,
                epi: epi.as_ref(),
                pf: prefetch_for(next, j, kq, PANEL_ROW_BYTES),
            };
            // SAFETY: as in `pass_rows`.
            unsafe { tile(&t, &q) };
            r += h;
            j += 1;
        }
    }
}

/// Most weight bytes an AMX task keeps in L2 (of 2 MiB per core on these Xeons) while its rows
/// stream past them: each 32-row tile of `a` is then read once from L3 for a whole group of
/// panels, not once per panel.
const AMX_GROUP_BYTES: usize = 1 << 20;

/// An AMX layer's tiles, and for int8 what turns its i32 sums back into f32.
#[derive(Clone, Copy)]
enum AmxWeights<'a> {
    Bf16(&'a Buf<u32>),
    /// The panels and the activations' per-row scales.
    Int8(&'a Int8Panels, &'a [f32]),
}

impl Job<'_> {
    /// The AMX matmul: tasks of a group of panels × a range of 32-row tiles (see
    /// [`AMX_GROUP_BYTES`]); `a` is the activations as [`amx::a_tiles`] (bf16 pairs or int8
    /// quads, rows of `lda` elements, whole 32-row blocks).
    #[cfg(target_arch = "x86_64")]
    fn run_amx(&self, m: usize, a: &[u32], lda: usize, weights: AmxWeights) {
        const ROWS: usize = 32;
        let (op, tiles) = match weights {
            AmxWeights::Bf16(t) => (amx::Op::Bf16, t.as_bytes()),
            AmxWeights::Int8(p, _) => (amx::Op::Int8, p.data.as_bytes()),
        };
        let kt = lda / amx::PER_STEP;
        let panel_len = kt * amx::PER_STEP * NR;
        let panels_n = self.n.div_ceil(NR);
        let want = 4 * rayon::current_num_threads();
        let group_max = (AMX_GROUP_BYTES / (panel_len * 4)).max(1);
        // Prefer splitting the columns (each task then reads only its share of the weights,
        // which is what small batches wait on); split rows only when there are too few panels.
        let groups = panels_n.min(want.max(panels_n.div_ceil(group_max)));
        let row_tiles = m.div_ceil(ROWS);
        let row_chunks = want.div_ceil(groups).min(row_tiles).max(1);
        let n = self.n;
        assert_eq!(
            tiles.len(),
            panels_n * panel_len * 4,
            "tiles are not [panels][steps]"
        );
        (0..groups * row_chunks).into_par_iter().for_each(|t| {
            let (g, rc) = (t / row_chunks, t % row_chunks);
            // Balanced shares: sizes differ by at most one.
            let share = |i: usize, parts: usize, of: usize| i * of / parts..(i + 1) * of / parts;
            let group = share(g, groups, panels_n);
            let my_rows = share(rc, row_chunks, row_tiles);
            // SAFETY: AMX is available (these panels exist only then); one `Tiles` per task,
            // and tasks do not nest.
            let _tiles = unsafe { amx::Tiles::configure() };
            let mut scratch = amx::Scratch::new();
            for tile in my_rows {
                let r = tile * ROWS;
                let h = ROWS.min(m - r);
                for p in group.clone() {
                    let col = p * NR;
                    let cols = NR.min(n - col);
                    // SAFETY: `a` has whole 32-row blocks of `lda` elements (so rows
                    // `r..r + 32` exist), the tiles hold `panels_n` panels of
                    // `panel_len`; the output block (`h` rows × `cols` at `r`, `col`) is this
                    // task's alone; AMX panels exist only where AVX-512 does, so the stores'
                    // instructions are there too.
                    unsafe {
                        let ap = a[r * lda..].as_ptr(); // row tile r / 16, `lda` per row
                        let bp = tiles[p * panel_len * 4..].as_ptr() as *const u32;
                        amx::panel_block(op, ap, bp, kt, cols, &mut scratch);
                        for (i, sums) in scratch.0.iter().enumerate().take(h) {
                            let epi = self.tile_epilogue(r + i, col, true);
                            let c = self.out.ptr().add((r + i) * n + col);
                            match weights {
                                AmxWeights::Bf16(_) => {
                                    avx512::store_sums(sums, c, cols, epi.as_ref())
                                }
                                AmxWeights::Int8(w, sa) => {
                                    let q = Quant {
                                        row_scales: &sa[r + i..],
                                        col_scales: &w.scales[col..col + NR],
                                        col_offsets: &w.offsets[col..col + NR],
                                    };
                                    avx512::store_int8_sums(sums, c, cols, &q, epi.as_ref())
                                }
                            }
                        }
                    }
                }
            }
        });
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn run_amx(&self, _: usize, _: &[u32], _: usize, _: AmxWeights) {
        unreachable!("AMX panels exist only on x86-64");
    }
}
