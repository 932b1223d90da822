//! Zero-shot labelling of a whole collection, in both directions: for each label the images
//! that match it best, for each image the labels that fit it best.
//!
//! Label → images is a nearest-neighbour query per label, asked of the store in large
//! batches (the store spreads a batch over all cores and pays its per-call work once).
//!
//! Image → labels streams the store once, a chunk of images at a time, and scores each chunk
//! against every label with one matrix product, keeping only each image's top `k`: the
//! images × labels matrix exists one chunk at a time (a few tens of MB), never whole. It was
//! chosen over an HNSW index of the labels by measurement (docs/labelling.md): at 10⁴ labels
//! the product runs near the machine's peak FLOP rate and is exact, so every image gets its
//! true best labels and the probabilities of the family's scoring head, while a graph walk
//! per image was several times slower and approximate. Reading the store and scoring overlap: one thread
//! reads chunks while the others multiply.

use std::path::PathBuf;
use std::sync::mpsc;

use clipkit_core::Scoring;
use rayon::prelude::*;
use serde::Serialize;

use crate::filter::Filter;
use crate::store::{Entry, Hit, LabelVector, Store};
use crate::{IndexError, Result};

/// Labels asked of the store per search call: large enough that its per-call work is
/// amortised and every core is busy, small enough for the progress bar to move.
const LABEL_BATCH: usize = 512;
/// Images scored per matrix product: the score block is `IMAGE_CHUNK × labels` floats.
const IMAGE_CHUNK: usize = 1024;

#[derive(Clone, Debug)]
pub struct LabelOptions {
    pub images_per_label: usize,
    pub labels_per_image: usize,
    /// The model family's scoring head: cosines into logits, logits into probabilities
    /// (CLIP's softmax over the labels, SigLIP's sigmoid of each).
    pub scoring: Scoring,
    /// Drop pairs whose cosine is below this.
    pub min_score: Option<f32>,
    /// Label only the images this lets through, in both directions (a label's top images are
    /// chosen among them, and only they get labels).
    pub filter: Filter,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
    /// The scoring head's probability (softmax over all labels, or the label's own sigmoid).
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

/// Which half of a labelling run a progress report is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Top images per label; counted in labels.
    LabelsToImages,
    /// Top labels per image; counted in images read from the store (filtered out or not).
    ImagesToLabels,
}

/// Progress callbacks, so the library needs no terminal (called from one thread at a time).
pub trait LabelProgress: Sync {
    fn start(&self, _stage: Stage, _total: u64) {}
    fn advance(&self, _done: u64) {}
    fn finish(&self, _stage: Stage) {}
}

pub struct NoProgress;
impl LabelProgress for NoProgress {}

/// Labels every image in `store` (that `options.filter` lets through) with `labels`.
pub fn label(
    store: &dyn Store,
    labels: &[LabelVector],
    options: &LabelOptions,
) -> Result<Labelling> {
    label_with_progress(store, labels, options, &NoProgress)
}

/// [`label`], reporting progress to `progress`.
pub fn label_with_progress(
    store: &dyn Store,
    labels: &[LabelVector],
    options: &LabelOptions,
    progress: &dyn LabelProgress,
) -> Result<Labelling> {
    if labels.is_empty() {
        return Err(IndexError::EmptyLabels);
    }
    let dim = store.info().dim;
    if let Some(l) = labels.iter().find(|l| l.vector.len() != dim) {
        return Err(IndexError::WrongVectorDimension {
            store: store.address(),
            expected: dim,
            got: l.vector.len(),
        });
    }
    let per_label = if options.images_per_label > 0 {
        labels_to_images(store, labels, options, progress)?
    } else {
        Vec::new()
    };
    let per_image = if options.labels_per_image > 0 {
        images_to_labels(store, labels, options, progress)?
    } else {
        Vec::new()
    };
    Ok(Labelling {
        probability: options.scoring.probability_name(),
        per_label,
        per_image,
    })
}

fn keep(options: &LabelOptions, score: f32) -> bool {
    options.min_score.is_none_or(|m| score >= m)
}

fn labels_to_images(
    store: &dyn Store,
    labels: &[LabelVector],
    options: &LabelOptions,
    progress: &dyn LabelProgress,
) -> Result<Vec<LabelImages>> {
    progress.start(Stage::LabelsToImages, labels.len() as u64);
    let mut out = Vec::with_capacity(labels.len());
    for chunk in labels.chunks(LABEL_BATCH) {
        let queries: Vec<Vec<f32>> = chunk.iter().map(|l| l.vector.clone()).collect();
        let hits = store.search(&queries, options.images_per_label, &options.filter)?;
        for (l, mut images) in chunk.iter().zip(hits) {
            images.retain(|h| keep(options, h.score));
            out.push(LabelImages {
                label: l.label.clone(),
                images,
            });
        }
        progress.advance(chunk.len() as u64);
    }
    progress.finish(Stage::LabelsToImages);
    Ok(out)
}

