//! Spherical k-means over normalised embeddings: points are assigned by cosine, centroids
//! are renormalised means. With no `k`, the silhouette (cosine distance) on a sample picks
//! one — the usual criterion, cheap here because one sample × sample product serves every
//! candidate k.

use std::path::PathBuf;

use serde::Serialize;

use crate::exact::{best, ExactIndex};
use crate::label::LabelScore;
use crate::rng::SplitMix64;
use crate::store::{Hit, LabelVector, Store};
use crate::{IndexError, Result};

#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub k: Option<usize>,
    /// Largest k tried when choosing automatically.
    pub max_k: usize,
    pub iterations: usize,
    pub seed: u64,
    /// Images nearest each centroid reported as its representatives.
    pub representatives: usize,
    /// Points used to choose k (silhouette cost grows with the square of this).
    pub sample: usize,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            k: None,
            max_k: 20,
            iterations: 50,
            seed: 0,
            representatives: 5,
            sample: 2000,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Cluster {
    pub id: usize,
    pub size: usize,
    /// Mean cosine of the members to the centroid: how tight the cluster is.
    pub cohesion: f32,
    pub names: Vec<LabelScore>,
    pub representatives: Vec<Hit>,
    /// Every member, nearest the centroid first.
    pub members: Vec<Hit>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Clustering {
    pub k: usize,
    pub chosen_automatically: bool,
    /// Silhouette of each candidate k when k was chosen automatically.
    pub silhouettes: Vec<(usize, f32)>,
    pub clusters: Vec<Cluster>,
}

/// The result of k-means on a dense row-major matrix.
pub struct KMeans {
    pub centroids: Vec<Vec<f32>>,
    pub assignment: Vec<usize>,
    /// Cosine of each point to its centroid.
    pub similarity: Vec<f32>,
}

/// Spherical k-means with k-means++ seeding.
pub fn kmeans(data: &[Vec<f32>], k: usize, iterations: usize, seed: u64) -> KMeans {
    let n = data.len();
    let k = k.clamp(1, n.max(1));
    let mut rng = SplitMix64::new(seed);
    let mut centroids = seed_plus_plus(data, k, &mut rng);
    let mut assignment = vec![usize::MAX; n];
    let mut similarity = vec![0.0f32; n];
    for _ in 0..iterations.max(1) {
        let changed = assign(data, &centroids, &mut assignment, &mut similarity);
        let dim = data.first().map_or(0, Vec::len);
        let mut sums = vec![vec![0.0f32; dim]; k];
        let mut counts = vec![0usize; k];
        for (v, &c) in data.iter().zip(&assignment) {
            counts[c] += 1;
            for (s, x) in sums[c].iter_mut().zip(v) {
                *s += x;
            }
        }
        for c in 0..k {
            if counts[c] == 0 {
                // An empty cluster restarts at the point its centroid explains worst.
                let worst = (0..n)
                    .min_by(|&a, &b| similarity[a].total_cmp(&similarity[b]))
                    .unwrap_or(0);
                sums[c] = data[worst].clone();
                similarity[worst] = 1.0;
            }
            clipkit_core::scores::normalize(&mut sums[c]);
        }
        centroids = sums;
        if changed == 0 {
            break;
        }
    }
    assign(data, &centroids, &mut assignment, &mut similarity);
    KMeans {
        centroids,
        assignment,
        similarity,
    }
}

fn seed_plus_plus(data: &[Vec<f32>], k: usize, rng: &mut SplitMix64) -> Vec<Vec<f32>> {
    let n = data.len();
    let mut centroids = vec![data[rng.below(n)].clone()];
    let mut dist: Vec<f64> = data
        .iter()
        .map(|v| (1.0 - clipkit_core::scores::dot(v, &centroids[0]) as f64).max(0.0))
        .collect();
    while centroids.len() < k {
        let total: f64 = dist.iter().sum();
        let next = if total <= 0.0 {
            rng.below(n)
        } else {
            let mut target = rng.next_f64() * total;
            let mut pick = n - 1;
            for (i, d) in dist.iter().enumerate() {
                target -= d;
                if target <= 0.0 {
                    pick = i;
                    break;
                }
            }
            pick
        };
        let c = data[next].clone();
        for (d, v) in dist.iter_mut().zip(data) {
            *d = d.min((1.0 - clipkit_core::scores::dot(v, &c) as f64).max(0.0));
        }
        centroids.push(c);
    }
    centroids
}

/// Assigns each point to its most similar centroid; returns how many assignments changed.
fn assign(
    data: &[Vec<f32>],
    centroids: &[Vec<f32>],
    assignment: &mut [usize],
    similarity: &mut [f32],
) -> usize {
    let mut index = ExactIndex::new(centroids[0].len());
    for c in centroids {
        index.push(PathBuf::new(), c);
    }
    let mut changed = 0;
    let block = 16_384;
    for (start, chunk) in data.chunks(block).enumerate().map(|(i, c)| (i * block, c)) {
        let scores = index.scores(chunk);
        for (j, row) in scores.chunks(centroids.len()).enumerate() {
            let (c, s) = best(row, 1)[0];
            if assignment[start + j] != c {
                changed += 1;
                assignment[start + j] = c;
            }
            similarity[start + j] = s;
        }
    }
    changed
}

/// Mean silhouette (cosine distance) of a labelled sample, from its similarity matrix.
pub fn silhouette(sim: &[f32], n: usize, assignment: &[usize], k: usize) -> f32 {
    let mut total = 0.0f64;
    let mut sizes = vec![0usize; k];
    for &a in assignment {
        sizes[a] += 1;
    }
    for i in 0..n {
        let own = assignment[i];
        if sizes[own] <= 1 {
            continue;
        }
        let mut sums = vec![0.0f64; k];
        for j in 0..n {
            if i != j {
                sums[assignment[j]] += 1.0 - sim[i * n + j] as f64;
            }
        }
        let a = sums[own] / (sizes[own] - 1) as f64;
        let b = (0..k)
            .filter(|&c| c != own && sizes[c] > 0)
            .map(|c| sums[c] / sizes[c] as f64)
            .fold(f64::INFINITY, f64::min);
        if b.is_finite() {
            total += (b - a) / a.max(b).max(1e-12);
        }
    }
    (total / n.max(1) as f64) as f32
}

/// Clusters every image in `store`; names clusters from `labels` when given.
pub fn cluster(
    store: &dyn Store,
    options: &ClusterOptions,
    labels: Option<&[LabelVector]>,
) -> Result<Clustering> {
    let mut paths = Vec::new();
    let mut data = Vec::new();
    store.scan(4096, &mut |entries| {
        for e in entries {
            paths.push(e.file.path.clone());
            data.push(e.vector.clone());
        }
        Ok(())
    })?;
    if data.is_empty() {
        return Err(IndexError::EmptyStore {
            store: store.address(),
            action: "cluster".into(),
        });
    }
    let n = data.len();
    let mut silhouettes = Vec::new();
    let k = match options.k {
        Some(k) => k.clamp(1, n),
        None => {
            let mut rng = SplitMix64::new(options.seed ^ 0x5EED);
            let rows = rng.sample(n, options.sample);
            let sample: Vec<Vec<f32>> = rows.iter().map(|&i| data[i].clone()).collect();
            let mut index = ExactIndex::new(sample[0].len());
            for v in &sample {
                index.push(PathBuf::new(), v);
            }
            let sim = index.scores(&sample);
            let s = sample.len();
            let max_k = options.max_k.min(s.saturating_sub(1)).max(2);
            for k in 2..=max_k {
                let km = kmeans(&sample, k, options.iterations, options.seed);
                silhouettes.push((k, silhouette(&sim, s, &km.assignment, k)));
            }
            silhouettes
                .iter()
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
                .map_or(1, |&(k, _)| k)
                .min(n)
        }
    };
    let km = kmeans(&data, k, options.iterations, options.seed);
    let mut clusters: Vec<Cluster> = (0..k)
        .map(|id| Cluster {
            id,
            size: 0,
            cohesion: 0.0,
            names: Vec::new(),
            representatives: Vec::new(),
            members: Vec::new(),
        })
        .collect();
    for (i, (&c, &s)) in km.assignment.iter().zip(&km.similarity).enumerate() {
        clusters[c].members.push(Hit {
            path: paths[i].clone(),
            score: s,
        });
    }
    for (c, centroid) in clusters.iter_mut().zip(&km.centroids) {
        c.members.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.path.cmp(&b.path))
        });
        c.size = c.members.len();
        c.cohesion = c.members.iter().map(|m| m.score).sum::<f32>() / c.size.max(1) as f32;
        c.representatives = c
            .members
            .iter()
            .take(options.representatives)
            .cloned()
            .collect();
        if let Some(labels) = labels {
            c.names = name(centroid, labels, 3);
        }
    }
    clusters.retain(|c| c.size > 0);
    // Biggest first, renumbered, so ids read as ranks.
    clusters.sort_by(|a, b| {
        b.size
            .cmp(&a.size)
            .then_with(|| a.members[0].path.cmp(&b.members[0].path))
    });
    for (i, c) in clusters.iter_mut().enumerate() {
        c.id = i;
    }
    Ok(Clustering {
        k: clusters.len(),
        chosen_automatically: options.k.is_none(),
        silhouettes,
        clusters,
    })
}

