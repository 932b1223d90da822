//! Filtered search on the embedded store equals brute force over `Filter::matches`, on every
//! path it can take (exact over a small collection, exact over the few matches of a large
//! one, the graph walk restricted to the matches); capture metadata read from the fixture
//! photos end to end through the indexer; and a store written before metadata existed opens,
//! keeps its entries and gets its metadata backfilled by the next indexing run.

use std::path::{Path, PathBuf};

use clipkit_core::{ClipError, Crop, Embedder, Scoring};
use clipkit_image::metadata::read_metadata;
use clipkit_image::{PhotoMetadata, PreprocessMode};
use clipkit_index::embedded::{EmbeddedStore, FILTER_EXACT_SHARE};
use clipkit_index::indexer::{Indexer, Progress, Report, WalkOptions};
use clipkit_index::{Batch, CollectionInfo, Entry, FileRecord, Filter, Near, Store};

fn info(dim: usize) -> CollectionInfo {
    CollectionInfo {
        model: "test-model".into(),
        dim,
        preprocess: PreprocessMode::Transformers,
        family: None,
    }
}

/// xorshift64: the tests' only source of randomness, seeded.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Unit vectors around a few centres, like real embeddings.
fn vectors(rng: &mut Rng, n: usize, dim: usize) -> Vec<Vec<f32>> {
    let centres: Vec<Vec<f32>> = (0..8)
        .map(|_| (0..dim).map(|_| rng.unit() as f32 - 0.5).collect())
        .collect();
    (0..n)
        .map(|i| {
            let c = &centres[i % centres.len()];
            let mut v: Vec<f32> = c
                .iter()
                .map(|x| x + 0.6 * (rng.unit() as f32 - 0.5))
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            v
        })
        .collect()
}

const FOLDERS: [&str; 6] = [
    "/photos/trips",
    "/photos/trips/paris",
    "/photos/tripsx",
    "/photos/home",
    "/archive",
    "/archive/2019",
];
const EXTENSIONS: [&str; 6] = ["jpg", "JPEG", "png", "tif", "webp", "heic"];
const CAMERAS: [(Option<&str>, Option<&str>); 6] = [
    (Some("Apple"), Some("iPhone 13 Pro")),
    (Some("Canon"), Some("Canon EOS R5")),
    (Some("samsung"), Some("SM-G991B")),
    (Some("NIKON CORPORATION"), Some("NIKON D850")),
    (None, Some("Pixel 7")),
    (Some("FUJIFILM"), None),
];
/// Places where photos cluster; one on the antimeridian, one near the pole.
const PLACES: [(f64, f64); 5] = [
    (48.8566, 2.3522),
    (-33.8688, 151.2093),
    (-22.9068, -43.1729),
    (-16.5, 179.9),
    (78.2232, 15.6267),
];
/// Wall-clock seconds of 2019-01-01 and the span of the synthetic dates (5 years).
const T0: i64 = 1_546_300_800;
const SPAN: i64 = 5 * 365 * 86_400;

fn random_entry(rng: &mut Rng, i: usize, vector: Vec<f32>) -> Entry {
    let folder = rng.pick(&FOLDERS);
    let ext = rng.pick(&EXTENSIONS);
    let (make, model) = *rng.pick(&CAMERAS);
    let camera = rng.chance(0.8);
    let place = rng.chance(0.6).then(|| {
        let (lat, lon) = *rng.pick(&PLACES);
        let lat = (lat + (rng.unit() - 0.5) * 0.6).clamp(-90.0, 90.0);
        let mut lon = lon + (rng.unit() - 0.5) * 0.6;
        if lon > 180.0 {
            lon -= 360.0;
        }
        (lat, lon)
    });
    Entry {
        file: FileRecord {
            path: PathBuf::from(format!("{folder}/{i:05}.{ext}")),
            size: 1000 + rng.below(9_000_000),
            mtime_ns: (T0 + rng.below(SPAN as u64) as i64) * 1_000_000_000
                + rng.below(1_000_000_000) as i64,
            hash: format!("{i:064x}"),
            meta: PhotoMetadata {
                taken: rng.chance(0.7).then(|| T0 + rng.below(SPAN as u64) as i64),
                offset_minutes: rng.chance(0.5).then(|| rng.below(25) as i32 * 60 - 720),
                latitude: place.map(|p| p.0),
                longitude: place.map(|p| p.1),
                make: camera.then(|| make.map(str::to_owned)).flatten(),
                model: camera.then(|| model.map(str::to_owned)).flatten(),
                width: Some(4032),
                height: Some(3024),
            },
        },
        vector,
    }
}

