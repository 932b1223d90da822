//! `clipkit cluster`: k-means over a collection, with names and contact sheets.

use std::path::Path;

use anyhow::{Context, Result};
use clipkit_core::Clip;
use clipkit_index::cluster::{cluster, ClusterOptions, Clustering};
use clipkit_index::LabelVector;
use image::{imageops, RgbImage};

use super::collection::{model_for, open_existing};
use super::Outcome;
use crate::cli::{ClusterArgs, Format};
use crate::output::{path_str, print_csv, print_json, print_table};
use crate::settings::Labels;

const THUMB: u32 = 160;
const SHEET_COLUMNS: u32 = 6;
const SHEET_MAX: usize = 36;

pub fn run(args: &ClusterArgs) -> Result<Outcome> {
    let store = open_existing(&args.store)?;
    let wants_labels = !args.labels.labels.is_empty() || args.labels.labels_file.is_some();
    let clip = if wants_labels || args.contact_sheets.is_some() {
        Some(model_for(&*store, &args.model)?)
    } else {
        None
    };
    let labels: Option<Vec<LabelVector>> = match (&clip, wants_labels) {
        (Some(clip), true) => {
            let labels = Labels::from_args(&args.labels)?;
            Some(
                labels
                    .labels
                    .iter()
                    .zip(labels.embed(clip)?)
                    .map(|(l, v)| LabelVector {
                        label: l.clone(),
                        vector: v,
                    })
                    .collect(),
            )
        }
        _ => None,
    };
    let result = cluster(
        &*store,
        &ClusterOptions {
            k: args.k,
            max_k: args.max_k,
            seed: args.seed,
            representatives: args.representatives,
            ..ClusterOptions::default()
        },
        labels.as_deref(),
    )?;
    let mut failures = 0;
    if let (Some(dir), Some(clip)) = (&args.contact_sheets, &clip) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        for c in &result.clusters {
            let out = dir.join(format!("cluster_{:03}.png", c.id));
            failures += contact_sheet(
                clip,
                c.members.iter().map(|m| m.path.as_path()).take(SHEET_MAX),
                &out,
            )?;
        }
        eprintln!(
            "wrote {} contact sheets to {}",
            result.clusters.len(),
            dir.display()
        );
    }
    print(&result, args.print.format)?;
    Ok(Outcome::from_failures(failures))
}

fn print(result: &Clustering, format: Format) -> Result<()> {
    if format == Format::Json {
        return print_json(&serde_json::to_value(result)?);
    }
    let rows: Vec<Vec<String>> = result
        .clusters
        .iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                c.size.to_string(),
                format!("{:.3}", c.cohesion),
                c.names
                    .iter()
                    .map(|n| n.label.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
                c.representatives
                    .iter()
                    .map(|h| path_str(&h.path))
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        })
        .collect();
    let header = ["cluster", "size", "cohesion", "names", "representatives"];
    if format == Format::Csv {
        print_csv(&header, &rows)
    } else {
        if result.chosen_automatically {
            println!(
                "k = {} (best silhouette of k = 2..{})",
                result.k,
                result.silhouettes.last().map_or(2, |s| s.0)
            );
        }
        print_table(&header, &rows);
        Ok(())
    }
}

/// A grid of thumbnails (what the model sees: the centre crop) of the given images;
/// returns how many could not be read (left blank).
fn contact_sheet<'a>(
    clip: &Clip,
    paths: impl Iterator<Item = &'a Path>,
    out: &Path,
) -> Result<usize> {
    let paths: Vec<&Path> = paths.collect();
    let rows = (paths.len() as u32).div_ceil(SHEET_COLUMNS).max(1);
    let columns = SHEET_COLUMNS.min(paths.len() as u32).max(1);
    let mut sheet =
        RgbImage::from_pixel(columns * THUMB, rows * THUMB, image::Rgb([255, 255, 255]));
    let pre = clip.preprocessor();
    let mut failures = 0;
    for (i, p) in paths.iter().enumerate() {
        match pre.decode_file(p) {
            Ok(decoded) => {
                let crop = pre.resize_and_crop(&decoded);
                let thumb =
                    imageops::resize(&crop, THUMB - 4, THUMB - 4, imageops::FilterType::Triangle);
                let (x, y) = (
                    (i as u32 % SHEET_COLUMNS) * THUMB + 2,
                    (i as u32 / SHEET_COLUMNS) * THUMB + 2,
                );
                imageops::overlay(&mut sheet, &thumb, x as i64, y as i64);
            }
            Err(e) => {
                eprintln!("warning: {e}{}", crate::output::hint(&e));
                failures += 1;
            }
        }
    }
    sheet
        .save(out)
        .with_context(|| format!("{}: cannot write", out.display()))?;
    Ok(failures)
}
