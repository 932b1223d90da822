//! Collection search: `GET /v1/search?q=…` by words (`beach - people` pushes away from
//! people, as `clipkit search` does), `POST /v1/search` by image (optionally with words), and
//! the thumbnails of the results. Only available when a store is attached. Both searches take
//! the same filters as `clipkit search` (`after`, `before`, `in`, `near`, `camera`, `type`,
//! `min_size`, `max_size`), parsed by the same library functions.

use std::sync::Arc;

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use clipkit_index::search::{parse_query, query, Sign};
use clipkit_index::{filter_text, Filter, Hit, IndexError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Shared;
use crate::error::{store_error, ApiError, ErrorBody};
use crate::extract::{ApiQuery, JsonOrForm};
use crate::images::parse_image_string;
use crate::state::AppState;

const DEFAULT_K: usize = 10;
const MAX_K: usize = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Words to search for; ` - ` before a phrase pushes results away from it.
    pub q: String,
    /// Number of results (1–1000, default 10).
    pub k: Option<usize>,
    /// Only results with cosine similarity at least this.
    pub threshold: Option<f32>,
    /// Push results away from this text too.
    pub not: Option<String>,
    /// Only photos taken at or after this date: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS]`, or a
    /// bare `YYYY` or `YYYY-MM` (its first day); on the photo's own clock (EXIF capture date,
    /// else the file's modification time in UTC).
    pub after: Option<String>,
    /// Only photos taken before this date, which is excluded (`2023-09-01` ends with 31
    /// August); same forms as `after`.
    pub before: Option<String>,
    /// Only files under this folder on the server.
    #[serde(rename = "in")]
    #[param(rename = "in")]
    pub folder: Option<String>,
    /// Only photos taken within a radius of a point: `LAT,LON,RADIUS` with the radius in m,
    /// km or mi (`48.85,2.35,20km`).
    pub near: Option<String>,
    /// Only photos whose camera (make and model) contains this, ignoring case.
    pub camera: Option<String>,
    /// Only these file types, comma-separated (`jpg,png`).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub file_type: Option<String>,
    /// Only files of at least this size: bytes, or with a unit (`200KB`, `1.5MB`, `4MiB`).
    pub min_size: Option<String>,
    /// Only files of at most this size.
    pub max_size: Option<String>,
}

/// The filters of a search, as written in a request (all optional; all must hold).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct SearchFilter {
    /// Only photos taken at or after this date: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS]`, or a
    /// bare `YYYY` or `YYYY-MM`.
    #[serde(default)]
    pub after: Option<String>,
    /// Only photos taken before this date, which is excluded.
    #[serde(default)]
    pub before: Option<String>,
    /// Only files under this folder on the server.
    #[serde(default, rename = "in")]
    #[schema(rename = "in")]
    pub folder: Option<String>,
    /// `LAT,LON,RADIUS` with the radius in m, km or mi (`48.85,2.35,20km`).
    #[serde(default)]
    pub near: Option<String>,
    /// Only photos whose camera (make and model) contains this, ignoring case.
    #[serde(default)]
    pub camera: Option<String>,
    /// Only these file types, comma-separated (`jpg,png`).
    #[serde(default, rename = "type")]
    #[schema(rename = "type")]
    pub file_type: Option<String>,
    /// Only files of at least this size: bytes, or with a unit (`200KB`, `1.5MB`).
    #[serde(default, deserialize_with = "string_or_number")]
    pub min_size: Option<String>,
    /// Only files of at most this size.
    #[serde(default, deserialize_with = "string_or_number")]
    pub max_size: Option<String>,
}

/// A size given as a JSON string (`"200KB"`) or a number of bytes.
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Text(String),
        Bytes(u64),
    }
    Ok(Option::<Size>::deserialize(d)?.map(|s| match s {
        Size::Text(t) => t,
        Size::Bytes(n) => n.to_string(),
    }))
}

