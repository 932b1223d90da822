//! bf16 matmul on Intel AMX tiles (Sapphire Rapids and later Xeons).
//!
//! Why: on these Xeons `vdpbf16ps` runs at half the f32 FMA rate, so the AVX-512 bf16 kernel
//! is *slower* than f32 there, while one core's AMX unit multiplies a 16×32 by a 32×16 bf16
//! tile (`tdpbf16ps`, 16K FLOP) every 16 cycles: several times the f32 FMA peak. The
//! weights are packed into the tiles' own layout (pairs of `k` in each 32-bit element, tiles
//! of 16 pair-rows × 16 columns, one contiguous KiB each); a 32 × 32 output block is summed
//! over the whole depth in four tile registers, stored once, and the usual epilogue (bias,
//! activation, residual) is applied on its way to the output.
//!
//! Rust has no stable AMX intrinsics, so the inner loop is inline assembly; the tile
//! registers are touched by nothing else, and each assembly block zeroes, fills and stores
//! the tiles it uses, so no tile state is assumed between blocks.
//!
//! Besides the tile kernel this file holds what only the AMX path needs: the availability
//! check, the weights' retiling and the activations' tile layout. The epilogue after the
//! tiles are stored is AVX-512's ([`super::avx512::store_sums`]).

/// Columns (and rows) of an f32 output tile.
const TILE: usize = 16;
/// 4-byte elements along `k` (bf16 pairs, int8 quads) per tile step: an A tile's rows and a
/// B tile's rows are 64 bytes.
pub(crate) const PER_STEP: usize = 16;
use super::tile::NR;

/// u32 pairs in one panel-half's tile step: two B tiles (32 columns × 16 pair-rows).
const HALF_STEP: usize = 2 * TILE * PER_STEP;

/// Tile steps that cover `depth` elements of `k`; A and B are padded with zeros to a whole
/// number of them.
pub(crate) fn steps(depth: usize) -> usize {
    depth.div_ceil(PER_STEP)
}

/// Whether the bf16 layers run on AMX tiles: the CPU has AMX-BF16 (and AVX-512 BF16, which
/// rounds the activations) and the OS lets this process use the tile registers.
pub(crate) fn bf16_available() -> bool {
    tiles_usable() && cpu_has(22) && crate::simd::avx512_bf16()
}

/// Whether the int8 layers run on AMX tiles (AMX-INT8).
pub(crate) fn int8_available() -> bool {
    tiles_usable() && cpu_has(25)
}

/// AMX-TILE on the CPU, AVX-512 for the epilogue, and the tile registers granted by the OS
/// (asked once; Linux grants them per process on request). `CLIPKIT_NO_AMX` turns it off, so
/// tests and benchmarks can reach the AVX-512 kernels on an AMX machine.
fn tiles_usable() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        std::env::var_os("CLIPKIT_NO_AMX").is_none()
            && crate::simd::avx512()
            && cpu_has(24)
            && os_grants_tiles()
    })
}

