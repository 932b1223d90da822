//! `clipkit search`: text and image queries, combined with `+`/`-`, over a collection.

use anyhow::{Context, Result};
use clipkit_index::search::{parse_terms, query, Sign};
use serde_json::json;

use super::collection::{model_for, open_existing};
use super::Outcome;
use crate::cli::{Format, SearchArgs};
use crate::output::{path_str, print_csv, print_json, print_table};
use crate::settings::warn_truncated;

pub fn run(args: &SearchArgs) -> Result<Outcome> {
    let mut terms = parse_terms(&args.query);
    terms.extend(args.not.iter().map(|t| (Sign::Minus, t.clone())));
    if terms.is_empty() && args.image.is_empty() {
        anyhow::bail!(clipkit_index::IndexError::EmptyQuery);
    }
    let store = open_existing(&args.store)?;
    let clip = model_for(&*store, &args.model)?;

    let mut parts: Vec<(Sign, Vec<f32>)> = Vec::new();
    if !terms.is_empty() {
        let texts: Vec<&str> = terms.iter().map(|(_, t)| t.as_str()).collect();
        warn_truncated(&clip, texts.iter().copied())?;
        for ((sign, _), v) in terms.iter().zip(clip.embed_texts(&texts)?) {
            parts.push((*sign, v));
        }
    }
    let images: Vec<(Sign, &std::path::PathBuf)> = args
        .image
        .iter()
        .map(|p| (Sign::Plus, p))
        .chain(args.not_image.iter().map(|p| (Sign::Minus, p)))
        .collect();
    let paths: Vec<std::path::PathBuf> = images.iter().map(|(_, p)| (*p).clone()).collect();
    for ((sign, path), v) in images.iter().zip(clip.embed_image_files(&paths)) {
        let v = v.with_context(|| format!("query image {}", path.display()))?;
        parts.push((*sign, v));
    }
    let hits = query(
        &*store,
        &parts,
        args.top_k,
        args.threshold,
        &clipkit_index::Filter::default(),
    )?;

    match args.print.format {
        Format::Json => print_json(&json!({
            "query": terms.iter().map(|(s, t)| json!({"text": t, "sign": if *s == Sign::Plus {"+"} else {"-"}})).collect::<Vec<_>>(),
            "images": args.image.iter().map(|p| path_str(p)).collect::<Vec<_>>(),
            "not_images": args.not_image.iter().map(|p| path_str(p)).collect::<Vec<_>>(),
            "results": hits.iter().enumerate().map(|(i, h)| json!({"rank": i + 1, "score": h.score, "path": path_str(&h.path)})).collect::<Vec<_>>(),
        }))?,
        Format::Table | Format::Csv => {
            let rows: Vec<Vec<String>> = hits
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    vec![
                        (i + 1).to_string(),
                        format!("{:.4}", h.score),
                        path_str(&h.path),
                    ]
                })
                .collect();
            if args.print.format == Format::Csv {
                print_csv(&["rank", "score", "path"], &rows)?;
            } else {
                print_table(&["rank", "score", "path"], &rows);
            }
        }
    }
    Ok(Outcome::Success)
}
