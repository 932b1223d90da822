//! Run-time CPU feature checks, done once.

use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
fn detect() -> (bool, bool) {
    let f = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("fma");
    let bf16 = f && is_x86_feature_detected!("avx512bf16");
    // Lets tests and benchmarks force the portable paths on an AVX-512 machine.
    let forced_off = std::env::var_os("CLIPKIT_NO_AVX512").is_some();
    (f && !forced_off, bf16 && !forced_off)
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> (bool, bool) {
    (false, false)
}

fn features() -> (bool, bool) {
    static F: OnceLock<(bool, bool)> = OnceLock::new();
    *F.get_or_init(detect)
}

pub fn avx512() -> bool {
    features().0
}

pub fn avx512_bf16() -> bool {
    features().1
}