impl SearchFilter {
    /// The library's filter, each field checked, an error naming the field that is wrong.
    pub fn parse(&self) -> Result<Filter, ApiError> {
        fn field<T>(
            name: &'static str,
            value: &Option<String>,
            parse: impl Fn(&str) -> Result<T, String>,
        ) -> Result<Option<T>, ApiError> {
            value
                .as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| parse(v).map_err(|e| ApiError::invalid(name, format!("{name}: {e}"))))
                .transpose()
        }
        let folders = match self
            .folder
            .as_deref()
            .map(str::trim)
            .filter(|f| !f.is_empty())
        {
            None => Vec::new(),
            Some(f) => {
                let canonical = std::fs::canonicalize(f)
                    .ok()
                    .filter(|c| c.is_dir())
                    .ok_or_else(|| {
                        ApiError::invalid("in", format!("in: {f} is not a folder on the server"))
                    })?;
                vec![canonical]
            }
        };
        let file_types = match self.file_type.as_deref() {
            None => Vec::new(),
            Some(types) => types
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| {
                    filter_text::file_type(t)
                        .map_err(|e| ApiError::invalid("type", format!("type: {e}")))
                })
                .collect::<Result<_, _>>()?,
        };
        let filter = Filter {
            after: field("after", &self.after, filter_text::date)?,
            before: field("before", &self.before, filter_text::date)?,
            folders,
            near: field("near", &self.near, filter_text::near)?,
            camera: self
                .camera
                .as_deref()
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
            file_types,
            min_size: field("min_size", &self.min_size, filter_text::size)?,
            max_size: field("max_size", &self.max_size, filter_text::size)?,
        };
        filter_text::check(&filter)
            .map_err(|(name, problem)| ApiError::invalid(name, format!("{name}: {problem}")))?;
        Ok(filter)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SearchImageRequest {
    /// The query image: a `data:` URI or base64.
    pub image: String,
    /// Words combined with the image (same syntax as `q`).
    #[serde(default)]
    pub q: Option<String>,
    #[serde(default)]
    pub not: Option<String>,
    #[serde(default)]
    pub k: Option<usize>,
    #[serde(default)]
    pub threshold: Option<f32>,
    #[serde(flatten)]
    pub filter: SearchFilter,
}

/// The same request as multipart/form-data.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct SearchImageForm {
    #[schema(value_type = String, format = Binary)]
    pub image: Vec<u8>,
    pub q: Option<String>,
    pub not: Option<String>,
    pub k: Option<usize>,
    pub threshold: Option<f32>,
    pub after: Option<String>,
    pub before: Option<String>,
    #[schema(rename = "in")]
    pub folder: Option<String>,
    pub near: Option<String>,
    pub camera: Option<String>,
    #[schema(rename = "type")]
    pub file_type: Option<String>,
    pub min_size: Option<String>,
    pub max_size: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponse {
    pub model: String,
    /// Best first.
    pub results: Vec<SearchResult>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResult {
    pub rank: usize,
    /// Cosine similarity to the query.
    pub score: f32,
    pub path: String,
    /// The store's id of the file.
    pub id: i64,
    /// Where its thumbnail is served.
    pub thumbnail: String,
}

/// A JPEG image.
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Jpeg(#[allow(dead_code)] Vec<u8>);

fn check_k(k: Option<usize>) -> Result<usize, ApiError> {
    let k = k.unwrap_or(DEFAULT_K);
    if !(1..=MAX_K).contains(&k) {
        return Err(ApiError::invalid(
            "k",
            format!("k must be between 1 and {MAX_K}"),
        ));
    }
    Ok(k)
}

fn text_terms(q: Option<&str>, not: Option<&str>) -> Vec<(Sign, String)> {
    let mut terms = q.map(parse_query).unwrap_or_default();
    if let Some(n) = not.map(str::trim).filter(|n| !n.is_empty()) {
        terms.push((Sign::Minus, n.to_owned()));
    }
    terms
}

#[utoipa::path(
    get,
    path = "/v1/search",
    tag = "search",
    params(SearchQuery),
    responses(
        (status = 200, description = "The nearest images, best first", body = SearchResponse),
        (status = 404, description = "No store attached", body = ErrorBody),
        (status = 422, description = "Empty query or bad parameters", body = ErrorBody),
        (status = 429, description = "Server full", body = ErrorBody),
        (status = 500, description = "The model or the store failed", body = ErrorBody),
        (status = 503, description = "Shutting down, or the store's backend is down (see Retry-After)", body = ErrorBody),
        (status = 504, description = "Past the request timeout", body = ErrorBody),
    )
)]
pub async fn search_text(
    state: Shared,
    ApiQuery(params): ApiQuery<SearchQuery>,
) -> Result<Json<SearchResponse>, ApiError> {
    state.store()?;
    let k = check_k(params.k)?;
    let filter = SearchFilter {
        after: params.after,
        before: params.before,
        folder: params.folder,
        near: params.near,
        camera: params.camera,
        file_type: params.file_type,
        min_size: params.min_size,
        max_size: params.max_size,
    }
    .parse()?;
    let terms = text_terms(Some(&params.q), params.not.as_deref());
    run(&state.0, terms, None, k, params.threshold, filter).await
}

