//! One error type for the whole engine. Every variant that comes from a file names it, so a
//! user with a batch of thousands of inputs can tell which one is broken and why.

use std::path::PathBuf;

pub use clipkit_image::{ImageError, ImageProblem};

pub type Result<T, E = ClipError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{dir}: missing {file} ({hint})")]
    MissingFile {
        dir: PathBuf,
        file: String,
        hint: String,
    },

    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("{path}: field `{field}`: {problem}")]
    Config {
        path: PathBuf,
        field: String,
        problem: String,
    },

    #[error("{path}: cannot read safetensors: {message}")]
    Safetensors { path: PathBuf, message: String },

    #[error("{dir}: tensor `{name}` is missing from the checkpoint")]
    MissingTensor { dir: PathBuf, name: String },

    #[error("{dir}: tensor `{name}` has shape {got:?}, the config expects {expected:?}")]
    WrongShape {
        dir: PathBuf,
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },

    #[error("{dir}: tensor `{name}` has dtype {dtype}, expected a floating-point type")]
    UnsupportedDtype {
        dir: PathBuf,
        name: String,
        dtype: String,
    },

    #[error(
        "{path}: model_type `{model_type}` is not a model family clipkit knows (expected one of: \
         {expected})"
    )]
    UnknownFamily {
        path: PathBuf,
        model_type: String,
        expected: &'static str,
    },

    #[error("{dir}: a {family} checkpoint, a family this version of clipkit cannot load yet")]
    UnsupportedFamily { dir: PathBuf, family: String },

    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },

    /// An image that did not decode, or a `preprocessor_config.json` that is wrong; the
    /// message names the file either way.
    #[error(transparent)]
    Image(#[from] ImageError),

    #[error("no labels given: zero-shot classification needs at least one label")]
    EmptyLabels,

    #[error("template `{template}` has no `{{}}` or `{{c}}` placeholder for the label")]
    BadTemplate { template: String },

    #[error("model `{model}`: {message}")]
    Hub { model: String, message: String },

    #[error("vector has {got} dimensions, expected {expected}")]
    WrongVectorDimension { expected: usize, got: usize },

    #[error("not supported here: {0}")]
    Unsupported(String),

    /// A value the caller passed that cannot be used (an unknown device name, an input of the
    /// wrong shape): the caller's mistake, not the model's or the machine's.
    #[error("invalid {what} `{value}`: {problem}")]
    InvalidArgument {
        what: &'static str,
        value: String,
        problem: String,
    },

    /// A batch of images failed as a whole (the model, not one file), so every image in it
    /// carries this error; `error` is what the batch failed with, shared by all of them.
    #[error("the batch of {images} images this one was in failed: {error}")]
    BatchFailed {
        images: usize,
        error: std::sync::Arc<ClipError>,
    },

    /// Only a `cuda` build can hit this; it is the first thing a machine without a usable GPU
    /// (no driver, no device, a driver older than the CUDA 13 the build links) runs into.
    #[error(
        "cannot open CUDA device {ordinal}: {message} (the CUDA build needs an NVIDIA GPU with a \
         driver for CUDA 13, and CUDA 13's cudart, cuBLAS and cuRAND on the library path)"
    )]
    CudaDevice { ordinal: usize, message: String },

    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl ClipError {
    /// Why an image failed, when that is what this error is: for callers that report a
    /// per-file problem, or add their own hint to one (how to raise the pixel limit).
    pub fn image_problem(&self) -> Option<&ImageProblem> {
        match self {
            Self::Image(e) => e.problem(),
            _ => None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        Self::Config {
            path: path.into(),
            field: field.into(),
            problem: problem.into(),
        }
    }
}
