//! Where and how the model runs: the one place that turns what the user asked for (a device,
//! a [`Precision`], a [`CpuKernels`] choice) into how every matmul of every tower runs
//! ([`MatmulPath`], which names the packed kernels' own [`WeightFormat`] when it uses them).
//! Model code never looks at the device or precision again; it takes the path it is given.
//! CPU always; CUDA when built with the `cuda` feature.

use candle_core::{DType, Device};
use clipkit_kernels::WeightFormat;

use crate::error::{ClipError, Result};

/// How the matmuls of a model run: decided once per load by [`matmul_path`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulPath {
    /// candle's `Linear` (CPU or CUDA), in the weights' dtype.
    Candle,
    /// clipkit's packed CPU kernels in this weight format (f32, bf16, f16 or int8).
    Packed(WeightFormat),
}

impl MatmulPath {
    pub fn is_packed(self) -> bool {
        matches!(self, MatmulPath::Packed(_))
    }

    /// The kernel the linear layers run on (`amx-bf16`, `avx512-f32`, `candle`, …), for logs
    /// and benchmark tables.
    pub fn kernel_name(self) -> &'static str {
        match self {
            MatmulPath::Packed(format) => clipkit_kernels::gemm::kernel_name(format),
            MatmulPath::Candle => "candle",
        }
    }
}

/// The numeric precision the model runs in: an explicit choice, since anything below f32
/// moves the embeddings (docs/kernels.md#precision has the measured cosine to f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    /// bf16 weights and activations with f32 accumulation: AVX-512 BF16 on the CPU, candle's
    /// bf16 tensors on CUDA.
    Bf16,
    /// f16 weights and activations: AVX-512 FP16 on the CPU (f16 sums over short runs of
    /// the dot product, added up in f32), candle's f16 tensors on CUDA.
    F16,
    /// int8 weights (per output channel) and activations (per token, at run time), exact
    /// integer accumulation: AVX-512 VNNI on the CPU, or AVX2 (i16 products of the same 8-bit weights).
    Int8,
}

/// Which code runs the matmuls on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuKernels {
    /// clipkit's packed-weight kernels with fused epilogues (the fast path).
    #[default]
    Packed,
    /// candle's own ops throughout (the reference path the fast one is tested against).
    Candle,
}

/// What a (device, precision, kernels) choice means for loading: the matmul path and the dtype
/// the weights are read in.
pub fn matmul_path(
    device: &Device,
    precision: Precision,
    kernels: CpuKernels,
) -> Result<(MatmulPath, DType)> {
    match (device, kernels, precision) {
        (Device::Cpu, CpuKernels::Packed, Precision::F32) => {
            Ok((MatmulPath::Packed(WeightFormat::F32), DType::F32))
        }
        (Device::Cpu, CpuKernels::Packed, Precision::Bf16) => {
            if !clipkit_kernels::has_avx512_bf16() {
                return Err(ClipError::Unsupported(
                    "bf16 precision on the CPU needs AVX-512 BF16 (Zen 4+, Sapphire Rapids+)"
                        .into(),
                ));
            }
            Ok((MatmulPath::Packed(WeightFormat::Bf16), DType::F32))
        }
        (Device::Cpu, CpuKernels::Packed, Precision::Int8) => {
            if !clipkit_kernels::has_avx512_vnni() && !clipkit_kernels::has_avx2() {
                return Err(ClipError::Unsupported(
                    "int8 precision on the CPU needs AVX-512 VNNI (Zen 4+, Ice Lake+) or AVX2"
                        .into(),
                ));
            }
            Ok((MatmulPath::Packed(WeightFormat::Int8), DType::F32))
        }
        (Device::Cpu, CpuKernels::Packed, Precision::F16) => {
            if !clipkit_kernels::has_avx512_fp16() {
                return Err(ClipError::Unsupported(
                    "f16 precision on the CPU needs AVX-512 FP16 (Sapphire Rapids+ Xeons); \
                     bf16 (AVX-512 BF16) runs here"
                        .into(),
                ));
            }
            Ok((MatmulPath::Packed(WeightFormat::F16), DType::F32))
        }
        (Device::Cpu, CpuKernels::Candle, Precision::Int8) => Err(ClipError::Unsupported(
            "int8 on the CPU runs on the packed kernels only".into(),
        )),
        // Every other case is candle's ops on tensors of that dtype: CUDA's path, which on the
        // CPU (`--cpu-kernels candle`) is slow but lets the tests check it without a GPU.
        (_, _, Precision::F32) => Ok((MatmulPath::Candle, DType::F32)),
        (_, _, Precision::Bf16) => Ok((MatmulPath::Candle, DType::BF16)),
        (_, _, Precision::F16) => Ok((MatmulPath::Candle, DType::F16)),
        (_, _, Precision::Int8) => Err(ClipError::Unsupported(
            "int8 runs on the CPU only; use bf16 or f16 on CUDA".into(),
        )),
    }
}

