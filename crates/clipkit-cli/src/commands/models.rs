//! `clipkit models`: the checkpoints clipkit knows (`clipkit_core::zoo`), with the published
//! accuracy, its source, and the speed `clipkit bench` last measured on this CPU.

use anyhow::Result;
use clipkit_core::zoo::{self, measured, Languages, Listing};
use serde_json::{json, Value};

use super::Outcome;
use crate::cli::{Format, ModelsArgs};
use crate::output::{print_csv, print_json, print_table};

/// What a row shows where there is nothing to show.
const NONE: &str = "—";

pub fn run(args: &ModelsArgs) -> Result<Outcome> {
    let cpu = measured::cpu_name();
    let path = measured::default_path();
    let records = measured::read(&path)?;
    let rows: Vec<Listing> = zoo::listing(&records, &cpu)
        .into_iter()
        .filter(|row| !args.multilingual || languages(row) == Some(Languages::Multilingual))
        .collect();
    match args.print.format {
        Format::Json => print_json(&json!({
            "cpu": cpu,
            "bench_results": path.to_string_lossy(),
            "models": rows.iter().map(row_json).collect::<Vec<_>>(),
        }))?,
        Format::Csv => {
            let header = [
                "id",
                "family",
                "image_size",
                "embedding_dim",
                "imagenet_top1",
                "imagenet_source",
                "params_millions",
                "languages",
                "images_per_sec",
                "precision",
                "batch",
                "measured_at",
            ];
            let rows: Vec<Vec<String>> = rows.iter().map(csv_row).collect();
            print_csv(&header, &rows)?;
        }
        Format::Table => {
            let header = [
                "model",
                "family",
                "image",
                "dim",
                "ImageNet",
                "source",
                "params",
                "languages",
                "images/s here",
            ];
            let table: Vec<Vec<String>> = rows.iter().map(table_row).collect();
            print_table(&header, &table);
            println!();
            println!("CPU: {cpu}");
            if rows.iter().any(|r| r.measured.is_none()) {
                println!(
                    "{NONE} under images/s: not measured on this CPU yet; \
                     run `clipkit bench --model ID` to fill it in"
                );
            }
        }
    }
    Ok(Outcome::Success)
}

fn family(row: &Listing) -> Option<String> {
    match row.known {
        Some(m) => Some(m.architecture.name().to_owned()),
        None => row.measured.and_then(|r| r.family.clone()),
    }
}

fn languages(row: &Listing) -> Option<Languages> {
    row.known.map(|m| m.languages)
}

fn image_size(row: &Listing) -> Option<usize> {
    match row.known {
        Some(m) => Some(m.image_size as usize),
        None => row.measured.and_then(|r| r.image_size),
    }
}

fn embedding_dim(row: &Listing) -> Option<usize> {
    match row.known {
        Some(m) => Some(m.embedding_dim as usize),
        None => row.measured.and_then(|r| r.embedding_dim),
    }
}

fn row_json(row: &Listing) -> Value {
    let known = row.known;
    json!({
        "id": row.id,
        "known": known.is_some(),
        "family": family(row),
        "image_size": image_size(row),
        "embedding_dim": embedding_dim(row),
        "imagenet_top1": known.and_then(|m| m.imagenet).map(|z| z.top1),
        "imagenet_source": known.and_then(|m| m.imagenet).map(|z| z.source.cite()),
        "params_millions": known.and_then(|m| m.params_m),
        "languages": languages(row).map(Languages::name),
        "measured": row.measured.map(|r| json!({
            "images_per_sec": r.images_per_sec,
            "precision": r.precision,
            "batch": r.batch,
            "threads": r.threads,
            "date": r.date,
        })),
    })
}

fn csv_row(row: &Listing) -> Vec<String> {
    let opt = |v: Option<String>| v.unwrap_or_default();
    let zero_shot = row.known.and_then(|m| m.imagenet);
    let m = row.measured;
    vec![
        row.id.to_owned(),
        opt(family(row)),
        opt(image_size(row).map(|s| s.to_string())),
        opt(embedding_dim(row).map(|d| d.to_string())),
        opt(zero_shot.map(|z| z.top1.to_string())),
        opt(zero_shot.map(|z| z.source.cite().to_owned())),
        opt(row.known.and_then(|k| k.params_m).map(|p| p.to_string())),
        opt(languages(row).map(|l| l.name().to_owned())),
        opt(m.map(|r| r.images_per_sec.to_string())),
        opt(m.map(|r| r.precision.clone())),
        opt(m.map(|r| r.batch.to_string())),
        opt(m.map(|r| r.date.clone())),
    ]
}

fn table_row(row: &Listing) -> Vec<String> {
    let or_none = |v: Option<String>| v.unwrap_or_else(|| NONE.to_owned());
    let zero_shot = row.known.and_then(|m| m.imagenet);
    vec![
        row.id.to_owned(),
        or_none(family(row)),
        or_none(image_size(row).map(|s| s.to_string())),
        or_none(embedding_dim(row).map(|d| d.to_string())),
        or_none(zero_shot.map(|z| format!("{:.1}%", z.top1))),
        or_none(zero_shot.map(|z| z.source.cite().to_owned())),
        or_none(row.known.and_then(|k| k.params_m).map(params)),
        or_none(languages(row).map(|l| l.name().to_owned())),
        or_none(row.measured.map(|r| {
            let precision = if r.precision == "f32" {
                String::new()
            } else {
                format!(" {}", r.precision)
            };
            format!("{:.1}{precision}", r.images_per_sec)
        })),
    ]
}

/// Millions of parameters as people read them: `151M`, `1.1B`.
fn params(millions: f32) -> String {
    if millions >= 1000.0 {
        format!("{:.1}B", millions / 1000.0)
    } else {
        format!("{millions:.0}M")
    }
}
