//! The zero-shot protocol against CLIP_benchmark's, as computed with transformers by
//! `tools/fixtures/make_eval_fixtures.py`: class embeddings (template averaging included),
//! per-image logits, predictions, top-1/top-5, mean per-class recall, confusion matrix.

use std::path::{Path, PathBuf};

use clipkit_core::image::DecodeOptions;
use clipkit_core::{Clip, LoadOptions};
use clipkit_eval::cache::EmbeddingCache;
use clipkit_eval::{templates, zeroshot, Dataset, EvalOptions, LogitScale};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn reference() -> serde_json::Value {
    let path = fixtures().join("zeroshot/reference-tiny-quickgelu.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn clip() -> Clip {
    let options = LoadOptions {
        decode: DecodeOptions {
            apply_exif_orientation: false,
            ..DecodeOptions::default()
        },
        batch_size: 7,
        ..LoadOptions::default()
    };
    Clip::from_dir(&fixtures().join("models/tiny-quickgelu"), &options).unwrap()
}

fn matrix(v: &serde_json::Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * y).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn datasets_in_all_three_layouts_agree() {
    let r = reference();
    let folder = Dataset::open(&fixtures().join("zeroshot/tiny-imagefolder")).unwrap();
    let classes: Vec<String> = serde_json::from_value(r["classes"].clone()).unwrap();
    assert_eq!(folder.classes, classes);
    let images: Vec<String> = serde_json::from_value(r["images"].clone()).unwrap();
    let labels: Vec<usize> = serde_json::from_value(r["labels"].clone()).unwrap();
    let root = fixtures().join("zeroshot/tiny-imagefolder");
    let expected: Vec<(PathBuf, usize)> = images.iter().map(|p| root.join(p)).zip(labels).collect();
    assert_eq!(folder.items, expected);
    for list in ["zeroshot/tiny.csv", "zeroshot/tiny.jsonl"] {
        let d = Dataset::open(&fixtures().join(list)).unwrap();
        assert_eq!(d.classes, folder.classes, "{list}");
        let canon = |items: &[(PathBuf, usize)]| -> Vec<(PathBuf, usize)> {
            let mut v: Vec<_> = items
                .iter()
                .map(|(p, l)| (p.canonicalize().unwrap(), *l))
                .collect();
            v.sort();
            v
        };
        assert_eq!(canon(&d.items), canon(&folder.items), "{list}");
    }
}

#[test]
fn zero_shot_matches_the_reference_protocol() {
    let r = reference();
    let clip = clip();
    let dataset = Dataset::open(&fixtures().join("zeroshot/tiny-imagefolder")).unwrap();
    let templates = templates::resolve("openai7").unwrap();
    let ref_templates: Vec<String> = serde_json::from_value(r["templates"].clone()).unwrap();
    assert_eq!(templates, ref_templates);

    let classifier = zeroshot::classifier(&clip, &dataset.classes, &templates).unwrap();
    for (ours, theirs) in classifier.iter().zip(matrix(&r["classifier"])) {
        assert!(
            cosine(ours, &theirs) >= 0.99999,
            "class embedding cosine {}",
            cosine(ours, &theirs)
        );
    }

    let cache_dir = tempfile::tempdir().unwrap();
    let options = EvalOptions {
        templates: templates.clone(),
        logit_scale: LogitScale::Fixed(100.0),
        cache: Some(EmbeddingCache::new(cache_dir.path(), &clip).unwrap()),
    };
    let report = clipkit_eval::evaluate(&clip, &dataset, &options, 7, &|_| {}).unwrap();
    assert!(report.failures.is_empty());
    assert_eq!(report.cache_hits, 0);
    let ref_logits = matrix(&r["logits"]);
    assert_eq!(report.logits.len(), ref_logits.len());
    for (ours, theirs) in report.logits.iter().zip(&ref_logits) {
        for (a, b) in ours.iter().zip(theirs) {
            assert!((f64::from(*a) - b).abs() <= 1e-3 * 100.0, "{a} vs {b}");
        }
    }
    let predictions: Vec<usize> = serde_json::from_value(r["predictions"].clone()).unwrap();
    assert_eq!(report.predictions, predictions);
    let m = &report.metrics;
    assert!((m.top1 - r["top1"].as_f64().unwrap()).abs() < 1e-9);
    assert!((m.top5.unwrap() - r["top5"].as_f64().unwrap()).abs() < 1e-9);
    assert!((m.mean_per_class_recall - r["mean_per_class_recall"].as_f64().unwrap()).abs() < 1e-9);
    let per_class: Vec<f64> = serde_json::from_value(r["per_class_accuracy"].clone()).unwrap();
    for (a, b) in m.per_class_accuracy.iter().zip(&per_class) {
        assert!((a.unwrap() - b).abs() < 1e-9);
    }
    let confusion: Vec<Vec<usize>> = serde_json::from_value(r["confusion_matrix"].clone()).unwrap();
    assert_eq!(m.confusion_matrix, confusion);

    // Second run: every image embedding comes from the cache, same numbers.
    let again = clipkit_eval::evaluate(&clip, &dataset, &options, 7, &|_| {}).unwrap();
    assert_eq!(again.cache_hits, dataset.items.len());
    assert_eq!(again.logits, report.logits);

    // The model's own scale changes logits, not predictions.
    let model_scale = EvalOptions {
        logit_scale: LogitScale::Model,
        cache: None,
        ..options
    };
    let scaled = clipkit_eval::evaluate(&clip, &dataset, &model_scale, 7, &|_| {}).unwrap();
    let ref_scaled = matrix(&r["logits_model_scale"]);
    for (ours, theirs) in scaled.logits.iter().zip(&ref_scaled) {
        for (a, b) in ours.iter().zip(theirs) {
            assert!(
                (f64::from(*a) - b).abs() <= 1e-3 * f64::from(clip.logit_scale()),
                "{a} vs {b}"
            );
        }
    }
    assert_eq!(scaled.predictions, report.predictions);
}

#[test]
fn bad_datasets_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = Dataset::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("no class folders"), "{err}");
    std::fs::create_dir(dir.path().join("cat")).unwrap();
    let err = Dataset::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("no images"), "{err}");
    let csv = dir.path().join("list.csv");
    std::fs::write(&csv, "file,class\na.png,cat\n").unwrap();
    let err = Dataset::open(&csv).unwrap_err().to_string();
    assert!(err.contains("list.csv") && err.contains("`path`"), "{err}");
    let jsonl = dir.path().join("list.jsonl");
    std::fs::write(&jsonl, "{\"path\": \"a.png\"}\n").unwrap();
    let err = Dataset::open(&jsonl).unwrap_err().to_string();
    assert!(err.contains("line 1") && err.contains("label"), "{err}");
}

