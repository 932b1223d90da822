//! The embedded store against brute force: exact search, the HNSW path (rescored), the
//! change log that keeps the ANN index in step, and what survives a reopen.

mod common;

use clipkit_index::Filter;
use std::path::PathBuf;

use clipkit_image::PreprocessMode;
use clipkit_index::embedded::EmbeddedStore;
use clipkit_index::{Batch, CollectionInfo, Entry, FileRecord, IndexError, Store};

fn info(dim: usize) -> CollectionInfo {
    CollectionInfo {
        model: "test-model".into(),
        dim,
        preprocess: PreprocessMode::Transformers,
        family: None,
    }
}

/// Deterministic pseudo-random unit vectors around a few centres (clustered, like real
/// embeddings, which is where ANN graphs are tested hardest).
fn vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut s = seed;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    };
    let centres: Vec<Vec<f32>> = (0..8).map(|_| (0..dim).map(|_| next()).collect()).collect();
    (0..n)
        .map(|i| {
            let c = &centres[i % centres.len()];
            let mut v: Vec<f32> = c.iter().map(|x| x + 0.6 * next()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            v
        })
        .collect()
}

fn entry(i: usize, vector: Vec<f32>) -> Entry {
    Entry {
        file: FileRecord {
            path: PathBuf::from(format!("/photos/{i:05}.jpg")),
            size: i as u64,
            mtime_ns: 1000 + i as i64,
            hash: format!("{i:064x}"),
            meta: Default::default(),
        },
        vector,
    }
}

fn brute_force(store_vectors: &[(PathBuf, Vec<f32>)], q: &[f32], k: usize) -> Vec<(PathBuf, f32)> {
    let mut scored: Vec<(PathBuf, f32)> = store_vectors
        .iter()
        .map(|(p, v)| (p.clone(), v.iter().zip(q).map(|(a, b)| a * b).sum()))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    scored.truncate(k);
    scored
}

#[test]
fn exact_and_ann_search_agree_with_brute_force() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 32;
    let mut store = EmbeddedStore::open_dir(dir.path(), Some(&info(dim))).unwrap();
    let data = vectors(3000, dim, 1);
    store
        .apply(Batch {
            upserts: data
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, v)| entry(i, v))
                .collect(),
            removals: vec![],
        })
        .unwrap();
    store.flush().unwrap();
    let all: Vec<(PathBuf, Vec<f32>)> = data
        .iter()
        .enumerate()
        .map(|(i, v)| (entry(i, vec![]).file.path, v.clone()))
        .collect();
    let queries = vectors(50, dim, 99);

    // Small collection: exact, identical to brute force.
    let exact = store.search(&queries, 10, &Filter::default()).unwrap();
    for (q, hits) in queries.iter().zip(&exact) {
        let want = brute_force(&all, q, 10);
        let got: Vec<&PathBuf> = hits.iter().map(|h| &h.path).collect();
        let want_paths: Vec<&PathBuf> = want.iter().map(|w| &w.0).collect();
        assert_eq!(got, want_paths);
        for (h, w) in hits.iter().zip(&want) {
            assert!((h.score - w.1).abs() < 1e-5);
        }
    }

    // Forced ANN: recall@10 against brute force, and every reported score exact.
    store.set_exact_limit(0);
    let ann = store.search(&queries, 10, &Filter::default()).unwrap();
    let mut found = 0;
    for (q, hits) in queries.iter().zip(&ann) {
        let want = brute_force(&all, q, 10);
        found += hits
            .iter()
            .filter(|h| want.iter().any(|w| w.0 == h.path))
            .count();
        for h in hits {
            let v = &all.iter().find(|(p, _)| *p == h.path).unwrap().1;
            let exact: f32 = v.iter().zip(q).map(|(a, b)| a * b).sum();
            assert!((h.score - exact).abs() < 1e-5);
        }
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }
    let recall = found as f32 / (10 * queries.len()) as f32;
    assert!(recall >= 0.95, "recall@10 = {recall}");
    assert!(dir.path().join("ann.usearch").exists());
}

