//! Filtered search on the embedded store (not a test): for filters matching a growing share of
//! N clustered unit vectors, the latency of exact scoring over the matches (fetched from
//! SQLite) against the graph walk restricted to them, and the graph's recall against exact —
//! the measurement behind `FILTER_EXACT_SHARE`.
//!
//! cargo run --release -p clipkit-index --example filter_bench -- 100000 256 200

use std::path::PathBuf;
use std::time::Instant;

use clipkit_image::PreprocessMode;
use clipkit_index::embedded::EmbeddedStore;
use clipkit_index::{Batch, CollectionInfo, Entry, FileRecord, Filter, Store};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("N DIM QUERIES"))
        .collect();
    let (n, dim, queries) = (
        *args.first().unwrap_or(&100_000),
        *args.get(1).unwrap_or(&256),
        *args.get(2).unwrap_or(&200),
    );
    let dir = std::env::temp_dir().join("clipkit-filter-bench");
    let _ = std::fs::remove_dir_all(&dir);
    let info = CollectionInfo {
        model: "bench".into(),
        dim,
        preprocess: PreprocessMode::Transformers,
        family: None,
    };
    let mut store = EmbeddedStore::open_dir(&dir, Some(&info)).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let centres: Vec<Vec<f32>> = (0..200)
        .map(|_| (0..dim).map(|_| next()).collect())
        .collect();
    let mut unit = |c: &[f32]| {
        let mut v: Vec<f32> = c.iter().map(|x| x + 0.5 * next()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    };
    let t = Instant::now();
    for start in (0..n).step_by(10_000) {
        let upserts = (start..(start + 10_000).min(n))
            .map(|i| Entry {
                file: FileRecord {
                    path: PathBuf::from(format!("/p/{i:08}.jpg")),
                    // The filter is on size: `max_size = s·n` matches a share s, spread evenly
                    // over the clusters.
                    size: ((i as u64).wrapping_mul(2_654_435_761)) % n as u64,
                    mtime_ns: 0,
                    hash: String::new(),
                    meta: Default::default(),
                },
                vector: unit(&centres[i % centres.len()]),
            })
            .collect();
        store
            .apply(Batch {
                upserts,
                removals: vec![],
            })
            .unwrap();
    }
    store.set_exact_limit(0);
    store.flush().unwrap();
    eprintln!(
        "{n} × {dim}: ingest + graph {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let qs: Vec<Vec<f32>> = (0..queries)
        .map(|i| unit(&centres[(i * 7) % centres.len()]))
        .collect();
    println!("share\tmatches\texact_p50_ms\tgraph_p50_ms\tgraph_recall@10");
    for share in [0.001, 0.003, 0.01, 0.02, 0.05, 0.1, 0.3, 1.0] {
        let filter = Filter {
            max_size: Some((share * n as f64) as u64),
            ..Filter::default()
        };
        let matches = store.filter_ids(&filter).unwrap().len();
        let mut run = |exact: bool| {
            store.set_filter_exact_share(if exact { 1.0 } else { 0.0 });
            let mut times = Vec::new();
            let mut hits = Vec::new();
            for q in &qs {
                let t = Instant::now();
                hits.push(
                    store
                        .search(std::slice::from_ref(q), 10, &filter)
                        .unwrap()
                        .remove(0),
                );
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            times.sort_by(f64::total_cmp);
            (times[times.len() / 2], hits)
        };
        let (exact_ms, exact) = run(true);
        let (graph_ms, graph) = run(false);
        let found: usize = exact
            .iter()
            .zip(&graph)
            .map(|(e, g)| {
                g.iter()
                    .filter(|h| e.iter().any(|x| x.path == h.path))
                    .count()
            })
            .sum();
        let wanted: usize = exact.iter().map(Vec::len).sum();
        println!(
            "{share}\t{matches}\t{exact_ms:.2}\t{graph_ms:.2}\t{:.3}",
            found as f64 / wanted.max(1) as f64
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
