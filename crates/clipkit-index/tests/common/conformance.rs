//! The contract every [`Store`] backend must meet, written once and run against each backend.
//!
//! A backend's test binary supplies an [`Open`] function: `open(name, create)` opens (with
//! `create`, creates) the store called `name`. Different names must be independent stores and
//! the same name the same store, so that closing and reopening can be checked. Each check is a
//! public function, so a backend can give every check its own `#[test]`; [`CHECKS`] lists
//! them all.

use clipkit_image::PhotoMetadata;
use clipkit_index::{Filter, Near};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use clipkit_image::PreprocessMode;
use clipkit_index::{
    Batch, CollectionInfo, Entry, FileRecord, IndexError, LabelVector, Result, Store,
};

/// Opens the store called `name`, creating it for `create`'s model when given.
pub type Open<'a> = &'a dyn Fn(&str, Option<&CollectionInfo>) -> Result<Box<dyn Store>>;

/// One check of the contract.
pub type Check = fn(Open);

/// Every check, by name, in the order [`run_all`] runs them.
pub const CHECKS: &[(&str, Check)] = &[
    ("create_and_reopen", create_and_reopen),
    (
        "refuses_other_models_and_dims",
        refuses_other_models_and_dims,
    ),
    ("apply_upserts_then_removals", apply_upserts_then_removals),
    ("apply_twice_changes_nothing", apply_twice_changes_nothing),
    ("files_and_scan_are_complete", files_and_scan_are_complete),
    (
        "vectors_of_present_and_absent_paths",
        vectors_of_present_and_absent_paths,
    ),
    ("search_equals_brute_force", search_equals_brute_force),
    ("odd_paths_round_trip", odd_paths_round_trip),
    ("label_sets", label_sets),
    ("roots_persist", roots_persist),
    (
        "filtered_search_equals_brute_force",
        filtered_search_equals_brute_force,
    ),
];

pub fn run_all(open: Open) {
    for (name, check) in CHECKS {
        eprintln!("conformance: {name}");
        check(open);
    }
}

pub fn info(dim: usize) -> CollectionInfo {
    CollectionInfo {
        model: "ViT-B-32/openai".into(),
        dim,
        preprocess: PreprocessMode::OpenAi,
        family: Some("CLIP".into()),
    }
}

/// A small deterministic generator (splitmix64), so failures reproduce without a `rand`
/// dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// A random L2-normalised vector, as the encoders produce.
    pub fn vector(&mut self, dim: usize) -> Vec<f32> {
        loop {
            let v: Vec<f32> = (0..dim).map(|_| self.unit()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 1e-3 {
                return v.into_iter().map(|x| x / norm).collect();
            }
        }
    }
}

pub fn entry(path: impl Into<PathBuf>, n: u64, vector: Vec<f32>) -> Entry {
    Entry {
        file: FileRecord {
            path: path.into(),
            size: 1000 + n,
            mtime_ns: 1_700_000_000_000_000_000 + n as i64,
            hash: format!("{n:064x}"),
            meta: Default::default(),
        },
        vector,
    }
}

pub fn entries(prefix: &str, count: usize, dim: usize, rng: &mut Rng) -> Vec<Entry> {
    (0..count)
        .map(|i| {
            entry(
                format!("{prefix}/img_{i:05}.jpg"),
                i as u64,
                rng.vector(dim),
            )
        })
        .collect()
}

pub fn upserts(entries: Vec<Entry>) -> Batch {
    Batch {
        upserts: entries,
        removals: Vec::new(),
    }
}

fn create(open: Open, name: &str, dim: usize) -> Box<dyn Store> {
    open(name, Some(&info(dim))).unwrap_or_else(|e| panic!("creating store {name}: {e}"))
}

/// The store's files, keyed by path.
fn files_by_path(store: &dyn Store) -> BTreeMap<PathBuf, FileRecord> {
    let files = store.files().expect("files()");
    let n = files.len();
    let map: BTreeMap<_, _> = files.into_iter().map(|f| (f.path.clone(), f)).collect();
    assert_eq!(map.len(), n, "files() listed a path twice");
    map
}