#[utoipa::path(
    post,
    path = "/v1/search",
    tag = "search",
    request_body(content(
        (SearchImageRequest = "application/json"),
        (SearchImageForm = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "The nearest images, best first", body = SearchResponse),
        (status = 400, description = "Malformed JSON or multipart", body = ErrorBody),
        (status = 404, description = "No store attached", body = ErrorBody),
        (status = 413, description = "Over the limits", body = ErrorBody),
        (status = 415, description = "Neither JSON nor multipart", body = ErrorBody),
        (status = 422, description = "Undecodable image or bad parameters", body = ErrorBody),
        (status = 429, description = "Server full", body = ErrorBody),
        (status = 500, description = "The model or the store failed", body = ErrorBody),
        (status = 503, description = "Shutting down, or the store's backend is down (see Retry-After)", body = ErrorBody),
        (status = 504, description = "Past the request timeout", body = ErrorBody),
    )
)]
pub async fn search_image(
    state: Shared,
    body: JsonOrForm<SearchImageRequest>,
) -> Result<Json<SearchResponse>, ApiError> {
    state.store()?;
    let (image, q, not, k, threshold, filter) = match body {
        JsonOrForm::Json(r) => (
            parse_image_string(0, &r.image)?,
            r.q,
            r.not,
            r.k,
            r.threshold,
            r.filter,
        ),
        JsonOrForm::Form(form) => {
            let image = form
                .files("image")
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::invalid("image", "missing the `image` file field"))?;
            (
                image,
                form.text("q")?,
                form.text("not")?,
                form.number("k")?,
                form.number("threshold")?,
                SearchFilter {
                    after: form.text("after")?,
                    before: form.text("before")?,
                    folder: form.text("in")?,
                    near: form.text("near")?,
                    camera: form.text("camera")?,
                    file_type: form.text("type")?,
                    min_size: form.text("min_size")?,
                    max_size: form.text("max_size")?,
                },
            )
        }
    };
    let k = check_k(k)?;
    let filter = filter.parse()?;
    let terms = text_terms(q.as_deref(), not.as_deref());
    run(&state.0, terms, Some(image), k, threshold, filter).await
}

async fn run(
    state: &Arc<AppState>,
    terms: Vec<(Sign, String)>,
    image: Option<Vec<u8>>,
    k: usize,
    threshold: Option<f32>,
    filter: Filter,
) -> Result<Json<SearchResponse>, ApiError> {
    let store = state.store()?;
    if terms.is_empty() && image.is_none() {
        return Err(ApiError::invalid("q", "the query is empty"));
    }
    state.check_inputs(terms.len() + usize::from(image.is_some()))?;
    let mut parts: Vec<(Sign, Vec<f32>)> = Vec::new();
    if let Some(bytes) = image {
        let v = state
            .embed_images(vec![bytes], false)
            .await?
            .vectors
            .remove(0);
        parts.push((Sign::Plus, v));
    }
    if !terms.is_empty() {
        let texts: Vec<String> = terms.iter().map(|(_, t)| t.clone()).collect();
        for ((sign, _), v) in terms.iter().zip(state.embed_texts(&texts).await?) {
            parts.push((*sign, v));
        }
    }
    let handle = store.store.clone();
    let hits: Vec<Hit> =
        tokio::task::spawn_blocking(move || query(&*handle, &parts, k, threshold, &filter))
            .await
            .map_err(|e| ApiError::Internal(format!("search task failed: {e}")))?
            .map_err(|e| match e {
                IndexError::EmptyQuery => ApiError::invalid(
                    "q",
                    "the query has only negative parts; add something to search for",
                ),
                other => store_error("the collection failed", &other),
            })?;
    let results = hits
        .into_iter()
        .enumerate()
        .map(|(i, hit)| {
            let id = store.thumbnails.remember(&hit.path);
            SearchResult {
                rank: i + 1,
                score: hit.score,
                path: hit.path.to_string_lossy().into_owned(),
                id,
                thumbnail: format!("/v1/thumbnails/{id}"),
            }
        })
        .collect();
    Ok(Json(SearchResponse {
        model: state.config.served_model_name.clone(),
        results,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/thumbnails/{id}",
    tag = "search",
    params(("id" = i64, Path, description = "A result's `id`")),
    responses(
        (status = 200, description = "A JPEG, at most 256 px on its longest side", content_type = "image/jpeg", body = Jpeg),
        (status = 404, description = "No such image in the store, or no store", body = ErrorBody),
        (status = 422, description = "Not an id", body = ErrorBody),
    )
)]
pub async fn thumbnail(state: Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    let store = state.store()?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::invalid("id", "thumbnail ids are integers"))?;
    let max_pixels = state.config.limits.max_pixels;
    let shared = state.0.clone();
    let handle = store.store.clone();
    let jpeg = tokio::task::spawn_blocking(move || {
        let thumbnails = &shared.store.as_ref().expect("checked above").thumbnails;
        let path = thumbnails.path_of(&*handle, id)?.ok_or_else(|| {
            ApiError::NotFound(format!("no image with id {id} in the collection"))
        })?;
        thumbnails.render(id, &path, max_pixels)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("thumbnail task failed: {e}")))??;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        jpeg,
    )
        .into_response())
}
