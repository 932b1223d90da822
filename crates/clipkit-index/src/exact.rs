//! Exact cosine search over vectors held in memory: one matrix product per block of queries,
//! then a partial sort per row. Used for small collections, as the reference the ANN path
//! is measured against, and for dense label × image scoring when both sides are small.

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};

pub struct ExactIndex {
    dim: usize,
    pub paths: Vec<PathBuf>,
    data: Vec<f32>,
    matrix: OnceLock<Option<Tensor>>,
}

/// Query blocks are sized so one block's score matrix stays under this many floats.
const MAX_SCORES_PER_BLOCK: usize = 1 << 24;

impl ExactIndex {
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            paths: Vec::new(),
            data: Vec::new(),
            matrix: OnceLock::new(),
        }
    }

    pub fn push(&mut self, path: PathBuf, vector: &[f32]) {
        debug_assert_eq!(vector.len(), self.dim);
        self.paths.push(path);
        self.data.extend_from_slice(vector);
        self.matrix = OnceLock::new();
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    pub fn vector(&self, row: usize) -> &[f32] {
        &self.data[row * self.dim..(row + 1) * self.dim]
    }

    fn matrix(&self) -> Option<&Tensor> {
        self.matrix
            .get_or_init(|| {
                Tensor::from_slice(&self.data, (self.len(), self.dim), &Device::Cpu)
                    .and_then(|m| m.t())
                    .ok()
            })
            .as_ref()
    }

    /// For each query, the `k` best rows and their cosine scores, best first (ties broken
    /// by row, so results are deterministic).
    pub fn top_k(&self, queries: &[Vec<f32>], k: usize) -> Vec<Vec<(usize, f32)>> {
        let n = self.len();
        if n == 0 || k == 0 {
            return vec![Vec::new(); queries.len()];
        }
        let block = (MAX_SCORES_PER_BLOCK / n).clamp(1, 1024);
        let mut out = Vec::with_capacity(queries.len());
        for chunk in queries.chunks(block) {
            let scores = self.scores(chunk);
            for row in scores.chunks(n) {
                out.push(best(row, k));
            }
        }
        out
    }

    /// Dense `queries × rows` cosine matrix, row-major.
    pub fn scores(&self, queries: &[Vec<f32>]) -> Vec<f32> {
        let n = self.len();
        let flat: Vec<f32> = queries.iter().flatten().copied().collect();
        let computed = self.matrix().and_then(|m| {
            let q = Tensor::from_vec(flat.clone(), (queries.len(), self.dim), &Device::Cpu).ok()?;
            q.matmul(m).ok()?.flatten_all().ok()?.to_vec1::<f32>().ok()
        });
        computed.unwrap_or_else(|| {
            // Plain loops if the tensor path is unavailable; same numbers, slower.
            queries
                .iter()
                .flat_map(|q| (0..n).map(move |r| clipkit_core::scores::dot(q, self.vector(r))))
                .collect()
        })
    }
}

/// Indices and values of the `k` largest entries, best first.
pub fn best(row: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    let k = k.min(row.len());
    let cmp = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx.into_iter().map(|i| (i, row[i])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_matches_a_sorted_scan() {
        let dim = 8;
        let mut index = ExactIndex::new(dim);
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let rows: Vec<Vec<f32>> = (0..300)
            .map(|_| (0..dim).map(|_| next()).collect())
            .collect();
        for (i, r) in rows.iter().enumerate() {
            index.push(PathBuf::from(format!("{i}.jpg")), r);
        }
        let q: Vec<f32> = (0..dim).map(|_| next()).collect();
        let got = index.top_k(std::slice::from_ref(&q), 5).remove(0);
        let mut want: Vec<(usize, f32)> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (i, clipkit_core::scores::dot(&q, r)))
            .collect();
        want.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.0, w.0);
            assert!((g.1 - w.1).abs() < 1e-5);
        }
        assert_eq!(got.len(), 5);
    }
}