/// Every entry via `scan`, checking the chunking on the way.
pub fn scan_all(store: &dyn Store, chunk: usize) -> Vec<Entry> {
    let mut all = Vec::new();
    store
        .scan(chunk, &mut |entries| {
            assert!(!entries.is_empty(), "scan visited an empty chunk");
            assert!(
                entries.len() <= chunk,
                "scan visited {} entries with chunk = {chunk}",
                entries.len()
            );
            all.extend_from_slice(entries);
            Ok(())
        })
        .expect("scan()");
    all
}

fn assert_vectors_close(got: &[f32], want: &[f32], what: &dyn std::fmt::Display) {
    assert_eq!(got.len(), want.len(), "{what}: dimension");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-6, "{what}: stored vector differs");
    }
}

/// The store holds exactly `want` (records and vectors).
pub fn assert_contents(store: &dyn Store, want: &[Entry]) {
    let want: BTreeMap<&Path, &Entry> = want.iter().map(|e| (e.file.path.as_path(), e)).collect();
    assert_eq!(store.len().expect("len()"), want.len(), "len()");
    let files = files_by_path(store);
    assert_eq!(
        files.keys().map(PathBuf::as_path).collect::<Vec<_>>(),
        want.keys().copied().collect::<Vec<_>>(),
        "files() paths"
    );
    for (path, file) in &files {
        assert_eq!(
            file,
            &want[path.as_path()].file,
            "record of {}",
            path.display()
        );
    }
    let paths: Vec<PathBuf> = want.keys().map(|p| p.to_path_buf()).collect();
    let vectors = store.vectors(&paths).expect("vectors()");
    for (path, got) in paths.iter().zip(&vectors) {
        let got = got
            .as_ref()
            .unwrap_or_else(|| panic!("vectors(): {} missing", path.display()));
        assert_vectors_close(got, &want[path.as_path()].vector, &path.display());
    }
}

