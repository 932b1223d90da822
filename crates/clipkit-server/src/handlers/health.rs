//! Operational endpoints: `/healthz` (does the model really run?), `/readyz` (should a load
//! balancer send traffic?), `/metrics`, `/openapi.json`, and what is being served.

use std::time::Duration;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::Shared;
use crate::batcher::{Input, LastBatch};
use crate::error::{store_error, ApiError, ErrorBody};
use crate::state::AppState;

/// A batch that went through the model this recently proves the pipeline works; otherwise
/// `/healthz` sends a probe of its own.
const RECENT: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    /// `ok`.
    pub status: String,
    pub model: String,
    /// `recent_batch` (real traffic succeeded in the last 10 s) or `probe` (a text and an
    /// image were just embedded and checked).
    pub checked: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyResponse {
    /// `ready`.
    pub status: String,
}

/// Runs a text and an image through the real batcher and model, and checks what comes out:
/// the right size, finite, unit length.
pub async fn probe(state: &AppState) -> Result<(), ApiError> {
    let (h, w) = state.clip.preprocessor().output_size();
    let grey = image::RgbImage::from_pixel(w, h, image::Rgb([128, 128, 128]));
    let pixels = state.clip.preprocessor().normalize(&grey);
    let mut ticket = state.batcher.admit(2)?;
    let results = state
        .batcher
        .embed(
            &mut ticket,
            vec![
                Input::Text("a photo of a cat".into()),
                Input::Pixels(pixels),
            ],
        )
        .await;
    let dim = state.clip.embedding_dim();
    for (what, result) in ["text", "image"].iter().zip(results) {
        let v = result.map_err(|e| ApiError::Unhealthy(format!("{what} probe: {e}")))?;
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if v.len() != dim || !norm.is_finite() || (norm - 1.0).abs() >= 1e-3 {
            return Err(ApiError::Unhealthy(format!(
                "{what} probe: got a {}-d vector of norm {norm}, expected {dim}-d unit length",
                v.len()
            )));
        }
    }
    Ok(())
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "The model runs and gives sane vectors", body = HealthResponse),
        (status = 503, description = "It does not (the message says how)", body = ErrorBody),
    )
)]
pub async fn healthz(state: Shared) -> Result<Json<HealthResponse>, ApiError> {
    if !state.batcher.worker_alive() {
        return Err(ApiError::Unhealthy(
            "the model worker is not running".into(),
        ));
    }
    let healthy = |checked: &str| {
        Json(HealthResponse {
            status: "ok".into(),
            model: state.config.served_model_name.clone(),
            checked: checked.into(),
        })
    };
    let last = state.batcher.last_batches();
    let recent_ok = |b: &Option<LastBatch>| {
        b.as_ref()
            .is_some_and(|b| b.outcome.is_ok() && b.at.elapsed() < RECENT)
    };
    if recent_ok(&last.images) && recent_ok(&last.texts) {
        return Ok(healthy("recent_batch"));
    }
    match probe(&state).await {
        Ok(()) => Ok(healthy("probe")),
        // Full of work: the towers' latest batches say whether that work succeeds.
        Err(ApiError::Overloaded { .. }) => {
            let last = state.batcher.last_batches();
            match [last.images, last.texts] {
                [Some(i), Some(t)] if i.outcome.is_ok() && t.outcome.is_ok() => {
                    Ok(healthy("recent_batch"))
                }
                [i, t] => Err(ApiError::Unhealthy(
                    [i, t]
                        .into_iter()
                        .flatten()
                        .find_map(|b| b.outcome.err())
                        .unwrap_or_else(|| "overloaded before the model ran".into()),
                )),
            }
        }
        Err(e @ ApiError::Unhealthy(_)) => Err(e),
        Err(other) => Err(ApiError::Unhealthy(other.to_string())),
    }
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Warmed up and taking traffic", body = ReadyResponse),
        (status = 503, description = "Warming up, failed its warm-up, or draining", body = ErrorBody),
    )
)]
pub async fn readyz(state: Shared) -> Result<Json<ReadyResponse>, ApiError> {
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(ApiError::ShuttingDown);
    }
    if !state.is_ready() {
        return Err(ApiError::NotReady(
            "the model has not passed its warm-up probe".into(),
        ));
    }
    Ok(Json(ReadyResponse {
        status: "ready".into(),
    }))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
