//! One module per endpoint group; each holds its request/response types (which the OpenAPI
//! spec is generated from) next to the handler that uses them.

pub mod classify;
pub mod embeddings;
pub mod health;
pub mod search;
pub mod similarity;
pub mod web;

use std::sync::Arc;

use crate::state::AppState;

/// The state every handler extracts.
pub type Shared = axum::extract::State<Arc<AppState>>;
