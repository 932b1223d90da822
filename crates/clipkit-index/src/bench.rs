//! The store benchmark behind `clipkit bench store`: what an embedded store costs and how well
//! it answers at a given size, measured the way docs/store-scale.md reports it.
//!
//! The vectors are synthetic clustered unit vectors (real embeddings are clustered, which is
//! what makes graph search hard) or rows of an f32 `.npy` file. One run measures ingest,
//! the graph build, memory and disk, search latency and recall@10 against exact search,
//! filtered search (a date range of the requested selectivity, checked against exact search
//! over [`Filter::matches`]), labelling, and — on the same graph and queries — bare usearch,
//! so the store's own overhead is the difference between the two.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clipkit_image::{PhotoMetadata, PreprocessMode};
use rayon::prelude::*;
use serde::Serialize;

use crate::embedded::{EmbeddedStore, GraphParams};
use crate::exact::ExactIndex;
use crate::filter::Filter;
use crate::label::{label, LabelOptions};
use crate::store::{Batch, CollectionInfo, Entry, FileRecord, Hit, LabelVector, Store};
use crate::{IndexError, Result};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Vectors in the store (with `npy`: at most this many rows of the file).
    pub vectors: usize,
    /// Dimension of the synthetic vectors (ignored with `npy`, whose rows set it).
    pub dim: usize,
    /// Search queries, timed one at a time.
    pub queries: usize,
    /// Random label vectors for the labelling run (0 skips it).
    pub labels: usize,
    /// Fraction of the store a date-range filter lets through (`None` skips filtered search).
    pub filter_selectivity: Option<f64>,
    /// Rows of an f32 `.npy` file of shape (N, D) instead of synthetic vectors; the rows
    /// after the indexed ones are the queries when there are enough, else indexed rows.
    pub npy: Option<PathBuf>,
    /// Where the store is built (a fresh subdirectory, removed afterwards).
    pub dir: PathBuf,
    pub graph: GraphParams,
    pub seed: u64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            vectors: 100_000,
            dim: 512,
            queries: 1000,
            labels: 0,
            filter_selectivity: None,
            npy: None,
            dir: std::env::temp_dir(),
            graph: GraphParams::default(),
            seed: 42,
        }
    }
}

/// One run's numbers. Times in seconds (`_s`) or milliseconds (`_ms`), sizes in MiB.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub cpu: String,
    pub threads: usize,
    pub vectors: usize,
    pub dim: usize,
    pub queries: usize,
    pub connectivity: usize,
    pub expansion_add: usize,
    pub expansion_search: usize,
    pub graph_scalar: &'static str,
    pub rescored_candidates: usize,
    /// Writing every vector into SQLite, batches of 10 000.
    pub ingest_s: f64,
    pub ingest_per_s: f64,
    /// Building the graph and the rescoring file from SQLite, all cores.
    pub build_s: f64,
    pub build_per_s: f64,
    /// Peak resident memory during the build, over what the process held before it.
    pub build_rss_delta_mib: Option<f64>,
    /// The graph's memory as usearch counts it (links + i8 vectors).
    pub graph_mib: f64,
    pub disk_mib: f64,
    pub sqlite_mib: f64,
    pub graph_file_mib: f64,
    pub vectors_file_mib: f64,
    /// Reopening the store and answering a first query (the graph is memory-mapped).
    pub open_s: f64,
    pub graph_mapped: bool,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub recall_at_10: f64,
    /// Exact search (a matrix product over every vector), per query in a batch.
    pub exact_ms_per_query: f64,
    pub filter_selectivity: Option<f64>,
    pub filtered_p50_ms: Option<f64>,
    pub filtered_p99_ms: Option<f64>,
    pub filtered_recall_at_10: Option<f64>,
    pub labels: usize,
    /// `label` with top-10 images per label and the best label per image.
    pub label_s: Option<f64>,
    /// The same graph file and queries through usearch alone (search + the same f32
    /// rescoring from memory): what the store adds is `p50_ms - raw_p50_ms`.
    pub raw_p50_ms: f64,
    pub raw_p99_ms: f64,
    pub raw_recall_at_10: f64,
}

