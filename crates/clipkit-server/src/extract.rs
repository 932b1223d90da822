//! Request extractors that fail with [`ApiError`]s (so every rejection has the JSON error
//! shape), and the JSON-or-multipart bodies that `/v1/classify`, `/v1/similarity` and
//! `POST /v1/search` accept.

use axum::extract::multipart::MultipartError;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Multipart, Query, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body; anything but `application/json` (or `…+json`) is 415.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if media_type(req.headers()) != Media::Json {
            return Err(ApiError::UnsupportedMediaType(
                "expected a JSON body (Content-Type: application/json)".into(),
            ));
        }
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|axum::Json(v)| ApiJson(v))
            .map_err(json_rejection)
    }
}

/// Query parameters; a value of the wrong type is 422.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e: QueryRejection| ApiError::Invalid {
                param: None,
                message: format!("bad query string: {}", e.body_text()),
            })
    }
}

/// A body that is either JSON (`T`) or `multipart/form-data`.
#[derive(Debug)]
pub enum JsonOrForm<T> {
    Json(T),
    Form(Form),
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonOrForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match media_type(req.headers()) {
            Media::Json => ApiJson::<T>::from_request(req, state)
                .await
                .map(|ApiJson(v)| JsonOrForm::Json(v)),
            Media::Multipart => {
                let mut multipart = Multipart::from_request(req, state)
                    .await
                    .map_err(|e| ApiError::InvalidMultipart(e.body_text()))?;
                let mut fields = Vec::new();
                while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
                    let name = field.name().unwrap_or_default().to_owned();
                    let file_name = field.file_name().map(str::to_owned);
                    let data = field.bytes().await.map_err(multipart_error)?;
                    fields.push(FormField {
                        name,
                        file_name,
                        data: data.to_vec(),
                    });
                }
                Ok(JsonOrForm::Form(Form { fields }))
            }
            Media::Other => Err(ApiError::UnsupportedMediaType(
                "expected application/json or multipart/form-data".into(),
            )),
        }
    }
}

/// The fields of a multipart body, in order.
#[derive(Debug, Default)]
pub struct Form {
    pub fields: Vec<FormField>,
}

#[derive(Debug)]
pub struct FormField {
    pub name: String,
    pub file_name: Option<String>,
    pub data: Vec<u8>,
}

impl Form {
    /// The contents of every field called `name` (files or not), in order.
    pub fn files(&self, name: &str) -> Vec<Vec<u8>> {
        self.fields
            .iter()
            .filter(|f| f.name == name)
            .map(|f| f.data.clone())
            .collect()
    }

    /// Every text field called `name`, in order.
    pub fn texts(&self, name: &str) -> Result<Vec<String>, ApiError> {
        self.fields
            .iter()
            .filter(|f| f.name == name)
            .map(|f| {
                String::from_utf8(f.data.clone())
                    .map_err(|_| ApiError::invalid(name, format!("field `{name}` is not UTF-8")))
            })
            .collect()
    }

    /// The single text field called `name`, if present.
    pub fn text(&self, name: &str) -> Result<Option<String>, ApiError> {
        let mut all = self.texts(name)?;
        match all.len() {
            0 => Ok(None),
            1 => Ok(all.pop()),
            _ => Err(ApiError::invalid(
                name,
                format!("field `{name}` is given more than once"),
            )),
        }
    }

    /// A numeric field.
    pub fn number<N: std::str::FromStr>(&self, name: &str) -> Result<Option<N>, ApiError> {
        self.text(name)?
            .map(|t| {
                t.trim()
                    .parse()
                    .map_err(|_| ApiError::invalid(name, format!("field `{name}` is not a number")))
            })
            .transpose()
    }

    /// Lines of every field called `name`: repeated fields and newline-separated values both
    /// work (a textarea of labels), blank lines skipped.
    pub fn lines(&self, name: &str) -> Result<Vec<String>, ApiError> {
        Ok(self
            .texts(name)?
            .iter()
            .flat_map(|t| t.lines())
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Media {
    Json,
    Multipart,
    Other,
}

fn media_type(headers: &HeaderMap) -> Media {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return Media::Other;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Media::Json
    } else if essence == "multipart/form-data" {
        Media::Multipart
    } else {
        Media::Other
    }
}

fn too_large() -> ApiError {
    ApiError::PayloadTooLarge("the request body is over the server's size limit".into())
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::Invalid {
            param: None,
            message: e.body_text(),
        },
        JsonRejection::JsonSyntaxError(e) => ApiError::InvalidJson(e.body_text()),
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
            "expected a JSON body (Content-Type: application/json)".into(),
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        other => ApiError::InvalidJson(other.body_text()),
    }
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large()
    } else {
        ApiError::InvalidMultipart(e.body_text())
    }
}
