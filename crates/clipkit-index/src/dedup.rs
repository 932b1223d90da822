//! Near-duplicate groups: every image's nearest neighbours above a cosine threshold, joined
//! transitively (union–find).
//!
//! A single global threshold is a known complaint about CLIP dedup: what "near-duplicate"
//! scores depends on the model and the collection. So each run also measures the
//! collection — the distribution of every image's nearest-neighbour cosine — and `auto`
//! picks the threshold that best separates the two populations in it (Otsu's method on
//! that histogram): re-encoded or resized copies cluster near 1.0, distinct photos below.

use std::path::PathBuf;

use serde::Serialize;

use crate::filter::Filter;
use crate::store::Store;
use crate::{IndexError, Result};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threshold {
    Fixed(f32),
    /// Chosen from this collection's nearest-neighbour distribution.
    Auto,
}

/// Bounds for the automatic threshold: below 0.85 CLIP pairs are merely similar scenes.
pub const AUTO_RANGE: (f32, f32) = (0.85, 0.995);

#[derive(Clone, Debug)]
pub struct DedupOptions {
    pub threshold: Threshold,
    /// Neighbours looked at per image (a group can still grow larger through chains).
    pub neighbours: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Calibration {
    /// Nearest-neighbour cosine percentiles: p50, p90, p99, p99.9 and the max.
    pub percentiles: Vec<(String, f32)>,
    /// The threshold `auto` would use.
    pub suggested: f32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Group {
    /// Members, largest file first — usually the one to keep.
    #[serde(serialize_with = "crate::paths::serialize_lossy_vec")]
    pub members: Vec<PathBuf>,
    /// The pairs above the threshold that joined the group, with their cosine.
    #[serde(serialize_with = "crate::paths::serialize_lossy_pairs")]
    pub pairs: Vec<(PathBuf, PathBuf, f32)>,
    pub min_score: f32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Dedup {
    pub threshold: f32,
    pub calibration: Calibration,
    pub groups: Vec<Group>,
}

pub fn dedup(store: &dyn Store, options: &DedupOptions) -> Result<Dedup> {
    let mut paths = Vec::new();
    let mut sizes = Vec::new();
    let mut vectors = Vec::new();
    store.scan(4096, &mut |entries| {
        for e in entries {
            paths.push(e.file.path.clone());
            sizes.push(e.file.size);
            vectors.push(e.vector.clone());
        }
        Ok(())
    })?;
    if paths.is_empty() {
        return Err(IndexError::EmptyStore {
            store: store.address(),
            action: "deduplicate".into(),
        });
    }
    let position: std::collections::HashMap<&PathBuf, usize> =
        paths.iter().enumerate().map(|(i, p)| (p, i)).collect();

    // Nearest neighbours of everything, self excluded.
    let k = options.neighbours.max(1) + 1;
    let mut neighbours: Vec<Vec<(usize, f32)>> = Vec::with_capacity(paths.len());
    for chunk in vectors.chunks(1024) {
        for hits in store.search(chunk, k, &Filter::default())? {
            let me = neighbours.len();
            neighbours.push(
                hits.into_iter()
                    .filter_map(|h| position.get(&h.path).map(|&j| (j, h.score)))
                    .filter(|&(j, _)| j != me)
                    .collect(),
            );
        }
    }

    let nearest: Vec<f32> = neighbours
        .iter()
        .map(|n| n.first().map_or(-1.0, |&(_, s)| s))
        .collect();
    let calibration = calibrate(&nearest);
    let threshold = match options.threshold {
        Threshold::Fixed(t) => t,
        Threshold::Auto => calibration.suggested,
    };

    let mut sets = UnionFind::new(paths.len());
    let mut pairs = Vec::new();
    for (i, n) in neighbours.iter().enumerate() {
        for &(j, s) in n {
            if s >= threshold {
                sets.union(i, j);
                pairs.push((i.min(j), i.max(j), s));
            }
        }
    }
    pairs.sort_by_key(|a| (a.0, a.1));
    pairs.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);

    let mut by_root: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for i in 0..paths.len() {
        by_root.entry(sets.find(i)).or_default().push(i);
    }
    let mut groups: Vec<Group> = by_root
        .into_values()
        .filter(|m| m.len() > 1)
        .map(|mut members| {
            members.sort_by(|&a, &b| {
                sizes[b]
                    .cmp(&sizes[a])
                    .then_with(|| paths[a].cmp(&paths[b]))
            });
            let root = sets.find(members[0]);
            let group_pairs: Vec<(PathBuf, PathBuf, f32)> = pairs
                .iter()
                .filter(|(a, _, _)| sets.find(*a) == root)
                .map(|&(a, b, s)| (paths[a].clone(), paths[b].clone(), s))
                .collect();
            Group {
                min_score: group_pairs
                    .iter()
                    .map(|p| p.2)
                    .fold(f32::INFINITY, f32::min),
                members: members.into_iter().map(|i| paths[i].clone()).collect(),
                pairs: group_pairs,
            }
        })
        .collect();
    groups.sort_by(|a, b| {
        b.members
            .len()
            .cmp(&a.members.len())
            .then_with(|| a.members.cmp(&b.members))
    });
    Ok(Dedup {
        threshold,
        calibration,
        groups,
    })
}

/// Percentiles of the nearest-neighbour cosines and Otsu's threshold over them.
pub fn calibrate(nearest: &[f32]) -> Calibration {
    let mut sorted: Vec<f32> = nearest
        .iter()
        .copied()
        .filter(|s| s.is_finite() && *s >= -1.0)
        .collect();
    sorted.sort_by(f32::total_cmp);
    let pct = |p: f64| -> f32 {
        if sorted.is_empty() {
            return f32::NAN;
        }
        let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        sorted[i.min(sorted.len() - 1)]
    };
    let percentiles = vec![
        ("p50".to_owned(), pct(50.0)),
        ("p90".to_owned(), pct(90.0)),
        ("p99".to_owned(), pct(99.0)),
        ("p99.9".to_owned(), pct(99.9)),
        ("max".to_owned(), pct(100.0)),
    ];
    Calibration {
        percentiles,
        suggested: otsu(&sorted).clamp(AUTO_RANGE.0, AUTO_RANGE.1),
    }
}

/// Otsu's threshold: the cut that maximises the between-class variance of the values.
pub fn otsu(values: &[f32]) -> f32 {
    const BINS: usize = 400;
    if values.len() < 2 {
        return AUTO_RANGE.1;
    }
    let (lo, hi) = (-1.0f32, 1.0f32);
    let width = (hi - lo) / BINS as f32;
    let mut hist = vec![0usize; BINS];
    for &v in values {
        let b = (((v - lo) / width) as usize).min(BINS - 1);
        hist[b] += 1;
    }
    let total = values.len() as f64;
    let centre = |b: usize| (lo + (b as f32 + 0.5) * width) as f64;
    let sum_all: f64 = (0..BINS).map(|b| hist[b] as f64 * centre(b)).sum();
    let (mut w0, mut sum0) = (0.0f64, 0.0f64);
    // Cuts anywhere in an empty gap score the same; take the middle of that plateau.
    let (mut best_lo, mut best_hi, mut best_var) = (AUTO_RANGE.1, AUTO_RANGE.1, -1.0f64);
    for (b, &count) in hist.iter().enumerate().take(BINS - 1) {
        w0 += count as f64;
        sum0 += count as f64 * centre(b);
        let w1 = total - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let m0 = sum0 / w0;
        let m1 = (sum_all - sum0) / w1;
        let var = w0 * w1 * (m0 - m1) * (m0 - m1);
        let cut = lo + (b + 1) as f32 * width;
        if var > best_var * (1.0 + 1e-9) {
            best_var = var;
            best_lo = cut;
            best_hi = cut;
        } else if var >= best_var * (1.0 - 1e-9) && best_hi >= cut - 1.5 * width {
            best_hi = cut;
        }
    }
    (best_lo + best_hi) / 2.0
}

struct UnionFind(Vec<usize>);

impl UnionFind {
    fn new(n: usize) -> Self {
        Self((0..n).collect())
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.0[ra.max(rb)] = ra.min(rb);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otsu_separates_two_populations() {
        let mut values: Vec<f32> = (0..200).map(|i| 0.6 + 0.2 * (i as f32 / 200.0)).collect();
        values.extend((0..20).map(|i| 0.97 + 0.03 * (i as f32 / 20.0)));
        let t = otsu(&values);
        assert!(t > 0.8 && t <= 0.97, "{t}");
    }

    #[test]
    fn union_find_joins_chains() {
        let mut u = UnionFind::new(5);
        u.union(0, 1);
        u.union(3, 1);
        assert_eq!(u.find(3), u.find(0));
        assert_ne!(u.find(2), u.find(0));
    }
}
