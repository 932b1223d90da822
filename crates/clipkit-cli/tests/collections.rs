//! End-to-end tests of the collection commands on a photo folder built in a temp dir (real
//! fixture photos, nested and unicode folders, a non-UTF-8 name, broken and empty files):
//! incremental indexing counted file by file, results checked against brute force computed
//! from `clipkit embed`, export/import round trips, and indexing killed with SIGKILL.

#[macro_use]
mod common;

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::Value;

use common::{clipkit, fixtures, json, model, run_clipkit, stderr};

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\n{}",
        o.status.code(),
        stderr(o)
    );
}

/// A photo library: nested folders, unicode and non-UTF-8 names, a corrupt JPEG, an empty
/// PNG, a text file and a hidden folder (both ignored).
fn library() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    let img = |n: &str| fixtures().join("images").join(n);
    let place = |from: &str, to: &Path| {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(img(from), to).unwrap();
    };
    place("chelsea.png", &root.join("été/chat 🐱.png"));
    place("astronaut.png", &root.join("2024/astronaut.png"));
    place("rocket.png", &root.join("2024/launch/rocket.png"));
    place("coffee.png", &root.join("a/b/c/coffee.png"));
    place("photo.jpg", &root.join("photo.jpg"));
    place("camera.png", &root.join("camera.png"));
    place("palette.png", &root.join("palette.png"));
    place("wide.png", &root.join("wide.png"));
    place("camera.png", &root.join(".thumbs/camera.png"));
    place(
        "tall.png",
        &root.join(std::ffi::OsStr::from_bytes(b"caf\xe9.png")),
    );
    std::fs::write(
        root.join("broken.jpg"),
        b"\xff\xd8\xff\xe0 not really a jpeg",
    )
    .unwrap();
    std::fs::write(root.join("empty.png"), b"").unwrap();
    std::fs::write(root.join("notes.txt"), b"not an image").unwrap();
    (dir, root)
}

const VALID_IN_LIBRARY: usize = 9;

fn report(o: &Output) -> Value {
    json(o)["report"].clone()
}

fn count(r: &Value, key: &str) -> u64 {
    r[key].as_u64().unwrap_or_else(|| panic!("{key} in {r}"))
}

/// Embeddings of image files as `clipkit embed` computes them, keyed by path.
fn embed_images(paths: &[PathBuf]) -> HashMap<String, Vec<f32>> {
    let m = model();
    let mut args: Vec<std::ffi::OsString> = vec![
        "embed".into(),
        "-m".into(),
        m.into(),
        "-f".into(),
        "json".into(),
    ];
    for p in paths {
        args.push("--image".into());
        args.push(p.into());
    }
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let o = run_clipkit(&refs);
    ok(&o);
    json(&o)["images"]
        .as_array()
        .unwrap()
        .iter()
        .zip(paths)
        .map(|(v, p)| (p.to_string_lossy().into_owned(), floats(&v["embedding"])))
        .collect()
}