/// The labels closest to a centroid.
fn name(centroid: &[f32], labels: &[LabelVector], top: usize) -> Vec<LabelScore> {
    let scores: Vec<f32> = labels
        .iter()
        .map(|l| clipkit_core::scores::dot(centroid, &l.vector))
        .collect();
    best(&scores, top)
        .into_iter()
        .map(|(i, score)| LabelScore {
            label: labels[i].label.clone(),
            score,
            prob: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points around `k` random unit directions.
    pub(crate) fn blobs(
        k: usize,
        per: usize,
        dim: usize,
        spread: f32,
        seed: u64,
    ) -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut rng = SplitMix64::new(seed);
        let mut gauss = move || {
            let u = rng.next_f64().max(1e-12);
            let v = rng.next_f64();
            ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
        };
        let centres: Vec<Vec<f32>> = (0..k)
            .map(|_| {
                let mut c: Vec<f32> = (0..dim).map(|_| gauss()).collect();
                clipkit_core::scores::normalize(&mut c);
                c
            })
            .collect();
        let mut data = Vec::new();
        let mut truth = Vec::new();
        for (ci, c) in centres.iter().enumerate() {
            for _ in 0..per {
                let mut v: Vec<f32> = c.iter().map(|x| x + spread * gauss()).collect();
                clipkit_core::scores::normalize(&mut v);
                data.push(v);
                truth.push(ci);
            }
        }
        (data, truth)
    }

    #[test]
    fn kmeans_recovers_separated_blobs_and_assigns_to_nearest_centroid() {
        let (data, truth) = blobs(4, 40, 32, 0.05, 1);
        let km = kmeans(&data, 4, 50, 3);
        // Same partition as the truth (up to renaming).
        for i in 0..data.len() {
            for j in 0..data.len() {
                assert_eq!(truth[i] == truth[j], km.assignment[i] == km.assignment[j]);
            }
        }
        // Brute force: every point sits with its most similar centroid.
        for (v, &a) in data.iter().zip(&km.assignment) {
            let sims: Vec<f32> = km
                .centroids
                .iter()
                .map(|c| clipkit_core::scores::dot(v, c))
                .collect();
            assert_eq!(best(&sims, 1)[0].0, a);
        }
    }

    #[test]
    fn silhouette_prefers_the_true_k() {
        let (data, _) = blobs(5, 30, 32, 0.05, 2);
        let mut index = ExactIndex::new(32);
        for v in &data {
            index.push(PathBuf::new(), v);
        }
        let sim = index.scores(&data);
        let score = |k| silhouette(&sim, data.len(), &kmeans(&data, k, 50, 0).assignment, k);
        let s5 = score(5);
        assert!(s5 > score(2) && s5 > score(3) && s5 > score(8), "{s5}");
    }
}
