//! [`Embedder`]: the one seam between "something that embeds images and texts" and the code
//! that uses it (the indexer, the server's batcher, evaluation). [`Clip`] is the real one;
//! tests put small deterministic doubles behind the same trait.

use std::path::Path;

use image::RgbImage;

use crate::clip::Clip;
use crate::error::{ClipError, Result};
use crate::scoring::{self, Scoring};

/// A model-ready 8-bit RGB crop of one image: what [`Embedder::preprocess`] makes of a file
/// and [`Embedder::embed_crops`] takes. A quarter of the memory of the normalised `f32`
/// input, so callers can hold many images between reading them and running the model.
pub type Crop = RgbImage;

/// Embeds texts and images into one normalised space, and knows how that space is scored.
///
/// Images go in either of two ways. Callers that read files and batch them later (the indexer,
/// evaluation) call [`preprocess`](Self::preprocess) per file, on their own threads, and
/// [`embed_crops`](Self::embed_crops) per batch. Callers that already hold normalised
/// `[3, H, W]` pixels (the server, which decodes on its own pool) call
/// [`embed_pixels`](Self::embed_pixels).
pub trait Embedder: Send + Sync {
    /// The length of every embedding.
    fn embedding_dim(&self) -> usize;

    /// How cosine similarities in this space become logits and probabilities.
    fn scoring(&self) -> Scoring;

    /// Normalised text embeddings, one per text, in order.
    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;

    /// The crop of one image file's bytes, or why it has none: a broken file fails alone.
    /// `name` is for the error message.
    fn preprocess(&self, name: &Path, bytes: &[u8]) -> Result<Crop>;

    /// Normalised image embeddings of crops made by [`preprocess`](Self::preprocess), one
    /// per crop, in order.
    fn embed_crops(&self, crops: Vec<Crop>) -> Result<Vec<Vec<f32>>>;

    /// Normalised image embeddings of preprocessed `[3, H, W]` inputs, one per input.
    fn embed_pixels(&self, pixels: &[&[f32]]) -> Result<Vec<Vec<f32>>>;

    /// One embedding per label: each template filled with the label, embedded, averaged and
    /// renormalised (CLIP's prompt ensembling). With no templates the label text is used as is.
    fn label_embeddings(&self, labels: &[String], templates: &[String]) -> Result<Vec<Vec<f32>>> {
        if labels.is_empty() {
            return Err(ClipError::EmptyLabels);
        }
        if templates.is_empty() {
            let texts: Vec<&str> = labels.iter().map(String::as_str).collect();
            return self.embed_texts(&texts);
        }
        let mut prompts = Vec::with_capacity(labels.len() * templates.len());
        for label in labels {
            for t in templates {
                prompts.push(scoring::apply_template(t, label)?);
            }
        }
        let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let embedded = self.embed_texts(&refs)?;
        Ok(embedded
            .chunks(templates.len())
            .map(scoring::ensemble)
            .collect())
    }
}

impl Embedder for Clip {
    fn embedding_dim(&self) -> usize {
        Clip::embedding_dim(self)
    }

    fn scoring(&self) -> Scoring {
        Clip::scoring(self)
    }

    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Clip::embed_texts(self, texts)
    }

    fn preprocess(&self, name: &Path, bytes: &[u8]) -> Result<Crop> {
        self.crop_bytes(name, bytes)
    }

    /// Refuses crops of another size than the model's input: they can only come from
    /// another model's [`Embedder::preprocess`].
    fn embed_crops(&self, crops: Vec<Crop>) -> Result<Vec<Vec<f32>>> {
        let (h, w) = self.preprocessor().output_size();
        if let Some(crop) = crops.iter().find(|c| c.dimensions() != (w, h)) {
            return Err(ClipError::InvalidArgument {
                what: "crop size",
                value: format!("{}×{}", crop.width(), crop.height()),
                problem: format!("this model takes {w}×{h} crops"),
            });
        }
        Clip::embed_crops(self, crops)
    }

    fn embed_pixels(&self, pixels: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        Clip::embed_pixels(self, pixels)
    }
}
