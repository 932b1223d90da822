//! `clipkit dedup`: near-duplicate groups, with the collection's own calibration.

use anyhow::Result;
use clipkit_index::dedup::{dedup, DedupOptions, Threshold};

use super::collection::open_existing;
use super::Outcome;
use crate::cli::{DedupArgs, Format};
use crate::output::{path_str, print_csv, print_json, print_table};

pub fn run(args: &DedupArgs) -> Result<Outcome> {
    let threshold = args.threshold;
    let store = open_existing(&args.store)?;
    let result = dedup(
        &*store,
        &DedupOptions {
            threshold,
            neighbours: args.neighbours,
        },
    )?;
    if args.print.format == Format::Json {
        print_json(&serde_json::to_value(&result)?)?;
        return Ok(Outcome::Success);
    }
    let mut rows = Vec::new();
    for (g, group) in result.groups.iter().enumerate() {
        for (i, m) in group.members.iter().enumerate() {
            rows.push(vec![
                (g + 1).to_string(),
                if i == 0 { "keep" } else { "duplicate" }.to_string(),
                format!("{:.4}", group.min_score),
                path_str(m),
            ]);
        }
    }
    let header = ["group", "role", "min_score", "path"];
    if args.print.format == Format::Csv {
        print_csv(&header, &rows)?;
    } else {
        let pct: Vec<String> = result
            .calibration
            .percentiles
            .iter()
            .map(|(n, v)| format!("{n} {v:.3}"))
            .collect();
        println!(
            "nearest-neighbour cosine: {}; threshold {:.3}{}",
            pct.join(", "),
            result.threshold,
            if threshold == Threshold::Auto {
                " (auto)"
            } else {
                ""
            }
        );
        println!("{} groups\n", result.groups.len());
        print_table(&header, &rows);
    }
    Ok(Outcome::Success)
}