fn random_filter(rng: &mut Rng) -> Filter {
    let mut f = Filter::default();
    while f.is_empty() {
        if rng.chance(0.4) {
            f.after = Some(T0 + rng.below(SPAN as u64) as i64);
        }
        if rng.chance(0.3) {
            f.before = Some(T0 + rng.below(SPAN as u64) as i64 + SPAN / 3);
        }
        if rng.chance(0.3) {
            let mut folders = vec![PathBuf::from(*rng.pick(&FOLDERS))];
            if rng.chance(0.3) {
                folders.push(PathBuf::from(format!("{}/", rng.pick(&FOLDERS))));
            }
            f.folders = folders;
        }
        if rng.chance(0.25) {
            let (lat, lon) = *rng.pick(&PLACES);
            f.near = Some(Near {
                latitude: lat + (rng.unit() - 0.5) * 0.2,
                longitude: lon + (rng.unit() - 0.5) * 0.2,
                radius_m: *rng.pick(&[500.0, 5_000.0, 20_000.0, 50_000.0, 3_000_000.0]),
            });
        }
        if rng.chance(0.25) {
            f.camera = Some(
                rng.pick(&["iphone", "CANON", "sm-", "nikon d", "pixel", "x"])
                    .to_string(),
            );
        }
        if rng.chance(0.25) {
            f.file_types = vec![rng
                .pick(&["jpg", "jpeg", "PNG", "tiff", "heic"])
                .to_string()];
        }
        if rng.chance(0.2) {
            f.min_size = Some(rng.below(5_000_000));
        }
        if rng.chance(0.2) {
            f.max_size = Some(2_000_000 + rng.below(8_000_000));
        }
    }
    f
}