/// Picks a device from a user-facing name: `cpu`, `cuda`, `cuda:N`.
pub fn device_from_name(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(ordinal)) => cuda(ordinal),
            _ => Err(ClipError::InvalidArgument {
                what: "device",
                value: other.to_owned(),
                problem: "expected cpu, cuda or cuda:N".into(),
            }),
        },
    }
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal).map_err(|mut e| {
        // The driver's reason, without the backtrace candle attaches under RUST_BACKTRACE.
        while let candle_core::Error::WithBacktrace { inner, .. } = e {
            e = *inner;
        }
        ClipError::CudaDevice {
            ordinal,
            message: e.to_string(),
        }
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda(_ordinal: usize) -> Result<Device> {
    Err(ClipError::Unsupported(
        "this clipkit was built without CUDA; rebuild with `--features cuda` \
         (needs the CUDA toolkit)"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_parsed_and_cuda_needs_the_feature() {
        assert!(matches!(device_from_name("cpu"), Ok(Device::Cpu)));
        assert!(device_from_name("tpu").is_err());
        // The caller's mistake, typed as such (not a tensor failure).
        assert!(matches!(
            device_from_name("cuda:x"),
            Err(ClipError::InvalidArgument { what: "device", ref value, .. }) if value == "cuda:x"
        ));
        #[cfg(not(feature = "cuda"))]
        for name in ["cuda", "cuda:1"] {
            match device_from_name(name) {
                Err(ClipError::Unsupported(why)) => assert!(why.contains("--features cuda")),
                other => panic!("{name}: {other:?}"),
            }
        }
        // A CUDA build opens the GPU where there is one, and says which device failed and why,
        // in one line, where there is none (no device 99 anywhere).
        #[cfg(feature = "cuda")]
        for (name, ordinal) in [("cuda", 0), ("cuda:99", 99)] {
            match device_from_name(name) {
                Ok(device) => assert!(device.is_cuda() && ordinal == 0, "{name}"),
                Err(ClipError::CudaDevice {
                    ordinal: got,
                    message,
                }) => {
                    assert_eq!(got, ordinal);
                    assert!(!message.is_empty() && !message.contains('\n'), "{message}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn each_precision_maps_to_a_path_or_a_reason() {
        use Precision::*;
        let cpu = Device::Cpu;
        assert!(matches!(
            matmul_path(&cpu, F32, CpuKernels::Packed),
            Ok((MatmulPath::Packed(WeightFormat::F32), DType::F32))
        ));
        assert!(matches!(
            matmul_path(&cpu, F16, CpuKernels::Candle),
            Ok((MatmulPath::Candle, DType::F16))
        ));
        assert!(matches!(
            matmul_path(&cpu, Bf16, CpuKernels::Candle),
            Ok((MatmulPath::Candle, DType::BF16))
        ));
        match matmul_path(&cpu, F16, CpuKernels::Packed) {
            Ok((MatmulPath::Packed(WeightFormat::F16), DType::F32)) => {
                assert!(clipkit_kernels::has_avx512_fp16())
            }
            Err(ClipError::Unsupported(why)) => {
                assert!(
                    !clipkit_kernels::has_avx512_fp16() && why.contains("bf16"),
                    "{why}"
                )
            }
            other => panic!("f16 on the packed kernels: {other:?}"),
        }
        assert!(matches!(
            matmul_path(&cpu, Int8, CpuKernels::Candle),
            Err(ClipError::Unsupported(_))
        ));
    }
}
