//! What wraps every request: metrics by route, admission (429 before the body is read when
//! too many requests are in flight), the request deadline, and a last line of defence that
//! gives any error response without a JSON body the standard error shape.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// Counts the request and its latency under its route template (`/v1/thumbnails/{id}`, not
/// each id), or `unmatched` for 404s.
pub async fn track(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    state.metrics.record_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// For the API routes: refuse oversized declared bodies and excess concurrent requests at
/// once, then run the handler under the request timeout.
pub async fn admit(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let limits = &state.config.limits;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.body_bytes as u64) {
        return ApiError::PayloadTooLarge(format!(
            "the request body is {} bytes; the limit is {}",
            declared.unwrap_or_default(),
            limits.body_bytes
        ))
        .into_response();
    }
    let Ok(_slot) = state.request_slots.clone().try_acquire_owned() else {
        return ApiError::Overloaded {
            retry_after_s: state.batcher.retry_after_s(),
        }
        .into_response();
    };
    match tokio::time::timeout(limits.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limits.request_timeout).into_response(),
    }
}

/// Error responses produced outside the handlers (the router's own, a layer's) get the
/// standard JSON shape too.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::NotFound(or(text, "no such route")),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(or(text, "body too large")),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::UnsupportedMediaType(or(text, "unsupported content type"))
        }
        s if s.is_server_error() => ApiError::Internal(or(text, "internal error")),
        _ => ApiError::Invalid {
            param: None,
            message: or(text, "bad request"),
        },
    };
    let mut fixed = error.into_response();
    *fixed.status_mut() = status;
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fixed.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fixed
}

fn or(text: String, fallback: &str) -> String {
    if text.trim().is_empty() {
        fallback.to_owned()
    } else {
        text
    }
}

pub async fn not_found(req: Request<Body>) -> ApiError {
    ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

pub async fn method_not_allowed() -> Response {
    let mut r = ApiError::MethodNotAllowed.into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
