//! Zero-shot labelling of a whole collection, in both directions: for each label the images
//! that match it best, for each image the labels that fit it best.
//!
//! Both directions are nearest-neighbour queries, never an images × labels product: label →
//! images asks the store's index, image → labels asks an index built over the label
//! vectors (exact for a few thousand labels, HNSW beyond), so 10⁴ labels over 10⁶ images
//! stay feasible.

use std::path::PathBuf;

use clipkit_core::Scoring;
use rayon::prelude::*;
use serde::Serialize;

use crate::exact::ExactIndex;
use crate::filter::Filter;
use crate::store::{Hit, LabelVector, Store};
use crate::{IndexError, Result};

/// Up to this many labels, image → labels is exact and gets probabilities.
pub const EXACT_LABEL_LIMIT: usize = 4096;

#[derive(Clone, Debug)]
pub struct LabelOptions {
    pub images_per_label: usize,
    pub labels_per_image: usize,
    /// The model family's scoring head: cosines into logits, logits into probabilities
    /// (CLIP's softmax over the labels, SigLIP's sigmoid of each).
    pub scoring: Scoring,
    /// Drop pairs whose cosine is below this.
    pub min_score: Option<f32>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
    /// The scoring head's probability (softmax over all labels, or the label's own sigmoid);
    /// present when the label set is small enough to score exactly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prob: Option<f32>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ImageLabels {
    #[serde(serialize_with = "crate::paths::serialize_lossy")]
    pub path: PathBuf,
    pub labels: Vec<LabelScore>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LabelImages {
    pub label: String,
    pub images: Vec<Hit>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Labelling {
    /// The function that produced the `prob`s (`softmax`, `sigmoid`).
    pub probability: &'static str,
    pub per_label: Vec<LabelImages>,
    pub per_image: Vec<ImageLabels>,
}

/// Labels every image in `store` with `labels`.
pub fn label(
    store: &dyn Store,
    labels: &[LabelVector],
    options: &LabelOptions,
) -> Result<Labelling> {
    if labels.is_empty() {
        return Err(IndexError::EmptyLabels);
    }
    let keep = |score: f32| options.min_score.is_none_or(|m| score >= m);
    let vectors: Vec<Vec<f32>> = labels.iter().map(|l| l.vector.clone()).collect();

    let mut per_label = Vec::with_capacity(labels.len());
    if options.images_per_label > 0 {
        for (chunk_labels, chunk_vectors) in labels.chunks(256).zip(vectors.chunks(256)) {
            let hits = store.search(chunk_vectors, options.images_per_label, &Filter::default())?;
            for (l, mut images) in chunk_labels.iter().zip(hits) {
                images.retain(|h| keep(h.score));
                per_label.push(LabelImages {
                    label: l.label.clone(),
                    images,
                });
            }
        }
    }

    let mut per_image = Vec::new();
    if options.labels_per_image > 0 {
        let index = LabelIndex::new(labels, store.info().dim)?;
        store.scan(2048, &mut |entries| {
            let queries: Vec<Vec<f32>> = entries.iter().map(|e| e.vector.clone()).collect();
            let ranked = index.rank(&queries, options.labels_per_image, &options.scoring)?;
            for (e, ranked) in entries.iter().zip(ranked) {
                per_image.push(ImageLabels {
                    path: e.file.path.clone(),
                    labels: ranked
                        .into_iter()
                        .filter(|(_, score, _)| keep(*score))
                        .map(|(i, score, prob)| LabelScore {
                            label: labels[i].label.clone(),
                            score,
                            prob,
                        })
                        .collect(),
                });
            }
            Ok(())
        })?;
        per_image.sort_by(|a, b| a.path.cmp(&b.path));
    }
    Ok(Labelling {
        probability: options.scoring.probability_name(),
        per_label,
        per_image,
    })
}

/// A label index, its cosine, and its probability when scored exactly.
type Ranked = (usize, f32, Option<f32>);

/// Nearest labels of image vectors.
enum LabelIndex {
    Exact(ExactIndex),
    Ann(usearch::Index),
}

impl LabelIndex {
    fn new(labels: &[LabelVector], dim: usize) -> Result<Self> {
        if labels.len() <= EXACT_LABEL_LIMIT {
            let mut index = ExactIndex::new(dim);
            for l in labels {
                index.push(PathBuf::new(), &l.vector);
            }
            return Ok(Self::Exact(index));
        }
        let index = usearch::Index::new(&usearch::IndexOptions {
            dimensions: dim,
            metric: usearch::MetricKind::IP,
            quantization: usearch::ScalarKind::F32,
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 128,
            multi: false,
        })
        .map_err(ann_error)?;
        index
            .reserve_capacity_and_threads(labels.len(), rayon::current_num_threads())
            .map_err(ann_error)?;
        labels
            .par_iter()
            .enumerate()
            .try_for_each(|(i, l)| index.add(i as u64, &l.vector))
            .map_err(ann_error)?;
        Ok(Self::Ann(index))
    }

    /// Top `k` labels per query as (label index, cosine, probability if exact).
    fn rank(&self, queries: &[Vec<f32>], k: usize, scoring: &Scoring) -> Result<Vec<Vec<Ranked>>> {
        match self {
            Self::Exact(index) => {
                let n = index.len();
                let scores = index.scores(queries);
                Ok(scores
                    .chunks(n)
                    .map(|row| {
                        let probs = scoring.probabilities(&scoring.logits(row));
                        crate::exact::best(row, k)
                            .into_iter()
                            .map(|(i, s)| (i, s, Some(probs[i])))
                            .collect()
                    })
                    .collect())
            }
            Self::Ann(index) => queries
                .par_iter()
                .map(|q| {
                    let m = index.search(q, k).map_err(ann_error)?;
                    Ok(m.keys
                        .iter()
                        .zip(&m.distances)
                        .map(|(&key, &d)| (key as usize, 1.0 - d, None))
                        .collect())
                })
                .collect(),
        }
    }
}

fn ann_error(e: impl std::fmt::Display) -> IndexError {
    IndexError::Ann {
        store: "labels".into(),
        message: e.to_string(),
    }
}
