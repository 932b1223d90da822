//! `clipkit bench`: throughput measured the way docs/benchmarks.md reports it. Model-only numbers
//! use synthetic inputs of the real shapes; `--images` adds decode + preprocess + model from files.

use std::time::Instant;

use anyhow::{bail, Result};
use clap::ValueEnum;
use clipkit_core::zoo::measured;
use serde_json::json;

use super::Outcome;
use crate::cli::{BenchArgs, Format, ModelArgs};
use crate::output::{print_csv, print_json, print_table};
use crate::settings::{expand_images, load_model};

/// Typical zero-shot prompts (about ten tokens each).
const PROMPTS: &[&str] = &[
    "a photo of a dog on a beach at sunset",
    "a close-up photo of a small orange cat",
    "a blurry photo of a red sports car",
    "an aerial photograph of a city at night",
    "a black and white photo of an old man",
    "a painting of a sailing boat in a storm",
    "a photo of a cup of coffee on a table",
    "a cartoon drawing of a happy green dragon",
];

/// Files → embeddings throughput, one pass being the folder's files (repeated up to four
/// batches); the median pass of `--iters`.
struct EndToEnd {
    files: usize,
    images: usize,
    failed: usize,
    images_per_sec: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Peak resident memory of this process, from the kernel (Linux; `None` elsewhere).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs `f` once to warm up, then `iters` times; the median seconds per run.
fn time(iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut runs = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        f()?;
        runs.push(start.elapsed().as_secs_f64());
    }
    Ok(median(runs))
}

