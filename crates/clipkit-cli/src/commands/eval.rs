use anyhow::{bail, Context, Result};
use clipkit_eval::cache::EmbeddingCache;
use clipkit_eval::{templates, Dataset, EvalOptions};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::Outcome;
use crate::cli::{EvalArgs, Format};
use crate::output::{path_str, print_csv, print_json, print_table};
use crate::settings::load_model;

pub fn run(args: &EvalArgs) -> Result<Outcome> {
    let mut dataset = Dataset::open(&args.dataset)?;
    if let Some(file) = &args.classnames {
        dataset.rename_classes(file)?;
    }
    if args.imagenet_classnames {
        let names = templates::imagenet_classnames();
        if names.len() != dataset.classes.len() {
            bail!(
                "{}: {} classes, but ImageNet-1k has {}",
                args.dataset.display(),
                dataset.classes.len(),
                names.len()
            );
        }
        dataset.classes = names;
    }
    let templates = templates::resolve(&args.templates)?;
    let logit_scale = args.logit_scale;
    let clip = load_model(&args.model)?;
    let cache = if args.no_cache {
        None
    } else {
        let root = args
            .cache_dir
            .clone()
            .unwrap_or_else(EmbeddingCache::default_root);
        Some(EmbeddingCache::new(&root, &clip)?)
    };
    let bar = ProgressBar::new(dataset.items.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} images  {per_sec}  eta {eta}")
            .expect("valid template"),
    );
    let options = EvalOptions {
        templates,
        logit_scale,
        cache,
    };
    let report =
        clipkit_eval::evaluate(&clip, &dataset, &options, args.model.batch_size, &|done| {
            bar.set_position(done as u64)
        })?;
    bar.finish_and_clear();
    for (path, e) in &report.failures {
        eprintln!("error: {e} (skipped: {})", path.display());
    }
    if let Some(dir) = &args.plot {
        write_plots(&clip, &report, dir)?;
    }
    let m = &report.metrics;
    match args.print.format {
        Format::Json => {
            let mut value = json!({
                "dataset": path_str(&dataset.source),
                "model": clip.name(),
                "task": "zeroshot_classification",
                "metrics": {
                    "acc1": m.top1,
                    "acc5": m.top5,
                    "mean_per_class_recall": m.mean_per_class_recall,
                },
                "classes": report.classes,
                "per_class_accuracy": m.per_class_accuracy,
                "confusion_matrix": m.confusion_matrix,
                "templates": report.templates,
                "logit_scale": report.logit_scale,
                "logit_bias": report.logit_bias,
                "probability": report.probability,
                "images": report.images.len(),
                "failed_images": report.failures.iter().map(|(p, e)| json!({"path": path_str(p), "error": e})).collect::<Vec<_>>(),
                "cache_hits": report.cache_hits,
            });
            if args.per_image {
                value["predictions"] = json!(report
                    .images
                    .iter()
                    .zip(&report.labels)
                    .zip(report.predictions.iter().zip(&report.logits))
                    .map(|((p, l), (pred, logits))| json!({
                        "path": path_str(p), "label": l, "prediction": pred, "logits": logits,
                    }))
                    .collect::<Vec<_>>());
            }
            print_json(&value)?;
        }
        Format::Csv => print_csv(&["measure", "class", "value"], &csv_rows(&report))?,
        Format::Table => {
            let bias = report
                .logit_bias
                .map_or_else(String::new, |b| format!(", logit bias {b}"));
            println!(
                "{} images, {} classes, {} templates, logit scale {}{bias} ({} scoring)",
                report.images.len(),
                report.classes.len(),
                report.templates.len(),
                report.logit_scale,
                report.probability
            );
            println!("top-1 accuracy          {:.2}%", m.top1 * 100.0);
            if let Some(t5) = m.top5 {
                println!("top-5 accuracy          {:.2}%", t5 * 100.0);
            }
            println!(
                "mean per-class recall   {:.2}%",
                m.mean_per_class_recall * 100.0
            );
            println!();
            let rows: Vec<Vec<String>> = report
                .classes
                .iter()
                .zip(&m.per_class_accuracy)
                .zip(&m.confusion_matrix)
                .map(|((c, acc), row)| {
                    vec![
                        c.clone(),
                        row.iter().sum::<usize>().to_string(),
                        acc.map_or("-".into(), |a| format!("{:.1}%", a * 100.0)),
                    ]
                })
                .collect();
            print_table(&["class", "images", "accuracy"], &rows);
        }
    }
    Ok(Outcome::from_failures(report.failures.len()))
}

