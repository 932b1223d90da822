//! Embeddings and logits equal transformers' `CLIPModel` on the committed tiny checkpoints
//! (quick_gelu + sharded f32 + legacy eos; gelu + single-file f16 + modern eos), and on a
//! full-size random ViT-B/32 made by the same script when it is present (`--ignored`).

mod common;

use std::path::Path;
use std::time::Instant;

use clipkit_core::device::CpuKernels;
use clipkit_core::image::DecodeOptions;
use clipkit_core::model::{TextBatch, TextLayout};
use clipkit_core::{Clip, LoadOptions};

struct Report {
    min_image_cos: f32,
    min_text_cos: f32,
    max_logit_err: f32,
    max_pixel_err: f32,
}

fn check_model(
    model_dir: &Path,
    reference: &Path,
    meta: &Path,
    images_dir: &Path,
    cpu_kernels: CpuKernels,
) -> Report {
    let options = LoadOptions {
        cpu_kernels,
        // transformers' references were made from PIL images, which it never EXIF-rotates.
        decode: DecodeOptions {
            apply_exif_orientation: false,
            ..DecodeOptions::default()
        },
        batch_size: 5, // smaller than the image count, so batching is exercised
        ..LoadOptions::default()
    };
    let clip = Clip::from_dir(model_dir, &options).unwrap();
    let r = common::load_tensors(reference);
    let meta = common::read_json(meta);
    let names: Vec<String> = meta["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let texts: Vec<String> = meta["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();

    let scale = r["logit_scale"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0]
        .exp();
    assert!((clip.logit_scale() - scale).abs() <= 1e-4 * scale);

    // Token ids: ours unpadded, theirs padded to the longest with 49407.
    let ref_ids = r["input_ids"]
        .to_dtype(candle_core::DType::I64)
        .unwrap()
        .to_vec2::<i64>()
        .unwrap();
    for (text, expected) in texts.iter().zip(&ref_ids) {
        let ours = clip.tokenizer().encode(text).unwrap();
        assert_eq!(
            ours.iter().map(|&i| i64::from(i)).collect::<Vec<_>>(),
            expected[..ours.len()],
            "{text:?}"
        );
    }

    // Pixels.
    let ref_pixels = r["pixel_values"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let plane = ref_pixels.len() / names.len();
    let mut ours_pixels = Vec::new();
    let mut max_pixel_err = 0f32;
    for (i, name) in names.iter().enumerate() {
        let p = clip
            .preprocessor()
            .preprocess_file(&images_dir.join(name))
            .unwrap();
        assert_eq!(p.len(), plane);
        let mut worst = 0f32;
        for (a, b) in p.iter().zip(&ref_pixels[i * plane..(i + 1) * plane]) {
            worst = worst.max((a - b).abs());
        }
        max_pixel_err = max_pixel_err.max(worst);
        ours_pixels.push(p);
    }

    // Image embeddings, from our own pixels, end to end.
    let ours = clip.embed_pixels(&ours_pixels).unwrap();
    let theirs = common::rows(&r["image_embeds"]);
    let min_image_cos = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| common::cosine(a, b))
        .fold(1f32, f32::min);

    // Text embeddings.
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ours_text = clip.embed_texts(&refs).unwrap();
    let theirs_text = common::rows(&r["text_embeds"]);
    let min_text_cos = ours_text
        .iter()
        .zip(&theirs_text)
        .map(|(a, b)| common::cosine(a, b))
        .fold(1f32, f32::min);

    // Logits.
    let logits = clipkit_core::scores::logits(&ours, &ours_text, clip.logit_scale());
    let ref_logits = common::rows(&r["logits_per_image"]);
    let max_logit_err = logits
        .iter()
        .flatten()
        .zip(ref_logits.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);

    let report = Report {
        min_image_cos,
        min_text_cos,
        max_logit_err: max_logit_err / scale,
        max_pixel_err,
    };
    eprintln!(
        "{} ({cpu_kernels:?}): image cos ≥ {:.7}, text cos ≥ {:.7}, logit err ≤ {:.2e}·scale, pixel err ≤ {:.2e}",
        model_dir.display(),
        report.min_image_cos,
        report.min_text_cos,
        report.max_logit_err,
        report.max_pixel_err
    );
    assert!(
        report.max_pixel_err <= 0.0146,
        "pixel error {}",
        report.max_pixel_err
    );
    assert!(
        report.min_image_cos >= 0.99999,
        "image cosine {}",
        report.min_image_cos
    );
    assert!(
        report.min_text_cos >= 0.99999,
        "text cosine {}",
        report.min_text_cos
    );
    assert!(
        report.max_logit_err <= 1e-3,
        "logit error {}·scale",
        report.max_logit_err
    );
    report
}

/// Both CPU paths: clipkit's packed kernels (the default) and candle's ops.
fn check_tiny(name: &str) {
    let f = common::fixtures();
    for kernels in [CpuKernels::Packed, CpuKernels::Candle] {
        check_model(
            &f.join("models").join(name),
            &f.join(format!("reference/{name}.safetensors")),
            &f.join(format!("reference/{name}.json")),
            &f.join("images"),
            kernels,
        );
    }
}

#[test]
fn tiny_quickgelu_sharded_f32_matches_transformers() {
    check_tiny("tiny-quickgelu");
}

#[test]
fn tiny_gelu_f16_matches_transformers() {
    check_tiny("tiny-gelu");
}

/// Lossy and other formats: the same model, within what decoder differences allow.
#[test]
fn other_formats_stay_close() {
    let f = common::fixtures();
    for name in ["tiny-quickgelu", "tiny-gelu"] {
        let options = LoadOptions {
            decode: DecodeOptions {
                apply_exif_orientation: false,
                ..DecodeOptions::default()
            },
            ..LoadOptions::default()
        };
        let clip = Clip::from_dir(&f.join("models").join(name), &options).unwrap();
        let r = common::load_tensors(&f.join(format!("reference/{name}.safetensors")));
        let meta = common::read_json(&f.join(format!("reference/{name}.json")));
        let paths: Vec<_> = meta["other_images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| f.join("images").join(v.as_str().unwrap()))
            .collect();
        let ours = clip.embed_image_files(&paths);
        let theirs = common::rows(&r["other_image_embeds"]);
        for ((path, a), b) in paths.iter().zip(ours).zip(theirs) {
            let cos = common::cosine(&a.unwrap(), &b);
            assert!(cos >= 0.999, "{}: cosine {cos}", path.display());
        }
    }
}

/// Full-size ViT-B/32 with random weights, written by
/// `python tools/fixtures/make_fixtures.py --big b32 --out DIR` (600 MB, not committed):
/// `CLIPKIT_BIG_FIXTURE=DIR cargo test --release -p clipkit-core --test model_parity -- --ignored`
#[test]
#[ignore = "needs CLIPKIT_BIG_FIXTURE, a 600 MB model written by tools/fixtures/make_fixtures.py --big"]
fn full_size_vit_b32_matches_transformers() {
    let dir = std::env::var_os("CLIPKIT_BIG_FIXTURE")
        .expect("set CLIPKIT_BIG_FIXTURE to the --big output");
    let dir = Path::new(&dir);
    let start = Instant::now();
    let clip = Clip::from_dir(dir, &LoadOptions::default()).unwrap();
    eprintln!(
        "loaded {} in {:.3}s",
        dir.display(),
        start.elapsed().as_secs_f64()
    );
    drop(clip);
    for kernels in [CpuKernels::Packed, CpuKernels::Candle] {
        check_model(
            dir,
            &dir.join("reference.safetensors"),
            &dir.join("reference.json"),
            &common::fixtures().join("images"),
            kernels,
        );
    }
}

/// Prompts packed back to back without padding (the packed CPU path's text batches) give the
/// padded batch's features, on both kernel paths (candle gets a block-diagonal causal mask).
#[test]
fn packed_text_batches_equal_padded_ones() {
    let f = common::fixtures();
    let prompts = [
        "a cat",
        "a photo of a dog on a beach at sunset",
        "x",
        "two words",
    ];
    for kernels in [CpuKernels::Packed, CpuKernels::Candle] {
        let options = LoadOptions {
            cpu_kernels: kernels,
            ..LoadOptions::default()
        };
        let clip = Clip::from_dir(&f.join("models/tiny-quickgelu"), &options).unwrap();
        let rule = clip.model().text_input().pooling;
        let ids: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| clip.tokenizer().encode(p).unwrap())
            .collect();
        let longest = ids.iter().map(Vec::len).max().unwrap();
        let mut padded = Vec::new();
        let (mut flat, mut lengths, mut eos_rows, mut eos) = (vec![], vec![], vec![], vec![]);
        for seq in &ids {
            eos.push(rule.position(seq, longest));
            eos_rows.push(flat.len() + rule.position(seq, seq.len()));
            lengths.push(seq.len());
            flat.extend_from_slice(seq);
            padded.extend_from_slice(seq);
            padded.extend(std::iter::repeat_n(
                clip.tokenizer().pad_id(),
                longest - seq.len(),
            ));
        }
        let device = candle_core::Device::Cpu;
        let padded = candle_core::Tensor::from_vec(padded, (ids.len(), longest), &device).unwrap();
        let n = flat.len();
        let flat = candle_core::Tensor::from_vec(flat, n, &device).unwrap();
        let padded = TextBatch {
            ids: padded,
            layout: TextLayout::Padded {
                pool_positions: eos,
            },
        };
        let packed = TextBatch {
            ids: flat,
            layout: TextLayout::Packed {
                lengths,
                pool_rows: eos_rows,
            },
        };
        let a = common::rows(&clip.model().text_features(&padded).unwrap());
        let b = common::rows(&clip.model().text_features(&packed).unwrap());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let worst = x
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            assert!(
                worst < 1e-5,
                "{kernels:?} prompt {i}: max difference {worst}"
            );
        }
    }
}
