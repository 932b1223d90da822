//! Every failure a client can see, and the one JSON shape it is reported in:
//! `{"error":{"code":"…","type":"…","message":"…"}}`.
//!
//! `code` is stable and meant for programs (it never changes wording); `type` follows
//! OpenAI's split into `invalid_request_error` and `server_error` so OpenAI client libraries
//! show it sensibly; `message` is for people and may change. `param` and `index` point at the
//! offending field or input when there is one.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use clipkit_core::image::{ImageError, ImageProblem};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed JSON: {0}")]
    InvalidJson(String),
    #[error("malformed multipart body: {0}")]
    InvalidMultipart(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{got} inputs in one request; the limit is {limit}")]
    TooManyInputs { got: usize, limit: usize },
    #[error("{message}")]
    Invalid {
        param: Option<String>,
        message: String,
    },
    #[error("no labels given: zero-shot classification needs at least one label")]
    EmptyLabels,
    #[error("{0}")]
    BadTemplate(String),
    #[error("input {index}: {message}")]
    BadImage { index: usize, message: String },
    #[error("input {index}: {message}")]
    ImageTooLarge { index: usize, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("model `{requested}` is not served here (this server serves `{served}`)")]
    ModelNotFound { requested: String, served: String },
    #[error("no collection is attached to this server")]
    NoStore,
    #[error("the server is at capacity; retry in {retry_after_s} s")]
    Overloaded { retry_after_s: u64 },
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The collection's backend is down or unreachable: worth retrying later, unlike a
    /// collection that answered with an error.
    #[error("the collection is unavailable, retry in {retry_after_s} s: {message}")]
    StoreUnavailable { message: String, retry_after_s: u64 },
    #[error("unhealthy: {0}")]
    Unhealthy(String),
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("the request took longer than {0:?}")]
    Timeout(std::time::Duration),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            param: Some(param.into()),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            InvalidJson(_) | InvalidMultipart(_) => StatusCode::BAD_REQUEST,
            UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PayloadTooLarge(_) | TooManyInputs { .. } | ImageTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Invalid { .. } | EmptyLabels | BadTemplate(_) | BadImage { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            NotFound(_) | ModelNotFound { .. } | NoStore => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ShuttingDown | StoreUnavailable { .. } | Unhealthy(_) | NotReady(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable name of the failure.
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            InvalidJson(_) => "invalid_json",
            InvalidMultipart(_) => "invalid_multipart",
            UnsupportedMediaType(_) => "unsupported_media_type",
            PayloadTooLarge(_) => "payload_too_large",
            TooManyInputs { .. } => "too_many_inputs",
            Invalid { .. } => "invalid_request",
            EmptyLabels => "empty_labels",
            BadTemplate(_) => "bad_template",
            BadImage { .. } => "invalid_image",
            ImageTooLarge { .. } => "image_too_large",
            NotFound(_) => "not_found",
            MethodNotAllowed => "method_not_allowed",
            ModelNotFound { .. } => "model_not_found",
            NoStore => "no_store",
            Overloaded { .. } => "overloaded",
            ShuttingDown => "shutting_down",
            StoreUnavailable { .. } => "store_unavailable",
            Unhealthy(_) => "unhealthy",
            NotReady(_) => "not_ready",
            Timeout(_) => "timeout",
            Internal(_) => "internal_error",
        }
    }

    pub fn body(&self) -> ErrorBody {
        let status = self.status();
        let (param, index) = match self {
            ApiError::Invalid { param, .. } => (param.clone(), None),
            ApiError::BadImage { index, .. } | ApiError::ImageTooLarge { index, .. } => {
                (Some("input".to_owned()), Some(*index))
            }
            ApiError::EmptyLabels => (Some("labels".to_owned()), None),
            ApiError::BadTemplate(_) => (Some("templates".to_owned()), None),
            ApiError::ModelNotFound { .. } => (Some("model".to_owned()), None),
            _ => (None, None),
        };
        ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                kind: if status.is_server_error() {
                    "server_error"
                } else {
                    "invalid_request_error"
                }
                .to_owned(),
                message: self.to_string(),
                param,
                index,
            },
        }
    }
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_json`, `overloaded`, `invalid_image`.
    pub code: String,
    /// `invalid_request_error` (4xx) or `server_error` (5xx), as OpenAI reports it.
    #[serde(rename = "type")]
    pub kind: String,
    /// Human-readable explanation.
    pub message: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// The position of the input at fault (images, texts), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let ApiError::Overloaded { retry_after_s }
        | ApiError::StoreUnavailable { retry_after_s, .. } = self
        {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&retry_after_s.to_string()).expect("digits"),
            );
        }
        response
    }
}

/// How long a client should wait before retrying a collection whose backend is down.
const STORE_RETRY_AFTER_S: u64 = 5;

/// Turns a failure of the collection into the right answer: 503 with `Retry-After` when its
/// backend is down or unreachable (the client may retry), otherwise 500. `what` says what the
/// server was doing, for the message.
pub fn store_error(what: &str, error: &clipkit_index::IndexError) -> ApiError {
    if error.is_transient() {
        ApiError::StoreUnavailable {
            message: format!("{what}: {error}"),
            retry_after_s: STORE_RETRY_AFTER_S,
        }
    } else {
        ApiError::Internal(format!("{what}: {error}"))
    }
}

/// Turns an image decoding failure into the right client error, naming the input.
pub fn image_error(index: usize, error: &ImageError) -> ApiError {
    match error.problem() {
        Some(problem @ ImageProblem::TooManyPixels { .. }) => ApiError::ImageTooLarge {
            index,
            message: format!("{problem}{}", pixel_limit_hint(problem)),
        },
        Some(problem) => ApiError::BadImage {
            index,
            message: problem.to_string(),
        },
        None => ApiError::BadImage {
            index,
            message: error.to_string(),
        },
    }
}

/// Where the limit an image went over is set, for the messages that report it: the library
/// says what is wrong, the server says which of its settings decides it.
pub fn pixel_limit_hint(problem: &ImageProblem) -> &'static str {
    match problem {
        ImageProblem::TooManyPixels { .. } => {
            "; the limit is the server's `limits.max_pixels` setting"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clipkit_index::IndexError;

    #[test]
    fn a_store_that_is_down_is_503_with_retry_after_and_other_failures_500() {
        let milvus = |transient| IndexError::Milvus {
            uri: "milvus://127.0.0.1:1/images".into(),
            message: "connecting: timed out".into(),
            transient,
        };
        let down = milvus(true);
        let response = store_error("the collection failed", &down).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");

        let refused = milvus(false);
        let response = store_error("the collection failed", &refused).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn an_image_over_the_pixel_limit_names_the_servers_setting() {
        let error = ImageError::Image {
            path: "input 0".into(),
            problem: ImageProblem::TooManyPixels {
                width: 2000,
                height: 1000,
                pixels: 2_000_000,
                limit: 1_000_000,
            },
        };
        match image_error(0, &error) {
            ApiError::ImageTooLarge { index: 0, message } => {
                assert!(message.contains("limits.max_pixels"), "{message}");
                assert!(!message.contains("--"), "{message}");
            }
            other => panic!("expected ImageTooLarge, got {other:?}"),
        }
    }
}