/// The result as one long table (measure, class, value), numbers at full precision: the
/// run's totals and metrics with an empty class, then each class's image count and accuracy
/// (empty for a class without test images).
fn csv_rows(report: &clipkit_eval::EvalReport) -> Vec<Vec<String>> {
    let m = &report.metrics;
    let total = |measure: &str, value: String| vec![measure.to_owned(), String::new(), value];
    let mut rows = vec![
        total("images", report.images.len().to_string()),
        total("failed_images", report.failures.len().to_string()),
        total("classes", report.classes.len().to_string()),
        total("templates", report.templates.len().to_string()),
        total("logit_scale", report.logit_scale.to_string()),
        total(
            "logit_bias",
            report
                .logit_bias
                .map_or_else(String::new, |b| b.to_string()),
        ),
        total("probability", report.probability.to_owned()),
        total("acc1", m.top1.to_string()),
        total("acc5", m.top5.map_or_else(String::new, |t5| t5.to_string())),
        total("mean_per_class_recall", m.mean_per_class_recall.to_string()),
    ];
    for ((class, accuracy), row) in report
        .classes
        .iter()
        .zip(&m.per_class_accuracy)
        .zip(&m.confusion_matrix)
    {
        let images = row.iter().sum::<usize>().to_string();
        rows.push(vec!["images".into(), class.clone(), images]);
        let accuracy = accuracy.map_or_else(String::new, |a| a.to_string());
        rows.push(vec!["accuracy".into(), class.clone(), accuracy]);
    }
    rows
}

/// The three charts that explain a result; the gallery shows the most confident mistakes.
fn write_plots(
    clip: &clipkit_core::Clip,
    report: &clipkit_eval::EvalReport,
    dir: &std::path::Path,
) -> Result<()> {
    use clipkit_plot::eval_charts::{self, Mistake};
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let m = &report.metrics;
    eval_charts::confusion_matrix(
        &report.classes,
        &m.confusion_matrix,
        &dir.join("confusion.png"),
    )?;
    eval_charts::per_class_accuracy(
        &report.classes,
        &m.per_class_accuracy,
        40,
        &dir.join("per_class.png"),
    )?;
    let mut wrong: Vec<(usize, f32, Vec<f32>)> = report
        .logits
        .iter()
        .enumerate()
        .filter(|(i, _)| report.predictions[*i] != report.labels[*i])
        .map(|(i, logits)| {
            let probs = report.scoring.probabilities(logits);
            (i, probs[report.predictions[i]], probs)
        })
        .collect();
    wrong.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut mistakes = Vec::new();
    for (i, _, probs) in wrong.into_iter().take(12) {
        let decoded = clip.preprocessor().decode_file(&report.images[i])?;
        let image = match decoded.pixels {
            clipkit_core::image::Pixels::Rgb(rgb) => rgb,
            clipkit_core::image::Pixels::Rgba(rgba) => {
                clipkit_core::image::pil::composite_on_white(&rgba)
            }
        };
        let top = clipkit_core::scores::top_k(&probs, 3)
            .into_iter()
            .map(|j| (report.classes[j].clone(), probs[j]))
            .collect();
        mistakes.push(Mistake {
            image,
            caption: report.images[i]
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            truth: report.classes[report.labels[i]].clone(),
            top,
        });
    }
    if !mistakes.is_empty() {
        eval_charts::mistakes_gallery(&mistakes, report.probability, &dir.join("mistakes.png"))?;
    }
    eprintln!("wrote charts to {}", dir.display());
    Ok(())
}