#[test]
fn ann_index_catches_up_with_changes_and_survives_losing_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 16;
    let data = vectors(600, dim, 2);
    {
        let mut store = EmbeddedStore::open_dir(dir.path(), Some(&info(dim))).unwrap();
        store.set_exact_limit(0);
        store
            .apply(Batch {
                upserts: data[..500]
                    .iter()
                    .cloned()
                    .enumerate()
                    .map(|(i, v)| entry(i, v))
                    .collect(),
                removals: vec![],
            })
            .unwrap();
        store.flush().unwrap();
        // Later changes: 100 new, 50 removed, one moved to a new vector.
        store
            .apply(Batch {
                upserts: (500..600).map(|i| entry(i, data[i].clone())).collect(),
                removals: (0..50).map(|i| entry(i, vec![]).file.path).collect(),
            })
            .unwrap();
    }
    // A new process: the saved index is one generation behind and must catch up.
    let mut store = EmbeddedStore::open_dir(dir.path(), None).unwrap();
    store.set_exact_limit(0);
    assert_eq!(store.len().unwrap(), 550);
    for i in [0usize, 10, 49] {
        let hits = store
            .search(&[data[i].clone()], 5, &Filter::default())
            .unwrap();
        assert!(
            hits[0].iter().all(|h| h.path != entry(i, vec![]).file.path),
            "removed {i} still found"
        );
    }
    for i in [500usize, 550, 599] {
        let hits = store
            .search(&[data[i].clone()], 1, &Filter::default())
            .unwrap();
        assert_eq!(hits[0][0].path, entry(i, vec![]).file.path);
        assert!((hits[0][0].score - 1.0).abs() < 1e-5);
    }
    // Losing the index state (a crash between writes) means a rebuild, not wrong answers.
    std::fs::remove_file(dir.path().join("ann.json")).unwrap();
    let store = {
        let mut s = EmbeddedStore::open_dir(dir.path(), None).unwrap();
        s.set_exact_limit(0);
        s
    };
    let hits = store
        .search(&[data[520].clone()], 1, &Filter::default())
        .unwrap();
    assert_eq!(hits[0][0].path, entry(520, vec![]).file.path);
}

#[test]
fn batches_are_idempotent_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 8;
    let data = vectors(20, dim, 3);
    let batch = Batch {
        upserts: data
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, v)| entry(i, v))
            .collect(),
        removals: vec![entry(3, vec![]).file.path],
    };
    {
        let mut store = EmbeddedStore::open_dir(dir.path(), Some(&info(dim))).unwrap();
        store.apply(batch.clone()).unwrap();
        let first = store.files().unwrap();
        store.apply(batch).unwrap();
        assert_eq!(store.files().unwrap(), first);
        assert_eq!(first.len(), 19);
        store.add_roots(&[PathBuf::from("/photos")]).unwrap();
    }
    let store = EmbeddedStore::open_dir(dir.path(), None).unwrap();
    assert_eq!(store.len().unwrap(), 19);
    assert_eq!(store.roots().unwrap(), vec![PathBuf::from("/photos")]);
    let got = store
        .vectors(&[entry(5, vec![]).file.path, entry(3, vec![]).file.path])
        .unwrap();
    assert_eq!(got[0].as_deref(), Some(data[5].as_slice()));
    assert_eq!(got[1], None);
    let mut scanned = 0;
    store
        .scan(7, &mut |entries| {
            scanned += entries.len();
            assert!(entries.len() <= 7);
            Ok(())
        })
        .unwrap();
    assert_eq!(scanned, 19);
}

#[test]
fn refuses_other_models_and_missing_stores() {
    let dir = tempfile::tempdir().unwrap();
    EmbeddedStore::open_dir(dir.path(), Some(&info(8))).unwrap();
    let other = CollectionInfo {
        model: "another".into(),
        ..info(8)
    };
    assert!(matches!(
        EmbeddedStore::open_dir(dir.path(), Some(&other)),
        Err(IndexError::ModelMismatch { .. })
    ));
    assert!(matches!(
        EmbeddedStore::open_dir(dir.path(), Some(&info(16))),
        Err(IndexError::WrongVectorDimension {
            expected: 8,
            got: 16,
            ..
        })
    ));
    let mut store = EmbeddedStore::open_dir(dir.path(), None).unwrap();
    let bad = Batch {
        upserts: vec![entry(0, vec![0.5; 4])],
        removals: vec![],
    };
    assert!(matches!(
        store.apply(bad),
        Err(IndexError::WrongVectorDimension {
            expected: 8,
            got: 4,
            ..
        })
    ));
    let missing = dir.path().join("nope");
    assert!(matches!(
        EmbeddedStore::open_dir(&missing, None),
        Err(IndexError::NotFound { .. })
    ));
    assert!(!missing.exists(), "opening without create must not create");
}

