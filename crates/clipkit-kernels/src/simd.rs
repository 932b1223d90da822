//! Run-time CPU feature checks, done once.

use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
fn detect() -> (bool, bool, bool) {
    let f = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("fma");
    let bf16 = f && is_x86_feature_detected!("avx512bf16");
    let vnni = f && is_x86_feature_detected!("avx512vnni");
    // Lets tests and benchmarks force the portable paths on an AVX-512 machine.
    let on = std::env::var_os("CLIPKIT_NO_AVX512").is_none();
    (f && on, bf16 && on, vnni && on)
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> (bool, bool, bool) {
    (false, false, false)
}

fn features() -> (bool, bool, bool) {
    static F: OnceLock<(bool, bool, bool)> = OnceLock::new();
    *F.get_or_init(detect)
}

pub fn avx512_vnni() -> bool {
    features().2
}

pub fn avx512() -> bool {
    features().0
}

pub fn avx512_bf16() -> bool {
    features().1
}