fn embed_texts(texts: &[&str]) -> Vec<Vec<f32>> {
    let m = model();
    let mut args: Vec<String> = vec![
        "embed".into(),
        "-m".into(),
        m.to_string_lossy().into(),
        "-f".into(),
        "json".into(),
    ];
    for t in texts {
        args.push("--text".into());
        args.push(t.to_string());
    }
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let o = run_clipkit(&refs);
    ok(&o);
    json(&o)["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| floats(&v["embedding"]))
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Every (path as shown, vector) in a store (a directory or a `milvus://` address).
fn store_contents(store: impl AsRef<OsStr>, scratch: &Path) -> HashMap<String, Vec<f32>> {
    store_entries(store, scratch)
        .into_iter()
        .map(|(p, v)| (p.to_string_lossy().into_owned(), v))
        .collect()
}

/// Every (path, vector) in a store, through `clipkit export` and its Parquet files.
fn store_entries(store: impl AsRef<OsStr>, scratch: &Path) -> Vec<(PathBuf, Vec<f32>)> {
    let out = scratch.join(format!("export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let o = run!(
        "export",
        "--store",
        store.as_ref(),
        "--format",
        "parquet",
        out
    );
    ok(&o);
    let mut entries = Vec::new();
    let mut seen = HashSet::new();
    for part in std::fs::read_dir(out.join("embeddings")).unwrap() {
        let table = clipkit_index::parquet_io::read_table(&part.unwrap().path()).unwrap();
        for (p, v) in table.strings["image_path"]
            .iter()
            .zip(&table.lists["embedding"])
        {
            let path = clipkit_index::paths::decode_path(p);
            assert!(seen.insert(path.clone()), "{} stored twice", path.display());
            entries.push((path, v.clone()));
        }
    }
    entries
}

fn canonical(root: &Path, rel: &str) -> PathBuf {
    std::fs::canonicalize(root).unwrap().join(rel)
}

/// Where a test's collection lives. The end-to-end tests run once per backend, so both pass
/// the same suite: the embedded store in the test's temp dir, and a collection on a real
/// milvus-lite server.
enum Backend {
    Embedded,
    Milvus(Arc<MilvusLite>),
}

impl Backend {
    fn milvus() -> Self {
        Self::Milvus(shared_milvus())
    }

    /// The `--store` address of collection `name` (distinct per test: the server is shared).
    fn store(&self, dir: &Path, name: &str) -> OsString {
        match self {
            Self::Embedded => dir.join(name).into_os_string(),
            Self::Milvus(server) => format!("milvus://127.0.0.1:{}/{name}", server.port).into(),
        }
    }
}

#[test]
fn incremental_indexing_embeds_exactly_what_changed() {
    incremental_indexing(Backend::Embedded);
}

#[test]
fn incremental_indexing_embeds_exactly_what_changed_on_milvus() {
    incremental_indexing(Backend::milvus());
}

fn incremental_indexing(backend: Backend) {
    let (dir, root) = library();
    let store = backend.store(dir.path(), "incremental");
    let m = model();
    let add = || run!("index", "add", "-m", m, "--store", store, "-q", "-f", "json", root);

    // First run: every readable image embedded; the two broken files reported, exit 1.
    let o = add();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let r = report(&o);
    assert_eq!(count(&r, "embedded"), VALID_IN_LIBRARY as u64);
    assert_eq!(r["failed"].as_array().unwrap().len(), 2);
    let err = stderr(&o);
    assert!(
        err.contains("broken.jpg") && err.contains("empty.png"),
        "{err}"
    );
    assert_eq!(count(&r, "total"), VALID_IN_LIBRARY as u64);

    // Nothing changed: nothing embedded.
    let r = report(&add());
    assert_eq!(
        (count(&r, "embedded"), count(&r, "unchanged")),
        (0, VALID_IN_LIBRARY as u64)
    );

    // One of each kind of change.
    std::fs::copy(fixtures().join("images/rgb16.png"), root.join("wide.png")).unwrap(); // modified
    std::fs::rename(
        root.join("2024/astronaut.png"),
        root.join("été/astronaut-moved.png"),
    )
    .unwrap(); // moved
    std::fs::copy(root.join("camera.png"), root.join("a/camera-copy.png")).unwrap(); // copied
    std::fs::remove_file(root.join("palette.png")).unwrap(); // deleted
    let touched = std::fs::File::options()
        .write(true)
        .open(root.join("photo.jpg"))
        .unwrap();
    touched
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap(); // same bytes, new mtime
    drop(touched);
    std::fs::copy(
        fixtures().join("images/rgba.png"),
        root.join("2024/new.png"),
    )
    .unwrap(); // new

    let s = run!("index", "status", "--store", store, "-f", "json");
    ok(&s);
    let s = json(&s);
    assert_eq!(s["new"].as_array().unwrap().len(), 3 + 2, "{s}"); // moved, copy, new + 2 broken
    assert_eq!(s["changed"].as_array().unwrap().len(), 2, "{s}"); // modified, touched
    assert_eq!(s["missing"].as_array().unwrap().len(), 2, "{s}"); // moved away, deleted
    assert_eq!(s["up_to_date"], false);

    let r = report(&add());
    assert_eq!(count(&r, "embedded"), 2, "{r}"); // the modified and the new file only
    assert_eq!(count(&r, "moved"), 1, "{r}");
    assert_eq!(count(&r, "copied"), 1, "{r}");
    assert_eq!(count(&r, "touched"), 1, "{r}");
    assert_eq!(count(&r, "removed"), 1, "{r}");
    assert_eq!(count(&r, "total"), VALID_IN_LIBRARY as u64 + 1);

    // Every stored vector is exactly what embedding that file now gives.
    let entries = store_entries(&store, dir.path());
    let files: Vec<PathBuf> = entries.iter().map(|(p, _)| p.clone()).collect();
    let fresh = embed_images(&files);
    let contents = store_contents(&store, dir.path());
    assert_eq!(contents.len(), VALID_IN_LIBRARY + 1);
    for (path, v) in &contents {
        let want = &fresh[path];
        assert!(dot(v, want) > 0.999_999, "{path}: stale vector");
    }
    assert!(contents.contains_key(
        canonical(&root, "été/astronaut-moved.png")
            .to_str()
            .unwrap()
    ));
    assert!(!contents
        .keys()
        .any(|p| p.contains("palette") || p.contains(".thumbs")));
    assert!(
        contents.keys().any(|p| p.contains("caf\u{fffd}")),
        "non-UTF-8 name indexed"
    );

    // --exclude drops matching files from the store on the next run.
    let o = run!(
        "index",
        "add",
        "-m",
        m,
        "--store",
        store,
        "-q",
        "-f",
        "json",
        "--exclude",
        "*/2024/*",
        root
    );
    let r = report(&o);
    assert_eq!(count(&r, "removed"), 2, "{r}");
    assert_eq!(count(&r, "embedded"), 0, "{r}");
}

#[test]
fn search_label_and_dedup_match_brute_force() {
    search_label_and_dedup(Backend::Embedded);
}

#[test]
fn search_label_and_dedup_match_brute_force_on_milvus() {
    search_label_and_dedup(Backend::milvus());
}

fn search_label_and_dedup(backend: Backend) {
    let (dir, root) = library();
    // Byte-identical copies: the near-duplicates dedup must find.
    std::fs::copy(root.join("camera.png"), root.join("a/camera-dup.png")).unwrap();
    let store = backend.store(dir.path(), "search_label_dedup");
    let m = model();
    let o = run!("index", "add", "-m", m, "--store", store, "-q", root);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let contents = store_contents(&store, dir.path());

    // Text search: same order and scores as brute force over the stored vectors.
    let q = embed_texts(&["a cat on a sofa"]).remove(0);
    let mut want: Vec<(&String, f32)> = contents.iter().map(|(p, v)| (p, dot(v, &q))).collect();
    want.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let o = run!(
        "search",
        "--store",
        store,
        "a cat on a sofa",
        "-k",
        "5",
        "-f",
        "json"
    );
    ok(&o);
    let got = json(&o)["results"].as_array().unwrap().clone();
    assert_eq!(got.len(), 5);
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (g["score"].as_f64().unwrap() as f32 - w.1).abs() < 1e-4,
            "{g} vs {w:?}"
        );
    }
    let got_scores: Vec<f32> = got
        .iter()
        .map(|g| g["score"].as_f64().unwrap() as f32)
        .collect();
    assert!(got_scores.windows(2).all(|w| w[0] >= w[1]));

    // Negative terms and thresholds: sum(+) − sum(−), renormalised.
    let parts = embed_texts(&["cat", "rocket"]);
    let mut combined: Vec<f32> = parts[0].iter().zip(&parts[1]).map(|(a, b)| a - b).collect();
    let norm = dot(&combined, &combined).sqrt();
    combined.iter_mut().for_each(|x| *x /= norm);
    let best = contents
        .iter()
        .map(|(p, v)| (p, dot(v, &combined)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    let o = run!("search", "--store", store, "cat", "-", "rocket", "-k", "1", "-f", "json");
    ok(&o);
    let top = &json(&o)["results"][0];
    assert!((top["score"].as_f64().unwrap() as f32 - best.1).abs() < 1e-4);
    let o = run!(
        "search",
        "--store",
        store,
        "cat",
        "--threshold",
        "2",
        "-f",
        "json"
    );
    assert_eq!(json(&o)["results"].as_array().unwrap().len(), 0);

    // Image query: the image itself (and its byte-identical copy) score 1.
    let cam = canonical(&root, "camera.png");
    let o = run!("search", "--store", store, "--image", cam, "-k", "2", "-f", "json");
    ok(&o);
    for r in json(&o)["results"].as_array().unwrap() {
        assert!((r["score"].as_f64().unwrap() - 1.0).abs() < 1e-4, "{r}");
        assert!(r["path"].as_str().unwrap().contains("camera"));
    }

    // Label: per label the best images, per image the best labels with the same
    // probabilities `classify` gives.
    let labels = ["cat", "rocket", "coffee", "astronaut"];
    let label_vectors = embed_texts(&labels);
    let o = run!(
        "label",
        "--store",
        store,
        "-l",
        "cat",
        "-l",
        "rocket",
        "-l",
        "coffee",
        "-l",
        "astronaut",
        "--images-per-label",
        "3",
        "--labels-per-image",
        "2",
        "-f",
        "json"
    );
    ok(&o);
    let result = json(&o);
    assert_eq!(result["per_label"].as_array().unwrap().len(), labels.len());
    for (li, (entry, lv)) in result["per_label"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&label_vectors)
        .enumerate()
    {
        let mut want: Vec<f32> = contents.values().map(|v| dot(v, lv)).collect();
        want.sort_by(|a, b| b.total_cmp(a));
        let got: Vec<f32> = entry["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["score"].as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got.len(), 3);
        assert_eq!(entry["label"], labels[li]);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-4, "{entry}");
        }
        // Each image named is one that really scores that (ties make the order of equal
        // scores free, so the scores above pin the ranking and this pins the paths).
        for h in entry["images"].as_array().unwrap() {
            let v = &contents[h["path"].as_str().unwrap()];
            assert!(
                (dot(v, lv) - h["score"].as_f64().unwrap() as f32).abs() < 1e-4,
                "{h}"
            );
        }
    }
    // Per image: its two best labels and their cosines, for every image, by brute force.
    let per_image = result["per_image"].as_array().unwrap();
    assert_eq!(per_image.len(), contents.len());
    for e in per_image {
        let v = &contents[e["path"].as_str().unwrap()];
        let mut want: Vec<(&str, f32)> = labels
            .iter()
            .zip(&label_vectors)
            .map(|(l, lv)| (*l, dot(v, lv)))
            .collect();
        want.sort_by(|a, b| b.1.total_cmp(&a.1));
        let got = e["labels"].as_array().unwrap();
        assert_eq!(got.len(), 2, "{e}");
        for (g, (label, score)) in got.iter().zip(&want) {
            assert_eq!(g["label"], *label, "{e}");
            assert!(
                (g["score"].as_f64().unwrap() as f32 - score).abs() < 1e-4,
                "{e}"
            );
        }
    }
    let chat = per_image
        .iter()
        .find(|e| e["path"].as_str().unwrap().ends_with("chat 🐱.png"))
        .unwrap();
    let o = run!(
        "classify",
        "-m",
        m,
        "-l",
        "cat",
        "-l",
        "rocket",
        "-l",
        "coffee",
        "-l",
        "astronaut",
        "-f",
        "json",
        canonical(&root, "été/chat 🐱.png")
    );
    ok(&o);
    let classified = json(&o);
    let probs: HashMap<String, f64> = classified[0]["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["label"].as_str().unwrap().to_owned(),
                l["prob"].as_f64().unwrap(),
            )
        })
        .collect();
    for l in chat["labels"].as_array().unwrap() {
        let want = probs[l["label"].as_str().unwrap()];
        assert!(
            (l["prob"].as_f64().unwrap() - want).abs() < 1e-4,
            "{l} vs {want}"
        );
    }
    let out = dir.path().join("labels.parquet");
    let o = run!("label", "--store", store, "-l", "cat", "-l", "rocket", "-o", out);
    ok(&o);
    let table = clipkit_index::parquet_io::read_table(&out).unwrap();
    // Defaults: 10 images per label, 3 labels per image (of the 2 given).
    assert_eq!(table.rows, 2 * 10.min(contents.len()) + contents.len() * 2);

    // Dedup: the groups are the connected components of all pairs at or above the
    // threshold, by brute force over every pair — at a strict threshold (the identical
    // copies), at the calibrated one, and at a loose one where groups chain together.
    let paths: Vec<&String> = contents.keys().collect();
    let mut pair_scores: Vec<(usize, usize, f32)> = Vec::new();
    for i in 0..paths.len() {
        for j in i + 1..paths.len() {
            pair_scores.push((i, j, dot(&contents[paths[i]], &contents[paths[j]])));
        }
    }
    // Halfway between two neighbouring pair scores, so no pair sits on the threshold.
    let mut sorted: Vec<f32> = pair_scores.iter().map(|p| p.2).collect();
    sorted.sort_by(f32::total_cmp);
    let loose = (sorted[sorted.len() / 2] + sorted[sorted.len() / 2 + 1]) / 2.0;
    for threshold in ["0.99999".to_owned(), "auto".to_owned(), loose.to_string()] {
        let o = run!(
            "dedup",
            "--store",
            store,
            "--threshold",
            threshold,
            "-f",
            "json"
        );
        ok(&o);
        let result = json(&o);
        let t = result["threshold"].as_f64().unwrap() as f32;
        let as_sets = |groups: &Value| -> Vec<Vec<String>> {
            let mut sets: Vec<Vec<String>> = groups
                .as_array()
                .unwrap()
                .iter()
                .map(|g| {
                    let mut m: Vec<String> = g["members"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|m| m.as_str().unwrap().to_owned())
                        .collect();
                    m.sort();
                    m
                })
                .collect();
            sets.sort();
            sets
        };
        let got = as_sets(&result["groups"]);
        // Union–find over every pair above the threshold.
        let mut parent: Vec<usize> = (0..paths.len()).collect();
        fn find(parent: &mut [usize], mut x: usize) -> usize {
            while parent[x] != x {
                x = parent[x];
            }
            x
        }
        let above: Vec<&(usize, usize, f32)> = pair_scores.iter().filter(|p| p.2 >= t).collect();
        for &&(i, j, _) in &above {
            let (a, b) = (find(&mut parent, i), find(&mut parent, j));
            parent[a.max(b)] = a.min(b);
        }
        let mut want: HashMap<usize, Vec<String>> = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let r = find(&mut parent, i);
            want.entry(r).or_default().push((*path).clone());
        }
        let mut want: Vec<Vec<String>> = want
            .into_values()
            .filter(|g| g.len() > 1)
            .map(|mut g| {
                g.sort();
                g
            })
            .collect();
        want.sort();
        assert_eq!(got, want, "dedup at {threshold} (t = {t})");
        let reported_pairs: usize = result["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["pairs"].as_array().unwrap().len())
            .sum();
        assert_eq!(reported_pairs, above.len(), "dedup pairs at {threshold}");
        if threshold == "0.99999" {
            assert!(!want.is_empty(), "the identical copies form a group");
        }
        if threshold == loose.to_string() {
            assert!(
                want.iter().any(|g| g.len() > 2),
                "a loose threshold chains groups: {want:?}"
            );
        }
    }
}

