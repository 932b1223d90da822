//! `clipkit export` and `clipkit import`.

use anyhow::Result;
use clipkit_index::export::{export as write, import as read, ExportFormat, ExportOptions};

use super::collection::{open_existing, open_for};
use super::Outcome;
use crate::cli::{ExportArgs, ExportFormatArg, ImportArgs};
use crate::settings::load_model;

pub fn export(args: &ExportArgs) -> Result<Outcome> {
    let store = open_existing(&args.store)?;
    let rows = write(
        &*store,
        &args.out,
        &ExportOptions {
            format: match args.format {
                ExportFormatArg::Npy => ExportFormat::Npy,
                ExportFormatArg::Parquet => ExportFormat::Parquet,
            },
            shard_size: args.shard_size,
            half: args.half,
        },
    )?;
    eprintln!("exported {rows} embeddings to {}", args.out.display());
    Ok(Outcome::Success)
}

pub fn import(args: &ImportArgs) -> Result<Outcome> {
    let clip = load_model(&args.model)?;
    let mut store = open_for(&args.store, &clip)?;
    let rows = read(&mut *store, &args.dir)?;
    eprintln!(
        "imported {rows} embeddings into {} ({} in total)",
        store.address(),
        store.len()?
    );
    Ok(Outcome::Success)
}
