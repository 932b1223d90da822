//! The `clipkit` binary: flags in, results out. The work is in `clipkit-core`.

mod cli;
mod commands;
mod output;
mod settings;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::commands::Outcome;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Classify(args) => commands::classify::run(args),
        Command::Embed(args) => commands::embed::run(args),
        Command::Similarity(args) => commands::similarity::run(args),
        Command::Plot(args) => commands::plot::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Probe(args) => commands::probe::run(args),
        Command::Bench(args) => commands::bench::run(args),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::SomeFailed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