#[test]
fn label_sets_round_trip_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = EmbeddedStore::open_dir(dir.path(), Some(&info(4))).unwrap();
    let labels: Vec<clipkit_index::LabelVector> = ["zebra", "apple", "mango"]
        .iter()
        .enumerate()
        .map(|(i, l)| clipkit_index::LabelVector {
            label: l.to_string(),
            vector: vec![i as f32; 4],
        })
        .collect();
    store.put_labels("fruit", &labels).unwrap();
    assert_eq!(store.labels("fruit").unwrap().unwrap(), labels);
    store.put_labels("fruit", &labels[..1]).unwrap();
    assert_eq!(
        store.labels("fruit").unwrap().unwrap(),
        labels[..1].to_vec()
    );
    assert_eq!(store.labels("other").unwrap(), None);
}

/// The same contract suite the Milvus backend passes, on exact search and on the HNSW
/// path (every search forced through the graph).
#[test]
fn passes_the_backend_conformance_suite() {
    for exact_limit in [usize::MAX, 0] {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str,
                    create: Option<&CollectionInfo>|
         -> clipkit_index::Result<Box<dyn Store>> {
            let mut store = EmbeddedStore::open_dir(&dir.path().join(name), create)?;
            store.set_exact_limit(exact_limit);
            Ok(Box::new(store))
        };
        common::conformance::run_all(&open);
    }
}

/// The preprocessing is stored as its name, the text stores have always held: a store written
/// with `openai` says so in its meta table, and one whose meta says `hf` opens as transformers'.
#[test]
fn preprocessing_is_stored_by_its_stable_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let openai = CollectionInfo {
        preprocess: PreprocessMode::OpenAi,
        ..info(4)
    };
    drop(EmbeddedStore::open_dir(&dir, Some(&openai)).unwrap());
    let db = rusqlite::Connection::open(dir.join("store.sqlite")).unwrap();
    let stored: String = db
        .query_row("SELECT value FROM meta WHERE key = 'preprocess'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(stored, "openai");
    db.execute("UPDATE meta SET value = 'hf' WHERE key = 'preprocess'", [])
        .unwrap();
    drop(db);
    let reopened = EmbeddedStore::open_dir(&dir, None).unwrap();
    assert_eq!(reopened.info().preprocess, PreprocessMode::Transformers);
}

#[test]
fn collections_written_before_the_family_was_recorded_still_open() {
    let dir = tempfile::tempdir().unwrap();
    // `info` records no family, as collections made before it was recorded.
    drop(EmbeddedStore::open_dir(dir.path(), Some(&info(4))).unwrap());
    let with_family = CollectionInfo {
        family: Some("CLIP".into()),
        ..info(4)
    };
    let store = EmbeddedStore::open_dir(dir.path(), Some(&with_family)).unwrap();
    assert_eq!(store.info().family, None);
    drop(store);
    // A new collection records it.
    let fresh = tempfile::tempdir().unwrap();
    drop(EmbeddedStore::open_dir(fresh.path(), Some(&with_family)).unwrap());
    let reopened = EmbeddedStore::open_dir(fresh.path(), None).unwrap();
    assert_eq!(reopened.info().family.as_deref(), Some("CLIP"));
}

fn forced_ann(dir: &std::path::Path, create: Option<&CollectionInfo>) -> EmbeddedStore {
    let mut store = EmbeddedStore::open_dir(dir, create).unwrap();
    store.set_exact_limit(0);
    store
}

fn upsert_range(store: &mut EmbeddedStore, data: &[Vec<f32>], range: std::ops::Range<usize>) {
    store
        .apply(Batch {
            upserts: range.map(|i| entry(i, data[i].clone())).collect(),
            removals: vec![],
        })
        .unwrap();
}