/// Runs the benchmark; `progress` hears a line per phase.
pub fn run(options: &BenchOptions, progress: &mut dyn FnMut(&str)) -> Result<BenchReport> {
    let data = Data::new(options)?;
    let (n, dim) = (data.rows.len(), data.dim);
    let store_dir = options
        .dir
        .join(format!("clipkit-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store_dir);
    let cleanup = RemoveOnDrop(store_dir.clone());
    let info = CollectionInfo {
        model: "bench".into(),
        dim,
        preprocess: PreprocessMode::Transformers,
        family: None,
    };
    let open = |create: Option<&CollectionInfo>| -> Result<EmbeddedStore> {
        let mut store = EmbeddedStore::open_dir(&store_dir, create)?;
        // The benchmark is of the graph, whatever the size (small stores are otherwise exact).
        store.set_exact_limit(0);
        store.set_graph_params(options.graph);
        Ok(store)
    };
    let mut store = open(Some(&info))?;
    let selectivity = options.filter_selectivity;

    progress(&format!("ingest: {n} vectors × {dim}"));
    let t = Instant::now();
    for (chunk_index, chunk) in data.rows.chunks(10_000).enumerate() {
        let upserts = chunk
            .iter()
            .enumerate()
            .map(|(j, v)| {
                let i = chunk_index * 10_000 + j;
                Entry {
                    file: data.record(i),
                    vector: v.clone(),
                }
            })
            .collect();
        store.apply(Batch {
            upserts,
            removals: vec![],
        })?;
    }
    let ingest_s = t.elapsed().as_secs_f64();

    progress("build: graph + rescoring file");
    let rss_before = memory_kib("VmRSS:");
    reset_peak_rss();
    let t = Instant::now();
    store.flush()?;
    let build_s = t.elapsed().as_secs_f64();
    let build_rss_delta_mib = match (rss_before, memory_kib("VmHWM:")) {
        (Some(before), Some(peak)) => Some(peak.saturating_sub(before) as f64 / 1024.0),
        _ => None,
    };
    let footprint = store.ann_footprint()?;
    // Closed, as a store rests between runs (closing checkpoints SQLite's WAL into the file).
    drop(store);
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let sqlite_bytes = file_sizes(&store_dir, |name| name.starts_with("store.sqlite"));
    let disk_bytes = file_sizes(&store_dir, |_| true);

    progress("search");
    let t = Instant::now();
    let store = open(None)?;
    store.search(&data.queries[..1], 1, &Filter::default())?;
    let open_s = t.elapsed().as_secs_f64();
    let graph_mapped = store.ann_footprint()?.mapped;

    let exact_index = {
        let mut index = ExactIndex::new(dim);
        for (i, v) in data.rows.iter().enumerate() {
            index.push(PathBuf::from(i.to_string()), v);
        }
        index
    };
    let t = Instant::now();
    let truth: Vec<Vec<usize>> = exact_index
        .top_k(&data.queries, 10)
        .into_iter()
        .map(|hits| hits.into_iter().map(|(row, _)| row).collect())
        .collect();
    let exact_ms_per_query = t.elapsed().as_secs_f64() * 1e3 / data.queries.len().max(1) as f64;
    drop(exact_index);

    let (latencies, found) = timed_searches(&store, &data.queries, &Filter::default())?;
    let (p50_ms, p99_ms) = (percentile(&latencies, 50.0), percentile(&latencies, 99.0));
    let recall_at_10 = recall(&found, &truth, |h| data.row_of(&h.path));

    let (mut filtered_p50_ms, mut filtered_p99_ms, mut filtered_recall_at_10) = (None, None, None);
    if let Some(s) = selectivity {
        progress(&format!("filtered search: {:.1}% of the store", s * 100.0));
        let filter = data.date_filter(s);
        let rows: Vec<usize> = (0..n)
            .filter(|&i| filter.matches(&data.record(i)))
            .collect();
        let mut index = ExactIndex::new(dim);
        for &i in &rows {
            index.push(PathBuf::new(), &data.rows[i]);
        }
        let truth: Vec<Vec<usize>> = index
            .top_k(&data.queries, 10)
            .into_iter()
            .map(|hits| hits.into_iter().map(|(r, _)| rows[r]).collect())
            .collect();
        drop(index);
        let (latencies, found) = timed_searches(&store, &data.queries, &filter)?;
        filtered_p50_ms = Some(percentile(&latencies, 50.0));
        filtered_p99_ms = Some(percentile(&latencies, 99.0));
        filtered_recall_at_10 = Some(recall(&found, &truth, |h| data.row_of(&h.path)));
    }

    let mut label_s = None;
    if options.labels > 0 {
        progress(&format!("label: {} labels", options.labels));
        let labels: Vec<LabelVector> = data
            .label_vectors(options.labels, options.seed ^ 0x1abe1)
            .into_iter()
            .enumerate()
            .map(|(i, vector)| LabelVector {
                label: format!("label {i}"),
                vector,
            })
            .collect();
        let t = Instant::now();
        label(
            &store,
            &labels,
            &LabelOptions {
                images_per_label: 10,
                labels_per_image: 1,
                scoring: clipkit_core::Scoring::Softmax { logit_scale: 100.0 },
                min_score: None,
                filter: Filter::default(),
            },
        )?;
        label_s = Some(t.elapsed().as_secs_f64());
    }
    drop(store);

    progress("bare usearch: the same graph file and queries");
    let (raw_latencies, raw_found) = raw_searches(&store_dir, &data, &options.graph)?;
    let raw_recall_at_10 = recall(&raw_found, &truth, |&row| Some(row));
    drop(cleanup);

    Ok(BenchReport {
        cpu: cpu_model(),
        threads: rayon::current_num_threads(),
        vectors: n,
        dim,
        queries: data.queries.len(),
        connectivity: options.graph.connectivity,
        expansion_add: options.graph.expansion_add,
        expansion_search: options.graph.expansion_search,
        graph_scalar: if options.graph.i8 { "i8" } else { "f16" },
        rescored_candidates: options.graph.candidates(10),
        ingest_s,
        ingest_per_s: n as f64 / ingest_s.max(1e-9),
        build_s,
        build_per_s: n as f64 / build_s.max(1e-9),
        build_rss_delta_mib,
        graph_mib: mib(footprint.graph_memory_bytes as u64),
        disk_mib: mib(disk_bytes),
        sqlite_mib: mib(sqlite_bytes),
        graph_file_mib: mib(footprint.graph_file_bytes as u64),
        vectors_file_mib: mib(footprint.vectors_file_bytes as u64),
        open_s,
        graph_mapped,
        p50_ms,
        p99_ms,
        recall_at_10,
        exact_ms_per_query,
        filter_selectivity: selectivity,
        filtered_p50_ms,
        filtered_p99_ms,
        filtered_recall_at_10,
        labels: options.labels,
        label_s,
        raw_p50_ms: percentile(&raw_latencies, 50.0),
        raw_p99_ms: percentile(&raw_latencies, 99.0),
        raw_recall_at_10,
    })
}

/// Each query alone through `Store::search` (k = 10): latencies in ms and the hits.
fn timed_searches(
    store: &dyn Store,
    queries: &[Vec<f32>],
    filter: &Filter,
) -> Result<(Vec<f64>, Vec<Vec<Hit>>)> {
    let mut latencies = Vec::with_capacity(queries.len());
    let mut found = Vec::with_capacity(queries.len());
    for q in queries {
        let t = Instant::now();
        let hits = store.search(std::slice::from_ref(q), 10, filter)?;
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        found.push(hits.into_iter().next().unwrap_or_default());
    }
    Ok((latencies, found))
}

/// The store's saved graph loaded by usearch alone, each query searched and its candidates
/// rescored against the f32 vectors in memory, as a program using usearch directly would.
fn raw_searches(
    store_dir: &Path,
    data: &Data,
    params: &GraphParams,
) -> Result<(Vec<f64>, Vec<Vec<usize>>)> {
    let ann_error = |e: &dyn std::fmt::Display| IndexError::Ann {
        store: store_dir.display().to_string(),
        message: e.to_string(),
    };
    let index =
        usearch::Index::new(&params.usearch_options(data.dim)).map_err(|e| ann_error(&e))?;
    index
        .load(&store_dir.join("ann.usearch").to_string_lossy())
        .map_err(|e| ann_error(&e))?;
    index.change_expansion_search(params.expansion_search);
    let rows: HashMap<u64, usize> = (0..data.rows.len())
        .map(|i| (data.record(i).id() as u64, i))
        .collect();
    let candidates = params.candidates(10);
    let mut latencies = Vec::with_capacity(data.queries.len());
    let mut found = Vec::with_capacity(data.queries.len());
    for q in &data.queries {
        let t = Instant::now();
        let m = index.search(q, candidates).map_err(|e| ann_error(&e))?;
        let mut scored: Vec<(usize, f32)> = m
            .keys
            .iter()
            .filter_map(|k| rows.get(k))
            .map(|&row| (row, clipkit_core::scores::dot(q, &data.rows[row])))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored.truncate(10);
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        found.push(scored.into_iter().map(|(row, _)| row).collect());
    }
    Ok((latencies, found))
}

/// Mean fraction of each query's true top-10 found in its top-10.
fn recall<T>(found: &[Vec<T>], truth: &[Vec<usize>], row: impl Fn(&T) -> Option<usize>) -> f64 {
    let mut hit = 0usize;
    let mut total = 0usize;
    for (got, want) in found.iter().zip(truth) {
        total += want.len();
        hit += got
            .iter()
            .filter_map(&row)
            .filter(|r| want.contains(r))
            .count();
    }
    if total == 0 {
        1.0
    } else {
        hit as f64 / total as f64
    }
}

fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

/// The vectors, the queries, and the synthetic file records they are stored under.
struct Data {
    dim: usize,
    rows: Vec<Vec<f32>>,
    queries: Vec<Vec<f32>>,
    centres: Vec<Vec<f32>>,
    spread: f32,
}

/// Synthetic capture dates start here (2020-01-01) and are a minute apart, in a scrambled
/// order, so a date range of a fraction of the span holds that fraction of the store.
const FIRST_TAKEN: i64 = 1_577_836_800;

impl Data {
    fn new(options: &BenchOptions) -> Result<Self> {
        match &options.npy {
            Some(path) => Self::from_npy(path, options),
            None => Ok(Self::synthetic(options)),
        }
    }

    fn synthetic(options: &BenchOptions) -> Self {
        let dim = options.dim;
        let mut gen = Gen(options.seed);
        let centres: Vec<Vec<f32>> = (0..2000.min(options.vectors.max(1)))
            .map(|_| gen.unit(None, dim, 1.0))
            .collect();
        // Noise comparable to the centre spread: neighbours are close but not trivially so.
        let spread = 1.2 / (dim as f32).sqrt() * 4.0;
        let rows: Vec<Vec<f32>> = (0..options.vectors)
            .into_par_iter()
            .map(|i| {
                let mut gen = Gen(options.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                gen.unit(Some(&centres[i % centres.len()]), dim, spread)
            })
            .collect();
        let queries = (0..options.queries)
            .map(|q| gen.unit(Some(&centres[(q * 7) % centres.len()]), dim, spread))
            .collect();
        Self {
            dim,
            rows,
            queries,
            centres,
            spread,
        }
    }

    fn from_npy(path: &Path, options: &BenchOptions) -> Result<Self> {
        let bad = |problem: String| IndexError::BadFile {
            path: path.to_owned(),
            problem,
        };
        let t = candle_core::Tensor::read_npy(path).map_err(|e| bad(e.to_string()))?;
        let (total, dim) = t
            .dims2()
            .map_err(|_| bad(format!("expected shape (N, D), got {:?}", t.dims())))?;
        let t = t
            .to_dtype(candle_core::DType::F32)
            .map_err(|e| bad(e.to_string()))?;
        let mut all: Vec<Vec<f32>> = t.to_vec2().map_err(|e| bad(e.to_string()))?;
        for v in &mut all {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                v.iter_mut().for_each(|x| *x /= norm);
            }
        }
        if total == 0 {
            return Err(bad("no rows".into()));
        }
        let n = options.vectors.min(total);
        let queries = if total - n >= options.queries {
            all[n..n + options.queries].to_vec()
        } else {
            let mut gen = Gen(options.seed);
            (0..options.queries)
                .map(|_| all[(gen.next_u64() % n as u64) as usize].clone())
                .collect()
        };
        all.truncate(n);
        let centres = all.iter().step_by((n / 2000).max(1)).cloned().collect();
        Ok(Self {
            dim,
            rows: all,
            queries,
            centres,
            spread: 0.5 / (dim as f32).sqrt(),
        })
    }

    /// The file record of row `i`: its path encodes the row; its capture date (and mtime,
    /// which a store without dates filters on) is row `i`'s place in a scrambled order.
    fn record(&self, i: usize) -> FileRecord {
        let taken = FIRST_TAKEN + 60 * scramble(i as u64, self.rows.len() as u64) as i64;
        FileRecord {
            path: PathBuf::from(format!("/photos/{:03}/{i:08}.jpg", i % 1000)),
            size: 1_000_000 + i as u64,
            mtime_ns: taken * 1_000_000_000,
            hash: format!("{i:064x}"),
            meta: PhotoMetadata {
                taken: Some(taken),
                ..Default::default()
            },
        }
    }

    fn row_of(&self, path: &Path) -> Option<usize> {
        path.file_stem()?.to_str()?.parse().ok()
    }

    /// Taken in the first `selectivity` of the dates' span.
    fn date_filter(&self, selectivity: f64) -> Filter {
        let minutes = (self.rows.len() as f64 * selectivity.clamp(0.0, 1.0)).round() as i64;
        Filter {
            after: Some(FIRST_TAKEN),
            before: Some(FIRST_TAKEN + 60 * minutes),
            ..Default::default()
        }
    }

    fn label_vectors(&self, count: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut gen = Gen(seed);
        (0..count)
            .map(|l| {
                gen.unit(
                    Some(&self.centres[l % self.centres.len()]),
                    self.dim,
                    self.spread,
                )
            })
            .collect()
    }
}

/// A bijection of `0..n` (an affine map modulo `n` with a multiplier coprime to it).
fn scramble(i: u64, n: u64) -> u64 {
    if n <= 1 {
        return 0;
    }
    let mut a = 2_654_435_761 % n;
    while gcd(a, n) != 1 {
        a += 1;
    }
    (i as u128 * a as u128 % n as u128) as u64
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Deterministic clustered unit vectors: a centre plus near-Gaussian noise, renormalised.
struct Gen(u64);

impl Gen {
    fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0
    }

    fn next(&mut self) -> f32 {
        // Sum of two uniforms: cheap and close enough to Gaussian.
        let x = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        let y = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        x + y - 1.0
    }

    fn unit(&mut self, centre: Option<&[f32]>, dim: usize, spread: f32) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim)
            .map(|i| centre.map_or(0.0, |c| c[i]) + spread * self.next())
            .collect();
        let n = v
            .iter()
            .map(|x| x * x)
            .sum::<f32>()
            .sqrt()
            .max(f32::MIN_POSITIVE);
        v.iter_mut().for_each(|x| *x /= n);
        v
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn file_sizes(dir: &Path, keep: impl Fn(&str) -> bool) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| keep(&e.file_name().to_string_lossy()))
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// A line of /proc/self/status in KiB (Linux; `None` elsewhere).
fn memory_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets the peak-RSS counter (`VmHWM`) to the current RSS (Linux ≥ 4.0), so the build's
/// own peak can be read afterwards.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The CPU's model name (Linux), for the report.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scramble_is_a_bijection() {
        for n in [1u64, 2, 10, 97, 1000, 4096] {
            let mut seen: Vec<u64> = (0..n).map(|i| scramble(i, n)).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n = {n}");
        }
    }

    #[test]
    fn a_date_filter_selects_the_requested_fraction() {
        let data = Data::synthetic(&BenchOptions {
            vectors: 5000,
            dim: 8,
            queries: 1,
            ..Default::default()
        });
        let filter = data.date_filter(0.1);
        let passed = (0..5000)
            .filter(|&i| filter.matches(&data.record(i)))
            .count();
        assert_eq!(passed, 500);
        // Spread over the store, not the first rows.
        assert!(
            (0..500)
                .filter(|&i| filter.matches(&data.record(i)))
                .count()
                < 200
        );
    }
}
