//! clipkit-server: CLIP over HTTP.
//!
//! A [`Server`] holds a loaded [`Clip`] (and optionally a collection) behind a dynamic
//! [`batcher`], and serves:
//! - `POST /v1/embeddings` (OpenAI's API; images with `"modality": "image"`, as infinity does),
//!   `POST /v1/classify`, `POST /v1/similarity`, `GET`/`POST /v1/search` and thumbnails,
//! - `/healthz`, `/readyz`, `/metrics` (Prometheus) and `/openapi.json` (generated from the
//!   code by utoipa),
//! - a web page at `/` for searching and classifying by hand.
//!
//! Requests flow: [`middleware`] (metrics, admission, deadline) → [`extract`] (JSON or
//! multipart, errors in one shape) → a [`handlers`] module → [`state::AppState`] (text cache,
//! image decoding on the blocking pool) → [`batcher`] (one model thread) → back through a
//! oneshot per item.

pub mod batcher;
pub mod config;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod images;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod state;
pub mod thumbnails;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use clipkit_core::Clip;
use clipkit_index::Store;

pub use crate::config::{BatchConfig, Limits, ServerConfig};
pub use crate::error::ApiError;
use crate::handlers::{classify, embeddings, health, search, similarity, web};
use crate::metrics::Metrics;
use crate::state::AppState;

/// Why a server could not be set up or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid server settings: {0}")]
    Config(String),
    #[error("the store {store} holds {expected}-d vectors but the model gives {got}-d embeddings")]
    WrongDimension {
        store: String,
        expected: usize,
        got: usize,
    },
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// A model (and optional collection) ready to serve.
#[derive(Debug, Clone)]
pub struct Server {
    state: Arc<AppState>,
}

impl Server {
    /// Starts the model worker; nothing listens until [`Server::serve`].
    pub fn new(
        clip: Clip,
        store: Option<Box<dyn Store>>,
        config: ServerConfig,
    ) -> Result<Self, ServeError> {
        config.validate().map_err(ServeError::Config)?;
        if let Some(s) = &store {
            if s.info().dim != clip.embedding_dim() {
                return Err(ServeError::WrongDimension {
                    store: s.address(),
                    expected: s.info().dim,
                    got: clip.embedding_dim(),
                });
            }
        }
        let clip = Arc::new(clip);
        let metrics = Arc::new(Metrics::default());
        let batcher = batcher::Batcher::start(clip.clone(), config.batch, metrics.clone());
        let store: Option<Arc<dyn Store>> = store.map(Arc::from);
        Ok(Self {
            state: Arc::new(AppState::new(clip, store, config, batcher, metrics)),
        })
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Every route, with its middleware.
    pub fn router(&self) -> Router {
        let state = self.state.clone();
        let api = Router::new()
            .route("/v1/embeddings", post(embeddings::embeddings))
            .route("/v1/classify", post(classify::classify))
            .route("/v1/similarity", post(similarity::similarity))
            .route(
                "/v1/search",
                get(search::search_text).post(search::search_image),
            )
            .route("/v1/thumbnails/{id}", get(search::thumbnail))
            .route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                middleware::admit,
            ));
        Router::new()
            .merge(api)
            .route("/v1/models", get(health::models))
            .route("/v1/info", get(health::info))
            .route("/healthz", get(health::healthz))
            .route("/readyz", get(health::readyz))
            .route("/metrics", get(health::metrics))
            .route("/openapi.json", get(health::openapi))
            .route("/", get(web::index))
            .route("/assets/app.js", get(web::app_js))
            .route("/assets/app.css", get(web::app_css))
            .fallback(middleware::not_found)
            .method_not_allowed_fallback(middleware::method_not_allowed)
            .layer(DefaultBodyLimit::max(state.config.limits.body_bytes))
            .layer(axum::middleware::from_fn(middleware::json_errors))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                middleware::track,
            ))
            .with_state(state)
    }

    /// Serves on `listener` until `shutdown` resolves, then drains: no new connections,
    /// requests in flight finish, the batcher answers what it holds, the worker stops.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let state = self.state.clone();
        tokio::spawn(warm_up(state.clone()));
        let draining = state.clone();
        axum::serve(listener, self.router())
            .with_graceful_shutdown(async move {
                shutdown.await;
                draining.draining.store(true, Ordering::Relaxed);
            })
            .await?;
        let stopping = state.clone();
        let _ = tokio::task::spawn_blocking(move || stopping.batcher.shutdown()).await;
        Ok(())
    }
}

/// Readiness waits for one successful probe, so the first real request does not pay for
/// lazy initialisation and a model that cannot run is never reported ready.
async fn warm_up(state: Arc<AppState>) {
    match health::probe(&state).await {
        Ok(()) => state.ready.store(true, Ordering::Relaxed),
        Err(e) => eprintln!("warning: the model failed its warm-up probe: {e}"),
    }
}

/// Resolves on Ctrl-C or SIGTERM: what `clipkit serve` drains on.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
