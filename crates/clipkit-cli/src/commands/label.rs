//! `clipkit label`: zero-shot labelling of a whole collection.

use anyhow::{bail, Context, Result};
use clipkit_index::label::{label_with_progress, LabelOptions, LabelProgress, Labelling, Stage};
use clipkit_index::parquet_io::{write_table, Column};
use clipkit_index::LabelVector;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::collection::{model_for, open_existing};
use super::Outcome;
use crate::cli::{CollectionLabelArgs, Format};
use crate::output::{path_str, print_csv, print_json, print_table};
use crate::settings::{filter, Labels};

/// One progress bar per stage, with its rate and ETA (hidden with --quiet or when stderr is
/// not a terminal).
struct Bar {
    quiet: bool,
    bar: std::sync::Mutex<ProgressBar>,
}

impl LabelProgress for Bar {
    fn start(&self, stage: Stage, total: u64) {
        if self.quiet {
            return;
        }
        let (what, unit) = match stage {
            Stage::LabelsToImages => ("best images per label", "labels"),
            Stage::ImagesToLabels => ("best labels per image", "images"),
        };
        let bar = ProgressBar::new(total).with_style(
            ProgressStyle::with_template(&format!(
                "{what}: [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit}  {{per_sec}}  ETA {{eta}}"
            ))
            .expect("valid template"),
        );
        *self.bar.lock().unwrap_or_else(|p| p.into_inner()) = bar;
    }
    fn advance(&self, done: u64) {
        self.bar.lock().unwrap_or_else(|p| p.into_inner()).inc(done);
    }
    fn finish(&self, _stage: Stage) {
        self.bar
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .finish_and_clear();
    }
}

pub fn run(args: &CollectionLabelArgs) -> Result<Outcome> {
    let labels = Labels::from_args(&args.labels)?;
    let filter = filter(&args.filter)?;
    let mut store = open_existing(&args.store)?;
    let clip = model_for(&*store, &args.model)?;
    let vectors: Vec<LabelVector> = labels
        .labels
        .iter()
        .zip(labels.embed(&clip)?)
        .map(|(l, v)| LabelVector {
            label: l.clone(),
            vector: v,
        })
        .collect();
    store.put_labels(&args.set, &vectors)?;
    let progress = Bar {
        quiet: args.quiet,
        bar: std::sync::Mutex::new(ProgressBar::hidden()),
    };
    let result = label_with_progress(
        &*store,
        &vectors,
        &LabelOptions {
            images_per_label: args.images_per_label,
            labels_per_image: args.labels_per_image,
            scoring: clip.scoring(),
            min_score: args.min_score,
            filter,
        },
        &progress,
    )?;
    if let Some(path) = &args.output {
        write_output(path, &result)?;
        eprintln!(
            "wrote {} image rows and {} label rows to {}",
            result.per_image.len(),
            result.per_label.len(),
            path.display()
        );
        return Ok(Outcome::Success);
    }
    match args.print.format {
        Format::Json => print_json(&serde_json::to_value(&result)?)?,
        Format::Table | Format::Csv => {
            let (header, rows) = pair_rows(&result);
            if args.print.format == Format::Csv {
                print_csv(&header, &rows)?;
            } else {
                print_table(&header, &rows);
            }
        }
    }
    Ok(Outcome::Success)
}

/// One row per (image, label) pair from both directions, marked by which one found it; an
/// image → label row with a probability names the function that produced it.
fn pair_rows(result: &Labelling) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let mut rows = Vec::new();
    for l in &result.per_label {
        for (rank, h) in l.images.iter().enumerate() {
            rows.push(vec![
                "label→image".into(),
                l.label.clone(),
                (rank + 1).to_string(),
                format!("{:.4}", h.score),
                String::new(),
                path_str(&h.path),
                String::new(),
            ]);
        }
    }
    for i in &result.per_image {
        for (rank, l) in i.labels.iter().enumerate() {
            rows.push(vec![
                "image→label".into(),
                l.label.clone(),
                (rank + 1).to_string(),
                format!("{:.4}", l.score),
                l.prob.map(|p| format!("{p:.4}")).unwrap_or_default(),
                path_str(&i.path),
                l.prob
                    .map(|_| result.probability.to_owned())
                    .unwrap_or_default(),
            ]);
        }
    }
    (
        vec![
            "direction",
            "label",
            "rank",
            "score",
            "prob",
            "path",
            "probability",
        ],
        rows,
    )
}

fn write_output(path: &std::path::Path, result: &Labelling) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let context = || format!("{}: cannot write", path.display());
    match ext {
        "json" => std::fs::write(path, serde_json::to_string_pretty(&json!(result))?)
            .with_context(context),
        "csv" => {
            let (header, rows) = pair_rows(result);
            let mut w = csv::Writer::from_path(path).with_context(context)?;
            w.write_record(&header)?;
            for r in rows {
                w.write_record(&r)?;
            }
            w.flush().with_context(context)
        }
        "parquet" => {
            let (_, rows) = pair_rows(result);
            let col = |i: usize| rows.iter().map(|r| r[i].clone()).collect::<Vec<String>>();
            write_table(
                path,
                &[
                    Column::Str("direction".into(), col(0)),
                    Column::Str("label".into(), col(1)),
                    Column::I64(
                        "rank".into(),
                        rows.iter().map(|r| r[2].parse().unwrap_or(0)).collect(),
                    ),
                    Column::F32(
                        "score".into(),
                        rows.iter()
                            .map(|r| r[3].parse().unwrap_or(f32::NAN))
                            .collect(),
                    ),
                    Column::F32(
                        "prob".into(),
                        rows.iter()
                            .map(|r| r[4].parse().unwrap_or(f32::NAN))
                            .collect(),
                    ),
                    Column::Str("image_path".into(), col(5)),
                    Column::Str("probability".into(), col(6)),
                ],
            )?;
            Ok(())
        }
        _ => bail!(
            "{}: --output must end in .csv, .json or .parquet",
            path.display()
        ),
    }
}
