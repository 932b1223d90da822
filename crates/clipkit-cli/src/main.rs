//! The `clipkit` binary: flags in, results out. The work is in `clipkit-core`.

mod cli;
mod commands;
mod output;
mod settings;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{BenchCommand, Cli, Command, IndexCommand};
use crate::commands::Outcome;

/// Tensor buffers of tens of MB are freed and allocated again at every layer; mimalloc keeps
/// them for reuse where glibc handed the pages back and faulted them in again (~10% of a
/// forward pass, measured with perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its `mimalloc.h` enum; the Rust bindings do not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// By default mimalloc hands freed memory back to the OS after 10 ms, and a forward pass frees
/// and reallocates its layer outputs more slowly than that: every batch then faulted fresh
/// (zeroed) huge pages in again, 8–14% of an int8 pass in perf on a Xeon. Never purging keeps
/// the pages of the previous batch for the next; peak RSS is the same, since the high-water
/// mark is reached in the first batch anyway.
fn keep_freed_memory() {
    // SAFETY: mimalloc reads its options at any time; -1 means "never purge".
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Classify(args) => commands::classify::run(args),
        Command::Embed(args) => commands::embed::run(args),
        Command::Similarity(args) => commands::similarity::run(args),
        Command::Plot(args) => commands::plot::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Probe(args) => commands::probe::run(args),
        Command::Bench(args) => match &args.command {
            Some(BenchCommand::Store(store)) => commands::bench_store::run(store),
            None => commands::bench::run(args),
        },
        Command::Models(args) => commands::models::run(args),
        Command::Index(IndexCommand::Add(args)) => commands::index::add(args),
        Command::Index(IndexCommand::Status(args)) => commands::index::status(args),
        Command::Search(args) => commands::search::run(args),
        Command::Label(args) => commands::label::run(args),
        Command::Cluster(args) => commands::cluster::run(args),
        Command::Dedup(args) => commands::dedup::run(args),
        Command::Export(args) => commands::export::export(args),
        Command::Import(args) => commands::export::import(args),
        Command::Serve(args) => commands::serve::run(args),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::SomeFailed) => ExitCode::from(1),
        // A reader that stops early (`clipkit … | head`) is not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}{}", output::hint(&*e));
            if let Some(hint) = flag_hint(&e) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(2)
        }
    }
}

/// The flag that fixes a library error, where there is one: the libraries describe the
/// problem, only the front end knows its own flags.
fn flag_hint(e: &anyhow::Error) -> Option<&'static str> {
    use clipkit_core::ClipError;
    e.chain()
        .find_map(|cause| match cause.downcast_ref::<ClipError>()? {
            ClipError::Hub { .. } => Some(
                "pass --model /path/to/the/checkpoint/directory (or a hub id that is in the \
                 local Hugging Face cache)",
            ),
            ClipError::Unsupported(why) if why.contains("precision") => {
                Some("pick another --precision (f32 runs everywhere)")
            }
            _ => None,
        })
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}