/// CPUID leaf 7, EDX bit `bit`: 22 AMX-BF16, 24 AMX-TILE, 25 AMX-INT8.
#[cfg(target_arch = "x86_64")]
fn cpu_has(bit: u32) -> bool {
    std::arch::x86_64::__cpuid_count(7, 0).edx & (1 << bit) != 0
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has(_: u32) -> bool {
    false
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn os_grants_tiles() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain system call with integer arguments; it only changes this process's
    // permission to use the tile state.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn os_grants_tiles() -> bool {
    false
}

/// Elements (u32) of the tiled weights of `n` columns and `depth` elements of `k` each.
pub(crate) fn packed_len(n: usize, depth: usize) -> usize {
    n.div_ceil(NR) * steps(depth) * PER_STEP * NR
}

/// The AVX-512 kernels' panels (`[panel][depth][NR]` 4-byte elements: bf16 pairs or int8
/// quads along `k`) retiled as `[panel][half][step][tile of the half][row][column]`, zeros
/// past `depth`: each 32-column half of a panel becomes one contiguous stream of 2 KiB steps,
/// each step the two B tiles that one `tdpbf16ps`/`tdpbusd` pair reads.
pub(crate) fn retile(panels: &[u8], n: usize, depth: usize) -> Vec<u32> {
    use rayon::prelude::*;
    let kt = steps(depth);
    let src_panel = depth * NR * 4;
    let mut data = vec![0u32; packed_len(n, depth)];
    data.par_chunks_mut(kt * PER_STEP * NR)
        .zip(panels.par_chunks(src_panel))
        .for_each(|(dst, src)| {
            // `dst` in order: half, step, tile, row, column.
            let mut dst = dst.iter_mut();
            for half in 0..2 {
                for step in 0..kt {
                    for tile in 0..2 {
                        let col0 = (2 * half + tile) * TILE;
                        for row in 0..PER_STEP {
                            let d = step * PER_STEP + row;
                            for col in col0..col0 + TILE {
                                let x = dst.next().expect("sized by packed_len");
                                if d < depth {
                                    let at = (d * NR + col) * 4;
                                    *x = u32::from_ne_bytes(src[at..at + 4].try_into().unwrap());
                                }
                            }
                        }
                    }
                }
            }
        });
    data
}

/// u32 elements of one tile (16 rows × 16).
const TILE_LEN: usize = TILE * PER_STEP;

/// Activations as A tiles, `[row tile][step][row][element]`, so each tile load reads one
/// contiguous KiB instead of 16 lines a row apart (32 strided streams per row tile defeat the
/// L2 streamer): `row(r, buf)` writes row `r` of `m` (`kt · PER_STEP` elements, already
/// padded) into `buf`, and it is scattered into its tiles from there, in L1. Rows past `m`,
/// up to a whole 32-row block (what one kernel call reads), are `fill`.
pub(crate) fn a_tiles(
    m: usize,
    kt: usize,
    fill: u32,
    row: impl Fn(usize, &mut [u32]) + Sync,
) -> Vec<u32> {
    use rayon::prelude::*;
    let lda = kt * PER_STEP;
    let mut out = vec![fill; m.next_multiple_of(2 * TILE) * lda];
    out.par_chunks_mut(TILE * lda)
        .enumerate()
        .for_each(|(t, dst)| {
            let mut buf = vec![fill; lda];
            for r in 0..TILE.min(m.saturating_sub(t * TILE)) {
                row(t * TILE + r, &mut buf);
                for (step, chunk) in buf.chunks_exact(PER_STEP).enumerate() {
                    dst[step * TILE_LEN + r * PER_STEP..][..PER_STEP].copy_from_slice(chunk);
                }
            }
        });
    out
}

/// Which tile multiply a layer's tiles are for.
#[derive(Clone, Copy)]
pub(crate) enum Op {
    /// `tdpbf16ps`: bf16 pairs, f32 sums.
    Bf16,
    /// `tdpbusd`: unsigned × signed byte quads, exact i32 sums (stored as their bits).
    Int8,
}

/// A 32-row × 64-column block of sums as the tiles store them (f32, or i32 bits for int8).
#[repr(C, align(64))]
pub(crate) struct Scratch(pub(crate) [[f32; NR]; 2 * TILE]);

impl Scratch {
    pub(crate) fn new() -> Self {
        Self([[0.0; NR]; 2 * TILE])
    }
}

/// Sums 32 rows × one panel over the whole depth into
/// `out`: `a` points at the first of the row tiles' [`a_tiles`] (the next row tile follows
/// `kt` tiles later), `panel` at the panel's tiles; `cols` (≤ 64) says whether the second
/// half is needed.
///
/// # Safety
/// AMX for `op` is available and the caller holds the tile configuration ([`Tiles`]); `a` is
/// valid for two row tiles of `kt` steps, `panel` for the packed
/// panel of `kt` steps.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn panel_block(
    op: Op,
    a: *const u32,
    panel: *const u32,
    kt: usize,
    cols: usize,
    out: &mut Scratch,
) {
    for half in 0..cols.div_ceil(2 * TILE) {
        // SAFETY: `half` is 0 or 1: the panel's half and the scratch's 32 columns both exist;
        // the tiles are configured and `a` and the panel valid (the caller's contract).
        unsafe {
            let b = panel.add(half * kt * HALF_STEP);
            let o = out.0.as_mut_ptr().cast::<f32>().add(half * 2 * TILE);
            match op {
                Op::Bf16 => x86::bf16_32x32(a, b, kt, o),
                Op::Int8 => x86::int8_32x32(a, b, kt, o),
            }
        }
    }
}

/// The tile configuration loaded on this thread for as long as it lives (16 rows × 64 bytes
/// for every tile), released after: the OS then need not save 8 KiB of tile state with the
/// thread on every switch.
pub(crate) struct Tiles(());

