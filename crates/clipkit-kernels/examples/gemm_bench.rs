//! GFLOP/s of the packed GEMM on the ViT-B/32 layer shapes (not a test).
//!
//! cargo run --release -p clipkit-kernels --example gemm_bench -- [M] [bf16|int8] [l14]
//!
//! `l14`: the ViT-L/14 layer shapes (width 1,024) instead of ViT-B/32's.

use std::time::Instant;

use clipkit_kernels::{Activation, Epilogue, PackedWeights, WeightFormat};

/// CPU time of all this process's threads (ns, from the scheduler): GFLOP per core-second
/// stays meaningful when other processes share the machine, wall time does not.
fn cpu_ns() -> u64 {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let m: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(1600);
    let format = if args.iter().any(|a| a == "bf16") {
        WeightFormat::Bf16
    } else if args.iter().any(|a| a == "int8") {
        WeightFormat::Int8
    } else if args.iter().any(|a| a == "f16") {
        WeightFormat::F16
    } else {
        WeightFormat::F32
    };
    let h = if args.iter().any(|a| a == "l14") {
        1024
    } else {
        768
    };
    for (name, n, k, act) in [
        ("qkv", 3 * h, h, Activation::Identity),
        ("out_proj", h, h, Activation::Identity),
        ("fc1", 4 * h, h, Activation::QuickGelu),
        ("fc2", h, 4 * h, Activation::Identity),
    ] {
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i % 97) as f32 - 48.0) / 480.0)
            .collect();
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i % 89) as f32 - 44.0) / 440.0)
            .collect();
        let bias = vec![0.1f32; n];
        let packed = PackedWeights::new(&w, n, k, Some(&bias), format);
        let mut out = vec![0f32; m * n];
        let epi = Epilogue {
            act,
            residual: None,
        };
        packed.matmul(&a, m, epi, &mut out);
        let mut times = Vec::new();
        let mut cpu = Vec::new();
        for _ in 0..7 {
            let (t, c) = (Instant::now(), cpu_ns());
            packed.matmul(&a, m, epi, &mut out);
            times.push(t.elapsed().as_secs_f64());
            cpu.push((cpu_ns() - c) as f64 * 1e-9);
        }
        times.sort_by(f64::total_cmp);
        cpu.sort_by(f64::total_cmp);
        let flops = 2.0 * (m * n * k) as f64;
        println!(
            "{name:9} m={m} n={n} k={k} {format:?}: median {:.2} ms, {:.0} GFLOP/s wall (best {:.0}), {:.0} GFLOP per core-second",
            times[3] * 1e3,
            flops / times[3] / 1e9,
            flops / times[0] / 1e9,
            flops / cpu[3] / 1e9,
        );
    }
}
