//! The on-disk form of one packed layer (what the pack cache maps back without copying): a
//! 64-byte header, then the panels, the int8 scales and offsets and the bias, each padded to
//! 64 bytes. Native byte order: the file is a cache for this machine, not an exchange format.
//!
//! Header: magic `PKW1` (u32), the [`PanelCode`] (u32), then six u64: `n`, `k`, `NR`, panel
//! elements, scale (and offset) count, bias length.

use std::fmt;

use super::amx;
use super::pack::{strips_kernel, Int8Panels, Panels};
use super::quant::signed_activations;
use super::tile::{k4, NR};
use crate::buf::{Backing, Buf};

/// Alignment of every part of a saved layer (a cache line; also what the panels' loads like).
const ALIGN: usize = 64;
const LAYER_MAGIC: u32 = u32::from_le_bytes(*b"PKW1");

const NO_AMX: &str = "packed for AMX tiles, which this CPU (or CLIPKIT_NO_AMX) rules out";
const NO_STRIPS: &str = "packed in AVX2 strips, for a CPU without AVX-512";
const NO_VNNI: &str = "packed for AVX-512 VNNI, which this CPU lacks";

/// Which [`Panels`] layout a saved layer holds: the header's second word. The values are
/// part of the file format: never renumber them.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PanelCode {
    F32 = 0,
    Bf16 = 1,
    Int8 = 2,
    F16 = 3,
    Bf16Amx = 4,
    Int8Amx = 5,
    F32Strips = 6,
    Int8Strips = 7,
}

/// A header's panel code that no [`PanelCode`] has (a newer or a damaged file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnknownPanelCode(pub(crate) u32);

impl fmt::Display for UnknownPanelCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown panel format {}", self.0)
    }
}

impl std::error::Error for UnknownPanelCode {}

impl TryFrom<u32> for PanelCode {
    type Error = UnknownPanelCode;

    fn try_from(code: u32) -> Result<Self, UnknownPanelCode> {
        Ok(match code {
            0 => Self::F32,
            1 => Self::Bf16,
            2 => Self::Int8,
            3 => Self::F16,
            4 => Self::Bf16Amx,
            5 => Self::Int8Amx,
            6 => Self::F32Strips,
            7 => Self::Int8Strips,
            _ => return Err(UnknownPanelCode(code)),
        })
    }
}

impl PanelCode {
    fn of(panels: &Panels) -> Self {
        match panels {
            Panels::F32(_) => Self::F32,
            Panels::Bf16(_) => Self::Bf16,
            Panels::Int8(_) => Self::Int8,
            Panels::F16(_) => Self::F16,
            Panels::Bf16Amx(_) => Self::Bf16Amx,
            Panels::Int8Amx(_) => Self::Int8Amx,
            Panels::F32Strips(_) => Self::F32Strips,
            Panels::Int8Strips(_) => Self::Int8Strips,
        }
    }

    /// Bytes per panel element: f32, bf16 pairs (also retiled for AMX), int8, f16.
    fn element_size(self) -> usize {
        match self {
            Self::F32 | Self::F32Strips | Self::Bf16 | Self::Bf16Amx => 4,
            Self::Int8 | Self::Int8Amx | Self::Int8Strips => 1,
            Self::F16 => 2,
        }
    }

    /// Whether this CPU runs the kernel these panels were packed for, and if so how many
    /// panel elements and scales a `[n, k]` layer of them has.
    fn sizes(self, n: usize, k: usize) -> Result<(usize, usize), &'static str> {
        let np = n.div_ceil(NR);
        Ok(match self {
            Self::F32 | Self::F16 => (np * k * NR, 0),
            Self::Bf16 => (np * k.div_ceil(2) * NR, 0),
            Self::Int8 if signed_activations() => return Err(NO_VNNI),
            Self::Int8 => (np * k4(k) * NR * 4, np * NR),
            Self::Bf16Amx if !amx::bf16_available() => return Err(NO_AMX),
            Self::Int8Amx if !amx::int8_available() => return Err(NO_AMX),
            Self::Bf16Amx => (amx::packed_len(n, k.div_ceil(2)), 0),
            Self::Int8Amx => (amx::packed_len(n, k4(k)) * 4, np * NR),
            Self::F32Strips if !strips_kernel() => return Err(NO_STRIPS),
            Self::F32Strips => (np * k * NR, 0),
            Self::Int8Strips if !signed_activations() => return Err(NO_STRIPS),
            Self::Int8Strips => (np * k4(k) * NR * 4, np * NR),
        })
    }
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