impl Tiles {
    /// # Safety
    /// [`tiles_usable`] is true. No other [`Tiles`] is alive on this thread.
    #[cfg(target_arch = "x86_64")]
    pub(crate) unsafe fn configure() -> Self {
        // SAFETY: AMX is usable (the caller's contract), and no other configuration is live
        // on this thread to be overwritten.
        unsafe { x86::load_config() };
        Tiles(())
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: a `Tiles` exists only where `configure` ran, so AMX is usable here.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            x86::release()
        };
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;

    use super::{HALF_STEP, NR, TILE, TILE_LEN};

    /// LDTILECFG's 64-byte operand.
    #[repr(C, align(64))]
    struct Config {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        bytes_per_row: [u16; 16],
        rows: [u8; 16],
    }

    static CONFIG: Config = Config {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
        rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
    };

    /// Loads [`CONFIG`]: eight tiles of 16 rows × 64 bytes.
    ///
    /// # Safety
    /// The CPU has AMX-TILE and the OS granted this process the tile state.
    pub(super) unsafe fn load_config() {
        // SAFETY: `CONFIG` is a valid 64-byte, 64-aligned palette-1 configuration; the
        // instruction is available (the caller's contract).
        unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly)) };
    }

    /// Returns the tile state to its initial (unused) state.
    ///
    /// # Safety
    /// The CPU has AMX-TILE and the OS granted this process the tile state.
    pub(super) unsafe fn release() {
        // SAFETY: the instruction is available (the caller's contract); it touches no memory.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }

    /// Bytes between the output rows the tiles store (the scratch block's rows).
    const LDO: usize = NR * 4;

    /// `$name_32x32`: C (tmm0..3: rows 0–15 / 16–31 × columns 0–15 / 16–31) = Σ over `kt` steps
    /// of A (tmm4, tmm5: the two 16-row tiles) · B (tmm6, tmm7: the step's two column tiles),
    /// with `$op` the tile multiply.
    macro_rules! kernels {
        ($op:literal, $big:ident) => {
            /// One 32 × 32 output block over `kt` tile steps (see [`kernels`]).
            ///
            /// # Safety
            /// The tile configuration is loaded ([`super::Tiles`]) and the CPU has the
            /// instruction; `a` is valid for two row tiles of `kt` steps each (`kt ·
            /// TILE_LEN` u32 apart), `b` for `kt` steps of `HALF_STEP` u32, and `o` for
            /// 32 rows of `LDO` bytes (32 floats each written); `kt ≥ 1`.
            pub(super) unsafe fn $big(a: *const u32, b: *const u32, kt: usize, o: *mut f32) {
                // SAFETY: the loads and stores stay inside the ranges of the contract above;
                // the loop runs `kt` times and the tile registers are ours (configured).
                unsafe { asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    "2:",
                    "tileloadd tmm6, [{b} + {s64} * 1]",
                    "tileloadd tmm7, [{b} + {s64} * 1 + 1024]",
                    "tileloadd tmm4, [{a} + {s64} * 1]",
                    concat!($op, " tmm0, tmm4, tmm6"),
                    concat!($op, " tmm1, tmm4, tmm7"),
                    "tileloadd tmm5, [{a2} + {s64} * 1]",
                    concat!($op, " tmm2, tmm5, tmm6"),
                    concat!($op, " tmm3, tmm5, tmm7"),
                    "add {a}, 1024",
                    "add {a2}, 1024",
                    "add {b}, {bstep}",
                    "dec {n}",
                    "jnz 2b",
                    "tilestored [{o} + {ldo} * 1], tmm0",
                    "tilestored [{o} + {ldo} * 1 + 64], tmm1",
                    "tilestored [{o2} + {ldo} * 1], tmm2",
                    "tilestored [{o2} + {ldo} * 1 + 64], tmm3",
                    a = inout(reg) a => _,
                    a2 = inout(reg) a.add(kt * TILE_LEN) => _,
                    b = inout(reg) b => _,
                    n = inout(reg) kt => _,
                    s64 = in(reg) 64usize,
                    bstep = const HALF_STEP * 4,
                    o = in(reg) o,
                    o2 = in(reg) o.byte_add(TILE * LDO),
                    ldo = in(reg) LDO,
                    options(nostack),
                ) };
            }
        };
    }

    kernels!("tdpbf16ps", bf16_32x32);
    kernels!("tdpbusd", int8_32x32);
}
