//! `POST /v1/embeddings`: OpenAI's embeddings API, with images marked the way infinity
//! marks them (`"modality": "image"`, inputs as `data:` URIs or base64).

use axum::Json;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Shared;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
use crate::images::parse_image_string;

#[derive(Debug, Deserialize, ToSchema)]
pub struct EmbeddingsRequest {
    /// One input or a list: texts, or with `modality: "image"` images as `data:` URIs or
    /// base64.
    pub input: EmbeddingInput,
    /// The served model's name; optional.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub modality: Modality,
    #[serde(default)]
    pub encoding_format: EncodingFormat,
    /// Must equal the model's embedding size if given (CLIP cannot shorten its vectors).
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// Accepted for OpenAI compatibility and ignored.
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    #[default]
    Text,
    Image,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// A JSON array of numbers.
    #[default]
    Float,
    /// Base64 of the little-endian f32 values, as OpenAI encodes it.
    Base64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingsResponse {
    /// Always `list`.
    pub object: String,
    pub data: Vec<EmbeddingObject>,
    pub model: String,
    pub usage: Usage,
    /// Texts longer than the context were truncated; said here rather than failing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingObject {
    /// Always `embedding`.
    pub object: String,
    pub index: usize,
    /// L2-normalised: dot products are cosine similarities.
    pub embedding: EmbeddingValue,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingValue {
    Float(Vec<f32>),
    Base64(String),
}

/// Tokens the model read: BPE tokens (start/end included, after truncation) for texts,
/// patches + the class token for images.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "embeddings",
    request_body = EmbeddingsRequest,
    responses(
        (status = 200, description = "One normalised vector per input, in order", body = EmbeddingsResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 404, description = "Another model was asked for", body = ErrorBody),
        (status = 413, description = "Body, image or input count over the limits", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid request or an undecodable image (`index` names it)", body = ErrorBody),
        (status = 429, description = "Server full; retry after `Retry-After` seconds", body = ErrorBody),
        (status = 500, description = "The model failed on an input", body = ErrorBody),
        (status = 503, description = "Shutting down", body = ErrorBody),
        (status = 504, description = "Past the request timeout", body = ErrorBody),
    )
)]
pub async fn embeddings(
    state: Shared,
    ApiJson(req): ApiJson<EmbeddingsRequest>,
) -> Result<Json<EmbeddingsResponse>, ApiError> {
    state.check_model(req.model.as_deref())?;
    let dim = state.clip.embedding_dim();
    if let Some(d) = req.dimensions {
        if d != dim {
            return Err(ApiError::invalid(
                "dimensions",
                format!("this model's embeddings have {dim} dimensions, not {d}"),
            ));
        }
    }
    let inputs = match req.input {
        EmbeddingInput::One(s) => vec![s],
        EmbeddingInput::Many(v) => v,
    };
    if inputs.is_empty() {
        return Err(ApiError::invalid("input", "`input` is an empty list"));
    }
    state.check_inputs(inputs.len())?;

    let (vectors, tokens, warnings) = match req.modality {
        Modality::Text => {
            let tokenizer = state.clip.tokenizer();
            let tokens = inputs
                .iter()
                .map(|t| tokenizer.encode(t).map(|ids| ids.len()))
                .sum::<Result<usize, _>>()
                .map_err(|e| ApiError::invalid("input", e.to_string()))?;
            let warnings = state.truncation_warnings(&inputs);
            (state.embed_texts(&inputs).await?, tokens, warnings)
        }
        Modality::Image => {
            let bytes = inputs
                .iter()
                .enumerate()
                .map(|(i, s)| parse_image_string(i, s))
                .collect::<Result<Vec<_>, _>>()?;
            let n = bytes.len();
            let embedded = state.embed_images(bytes, false).await?;
            let per_image = state.clip.image_tokens();
            (embedded.vectors, n * per_image, Vec::new())
        }
    };

    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingObject {
            object: "embedding".into(),
            index,
            embedding: match req.encoding_format {
                EncodingFormat::Float => EmbeddingValue::Float(v),
                EncodingFormat::Base64 => {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    EmbeddingValue::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            },
        })
        .collect();
    Ok(Json(EmbeddingsResponse {
        object: "list".into(),
        data,
        model: state.config.served_model_name.clone(),
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
        warnings,
    }))
}
