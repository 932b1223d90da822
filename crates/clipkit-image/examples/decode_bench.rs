//! Decode + preprocess cost per image on one thread, full decode against JPEG draft:
//! `cargo run --release -p clipkit-image --example decode_bench -- DIR [REPS] [full|draft]`.
//! The end-to-end rate can only reach model speed when this is small beside the model's
//! CPU time per image, since both share the same cores.

use std::path::PathBuf;
use std::time::Instant;

use clipkit_image::files::find_images;
use clipkit_image::{DecodeOptions, PreprocessMode, Preprocessor, PreprocessorConfig};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: decode_bench DIR [REPS]"));
    let reps: usize = args.next().map_or(Ok(3), |r| r.parse())?;
    let only = args.next();
    let files = find_images(&dir)?;
    anyhow::ensure!(!files.is_empty(), "{}: no images", dir.display());
    let bytes: Vec<Vec<u8>> = files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let config = PreprocessorConfig::openai(224);
    for (name, draft) in [("full decode", None), ("jpeg draft", Some(224))] {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let pre = Preprocessor::new(
            config.clone(),
            PreprocessMode::Transformers,
            DecodeOptions {
                draft_shortest_edge: draft,
                ..DecodeOptions::default()
            },
        );
        let mut decode_ms = Vec::new();
        let mut total_ms = Vec::new();
        for _ in 0..reps {
            let (mut d, mut t) = (0.0, 0.0);
            for (path, b) in files.iter().zip(&bytes) {
                let start = Instant::now();
                let decoded = pre.decode_bytes(path, b)?;
                d += start.elapsed().as_secs_f64();
                let crop = pre.resize_and_crop(&decoded);
                std::hint::black_box(pre.normalize(&crop));
                t += start.elapsed().as_secs_f64();
            }
            decode_ms.push(d * 1e3 / files.len() as f64);
            total_ms.push(t * 1e3 / files.len() as f64);
        }
        decode_ms.sort_by(f64::total_cmp);
        total_ms.sort_by(f64::total_cmp);
        // The minimum too: on a shared VM it is the steadier figure for comparing builds.
        println!(
            "{name}: {:.2} ms/image decode, {:.2} ms/image decode+preprocess ({} files, median of {reps}; fastest {:.2} / {:.2})",
            decode_ms[reps / 2],
            total_ms[reps / 2],
            files.len(),
            decode_ms[0],
            total_ms[0]
        );
    }
    Ok(())
}
