//! The OpenAPI description, generated from the handlers' annotations and the request and
//! response types (utoipa), so it cannot drift from the code; the integration tests validate
//! real responses against it.

use utoipa::OpenApi;

use crate::error::{ErrorBody, ErrorDetail};
use crate::handlers::{classify, embeddings, health, search, similarity};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "clipkit",
        description = "CLIP over HTTP: OpenAI-compatible embeddings (texts and images), zero-shot \
                       classification, image × text similarity and collection search. Every \
                       error has the shape {\"error\":{\"code\",\"type\",\"message\"}}."
    ),
    paths(
        embeddings::embeddings,
        classify::classify,
        similarity::similarity,
        search::search_text,
        search::search_image,
        search::thumbnail,
        health::healthz,
        health::readyz,
        health::metrics,
        health::openapi,
        health::info,
        health::models,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    tags(
        (name = "embeddings", description = "OpenAI-compatible embeddings"),
        (name = "classify", description = "Zero-shot classification"),
        (name = "similarity", description = "Images × texts logits"),
        (name = "search", description = "Search the attached collection"),
        (name = "operations", description = "Health, readiness, metrics, this spec"),
    )
)]
pub struct ApiDoc;
