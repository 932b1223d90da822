use anyhow::{bail, Result};
use clipkit_eval::cache::EmbeddingCache;
use clipkit_eval::probe::{self, few_shot_split};
use clipkit_eval::{templates, zeroshot, Dataset};
use serde_json::json;

use super::Outcome;
use crate::cli::{Format, ProbeArgs, ProbeMethod};
use crate::output::{print_csv, print_json};
use crate::settings::load_model;

pub fn run(args: &ProbeArgs) -> Result<Outcome> {
    let dataset = Dataset::open(&args.dataset)?;
    let templates = templates::resolve(&args.templates)?;
    let clip = load_model(&args.model)?;
    let root = args
        .cache_dir
        .clone()
        .unwrap_or_else(EmbeddingCache::default_root);
    let cache = EmbeddingCache::new(&root, &clip)?;
    let (embedded, _) = zeroshot::embed_dataset(
        &clip,
        &dataset,
        Some(&cache),
        args.model.batch_size,
        &|_| {},
    );

    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut failures = 0;
    for ((path, label), e) in dataset.items.iter().zip(embedded) {
        match e {
            Ok(e) => {
                x.push(e);
                y.push(*label);
            }
            Err(e) => {
                failures += 1;
                eprintln!("error: {e} (skipped: {})", path.display());
            }
        }
    }
    let (train, test) = few_shot_split(&y, args.shots);
    if test.is_empty() {
        bail!("no images left to test with {} shots per class", args.shots);
    }
    let pick = |idx: &[usize]| -> (Vec<Vec<f32>>, Vec<usize>) {
        (
            idx.iter().map(|&i| x[i].clone()).collect(),
            idx.iter().map(|&i| y[i]).collect(),
        )
    };
    let (train_x, train_y) = pick(&train);
    let (test_x, test_y) = pick(&test);
    let fitted = match args.method {
        ProbeMethod::Logreg => {
            probe::logistic_regression(&train_x, &train_y, &dataset.classes, args.c, clip.name())
        }
        ProbeMethod::Ncm => {
            probe::nearest_class_mean(&train_x, &train_y, &dataset.classes, clip.name())
        }
    };
    let accuracy = |pred: &dyn Fn(&[f32]) -> usize| {
        test_x
            .iter()
            .zip(&test_y)
            .filter(|(e, &l)| pred(e) == l)
            .count() as f64
            / test_x.len() as f64
    };
    let probe_acc = accuracy(&|e| fitted.predict(e));
    let classifier = zeroshot::classifier(&clip, &dataset.classes, &templates)?;
    // The family's own head (CLIP's softmax, SigLIP's sigmoid with its bias) picks the class.
    let head = clip.scoring();
    let zero_shot_acc = accuracy(&|e| {
        clipkit_core::scoring::classify(&[e.to_vec()], &classifier, &head, Some(1))[0][0].label
    });
    if let Some(out) = &args.output {
        fitted.save(out)?;
        eprintln!("wrote {}", out.display());
    }
    match args.print.format {
        Format::Json => print_json(&json!({
            "method": format!("{:?}", fitted.kind),
            "shots": args.shots,
            "train_images": train_x.len(),
            "test_images": test_x.len(),
            "probe_accuracy": probe_acc,
            "zero_shot_accuracy": zero_shot_acc,
            "zero_shot_probability": head.probability_name(),
        }))?,
        Format::Csv => print_csv(
            &["measure", "value"],
            &[
                vec!["method".into(), format!("{:?}", fitted.kind)],
                vec!["shots".into(), args.shots.to_string()],
                vec!["classes".into(), dataset.classes.len().to_string()],
                vec!["train_images".into(), train_x.len().to_string()],
                vec!["test_images".into(), test_x.len().to_string()],
                vec!["probe_accuracy".into(), probe_acc.to_string()],
                vec!["zero_shot_accuracy".into(), zero_shot_acc.to_string()],
                vec![
                    "zero_shot_probability".into(),
                    head.probability_name().into(),
                ],
            ],
        )?,
        Format::Table => {
            println!(
                "{} shots per class: {} train, {} test images, {} classes",
                args.shots,
                train_x.len(),
                test_x.len(),
                dataset.classes.len()
            );
            println!("probe accuracy       {:.2}%", probe_acc * 100.0);
            println!(
                "zero-shot accuracy   {:.2}%  ({} scoring)",
                zero_shot_acc * 100.0,
                head.probability_name()
            );
        }
    }
    Ok(Outcome::from_failures(failures))
}
