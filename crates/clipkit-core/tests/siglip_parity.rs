//! SigLIP / SigLIP 2 against transformers' `SiglipModel` (fixtures/siglip, written by
//! tools/fixtures/make_siglip.py): pixels, image and text embeddings, logits and sigmoid
//! probabilities on both CPU paths, token ids of both tokenizers on a corpus, and the full-size
//! random SigLIP 2 B/16 when `CLIPKIT_SIGLIP_BIG` names its directory (`--ignored`).

mod common;

use std::path::{Path, PathBuf};

use candle_core::DType;
use clipkit_core::device::CpuKernels;
use clipkit_core::image::DecodeOptions;
use clipkit_core::scoring::Scoring;
use clipkit_core::{Clip, LoadOptions};

fn siglip() -> PathBuf {
    common::fixtures().join("siglip")
}

struct Report {
    image_cos: f32,
    text_cos: f32,
    logit_err: f32,
    prob_err: f32,
}

fn check(model_dir: &Path, reference: &Path, meta: &Path, kernels: CpuKernels) -> Report {
    let options = LoadOptions {
        cpu_kernels: kernels,
        decode: DecodeOptions {
            apply_exif_orientation: false,
            ..DecodeOptions::default()
        },
        batch_size: 5,
        ..LoadOptions::default()
    };
    let clip = Clip::from_dir(model_dir, &options).unwrap();
    let r = common::load_tensors(reference);
    let meta = common::read_json(meta);
    let strings = |key: &str| -> Vec<String> {
        meta[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let (names, texts) = (strings("images"), strings("texts"));
    let scalar = |k: &str| r[k].flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
    let (scale, bias) = (scalar("logit_scale").exp(), scalar("logit_bias"));
    let Scoring::Sigmoid {
        logit_scale,
        logit_bias,
    } = clip.scoring()
    else {
        panic!("SigLIP scores with a sigmoid");
    };
    assert!((logit_scale - scale).abs() <= 1e-5 * scale);
    assert!((logit_bias - bias).abs() <= 1e-6);

    // Ids: ours unpadded; theirs padded with pad_id to 64.
    let pad = meta["pad_token_id"].as_i64().unwrap();
    let ref_ids = r["input_ids"]
        .to_dtype(DType::I64)
        .unwrap()
        .to_vec2::<i64>()
        .unwrap();
    assert_eq!(clip.tokenizer().pad_id() as i64, pad);
    for (text, expected) in texts.iter().zip(&ref_ids) {
        let ours: Vec<i64> = clip
            .tokenizer()
            .encode(text)
            .unwrap()
            .iter()
            .map(|&i| i64::from(i))
            .collect();
        assert_eq!(ours, expected[..ours.len()], "{text:?}");
        assert!(expected[ours.len()..].iter().all(|&i| i == pad), "{text:?}");
    }

    // Pixels: the reference's resized 8-bit values.
    let ref_u8 = r["pixels_u8"]
        .flatten_all()
        .unwrap()
        .to_vec1::<u8>()
        .unwrap();
    let plane = ref_u8.len() / names.len();
    let mut pixels = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let p = clip
            .preprocessor()
            .preprocess_file(&common::fixtures().join("images").join(name))
            .unwrap();
        assert_eq!(p.len(), plane, "{name}");
        for (a, &b) in p.iter().zip(&ref_u8[i * plane..(i + 1) * plane]) {
            let expected = (f32::from(b) / 255.0 - 0.5) / 0.5;
            assert!(
                (a - expected).abs() <= 1e-6,
                "{name}: pixel {a} vs {expected}"
            );
        }
        pixels.push(p);
    }

    let image = clip.embed_pixels(&pixels).unwrap();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let text = clip.embed_texts(&refs).unwrap();
    let min_cos = |ours: &[Vec<f32>], key: &str| {
        ours.iter()
            .zip(common::rows(&r[key]))
            .map(|(a, b)| common::cosine(a, &b))
            .fold(1f32, f32::min)
    };
    let image_cos = min_cos(&image, "image_embeds");
    let text_cos = min_cos(&text, "text_embeds");

    let scoring = clip.scoring();
    let (mut logit_err, mut prob_err) = (0f32, 0f32);
    let ref_logits = common::rows(&r["logits_per_image"]);
    let ref_probs = common::rows(&r["probs"]);
    for (i, img) in image.iter().enumerate() {
        let cos: Vec<f32> = text.iter().map(|t| common::cosine(img, t)).collect();
        let logits = scoring.logits(&cos);
        let probs = scoring.probabilities(&logits);
        for j in 0..text.len() {
            logit_err = logit_err.max((logits[j] - ref_logits[i][j]).abs());
            prob_err = prob_err.max((probs[j] - ref_probs[i][j]).abs());
        }
    }
    let report = Report {
        image_cos,
        text_cos,
        logit_err: logit_err / scale,
        prob_err,
    };
    eprintln!(
        "{} ({kernels:?}): image cos ≥ {:.7}, text cos ≥ {:.7}, logit err ≤ {:.2e}·scale, prob err ≤ {:.2e}",
        model_dir.display(),
        report.image_cos,
        report.text_cos,
        report.logit_err,
        report.prob_err
    );
    assert!(
        report.image_cos >= 0.99999,
        "image cosine {}",
        report.image_cos
    );
    assert!(
        report.text_cos >= 0.99999,
        "text cosine {}",
        report.text_cos
    );
    assert!(
        report.logit_err <= 1e-3,
        "logit error {}·scale",
        report.logit_err
    );
    assert!(
        report.prob_err <= 1e-4,
        "probability error {}",
        report.prob_err
    );
    report
}

fn check_tiny(name: &str) {
    let s = siglip();
    for kernels in [CpuKernels::Packed, CpuKernels::Candle] {
        check(
            &s.join(name),
            &s.join(format!("reference/{name}.safetensors")),
            &s.join(format!("reference/{name}.json")),
            kernels,
        );
    }
}

#[test]
fn tiny_spm_matches_transformers() {
    check_tiny("tiny-spm");
}

#[test]
fn tiny_gemma_f16_with_projection_matches_transformers() {
    check_tiny("tiny-gemma");
}

/// The corpus texts and the reference ids of one tokenizer kind.
fn corpus(kind: &str) -> (Vec<String>, Vec<Vec<u32>>) {
    let doc = common::read_json(&siglip().join("reference/tokens.json"));
    let base = common::read_json(&common::fixtures().join("reference/tokenizer_corpus.json"));
    let mut texts: Vec<String> = base
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect();
    texts.extend(
        doc["extra_texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string()),
    );
    let ids: Vec<Vec<u32>> = doc[kind]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    assert_eq!(texts.len(), ids.len());
    assert!(texts.len() >= 1000);
    (texts, ids)
}

/// The texts whose ids differ from the reference's.
fn mismatches(model: &str, kind: &str) -> Vec<(String, Vec<u32>, Vec<u32>)> {
    let tok = clipkit_core::tokenizer::siglip::load(&siglip().join(model), 64).unwrap();
    let (texts, ids) = corpus(kind);
    texts
        .into_iter()
        .zip(ids)
        .filter_map(|(t, expected)| {
            let ours = tok.encode(&t).unwrap();
            (ours != expected).then_some((t, expected, ours))
        })
        .collect()
}

#[test]
fn gemma_bpe_ids_equal_transformers_on_the_corpus() {
    let bad = mismatches("tiny-gemma", "gemma");
    assert!(
        bad.is_empty(),
        "{} differ, first: {:?}",
        bad.len(),
        bad.first()
    );
}

/// SentencePiece unigram: clipkit's cleaning and SentencePiece normaliser, then `tokenizers`'
/// unigram model, equal to `SiglipTokenizer` on the corpus (literal special tokens, jamo,
/// half-width kana and combining marks included) except where the two Viterbi searches meet
/// equally scored segmentations: SentencePiece sums scores in f32, `tokenizers` in f64, so ties
/// break differently. The one such text in the corpus is a 300-letter run of `a`; any other
/// difference fails.
#[test]
fn spm_unigram_ids_equal_transformers_on_the_corpus() {
    let bad = mismatches("tiny-spm", "spm");
    let known = |t: &str| t.contains(&"a".repeat(40));
    let unexplained: Vec<_> = bad.iter().filter(|(t, _, _)| !known(t)).collect();
    eprintln!("SentencePiece: {} texts differ (Viterbi ties)", bad.len());
    for (t, want, got) in &bad {
        eprintln!("  {t:?}: {want:?} vs {got:?}");
    }
    assert!(
        unexplained.is_empty(),
        "{} unexplained: {:?}",
        unexplained.len(),
        &unexplained[..unexplained.len().min(5)]
    );
    assert!(bad.len() <= 1, "{} texts differ", bad.len());
}

#[test]
fn a_wrong_shaped_or_missing_tensor_names_the_checkpoint_and_the_shape() {
    let dir = tempfile::tempdir().unwrap();
    let src = siglip().join("tiny-spm");
    for f in [
        "config.json",
        "preprocessor_config.json",
        "spiece.model",
        "tokenizer_config.json",
        "model.safetensors",
    ] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    // A config whose text head is wider than the checkpoint's.
    let config = std::fs::read_to_string(src.join("config.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&config).unwrap();
    json["text_config"]["intermediate_size"] = 50.into();
    std::fs::write(dir.path().join("config.json"), json.to_string()).unwrap();
    let err = Clip::from_dir(dir.path(), &LoadOptions::default())
        .err()
        .expect("wrong shape")
        .to_string();
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    assert!(
        err.contains("text_model.encoder.layers.0.mlp.fc1.weight") && err.contains("[50, 24]"),
        "{err}"
    );

    // A checkpoint without the attention-pooling head's probe.
    let tensors = common::load_tensors(&src.join("model.safetensors"));
    let kept: std::collections::HashMap<_, _> = tensors
        .into_iter()
        .filter(|(k, _)| k != "vision_model.head.probe")
        .collect();
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    candle_core::safetensors::save(&kept, dir.path().join("model.safetensors")).unwrap();
    let err = Clip::from_dir(dir.path(), &LoadOptions::default())
        .err()
        .expect("missing")
        .to_string();
    assert!(
        err.contains("vision_model.head.probe") && err.contains(&dir.path().display().to_string()),
        "{err}"
    );
}

/// `CLIPKIT_SIGLIP_BIG=DIR cargo test --release -p clipkit-core --test siglip_parity -- --ignored`
/// with DIR from `make_siglip.py --big siglip2-b16 --out DIR`.
#[test]
#[ignore]
fn full_size_siglip2_b16_matches_transformers() {
    let Some(dir) = std::env::var_os("CLIPKIT_SIGLIP_BIG").map(PathBuf::from) else {
        panic!("set CLIPKIT_SIGLIP_BIG to the --big output directory");
    };
    for kernels in [CpuKernels::Packed, CpuKernels::Candle] {
        check(
            &dir,
            &dir.join("reference.safetensors"),
            &dir.join("reference.json"),
            kernels,
        );
    }
}

/// bf16 and int8 on the packed kernels (where this CPU has them; refusal is tested in
/// precision.rs) and bf16 tensors on candle (the CUDA dtype path) stay within cosine 0.999 of
/// transformers' f32 embeddings, the MAP head included.
#[test]
fn reduced_precision_stays_within_cosine_0_999() {
    use clipkit_core::device::Precision;
    let s = siglip();
    let runs = [
        (Precision::Bf16, CpuKernels::Packed),
        (Precision::Int8, CpuKernels::Packed),
        (Precision::Bf16, CpuKernels::Candle),
    ];
    for name in ["tiny-spm", "tiny-gemma"] {
        let r = common::load_tensors(&s.join(format!("reference/{name}.safetensors")));
        let meta = common::read_json(&s.join(format!("reference/{name}.json")));
        let list = |key: &str| -> Vec<String> {
            meta[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        let paths: Vec<PathBuf> = list("images")
            .iter()
            .map(|n| common::fixtures().join("images").join(n))
            .collect();
        let texts = list("texts");
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        for (precision, kernels) in runs {
            let options = LoadOptions {
                cpu_kernels: kernels,
                precision,
                decode: DecodeOptions {
                    apply_exif_orientation: false,
                    ..DecodeOptions::default()
                },
                ..LoadOptions::default()
            };
            let clip = match Clip::from_dir(&s.join(name), &options) {
                Ok(c) => c,
                Err(clipkit_core::ClipError::Unsupported(why)) => {
                    eprintln!("{name} {precision:?}: refused on this CPU ({why})");
                    continue;
                }
                Err(e) => panic!("{name} {precision:?}: {e}"),
            };
            let images: Vec<Vec<f32>> = clip
                .embed_image_files(&paths)
                .into_iter()
                .map(Result::unwrap)
                .collect();
            let text = clip.embed_texts(&refs).unwrap();
            for (ours, key) in [(&images, "image_embeds"), (&text, "text_embeds")] {
                let worst = ours
                    .iter()
                    .zip(common::rows(&r[key]))
                    .map(|(a, b)| common::cosine(a, &b))
                    .fold(1f32, f32::min);
                eprintln!("{name} {precision:?} {kernels:?}: {key} cos ≥ {worst:.5}");
                assert!(
                    worst >= 0.999,
                    "{name} {precision:?} {kernels:?} {key}: {worst}"
                );
            }
        }
    }
}

/// JPEG, GIF, BMP, TIFF and WebP through the exact-size resize: within what decoder
/// differences allow (the PNG pixels above are exact).
#[test]
fn other_formats_stay_close() {
    let s = siglip();
    for name in ["tiny-spm", "tiny-gemma"] {
        let options = LoadOptions {
            decode: DecodeOptions {
                apply_exif_orientation: false,
                ..DecodeOptions::default()
            },
            ..LoadOptions::default()
        };
        let clip = Clip::from_dir(&s.join(name), &options).unwrap();
        let r = common::load_tensors(&s.join(format!("reference/{name}.safetensors")));
        let meta = common::read_json(&s.join(format!("reference/{name}.json")));
        let paths: Vec<PathBuf> = meta["other_images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| common::fixtures().join("images").join(v.as_str().unwrap()))
            .collect();
        assert!(!paths.is_empty());
        let ours = clip.embed_image_files(&paths);
        for ((path, a), b) in paths
            .iter()
            .zip(ours)
            .zip(common::rows(&r["other_image_embeds"]))
        {
            let cos = common::cosine(&a.unwrap(), &b);
            assert!(cos >= 0.999, "{}: cosine {cos}", path.display());
        }
    }
}

/// A checkpoint whose tokenizer class is `Siglip2Tokenizer` lower-cases, as transformers'
/// does; `GemmaTokenizer` (SigLIP 2 FixRes as published) does not.
#[test]
fn siglip2_tokenizer_class_lower_cases_and_gemma_does_not() {
    let src = siglip().join("tiny-gemma");
    let gemma = clipkit_core::tokenizer::siglip::load(&src, 64).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        src.join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let config = std::fs::read_to_string(src.join("tokenizer_config.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&config).unwrap();
    json["tokenizer_class"] = "Siglip2Tokenizer".into();
    std::fs::write(dir.path().join("tokenizer_config.json"), json.to_string()).unwrap();
    let siglip2 = clipkit_core::tokenizer::siglip::load(dir.path(), 64).unwrap();
    let upper = "A PHOTO OF A CAT";
    assert_ne!(
        gemma.encode(upper).unwrap(),
        gemma.encode("a photo of a cat").unwrap()
    );
    assert_eq!(
        siglip2.encode(upper).unwrap(),
        gemma.encode("a photo of a cat").unwrap()
    );
}
