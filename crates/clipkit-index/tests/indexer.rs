//! The indexer's decisions with a stand-in model: only content the store has never seen is
//! decoded and embedded; unchanged, moved and copied files take their vectors from the store
//! without being decoded; broken files fail alone.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use clipkit_core::{ClipError, Crop, Embedder, Scoring};
use clipkit_image::{ImageError, ImageProblem, PreprocessMode};
use clipkit_index::embedded::EmbeddedStore;
use clipkit_index::indexer::{Indexer, Progress, Report, WalkOptions};
use clipkit_index::{CollectionInfo, Store};

/// A "model" whose input is a byte histogram (so equal bytes give equal vectors) and which
/// rejects files that start with `bad`, like a decoder would. It records which files it was
/// asked to decode. Its "crop" is the file's bytes as a row of grey pixels.
#[derive(Default)]
struct Histogram {
    decoded: Mutex<Vec<PathBuf>>,
}

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

    fn preprocess(&self, path: &Path, bytes: &[u8]) -> Result<Crop, ClipError> {
        self.decoded.lock().unwrap().push(path.to_owned());
        if bytes.starts_with(b"bad") {
            return Err(ClipError::Image(ImageError::Image {
                path: path.to_owned(),
                problem: ImageProblem::Corrupt("not an image".into()),
            }));
        }
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

impl Histogram {
    /// Names of the files decoded since the last call, sorted.
    fn take_decoded(&self) -> Vec<String> {
        let mut names: Vec<String> = std::mem::take(&mut *self.decoded.lock().unwrap())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

struct Quiet;
impl Progress for Quiet {}

fn run(store: &mut dyn Store, model: &Histogram, root: &Path, batch_size: usize) -> Report {
    let roots = clipkit_index::indexer::canonical_roots(&[root.to_owned()]).unwrap();
    Indexer {
        store,
        embedder: model,
        batch_size,
        walk: WalkOptions::default(),
        cancel: None,
        progress: &Quiet,
    }
    .run(&roots)
    .unwrap()
}

fn vector(store: &dyn Store, path: &Path) -> Vec<f32> {
    let path = path.canonicalize().unwrap();
    store.vectors(std::slice::from_ref(&path)).unwrap()[0]
        .clone()
        .unwrap_or_else(|| panic!("{} is not in the store", path.display()))
}

#[test]
fn only_unseen_content_is_decoded_and_moves_and_copies_reuse_vectors() {
    for batch_size in [1, 2, 32] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("photos");
        std::fs::create_dir(&root).unwrap();
        let write = |name: &str, bytes: &[u8]| std::fs::write(root.join(name), bytes).unwrap();
        write("a.jpg", b"xxxx content one");
        write("b.jpg", b"yyyy content two");
        write("c.jpg", b"xxxx content one");
        write("broken.jpg", b"bad bytes");
        write("empty.jpg", b"");
        let mut store = EmbeddedStore::open(
            &tmp.path().join("store"),
            Some(&CollectionInfo {
                model: "histogram".into(),
                dim: DIM,
                preprocess: PreprocessMode::default(),
                family: None,
            }),
        )
        .unwrap();
        let model = Histogram::default();

        let first = run(&mut *store, &model, &root, batch_size);
        assert_eq!(
            (
                first.embedded,
                first.copied,
                first.failed.len(),
                first.total
            ),
            (2, 1, 2, 3),
            "batch {batch_size}: {first:?}"
        );
        let failed: Vec<&str> = first.failed.iter().map(|f| f.path.as_str()).collect();
        assert!(
            failed.iter().any(|p| p.ends_with("broken.jpg")),
            "{failed:?}"
        );
        assert!(
            failed.iter().any(|p| p.ends_with("empty.jpg")),
            "{failed:?}"
        );
        // An empty file never reaches the decoder; c.jpg is decoded only when it shares a
        // batch with a.jpg (the store cannot know a.jpg's vector before the batch commits).
        let decoded = model.take_decoded();
        let expect_c = usize::from(batch_size > 2);
        assert_eq!(
            decoded.len(),
            3 + expect_c,
            "batch {batch_size}: {decoded:?}"
        );
        assert!(!decoded.contains(&"empty.jpg".to_string()));
        assert_eq!(
            vector(&*store, &root.join("a.jpg")),
            vector(&*store, &root.join("c.jpg"))
        );
        let y = vector(&*store, &root.join("b.jpg"));

        // b.jpg moved to g.jpg, and a new h.jpg with the same bytes; c.jpg touched (new mtime,
        // same bytes). None of them needs the model.
        std::fs::rename(root.join("b.jpg"), root.join("g.jpg")).unwrap();
        write("h.jpg", b"yyyy content two");
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(root.join("c.jpg"))
            .unwrap()
            .set_modified(later)
            .unwrap();
        let second = run(&mut *store, &model, &root, batch_size);
        assert_eq!(
            (
                second.embedded,
                second.moved,
                second.copied,
                second.touched,
                second.removed
            ),
            (0, 1, 1, 1, 0),
            "batch {batch_size}: {second:?}"
        );
        // Only the broken file (still new to the store) is decoded again.
        assert_eq!(model.take_decoded(), vec!["broken.jpg".to_string()]);
        assert_eq!(second.total, 4, "a, c, g, h");
        assert_eq!(vector(&*store, &root.join("g.jpg")), y);
        assert_eq!(vector(&*store, &root.join("h.jpg")), y);
        assert!(store
            .vectors(&[root.canonicalize().unwrap().join("b.jpg")])
            .unwrap()[0]
            .is_none());
    }
}
