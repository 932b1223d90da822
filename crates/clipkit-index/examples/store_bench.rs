//! Benchmark of the embedded store (not a test): N random-but-clustered unit vectors (real
//! embeddings are clustered, which is what makes graph search hard), then ingest rate, ANN
//! build time, on-disk size, search latency p50/p99, recall@10 against exact search, and
//! labelling with many labels.
//!
//! cargo run --release -p clipkit-index --example store_bench -- --n 1000000 --labels 10000

use clipkit_index::Filter;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clipkit_image::PreprocessMode;
use clipkit_index::embedded::EmbeddedStore;
use clipkit_index::label::{label, LabelOptions};
use clipkit_index::{Batch, CollectionInfo, Entry, FileRecord, LabelVector, Store};

struct Args {
    n: usize,
    dim: usize,
    queries: usize,
    labels: usize,
    centres: usize,
    dir: PathBuf,
}

fn parse() -> Args {
    let mut a = Args {
        n: 1_000_000,
        dim: 512,
        queries: 1000,
        labels: 10_000,
        centres: 2000,
        dir: std::env::temp_dir().join("clipkit-store-bench"),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--n" => a.n = value.parse().expect("--n N"),
            "--dim" => a.dim = value.parse().expect("--dim D"),
            "--queries" => a.queries = value.parse().expect("--queries Q"),
            "--labels" => a.labels = value.parse().expect("--labels L"),
            "--centres" => a.centres = value.parse().expect("--centres C"),
            "--dir" => a.dir = PathBuf::from(value),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// Deterministic clustered unit vectors: a centre plus Gaussian-ish noise, renormalised.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Sum of uniforms: cheap and close enough to Gaussian.
        let x = (self.0 >> 40) as f32 / (1u64 << 24) as f32;
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let y = (self.0 >> 40) as f32 / (1u64 << 24) as f32;
        x + y - 1.0
    }

    fn unit(&mut self, centre: Option<&[f32]>, dim: usize, spread: f32) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim)
            .map(|i| centre.map_or(0.0, |c| c[i]) + spread * self.next())
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

fn main() {
    let a = parse();
    let _ = std::fs::remove_dir_all(&a.dir);
    let info = CollectionInfo {
        model: "bench".into(),
        dim: a.dim,
        preprocess: PreprocessMode::Transformers,
        family: None,
    };
    let mut store = EmbeddedStore::open_dir(&a.dir, Some(&info)).expect("store");
    let mut gen = Gen(42);
    let centres: Vec<Vec<f32>> = (0..a.centres).map(|_| gen.unit(None, a.dim, 1.0)).collect();
    // Noise comparable to the centre spread: neighbours are close but not trivially so.
    let spread = 1.2 / (a.dim as f32).sqrt() * 4.0;

    println!(
        "store_bench: {} vectors × {} dims, {} clusters, {} threads",
        a.n,
        a.dim,
        a.centres,
        rayon::current_num_threads()
    );
    // Which SIMD kernels usearch dispatches to for this index's f16 vectors ("serial" would
    // mean none, and graph builds many times slower).
    let probe = usearch::Index::new(&usearch::IndexOptions {
        dimensions: a.dim,
        metric: usearch::MetricKind::IP,
        quantization: usearch::ScalarKind::F16,
        ..Default::default()
    })
    .expect("usearch index");
    println!(
        "usearch kernels: {} (available: {})",
        probe.hardware_acceleration(),
        usearch::hardware_acceleration_available()
    );
    let t = Instant::now();
    let chunk = 10_000;
    let mut i = 0;
    while i < a.n {
        let upserts: Vec<Entry> = (i..(i + chunk).min(a.n))
            .map(|j| Entry {
                file: FileRecord {
                    path: PathBuf::from(format!("/photos/{:03}/{j:08}.jpg", j % 1000)),
                    size: j as u64,
                    mtime_ns: j as i64,
                    hash: format!("{j:064x}"),
                    meta: Default::default(),
                },
                vector: gen.unit(Some(&centres[j % a.centres]), a.dim, spread),
            })
            .collect();
        store
            .apply(Batch {
                upserts,
                removals: vec![],
            })
            .expect("apply");
        i += chunk;
    }
    let ingest = t.elapsed().as_secs_f64();
    let t = Instant::now();
    store.flush().expect("flush builds the ANN index");
    let build = t.elapsed().as_secs_f64();
    println!(
        "ingest (SQLite, transactions of {chunk}): {:.1} s = {:.0} vectors/s",
        ingest,
        a.n as f64 / ingest
    );
    println!(
        "ANN build (usearch HNSW, f16, M=16): {:.1} s = {:.0} vectors/s",
        build,
        a.n as f64 / build
    );
    // Closed, as a store rests between runs (closing checkpoints SQLite's WAL into the file).
    drop(store);
    println!(
        "on disk: {:.2} GB ({:.0} bytes per vector; the f32 vectors alone are {})",
        dir_size(&a.dir) as f64 / 1e9,
        dir_size(&a.dir) as f64 / a.n as f64,
        4 * a.dim
    );

    // Reopen as a new process would: the saved index is memory-loaded, not rebuilt.
    let t = Instant::now();
    let store = EmbeddedStore::open_dir(&a.dir, None).expect("reopen");
    let _ = store
        .search(&[centres[0].clone()], 1, &Filter::default())
        .expect("first search");
    println!(
        "reopen + first search (loads the index): {:.2} s",
        t.elapsed().as_secs_f64()
    );

    let queries: Vec<Vec<f32>> = (0..a.queries)
        .map(|q| gen.unit(Some(&centres[(q * 7) % a.centres]), a.dim, spread))
        .collect();
    let mut latencies = Vec::with_capacity(queries.len());
    let mut ann_results = Vec::with_capacity(queries.len());
    for q in &queries {
        let t = Instant::now();
        let hits = store
            .search(std::slice::from_ref(q), 10, &Filter::default())
            .expect("search");
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        ann_results.push(hits.into_iter().next().unwrap_or_default());
    }
    latencies.sort_by(f64::total_cmp);
    let t = Instant::now();
    let exact = store.search_exact(&queries, 10).expect("exact");
    let exact_time = t.elapsed().as_secs_f64();
    let mut found = 0;
    for (a_hits, e_hits) in ann_results.iter().zip(&exact) {
        found += a_hits
            .iter()
            .filter(|h| e_hits.iter().any(|e| e.path == h.path))
            .count();
    }
    println!(
        "search k=10 (ANN + exact rescoring): p50 {:.2} ms, p99 {:.2} ms; recall@10 vs exact {:.4}",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        found as f64 / (10 * queries.len()) as f64
    );
    println!(
        "exact search (matrix product, {} queries batched): {:.1} ms per query",
        queries.len(),
        exact_time * 1e3 / queries.len() as f64
    );

    if a.labels > 0 {
        let labels: Vec<LabelVector> = (0..a.labels)
            .map(|l| LabelVector {
                label: format!("label {l}"),
                vector: gen.unit(Some(&centres[l % a.centres]), a.dim, spread),
            })
            .collect();
        let t = Instant::now();
        let out = label(
            &store,
            &labels,
            &LabelOptions {
                images_per_label: 10,
                labels_per_image: 3,
                scoring: clipkit_core::Scoring::Softmax { logit_scale: 100.0 },
                min_score: None,
                filter: Filter::default(),
            },
        )
        .expect("label");
        println!(
            "label: {} labels × {} images → top-10 images per label + top-3 labels per image in {:.1} s",
            a.labels,
            out.per_image.len(),
            t.elapsed().as_secs_f64()
        );
    }
}