#[test]
fn cluster_is_a_k_means_fixed_point_with_contact_sheets() {
    cluster_fixed_point(Backend::Embedded);
}

#[test]
fn cluster_is_a_k_means_fixed_point_on_milvus() {
    cluster_fixed_point(Backend::milvus());
}

fn cluster_fixed_point(backend: Backend) {
    let (dir, root) = library();
    let store = backend.store(dir.path(), "cluster");
    let m = model();
    run!("index", "add", "-m", m, "--store", store, "-q", root);
    let contents = store_contents(&store, dir.path());
    let sheets = dir.path().join("sheets");
    let o = run!(
        "cluster",
        "--store",
        store,
        "-k",
        "3",
        "--contact-sheets",
        sheets,
        "-l",
        "cat",
        "-l",
        "rocket",
        "-l",
        "coffee",
        "-l",
        "astronaut",
        "-f",
        "json"
    );
    ok(&o);
    let result = json(&o);
    let clusters = result["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 3);
    let members: Vec<Vec<String>> = clusters
        .iter()
        .map(|c| {
            c["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["path"].as_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    let all: HashSet<&String> = members.iter().flatten().collect();
    assert_eq!(all.len(), contents.len());
    assert_eq!(members.iter().map(Vec::len).sum::<usize>(), contents.len());
    let labels = ["cat", "rocket", "coffee", "astronaut"];
    let label_vectors = embed_texts(&labels);
    // Brute force: centroids from the membership; each image is nearest its own.
    let dim = contents.values().next().unwrap().len();
    let centroids: Vec<Vec<f32>> = members
        .iter()
        .map(|ms| {
            let mut c = vec![0.0f32; dim];
            for m in ms {
                for (a, b) in c.iter_mut().zip(&contents[m]) {
                    *a += b;
                }
            }
            let n = dot(&c, &c).sqrt();
            c.iter().map(|x| x / n).collect()
        })
        .collect();
    for (ci, (c, ms)) in clusters.iter().zip(&members).enumerate() {
        for (m, reported) in ms.iter().zip(c["members"].as_array().unwrap()) {
            let own = dot(&contents[m], &centroids[ci]);
            assert!((reported["score"].as_f64().unwrap() as f32 - own).abs() < 1e-4);
            for other in &centroids {
                assert!(
                    own >= dot(&contents[m], other) - 1e-5,
                    "{m} is nearer another centroid"
                );
            }
        }
        assert_eq!(c["size"].as_u64().unwrap() as usize, ms.len());
        assert!(sheets.join(format!("cluster_{ci:03}.png")).exists());
        // Named by the labels nearest its centroid, best first, by brute force.
        let mut want: Vec<(&str, f32)> = labels
            .iter()
            .zip(&label_vectors)
            .map(|(l, lv)| (*l, dot(&centroids[ci], lv)))
            .collect();
        want.sort_by(|a, b| b.1.total_cmp(&a.1));
        let names = c["names"].as_array().unwrap();
        assert_eq!(names.len(), 3, "{c}");
        for (got, (label, score)) in names.iter().zip(&want) {
            assert_eq!(got["label"], *label, "cluster {ci}");
            assert!((got["score"].as_f64().unwrap() as f32 - score).abs() < 1e-4);
        }
    }
    // Automatic k stays within the range it reports.
    let o = run!("cluster", "--store", store, "--max-k", "4", "-f", "json");
    ok(&o);
    let k = json(&o)["k"].as_u64().unwrap();
    assert!((2..=4).contains(&k), "{k}");
}

#[test]
fn export_and_import_round_trip_both_layouts() {
    let (dir, root) = library();
    let store = dir.path().join("store");
    let m = model();
    run!("index", "add", "-m", m, "--store", store, "-q", root);
    let original = store_contents(&store, dir.path());
    for (format, half) in [("npy", false), ("parquet", false), ("npy", true)] {
        let out = dir.path().join(format!("out-{format}-{half}"));
        let o = if half {
            run!(
                "export",
                "--store",
                store,
                "--format",
                format,
                "--half",
                "--shard-size",
                "4",
                out
            )
        } else {
            run!(
                "export",
                "--store",
                store,
                "--format",
                format,
                "--shard-size",
                "4",
                out
            )
        };
        ok(&o);
        if format == "npy" {
            assert!(out.join("img_emb/img_emb_0.npy").exists());
            assert!(out.join("metadata/metadata_0.parquet").exists());
            assert!(out.join("img_emb/img_emb_2.npy").exists(), "sharded by 4");
        }
        let copy = dir.path().join(format!("copy-{format}-{half}"));
        let o = run!("import", "-m", m, "--store", copy, out);
        ok(&o);
        let imported = store_contents(&copy, dir.path());
        assert_eq!(imported.len(), original.len());
        for (p, v) in &original {
            let tolerance = if half { 1e-3 } else { 1e-6 };
            assert!(1.0 - dot(v, &imported[p]) < tolerance, "{p}");
        }
        // The imported store is live: re-indexing the same folder embeds nothing new.
        let o = run!("index", "add", "-m", m, "--store", copy, "-q", "-f", "json", root);
        assert_eq!(count(&report(&o), "embedded"), 0, "{}", stderr(&o));
    }
    // A model with another embedding size is refused, naming the file.
    let gelu = fixtures().join("models/tiny-gelu");
    let o = run!(
        "import",
        "-m",
        gelu,
        "--store",
        dir.path().join("wrong"),
        dir.path().join("out-npy-false")
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("img_emb_0.npy"), "{}", stderr(&o));
}

#[test]
fn store_problems_are_clear() {
    let (dir, root) = library();
    let store = dir.path().join("store");
    let m = model();
    let o = run!("search", "--store", store, "cat");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("does not exist yet"), "{}", stderr(&o));
    run!("index", "add", "-m", m, "--store", store, "-q", root);
    let gelu = fixtures().join("models/tiny-gelu");
    let o = run!("index", "add", "-m", gelu, "--store", store, "-q", root);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("dimensions"), "{}", stderr(&o));
    let o = run!("search", "--store", store);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("query is empty"), "{}", stderr(&o));
    let o = run!("search", "--store", "s3://bucket/x", "cat");
    assert!(stderr(&o).contains("unknown scheme"), "{}", stderr(&o));
    let o = run!("label", "--store", store);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).to_lowercase().contains("label"),
        "{}",
        stderr(&o)
    );
    let o = run!("dedup", "--store", store, "--threshold", "1.5");
    assert_eq!(o.status.code(), Some(2));
}