fn images_to_labels(
    store: &dyn Store,
    labels: &[LabelVector],
    options: &LabelOptions,
    progress: &dyn LabelProgress,
) -> Result<Vec<ImageLabels>> {
    let scorer = LabelScorer::new(labels, options.scoring)?;
    progress.start(Stage::ImagesToLabels, store.len()? as u64);
    let k = options.labels_per_image;
    let mut out = Vec::new();
    // One thread reads chunks from the store while this one scores the previous chunk; the
    // channel holds one chunk so memory stays at about three chunks.
    std::thread::scope(|scope| -> Result<()> {
        let (send, receive) = mpsc::sync_channel::<Vec<Entry>>(1);
        let reader = scope.spawn(move || {
            store.scan(IMAGE_CHUNK, &mut |entries| {
                // The receiver only hangs up when scoring failed; its error is the one
                // reported, this one just stops the scan.
                send.send(entries.to_vec()).map_err(|_| IndexError::Ann {
                    store: store.address(),
                    message: "labelling stopped".into(),
                })
            })
        });
        let mut scored = Ok(());
        for entries in receive.iter() {
            let read = entries.len() as u64;
            let kept: Vec<Entry> = if options.filter.is_empty() {
                entries
            } else {
                entries
                    .into_iter()
                    .filter(|e| options.filter.matches(&e.file))
                    .collect()
            };
            if !kept.is_empty() {
                match scorer.rank(&kept, k) {
                    Ok(ranked) => {
                        for (e, ranked) in kept.into_iter().zip(ranked) {
                            out.push(ImageLabels {
                                path: e.file.path,
                                labels: ranked
                                    .into_iter()
                                    .filter(|r| keep(options, r.score))
                                    .map(|r| LabelScore {
                                        label: labels[r.label].label.clone(),
                                        score: r.score,
                                        prob: Some(r.prob),
                                    })
                                    .collect(),
                            });
                        }
                    }
                    Err(e) => {
                        scored = Err(e);
                        break;
                    }
                }
            }
            progress.advance(read);
        }
        drop(receive);
        let read = reader
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        scored?;
        read
    })?;
    progress.finish(Stage::ImagesToLabels);
    out.par_sort_unstable_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// One of an image's best labels.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Ranked {
    /// Index into the label list.
    label: usize,
    /// Cosine similarity.
    score: f32,
    /// The scoring head's probability over all the labels.
    prob: f32,
}

/// Every label's vector packed once as the weights of a linear layer (`labels × dim`), so a
/// chunk of images is scored by clipkit's own f32 GEMM kernel (AVX-512 or AVX2, all cores):
/// about twice the rate of candle's, which packs its operands again on every call.
struct LabelScorer {
    weights: clipkit_kernels::PackedWeights,
    labels: usize,
    dim: usize,
    scoring: Scoring,
}

impl LabelScorer {
    fn new(labels: &[LabelVector], scoring: Scoring) -> Result<Self> {
        let dim = labels[0].vector.len();
        if dim == 0 {
            return Err(IndexError::Ann {
                store: "labels".into(),
                message: "label vectors have no dimensions".into(),
            });
        }
        let flat: Vec<f32> = labels
            .iter()
            .flat_map(|l| l.vector.iter().copied())
            .collect();
        let weights = clipkit_kernels::PackedWeights::new(
            &flat,
            labels.len(),
            dim,
            None,
            clipkit_kernels::WeightFormat::F32,
        );
        Ok(Self {
            weights,
            labels: labels.len(),
            dim,
            scoring,
        })
    }

    /// The `k` best labels of each entry, best first (ties to the earlier label).
    fn rank(&self, entries: &[Entry], k: usize) -> Result<Vec<Vec<Ranked>>> {
        let flat: Vec<f32> = entries
            .iter()
            .flat_map(|e| e.vector.iter().copied())
            .collect();
        debug_assert_eq!(flat.len(), entries.len() * self.dim);
        let mut scores = vec![0f32; entries.len() * self.labels];
        self.weights
            .matmul(&flat, entries.len(), Default::default(), &mut scores);
        Ok(scores
            .par_chunks_mut(self.labels)
            .map(|row| self.best(row, k))
            .collect())
    }

    /// The `k` best entries of one image's row of cosines, with their probabilities (the row
    /// is used as scratch space).
    fn best(&self, row: &mut [f32], k: usize) -> Vec<Ranked> {
        let top = top_k(row, k);
        let Some(&(_, best)) = top.first() else {
            return Vec::new();
        };
        let mut ranked: Vec<Ranked> = top
            .iter()
            .map(|&(label, score)| Ranked {
                label,
                score,
                prob: clipkit_core::scoring::sigmoid(self.scoring.logit(score)),
            })
            .collect();
        if let Scoring::Softmax { .. } = self.scoring {
            // softmax(l)_i = exp(l_i − max) / Σ exp(l_j − max), max the best label's logit.
            let max = self.scoring.logit(best);
            for c in row.iter_mut() {
                *c = self.scoring.logit(*c) - max;
            }
            clipkit_kernels::act::exp_slice(row);
            let sum: f32 = row.iter().sum();
            for r in &mut ranked {
                r.prob = (self.scoring.logit(r.score) - max).exp() / sum;
            }
        }
        ranked
    }
}

