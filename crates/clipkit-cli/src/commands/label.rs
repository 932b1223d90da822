//! `clipkit label`: zero-shot labelling of a whole collection.

use anyhow::{bail, Context, Result};
use clipkit_index::label::{label, LabelOptions, Labelling};
use clipkit_index::parquet_io::{write_table, Column};
use clipkit_index::LabelVector;
use serde_json::json;

use super::collection::{model_for, open_existing};
use super::Outcome;
use crate::cli::{CollectionLabelArgs, Format};
use crate::output::{path_str, print_csv, print_json, print_table};
use crate::settings::Labels;

pub fn run(args: &CollectionLabelArgs) -> Result<Outcome> {
    let labels = Labels::from_args(&args.labels)?;
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
    let result = label(
        &*store,
        &vectors,
        &LabelOptions {
            images_per_label: args.images_per_label,
            labels_per_image: args.labels_per_image,
            scoring: clip.scoring(),
            min_score: args.min_score,
        },
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