/// Distinct small PNGs (noise), so every file needs its own embedding.
fn noise_images(dir: &Path, n: usize, seed: u64) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let mut s = seed;
    (0..n)
        .map(|i| {
            let img = image::RgbImage::from_fn(48, 40, |_, _| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                image::Rgb([(s >> 56) as u8, (s >> 48) as u8, (s >> 40) as u8])
            });
            let p = dir.join(format!("noise-{seed}-{i:04}.png"));
            img.save(&p).unwrap();
            p
        })
        .collect()
}

#[test]
fn indexing_killed_at_random_points_resumes_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    let mut files = noise_images(&root.join("a"), 300, 1);
    let store = dir.path().join("store");
    let m = model();
    let mut kills = 0;
    // Kills that landed after this run had committed something and before it finished.
    let mut mid_run = 0;
    let mut rng = 12345u64;
    let mut batch = 2;
    // Until at least 12 kills, 5 of them between commits. Every other run is killed at a
    // random time after its first commit — a fixed delay from the start lands in start-up
    // (model loading) on a loaded machine — the rest at a random time from the start.
    for round in 0..120 {
        if kills >= 12 && mid_run >= 5 {
            break;
        }
        let before = indexed(&store);
        let mut child = clipkit()
            .args(["index", "add", "-q", "--commit-every", "3", "-m"])
            .arg(&m)
            .arg("--store")
            .arg(&store)
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = if round % 2 == 1 {
            let waiting = std::time::Instant::now();
            while child.try_wait().unwrap().is_none()
                && indexed(&store) <= before
                && waiting.elapsed() < Duration::from_secs(60)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            (rng >> 33) % 60
        } else {
            20 + (rng >> 33) % 400
        };
        std::thread::sleep(Duration::from_millis(delay));
        let killed = child.try_wait().unwrap().is_none();
        if killed {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        let after = indexed(&store);
        if killed && after > before && after < files.len() {
            mid_run += 1;
        }
        // After every kill the store opens and reports a consistent state.
        let s = run!("index", "status", "--store", store, "-f", "json");
        if !s.status.success() {
            // Killed before the store was first committed: it does not exist yet.
            assert!(stderr(&s).contains("does not exist yet"), "{}", stderr(&s));
        } else {
            let s = json(&s);
            let indexed = s["indexed"].as_u64().unwrap() as usize;
            assert!(indexed <= files.len());
            assert_eq!(
                indexed,
                s["unchanged"].as_u64().unwrap() as usize + s["changed"].as_array().unwrap().len()
            );
        }
        // A run that finished gets new work, so later kills land mid-run again.
        if child_finished_everything(&store, files.len()) {
            files.extend(noise_images(&root.join(format!("b{batch}")), 60, batch));
            batch += 1;
        }
    }
    eprintln!("{kills} runs killed, {mid_run} of them between commits");
    assert!(kills >= 10, "only {kills} runs were killed mid-way");
    assert!(
        mid_run >= 5,
        "only {mid_run} of {kills} kills landed between commits; the rest hit start-up"
    );

    let o = run!("index", "add", "-q", "-f", "json", "-m", m, "--store", store, root);
    ok(&o);
    let r = report(&o);
    assert_eq!(count(&r, "total") as usize, files.len(), "{r}");

    // Every file exactly once, each with exactly the vector a clean run computes.
    let contents = store_contents(&store, dir.path());
    assert_eq!(contents.len(), files.len());
    let clean = dir.path().join("clean");
    ok(&run!("index", "add", "-q", "-m", m, "--store", clean, root));
    let reference = store_contents(&clean, dir.path());
    for (p, v) in &reference {
        let got = contents.get(p).unwrap_or_else(|| panic!("{p} lost"));
        assert!(dot(v, got) > 0.999_999, "{p}: wrong vector after resume");
    }
}

