//! `POST /v1/similarity`: the images × texts logits matrix (`logits_per_image`) and each
//! image's probabilities over the texts (the family's scoring: CLIP's softmax, SigLIP's
//! sigmoid), as `clipkit similarity --format json` prints them.

use axum::Json;
use clipkit_core::scoring;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Shared;
use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonOrForm;
use crate::images::parse_image_string;

#[derive(Debug, Deserialize, ToSchema)]
pub struct SimilarityRequest {
    /// Images as `data:` URIs or base64.
    #[serde(default)]
    pub images: Vec<String>,
    #[serde(default)]
    pub texts: Vec<String>,
    #[serde(default)]
    pub model: Option<String>,
}

/// The same request as multipart/form-data.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct SimilarityForm {
    /// Image files (repeat the field).
    #[schema(value_type = Vec<String>, format = Binary)]
    pub image: Vec<Vec<u8>>,
    /// Texts (repeat the field).
    pub text: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SimilarityResponse {
    pub model: String,
    pub texts: Vec<String>,
    /// `exp(logit_scale)` of the checkpoint.
    pub logit_scale: f32,
    /// The checkpoint's `logit_bias` (SigLIP), added to every logit; absent for CLIP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<f32>,
    /// The function that produced `probs_per_image`: `softmax` (over the texts; CLIP) or
    /// `sigmoid` (of each logit on its own; SigLIP).
    pub probability: String,
    /// `logits_per_image[i][j]` = logit_scale · cos(image i, text j) (+ logit_bias).
    pub logits_per_image: Vec<Vec<f32>>,
    /// Per image, the probability of each text (see `probability`).
    pub probs_per_image: Vec<Vec<f32>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/v1/similarity",
    tag = "similarity",
    request_body(content(
        (SimilarityRequest = "application/json"),
        (SimilarityForm = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "The logits matrix", body = SimilarityResponse),
        (status = 400, description = "Malformed JSON or multipart", body = ErrorBody),
        (status = 404, description = "Another model was asked for", body = ErrorBody),
        (status = 413, description = "Over the limits", body = ErrorBody),
        (status = 415, description = "Neither JSON nor multipart", body = ErrorBody),
        (status = 422, description = "No images or texts, or an undecodable image", body = ErrorBody),
        (status = 429, description = "Server full", body = ErrorBody),
        (status = 500, description = "The model failed", body = ErrorBody),
        (status = 503, description = "Shutting down", body = ErrorBody),
        (status = 504, description = "Past the request timeout", body = ErrorBody),
    )
)]
pub async fn similarity(
    state: Shared,
    body: JsonOrForm<SimilarityRequest>,
) -> Result<Json<SimilarityResponse>, ApiError> {
    let (images, texts, model) = match body {
        JsonOrForm::Json(r) => (
            r.images
                .iter()
                .enumerate()
                .map(|(i, s)| parse_image_string(i, s))
                .collect::<Result<Vec<_>, _>>()?,
            r.texts,
            r.model,
        ),
        JsonOrForm::Form(form) => (
            form.files("image"),
            form.texts("text")?,
            form.text("model")?,
        ),
    };
    state.check_model(model.as_deref())?;
    if images.is_empty() {
        return Err(ApiError::invalid("images", "no images given"));
    }
    if texts.is_empty() {
        return Err(ApiError::invalid("texts", "no texts given"));
    }
    state.check_inputs(images.len() + texts.len())?;
    let text_vectors = state.embed_texts(&texts).await?;
    let image_vectors = state.embed_images(images, false).await?.vectors;
    let scoring = state.clip.scoring();
    let similarity = scoring::similarity(&image_vectors, &text_vectors, &scoring);
    Ok(Json(SimilarityResponse {
        model: state.config.served_model_name.clone(),
        warnings: state.truncation_warnings(&texts),
        texts,
        logit_scale: scoring.logit_scale(),
        logit_bias: scoring.logit_bias(),
        probability: scoring.probability_name().to_owned(),
        logits_per_image: similarity.logits,
        probs_per_image: similarity.probabilities,
    }))
}
