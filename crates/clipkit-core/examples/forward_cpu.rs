//! Wall and CPU time of the image and text towers (not a test): CPU seconds per image stay
//! meaningful while other processes share the machine, wall time does not.
//!
//! cargo run --release -p clipkit-core --example forward_cpu -- MODEL_DIR [BATCH] [bf16|int8|candle]

use std::time::Instant;

use clipkit_core::device::{CpuKernels, Precision};
use clipkit_core::{Clip, LoadOptions};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let dir = std::path::PathBuf::from(&args[0]);
    let batch: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(32);
    let mode = args.get(2).map(String::as_str).unwrap_or("f32");
    let options = LoadOptions {
        batch_size: batch,
        precision: match mode {
            "bf16" => Precision::Bf16,
            "int8" => Precision::Int8,
            _ => Precision::F32,
        },
        cpu_kernels: if mode == "candle" {
            CpuKernels::Candle
        } else {
            CpuKernels::Packed
        },
        ..LoadOptions::default()
    };
    let clip = Clip::from_dir(&dir, &options).expect("load");
    let (h, w) = clip.preprocessor().output_size();
    let plane = 3 * h as usize * w as usize;
    let pixels: Vec<Vec<f32>> = (0..batch)
        .map(|b| {
            (0..plane)
                .map(|i| (((i * 31 + b * 17) % 255) as f32 / 127.5) - 1.0)
                .collect()
        })
        .collect();
    let prompts = ["a photo of a dog on a beach at sunset"; 1024];
    let texts = &prompts[..batch];
    clip.embed_pixels(&pixels).unwrap();
    clip.embed_texts(texts).unwrap();
    if std::env::var_os("TEXT_ONLY").is_some() {
        for _ in 0..200 {
            clip.embed_texts(texts).unwrap();
        }
        return;
    }
    for _ in 0..3 {
        let (t, c) = (Instant::now(), cpu_ns());
        clip.embed_pixels(&pixels).unwrap();
        let (wall, cpu) = (t.elapsed().as_secs_f64(), (cpu_ns() - c) as f64 * 1e-9);
        let (t2, c2) = (Instant::now(), cpu_ns());
        clip.embed_texts(texts).unwrap();
        let (wall2, cpu2) = (t2.elapsed().as_secs_f64(), (cpu_ns() - c2) as f64 * 1e-9);
        println!(
            "{mode} batch {batch}: images {:.1}/s wall, {:.1} per core-second | texts {:.0}/s wall, {:.0} per core-second",
            batch as f64 / wall,
            batch as f64 / cpu,
            batch as f64 / wall2,
            batch as f64 / cpu2
        );
    }
}