fn child_finished_everything(store: &Path, files: usize) -> bool {
    indexed(store) == files
}

/// How many files the store holds (0 before it exists).
fn indexed(store: &Path) -> usize {
    let s = run!("index", "status", "--store", store, "-f", "json");
    if !s.status.success() {
        return 0;
    }
    json(&s)["indexed"].as_u64().unwrap() as usize
}

/// Ctrl-C (SIGINT) lets the batch in flight commit, reports the run as interrupted (exit 1)
/// and leaves a store the next run completes.
#[test]
fn ctrl_c_stops_cleanly_and_the_next_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    let files = noise_images(&root, 600, 99);
    let store = dir.path().join("store");
    let m = model();
    let child = clipkit()
        .args([
            "index",
            "add",
            "-q",
            "-f",
            "json",
            "--commit-every",
            "1",
            "-m",
        ])
        .arg(&m)
        .arg("--store")
        .arg(&store)
        .arg(&root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the first batches are committed (the handler is installed by then).
    let started = std::time::Instant::now();
    while indexed(&store) == 0 {
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("stopped early"), "{}", stderr(&o));
    let r = report(&o);
    assert_eq!(r["interrupted"], true, "{r}");
    let done = count(&r, "total") as usize;
    assert!(done > 0 && done < files.len(), "{r}");
    assert_eq!(count(&r, "embedded") as usize, done, "{r}");
    assert_eq!(indexed(&store), done, "what the report counts is committed");

    let o = run!("index", "add", "-q", "-f", "json", "-m", m, "--store", store, root);
    ok(&o);
    let r = report(&o);
    assert_eq!(count(&r, "unchanged") as usize, done, "{r}");
    assert_eq!(count(&r, "embedded") as usize, files.len() - done, "{r}");
    assert_eq!(count(&r, "total") as usize, files.len(), "{r}");
}