fn brute_force(entries: &[Entry], filter: &Filter, q: &[f32], k: usize) -> Vec<(PathBuf, f32)> {
    let mut scored: Vec<(PathBuf, f32)> = entries
        .iter()
        .filter(|e| filter.matches(&e.file))
        .map(|e| {
            let s: f32 = e.vector.iter().zip(q).map(|(a, b)| a * b).sum();
            (e.file.path.clone(), s)
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    scored.truncate(k);
    scored
}

#[test]
fn filtered_search_equals_brute_force_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 24;
    let n = 3000;
    let mut rng = Rng(0x51ed_270b_1f3c_8a4d);
    let data = vectors(&mut rng, n, dim);
    let entries: Vec<Entry> = data
        .into_iter()
        .enumerate()
        .map(|(i, v)| random_entry(&mut rng, i, v))
        .collect();
    let mut store = EmbeddedStore::open_dir(dir.path(), Some(&info(dim))).unwrap();
    store
        .apply(Batch {
            upserts: entries.clone(),
            removals: vec![],
        })
        .unwrap();
    store.flush().unwrap();
    // What was stored is what was written, metadata included.
    let mut files = store.files().unwrap();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut written: Vec<FileRecord> = entries.iter().map(|e| e.file.clone()).collect();
    written.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(files, written);
    let mut scanned = Vec::new();
    store
        .scan(700, &mut |chunk| {
            scanned.extend(chunk.iter().cloned());
            Ok(())
        })
        .unwrap();
    scanned.sort_by(|a, b| a.file.path.cmp(&b.file.path));
    let mut sorted = entries.clone();
    sorted.sort_by(|a, b| a.file.path.cmp(&b.file.path));
    assert_eq!(scanned, sorted);

    let k = 10;
    let queries: Vec<Vec<f32>> = vectors(&mut Rng(7), 6, dim);
    let graph_cutoff = (n as f64 * FILTER_EXACT_SHARE).ceil() as usize;
    let (mut few, mut many, mut none) = (0, 0, 0);
    let (mut found, mut wanted) = (0usize, 0usize);
    for round in 0..150 {
        let filter = random_filter(&mut rng);
        let matching = entries.iter().filter(|e| filter.matches(&e.file)).count();
        match matching {
            0 => none += 1,
            m if m <= graph_cutoff => few += 1,
            _ => many += 1,
        }
        let want: Vec<Vec<(PathBuf, f32)>> = queries
            .iter()
            .map(|q| brute_force(&entries, &filter, q, k))
            .collect();

        // The collection is under the exact limit: exact search over the matches.
        store.set_exact_limit(usize::MAX);
        let exact = store.search(&queries, k, &filter).unwrap();
        // Forced past the exact limit: few matches are still scored exactly, many go through
        // the graph.
        store.set_exact_limit(0);
        let forced = store.search(&queries, k, &filter).unwrap();

        for ((got, graph), want) in exact.iter().zip(&forced).zip(&want) {
            let got_paths: Vec<&PathBuf> = got.iter().map(|h| &h.path).collect();
            let want_paths: Vec<&PathBuf> = want.iter().map(|w| &w.0).collect();
            assert_eq!(got_paths, want_paths, "round {round}: {filter:?}");
            for (h, w) in got.iter().zip(want) {
                assert!((h.score - w.1).abs() < 1e-5);
            }
            if matching <= graph_cutoff {
                let graph_paths: Vec<&PathBuf> = graph.iter().map(|h| &h.path).collect();
                assert_eq!(graph_paths, want_paths, "round {round} (few): {filter:?}");
            }
            assert_eq!(graph.len(), want.len(), "round {round}: {filter:?}");
            for h in graph {
                let e = entries.iter().find(|e| e.file.path == h.path).unwrap();
                assert!(filter.matches(&e.file), "round {round}: {:?}", h.path);
            }
            found += graph
                .iter()
                .filter(|h| want.iter().any(|w| w.0 == h.path))
                .count();
            wanted += want.len();
        }
    }
    // The random filters covered all three cases, and the graph's answers are near exact.
    assert!(
        few >= 10 && many >= 10 && none >= 3,
        "few {few}, many {many}, none {none}"
    );
    let recall = found as f64 / wanted as f64;
    assert!(recall >= 0.95, "filtered recall@{k} = {recall}");
}

#[test]
fn filter_edges_agree_with_matches() {
    // Component boundaries, the folder itself, trailing slashes, the antimeridian, a huge
    // circle, camera case, type aliases, size bounds, dates exactly at the bounds.
    let dir = tempfile::tempdir().unwrap();
    let dim = 4;
    let mut store = EmbeddedStore::open_dir(dir.path(), Some(&info(dim))).unwrap();
    let record =
        |path: &str, taken: Option<i64>, place: Option<(f64, f64)>, model: Option<&str>| {
            FileRecord {
                path: path.into(),
                size: path.len() as u64 * 1000,
                mtime_ns: 1_700_000_000_123_456_789,
                hash: path.into(),
                meta: PhotoMetadata {
                    taken,
                    latitude: place.map(|p| p.0),
                    longitude: place.map(|p| p.1),
                    model: model.map(str::to_owned),
                    ..PhotoMetadata::default()
                },
            }
        };
    let files = [
        record("/a/b", Some(100), Some((-16.5, 179.99)), Some("iPhone 15")),
        record(
            "/a/b/c.jpg",
            Some(200),
            Some((-16.5, -179.99)),
            Some("IPHONE se"),
        ),
        record("/a/bc/d.JPEG", None, Some((0.0, 0.0)), None),
        record("/a/b/e/f.tif", Some(1_700_000_000), None, Some("Canon")),
        record("/z/g.png", Some(-5), Some((89.99, 10.0)), Some("Pixel")),
        record("/z/h", Some(300), Some((89.99, -170.0)), None),
    ];
    store
        .apply(Batch {
            upserts: files
                .iter()
                .enumerate()
                .map(|(i, f)| Entry {
                    file: f.clone(),
                    vector: vec![1.0, i as f32 * 0.01, 0.0, 0.0],
                })
                .collect(),
            removals: vec![],
        })
        .unwrap();
    let near = |latitude: f64, longitude: f64, radius_m: f64| Near {
        latitude,
        longitude,
        radius_m,
    };
    let filters = [
        Filter {
            folders: vec!["/a/b".into()],
            ..Filter::default()
        },
        Filter {
            folders: vec!["/a/b/".into()],
            ..Filter::default()
        },
        Filter {
            folders: vec!["/a//b/./".into()],
            ..Filter::default()
        },
        Filter {
            folders: vec!["/".into()],
            ..Filter::default()
        },
        Filter {
            folders: vec!["/a/b/e".into(), "/z".into()],
            ..Filter::default()
        },
        Filter {
            near: Some(near(-16.5, 180.0, 5_000.0)),
            ..Filter::default()
        },
        Filter {
            near: Some(near(-16.5, -180.0, 1_000.0)),
            ..Filter::default()
        },
        Filter {
            near: Some(near(90.0, 0.0, 2_000.0)),
            ..Filter::default()
        },
        Filter {
            near: Some(near(10.0, 10.0, 1.5e7)),
            ..Filter::default()
        },
        Filter {
            near: Some(near(0.0, 0.0, 0.0)),
            ..Filter::default()
        },
        Filter {
            near: Some(near(0.0, 0.0, -1.0)),
            ..Filter::default()
        },
        Filter {
            camera: Some("IPHONE".into()),
            ..Filter::default()
        },
        Filter {
            camera: Some(String::new()),
            ..Filter::default()
        },
        Filter {
            file_types: vec!["jpg".into()],
            ..Filter::default()
        },
        Filter {
            file_types: vec!["TIFF".into(), ".png".into()],
            ..Filter::default()
        },
        Filter {
            after: Some(200),
            before: Some(301),
            ..Filter::default()
        },
        Filter {
            after: Some(1_700_000_000),
            ..Filter::default()
        },
        Filter {
            before: Some(0),
            ..Filter::default()
        },
        Filter {
            min_size: Some(4000),
            max_size: Some(10_000),
            ..Filter::default()
        },
    ];
    let q = vec![vec![1.0, 0.0, 0.0, 0.0]];
    for filter in &filters {
        let mut want: Vec<&Path> = files
            .iter()
            .filter(|f| filter.matches(f))
            .map(|f| f.path.as_path())
            .collect();
        want.sort();
        for limit in [usize::MAX, 0] {
            store.set_exact_limit(limit);
            let mut got: Vec<PathBuf> = store.search(&q, 10, filter).unwrap()[0]
                .iter()
                .map(|h| h.path.clone())
                .collect();
            got.sort();
            assert_eq!(got, want, "{filter:?} (exact limit {limit})");
        }
    }
}

/// A stand-in model: a byte histogram, so equal bytes give equal vectors.
struct Histogram;

const DIM: usize = 4;

impl Embedder for Histogram {
    fn embedding_dim(&self) -> usize {
        DIM
    }
    fn scoring(&self) -> Scoring {
        Scoring::Softmax { logit_scale: 1.0 }
    }
    fn embed_texts(&self, _texts: &[&str]) -> Result<Vec<Vec<f32>>, ClipError> {
        unimplemented!("the indexer embeds no text")
    }
    fn preprocess(&self, _path: &Path, bytes: &[u8]) -> Result<Crop, ClipError> {
        let grey: Vec<u8> = bytes.iter().flat_map(|&b| [b, b, b]).collect();
        Ok(Crop::from_raw(bytes.len() as u32, 1, grey).unwrap())
    }
    fn embed_crops(&self, crops: Vec<Crop>) -> Result<Vec<Vec<f32>>, ClipError> {
        Ok(crops
            .iter()
            .map(|crop| {
                let mut h = [1.0f32; DIM];
                for b in crop.pixels().map(|p| p[0]) {
                    h[b as usize % DIM] += 1.0;
                }
                let norm = h.iter().map(|x| x * x).sum::<f32>().sqrt();
                h.iter().map(|x| x / norm).collect()
            })
            .collect())
    }
    fn embed_pixels(&self, _pixels: &[&[f32]]) -> Result<Vec<Vec<f32>>, ClipError> {
        unimplemented!("the indexer embeds crops")
    }
}

struct Quiet;
impl Progress for Quiet {}

fn index(store: &mut dyn Store, root: &Path) -> Report {
    let roots = clipkit_index::indexer::canonical_roots(&[root.to_owned()]).unwrap();
    Indexer {
        store,
        embedder: &Histogram,
        batch_size: 3,
        walk: WalkOptions::default(),
        cancel: None,
        progress: &Quiet,
    }
    .run(&roots)
    .unwrap()
}

fn fixture_photos() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/photos-exif")
}

