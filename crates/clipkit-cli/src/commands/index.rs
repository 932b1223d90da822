//! `clipkit index add` and `clipkit index status`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use clipkit_index::indexer::{self, Indexer, Progress, WalkOptions};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::collection::{open_existing, open_for};
use super::Outcome;
use crate::cli::{Format, IndexAddArgs, IndexStatusArgs};
use crate::output::{path_str, print_csv, print_json, print_table};
use crate::settings::load_model;

struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, files: usize) {
        self.0.set_length(files as u64);
    }
    fn advance(&self, files: usize) {
        self.0.inc(files as u64);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

pub fn add(args: &IndexAddArgs) -> Result<Outcome> {
    let clip = load_model(&args.model)?;
    let mut store = open_for(&args.store, &clip)?;
    let roots = indexer::canonical_roots(&args.paths)?;

    // Ctrl-C finishes the batch in flight, commits it and stops; a second one kills.
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        let _ = ctrlc::set_handler(move || {
            if cancel.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\ninterrupted: finishing the current batch (Ctrl-C again to kill)");
        });
    }
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} images  {per_sec}  ETA {eta}",
            )
            .expect("valid template"),
        );
        bar
    };
    let progress = Bar(bar);
    let mut indexer = Indexer {
        store: &mut *store,
        embedder: &clip,
        batch_size: args.commit_every,
        walk: WalkOptions {
            exclude: args.exclude.clone(),
            hidden: args.hidden,
        },
        cancel: Some(&cancel),
        progress: &progress,
    };
    let report = indexer.run_shard(&roots, args.shard.unwrap_or_default())?;
    for f in &report.failed {
        eprintln!("warning: {}: {}", f.path, f.error);
    }
    if report.interrupted {
        eprintln!("stopped early; run the same command again to resume");
    }
    let counts = [
        ("scanned", report.scanned),
        ("unchanged", report.unchanged),
        ("embedded", report.embedded),
        ("touched", report.touched),
        ("moved", report.moved),
        ("copied", report.copied),
        ("removed", report.removed),
        ("failed", report.failed.len()),
        ("total", report.total),
    ];
    match args.print.format {
        Format::Json => print_json(&json!({
            "store": store.address(),
            "model": store.info().model,
            "shard": args.shard.map(|s| s.to_string()),
            "report": report,
        }))?,
        Format::Table | Format::Csv => {
            let rows: Vec<Vec<String>> = counts
                .iter()
                .map(|(k, v)| vec![k.to_string(), v.to_string()])
                .collect();
            if args.print.format == Format::Csv {
                print_csv(&["what", "files"], &rows)?;
            } else {
                print_table(&["what", "files"], &rows);
            }
        }
    }
    if report.interrupted {
        return Ok(Outcome::SomeFailed);
    }
    Ok(Outcome::from_failures(report.failed.len()))
}

pub fn status(args: &IndexStatusArgs) -> Result<Outcome> {
    let store = open_existing(&args.store)?;
    let roots = if args.paths.is_empty() {
        store.roots()?
    } else {
        indexer::canonical_roots(&args.paths)?
    };
    let diff = indexer::diff(
        &*store,
        &roots,
        &WalkOptions {
            exclude: args.exclude.clone(),
            hidden: args.hidden,
        },
    )?;
    let info = store.info();
    let indexed = store.len()?;
    let stale = diff.new.len() + diff.changed.len() + diff.missing.len();
    match args.print.format {
        Format::Json => print_json(&json!({
            "store": store.address(),
            "model": info.model,
            "dim": info.dim,
            "preprocess": info.preprocess,
            "roots": roots.iter().map(|r| path_str(r)).collect::<Vec<_>>(),
            "indexed": indexed,
            "unchanged": diff.unchanged,
            "new": diff.new.iter().map(|f| path_str(&f.path)).collect::<Vec<_>>(),
            "changed": diff.changed.iter().map(|f| path_str(&f.path)).collect::<Vec<_>>(),
            "missing": diff.missing.iter().map(|f| path_str(&f.path)).collect::<Vec<_>>(),
            "unreadable": diff.unreadable.iter().map(|(p, e)| json!({"path": path_str(p), "error": e})).collect::<Vec<_>>(),
            "up_to_date": stale == 0,
        }))?,
        Format::Table | Format::Csv => {
            let mut rows = vec![
                vec!["store".into(), store.address()],
                vec![
                    "model".into(),
                    format!("{} ({}, {} dims)", info.model, info.preprocess, info.dim),
                ],
                vec!["indexed".into(), indexed.to_string()],
                vec!["unchanged".into(), diff.unchanged.to_string()],
                vec!["new".into(), diff.new.len().to_string()],
                vec!["changed".into(), diff.changed.len().to_string()],
                vec!["missing".into(), diff.missing.len().to_string()],
                vec!["unreadable".into(), diff.unreadable.len().to_string()],
            ];
            for r in &roots {
                rows.push(vec!["root".into(), path_str(r)]);
            }
            if args.verbose {
                rows.extend(
                    diff.new
                        .iter()
                        .map(|f| vec!["new".into(), path_str(&f.path)]),
                );
                rows.extend(
                    diff.changed
                        .iter()
                        .map(|f| vec!["changed".into(), path_str(&f.path)]),
                );
                rows.extend(
                    diff.missing
                        .iter()
                        .map(|f| vec!["missing".into(), path_str(&f.path)]),
                );
            }
            if args.print.format == Format::Csv {
                print_csv(&["what", "value"], &rows)?;
            } else {
                print_table(&["what", "value"], &rows);
                if stale > 0 {
                    println!(
                        "\n{stale} stale: run `clipkit index add` on the same folders to update"
                    );
                }
            }
        }
    }
    Ok(Outcome::Success)
}