/// A milvus-lite server on a free loopback port, stopped on drop.
struct MilvusLite {
    child: std::process::Child,
    port: u16,
    _data: tempfile::TempDir,
}

impl MilvusLite {
    fn start() -> Self {
        let exe = std::env::var_os("CLIPKIT_MILVUS_LITE")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("PATH").and_then(|paths| {
                    std::env::split_paths(&paths)
                        .map(|p| p.join("milvus-lite"))
                        .find(|p| p.is_file())
                })
            })
            .unwrap_or_else(|| {
                panic!(
                    "milvus-lite not found: `pip install milvus-lite==3.2.2 pymilvus==3.0.2` \
                     and set CLIPKIT_MILVUS_LITE to its `milvus-lite` executable (.ci/run does)"
                )
            });
        let data = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(exe)
            .args(["server", "--data-dir"])
            .arg(data.path())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("milvus-lite starts");
        let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "milvus-lite did not start in 90 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Self {
            child,
            port,
            _data: data,
        }
    }
}

impl Drop for MilvusLite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One server shared by the tests running at the same time (each uses its own collection);
/// it stops when the last of them drops it.
fn shared_milvus() -> Arc<MilvusLite> {
    static SHARED: Mutex<Weak<MilvusLite>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(server) = slot.upgrade() {
        return server;
    }
    let server = Arc::new(MilvusLite::start());
    *slot = Arc::downgrade(&server);
    server
}

