//! The 8-bit crops are bit-identical to transformers' PIL processor and to OpenAI's transform,
//! JPEGs included (they go through libjpeg-turbo, as in PIL). The one exception is a CMYK JPEG
//! on the OpenAI path, which PIL resizes in CMYK before converting to RGB; it is held to a mean
//! bound.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clipkit_image::{DecodeOptions, PreprocessMode, Preprocessor, PreprocessorConfig};

/// The committed fixtures (`fixtures/` at the workspace root), written by
/// `tools/fixtures/make_fixtures.py` from transformers.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The u8 reference crops of a safetensors file, flattened, by tensor name.
fn load_u8_tensors(path: &Path) -> HashMap<String, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let tensors = safetensors::SafeTensors::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::U8, "{name}");
            (name, view.data().to_vec())
        })
        .collect()
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// (max abs difference, mean abs difference) between our crop and the reference.
fn compare(mode: PreprocessMode, key: &str) -> Vec<(String, u8, f64)> {
    let fixtures = fixtures();
    let reference = load_u8_tensors(&fixtures.join("reference/preprocess.safetensors"));
    let meta = read_json(&fixtures.join("reference/preprocess.json"));
    // The references were made from PIL images, which transformers does not EXIF-rotate.
    let decode = DecodeOptions {
        apply_exif_orientation: false,
        ..DecodeOptions::default()
    };
    let pre = Preprocessor::new(PreprocessorConfig::openai(224), mode, decode);
    let mut out = Vec::new();
    for name in meta["files"].as_object().unwrap().keys() {
        let expected = &reference[&format!("{key}/{name}")];
        let decoded = pre
            .decode_file(&fixtures.join("images").join(name))
            .unwrap();
        let got = pre.resize_and_crop(&decoded).into_raw();
        assert_eq!(got.len(), expected.len(), "{name}");
        let diffs: Vec<u8> = got
            .iter()
            .zip(expected)
            .map(|(a, b)| a.abs_diff(*b))
            .collect();
        let max = *diffs.iter().max().unwrap();
        let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
        out.push((name.clone(), max, mean));
    }
    out
}

/// Every file bit-identical except those in `inexact`, which are held to `inexact_mean`.
fn assert_close(results: &[(String, u8, f64)], inexact: &[&str], inexact_mean: f64) {
    let report: Vec<String> = results
        .iter()
        .map(|(n, max, mean)| format!("{n}: max {max}, mean {mean:.4}"))
        .collect();
    for (name, max, mean) in results {
        if !inexact.contains(&name.as_str()) {
            assert_eq!(
                *max,
                0,
                "{name} differs by {max} levels\n{}",
                report.join("\n")
            );
        } else {
            assert!(
                *mean <= inexact_mean,
                "{name} mean diff {mean}\n{}",
                report.join("\n")
            );
        }
    }
    assert!(results.len() >= 15);
    assert!(results.iter().filter(|r| r.0.ends_with(".jpg")).count() >= 4);
    eprintln!("{}", report.join("\n"));
}

#[test]
fn transformers_pil_path_is_bit_identical() {
    assert_close(&compare(PreprocessMode::Transformers, "hf224"), &[], 0.0);
}

#[test]
fn openai_path_is_bit_identical_but_for_cmyk() {
    assert_close(
        &compare(PreprocessMode::OpenAi, "openai224"),
        &["cmyk.jpg"],
        0.5,
    );
}

#[test]
fn exif_orientation_is_applied_by_default() {
    let path = fixtures().join("images/rotated_exif.jpg");
    let pre = |apply| {
        Preprocessor::new(
            PreprocessorConfig::openai(224),
            PreprocessMode::Transformers,
            DecodeOptions {
                apply_exif_orientation: apply,
                ..DecodeOptions::default()
            },
        )
    };
    let raw = pre(false).decode_file(&path).unwrap();
    let rotated = pre(true).decode_file(&path).unwrap();
    assert_ne!(raw.width(), raw.height());
    assert_eq!(
        (raw.width(), raw.height()),
        (rotated.height(), rotated.width())
    );
}