pub fn brute_force(entries: &[Entry], query: &[f32], k: usize) -> Vec<(PathBuf, f32)> {
    let mut scored: Vec<(PathBuf, f32)> = entries
        .iter()
        .map(|e| {
            let dot = e.vector.iter().zip(query).map(|(a, b)| a * b).sum::<f32>();
            (e.file.path.clone(), dot)
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    scored.truncate(k);
    scored
}

pub fn assert_search_matches(store: &dyn Store, entries: &[Entry], queries: &[Vec<f32>], k: usize) {
    let results = store
        .search(queries, k, &Filter::default())
        .expect("search()");
    assert_eq!(results.len(), queries.len(), "one result list per query");
    for (qi, (query, hits)) in queries.iter().zip(&results).enumerate() {
        let want = brute_force(entries, query, k);
        let got_paths: Vec<&Path> = hits.iter().map(|h| h.path.as_path()).collect();
        let want_paths: Vec<&Path> = want.iter().map(|(p, _)| p.as_path()).collect();
        assert_eq!(
            got_paths, want_paths,
            "query {qi}: paths differ from brute force"
        );
        for (hit, (_, score)) in hits.iter().zip(&want) {
            assert!(
                (hit.score - score).abs() <= 1e-4,
                "query {qi}: score {} vs brute force {score} for {}",
                hit.score,
                hit.path.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// A missing store is not created without `create`; a created one keeps its info and entries
/// across close and reopen, with or without `create`.
pub fn create_and_reopen(open: Open) {
    let name = "reopen";
    match open(name, None) {
        Err(IndexError::NotFound { .. }) => {}
        Err(e) => panic!("opening a missing store without create: expected NotFound, got {e}"),
        Ok(_) => panic!("opening a missing store without create succeeded"),
    }
    let mut rng = Rng::new(1);
    let content = entries("reopen", 20, 8, &mut rng);
    {
        let mut store = create(open, name, 8);
        assert_eq!(store.info(), &info(8));
        assert!(store.is_empty().unwrap());
        assert!(store.files().unwrap().is_empty());
        assert!(scan_all(store.as_ref(), 7).is_empty());
        store.apply(upserts(content.clone())).unwrap();
        store.flush().unwrap();
        assert!(
            store.address().contains(name),
            "address {} names the store",
            store.address()
        );
    }
    let store = open(name, None).expect("reopening without create");
    assert_eq!(store.info(), &info(8));
    assert_contents(store.as_ref(), &content);
    drop(store);
    let store = open(name, Some(&info(8))).expect("reopening with the same model");
    assert_contents(store.as_ref(), &content);
}

/// Opening with another model, preprocessing or dimension is refused, and so are vectors of
/// the wrong dimension.
pub fn refuses_other_models_and_dims(open: Open) {
    let name = "mismatch";
    let mut store = create(open, name, 8);
    let mut rng = Rng::new(2);
    store.apply(upserts(entries("m", 3, 8, &mut rng))).unwrap();

    let other_model = CollectionInfo {
        model: "ViT-L-14/openai".into(),
        ..info(8)
    };
    match open(name, Some(&other_model)) {
        Err(IndexError::ModelMismatch {
            stored, requested, ..
        }) => {
            assert!(stored.contains("ViT-B-32"), "{stored}");
            assert!(requested.contains("ViT-L-14"), "{requested}");
        }
        Err(e) => panic!("other model: expected ModelMismatch, got {e}"),
        Ok(_) => panic!("other model accepted"),
    }
    let other_preprocess = CollectionInfo {
        preprocess: PreprocessMode::Transformers,
        ..info(8)
    };
    assert!(
        matches!(
            open(name, Some(&other_preprocess)),
            Err(IndexError::ModelMismatch { .. })
        ),
        "other preprocessing accepted"
    );
    // The same name from another family (a directory whose checkpoint was replaced) is
    // refused too, and the error names both families.
    let other_family = CollectionInfo {
        family: Some("SigLIP".into()),
        ..info(8)
    };
    match open(name, Some(&other_family)) {
        Err(IndexError::ModelMismatch {
            stored, requested, ..
        }) => {
            assert!(stored.contains("CLIP"), "{stored}");
            assert!(requested.contains("SigLIP"), "{requested}");
        }
        Err(e) => panic!("other family: expected ModelMismatch, got {e}"),
        Ok(_) => panic!("other family accepted"),
    }
    // The family is read back as written.
    let reopened = open(name, None).expect("reopening");
    assert_eq!(reopened.info().family.as_deref(), Some("CLIP"));
    drop(reopened);
    match open(name, Some(&info(12))) {
        Err(IndexError::WrongVectorDimension { expected, got, .. }) => {
            assert_eq!((expected, got), (8, 12));
        }
        Err(e) => panic!("other dim: expected WrongVectorDimension, got {e}"),
        Ok(_) => panic!("other dim accepted"),
    }

    let bad = Batch {
        upserts: vec![
            entry("m/good.jpg", 1, rng.vector(8)),
            entry("m/bad.jpg", 2, rng.vector(9)),
        ],
        removals: Vec::new(),
    };
    assert!(matches!(
        store.apply(bad),
        Err(IndexError::WrongVectorDimension {
            expected: 8,
            got: 9,
            ..
        })
    ));
    assert_eq!(store.len().unwrap(), 3, "a refused batch writes nothing");
    assert!(matches!(
        store.search(&[rng.vector(4)], 3, &Filter::default()),
        Err(IndexError::WrongVectorDimension {
            expected: 8,
            got: 4,
            ..
        })
    ));
    let labels = [LabelVector {
        label: "cat".into(),
        vector: rng.vector(5),
    }];
    assert!(matches!(
        store.put_labels("animals", &labels),
        Err(IndexError::WrongVectorDimension { .. })
    ));
}

/// Upserts replace entries by path; removals run after upserts, so a path in both ends up
/// removed; removing an absent path is fine.
pub fn apply_upserts_then_removals(open: Open) {
    let mut store = create(open, "apply", 8);
    let mut rng = Rng::new(3);
    let mut content = entries("apply", 10, 8, &mut rng);
    store.apply(upserts(content.clone())).unwrap();
    assert_contents(store.as_ref(), &content);

    // Change two entries, remove three, add one, and upsert-then-remove another.
    let changed: Vec<Entry> = [1usize, 4]
        .iter()
        .map(|&i| {
            let mut e = entry(content[i].file.path.clone(), 100 + i as u64, rng.vector(8));
            e.file.hash = format!("{:064x}", 0xabc + i);
            e
        })
        .collect();
    let added = entry("apply/new.jpg", 50, rng.vector(8));
    let transient = entry("apply/transient.jpg", 51, rng.vector(8));
    let removed: Vec<PathBuf> = [0usize, 5, 9]
        .iter()
        .map(|&i| content[i].file.path.clone())
        .collect();
    let batch = Batch {
        upserts: [changed.clone(), vec![added.clone(), transient.clone()]].concat(),
        removals: [
            removed.clone(),
            vec![
                transient.file.path.clone(),
                PathBuf::from("apply/never-there.jpg"),
            ],
        ]
        .concat(),
    };
    store.apply(batch).unwrap();

    for e in changed {
        let i = content
            .iter()
            .position(|c| c.file.path == e.file.path)
            .unwrap();
        content[i] = e;
    }
    content.retain(|e| !removed.contains(&e.file.path));
    content.push(added);
    assert_contents(store.as_ref(), &content);

    // The same path twice in one batch: the later upsert wins.
    let first = entry("apply/twice.jpg", 60, rng.vector(8));
    let second = entry("apply/twice.jpg", 61, rng.vector(8));
    store.apply(upserts(vec![first, second.clone()])).unwrap();
    content.push(second);
    assert_contents(store.as_ref(), &content);

    store.apply(Batch::default()).unwrap();
    assert_contents(store.as_ref(), &content);
}

/// Replaying a batch (as after a killed run) converges to the same state.
pub fn apply_twice_changes_nothing(open: Open) {
    let mut store = create(open, "idempotent", 8);
    let mut rng = Rng::new(4);
    let content = entries("idem", 30, 8, &mut rng);
    store.apply(upserts(content.clone())).unwrap();

    let replacement: Vec<Entry> = content[..5]
        .iter()
        .enumerate()
        .map(|(i, e)| entry(e.file.path.clone(), 500 + i as u64, rng.vector(8)))
        .collect();
    let batch = Batch {
        upserts: replacement.clone(),
        removals: content[25..].iter().map(|e| e.file.path.clone()).collect(),
    };
    store.apply(batch.clone()).unwrap();
    let once_files = files_by_path(store.as_ref());
    let once_scan = scan_all(store.as_ref(), 8);
    store.apply(batch).unwrap();
    assert_eq!(files_by_path(store.as_ref()), once_files);
    assert_eq!(scan_all(store.as_ref(), 8), once_scan);

    let mut want = [replacement, content[5..25].to_vec()].concat();
    want.sort_by(|a, b| a.file.path.cmp(&b.file.path));
    assert_contents(store.as_ref(), &want);
}

/// `files` and `scan` return every entry even when that is more than a page of results.
pub fn files_and_scan_are_complete(open: Open) {
    const N: usize = 3_000;
    const DIM: usize = 16;
    let mut store = create(open, "many", DIM);
    let mut rng = Rng::new(5);
    let content = entries("many", N, DIM, &mut rng);
    for part in content.chunks(700) {
        store.apply(upserts(part.to_vec())).unwrap();
    }
    store.flush().unwrap();
    assert_eq!(store.len().unwrap(), N);

    let files = files_by_path(store.as_ref());
    assert_eq!(files.len(), N, "files() is complete");
    for e in &content {
        assert_eq!(files.get(&e.file.path), Some(&e.file));
    }

    let by_path: BTreeMap<&Path, &Entry> =
        content.iter().map(|e| (e.file.path.as_path(), e)).collect();
    for chunk in [1_000, 333, N + 1] {
        let scanned = scan_all(store.as_ref(), chunk);
        assert_eq!(scanned.len(), N, "scan(chunk = {chunk}) is complete");
        let distinct: HashSet<&Path> = scanned.iter().map(|e| e.file.path.as_path()).collect();
        assert_eq!(distinct.len(), N, "scan(chunk = {chunk}) repeats entries");
        for e in &scanned {
            let want = by_path[e.file.path.as_path()];
            assert_eq!(e.file, want.file);
            assert_vectors_close(&e.vector, &want.vector, &e.file.path.display());
        }
    }
    let order = |chunk| -> Vec<PathBuf> {
        scan_all(store.as_ref(), chunk)
            .into_iter()
            .map(|e| e.file.path)
            .collect()
    };
    assert_eq!(order(500), order(500), "scan order is stable");
}

/// `vectors` answers in the order asked, `None` for paths not in the store.
pub fn vectors_of_present_and_absent_paths(open: Open) {
    let mut store = create(open, "vectors", 8);
    let mut rng = Rng::new(6);
    let content = entries("vec", 6, 8, &mut rng);
    store.apply(upserts(content.clone())).unwrap();

    let asked = vec![
        content[3].file.path.clone(),
        PathBuf::from("vec/absent.jpg"),
        content[0].file.path.clone(),
        content[3].file.path.clone(),
        PathBuf::from("elsewhere/img_00000.jpg"),
    ];
    let got = store.vectors(&asked).unwrap();
    assert_eq!(got.len(), asked.len());
    assert_vectors_close(got[0].as_ref().unwrap(), &content[3].vector, &"first");
    assert!(got[1].is_none(), "absent path has no vector");
    assert_vectors_close(got[2].as_ref().unwrap(), &content[0].vector, &"third");
    assert_vectors_close(got[3].as_ref().unwrap(), &content[3].vector, &"repeat");
    assert!(got[4].is_none(), "absent path has no vector");
    assert!(store.vectors(&[]).unwrap().is_empty());
}

/// Search returns what exact cosine search over the same vectors returns: the same paths in
/// the same order, scores within 1e-4 — before and after a flush (which may build an index).
pub fn search_equals_brute_force(open: Open) {
    const N: usize = 2_000;
    const DIM: usize = 16;
    let mut store = create(open, "search", DIM);
    let mut rng = Rng::new(7);
    let content = entries("search", N, DIM, &mut rng);
    store.apply(upserts(content.clone())).unwrap();
    let queries: Vec<Vec<f32>> = (0..40).map(|_| rng.vector(DIM)).collect();

    assert_search_matches(store.as_ref(), &content, &queries, 10);
    store.flush().unwrap();
    assert_search_matches(store.as_ref(), &content, &queries, 10);
    assert_search_matches(store.as_ref(), &content, &queries[..3], 100);
    // An entry's own vector finds it first, with cosine 1.
    let own = store
        .search(&[content[17].vector.clone()], 1, &Filter::default())
        .unwrap();
    assert_eq!(own[0][0].path, content[17].file.path);
    assert!((own[0][0].score - 1.0).abs() < 1e-4);

    assert!(store.search(&[], 5, &Filter::default()).unwrap().is_empty());
    assert_eq!(
        store.search(&queries[..2], 0, &Filter::default()).unwrap(),
        vec![vec![], vec![]]
    );

    // After removals, removed entries are no longer found.
    let removed: Vec<PathBuf> = content[..500].iter().map(|e| e.file.path.clone()).collect();
    store
        .apply(Batch {
            upserts: Vec::new(),
            removals: removed,
        })
        .unwrap();
    assert_search_matches(store.as_ref(), &content[500..], &queries[..10], 10);

    // Fewer entries than k: all of them.
    let mut small = create(open, "search_small", DIM);
    let few = entries("few", 4, DIM, &mut rng);
    small.apply(upserts(few.clone())).unwrap();
    assert_search_matches(small.as_ref(), &few, &queries[..5], 10);
}

/// Paths that are not plain ASCII — unicode, quotes, spaces, and (on Unix) bytes that are not
/// UTF-8 — come back exactly as written, from every read.
pub fn odd_paths_round_trip(open: Open) {
    let mut store = create(open, "odd_paths", 8);
    let mut rng = Rng::new(8);
    let mut paths: Vec<PathBuf> = vec![
        "photos/été/chat noir.jpg".into(),
        "写真/猫.png".into(),
        "emoji/🐈‍⬛ cat.webp".into(),
        r#"quotes/it's "quoted" \ back\slash.jpg"#.into(),
        "/absolute/path/with spaces/IMG_0001.JPG".into(),
        "ends with newline\n.jpg".into(),
    ];
    #[cfg(unix)]
    {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        paths.push(Path::new(OsStr::from_bytes(b"latin1/caf\xe9.jpg")).to_path_buf());
        paths.push(Path::new(OsStr::from_bytes(b"\xff\xfe/raw.png")).to_path_buf());
    }
    let content: Vec<Entry> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| entry(p.clone(), i as u64, rng.vector(8)))
        .collect();
    store.apply(upserts(content.clone())).unwrap();
    assert_contents(store.as_ref(), &content);

    let scanned: HashSet<PathBuf> = scan_all(store.as_ref(), 3)
        .into_iter()
        .map(|e| e.file.path)
        .collect();
    assert_eq!(scanned, paths.iter().cloned().collect());
    for e in &content {
        let hits = store
            .search(std::slice::from_ref(&e.vector), 1, &Filter::default())
            .unwrap();
        assert_eq!(
            hits[0][0].path, e.file.path,
            "search returns the exact path"
        );
    }

    let removals = paths[..2].to_vec();
    store
        .apply(Batch {
            upserts: Vec::new(),
            removals,
        })
        .unwrap();
    assert_contents(store.as_ref(), &content[2..]);
}

/// Label sets are stored whole, read back in their order, replaced by a later put, and kept
/// apart by name (even names that differ only in punctuation).
pub fn label_sets(open: Open) {
    let mut store = create(open, "labels", 8);
    let mut rng = Rng::new(9);
    let make = |names: &[&str], rng: &mut Rng| -> Vec<LabelVector> {
        names
            .iter()
            .map(|n| LabelVector {
                label: n.to_string(),
                vector: rng.vector(8),
            })
            .collect()
    };
    assert_eq!(store.labels("animals").unwrap(), None);

    let animals = make(
        &["zebra", "cat", "dog", "aardvark", "chat noir", "猫"],
        &mut rng,
    );
    store.put_labels("animals", &animals).unwrap();
    assert_eq!(
        store.labels("animals").unwrap().as_deref(),
        Some(&animals[..])
    );

    let replaced = make(&["bird", "fish"], &mut rng);
    store.put_labels("animals", &replaced).unwrap();
    assert_eq!(
        store.labels("animals").unwrap().as_deref(),
        Some(&replaced[..])
    );

    let dashed = make(&["one"], &mut rng);
    let underscored = make(&["two"], &mut rng);
    store.put_labels("my-set", &dashed).unwrap();
    store.put_labels("my_set", &underscored).unwrap();
    store.put_labels("étiquettes", &animals).unwrap();
    assert_eq!(
        store.labels("my-set").unwrap().as_deref(),
        Some(&dashed[..])
    );
    assert_eq!(
        store.labels("my_set").unwrap().as_deref(),
        Some(&underscored[..])
    );
    assert_eq!(
        store.labels("étiquettes").unwrap().as_deref(),
        Some(&animals[..])
    );

    // A larger set keeps its order too.
    let many_names: Vec<String> = (0..1_200).map(|i| format!("label {}", 1_199 - i)).collect();
    let many = make(
        &many_names.iter().map(String::as_str).collect::<Vec<_>>(),
        &mut rng,
    );
    store.put_labels("many", &many).unwrap();
    assert_eq!(store.labels("many").unwrap().as_deref(), Some(&many[..]));

    store.put_labels("empty", &[]).unwrap();
    assert_eq!(store.labels("empty").unwrap(), Some(Vec::new()));

    // Label sets belong to the store: another store does not see them, a reopen does.
    drop(store);
    let other = create(open, "labels_other", 8);
    assert_eq!(other.labels("animals").unwrap(), None);
    let store = open("labels", None).unwrap();
    assert_eq!(
        store.labels("animals").unwrap().as_deref(),
        Some(&replaced[..])
    );
    // Labels do not count as entries.
    assert_eq!(store.len().unwrap(), 0);
}

/// The indexed roots are remembered, without duplicates, in the order first added.
pub fn roots_persist(open: Open) {
    let mut store = create(open, "roots", 8);
    assert!(store.roots().unwrap().is_empty());
    let a = PathBuf::from("/photos/2023");
    let b = PathBuf::from("/photos/été 2024");
    let c = PathBuf::from("relative/dir");
    store.add_roots(&[a.clone(), b.clone()]).unwrap();
    store.add_roots(&[b.clone(), c.clone()]).unwrap();
    let mut want = vec![a, b, c];
    #[cfg(unix)]
    {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let odd = Path::new(OsStr::from_bytes(b"/mnt/caf\xe9")).to_path_buf();
        store.add_roots(std::slice::from_ref(&odd)).unwrap();
        want.push(odd);
    }
    assert_eq!(store.roots().unwrap(), want);
    drop(store);
    let store = open("roots", None).unwrap();
    assert_eq!(store.roots().unwrap(), want);
}

/// Entries with varied metadata for the filter checks: folders that share prefixes or hold
/// `like` wildcards, a non-UTF-8 name, several spellings of file types, capture dates or
/// none, positions in clusters (one on the antimeridian) or none, cameras or none.
pub fn filter_entries(count: usize, dim: usize, rng: &mut Rng) -> Vec<Entry> {
    let folders = [
        "/lib/a",
        "/lib/a b",
        "/lib/ab",
        "/lib/a/sub",
        "/lib/100%_x",
        "/other",
    ];
    let exts = ["jpg", "JPEG", "png", "tif", "webp", "jpe"];
    let cameras: [(Option<&str>, Option<&str>); 6] = [
        (Some("Apple"), Some("iPhone 12")),
        (Some("Canon"), Some("Canon EOS 5D")),
        (Some("FUJIFILM"), Some("X-T3")),
        (None, Some("Pixel 7")),
        (Some("Weird_%Cam"), None),
        (None, None),
    ];
    let places = [(48.85, 2.35), (0.0, 179.95), (-33.87, 151.21)];
    let mut pick = |n: usize| (rng.next_u64() % n as u64) as usize;
    let mut spec = Vec::new();
    for i in 0..count {
        let folder = folders[pick(folders.len())];
        let path = if i == 0 && cfg!(unix) {
            non_utf8_path(b"/lib/a/caf\xe9.jpg")
        } else {
            PathBuf::from(format!("{folder}/img_{i:04}.{}", exts[pick(exts.len())]))
        };
        let taken = (pick(10) < 7).then(|| 1_500_000_000 + pick(200_000_000) as i64);
        let position = (pick(10) < 6).then(|| {
            let (lat, lon) = places[pick(places.len())];
            let jitter = |x: usize| (x as f64 / 1000.0 - 0.5) * 1.5;
            let mut lon: f64 = lon + jitter(pick(1000));
            if lon > 180.0 {
                lon -= 360.0;
            }
            (lat + jitter(pick(1000)), lon)
        });
        let (make, model) = cameras[pick(cameras.len())];
        let size = 1000 + pick(10_000_000) as u64;
        let mtime_ns = 1_400_000_000_000_000_000 + pick(1 << 30) as i64 * 1_000_000_000;
        spec.push((path, taken, position, make, model, size, mtime_ns));
    }
    spec.into_iter()
        .enumerate()
        .map(
            |(i, (path, taken, position, make, model, size, mtime_ns))| Entry {
                file: FileRecord {
                    path,
                    size,
                    mtime_ns,
                    hash: format!("{i:064x}"),
                    meta: PhotoMetadata {
                        taken,
                        latitude: position.map(|p| p.0),
                        longitude: position.map(|p| p.1),
                        make: make.map(str::to_owned),
                        model: model.map(str::to_owned),
                        ..PhotoMetadata::default()
                    },
                },
                vector: rng.vector(dim),
            },
        )
        .collect()
}

#[cfg(unix)]
fn non_utf8_path(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

#[cfg(not(unix))]
fn non_utf8_path(_: &[u8]) -> PathBuf {
    PathBuf::from("/lib/a/cafe.jpg")
}

/// A random filter of one to three restrictions, drawn so that each is sometimes selective
/// and sometimes not.
pub fn random_filter(rng: &mut Rng) -> Filter {
    let mut pick = |n: u64| rng.next_u64() % n;
    let mut filter = Filter::default();
    let restrictions = 1 + pick(3);
    for _ in 0..restrictions {
        match pick(6) {
            0 => {
                let t = 1_400_000_000 + pick(400_000_000) as i64;
                match pick(3) {
                    0 => filter.after = Some(t),
                    1 => filter.before = Some(t),
                    _ => {
                        filter.after = Some(t);
                        filter.before = Some(t + pick(150_000_000) as i64);
                    }
                }
            }
            1 => {
                let folders = [
                    "/lib/a",
                    "/lib/a b/",
                    "/lib/ab",
                    "/lib/./a/sub",
                    "/lib/100%_x",
                    "/other",
                    "/lib",
                ];
                filter.folders = (0..1 + pick(2))
                    .map(|_| PathBuf::from(folders[pick(folders.len() as u64) as usize]))
                    .collect();
            }
            2 => {
                let places = [
                    (48.85, 2.35),
                    (0.0, -179.95),
                    (-33.87, 151.21),
                    (10.0, 10.0),
                ];
                let (latitude, longitude) = places[pick(places.len() as u64) as usize];
                filter.near = Some(Near {
                    latitude,
                    longitude,
                    radius_m: [1_000.0, 20_000.0, 60_000.0, 500_000.0][pick(4) as usize],
                });
            }
            3 => {
                let cameras = ["iphone", "EOS", "x-t", "%", "_%c", "pixel", "canon canon"];
                filter.camera = Some(cameras[pick(cameras.len() as u64) as usize].to_owned());
            }
            4 => {
                let types = ["jpg", "png", "tiff", "jpeg", "webp", ".PNG"];
                filter.file_types = (0..1 + pick(2))
                    .map(|_| types[pick(types.len() as u64) as usize].to_owned())
                    .collect();
            }
            _ => {
                let bound = 1000 + pick(10_000_000);
                if pick(2) == 0 {
                    filter.min_size = Some(bound);
                } else {
                    filter.max_size = Some(bound);
                }
            }
        }
    }
    filter
}

/// Filtered search returns exactly the `k` best entries among those `Filter::matches`
/// admits, for random filters over entries with varied metadata; the metadata round-trips.
pub fn filtered_search_equals_brute_force(open: Open) {
    let dim = 8;
    let mut rng = Rng::new(23);
    let all = filter_entries(400, dim, &mut rng);
    let mut store = create(open, "filtered", dim);
    store.apply(upserts(all.clone())).expect("apply");
    store.flush().expect("flush");
    assert_contents(&*store, &all);

    let queries: Vec<Vec<f32>> = (0..3).map(|_| rng.vector(dim)).collect();
    let mut selective = 0;
    for round in 0..60 {
        let filter = random_filter(&mut rng);
        let admitted: Vec<Entry> = all
            .iter()
            .filter(|e| filter.matches(&e.file))
            .cloned()
            .collect();
        if !admitted.is_empty() && admitted.len() < all.len() / 2 {
            selective += 1;
        }
        for k in [1, 7, 40] {
            let results = store
                .search(&queries, k, &filter)
                .unwrap_or_else(|e| panic!("filter {filter:?}: {e}"));
            assert_eq!(results.len(), queries.len());
            for (query, hits) in queries.iter().zip(&results) {
                let want = brute_force(&admitted, query, k);
                let got: Vec<&Path> = hits.iter().map(|h| h.path.as_path()).collect();
                let want_paths: Vec<&Path> = want.iter().map(|(p, _)| p.as_path()).collect();
                assert_eq!(got, want_paths, "round {round}, k = {k}, filter {filter:?}");
                for (hit, (_, score)) in hits.iter().zip(&want) {
                    assert!((hit.score - score).abs() <= 1e-4, "round {round}: score");
                }
            }
        }
    }
    assert!(
        selective >= 15,
        "only {selective} of the random filters were selective"
    );
}
