//! One module per subcommand; each returns whether every input succeeded.

pub mod bench;
pub mod bench_store;
pub mod classify;
pub mod cluster;
pub mod collection;
pub mod dedup;
pub mod embed;
pub mod eval;
pub mod export;
pub mod index;
pub mod label;
pub mod models;
pub mod plot;
pub mod probe;
pub mod search;
pub mod serve;
pub mod similarity;

/// How a command ended when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Some inputs could not be processed; the rest were, and were printed.
    SomeFailed,
}

impl Outcome {
    pub fn from_failures(failures: usize) -> Self {
        if failures == 0 {
            Outcome::Success
        } else {
            Outcome::SomeFailed
        }
    }
}

use std::path::PathBuf;

use clipkit_core::Clip;

/// Embeds image files, reporting each failure on stderr; returns the successes in order and
/// the number of failures.
pub fn embed_images(clip: &Clip, paths: &[PathBuf]) -> (Vec<(PathBuf, Vec<f32>)>, usize) {
    let mut ok = Vec::new();
    let mut failures = 0;
    for (path, result) in paths.iter().zip(clip.embed_image_files(paths)) {
        match result {
            Ok(embedding) => ok.push((path.clone(), embedding)),
            Err(e) => {
                failures += 1;
                crate::output::report_failure(&e);
            }
        }
    }
    (ok, failures)
}