/// The fixture photos (not the reference JSON) copied into `dir`.
fn copy_photos(dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(fixture_photos()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e != "json") {
            let to = dir.join(path.file_name().unwrap());
            std::fs::copy(&path, &to).unwrap();
            out.push(to.canonicalize().unwrap());
        }
    }
    out.sort();
    out
}

fn names(hits: &[clipkit_index::Hit]) -> Vec<String> {
    let mut names: Vec<String> = hits
        .iter()
        .map(|h| h.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Wall-clock seconds of a UTC date at midnight.
fn day(y: i64, m: i64, d: i64) -> i64 {
    // Days from civil (Howard Hinnant), independent of the code under test's copy.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    (era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468) * 86_400
}

#[test]
fn exif_metadata_flows_from_photos_through_the_indexer_to_filters() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("photos");
    let photos = copy_photos(&root);
    let mut store = EmbeddedStore::open_dir(&tmp.path().join("store"), Some(&info(DIM))).unwrap();
    let report = index(&mut store, &root);
    assert_eq!(report.total, photos.len(), "{report:?}");
    for f in store.files().unwrap() {
        let want = read_metadata(&std::fs::read(&f.path).unwrap());
        assert_eq!(f.meta, want, "{}", f.path.display());
    }
    let q = vec![vec![0.5f32; DIM]];
    let search =
        |store: &EmbeddedStore, filter: Filter| names(&store.search(&q, 20, &filter).unwrap()[0]);
    assert_eq!(
        search(
            &store,
            Filter {
                camera: Some("iphone".into()),
                ..Filter::default()
            }
        ),
        ["paris.jpg"]
    );
    assert_eq!(
        search(
            &store,
            Filter {
                near: Some(Near {
                    latitude: -33.8568,
                    longitude: 151.2153,
                    radius_m: 1_000.0
                }),
                ..Filter::default()
            }
        ),
        ["sydney.jpg"]
    );
    // Southern and western hemispheres: Rio is west and south, within 10 km of Christ the
    // Redeemer; New York within 10 km of the Statue of Liberty.
    assert_eq!(
        search(
            &store,
            Filter {
                near: Some(Near {
                    latitude: -22.95,
                    longitude: -43.21,
                    radius_m: 10_000.0
                }),
                ..Filter::default()
            }
        ),
        ["rio.jpg"]
    );
    assert_eq!(
        search(
            &store,
            Filter {
                near: Some(Near {
                    latitude: 40.69,
                    longitude: -74.04,
                    radius_m: 10_000.0
                }),
                ..Filter::default()
            }
        ),
        ["nyc.jpg"]
    );
    // Dates on the photo's own clock: 2021-01-01 ≤ taken < 2023-01-01 holds Rio (2021-02-13)
    // and Sydney (2022-12-31 23:59:59, local time), not Paris (2023-07-14).
    assert_eq!(
        search(
            &store,
            Filter {
                after: Some(day(2021, 1, 1)),
                before: Some(day(2023, 1, 1)),
                ..Filter::default()
            }
        ),
        ["rio.jpg", "sydney.jpg"]
    );
    // A file without EXIF counts as taken at its mtime (today), not in 2017–2019.
    assert_eq!(
        search(
            &store,
            Filter {
                after: Some(day(2017, 1, 1)),
                before: Some(day(2020, 1, 1)),
                ..Filter::default()
            }
        ),
        ["datetime_only.jpg", "png_exif.png", "webp_exif.webp"]
    );
    assert_eq!(
        search(
            &store,
            Filter {
                file_types: vec!["png".into(), "webp".into()],
                ..Filter::default()
            }
        ),
        ["png_exif.png", "webp_exif.webp"]
    );

    // Moved and copied files carry their metadata without being embedded again.
    std::fs::rename(root.join("paris.jpg"), root.join("paris-moved.jpg")).unwrap();
    std::fs::copy(root.join("rio.jpg"), root.join("rio-copy.jpg")).unwrap();
    let again = index(&mut store, &root);
    assert_eq!(
        (again.embedded, again.moved, again.copied),
        (0, 1, 1),
        "{again:?}"
    );
    assert_eq!(
        search(
            &store,
            Filter {
                camera: Some("IPHONE 13".into()),
                ..Filter::default()
            }
        ),
        ["paris-moved.jpg"]
    );
    assert_eq!(
        search(
            &store,
            Filter {
                camera: Some("sm-g991".into()),
                ..Filter::default()
            }
        ),
        ["rio-copy.jpg", "rio.jpg"]
    );
}

/// The `files` table as format 1 wrote it, before capture metadata.
const OLD_SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE files (
    id INTEGER PRIMARY KEY,
    path BLOB NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX files_hash ON files(hash);
CREATE TABLE changes (generation INTEGER NOT NULL, id INTEGER NOT NULL);
CREATE TABLE labels (
    set_name TEXT NOT NULL,
    position INTEGER NOT NULL,
    label TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (set_name, position)
);
CREATE TABLE label_sets (set_name TEXT PRIMARY KEY);
CREATE TABLE roots (path BLOB PRIMARY KEY);
INSERT INTO meta VALUES ('format', '1'), ('model', 'test-model'), ('dim', '4'),
    ('preprocess', 'hf'), ('generation', '1'), ('log_since', '0');
";

#[test]
fn a_store_from_before_metadata_opens_and_is_backfilled() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("photos");
    let photos = copy_photos(&root);
    let store_dir = tmp.path().join("store");
    std::fs::create_dir(&store_dir).unwrap();
    {
        // Written with the old schema, as an earlier clipkit left it: the files' real sizes
        // and mtimes, so the next run finds them unchanged.
        let conn = rusqlite::Connection::open(store_dir.join("store.sqlite")).unwrap();
        conn.execute_batch(OLD_SCHEMA).unwrap();
        for (i, p) in photos.iter().enumerate() {
            let meta = std::fs::metadata(p).unwrap();
            let mtime_ns = meta
                .modified()
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as i64;
            let vector: Vec<u8> = [1.0f32, i as f32, 0.0, 0.0]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect();
            conn.execute(
                "INSERT INTO files (id, path, size, mtime_ns, hash, vector) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rusqlite::params![
                    clipkit_index::paths::path_id(p),
                    p.as_os_str().as_encoded_bytes(),
                    meta.len() as i64,
                    mtime_ns,
                    format!("old{i}"),
                    vector
                ],
            )
            .unwrap();
        }
    }
    let mut store = EmbeddedStore::open_dir(&store_dir, None).unwrap();
    assert_eq!(store.info().model, "test-model");
    assert_eq!(store.len().unwrap(), photos.len());
    assert_eq!(store.unread_metadata().unwrap(), photos);
    let files = store.files().unwrap();
    assert!(files.iter().all(|f| f.meta == PhotoMetadata::default()));
    let q = vec![vec![1.0f32, 0.0, 0.0, 0.0]];
    // Before the backfill the date filters already see the mtime (as `Filter::matches`
    // does for a file without a capture date): every photo was written today.
    let recent = Filter {
        after: Some(day(2024, 1, 1)),
        ..Filter::default()
    };
    assert_eq!(
        store.search(&q, 20, &recent).unwrap()[0].len(),
        photos.len()
    );
    let iphone = Filter {
        camera: Some("iphone".into()),
        ..Filter::default()
    };
    assert!(store.search(&q, 20, &iphone).unwrap()[0].is_empty());

    // The next run reads the metadata of the unchanged files, embedding nothing.
    let report = index(&mut store, &root);
    assert_eq!(
        (report.embedded, report.backfilled, report.unchanged),
        (0, photos.len(), photos.len()),
        "{report:?}"
    );
    assert!(store.unread_metadata().unwrap().is_empty());
    for f in store.files().unwrap() {
        assert_eq!(f.meta, read_metadata(&std::fs::read(&f.path).unwrap()));
    }
    assert_eq!(
        names(&store.search(&q, 20, &iphone).unwrap()[0]),
        ["paris.jpg"]
    );
    let undated = store.search(&q, 20, &recent).unwrap()[0].len();
    assert_eq!(undated, 1, "only no_exif.jpg has no capture date");
    // The old vectors are untouched, and reopening finds the store current.
    assert_eq!(
        store.vectors(&photos[..1]).unwrap()[0],
        Some(vec![1.0, 0.0, 0.0, 0.0])
    );
    drop(store);
    let store = EmbeddedStore::open_dir(&store_dir, None).unwrap();
    assert!(store.unread_metadata().unwrap().is_empty());
    let conn = rusqlite::Connection::open(store_dir.join("store.sqlite")).unwrap();
    let format: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(format, "2");
}