/// Indices and values of the `k` largest entries, best first, ties to the lower index. One
/// pass with a small sorted list for the usual few labels per image; a partial sort beyond.
fn top_k(row: &[f32], k: usize) -> Vec<(usize, f32)> {
    let k = k.min(row.len());
    if k == 0 {
        return Vec::new();
    }
    if k > 32 {
        return crate::exact::best(row, k);
    }
    let mut top: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
    for (i, &s) in row.iter().enumerate() {
        if top.len() == k && s.total_cmp(&top[k - 1].1).is_le() {
            continue;
        }
        // After every kept entry that is at least as good: equal scores keep index order.
        let at = top.partition_point(|&(_, t)| t.total_cmp(&s).is_ge());
        top.insert(at, (i, s));
        top.truncate(k);
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_agrees_with_a_full_sort() {
        let row = [0.1, 0.5, -0.2, 0.5, 0.9, 0.0, 0.9, 0.3];
        for k in 0..=row.len() + 1 {
            assert_eq!(top_k(&row, k), crate::exact::best(&row, k), "k = {k}");
        }
        let long: Vec<f32> = (0..500).map(|i| ((i * 7919) % 263) as f32).collect();
        assert_eq!(top_k(&long, 40), crate::exact::best(&long, 40));
    }

    /// Both directions against brute force over the filtered images: same labels, same
    /// order, the probabilities of the scoring head over every label.
    #[test]
    fn labelling_equals_brute_force_over_the_filtered_images() {
        use crate::store::{Batch, CollectionInfo, FileRecord};
        let dim = 16;
        let mut seed = 11u64;
        let mut unit = || {
            let mut v: Vec<f32> = (0..dim)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect();
            clipkit_core::scores::normalize(&mut v);
            v
        };
        let dir = tempfile::tempdir().unwrap();
        let info = CollectionInfo {
            model: "m".into(),
            dim,
            preprocess: clipkit_image::PreprocessMode::Transformers,
            family: None,
        };
        let mut store = crate::embedded::EmbeddedStore::open_dir(dir.path(), Some(&info)).unwrap();
        let entries: Vec<Entry> = (0..3000)
            .map(|i| Entry {
                file: FileRecord {
                    path: PathBuf::from(format!("/p/{i:04}.jpg")),
                    size: i,
                    mtime_ns: 0,
                    hash: String::new(),
                    meta: Default::default(),
                },
                vector: unit(),
            })
            .collect();
        store
            .apply(Batch {
                upserts: entries.clone(),
                removals: vec![],
            })
            .unwrap();
        let labels: Vec<LabelVector> = (0..700)
            .map(|i| LabelVector {
                label: format!("l{i}"),
                vector: unit(),
            })
            .collect();
        let filter = Filter {
            min_size: Some(1000),
            ..Default::default()
        };
        for scoring in [
            Scoring::Softmax { logit_scale: 100.0 },
            Scoring::Sigmoid {
                logit_scale: 10.0,
                logit_bias: -5.0,
            },
        ] {
            let options = LabelOptions {
                images_per_label: 4,
                labels_per_image: 3,
                scoring,
                min_score: None,
                filter: filter.clone(),
            };
            let got = label(&store, &labels, &options).unwrap();
            let kept: Vec<&Entry> = entries.iter().filter(|e| filter.matches(&e.file)).collect();
            assert_eq!(got.per_image.len(), kept.len());
            for (g, e) in got.per_image.iter().zip(&kept) {
                assert_eq!(g.path, e.file.path);
                let row: Vec<f32> = labels
                    .iter()
                    .map(|l| clipkit_core::scores::dot(&l.vector, &e.vector))
                    .collect();
                let probs = scoring.probabilities(&scoring.logits(&row));
                let want = crate::exact::best(&row, 3);
                for (gl, (i, score)) in g.labels.iter().zip(&want) {
                    assert_eq!(gl.label, labels[*i].label);
                    assert!((gl.score - score).abs() < 1e-5);
                    assert!((gl.prob.unwrap() - probs[*i]).abs() < 1e-4);
                }
            }
            for (g, l) in got.per_label.iter().zip(&labels) {
                let mut want: Vec<(f32, &PathBuf)> = kept
                    .iter()
                    .map(|e| {
                        (
                            clipkit_core::scores::dot(&l.vector, &e.vector),
                            &e.file.path,
                        )
                    })
                    .collect();
                want.sort_by(|a, b| b.0.total_cmp(&a.0));
                let paths: Vec<&PathBuf> = g.images.iter().map(|h| &h.path).collect();
                let want: Vec<&PathBuf> = want.iter().take(4).map(|w| w.1).collect();
                assert_eq!(paths, want, "{}", l.label);
            }
        }
    }
}
