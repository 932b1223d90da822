//! The one interface every backend implements, and how a `--store` address picks one.
//!
//! Writes are expressed as [`Batch`]es keyed by path. Because a path always maps to the same
//! id ([`crate::paths::path_id`]), applying a batch twice has the same effect as applying it
//! once: a backend without transactions (Milvus) still converges after a killed run, and one
//! with them (SQLite) never shows half a batch.

use std::path::{Path, PathBuf};

use clipkit_image::{PhotoMetadata, PreprocessMode};
use serde::{Deserialize, Serialize};

use crate::filter::Filter;
use crate::paths;
use crate::Result;

/// What the vectors in a collection are: embeddings of one model, so a query from another
/// model (or another preprocessing) would be meaningless and is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionInfo {
    pub model: String,
    pub dim: usize,
    /// The preprocessing the image embeddings were made with; stored by its name (`hf` or
    /// `openai`), so collections written before it was an enum still open.
    pub preprocess: PreprocessMode,
    /// The model family (`CLIP`, `SigLIP`, `open_clip`, …): two checkpoints of different
    /// families never share a space, even where their names or sizes could be confused.
    /// `None` in collections written before it was recorded; those are not checked by it.
    #[serde(default)]
    pub family: Option<String>,
}

impl CollectionInfo {
    /// Whether vectors described by `wanted` can go into (or query) a collection described by
    /// `self`: same size, model, preprocessing, and family where both record one.
    pub fn accepts(&self, wanted: &CollectionInfo) -> bool {
        let family_agrees = match (&self.family, &wanted.family) {
            (Some(stored), Some(wanted)) => stored == wanted,
            _ => true,
        };
        self.dim == wanted.dim
            && self.model == wanted.model
            && self.preprocess == wanted.preprocess
            && family_agrees
    }

    /// The checkpoint as error messages show it: `name (family, preprocessing)`.
    pub fn describe(&self) -> String {
        match &self.family {
            Some(family) => format!("{} ({family}, {})", self.model, self.preprocess),
            None => format!("{} ({})", self.model, self.preprocess),
        }
    }
}

/// What a store knows about one indexed file: enough to tell whether it changed, and what
/// the filters ask about it.
#[derive(Clone, Debug, PartialEq)]
pub struct FileRecord {
    pub path: PathBuf,
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// blake3 of the content, hex.
    pub hash: String,
    /// Capture date, position and camera, read at index time (empty for stores written
    /// before they were recorded, until backfilled).
    pub meta: PhotoMetadata,
}

impl FileRecord {
    pub fn id(&self) -> i64 {
        paths::path_id(&self.path)
    }

    /// When the photo was taken, in seconds on its own clock: the EXIF capture date, else the
    /// modification time (UTC). What the date filters compare.
    pub fn taken(&self) -> i64 {
        self.meta
            .taken
            .unwrap_or_else(|| self.mtime_ns.div_euclid(1_000_000_000))
    }
}

/// A file with its (L2-normalised) embedding.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub file: FileRecord,
    pub vector: Vec<f32>,
}

/// One unit of writing: upserts first, then removals, so a crash in between leaves an extra
/// (stale) entry that the next run removes, never a lost one.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub upserts: Vec<Entry>,
    pub removals: Vec<PathBuf>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

/// One search result; `score` is the cosine similarity.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hit {
    #[serde(serialize_with = "paths::serialize_lossy")]
    pub path: PathBuf,
    pub score: f32,
}

/// A label and its (prompt-ensembled, normalised) text embedding.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelVector {
    pub label: String,
    pub vector: Vec<f32>,
}

