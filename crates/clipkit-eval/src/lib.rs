//! Zero-shot evaluation of CLIP checkpoints, following CLIP_benchmark's protocol so numbers
//! are comparable with published ones: class names and prompt templates in, one classifier
//! vector per class (each template embedded and normalised, averaged, renormalised), logits
//! `100 · cos`, then top-1/top-5, mean per-class recall and the confusion matrix.

pub mod cache;
pub mod dataset;
pub mod metrics;
pub mod probe;
pub mod templates;
pub mod zeroshot;

pub use dataset::Dataset;
pub use metrics::Metrics;
pub use zeroshot::{evaluate, EvalOptions, EvalReport, LogitScale};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: {problem}")]
    Dataset {
        path: std::path::PathBuf,
        problem: String,
    },
    #[error(transparent)]
    Clip(#[from] clipkit_core::ClipError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;

impl EvalError {
    pub(crate) fn dataset(path: &std::path::Path, problem: impl Into<String>) -> Self {
        Self::Dataset {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }
}
