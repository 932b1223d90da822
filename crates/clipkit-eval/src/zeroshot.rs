//! The zero-shot protocol itself.

use std::path::PathBuf;

use clipkit_core::{scoring, Crop, Embedder};
use rayon::prelude::*;
use serde::Serialize;

use crate::cache::EmbeddingCache;
use crate::dataset::Dataset;
use crate::metrics::{self, Metrics};
use crate::Result;

/// What multiplies the cosine similarities. Either way the family's scoring head decides
/// the rest: SigLIP's `logit_bias` is added and its probabilities are sigmoids.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LogitScale {
    /// CLIP_benchmark's constant 100 (what published numbers use).
    Fixed(f32),
    /// The checkpoint's own `exp(logit_scale)`.
    Model,
}

impl LogitScale {
    /// The scoring head evaluation applies: `family`'s, with this scale.
    pub fn head(self, family: &scoring::Scoring) -> scoring::Scoring {
        match self {
            LogitScale::Fixed(scale) => family.with_logit_scale(scale),
            LogitScale::Model => *family,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub templates: Vec<String>,
    pub logit_scale: LogitScale,
    pub cache: Option<EmbeddingCache>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub classes: Vec<String>,
    pub templates: Vec<String>,
    pub images: Vec<PathBuf>,
    pub labels: Vec<usize>,
    pub logits: Vec<Vec<f32>>,
    pub predictions: Vec<usize>,
    pub logit_scale: f32,
    /// The family's `logit_bias` (SigLIP), added to every logit.
    pub logit_bias: Option<f32>,
    /// The function that turns a row of logits into probabilities (`softmax`, `sigmoid`).
    pub probability: &'static str,
    /// The scoring head the logits were made with (scale, bias, probability function).
    #[serde(skip)]
    pub scoring: scoring::Scoring,
    pub metrics: Metrics,
    /// Images that could not be read, with the reason; left out of the metrics.
    pub failures: Vec<(PathBuf, String)>,
    pub cache_hits: usize,
}

/// One classifier vector per class: every template filled with the class name, embedded,
/// normalised, averaged, renormalised.
pub fn classifier(
    embedder: &dyn Embedder,
    classes: &[String],
    templates: &[String],
) -> Result<Vec<Vec<f32>>> {
    Ok(embedder.label_embeddings(classes, templates)?)
}

/// An image file after its first look: embedding found in the cache, or the content hash of
/// a file whose crop went to the model.
enum Loaded {
    Cached(Vec<f32>),
    Decoded { hash: String },
}

/// Embeds the dataset's images (through the cache when there is one). `progress` is told
/// how many images are done after each batch.
pub fn embed_dataset(
    embedder: &dyn Embedder,
    dataset: &Dataset,
    cache: Option<&EmbeddingCache>,
    batch_size: usize,
    progress: &dyn Fn(usize),
) -> (Vec<Result<Vec<f32>, String>>, usize) {
    let mut out = Vec::with_capacity(dataset.items.len());
    let mut hits = 0;
    let mut done = 0;
    for chunk in dataset.items.chunks(batch_size.max(1)) {
        // Read each file once: its bytes give both the cache key and the crop.
        let read: Vec<Result<(Loaded, Option<Crop>), String>> = chunk
            .par_iter()
            .map(|(path, _)| {
                let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let hash = EmbeddingCache::content_hash(&bytes);
                if let Some(hit) = cache.and_then(|c| c.get(&hash)) {
                    return Ok((Loaded::Cached(hit), None));
                }
                let crop = embedder
                    .preprocess(path, &bytes)
                    .map_err(|e| e.to_string())?;
                Ok((Loaded::Decoded { hash }, Some(crop)))
            })
            .collect();
        let mut crops = Vec::new();
        let loaded: Vec<Result<Loaded, String>> = read
            .into_iter()
            .map(|r| {
                r.map(|(loaded, crop)| {
                    crops.extend(crop);
                    loaded
                })
            })
            .collect();
        let mut fresh = match embedder.embed_crops(crops) {
            Ok(e) => Ok(e.into_iter()),
            Err(e) => Err(e.to_string()),
        };
        for r in loaded {
            out.push(match r {
                Err(e) => Err(e),
                Ok(Loaded::Cached(hit)) => {
                    hits += 1;
                    Ok(hit)
                }
                Ok(Loaded::Decoded { hash }) => match &mut fresh {
                    Ok(iter) => {
                        let e = iter.next().expect("one embedding per decoded image");
                        if let Some(c) = cache {
                            // A cache that cannot be written only costs time next run.
                            let _ = c.put(&hash, &e);
                        }
                        Ok(e)
                    }
                    Err(msg) => Err(msg.clone()),
                },
            });
        }
        done += chunk.len();
        progress(done);
    }
    (out, hits)
}

pub fn evaluate(
    embedder: &dyn Embedder,
    dataset: &Dataset,
    options: &EvalOptions,
    batch_size: usize,
    progress: &dyn Fn(usize),
) -> Result<EvalReport> {
    let classifier = classifier(embedder, &dataset.classes, &options.templates)?;
    let head = options.logit_scale.head(&embedder.scoring());
    let (embedded, cache_hits) = embed_dataset(
        embedder,
        dataset,
        options.cache.as_ref(),
        batch_size,
        progress,
    );
    let mut report = EvalReport {
        classes: dataset.classes.clone(),
        templates: options.templates.clone(),
        images: Vec::new(),
        labels: Vec::new(),
        logits: Vec::new(),
        predictions: Vec::new(),
        logit_scale: head.logit_scale(),
        logit_bias: head.logit_bias(),
        probability: head.probability_name(),
        scoring: head,
        metrics: metrics::compute(&[], &[], dataset.classes.len()),
        failures: Vec::new(),
        cache_hits,
    };
    for ((path, label), result) in dataset.items.iter().zip(embedded) {
        match result {
            Ok(e) => {
                let cos: Vec<f32> = classifier.iter().map(|c| scoring::dot(&e, c)).collect();
                let logits = head.logits(&cos);
                report.predictions.push(metrics::argmax(&logits));
                report.logits.push(logits);
                report.images.push(path.clone());
                report.labels.push(*label);
            }
            Err(e) => report.failures.push((path.clone(), e)),
        }
    }
    report.metrics = metrics::compute(&report.logits, &report.labels, dataset.classes.len());
    Ok(report)
}
