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
//! # Modules, by job
//!
//! Each module uses only those listed before it (CI checks it with the repository's
//! `tools/module-cycles`), so none needs another's internals to be understood:
//!
//! 1. `tile`: the micro-tile contract: tile and pass sizes, [`Epilogue`], the prefetch hint,
//!    int8 dequantisation, the one argument struct every kernel takes, scalar rounding.
//! 2. `portable`, `avx512`, `avx2` (the kernels, one file per instruction set) and `amx` (the
//!    AMX tiles, the retiling for them, and whether this CPU has them): the contract only.
//! 3. `kernels`: picks the kernel this CPU runs for each tile; `quant`: the activations
//!    rounded per call to bf16, f16 or int8, on the fastest instruction set.
//! 4. `pack`: the weights into panels, once; `format`: those panels on disk (the panel codes,
//!    the header) and back.
//! 5. `driver`: a matmul split into tasks on rayon's pool, each running tiles on its block.
//! 6. this file: the public API ([`PackedWeights`], [`WeightFormat`], [`kernel_name`]).
//!
//! Below all of them: `crate::simd` (feature checks), [`crate::buf`] (owned or mapped panel
//! memory) and [`crate::act`] (activations); above: [`crate::attention`], which runs its two
//! products on the f32 tile (through `kernels`).

use std::mem::MaybeUninit;

use crate::buf::Backing;

pub(crate) mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub(crate) mod driver;
mod format;
pub(crate) mod kernels;
mod pack;
mod portable;
mod quant;
pub(crate) mod tile;

pub use tile::{Epilogue, MR, NR};

/// How the packed weights are stored, and so which kernel multiplies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    F32,
    /// bf16 weights and activations, f32 accumulation: on AMX tiles where the CPU has them,
    /// else AVX-512 BF16 `vdpbf16ps`.
    Bf16,
    /// int8 weights (per output column) and activations (per row, at run time), exact i32
    /// accumulation (AVX-512 VNNI `vpdpbusd`, or AVX2 `vpmaddwd`, or AMX).
    Int8,
    /// f16 weights and activations (AVX-512 FP16 `vfmadd231ph`, twice the f32 FMA rate on a
    /// Sapphire/Emerald Rapids Xeon, where `vdpbf16ps` runs at half of it): f16 sums over
    /// 256 steps of `k`, added up in f32.
    F16,
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
    panels: pack::Panels,
    bias: Option<Vec<f32>>,
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
        let panels = match format {
            WeightFormat::F32 => pack::f32(w, n, k),
            WeightFormat::Bf16 => pack::bf16(w, n, k),
            WeightFormat::Int8 => pack::int8(w, n, k),
            WeightFormat::F16 => pack::f16(w, n, k),
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

    pub fn k(&self) -> usize {
        self.k
    }

    /// Writes the layer in a form [`Self::from_backing`] maps back without copying: a 64-byte
    /// header, then the panels, the int8 scales and offsets and the bias, each padded to 64
    /// bytes. Native byte order: the file is a cache for this machine, not an exchange format.
    /// Returns the bytes written (a multiple of 64).
    pub fn write_to(&self, out: &mut impl std::io::Write) -> std::io::Result<usize> {
        format::write(out, self.n, self.k, &self.panels, self.bias.as_deref())
    }

    /// A layer written by [`Self::write_to`] at byte `offset` of `backing` (which must be
    /// 64-byte aligned in memory, as a memory map is), its panels used in place. Returns the
    /// layer and the offset just past it.
    pub fn from_backing(backing: Backing, offset: usize) -> Result<(Self, usize), String> {
        let layer = format::read(backing, offset)?;
        let weights = Self {
            n: layer.n,
            k: layer.k,
            panels: layer.panels,
            bias: layer.bias,
        };
        Ok((weights, layer.end))
    }

    pub fn format(&self) -> WeightFormat {
        use pack::Panels;
        match self.panels {
            Panels::F32(_) | Panels::F32Strips(_) => WeightFormat::F32,
            Panels::Bf16(_) | Panels::Bf16Amx(_) => WeightFormat::Bf16,
            Panels::Int8(_) | Panels::Int8Amx(_) | Panels::Int8Strips(_) => WeightFormat::Int8,
            Panels::F16(_) => WeightFormat::F16,
        }
    }

    /// Bytes held (what replaces the f32 weight tensor in memory).
    pub fn bytes(&self) -> usize {
        self.panels.bytes() + self.bias.as_ref().map_or(0, |b| b.len() * 4)
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
        let bias = self.bias.as_deref();
        driver::matmul(&self.panels, n, k, bias, a, m, epilogue, out);
    }
}

#[cfg(test)]
mod tests {
    use super::pack::Panels;
    use super::*;
    use crate::act::Activation;

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
