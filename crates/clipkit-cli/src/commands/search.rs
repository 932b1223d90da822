//! `clipkit search`: text and image queries, combined with `+`/`-`, over a collection.

use anyhow::{Context, Result};
use clipkit_index::search::{parse_terms, query, Sign};
use serde_json::json;

use super::collection::{model_for, open_existing};
use super::Outcome;
use crate::cli::{Format, SearchArgs};
use crate::output::{path_str, print_csv, print_json, print_table};
use crate::settings::{filter, warn_truncated};

pub fn run(args: &SearchArgs) -> Result<Outcome> {
    let mut terms = parse_terms(&args.query);
    terms.extend(args.not.iter().map(|t| (Sign::Minus, t.clone())));
    if terms.is_empty() && args.image.is_empty() {
        anyhow::bail!(clipkit_index::IndexError::EmptyQuery);
    }
    let filter = filter(&args.filter)?;
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
    let hits = query(&*store, &parts, args.top_k, args.threshold, &filter)?;

    match args.print.format {
        Format::Json => print_json(&json!({
            "query": terms.iter().map(|(s, t)| json!({"text": t, "sign": if *s == Sign::Plus {"+"} else {"-"}})).collect::<Vec<_>>(),
            "images": args.image.iter().map(|p| path_str(p)).collect::<Vec<_>>(),
            "not_images": args.not_image.iter().map(|p| path_str(p)).collect::<Vec<_>>(),
            "filter": filter_json(&filter),
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

/// The filter as JSON: only the restrictions given, dates both as seconds (the store's clock)
/// and as written (`2023-06-01T00:00:00`), folders as strings.
pub fn filter_json(filter: &clipkit_index::Filter) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    let date = |t: i64| json!({"seconds": t, "date": clipkit_index::filter_text::naive_date(t)});
    if let Some(t) = filter.after {
        out.insert("after".into(), date(t));
    }
    if let Some(t) = filter.before {
        out.insert("before".into(), date(t));
    }
    if !filter.folders.is_empty() {
        out.insert(
            "in".into(),
            json!(filter
                .folders
                .iter()
                .map(|f| path_str(f))
                .collect::<Vec<_>>()),
        );
    }
    if let Some(n) = &filter.near {
        out.insert(
            "near".into(),
            json!({"latitude": n.latitude, "longitude": n.longitude, "radius_m": n.radius_m}),
        );
    }
    if let Some(c) = &filter.camera {
        out.insert("camera".into(), json!(c));
    }
    if !filter.file_types.is_empty() {
        out.insert("type".into(), json!(filter.file_types));
    }
    if let Some(s) = filter.min_size {
        out.insert("min_size".into(), json!(s));
    }
    if let Some(s) = filter.max_size {
        out.insert("max_size".into(), json!(s));
    }
    serde_json::Value::Object(out)
}
