//! `clipkit bench store`: the embedded store's benchmark (clipkit_index::bench), printed.

use anyhow::Result;
use clipkit_index::bench::{self, BenchOptions};
use clipkit_index::embedded::GraphParams;

use super::Outcome;
use crate::cli::{BenchStoreArgs, Format, GraphScalarArg};
use crate::output::{print_csv, print_json, print_table};

/// The flags as the library's options: unset graph flags keep the store's own defaults.
fn options(args: &BenchStoreArgs) -> BenchOptions {
    let defaults = GraphParams::default();
    BenchOptions {
        vectors: args.vectors,
        dim: args.dim,
        queries: args.queries,
        labels: args.labels,
        filter_selectivity: args.filter_selectivity,
        npy: args.npy.clone(),
        dir: args.dir.clone().unwrap_or_else(std::env::temp_dir),
        graph: GraphParams {
            connectivity: args.connectivity.unwrap_or(defaults.connectivity),
            expansion_add: args.expansion_add.unwrap_or(defaults.expansion_add),
            expansion_search: args.expansion_search.unwrap_or(defaults.expansion_search),
            i8: args
                .graph_scalar
                .map_or(defaults.i8, |s| s == GraphScalarArg::I8),
            rescore_factor: args.rescore_factor.unwrap_or(defaults.rescore_factor),
        },
        ..BenchOptions::default()
    }
}

pub fn run(args: &BenchStoreArgs) -> Result<Outcome> {
    if let Some(n) = args.threads {
        // Read by rayon when its pool starts, which is after this.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    let report = bench::run(&options(args), &mut |line| eprintln!("bench store: {line}"))?;
    let value = serde_json::to_value(&report)?;
    if args.print.format == Format::Json {
        print_json(&value)?;
        return Ok(Outcome::Success);
    }
    // Table and CSV: the JSON document's keys, one measure per row (CSV at full precision).
    let table = args.print.format == Format::Table;
    let rows: Vec<Vec<String>> = value
        .as_object()
        .map(|fields| {
            fields
                .iter()
                .map(|(key, v)| {
                    let shown = match v {
                        serde_json::Value::Null => String::new(),
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Number(n) => match n.as_f64() {
                            Some(f) if table && n.is_f64() => format!("{f:.4}"),
                            _ => n.to_string(),
                        },
                        other => other.to_string(),
                    };
                    vec![key.clone(), shown]
                })
                .collect()
        })
        .unwrap_or_default();
    match args.print.format {
        Format::Csv => print_csv(&["measure", "value"], &rows)?,
        _ => print_table(&["measure", "value"], &rows),
    }
    Ok(Outcome::Success)
}
