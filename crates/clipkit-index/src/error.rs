//! Typed errors for collections: each names the store or file it is about.

use std::path::PathBuf;

pub type Result<T, E = IndexError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("store {store}: {message}")]
    Sqlite { store: PathBuf, message: String },

    #[error("store {store}: ANN index: {message}")]
    Ann { store: String, message: String },

    /// Kept in builds without the `milvus` feature, so that enabling the feature (which
    /// another crate in the same build may do) never breaks an exhaustive `match`.
    /// `transient`: the server could not be reached (down, unreachable, timed out), so the same
    /// request may well succeed later; otherwise the server answered and refused.
    #[error("store {uri}: {message}")]
    Milvus {
        uri: String,
        message: String,
        transient: bool,
    },

    /// The store's backend was left out of this build.
    #[error("store {store}: this build has no support for it (compile clipkit-index with its `{feature}` cargo feature)")]
    FeatureNotEnabled {
        store: String,
        feature: &'static str,
    },

    #[error("store {store}: vectors have {got} dimensions, the collection holds {expected}")]
    WrongVectorDimension {
        store: String,
        expected: usize,
        got: usize,
    },

    #[error("store {store}: path {} is {len} bytes once encoded, more than the {max} the store holds", path.display())]
    PathTooLong {
        store: String,
        path: PathBuf,
        len: usize,
        max: usize,
    },

    #[error("store {store} was built with model `{stored}`, not `{requested}`")]
    ModelMismatch {
        store: String,
        stored: String,
        requested: String,
    },

    #[error("store {store} does not exist yet (run `clipkit index add PATH` first)")]
    NotFound { store: String },

    #[error("invalid store address `{address}`: {problem}")]
    BadAddress { address: String, problem: String },

    #[error("{path}: {problem}")]
    BadFile { path: PathBuf, problem: String },

    #[error("the query is empty: give at least one positive text or image")]
    EmptyQuery,

    #[error("no labels given: labelling needs at least one label")]
    EmptyLabels,

    #[error("the store {store} is empty: nothing to {action}")]
    EmptyStore { store: String, action: String },

    #[error(transparent)]
    Clip(#[from] clipkit_core::ClipError),
}

impl IndexError {
    /// Whether the store's backend is down or unreachable rather than refusing the request:
    /// retrying later may succeed, so a server answers 503 with `Retry-After`, not 500.
    pub fn is_transient(&self) -> bool {
        match self {
            IndexError::Milvus { transient, .. } => *transient,
            _ => false,
        }
    }
}
