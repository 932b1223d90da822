//! `out = act(a·Wᵀ + bias) + residual` for a linear layer whose weights `W` (`[n, k]`, the
//! PyTorch layout) were packed once at load time.
//!
//! Why a kernel of our own: in the profile of candle's CPU path the matmuls took three
//! quarters of the time yet reached only about half of what the two cores can do (it packs
//! the weights again on every call, serially), and the bias add, activation and residual add
//! were each a further full pass over memory. Here the weights are packed once into panels of
//! [`NR`] columns, each panel is streamed from L2 against [`MR`] rows of `a` at a time, and the
//! epilogue runs on the accumulators before they are stored.
//!
//! Work is split over rayon's pool by column panel (and by rows when there are too few panels
//! to keep every thread busy), so threads never write the same output element.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::act::Activation;
use crate::amx;
use crate::buf::{Backing, Buf};
use crate::int8::{self, Int8Panels};

/// `f::<R>(args)` with the row count `h` (1 to [`MR`]) as the const generic `R` that the
/// micro-kernels are compiled for.
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

/// Output columns per packed panel: four 16-float AVX-512 vectors.
pub const NR: usize = 64;
/// Rows of `a` per micro-tile: 6 × 4 accumulators leave registers for the loads.
pub const MR: usize = 6;
/// Rows per f16 micro-tile: a 64-column f16 row is two vectors, so 12 rows fill the same
/// 24 accumulators, and each panel row loaded serves twice the FMAs.
const MR_F16: usize = 12;
/// Depth of one pass over a panel: `KC × NR` floats (64 KiB) stay in L2 while every row tile
/// of `a` streams past them.
const KC: usize = 768;
/// Depth of one f16 pass: the f16 accumulators are converted and added to the f32 output
/// after this many steps, so a sum's rounding error stays that of a 256-term f16 sum
/// (relative ~2e-3, about bf16's input rounding) whatever `k` is; flushing costs ~4%.
const KC_F16: usize = 256;

/// How the packed weights are stored, and so which kernel multiplies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    F32,
    /// bf16 weights and activations, f32 accumulation: on AMX tiles where the CPU has them
    /// (see [`crate::amx`]), else AVX-512 BF16 `vdpbf16ps`.
    Bf16,
    /// int8 weights (per output column) and activations (per row, at run time), exact i32
    /// accumulation (AVX-512 VNNI `vpdpbusd`); see [`crate::int8`].
    Int8,
    /// f16 weights and activations (AVX-512 FP16 `vfmadd231ph`, twice the f32 FMA rate on a
    /// Sapphire/Emerald Rapids Xeon, where `vdpbf16ps` runs at half of it): f16 sums over
    /// [`KC_F16`] steps of `k`, added up in f32.
    F16,
}

enum Panels {
    /// `[panel][k][NR]`.
    F32(Buf<f32>),
    /// `[panel][NR / 16][k][16]`: AVX2's 16-column strips, each contiguous.
    F32Strips(Buf<f32>),
    /// `[panel][k/2][NR]` pairs of bf16 (the even `k` in the low half), as `vdpbf16ps` reads
    /// them; `k` is padded to even with zeros.
    Bf16(Buf<u32>),
    /// The bf16 pairs retiled for AMX: see [`amx::retile`].
    Bf16Amx(Buf<u32>),
    Int8(Int8Panels),
    /// `[panel][NR / 8][k/4][8][4]`: AVX2's 8-column strips, each contiguous.
    Int8Strips(Int8Panels),
    /// The int8 quads retiled for AMX, with the same scales and offsets.
    Int8Amx(Int8Panels),
    /// `[panel][k][NR]` f16 bits.
    F16(Buf<u16>),
}

/// The kernel that layers packed now in `format` run on, on this CPU: what benchmarks report,
/// and part of the pack cache's identity (panels packed for one kernel are not reused by
/// another, say after `CLIPKIT_NO_AMX` is set).
pub fn kernel_name(format: WeightFormat) -> &'static str {
    let avx512 = crate::simd::avx512();
    match format {
        WeightFormat::F32 if avx512 => "avx512-f32",
        WeightFormat::Bf16 if amx::bf16_available() => "amx-bf16",
        WeightFormat::Int8 if amx::int8_available() => "amx-int8",
        WeightFormat::Bf16 if crate::simd::avx512_bf16() => "avx512-bf16",
        WeightFormat::Int8 if crate::simd::avx512_vnni() => "avx512-vnni-int8",
        WeightFormat::F16 if crate::simd::avx512_fp16() => "avx512-fp16",
        WeightFormat::F32 if crate::simd::avx2() => "avx2-f32",
        WeightFormat::Int8 if crate::simd::avx2() => "avx2-int8",
        WeightFormat::F32 => "portable-f32",
        WeightFormat::Bf16 => "portable-bf16",
        WeightFormat::Int8 => "portable-int8",
        WeightFormat::F16 => "portable-f16",
    }
}

/// A linear layer's weights and bias in the micro-kernel's layout.
pub struct PackedWeights {
    n: usize,
    k: usize,
    panels: Panels,
    bias: Option<Vec<f32>>,
}

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

/// Alignment of every part of a saved layer (a cache line; also what the panels' loads like).
const ALIGN: usize = 64;
const LAYER_MAGIC: u32 = u32::from_le_bytes(*b"PKW1");

const NO_AMX: &str = "packed for AMX tiles, which this CPU (or CLIPKIT_NO_AMX) rules out";
const NO_STRIPS: &str = "packed in AVX2 strips, for a CPU without AVX-512";
const NO_VNNI: &str = "packed for AVX-512 VNNI, which this CPU lacks";

/// Whether f32 layers are packed in [`Panels::F32Strips`] for the AVX2 kernel.
fn strips_kernel() -> bool {
    crate::simd::avx2() && !crate::simd::avx512()
}

/// Bytes per panel element of a saved layer's format code (f32, bf16 pairs, int8, f16,
/// bf16 pairs and int8 in AMX tiles, and f32 in AVX2 strips).
fn element_size(format: u32) -> usize {
    [4, 4, 1, 2, 4, 1, 4, 1][format as usize]
}

fn padded(len: usize) -> usize {
    len.div_ceil(ALIGN) * ALIGN
}

fn floats_as_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding; any f32 memory may be read as bytes.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
}

fn write_padded(out: &mut impl std::io::Write, part: &[u8]) -> std::io::Result<usize> {
    out.write_all(part)?;
    let pad = padded(part.len()) - part.len();
    out.write_all(&[0u8; ALIGN][..pad])?;
    Ok(part.len() + pad)
}

fn to_bf16_bits(x: f32) -> u32 {
    half::bf16::from_f32(x).to_bits() as u32
}

/// f16's largest finite value: inputs beyond it are clamped rather than turned into infinity.
const F16_MAX: f32 = 65504.0;

