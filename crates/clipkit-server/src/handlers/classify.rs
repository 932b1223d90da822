//! `POST /v1/classify`: zero-shot classification of one image against labels (optionally
//! prompt-ensembled over templates), as JSON scores or as the image-beside-bars PNG.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use clipkit_core::scoring;
use clipkit_plot::{probability_chart_png, Bar, ChartText};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Shared;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiQuery, JsonOrForm};
use crate::images::parse_image_string;
use crate::state::AppState;

/// Bars drawn in the PNG chart.
const CHART_BARS: usize = 10;

#[derive(Debug, Deserialize, ToSchema)]
pub struct ClassifyRequest {
    /// The image: a `data:` URI or base64.
    pub image: String,
    /// Class labels, e.g. `["cat", "dog"]`.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Prompt templates with `{}` for the label; several are ensembled.
    #[serde(default)]
    pub templates: Vec<String>,
    /// Only the k most probable labels, best first.
    #[serde(default)]
    pub top_k: Option<usize>,
    #[serde(default)]
    pub model: Option<String>,
}

/// The same request as multipart/form-data (what a browser form or `curl -F` sends).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ClassifyForm {
    /// The image file.
    #[schema(value_type = String, format = Binary)]
    pub image: Vec<u8>,
    /// Labels: the field repeated, or one field with a label per line.
    pub labels: Vec<String>,
    /// Templates, likewise.
    pub templates: Option<Vec<String>>,
    pub top_k: Option<usize>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChartQuery {
    /// `png`: answer with the image beside a bar chart of the probabilities instead of JSON.
    pub chart: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClassifyResponse {
    pub model: String,
    /// The function that produced each `prob`: `softmax` (over the labels, summing to one;
    /// CLIP) or `sigmoid` (of each label's logit on its own; SigLIP).
    pub probability: String,
    /// Scores in label order, or best first with `top_k`.
    pub scores: Vec<LabelScore>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LabelScore {
    pub label: String,
    /// logit_scale · cosine (+ logit_bias for SigLIP).
    pub logit: f32,
    /// The label's probability (see `probability`).
    pub prob: f32,
}

/// A PNG image.
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Png(#[allow(dead_code)] Vec<u8>);

struct Parsed {
    image: Vec<u8>,
    title: String,
    labels: Vec<String>,
    templates: Vec<String>,
    top_k: Option<usize>,
    model: Option<String>,
}

fn parse(body: JsonOrForm<ClassifyRequest>) -> Result<Parsed, ApiError> {
    match body {
        JsonOrForm::Json(r) => Ok(Parsed {
            image: parse_image_string(0, &r.image)?,
            title: String::new(),
            labels: r.labels,
            templates: r.templates,
            top_k: r.top_k,
            model: r.model,
        }),
        JsonOrForm::Form(form) => {
            let mut images = form.fields.iter().filter(|f| f.name == "image");
            let image = images
                .next()
                .ok_or_else(|| ApiError::invalid("image", "missing the `image` file field"))?;
            if images.next().is_some() {
                return Err(ApiError::invalid("image", "classify takes one image"));
            }
            Ok(Parsed {
                title: image.file_name.clone().unwrap_or_default(),
                image: image.data.clone(),
                labels: form
                    .lines("labels")?
                    .into_iter()
                    .chain(form.lines("label")?)
                    .collect(),
                templates: form
                    .lines("templates")?
                    .into_iter()
                    .chain(form.lines("template")?)
                    .collect(),
                top_k: form.number("top_k")?,
                model: form.text("model")?,
            })
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/classify",
    tag = "classify",
    params(ChartQuery),
    request_body(content(
        (ClassifyRequest = "application/json"),
        (ClassifyForm = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "Logit and probability per label, or the PNG chart with `?chart=png`",
            content((ClassifyResponse = "application/json"), (Png = "image/png"))),
        (status = 400, description = "Malformed JSON or multipart", body = ErrorBody),
        (status = 404, description = "Another model was asked for", body = ErrorBody),
        (status = 413, description = "Body, image or label count over the limits", body = ErrorBody),
        (status = 415, description = "Neither JSON nor multipart", body = ErrorBody),
        (status = 422, description = "No labels, a bad template, an undecodable image", body = ErrorBody),
        (status = 429, description = "Server full", body = ErrorBody),
        (status = 500, description = "The model failed", body = ErrorBody),
        (status = 503, description = "Shutting down", body = ErrorBody),
        (status = 504, description = "Past the request timeout", body = ErrorBody),
    )
)]
pub async fn classify(
    state: Shared,
    ApiQuery(query): ApiQuery<ChartQuery>,
    body: JsonOrForm<ClassifyRequest>,
) -> Result<Response, ApiError> {
    let chart = match query.chart.as_deref() {
        None | Some("") => false,
        Some("png") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "chart",
                format!("chart `{other}` is not supported (use chart=png)"),
            ))
        }
    };
    let req = parse(body)?;
    state.check_model(req.model.as_deref())?;
    if req.top_k == Some(0) {
        return Err(ApiError::invalid("top_k", "top_k must be at least 1"));
    }
    let label_vectors = label_embeddings(&state, &req.labels, &req.templates).await?;
    let mut embedded = state.embed_images(vec![req.image], chart).await?;
    let scoring = state.clip.scoring();

    if chart {
        let shown = embedded.shown.remove(0).expect("kept for the chart");
        let bars: Vec<Bar> = scoring::classify(&embedded.vectors, &label_vectors, &scoring, None)
            .remove(0)
            .into_iter()
            .map(|s| Bar {
                label: req.labels[s.label].clone(),
                prob: s.probability,
            })
            .collect();
        let title = req.title;
        let axis = scoring.probability_axis();
        let png = tokio::task::spawn_blocking(move || {
            let text = ChartText {
                title: &title,
                axis,
            };
            probability_chart_png(&shown, &bars, text, CHART_BARS)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("chart task failed: {e}")))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
        return Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response());
    }

    let scores =
        scoring::classify(&embedded.vectors, &label_vectors, &scoring, req.top_k).remove(0);
    let mut prompts = req.labels.clone();
    if !req.templates.is_empty() {
        prompts = prompts_for(&req.labels, &req.templates)?;
    }
    Ok(Json(ClassifyResponse {
        model: state.config.served_model_name.clone(),
        probability: scoring.probability_name().to_owned(),
        scores: scores
            .into_iter()
            .map(|s| LabelScore {
                label: req.labels[s.label].clone(),
                logit: s.logit,
                prob: s.probability,
            })
            .collect(),
        warnings: state.truncation_warnings(&prompts),
    })
    .into_response())
}

fn prompts_for(labels: &[String], templates: &[String]) -> Result<Vec<String>, ApiError> {
    let mut prompts = Vec::with_capacity(labels.len() * templates.len());
    for label in labels {
        for t in templates {
            prompts.push(
                scoring::apply_template(t, label)
                    .map_err(|e| ApiError::BadTemplate(e.to_string()))?,
            );
        }
    }
    Ok(prompts)
}

/// One embedding per label, as `Clip::label_embeddings` computes it (each template filled,
/// embedded, averaged, renormalised), with the texts going through the batcher and cache.
pub async fn label_embeddings(
    state: &AppState,
    labels: &[String],
    templates: &[String],
) -> Result<Vec<Vec<f32>>, ApiError> {
    if labels.is_empty() {
        return Err(ApiError::EmptyLabels);
    }
    if let Some(i) = labels.iter().position(|l| l.trim().is_empty()) {
        return Err(ApiError::invalid("labels", format!("label {i} is empty")));
    }
    if templates.is_empty() {
        state.check_inputs(labels.len() + 1)?;
        return state.embed_texts(labels).await;
    }
    let prompts = prompts_for(labels, templates)?;
    state.check_inputs(prompts.len() + 1)?;
    let vectors = state.embed_texts(&prompts).await?;
    Ok(vectors
        .chunks(templates.len())
        .map(scoring::ensemble)
        .collect())
}