pub fn run(args: &BenchArgs) -> Result<Outcome> {
    if let Some(n) = args.threads {
        // Read by rayon and candle when their thread pools start, which is after this.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    let start = Instant::now();
    // The end-to-end pass runs the model at the same batch as the model-only one.
    let clip = load_model(&ModelArgs {
        batch_size: args.batch,
        ..args.model.clone()
    })?;
    let load_s = start.elapsed().as_secs_f64();
    let (h, w) = clip.preprocessor().output_size();
    let plane = 3 * h as usize * w as usize;

    // Deterministic inputs in the normalised range.
    let pixels: Vec<Vec<f32>> = (0..args.batch)
        .map(|b| {
            (0..plane)
                .map(|i| (((i * 31 + b * 17) % 255) as f32 / 127.5) - 1.0)
                .collect()
        })
        .collect();
    let image_s = time(args.iters, || {
        clip.embed_pixels(&pixels).map(|_| ()).map_err(Into::into)
    })?;
    // The batch (19 MB at ViT-B/32, batch 32) is not needed again; freed now, its pages serve
    // the end-to-end pass instead of adding to its peak RSS.
    drop(pixels);
    let texts: Vec<&str> = PROMPTS.iter().cycle().take(args.batch).copied().collect();
    let text_s = time(args.iters, || {
        clip.embed_texts(&texts).map(|_| ()).map_err(Into::into)
    })?;
    let images_per_sec = args.batch as f64 / image_s;
    let texts_per_sec = args.batch as f64 / text_s;
    let gflops = clip.image_flops() * images_per_sec / 1e9;

    let end_to_end = match &args.images {
        None => None,
        Some(dir) => {
            let files = expand_images(std::slice::from_ref(dir))?;
            if files.is_empty() {
                bail!("{}: no image files", dir.display());
            }
            // Steady state, as when indexing a library: at least four batches per pass (the
            // folder's files repeated if it is smaller), so decoding overlaps the model.
            let per_pass = files.len().max(4 * clip.batch_size());
            let pass: Vec<_> = files.iter().cycle().take(per_pass).cloned().collect();
            let mut failed = 0;
            let secs = time(args.iters, || {
                let results = clip.embed_image_files(&pass);
                failed = results.iter().filter(|r| r.is_err()).count();
                Ok(())
            })?;
            Some(EndToEnd {
                files: files.len(),
                images: pass.len(),
                failed,
                images_per_sec: pass.len() as f64 / secs,
            })
        }
    };
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let rss = peak_rss_mb();
    let name = |v: &dyn Fn() -> Option<clap::builder::PossibleValue>| {
        v().map_or_else(String::new, |p| p.get_name().to_string())
    };
    let precision = name(&|| args.model.precision.to_possible_value());
    let kernels = name(&|| args.model.cpu_kernels.to_possible_value());
    let recorded = if args.no_record || args.model.device != "cpu" {
        None
    } else {
        let record = measured::BenchRecord {
            model: clip.name().to_owned(),
            cpu: measured::cpu_name(),
            precision: precision.clone(),
            batch: args.batch,
            threads,
            images_per_sec,
            date: measured::now_utc(),
            family: Some(clip.family().name().to_owned()),
            image_size: Some(clip.image_size()),
            embedding_dim: Some(clip.embedding_dim()),
        };
        let path = measured::default_path();
        match measured::append(&path, &record) {
            Ok(()) => Some(path),
            Err(e) => {
                // The measurement itself succeeded; only `clipkit models` misses it.
                eprintln!("warning: the result was not recorded: {e}");
                None
            }
        }
    };

    match args.print.format {
        Format::Json => print_json(&json!({
            "model": clip.name(),
            "precision": precision,
            "cpu_kernels": kernels,
            "matmul_kernel": clip.matmul_kernel(),
            "device": args.model.device,
            "threads": threads,
            "batch": args.batch,
            "iters": args.iters,
            "images_per_sec": images_per_sec,
            "texts_per_sec": texts_per_sec,
            "image_gflops_per_sec": gflops,
            "model_load_sec": load_s,
            "peak_rss_mb": rss,
            "recorded_in": recorded.as_ref().map(|p| p.to_string_lossy()),
            "end_to_end": end_to_end.as_ref().map(|e| json!({
                "files": e.files,
                "images_per_pass": e.images,
                "failed": e.failed,
                "images_per_sec": e.images_per_sec,
                "ratio_to_model_only": e.images_per_sec / images_per_sec,
                "jpeg_draft": args.model.jpeg_draft,
            })),
        }))?,
        Format::Csv => {
            // The JSON document's keys, flattened: one measure per row.
            let mut rows = vec![
                vec!["model".into(), clip.name().to_owned()],
                vec!["precision".into(), precision],
                vec!["cpu_kernels".into(), kernels],
                vec!["matmul_kernel".into(), clip.matmul_kernel().into()],
                vec!["device".into(), args.model.device.clone()],
                vec!["threads".into(), threads.to_string()],
                vec!["batch".into(), args.batch.to_string()],
                vec!["iters".into(), args.iters.to_string()],
                vec!["images_per_sec".into(), images_per_sec.to_string()],
                vec!["texts_per_sec".into(), texts_per_sec.to_string()],
                vec!["image_gflops_per_sec".into(), gflops.to_string()],
                vec!["model_load_sec".into(), load_s.to_string()],
                vec![
                    "peak_rss_mb".into(),
                    rss.map_or_else(String::new, |r| r.to_string()),
                ],
                vec![
                    "recorded_in".into(),
                    recorded
                        .as_ref()
                        .map_or_else(String::new, |p| p.to_string_lossy().into_owned()),
                ],
            ];
            if let Some(e) = &end_to_end {
                let ratio = e.images_per_sec / images_per_sec;
                rows.extend([
                    vec!["end_to_end.files".into(), e.files.to_string()],
                    vec!["end_to_end.images_per_pass".into(), e.images.to_string()],
                    vec!["end_to_end.failed".into(), e.failed.to_string()],
                    vec![
                        "end_to_end.images_per_sec".into(),
                        e.images_per_sec.to_string(),
                    ],
                    vec!["end_to_end.ratio_to_model_only".into(), ratio.to_string()],
                    vec![
                        "end_to_end.jpeg_draft".into(),
                        args.model.jpeg_draft.to_string(),
                    ],
                ]);
            }
            print_csv(&["measure", "value"], &rows)?;
        }
        Format::Table => {
            let mut rows = vec![
                vec!["model load".into(), format!("{load_s:.3} s")],
                vec![
                    format!("images/s (model, batch {})", args.batch),
                    format!("{images_per_sec:.1}  ({gflops:.0} GFLOP/s)"),
                ],
                vec![
                    format!("texts/s (batch {})", args.batch),
                    format!("{texts_per_sec:.1}"),
                ],
            ];
            if let Some(e) = &end_to_end {
                rows.push(vec![
                    format!(
                        "images/s (end to end, {} files, {} per pass, {} failed)",
                        e.files, e.images, e.failed
                    ),
                    format!(
                        "{:.1}  ({:.2}x model only)",
                        e.images_per_sec,
                        e.images_per_sec / images_per_sec
                    ),
                ]);
            }
            if let Some(rss) = rss {
                rows.push(vec!["peak RSS".into(), format!("{rss:.0} MB")]);
            }
            rows.push(vec!["threads".into(), threads.to_string()]);
            rows.push(vec!["precision".into(), precision]);
            rows.push(vec!["matmul kernel".into(), clip.matmul_kernel().into()]);
            print_table(&["measure", "value"], &rows);
            if let Some(path) = &recorded {
                println!("\nrecorded for `clipkit models` in {}", path.display());
            }
        }
    }
    Ok(Outcome::Success)
}
