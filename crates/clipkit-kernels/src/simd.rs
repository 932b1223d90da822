//! Run-time CPU feature checks, done once.

use std::sync::OnceLock;

/// The instruction sets the kernels pick between.
#[derive(Clone, Copy, Default)]
struct Features {
    /// AVX2 + FMA: the vector paths of CPUs without AVX-512.
    avx2: bool,
    avx512: bool,
    bf16: bool,
    vnni: bool,
    fp16: bool,
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Features {
    // Let tests and benchmarks run the AVX2 paths (`CLIPKIT_NO_AVX512`) or the portable ones
    // (`CLIPKIT_NO_AVX2`) on a machine that has more.
    if std::env::var_os("CLIPKIT_NO_AVX2").is_some() {
        return Features::default();
    }
    let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    if std::env::var_os("CLIPKIT_NO_AVX512").is_some() {
        return Features {
            avx2,
            ..Features::default()
        };
    }
    let f = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("fma");
    Features {
        avx2,
        avx512: f,
        bf16: f && is_x86_feature_detected!("avx512bf16"),
        vnni: f && is_x86_feature_detected!("avx512vnni"),
        fp16: f && is_x86_feature_detected!("avx512fp16"),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Features {
    Features::default()
}

fn features() -> Features {
    static F: OnceLock<Features> = OnceLock::new();
    *F.get_or_init(detect)
}

pub fn avx512_vnni() -> bool {
    features().vnni
}

/// AVX2 and FMA (every AVX-512 CPU has them too, but takes its own paths).
pub fn avx2() -> bool {
    features().avx2
}

pub fn avx512() -> bool {
    features().avx512
}

pub fn avx512_bf16() -> bool {
    features().bf16
}

pub fn avx512_fp16() -> bool {
    features().fp16
}