/// Search (through the graph) against brute force over `live`, by path and exact score.
fn assert_graph_equals_brute_force(
    store: &EmbeddedStore,
    data: &[Vec<f32>],
    live: &[usize],
    queries: &[Vec<f32>],
) {
    let all: Vec<(PathBuf, Vec<f32>)> = live
        .iter()
        .map(|&i| (entry(i, vec![]).file.path, data[i].clone()))
        .collect();
    let got = store.search(queries, 10, &Filter::default()).unwrap();
    for (q, hits) in queries.iter().zip(&got) {
        let want = brute_force(&all, q, 10);
        let got_paths: Vec<&PathBuf> = hits.iter().map(|h| &h.path).collect();
        let want_paths: Vec<&PathBuf> = want.iter().map(|w| &w.0).collect();
        assert_eq!(got_paths, want_paths);
        for (h, w) in hits.iter().zip(&want) {
            assert!((h.score - w.1).abs() < 1e-5, "{} vs {}", h.score, w.1);
        }
    }
}

/// On a small store forced through the graph, the i8 graph plus f32 rescoring of its
/// candidates gives exactly the brute-force answer, scores included.
#[test]
fn small_forced_graph_search_equals_brute_force() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 24;
    let data = vectors(800, dim, 5);
    let mut store = forced_ann(dir.path(), Some(&info(dim)));
    upsert_range(&mut store, &data, 0..800);
    let live: Vec<usize> = (0..800).collect();
    assert_graph_equals_brute_force(&store, &data, &live, &vectors(40, dim, 77));
    assert!(dir.path().join("ann.vectors").exists());
    assert!(!store.ann_footprint().unwrap().mapped);
    // Reopened with the graph current: memory-mapped, same answers.
    drop(store);
    let store = forced_ann(dir.path(), None);
    assert_graph_equals_brute_force(&store, &data, &live, &vectors(40, dim, 77));
    let footprint = store.ann_footprint().unwrap();
    assert!(footprint.mapped);
    assert_eq!(footprint.vectors, 800);
}

/// Another connection's write (another process, as far as SQLite can tell) is seen by an open
/// store's next search and `len`, without reopening it: the cached generation and count
/// are re-read when SQLite's data_version moves.
#[test]
fn a_second_process_write_is_seen_without_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 16;
    let data = vectors(400, dim, 6);
    let mut reader = forced_ann(dir.path(), Some(&info(dim)));
    upsert_range(&mut reader, &data, 0..300);
    assert_eq!(reader.len().unwrap(), 300);
    let first = reader
        .search(&[data[350].clone()], 1, &Filter::default())
        .unwrap();
    assert_ne!(first[0][0].path, entry(350, vec![]).file.path);

    let mut writer = EmbeddedStore::open_dir(dir.path(), None).unwrap();
    upsert_range(&mut writer, &data, 300..400);
    writer
        .apply(Batch {
            upserts: vec![],
            removals: vec![entry(7, vec![]).file.path],
        })
        .unwrap();

    assert_eq!(reader.len().unwrap(), 399);
    let hits = reader
        .search(&[data[350].clone()], 1, &Filter::default())
        .unwrap();
    assert_eq!(hits[0][0].path, entry(350, vec![]).file.path);
    assert!((hits[0][0].score - 1.0).abs() < 1e-5);
    let hits = reader
        .search(&[data[7].clone()], 5, &Filter::default())
        .unwrap();
    assert!(hits[0].iter().all(|h| h.path != entry(7, vec![]).file.path));
    // And the exact path sees it too.
    reader.set_exact_limit(usize::MAX);
    let hits = reader
        .search(&[data[399].clone()], 1, &Filter::default())
        .unwrap();
    assert_eq!(hits[0][0].path, entry(399, vec![]).file.path);
}