/// The probe beats zero-shot where labels are learnable from embeddings (tinted photos), and
/// matches scikit-learn's LogisticRegression on the same split.
#[test]
fn linear_probe_matches_scikit_learn_and_beats_zero_shot() {
    use clipkit_eval::probe::{few_shot_split, logistic_regression, nearest_class_mean};
    let r = reference();
    let p = &r["probe"];
    let clip = clip();
    let dataset = Dataset::open(&fixtures().join("zeroshot/probe-imagefolder")).unwrap();
    let classes: Vec<String> = serde_json::from_value(p["classes"].clone()).unwrap();
    assert_eq!(dataset.classes, classes);
    let (embedded, _) = zeroshot::embed_dataset(&clip, &dataset, None, 16, &|_| {});
    let x: Vec<Vec<f32>> = embedded.into_iter().map(Result::unwrap).collect();
    let y: Vec<usize> = dataset.items.iter().map(|(_, l)| *l).collect();
    let shots = p["shots"].as_u64().unwrap() as usize;
    let (train, test) = few_shot_split(&y, shots);
    let ref_train: Vec<usize> = serde_json::from_value(p["train"].clone()).unwrap();
    assert_eq!(train, ref_train);
    let pick = |idx: &[usize]| -> (Vec<Vec<f32>>, Vec<usize>) {
        (
            idx.iter().map(|&i| x[i].clone()).collect(),
            idx.iter().map(|&i| y[i]).collect(),
        )
    };
    let (tx, ty) = pick(&train);
    let (ex, ey) = pick(&test);
    let accuracy = |pred: &dyn Fn(&[f32]) -> usize| {
        ex.iter().zip(&ey).filter(|(e, &l)| pred(e) == l).count() as f64 / ex.len() as f64
    };

    let lr = logistic_regression(&tx, &ty, &classes, 1.0, "tiny");
    let predictions: Vec<usize> = ex.iter().map(|e| lr.predict(e)).collect();
    let ref_predictions: Vec<usize> =
        serde_json::from_value(p["logreg_predictions"].clone()).unwrap();
    assert_eq!(predictions, ref_predictions);
    let lr_acc = accuracy(&|e| lr.predict(e));
    assert!((lr_acc - p["logreg_accuracy"].as_f64().unwrap()).abs() < 1e-9);
    // Same convex objective, same optimum: the weights agree with scikit-learn's.
    let coef = matrix(&p["logreg_coef"]);
    for (ours, theirs) in lr.weights.iter().zip(&coef) {
        for (a, b) in ours.iter().zip(theirs) {
            assert!(
                (f64::from(*a) - b).abs() < 2e-3 * (1.0 + b.abs()),
                "{a} vs {b}"
            );
        }
    }

    let ncm = nearest_class_mean(&tx, &ty, &classes, "tiny");
    assert!((accuracy(&|e| ncm.predict(e)) - p["ncm_accuracy"].as_f64().unwrap()).abs() < 1e-9);

    let templates = templates::resolve("openai7").unwrap();
    let classifier = zeroshot::classifier(&clip, &classes, &templates).unwrap();
    let zs_acc = accuracy(&|e| {
        clipkit_eval::metrics::argmax(
            &clipkit_core::scores::logits(&[e.to_vec()], &classifier, 100.0)[0],
        )
    });
    assert!((zs_acc - p["zero_shot_accuracy"].as_f64().unwrap()).abs() < 1e-9);
    assert!(
        lr_acc > zs_acc,
        "probe {lr_acc} should beat zero-shot {zs_acc}"
    );
}