/// Writes a `[n, k]` layer's panels and bias; returns the bytes written (a multiple of 64).
pub(crate) fn write(
    out: &mut impl std::io::Write,
    n: usize,
    k: usize,
    panels: &Panels,
    bias: Option<&[f32]>,
) -> std::io::Result<usize> {
    let code = PanelCode::of(panels);
    let (data, scales, offsets): (&[u8], &[f32], &[f32]) = match panels {
        Panels::F32(d) | Panels::F32Strips(d) => (d.as_bytes(), &[], &[]),
        Panels::Bf16(d) | Panels::Bf16Amx(d) => (d.as_bytes(), &[], &[]),
        Panels::F16(d) => (d.as_bytes(), &[], &[]),
        Panels::Int8(p) | Panels::Int8Strips(p) | Panels::Int8Amx(p) => {
            (p.data.as_bytes(), &p.scales, &p.offsets)
        }
    };
    let bias = bias.unwrap_or(&[]);
    let mut header = Vec::with_capacity(ALIGN);
    header.extend_from_slice(&LAYER_MAGIC.to_ne_bytes());
    header.extend_from_slice(&(code as u32).to_ne_bytes());
    let elements = data.len() / code.element_size();
    for v in [n, k, NR, elements, scales.len(), bias.len()] {
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

/// A layer read back by [`read`].
pub(crate) struct Layer {
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) panels: Panels,
    pub(crate) bias: Option<Vec<f32>>,
    /// The offset just past the layer in its backing.
    pub(crate) end: usize,
}

/// The layer [`write`] wrote at byte `offset` of `backing` (which must be 64-byte aligned in
/// memory, as a memory map is), its panels used in place.
pub(crate) fn read(backing: Backing, offset: usize) -> Result<Layer, String> {
    let bytes = (*backing).as_ref();
    let header = bytes
        .get(offset..offset + ALIGN)
        .ok_or("truncated layer header")?;
    let word = |i: usize| u64::from_ne_bytes(header[8 + 8 * i..16 + 8 * i].try_into().unwrap());
    let magic = u32::from_ne_bytes(header[0..4].try_into().unwrap());
    let code = u32::from_ne_bytes(header[4..8].try_into().unwrap());
    if magic != LAYER_MAGIC {
        return Err("not a packed layer".into());
    }
    let [n, k, nr, data_len, small_len, bias_len] = [0, 1, 2, 3, 4, 5].map(|i| word(i) as usize);
    if nr != NR {
        return Err(format!("panels of {nr} columns, this build uses {NR}"));
    }
    let code = PanelCode::try_from(code).map_err(|e| e.to_string())?;
    let (expected, expected_small) = code.sizes(n, k)?;
    if data_len != expected || small_len != expected_small || !(bias_len == 0 || bias_len == n) {
        return Err(format!("inconsistent layer sizes for [{n}, {k}]"));
    }
    let mut at = offset + ALIGN;
    let data_at = at;
    at += padded(data_len * code.element_size());
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
    let int8 = |backing: Backing| -> Result<Int8Panels, String> {
        Ok(Int8Panels {
            data: Buf::mapped(backing, data_at, data_len)?,
            scales,
            offsets,
        })
    };
    let panels = match code {
        PanelCode::F32 => Panels::F32(Buf::mapped(backing, data_at, data_len)?),
        PanelCode::F32Strips => Panels::F32Strips(Buf::mapped(backing, data_at, data_len)?),
        PanelCode::Bf16 => Panels::Bf16(Buf::mapped(backing, data_at, data_len)?),
        PanelCode::F16 => Panels::F16(Buf::mapped(backing, data_at, data_len)?),
        PanelCode::Bf16Amx => Panels::Bf16Amx(Buf::mapped(backing, data_at, data_len)?),
        PanelCode::Int8 => Panels::Int8(int8(backing)?),
        PanelCode::Int8Strips => Panels::Int8Strips(int8(backing)?),
        PanelCode::Int8Amx => Panels::Int8Amx(int8(backing)?),
    };
    Ok(Layer {
        n,
        k,
        panels,
        bias: (bias_len > 0).then_some(bias),
        end: at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panel_codes_round_trip_and_unknown_codes_are_rejected() {
        for code in 0..8u32 {
            let panel = PanelCode::try_from(code).unwrap();
            assert_eq!(panel as u32, code);
        }
        for code in [8u32, 9, 255, u32::MAX] {
            assert_eq!(PanelCode::try_from(code), Err(UnknownPanelCode(code)));
        }
    }

    /// The old reader mapped every code it did not know to int8 AMX panels; a header with an
    /// unknown code (here 8, on a well-formed int8 layer) must now be an error.
    #[test]
    fn a_layer_with_an_unknown_panel_code_is_rejected() {
        let w: Vec<f32> = (0..64 * 40).map(|i| (i % 7) as f32 - 3.0).collect();
        let panels = crate::gemm::pack::int8(&w, 64, 40);
        let mut file = Vec::new();
        write(&mut file, 64, 40, &panels, None).unwrap();
        file[4..8].copy_from_slice(&8u32.to_ne_bytes());
        let err = read(std::sync::Arc::new(file), 0).err().expect("rejected");
        assert!(err.contains("unknown panel format 8"), "{err}");
    }
}