/// The graph's three files (graph, rescoring vectors, ann.json) are written one after the
/// other; whichever of them a crash leaves old, missing or torn, the next search is right.
#[test]
fn graph_files_left_inconsistent_by_a_crash_are_caught_up_or_rebuilt() {
    let dim = 16;
    let data = vectors(700, dim, 8);
    let queries = vectors(20, dim, 88);
    let live: Vec<usize> = (50..700).collect();
    type Damage = fn(&std::path::Path, &std::path::Path);
    let cases: [(&str, Damage); 6] = [
        // Crash after the new graph and vectors were renamed in, before ann.json.
        ("old ann.json", |dir, old| {
            std::fs::copy(old.join("ann.json"), dir.join("ann.json")).unwrap();
        }),
        // Crash after the vectors were renamed in, before the graph.
        ("old graph", |dir, old| {
            std::fs::copy(old.join("ann.json"), dir.join("ann.json")).unwrap();
            std::fs::copy(old.join("ann.usearch"), dir.join("ann.usearch")).unwrap();
        }),
        // A vectors file older than ann.json says: not trusted.
        ("old vectors", |dir, old| {
            std::fs::copy(old.join("ann.vectors"), dir.join("ann.vectors")).unwrap();
        }),
        ("missing vectors", |dir, _| {
            std::fs::remove_file(dir.join("ann.vectors")).unwrap();
        }),
        ("torn vectors", |dir, _| {
            let bytes = std::fs::read(dir.join("ann.vectors")).unwrap();
            std::fs::write(dir.join("ann.vectors"), &bytes[..bytes.len() / 2]).unwrap();
        }),
        // Written by an older clipkit (another graph configuration, no tag).
        ("untagged ann.json", |dir, _| {
            std::fs::write(dir.join("ann.json"), r#"{"generation": 2, "vectors": 650}"#).unwrap();
        }),
    ];
    for (name, damage) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, old) = (tmp.path().join("store"), tmp.path().join("old"));
        {
            let mut store = forced_ann(&dir, Some(&info(dim)));
            upsert_range(&mut store, &data, 0..500);
            store.flush().unwrap();
            std::fs::create_dir(&old).unwrap();
            for f in ["ann.json", "ann.usearch", "ann.vectors"] {
                std::fs::copy(dir.join(f), old.join(f)).unwrap();
            }
            upsert_range(&mut store, &data, 500..700);
            store
                .apply(Batch {
                    upserts: vec![],
                    removals: (0..50).map(|i| entry(i, vec![]).file.path).collect(),
                })
                .unwrap();
            store.flush().unwrap();
        }
        damage(&dir, &old);
        let store = forced_ann(&dir, None);
        let hits = store
            .search(&[data[650].clone()], 1, &Filter::default())
            .unwrap();
        assert_eq!(hits[0][0].path, entry(650, vec![]).file.path, "{name}");
        for i in [0usize, 25, 49] {
            let hits = store
                .search(&[data[i].clone()], 10, &Filter::default())
                .unwrap();
            assert!(
                hits[0].iter().all(|h| h.path != entry(i, vec![]).file.path),
                "{name}: removed {i} found"
            );
        }
        assert_graph_equals_brute_force(&store, &data, &live, &queries);
    }
}

/// Filtered graph search keeps its rescoring exact and returns only allowed keys.
#[test]
fn filtered_graph_search_rescores_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 16;
    let data = vectors(600, dim, 9);
    let mut store = forced_ann(dir.path(), Some(&info(dim)));
    upsert_range(&mut store, &data, 0..600);
    let allowed: std::collections::HashSet<u64> = (0..600)
        .filter(|i| i % 3 == 0)
        .map(|i| entry(i, vec![]).file.id() as u64)
        .collect();
    let allow = |key: u64| allowed.contains(&key);
    let queries = vectors(10, dim, 99);
    let got = store.search_ann(&queries, 5, Some(&allow)).unwrap();
    let all: Vec<(PathBuf, Vec<f32>)> = (0..600)
        .filter(|i| i % 3 == 0)
        .map(|i| (entry(i, vec![]).file.path, data[i].clone()))
        .collect();
    for (q, hits) in queries.iter().zip(&got) {
        let want = brute_force(&all, q, 5);
        let got_paths: Vec<&PathBuf> = hits.iter().map(|h| &h.path).collect();
        let want_paths: Vec<&PathBuf> = want.iter().map(|w| &w.0).collect();
        assert_eq!(got_paths, want_paths);
        for (h, w) in hits.iter().zip(&want) {
            assert!((h.score - w.1).abs() < 1e-5);
        }
    }
}