/// The same commands on Milvus give the same answers as on the embedded store.
#[test]
fn milvus_store_runs_the_same_commands() {
    let server = MilvusLite::start();
    let (dir, root) = library();
    let m = model();
    let embedded = dir.path().join("store").into_os_string();
    let milvus = std::ffi::OsString::from(format!("milvus://127.0.0.1:{}/photos", server.port));
    for store in [&embedded, &milvus] {
        let o = run!("index", "add", "-m", m, "--store", store, "-q", "-f", "json", root);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert_eq!(count(&report(&o), "embedded"), VALID_IN_LIBRARY as u64);
    }
    let a = store_contents(Path::new(&embedded), dir.path());
    let b = store_contents(Path::new(&milvus), dir.path());
    assert_eq!(a.len(), b.len());
    for (p, v) in &a {
        assert!(dot(v, &b[p]) > 0.999_999, "{p}");
    }
    let results = |store: &std::ffi::OsString, args: &[&str]| -> Value {
        let mut all: Vec<std::ffi::OsString> = args.iter().map(|s| s.into()).collect();
        all.extend(["--store".into(), store.clone(), "-f".into(), "json".into()]);
        let refs: Vec<&std::ffi::OsStr> = all.iter().map(|s| s.as_os_str()).collect();
        let o = run_clipkit(&refs);
        ok(&o);
        json(&o)
    };
    let scores = |v: &Value| -> Vec<(String, i64)> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["path"].as_str().unwrap().to_owned(),
                    (r["score"].as_f64().unwrap() * 1e4).round() as i64,
                )
            })
            .collect()
    };
    let search = ["search", "a cat", "-", "rocket", "-k", "5"];
    assert_eq!(
        scores(&results(&embedded, &search)),
        scores(&results(&milvus, &search))
    );
    let dedup = ["dedup", "--threshold", "0.99999"];
    assert_eq!(
        results(&embedded, &dedup)["groups"],
        results(&milvus, &dedup)["groups"]
    );

    // Incremental on Milvus too: a move re-embeds nothing.
    std::fs::rename(root.join("camera.png"), root.join("été/camera.png")).unwrap();
    let o = run!("index", "add", "-m", m, "--store", milvus, "-q", "-f", "json", root);
    let r = report(&o);
    assert_eq!((count(&r, "embedded"), count(&r, "moved")), (0, 1), "{r}");
    let s = run!("index", "status", "--store", milvus, "-f", "json");
    ok(&s);
    assert_eq!(
        json(&s)["up_to_date"],
        false,
        "the two broken files stay new"
    );
    assert_eq!(json(&s)["indexed"].as_u64(), Some(VALID_IN_LIBRARY as u64));
}