fn to_f16_bits(x: f32) -> u16 {
    half::f16::from_f32(x.clamp(-F16_MAX, F16_MAX)).to_bits()
}

impl PackedWeights {
    /// `w`: `[n, k]` row-major (a PyTorch `Linear` weight), `bias`: `[n]`.
    pub fn new(w: &[f32], n: usize, k: usize, bias: Option<&[f32]>, format: WeightFormat) -> Self {
        assert_eq!(w.len(), n * k, "weight is not [n, k]");
        // `matmul_uninit` relies on it: the first pass over the depth stores every output.
        assert!(k > 0, "weight has no input features (k = 0)");
        if let Some(b) = bias {
            assert_eq!(b.len(), n, "bias is not [n]");
        }
        let np = n.div_ceil(NR);
        let panels = match format {
            WeightFormat::F32 => {
                let strips = strips_kernel();
                let mut data = vec![0f32; np * k * NR];
                data.par_chunks_mut(k * NR)
                    .enumerate()
                    .for_each(|(p, panel)| {
                        for j in 0..NR.min(n - p * NR) {
                            let row = &w[(p * NR + j) * k..][..k];
                            for (kk, &v) in row.iter().enumerate() {
                                if strips {
                                    panel[(j / 16) * k * 16 + kk * 16 + j % 16] = v;
                                } else {
                                    panel[kk * NR + j] = v;
                                }
                            }
                        }
                    });
                if strips {
                    Panels::F32Strips(Buf::Owned(data))
                } else {
                    Panels::F32(Buf::Owned(data))
                }
            }
            WeightFormat::Bf16 => {
                let k2 = k.div_ceil(2);
                let mut data = vec![0u32; np * k2 * NR];
                data.par_chunks_mut(k2 * NR)
                    .enumerate()
                    .for_each(|(p, panel)| {
                        for j in 0..NR.min(n - p * NR) {
                            let row = &w[(p * NR + j) * k..][..k];
                            for (kk2, pair) in row.chunks(2).enumerate() {
                                let lo = to_bf16_bits(pair[0]);
                                let hi = pair.get(1).map_or(0, |&v| to_bf16_bits(v));
                                panel[kk2 * NR + j] = lo | (hi << 16);
                            }
                        }
                    });
                if amx::bf16_available() {
                    let bytes = Buf::Owned(data);
                    Panels::Bf16Amx(Buf::Owned(amx::retile(bytes.as_bytes(), n, k2)))
                } else {
                    Panels::Bf16(Buf::Owned(data))
                }
            }
            WeightFormat::Int8 => {
                let mut p = int8::pack(w, n, k);
                if amx::int8_available() {
                    let tiles = amx::retile(p.data.as_bytes(), n, int8::k4(k));
                    p.data = Buf::Owned(
                        tiles
                            .iter()
                            .flat_map(|q| q.to_ne_bytes().map(|b| b as i8))
                            .collect(),
                    );
                    Panels::Int8Amx(p)
                } else if int8::signed_activations() {
                    p.data = Buf::Owned(int8::to_strips(p.data.as_bytes(), n, k));
                    Panels::Int8Strips(p)
                } else {
                    Panels::Int8(p)
                }
            }
            WeightFormat::F16 => {
                let mut data = vec![0u16; np * k * NR];
                data.par_chunks_mut(k * NR)
                    .enumerate()
                    .for_each(|(p, panel)| {
                        for j in 0..NR.min(n - p * NR) {
                            let row = &w[(p * NR + j) * k..][..k];
                            for (kk, &v) in row.iter().enumerate() {
                                panel[kk * NR + j] = to_f16_bits(v);
                            }
                        }
                    });
                Panels::F16(Buf::Owned(data))
            }
        };
        Self {
            n,
            k,
            panels,
            bias: bias.map(<[f32]>::to_vec),
        }
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// Writes the layer in a form [`Self::from_backing`] maps back without copying: a 64-byte
    /// header, then the panels, the int8 scales and offsets and the bias, each padded to 64
    /// bytes. Native byte order: the file is a cache for this machine, not an exchange format.
    /// Returns the bytes written (a multiple of 64).
    pub fn write_to(&self, out: &mut impl std::io::Write) -> std::io::Result<usize> {
        let (format, data, scales, offsets): (u32, &[u8], &[f32], &[f32]) = match &self.panels {
            Panels::F32(d) => (0, d.as_bytes(), &[], &[]),
            Panels::F32Strips(d) => (6, d.as_bytes(), &[], &[]),
            Panels::Bf16(d) => (1, d.as_bytes(), &[], &[]),
            Panels::Int8(p) => (2, p.data.as_bytes(), &p.scales, &p.offsets),
            Panels::Int8Strips(p) => (7, p.data.as_bytes(), &p.scales, &p.offsets),
            Panels::F16(d) => (3, d.as_bytes(), &[], &[]),
            Panels::Bf16Amx(d) => (4, d.as_bytes(), &[], &[]),
            Panels::Int8Amx(p) => (5, p.data.as_bytes(), &p.scales, &p.offsets),
        };
        let bias = self.bias.as_deref().unwrap_or(&[]);
        let mut header = Vec::with_capacity(ALIGN);
        header.extend_from_slice(&LAYER_MAGIC.to_ne_bytes());
        header.extend_from_slice(&format.to_ne_bytes());
        let elements = data.len() / element_size(format);
        for v in [self.n, self.k, NR, elements, scales.len(), bias.len()] {
            header.extend_from_slice(&(v as u64).to_ne_bytes());
        }
        let mut written = 0;
        for part in [
            &header[..],
            data,
            floats_as_bytes(scales),
            floats_as_bytes(offsets),
        ] {
            written += write_padded(out, part)?;
        }
        written += write_padded(out, floats_as_bytes(bias))?;
        Ok(written)
    }

    /// A layer written by [`Self::write_to`] at byte `offset` of `backing` (which must be
    /// 64-byte aligned in memory, as a memory map is), its panels used in place. Returns the
    /// layer and the offset just past it.
    pub fn from_backing(backing: Backing, offset: usize) -> Result<(Self, usize), String> {
        let bytes = (*backing).as_ref();
        let header = bytes
            .get(offset..offset + ALIGN)
            .ok_or("truncated layer header")?;
        let word = |i: usize| u64::from_ne_bytes(header[8 + 8 * i..16 + 8 * i].try_into().unwrap());
        let magic = u32::from_ne_bytes(header[0..4].try_into().unwrap());
        let format = u32::from_ne_bytes(header[4..8].try_into().unwrap());
        if magic != LAYER_MAGIC {
            return Err("not a packed layer".into());
        }
        let [n, k, nr, data_len, small_len, bias_len] =
            [0, 1, 2, 3, 4, 5].map(|i| word(i) as usize);
        if nr != NR {
            return Err(format!("panels of {nr} columns, this build uses {NR}"));
        }
        let np = n.div_ceil(NR);
        let (expected, expected_small) = match format {
            0 => (np * k * NR, 0),
            1 => (np * k.div_ceil(2) * NR, 0),
            2 if int8::signed_activations() => return Err(NO_VNNI.into()),
            2 => (np * int8::k4(k) * NR * 4, np * NR),
            3 => (np * k * NR, 0),
            4 if !amx::bf16_available() => return Err(NO_AMX.into()),
            5 if !amx::int8_available() => return Err(NO_AMX.into()),
            4 => (amx::packed_len(n, k.div_ceil(2)), 0),
            5 => (amx::packed_len(n, int8::k4(k)) * 4, np * NR),
            6 if !strips_kernel() => return Err(NO_STRIPS.into()),
            6 => (np * k * NR, 0),
            7 if !int8::signed_activations() => return Err(NO_STRIPS.into()),
            7 => (np * int8::k4(k) * NR * 4, np * NR),
            f => return Err(format!("unknown panel format {f}")),
        };
        if data_len != expected || small_len != expected_small || !(bias_len == 0 || bias_len == n)
        {
            return Err(format!("inconsistent layer sizes for [{n}, {k}]"));
        }
        let mut at = offset + ALIGN;
        let elem = element_size(format);
        let data_at = at;
        at += padded(data_len * elem);
        let mut floats = |len: usize| -> Result<Vec<f32>, String> {
            let part = bytes.get(at..at + 4 * len).ok_or("truncated layer")?;
            at += padded(4 * len);
            Ok(part
                .chunks_exact(4)
                .map(|b| f32::from_ne_bytes(b.try_into().unwrap()))
                .collect())
        };
        let scales = floats(small_len)?;
        let offsets = floats(small_len)?;
        let bias = floats(bias_len)?;
        let panels = match format {
            0 => Panels::F32(Buf::mapped(backing, data_at, data_len)?),
            6 => Panels::F32Strips(Buf::mapped(backing, data_at, data_len)?),
            1 => Panels::Bf16(Buf::mapped(backing, data_at, data_len)?),
            3 => Panels::F16(Buf::mapped(backing, data_at, data_len)?),
            4 => Panels::Bf16Amx(Buf::mapped(backing, data_at, data_len)?),
            2 => Panels::Int8(Int8Panels {
                data: Buf::mapped(backing, data_at, data_len)?,
                scales,
                offsets,
            }),
            7 => Panels::Int8Strips(Int8Panels {
                data: Buf::mapped(backing, data_at, data_len)?,
                scales,
                offsets,
            }),
            _ => Panels::Int8Amx(Int8Panels {
                data: Buf::mapped(backing, data_at, data_len)?,
                scales,
                offsets,
            }),
        };
        let layer = Self {
            n,
            k,
            panels,
            bias: (bias_len > 0).then_some(bias),
        };
        Ok((layer, at))
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn format(&self) -> WeightFormat {
        match self.panels {
            Panels::F32(_) | Panels::F32Strips(_) => WeightFormat::F32,
            Panels::Bf16(_) | Panels::Bf16Amx(_) => WeightFormat::Bf16,
            Panels::Int8(_) | Panels::Int8Amx(_) | Panels::Int8Strips(_) => WeightFormat::Int8,
            Panels::F16(_) => WeightFormat::F16,
        }
    }

    /// Bytes held (what replaces the f32 weight tensor in memory).
    pub fn bytes(&self) -> usize {
        let panels = match &self.panels {
            Panels::F32(d) | Panels::F32Strips(d) => d.len() * 4,
            Panels::Bf16(d) | Panels::Bf16Amx(d) => d.len() * 4,
            Panels::Int8(p) | Panels::Int8Amx(p) | Panels::Int8Strips(p) => {
                p.data.len() + p.scales.len() * 8
            }
            Panels::F16(d) => d.len() * 2,
        };
        panels + self.bias.as_ref().map_or(0, |b| b.len() * 4)
    }

    /// `out[m, n] = act(a[m, k]·Wᵀ + bias) + residual`.
    pub fn matmul(&self, a: &[f32], m: usize, epilogue: Epilogue, out: &mut [f32]) {
        // SAFETY: same layout; `matmul_uninit` only writes initialised f32 values into it.
        let out = unsafe { &mut *(out as *mut [f32] as *mut [MaybeUninit<f32>]) };
        self.matmul_uninit(a, m, epilogue, out);
    }

    /// [`matmul`](Self::matmul) into memory that need not be initialised: every element of
    /// `out` is written. A layer's output is tens of MB, and zeroing it first cost 5–7% of an
    /// int8 forward pass.
    pub fn matmul_uninit(
        &self,
        a: &[f32],
        m: usize,
        epilogue: Epilogue,
        out: &mut [MaybeUninit<f32>],
    ) {
        let (n, k) = (self.n, self.k);
        assert_eq!(a.len(), m * k, "input is not [m, k]");
        assert_eq!(out.len(), m * n, "output is not [m, n]");
        if let Some(r) = epilogue.residual {
            assert_eq!(r.len(), m * n, "residual is not [m, n]");
        }
        if m == 0 || n == 0 {
            return;
        }
        let job = Job {
            n,
            k,
            bias: self.bias.as_deref(),
            epilogue,
            out: SharedOut(out.as_mut_ptr() as *mut f32),
        };
        match &self.panels {
            Panels::F32(panels) => job.run(m, |rows, p| {
                job.block(a, k, panels, rows, p, tile_f32_packed)
            }),
            Panels::F32Strips(panels) => job.run(m, |rows, p| job.block_strips(a, panels, rows, p)),
            Panels::Bf16(panels) => {
                let k2 = k.div_ceil(2);
                let a16 = bf16_pairs(a, m, k);
                job.run(m, |rows, p| job.block(&a16, k2, panels, rows, p, tile_bf16))
            }
            Panels::Bf16Amx(panels) => {
                let depth = k.div_ceil(2);
                let lda = amx::steps(depth) * amx::PER_STEP;
                // Whole 32-row blocks: the last block's extra rows read zeros.
                let a16 = amx::a_tiles(m, lda / amx::PER_STEP, 0, |r, dst| {
                    bf16_row(&a[r * k..][..k], &mut dst[..depth]);
                });
                job.run_amx(m, &a16, lda, AmxWeights::Bf16(panels))
            }
            Panels::Int8Amx(panels) => {
                let depth = int8::k4(k);
                let lda = amx::steps(depth) * amx::PER_STEP;
                let sa = int8::row_scales(a, m, k);
                let aq = amx::a_tiles(m, lda / amx::PER_STEP, 0x8080_8080, |r, dst| {
                    int8::quantize_row(&a[r * k..][..k], sa[r], dst);
                });
                job.run_amx(m, &aq, lda, AmxWeights::Int8(panels, &sa))
            }
            Panels::F16(panels) => {
                let a16 = f16_broadcasts(a);
                job.run_row_blocks(m, |rows, group| job.block_f16(&a16, panels, rows, group))
            }
            Panels::Int8(panels) => {
                let (aq, sa) = int8::quantize_rows(a, m, k);
                job.run(m, |rows, p| {
                    job.block_int8(&aq, &sa, panels, rows, p, tile_int8)
                })
            }
            Panels::Int8Strips(panels) => {
                let (aq, sa) = int8::quantize_rows_wide(a, m, k);
                let tile = tile_int8_strips;
                job.run(m, |rows, p| job.block_int8(&aq, &sa, panels, rows, p, tile))
            }
        }
    }
}

/// `a` rounded to bf16 (to nearest even) and paired along `k` as the bf16 kernel broadcasts
/// it: `[m][k/2]`. Consecutive bf16 values of a row already are those pairs.
fn bf16_pairs(a: &[f32], m: usize, k: usize) -> Vec<u32> {
    let k2 = k.div_ceil(2);
    let mut out = vec![0u32; m * k2];
    out.par_chunks_mut(k2)
        .zip(a.par_chunks(k))
        .with_min_len(8)
        .for_each(|(dst, src)| bf16_row(src, dst));
    out
}

/// One row of `bf16_pairs`: `dst` holds `src.len() / 2` pairs (rounded up).
fn bf16_row(src: &[f32], dst: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512_bf16() && src.len().is_multiple_of(2) {
        // SAFETY: the CPU has AVX-512 BF16; `dst` holds `k / 2` pairs for `k` floats.
        unsafe { x86::to_bf16_row(src, dst) };
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
fn f16_broadcasts(a: &[f32]) -> Vec<u32> {
    let mut out = vec![0u32; a.len()];
    out.par_chunks_mut(4096)
        .zip(a.par_chunks(4096))
        .for_each(|(dst, src)| {
            #[cfg(target_arch = "x86_64")]
            if crate::simd::avx512() {
                // SAFETY: the CPU has AVX-512; `dst` and `src` have the same length.
                unsafe { x86::to_f16_broadcasts(src, dst) };
                return;
            }
            for (d, &v) in dst.iter_mut().zip(src) {
                let h = to_f16_bits(v) as u32;
                *d = h | (h << 16);
            }
        });
    out
}

/// The output pointer shared by the tasks; each writes a disjoint set of elements.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: tasks write disjoint (row range, column panel) blocks, see `Job::run`.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

struct Job<'a> {
    n: usize,
    k: usize,
    bias: Option<&'a [f32]>,
    epilogue: Epilogue<'a>,
    out: SharedOut,
}

/// Per micro-tile view of the epilogue, with the pointers already offset to the tile.
pub(crate) struct TileEpilogue {
    pub(crate) act: Activation,
    pub(crate) bias: *const f32,
    pub(crate) residual: *const f32,
}

impl Job<'_> {
    /// Splits `[0, m) × panels` into tasks of whole panels × row ranges (whole multiples of
    /// `MR` where possible) and runs them on rayon's pool.
    fn run(&self, m: usize, block: impl Fn(std::ops::Range<usize>, usize) + Sync) {
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
        rows: std::ops::Range<usize>,
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
            self.pass_rows(a, depth, b, (k0, kc), rows.clone(), MR, p, next, tile);
            k0 += kc;
        }
    }

    /// Steps `k0..k0 + kc` of the depth (of `depth`) for panel `p`, whose rows of that pass
    /// are `b`, against every `mr`-row tile of `rows`; `next` is what the task reads after.
    #[allow(clippy::too_many_arguments)]
    fn pass_rows<A, B>(
        &self,
        a: &[A],
        depth: usize,
        b: &[B],
        (k0, kc): (usize, usize),
        rows: std::ops::Range<usize>,
        mr: usize,
        p: usize,
        next: Option<*const u8>,
        tile: TileFn<A, B>,
    ) {
        let n = self.n;
        let col = p * NR;
        let cols = NR.min(n - col);
        let last = k0 + kc == depth;
        let row_bytes = NR * std::mem::size_of::<B>();
        let mut r = rows.start;
        let mut j = 0;
        while r < rows.end {
            let h = mr.min(rows.end - r);
            // SAFETY: `c` points at row `r`, column `col` of an `[m, n]` output; the tile
            // writes `h` rows × `cols` columns of it, which no other task touches, and the
            // epilogue pointers are offset to this tile.
            unsafe {
                let c = self.out.0.add(r * n + col);
                let epi = self.tile_epilogue(r, col, last);
                let pf = prefetch_for(next, j, kc, row_bytes);
                tile(
                    h,
                    &a[r * depth + k0..],
                    depth,
                    b,
                    kc,
                    c,
                    n,
                    cols,
                    k0 == 0,
                    epi.as_ref(),
                    pf,
                );
            }
            r += h;
            j += 1;
        }
    }
}

impl Job<'_> {
    /// One panel × row range of [`Panels::F32Strips`], in passes of `KC`: every row tile
    /// against the pass's four strips (each `kc × 16` floats, contiguous).
    fn block_strips(&self, a: &[f32], panels: &[f32], rows: std::ops::Range<usize>, p: usize) {
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
                    panel.get(s * k * 16 + (k0 + kc) * 16)
                } else {
                    panels.get((p + 1) * k * NR + s * k * 16)
                };
                at.map_or(Prefetch::NONE, |x| Prefetch(x as *const f32 as *const u8))
            };
            let mut r = rows.start;
            let mut j = 0;
            while r < rows.end {
                let h = MR.min(rows.end - r);
                let pf = if (1..=NR / AVX2_STRIP).contains(&j) {
                    next(j - 1)
                } else {
                    Prefetch::NONE
                };
                // SAFETY: as in `pass_rows`; the strips of this pass lie within `panel`.
                unsafe {
                    let c = self.out.0.add(r * n + col);
                    let epi = self.tile_epilogue(r, col, last);
                    tile_f32_strips(
                        h,
                        &a[r * k + k0..],
                        k,
                        &panel[k0 * 16..],
                        kc,
                        c,
                        n,
                        cols,
                        k0 == 0,
                        epi.as_ref(),
                        pf,
                    );
                }
                r += h;
                j += 1;
            }
            k0 += kc;
        }
    }
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
    fn run_row_blocks(
        &self,
        m: usize,
        block: impl Fn(std::ops::Range<usize>, std::ops::Range<usize>) + Sync,
    ) {
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
    fn block_f16(
        &self,
        a: &[u32],
        panels: &[u16],
        rows: std::ops::Range<usize>,
        group: std::ops::Range<usize>,
    ) {
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
                self.pass_rows(a, k, b, (k0, kc), rows.clone(), MR_F16, p, next, tile_f16);
            }
            k0 += kc;
        }
    }

    /// int8 runs the whole depth in one pass: the i32 sums are exact, and a panel of
    /// `k × NR` bytes (192 KiB at k = 3072) still sits in L2.
    #[allow(clippy::too_many_arguments)]
    fn block_int8<A>(
        &self,
        aq: &[A],
        sa: &[f32],
        panels: &Int8Panels,
        rows: std::ops::Range<usize>,
        p: usize,
        tile: Int8TileFn<A>,
    ) {
        let n = self.n;
        let kq = int8::k4(self.k);
        // AVX2's activations are interleaved by tile (`int8::quantize_rows_wide`): row `r`'s
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
            // SAFETY: as in `pass_rows`.
            unsafe {
                let c = self.out.0.add(r * n + col);
                let epi = self.tile_epilogue(r, col, true);
                let pf = prefetch_for(next, j, kq, PANEL_ROW_BYTES);
                tile(h, &aq[r * kq..], kq, b, c, n, cols, &q, epi.as_ref(), pf);
            }
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
                    // task's alone.
                    unsafe {
                        let ap = a[r * lda..].as_ptr(); // row tile r / 16, `lda` per row
                        let bp = tiles[p * panel_len * 4..].as_ptr() as *const u32;
                        amx::panel_block(op, ap, bp, kt, cols, &mut scratch);
                        for (i, sums) in scratch.0.iter().enumerate().take(h) {
                            let epi = self.tile_epilogue(r + i, col, true);
                            let c = self.out.0.add((r + i) * n + col);
                            match weights {
                                AmxWeights::Bf16(_) => x86::store_sums(sums, c, cols, epi.as_ref()),
                                AmxWeights::Int8(w, sa) => {
                                    let q = Quant {
                                        row_scales: &sa[r + i..],
                                        col_scales: &w.scales[col..col + NR],
                                        col_offsets: &w.offsets[col..col + NR],
                                    };
                                    x86::store_int8_sums(sums, c, cols, &q, epi.as_ref())
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

/// A micro-tile kernel over packed panels: `(h, a, lda, b, kc, c, ldc, cols, first, epi, pf)`.
type TileFn<A, B> = unsafe fn(
    usize,
    &[A],
    usize,
    &[B],
    usize,
    *mut f32,
    usize,
    usize,
    bool,
    Option<&TileEpilogue>,
    Prefetch,
);

/// Where a tile pulls the weights its task reads next into L2, one cache line per step of its
/// depth loop (null: nowhere). At small batches a panel serves only a few tiles, and the
/// first of them would otherwise wait on memory for the whole panel: the hardware streamer
/// stops at every 4 KiB page, and on a Xeon that cost batch 1 a quarter of its speed.
#[derive(Clone, Copy)]
pub(crate) struct Prefetch(pub(crate) *const u8);

impl Prefetch {
    pub(crate) const NONE: Prefetch = Prefetch(std::ptr::null());
}

/// Bytes of one packed int8 panel row (`NR` quads; also `NR` f32 or bf16 pairs).
const PANEL_ROW_BYTES: usize = NR * 4;

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

/// Columns of one AVX2 f32 strip.
const AVX2_STRIP: usize = 16;

/// The AVX2 f32 tile on one pass of a [`Panels::F32Strips`] panel: `b` starts at the pass in
/// strip 0; strip `s` is `s · k · 16` floats on, rows 16 floats apart.
///
/// # Safety
/// As [`tile_f32`]; the CPU has AVX2 and FMA.
#[allow(clippy::too_many_arguments)]
// Only x86-64 packs strips; elsewhere the body is `unreachable!`.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
unsafe fn tile_f32_strips(
    h: usize,
    a: &[f32],
    k: usize,
    b: &[f32],
    kc: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    first: bool,
    epi: Option<&TileEpilogue>,
    pf: Prefetch,
) {
    assert!(h >= 1 && a.len() >= (h - 1) * k + kc);
    assert!(b.len() >= (cols.div_ceil(AVX2_STRIP) - 1) * k * 16 + kc * 16);
    #[cfg(target_arch = "x86_64")]
    {
        use crate::avx2::tile_f32 as t;
        let (a, b, s) = (a.as_ptr(), b.as_ptr(), k * AVX2_STRIP);
        by_rows!(h, t(a, k, b, 16, s, kc, c, ldc, cols, first, epi, pf));
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("AVX2 strips are packed only on x86-64")
}

/// [`tile_f32`] on a packed panel (row stride `NR`).
///
/// # Safety
/// As [`tile_f32`].
#[allow(clippy::too_many_arguments)]
unsafe fn tile_f32_packed(
    h: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    kc: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    first: bool,
    epi: Option<&TileEpilogue>,
    pf: Prefetch,
) {
    tile_f32(h, a, lda, b, NR, kc, c, ldc, cols, first, epi, pf)
}

/// What turns a tile's i32 sums back into f32: `(sum − offset[col])·row_scale·col_scale`.
pub(crate) struct Quant<'a> {
    pub(crate) row_scales: &'a [f32],
    pub(crate) col_scales: &'a [f32],
    pub(crate) col_offsets: &'a [f32],
}

/// One int8 tile over the whole depth `kq` (quads), then the epilogue.
///
/// # Safety
/// As [`tile_f32`].
#[allow(clippy::too_many_arguments)]
unsafe fn tile_int8(
    h: usize,
    a: &[u32],
    kq: usize,
    b: &[i8],
    c: *mut f32,
    ldc: usize,
    cols: usize,
    q: &Quant,
    epi: Option<&TileEpilogue>,
    pf: Prefetch,
) {
    assert!(h >= 1 && a.len() >= (h - 1) * kq + kq && b.len() >= kq * NR * 4);
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512_vnni() {
        let (a, b) = (a.as_ptr(), b.as_ptr());
        by_rows!(h, x86::tile_int8(a, b, kq, c, ldc, cols, q, epi, pf));
        return;
    }
    for i in 0..h {
        let mut sums = [0i32; NR];
        int8::dot_panel(&a[i * kq..], b, kq, &mut sums);
        let mut acc = [0f32; NR];
        for (j, x) in acc.iter_mut().enumerate() {
            *x = (sums[j] as f32 - q.col_offsets[j]) * q.row_scales[i] * q.col_scales[j];
        }
        store_row(&acc, c.add(i * ldc), cols, true, epi, i * ldc);
    }
}

/// An int8 tile: `A` is one quad of activations (`u32` of bytes, or `u64` of i16 on AVX2).
type Int8TileFn<A> = unsafe fn(
    usize,
    &[A],
    usize,
    &[i8],
    *mut f32,
    usize,
    usize,
    &Quant,
    Option<&TileEpilogue>,
    Prefetch,
);

/// [`tile_int8`] on an AVX2 strips panel ([`int8::to_strips`]), with the activations of
/// [`int8::quantize_rows_wide`].
///
/// # Safety
/// As [`tile_f32`]; the CPU has AVX2.
#[allow(clippy::too_many_arguments)]
// Only x86-64 packs strips; elsewhere the body is `unreachable!`.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
unsafe fn tile_int8_strips(
    h: usize,
    a: &[u64],
    kq: usize,
    b: &[i8],
    c: *mut f32,
    ldc: usize,
    cols: usize,
    q: &Quant,
    epi: Option<&TileEpilogue>,
    pf: Prefetch,
) {
    // A whole interleaved tile, padded past `m` (see `int8::quantize_rows_wide`).
    assert!((1..=MR).contains(&h) && a.len() >= kq * MR && b.len() >= kq * NR * 4);
    #[cfg(target_arch = "x86_64")]
    {
        use crate::avx2::tile_int8 as t;
        let (a, b) = (a.as_ptr(), b.as_ptr());
        by_rows!(h, t(a, b, kq, c, ldc, cols, q, epi, pf));
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("AVX2 strips are packed only on x86-64")
}

/// One `h × cols` tile (`h ≤ MR`, `cols ≤ NR`): `c (+)= a[.., ..kc]·b[..kc, ..]`, then the
/// epilogue when `epi` is given. `a` has row stride `lda`, `b` `ldb` (`NR` for a packed
/// panel; attention passes V in place), `c` `ldc`.
///
/// # Safety
/// `c` is valid for writes (and, unless `first`, reads) of `h` rows × `cols` columns with row
/// stride `ldc`; `epi`'s pointers as in [`store_row`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tile_f32(
    h: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    first: bool,
    epi: Option<&TileEpilogue>,
    pf: Prefetch,
) {
    assert!(h >= 1 && a.len() >= (h - 1) * lda + kc);
    assert!(kc == 0 || b.len() >= (kc - 1) * ldb + cols);
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512() {
        // SAFETY: the CPU has AVX-512; the slices cover what the kernel reads (asserted
        // above; the kernel's loads past `cols` are masked) and `c` is valid for `h` rows of
        // `cols` columns (the caller's contract).
        unsafe {
            let (a, b) = (a.as_ptr(), b.as_ptr());
            by_rows!(
                h,
                x86::tile_f32(a, lda, b, ldb, kc, c, ldc, cols, first, epi, pf)
            );
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2() {
        // SAFETY: as above, with AVX2 and FMA (the loads past `cols` are masked too).
        unsafe {
            use crate::avx2::tile_f32 as t;
            let (a, b) = (a.as_ptr(), b.as_ptr());
            by_rows!(h, t(a, lda, b, ldb, 16, kc, c, ldc, cols, first, epi, pf));
        }
        return;
    }
    for i in 0..h {
        let mut acc = [0f32; NR];
        let row = &a[i * lda..][..kc];
        for (kk, &av) in row.iter().enumerate() {
            let brow = &b[kk * ldb..][..cols];
            for (x, &bv) in acc.iter_mut().zip(brow) {
                *x += av * bv;
            }
        }
        store_row(&acc, c.add(i * ldc), cols, first, epi, i * ldc);
    }
}

///
/// # Safety
/// As [`tile_f32`].
#[allow(clippy::too_many_arguments)]
unsafe fn tile_bf16(
    h: usize,
    a: &[u32],
    lda: usize,
    b: &[u32],
    kc: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    first: bool,
    epi: Option<&TileEpilogue>,
    pf: Prefetch,
) {
    debug_assert!(a.len() >= (h - 1) * lda + kc && b.len() >= kc * NR);
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512_bf16() {
        // SAFETY: as in `tile_f32`, with AVX-512 BF16.
        unsafe {
            let (a, b) = (a.as_ptr(), b.as_ptr());
            by_rows!(
                h,
                x86::tile_bf16(a, lda, b, kc, c, ldc, cols, first, epi, pf)
            );
        }
        return;
    }
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
        store_row(&acc, c.add(i * ldc), cols, first, epi, i * ldc);
    }
}

/// One f16 tile: f16 sums over `kc` steps, added to `c` in f32.
///
/// # Safety
/// As [`tile_f32`].
#[allow(clippy::too_many_arguments)]
unsafe fn tile_f16(
    h: usize,
    a: &[u32],
    lda: usize,
    b: &[u16],
    kc: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    first: bool,
    epi: Option<&TileEpilogue>,
    pf: Prefetch,
) {
    assert!(h >= 1 && a.len() >= (h - 1) * lda + kc && b.len() >= kc * NR);
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512_fp16() {
        // SAFETY: as in `tile_f32`, with AVX-512 FP16.
        unsafe {
            let (a, b) = (a.as_ptr(), b.as_ptr());
            match h {
                12 => x86::tile_f16::<12>(a, lda, b, kc, c, ldc, cols, first, epi, pf),
                11 => x86::tile_f16::<11>(a, lda, b, kc, c, ldc, cols, first, epi, pf),
                10 => x86::tile_f16::<10>(a, lda, b, kc, c, ldc, cols, first, epi, pf),
                9 => x86::tile_f16::<9>(a, lda, b, kc, c, ldc, cols, first, epi, pf),
                8 => x86::tile_f16::<8>(a, lda, b, kc, c, ldc, cols, first, epi, pf),
                7 => x86::tile_f16::<7>(a, lda, b, kc, c, ldc, cols, first, epi, pf),
                6 => x86::tile_f16::<6>(a, lda, b, kc, c, ldc, cols, first, epi, pf),
                5 => x86::tile_f16::<5>(a, lda, b, kc, c, ldc, cols, first, epi, pf),
                4 => x86::tile_f16::<4>(a, lda, b, kc, c, ldc, cols, first, epi, pf),
                3 => x86::tile_f16::<3>(a, lda, b, kc, c, ldc, cols, first, epi, pf),
                2 => x86::tile_f16::<2>(a, lda, b, kc, c, ldc, cols, first, epi, pf),
                _ => x86::tile_f16::<1>(a, lda, b, kc, c, ldc, cols, first, epi, pf),
            }
        }
        return;
    }
    // Portable: the same f16-rounded operands, summed in f32 (no f16 accumulation).
    let f = |bits: u16| half::f16::from_bits(bits).to_f32();
    for i in 0..h {
        let mut acc = [0f32; NR];
        for (kk, &av) in a[i * lda..][..kc].iter().enumerate() {
            let x = f(av as u16);
            for (j, &bv) in b[kk * NR..][..NR].iter().enumerate() {
                acc[j] += x * f(bv);
            }
        }
        store_row(&acc, c.add(i * ldc), cols, first, epi, i * ldc);
    }
}

/// Portable store of one accumulated row, with the epilogue on the last pass.
///
/// # Safety
/// `c` is valid for `cols` writes; with `epi`, its bias for `cols` reads and its residual for
/// `cols` reads at offset `res_off`.
unsafe fn store_row(
    acc: &[f32; NR],
    c: *mut f32,
    cols: usize,
    first: bool,
    epi: Option<&TileEpilogue>,
    res_off: usize,
) {
    for (j, &v) in acc.iter().enumerate().take(cols) {
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

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Prefetch, Quant, TileEpilogue, NR};
    use crate::act::avx512 as act;

    /// The `kk`-th cache line after `pf` into L2 (a hint: it never faults).
    #[inline(always)]
    unsafe fn prefetch_line(pf: Prefetch, kk: usize) {
        if !pf.0.is_null() {
            _mm_prefetch::<_MM_HINT_T1>(pf.0.wrapping_add(kk * 64) as *const i8);
        }
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

    /// One row of finished f32 sums (the AMX tiles' output) through the epilogue into `c`.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn store_sums(
        sums: &[f32; NR],
        c: *mut f32,
        cols: usize,
        epi: Option<&TileEpilogue>,
    ) {
        let s = sums.as_ptr();
        let mut row = [[
            _mm512_loadu_ps(s),
            _mm512_loadu_ps(s.add(16)),
            _mm512_loadu_ps(s.add(32)),
            _mm512_loadu_ps(s.add(48)),
        ]];
        finish::<1>(&mut row, c, 0, cols, true, epi);
    }

    /// One row of exact i32 sums (as f32 bits, the AMX int8 tiles' output), dequantised as
    /// [`tile_int8`] does, through the epilogue into `c`.
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

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn tile_f32<const R: usize>(
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        kc: usize,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        first: bool,
        epi: Option<&TileEpilogue>,
        pf: Prefetch,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
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
        finish::<R>(&mut acc, c, ldc, cols, first, epi);
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512dq,avx512vnni")]
    pub unsafe fn tile_int8<const R: usize>(
        a: *const u32,
        b: *const i8,
        kq: usize,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        q: &Quant,
        epi: Option<&TileEpilogue>,
        pf: Prefetch,
    ) {
        let mut acc = [[_mm512_setzero_si512(); 4]; R];
        for kk in 0..kq {
            prefetch_line(pf, kk);
            let bp = b.add(kk * NR * 4) as *const __m512i;
            let b0 = _mm512_loadu_si512(bp);
            let b1 = _mm512_loadu_si512(bp.add(1));
            let b2 = _mm512_loadu_si512(bp.add(2));
            let b3 = _mm512_loadu_si512(bp.add(3));
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_epi32(*a.add(i * kq + kk) as i32);
                row[0] = _mm512_dpbusd_epi32(row[0], av, b0);
                row[1] = _mm512_dpbusd_epi32(row[1], av, b1);
                row[2] = _mm512_dpbusd_epi32(row[2], av, b2);
                row[3] = _mm512_dpbusd_epi32(row[3], av, b3);
            }
        }
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

    /// `src` rounded to f16 (clamped to its range), each value in both halves of a `dst` word.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn to_f16_broadcasts(src: &[f32], dst: &mut [u32]) {
        let (lo, hi) = (
            _mm512_set1_ps(-super::F16_MAX),
            _mm512_set1_ps(super::F16_MAX),
        );
        let out = dst.as_mut_ptr();
        let mut i = 0;
        while i + 16 <= src.len() {
            let x = _mm512_min_ps(_mm512_max_ps(_mm512_loadu_ps(src.as_ptr().add(i)), lo), hi);
            let h = _mm512_cvtepu16_epi32(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x));
            let both = _mm512_or_si512(h, _mm512_slli_epi32::<16>(h));
            _mm512_storeu_si512(out.add(i) as *mut __m512i, both);
            i += 16;
        }
        while i < src.len() {
            let h = super::to_f16_bits(src[i]) as u32;
            *out.add(i) = h | (h << 16);
            i += 1;
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx512fp16")]
    pub unsafe fn tile_f16<const R: usize>(
        a: *const u32,
        lda: usize,
        b: *const u16,
        kc: usize,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        first: bool,
        epi: Option<&TileEpilogue>,
        pf: Prefetch,
    ) {
        let mut acc = [[_mm512_setzero_ph(); 2]; R];
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

    /// `src` (even length) rounded to bf16 into `dst` (`src.len() / 2` pairs).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn to_bf16_row(src: &[f32], dst: &mut [u32]) {
        let out = dst.as_mut_ptr() as *mut u16;
        let mut i = 0;
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

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512dq,avx512bf16")]
    pub unsafe fn tile_bf16<const R: usize>(
        a: *const u32,
        lda: usize,
        b: *const u32,
        kc: usize,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        first: bool,
        epi: Option<&TileEpilogue>,
        pf: Prefetch,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
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
        finish::<R>(&mut acc, c, ldc, cols, first, epi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn reference(
        a: &[f32],
        w: &[f32],
        bias: &[f32],
        m: usize,
        n: usize,
        k: usize,
        epi: Epilogue,
        round: fn(f32) -> f32,
    ) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for kk in 0..k {
                    s += round(a[i * k + kk]) as f64 * round(w[j * k + kk]) as f64;
                }
                let mut v = epi.act.apply((s + bias[j] as f64) as f32) as f64;
                if let Some(r) = epi.residual {
                    v += r[i * n + j] as f64;
                }
                out[i * n + j] = v;
            }
        }
        out
    }

    fn check(m: usize, n: usize, k: usize, act: Activation, residual: bool, format: WeightFormat) {
        let a = values(m * k, 1 + m as u64);
        let w = values(n * k, 2 + n as u64);
        let bias = values(n, 3 + k as u64);
        let res = values(m * n, 4);
        let epi = Epilogue {
            act,
            residual: residual.then_some(&res[..]),
        };
        let packed = PackedWeights::new(&w, n, k, Some(&bias), format);
        let mut out = vec![f32::NAN; m * n];
        packed.matmul(&a, m, epi, &mut out);
        let (round, tol): (fn(f32) -> f32, f64) = match format {
            WeightFormat::F32 => (|x| x, 2e-5),
            WeightFormat::Bf16 => (|x| half::bf16::from_f32(x).to_f32(), 2e-5),
            // 8-bit rounding of both operands: a few percent of one element's scale, and the
            // errors average out over k; what matters (cosine of whole outputs) is checked
            // below and in clipkit-core's precision tests.
            WeightFormat::Int8 => (|x| x, 2e-2),
            // f16 sums of up to `KC_F16` terms: relative error ~2e-3 of a pass's sum, which
            // near a zero output is several times the output itself.
            WeightFormat::F16 => (|x| half::f16::from_f32(x).to_f32(), 5e-3),
        };
        let want = reference(&a, &w, &bias, m, n, k, epi, round);
        if matches!(format, WeightFormat::Int8 | WeightFormat::F16) {
            let dot: f64 = out.iter().zip(&want).map(|(&g, &r)| g as f64 * r).sum();
            let ng: f64 = out.iter().map(|&g| (g as f64).powi(2)).sum::<f64>().sqrt();
            let nr: f64 = want.iter().map(|r| r.powi(2)).sum::<f64>().sqrt();
            let min = if format == WeightFormat::F16 {
                0.99999
            } else {
                0.9995
            };
            assert!(
                dot / (ng * nr) > min,
                "{format:?} m={m} n={n} k={k}: cosine {}",
                dot / (ng * nr)
            );
        }
        let scale = (k as f64).sqrt();
        for (idx, (&g, &r)) in out.iter().zip(&want).enumerate() {
            assert!(
                (g as f64 - r).abs() <= tol * scale * r.abs().max(1.0),
                "{format:?} m={m} n={n} k={k} {act:?} res={residual}: out[{idx}] = {g}, want {r}"
            );
        }
    }

    const FORMATS: [WeightFormat; 4] = [
        WeightFormat::F32,
        WeightFormat::Bf16,
        WeightFormat::Int8,
        WeightFormat::F16,
    ];

    /// Shapes that hit every edge: partial row tiles, partial panels, several K passes, odd K
    /// (bf16 pads it), and the real CLIP shapes.
    #[test]
    fn matches_reference_on_edge_and_real_shapes() {
        let shapes = [
            (1, 1, 1),
            (5, 3, 7),
            (6, 64, 256),
            (7, 65, 257),
            (13, 130, 513),
            (50, 96, 33),
            (50, 2304, 768),
            (12, 512, 768),
            (9, 70, 3072),
        ];
        for format in FORMATS {
            for &(m, n, k) in &shapes {
                check(m, n, k, Activation::Identity, false, format);
            }
            for act in [Activation::QuickGelu, Activation::Gelu] {
                check(11, 200, 300, act, false, format);
            }
            check(11, 200, 300, Activation::Identity, true, format);
        }
    }

    /// Layers are packed for the kernel this CPU runs (the reference checks above then cover
    /// that kernel), and say so in their saved form: bf16 and int8 on AMX tiles exactly where
    /// the CPU has them, f32 and int8 in AVX2 strips exactly where it has AVX2 but no AVX-512.
    #[test]
    fn layers_pack_for_the_kernel_this_cpu_runs() {
        let avx2_only = crate::has_avx2();
        let vnni = crate::has_avx512_vnni();
        for (format, code) in [
            (
                WeightFormat::Bf16,
                if crate::has_amx_bf16() { 4 } else { 1 },
            ),
            (
                WeightFormat::Int8,
                match () {
                    _ if crate::has_amx_int8() => 5,
                    _ if avx2_only && !vnni => 7,
                    _ => 2,
                },
            ),
            (WeightFormat::F32, if avx2_only { 6 } else { 0 }),
        ] {
            let packed = PackedWeights::new(&values(64 * 40, 1), 64, 40, None, format);
            let amx = matches!(packed.panels, Panels::Bf16Amx(_) | Panels::Int8Amx(_));
            assert_eq!(amx, code == 4 || code == 5, "{format:?}");
            assert_eq!(kernel_name(format).starts_with("amx-"), amx, "{format:?}");
            assert_eq!(
                kernel_name(format).starts_with("avx2-"),
                code >= 6,
                "{format:?}"
            );
            let mut file = Vec::new();
            packed.write_to(&mut file).unwrap();
            assert_eq!(u32::from(file[4]), code, "{format:?}");
        }
    }

    /// Activations and weights at their full quantised magnitude: every product pair is as
    /// large as the int8 kernels ever see, where AVX2's `vpmaddubsw` saturates unless the
    /// pairs are formed as its kernel does. Rows of ±1 against columns of ±1 give exactly ±k.
    #[test]
    fn int8_sums_are_exact_at_the_extremes() {
        let (m, n, k) = (7, 70, 768);
        let a: Vec<f32> = (0..m * k)
            .map(|i| if (i / k) % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| if (i / k) % 3 == 0 { -1.0 } else { 1.0 })
            .collect();
        let packed = PackedWeights::new(&w, n, k, None, WeightFormat::Int8);
        let mut out = vec![f32::NAN; m * n];
        packed.matmul(&a, m, Epilogue::default(), &mut out);
        for i in 0..m {
            for j in 0..n {
                let sign = a[i * k] * w[j * k];
                let got = out[i * n + j];
                assert!(
                    (got - sign * k as f32).abs() <= 1e-3 * k as f32,
                    "{}: out[{i}][{j}] = {got}, want {}",
                    kernel_name(WeightFormat::Int8),
                    sign * k as f32
                );
            }
        }
    }

    #[test]
    fn empty_inputs_are_fine() {
        let packed = PackedWeights::new(&[1.0; 6], 2, 3, None, WeightFormat::F32);
        let mut out = [];
        packed.matmul(&[], 0, Epilogue::default(), &mut out);
    }

    #[test]
    fn saved_layers_map_back_to_the_same_results() {
        let (m, n, k) = (7, 130, 301);
        let a = values(m * k, 11);
        let w = values(n * k, 12);
        let bias = values(n, 13);
        for format in FORMATS {
            for with_bias in [true, false] {
                let b = with_bias.then_some(&bias[..]);
                let packed = PackedWeights::new(&w, n, k, b, format);
                let mut file = vec![0u8; 64]; // something before the layer
                let written = packed.write_to(&mut file).unwrap();
                assert_eq!(file.len(), 64 + written);
                assert_eq!(written % 64, 0);
                let backing: Backing = std::sync::Arc::new(file.clone());
                let (mapped, end) = PackedWeights::from_backing(backing, 64).unwrap();
                assert_eq!(end, file.len());
                assert_eq!(mapped.format(), format);
                assert_eq!((mapped.n(), mapped.k()), (n, k));
                let (mut x, mut y) = (vec![0f32; m * n], vec![0f32; m * n]);
                packed.matmul(&a, m, Epilogue::default(), &mut x);
                mapped.matmul(&a, m, Epilogue::default(), &mut y);
                assert!(x == y, "{format:?} bias={with_bias}");

                let mut bad = file.clone();
                bad[64] ^= 1;
                let err = PackedWeights::from_backing(std::sync::Arc::new(bad), 64);
                assert!(err.is_err());
                let cut: Backing = std::sync::Arc::new(file[..file.len() - 64].to_vec());
                assert!(PackedWeights::from_backing(cut, 64).is_err() || !with_bias);
            }
        }
    }
}