pub async fn metrics(state: Shared) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(state.gauges()),
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This API's OpenAPI 3.1 description", content_type = "application/json"))
)]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::ApiDoc::openapi())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InfoResponse {
    pub model: String,
    /// Embedding size.
    pub dim: usize,
    /// The model family (`CLIP`, `SigLIP`, `open_clip`, …).
    pub family: String,
    pub logit_scale: f32,
    /// The checkpoint's `logit_bias` (SigLIP); absent for CLIP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<f32>,
    /// How classify and similarity turn logits into probabilities: `softmax` or `sigmoid`.
    pub probability: String,
    pub image_size: usize,
    /// Longest text in tokens (longer ones are truncated).
    pub context_length: usize,
    pub store: Option<StoreInfo>,
    pub limits: LimitsInfo,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StoreInfo {
    pub address: String,
    pub images: usize,
    /// The model the collection's vectors came from.
    pub model: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LimitsInfo {
    pub body_bytes: usize,
    pub max_pixels: u64,
    pub max_inputs: usize,
    pub request_timeout_s: f64,
    pub max_batch: usize,
    pub max_wait_ms: f64,
    pub queue_capacity: usize,
}

#[utoipa::path(
    get,
    path = "/v1/info",
    tag = "operations",
    responses(
        (status = 200, description = "The model, the collection and the limits", body = InfoResponse),
        (status = 500, description = "The store failed", body = ErrorBody),
        (status = 503, description = "The store's backend is down (see Retry-After)", body = ErrorBody),
    )
)]
pub async fn info(state: Shared) -> Result<Json<InfoResponse>, ApiError> {
    let store = match &state.store {
        Some(s) => {
            let handle = s.store.clone();
            let images = tokio::task::spawn_blocking(move || handle.len())
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .map_err(|e| store_error("the collection failed", &e))?;
            Some(StoreInfo {
                address: s.store.address(),
                images,
                model: s.store.info().model.clone(),
            })
        }
        None => None,
    };
    let c = &state.config;
    Ok(Json(InfoResponse {
        model: c.served_model_name.clone(),
        dim: state.clip.embedding_dim(),
        family: state.clip.family().name().to_owned(),
        logit_scale: state.clip.logit_scale(),
        logit_bias: state.clip.scoring().logit_bias(),
        probability: state.clip.scoring().probability_name().to_owned(),
        image_size: state.clip.image_size(),
        context_length: state.clip.tokenizer().context_length(),
        store,
        limits: LimitsInfo {
            body_bytes: c.limits.body_bytes,
            max_pixels: c.limits.max_pixels,
            max_inputs: c.limits.max_inputs,
            request_timeout_s: c.limits.request_timeout.as_secs_f64(),
            max_batch: c.batch.max_batch,
            max_wait_ms: c.batch.max_wait.as_secs_f64() * 1e3,
            queue_capacity: c.batch.queue_capacity,
        },
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// `list`.
    pub object: String,
    pub data: Vec<ModelObject>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelObject {
    pub id: String,
    /// `model`.
    pub object: String,
    pub created: u64,
    pub owned_by: String,
}

#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "embeddings",
    responses((status = 200, description = "The one model served (OpenAI's list format)", body = ModelList))
)]
pub async fn models(state: Shared) -> Json<ModelList> {
    Json(ModelList {
        object: "list".into(),
        data: vec![ModelObject {
            id: state.config.served_model_name.clone(),
            object: "model".into(),
            created: 0,
            owned_by: "clipkit".into(),
        }],
    })
}