/// Two `index add --shard I/2` workers fill one Milvus collection at the same time; one is
/// SIGKILLed after it has committed part of its share and started again. The collection ends
/// exactly as a single worker's index of the same tree: the same paths, each once, with the
/// same vectors.
#[test]
fn shard_workers_killed_and_resumed_equal_one_worker_on_milvus() {
    let server = shared_milvus();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    let mut files = noise_images(&root.join("x"), 60, 5);
    files.extend(noise_images(&root.join("y/z"), 60, 6));
    let m = model();
    let address = |name: &str| format!("milvus://127.0.0.1:{}/{name}", server.port);
    let (single, sharded) = (address("cli_single"), address("cli_sharded"));
    ok(&run!(
        "index", "add", "-q", "-m", m, "--store", single, root
    ));

    let worker = |i: u32| {
        clipkit()
            .args([
                "index",
                "add",
                "-q",
                "-f",
                "json",
                "--commit-every",
                "4",
                "-m",
            ])
            .arg(&m)
            .args(["--store", &sharded, "--shard", &format!("{i}/2")])
            .arg(&root)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let status = || {
        let s = run!("index", "status", "--store", sharded, "-f", "json");
        if s.status.success() {
            json(&s)["indexed"].as_u64().unwrap() as usize
        } else {
            0
        }
    };
    let mut first = worker(0);
    let second = worker(1);
    // Killed once something is committed (and, on a fast machine, perhaps after it is done:
    // then the restart has nothing to do, which must hold too).
    let waiting = std::time::Instant::now();
    while status() == 0 && waiting.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = first.try_wait().unwrap().is_none();
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let second = second.wait_with_output().unwrap();
    ok(&second);
    assert_eq!(json(&second)["shard"], "1/2");
    let resumed = run!(
        "index", "add", "-q", "-f", "json", "-m", m, "--store", sharded, "--shard", "0/2", root
    );
    ok(&resumed);
    let r = report(&resumed);
    eprintln!("worker 0 killed mid-run: {killed}; its restart: {r}");
    assert_eq!(count(&r, "total") as usize, files.len(), "{r}");

    // Each path once (store_entries checks), the same set and vectors as one worker.
    let got = store_contents(&sharded, dir.path());
    let want = store_contents(&single, dir.path());
    assert_eq!(got.len(), files.len());
    let mut got_paths: Vec<&String> = got.keys().collect();
    let mut want_paths: Vec<&String> = want.keys().collect();
    got_paths.sort();
    want_paths.sort();
    assert_eq!(got_paths, want_paths);
    for (p, v) in &want {
        assert!(dot(v, &got[p]) > 0.999_999, "{p}: vector differs");
    }
}