/// A collection of image embeddings.
pub trait Store: Send + Sync {
    /// How the user named this store, for messages.
    fn address(&self) -> String;
    fn info(&self) -> &CollectionInfo;
    fn len(&self) -> Result<usize>;
    fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Every indexed file, without vectors.
    fn files(&self) -> Result<Vec<FileRecord>>;
    /// The stored vector of each path, `None` where the path is not in the store.
    fn vectors(&self, paths: &[PathBuf]) -> Result<Vec<Option<Vec<f32>>>>;
    /// Applies upserts, then removals. Atomic where the backend allows, idempotent always.
    fn apply(&mut self, batch: Batch) -> Result<()>;
    /// Visits every entry, `chunk` at a time, in a stable order.
    fn scan(&self, chunk: usize, visit: &mut dyn FnMut(&[Entry]) -> Result<()>) -> Result<()>;
    /// The `k` nearest entries by cosine for each (normalised) query, best first, among the
    /// entries `filter` lets through (all of them for `Filter::default()`).
    fn search(&self, queries: &[Vec<f32>], k: usize, filter: &Filter) -> Result<Vec<Vec<Hit>>>;
    /// Persists derived state (an ANN index) after a run of writes.
    fn flush(&mut self) -> Result<()>;
    /// Stores a named label set as its own collection of vectors (replacing one of that name).
    fn put_labels(&mut self, set: &str, labels: &[LabelVector]) -> Result<()>;
    fn labels(&self, set: &str) -> Result<Option<Vec<LabelVector>>>;
    /// Paths whose capture metadata was never read: entries of a store written before it was
    /// recorded, which the indexer backfills from the files still on disk. Empty for a
    /// backend that does not keep track (the default).
    fn unread_metadata(&self) -> Result<Vec<PathBuf>> {
        Ok(Vec::new())
    }
    /// Records the capture metadata of stored entries and marks it read; vectors, hashes,
    /// sizes and mtimes are left as they are, and paths not in the store are skipped. A no-op
    /// for a backend that does not keep track (the default).
    fn set_metadata(&mut self, _files: &[(PathBuf, PhotoMetadata)]) -> Result<()> {
        Ok(())
    }
    /// The folders indexed into this store, so `index status` can look at them again.
    fn roots(&self) -> Result<Vec<PathBuf>>;
    fn add_roots(&mut self, roots: &[PathBuf]) -> Result<()>;
}

/// Where a collection lives, parsed from `--store`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreAddress {
    /// A directory holding `store.sqlite` and the ANN index.
    Embedded(PathBuf),
    /// `milvus://HOST:PORT/COLLECTION`.
    Milvus {
        endpoint: String,
        collection: String,
    },
}

impl StoreAddress {
    pub fn parse(address: &str) -> Result<Self> {
        let bad = |problem: &str| crate::IndexError::BadAddress {
            address: address.to_owned(),
            problem: problem.to_owned(),
        };
        if let Some(rest) = address.strip_prefix("milvus://") {
            let (host, collection) = rest
                .split_once('/')
                .ok_or_else(|| bad("expected milvus://HOST:PORT/COLLECTION"))?;
            if host.is_empty() {
                return Err(bad("missing HOST:PORT"));
            }
            let valid = !collection.is_empty()
                && collection
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !collection.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(bad(
                    "the collection name must be letters, digits and underscores, not starting with a digit",
                ));
            }
            let host = if host.contains(':') {
                host.to_owned()
            } else {
                format!("{host}:19530")
            };
            return Ok(Self::Milvus {
                endpoint: format!("http://{host}"),
                collection: collection.to_owned(),
            });
        }
        if address.contains("://") {
            return Err(bad(
                "unknown scheme (use a directory or milvus://HOST:PORT/COLLECTION)",
            ));
        }
        Ok(Self::Embedded(PathBuf::from(address)))
    }
}

/// The default embedded store, in the current directory.
pub fn default_store_dir() -> &'static Path {
    Path::new(".clipkit")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            StoreAddress::parse("photos.clipkit").unwrap(),
            StoreAddress::Embedded("photos.clipkit".into())
        );
        assert_eq!(
            StoreAddress::parse("milvus://127.0.0.1:19531/photos").unwrap(),
            StoreAddress::Milvus {
                endpoint: "http://127.0.0.1:19531".into(),
                collection: "photos".into()
            }
        );
        assert_eq!(
            StoreAddress::parse("milvus://db/photos").unwrap(),
            StoreAddress::Milvus {
                endpoint: "http://db:19530".into(),
                collection: "photos".into()
            }
        );
        for bad in [
            "milvus://host",
            "milvus://h:1/",
            "milvus://h:1/9x",
            "milvus://h:1/a-b",
            "s3://x/y",
        ] {
            assert!(StoreAddress::parse(bad).is_err(), "{bad}");
        }
    }
}
