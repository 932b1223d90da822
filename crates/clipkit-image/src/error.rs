//! The crate's errors. Every one names the file it is about, so a user with a batch of
//! thousands of images can tell which one is broken and why; [`ImageProblem`] alone is the
//! per-file reason, for batch callers that report it and carry on.
//!
//! Messages say what is wrong, never how a particular front end would change a setting: the
//! command line, the server and a library caller each raise a limit differently, so each adds
//! its own hint where it prints the error.

use std::path::PathBuf;

/// Why an image could not be turned into pixels.
#[derive(Debug, thiserror::Error)]
pub enum ImageProblem {
    #[error("file is empty")]
    Empty,
    #[error("not a recognised image format")]
    UnknownFormat,
    #[error("image format {0} is not supported")]
    Unsupported(String),
    #[error("image has zero width or height")]
    ZeroSize,
    #[error(
        "image is {width}x{height} = {pixels} pixels, over the limit of {limit} \
         (possible decompression bomb)"
    )]
    TooManyPixels {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    #[error("corrupt or truncated image data: {0}")]
    Corrupt(String),
    #[error("cannot read file: {0}")]
    Io(#[from] std::io::Error),
}

/// Anything this crate can fail with: an image that did not decode, or a
/// `preprocessor_config.json` that could not be read or holds a value it cannot use.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// `path` is the file, or for bytes the name the caller gave them.
    #[error("{path}: {problem}")]
    Image {
        path: PathBuf,
        problem: ImageProblem,
    },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
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
}

impl ImageError {
    pub(crate) fn image(path: impl Into<PathBuf>, problem: ImageProblem) -> Self {
        Self::Image {
            path: path.into(),
            problem,
        }
    }

    /// The per-file problem, when this error is about an image rather than the config.
    pub fn problem(&self) -> Option<&ImageProblem> {
        match self {
            Self::Image { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;
