//! Keeps a store in step with folders on disk.
//!
//! Two passes. [`diff`] compares the files on disk with the store by size and mtime alone
//! (cheap; this is what `index status` shows). [`Indexer::run`] then reads the new and
//! changed files, hashes them, and only embeds content the store has never seen: a file
//! whose bytes did not change is re-stamped, a renamed or moved file takes its old vector
//! with it, a copy reuses the original's. Work is committed a batch at a time, so a killed
//! run loses at most one batch and the next run resumes where it stopped.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::UNIX_EPOCH;

use globset::{Glob, GlobSet, GlobSetBuilder};
use rayon::prelude::*;
use serde::Serialize;

use clipkit_core::{ClipError, Crop, Embedder};
use clipkit_image::metadata::{read_metadata, PhotoMetadata};

use crate::paths::content_hash;
use crate::shard::Shard;
use crate::store::{Batch, Entry, FileRecord, Store};
use crate::{IndexError, Result};

/// Which files under the roots are considered.
#[derive(Clone, Debug, Default)]
pub struct WalkOptions {
    /// Glob patterns (matched against the full path and the file name) to leave out.
    pub exclude: Vec<String>,
    /// Include files and folders whose name starts with a dot.
    pub hidden: bool,
}

/// Paths that could not be read, with why.
pub type Unreadable = Vec<(PathBuf, String)>;

/// A file found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
}

/// How the files on disk differ from the store, by size and mtime only.
#[derive(Debug, Default)]
pub struct Diff {
    pub unchanged: usize,
    pub new: Vec<Found>,
    pub changed: Vec<Found>,
    /// In the store, under a scanned root, and no longer on disk (or now excluded).
    pub missing: Vec<FileRecord>,
    /// Paths that could not be read while walking (permissions, broken links).
    pub unreadable: Vec<(PathBuf, String)>,
}

/// What a run did, counted: `embedded` is how many images went through the model.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Report {
    pub scanned: usize,
    pub unchanged: usize,
    pub embedded: usize,
    /// Same bytes under a new mtime: re-stamped, not re-embedded.
    pub touched: usize,
    /// Renamed or moved files (recognised by content hash): vector moved, not re-embedded.
    pub moved: usize,
    /// New files with the content of an indexed one: vector copied, not re-embedded.
    pub copied: usize,
    pub removed: usize,
    /// Entries of an older store whose capture metadata was read now (from files that did
    /// not change, so without embedding them).
    pub backfilled: usize,
    pub failed: Vec<Failure>,
    /// True when the run was stopped early (Ctrl-C); what was committed stays.
    pub interrupted: bool,
    pub total: usize,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Failure {
    pub path: String,
    pub error: String,
}

/// Progress callbacks, so the library needs no terminal.
pub trait Progress {
    fn start(&self, _files: usize) {}
    fn advance(&self, _files: usize) {}
    fn finish(&self) {}
}

pub struct NoProgress;
impl Progress for NoProgress {}

/// Absolute, symlink-free form of each root, so the same photo is the same key whichever
/// way it was named on the command line.
pub fn canonical_roots(roots: &[PathBuf]) -> Result<Vec<PathBuf>> {
    roots
        .iter()
        .map(|r| {
            std::fs::canonicalize(r).map_err(|source| IndexError::Io {
                path: r.clone(),
                source,
            })
        })
        .collect()
}

fn exclude_set(patterns: &[String]) -> Result<GlobSet> {
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        let glob = Glob::new(p).map_err(|e| IndexError::BadFile {
            path: PathBuf::from(p),
            problem: format!("invalid exclude glob: {e}"),
        })?;
        builder.add(glob);
    }
    builder.build().map_err(|e| IndexError::BadFile {
        path: PathBuf::from(patterns.join(",")),
        problem: format!("invalid exclude globs: {e}"),
    })
}

/// Image files under `roots` (canonical), sorted, with what could not be read.
pub fn walk(roots: &[PathBuf], options: &WalkOptions) -> Result<(Vec<Found>, Unreadable)> {
    let exclude = exclude_set(&options.exclude)?;
    let mut found = Vec::new();
    let mut unreadable = Vec::new();
    let mut seen = HashSet::new();
    for root in roots {
        walk_dir(
            root,
            options,
            &exclude,
            &mut found,
            &mut unreadable,
            &mut seen,
        );
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((found, unreadable))
}

fn excluded(path: &Path, exclude: &GlobSet) -> bool {
    exclude.is_match(path) || path.file_name().is_some_and(|n| exclude.is_match(n))
}

fn walk_dir(
    path: &Path,
    options: &WalkOptions,
    exclude: &GlobSet,
    found: &mut Vec<Found>,
    unreadable: &mut Vec<(PathBuf, String)>,
    seen: &mut HashSet<PathBuf>,
) {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            unreadable.push((path.to_owned(), e.to_string()));
            return;
        }
    };
    if meta.is_file() {
        if clipkit_core::image::files::has_image_extension(path) && seen.insert(path.to_owned()) {
            found.push(Found {
                path: path.to_owned(),
                size: meta.len(),
                mtime_ns: mtime_ns(&meta),
            });
        }
        return;
    }
    if !meta.is_dir() {
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(e) => e,
        Err(e) => {
            unreadable.push((path.to_owned(), e.to_string()));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                unreadable.push((path.to_owned(), e.to_string()));
                continue;
            }
        };
        let child = entry.path();
        let hidden = entry.file_name().as_encoded_bytes().first() == Some(&b'.');
        if (hidden && !options.hidden) || excluded(&child, exclude) {
            continue;
        }
        // Symlinked folders are not followed: they can loop, and the real folder is
        // usually indexed under its own name anyway.
        if entry.file_type().is_ok_and(|t| t.is_symlink()) && child.is_dir() {
            continue;
        }
        walk_dir(&child, options, exclude, found, unreadable, seen);
    }
}

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Compares disk and store by size and mtime (no file is read).
pub fn diff(store: &dyn Store, roots: &[PathBuf], options: &WalkOptions) -> Result<Diff> {
    let (found, unreadable) = walk(roots, options)?;
    Ok(compare(store.files()?, found, unreadable, roots))
}

/// The comparison behind [`diff`]. A stored file under a folder that could not be read is
/// not missing — it may well still be there (a permission change, an unmounted share) — so
/// it is left alone rather than dropped from the store.
fn compare(
    stored: Vec<FileRecord>,
    found: Vec<Found>,
    unreadable: Unreadable,
    roots: &[PathBuf],
) -> Diff {
    let stored: HashMap<PathBuf, FileRecord> =
        stored.into_iter().map(|r| (r.path.clone(), r)).collect();
    let mut d = Diff {
        unreadable,
        ..Diff::default()
    };
    let mut on_disk = HashSet::with_capacity(found.len());
    for f in found {
        on_disk.insert(f.path.clone());
        match stored.get(&f.path) {
            Some(r) if r.size == f.size && r.mtime_ns == f.mtime_ns => d.unchanged += 1,
            Some(_) => d.changed.push(f),
            None => d.new.push(f),
        }
    }
    let unseen = |path: &Path| d.unreadable.iter().any(|(p, _)| path.starts_with(p));
    let mut missing: Vec<FileRecord> = stored
        .into_values()
        .filter(|r| {
            roots.iter().any(|root| r.path.starts_with(root))
                && !on_disk.contains(&r.path)
                && !unseen(&r.path)
        })
        .collect();
    missing.sort_by(|a, b| a.path.cmp(&b.path));
    d.missing = missing;
    d
}

/// Runs indexing passes over a store.
///
/// The embedder turns files into vectors in two steps so that a batch holds compact model
/// inputs rather than file bytes: [`Embedder::preprocess`] runs on worker threads file by
/// file, right after the file is read and hashed (a 12 MP photo's 3–5 MB of JPEG is dropped
/// as soon as its 150 KB crop exists), and [`Embedder::embed_crops`] runs the model on the
/// batch.
pub struct Indexer<'a> {
    pub store: &'a mut dyn Store,
    pub embedder: &'a dyn Embedder,
    /// Files read, hashed and embedded per committed batch.
    pub batch_size: usize,
    pub walk: WalkOptions,
    pub cancel: Option<&'a AtomicBool>,
    pub progress: &'a dyn Progress,
}

impl Indexer<'_> {
    /// Brings the store in step with `roots` (already canonical).
    pub fn run(&mut self, roots: &[PathBuf]) -> Result<Report> {
        self.run_shard(roots, Shard::ALL)
    }

    /// Brings `shard`'s part of the store in step with its part of `roots`: the files that
    /// shard owns are embedded and the shard's files gone from disk removed; the other
    /// shards' rows are left to their workers (but serve as copy sources while on disk).
    /// Workers running this for every shard of the same roots, at the same time or not, end
    /// with the store a single [`run`](Self::run) would give.
    pub fn run_shard(&mut self, roots: &[PathBuf], shard: Shard) -> Result<Report> {
        self.store.add_roots(roots)?;
        let (found, unreadable) = walk(roots, &self.walk)?;
        let stored = self.store.files()?;
        // Other shards' files still on disk: their stored vectors may be copied.
        let on_disk: HashSet<PathBuf> = if shard == Shard::ALL {
            HashSet::new()
        } else {
            found.iter().map(|f| f.path.clone()).collect()
        };
        let (own, others): (Vec<FileRecord>, Vec<FileRecord>) =
            stored.into_iter().partition(|r| shard.owns(&r.path));
        let found: Vec<Found> = found.into_iter().filter(|f| shard.owns(&f.path)).collect();
        let diff = compare(own.clone(), found, unreadable, roots);
        let mut report = Report {
            scanned: diff.unchanged + diff.new.len() + diff.changed.len(),
            unchanged: diff.unchanged,
            failed: diff
                .unreadable
                .iter()
                .map(|(p, e)| Failure {
                    path: p.display().to_string(),
                    error: e.clone(),
                })
                .collect(),
            ..Report::default()
        };

        // Content the store already holds, by hash: present files (copy sources) and files
        // gone from disk (move sources, each claimable once).
        let missing_paths: HashSet<PathBuf> = diff.missing.iter().map(|r| r.path.clone()).collect();
        let changed_paths: HashSet<PathBuf> = diff.changed.iter().map(|f| f.path.clone()).collect();
        let mut known = Known::default();
        for r in own {
            if missing_paths.contains(&r.path) {
                known.gone.entry(r.hash).or_default().push(r.path);
            } else if changed_paths.contains(&r.path) {
                known.previous.insert(r.path, r.hash);
            } else {
                known.present.entry(r.hash).or_insert(r.path);
            }
        }
        for r in others {
            if on_disk.contains(&r.path) {
                known.present.entry(r.hash).or_insert(r.path);
            }
        }

        if !self.cancelled() {
            // Entries of an older store whose files did not change: their metadata, read now.
            // Changed files are read below anyway, missing ones are moved or removed.
            let skip: HashSet<&Path> = diff
                .changed
                .iter()
                .map(|f| f.path.as_path())
                .chain(diff.missing.iter().map(|r| r.path.as_path()))
                .chain(diff.unreadable.iter().map(|(p, _)| p.as_path()))
                .collect();
            let unread: Vec<PathBuf> = self
                .store
                .unread_metadata()?
                .into_iter()
                .filter(|p| roots.iter().any(|r| p.starts_with(r)) && !skip.contains(p.as_path()))
                .collect();
            let (read, failed) =
                backfill_metadata(self.store, &unread, self.batch_size, self.cancel)?;
            report.backfilled = read;
            report.failed.extend(failed);
        }

        let mut todo: Vec<Found> = diff.changed.into_iter().chain(diff.new).collect();
        todo.sort_by(|a, b| a.path.cmp(&b.path));
        self.progress.start(todo.len());
        let batch_size = self.batch_size.max(1);
        for chunk in todo.chunks(batch_size) {
            if self.cancelled() {
                report.interrupted = true;
                break;
            }
            let batch = self.prepare(chunk, &mut known, &mut report)?;
            self.store.apply(batch)?;
            self.progress.advance(chunk.len());
        }

        if !report.interrupted {
            // Whatever is still missing was deleted (or excluded), not moved.
            let removals: Vec<PathBuf> = known.gone.into_values().flatten().collect();
            report.removed += removals.len();
            if !removals.is_empty() {
                self.store.apply(Batch {
                    upserts: Vec::new(),
                    removals,
                })?;
            }
        }
        self.progress.finish();
        self.store.flush()?;
        report.total = self.store.len()?;
        Ok(report)
    }

    fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Reads, hashes and (where the store cannot supply the vector) preprocesses one chunk of
    /// files, then decides per file whether its vector is reused, copied or computed.
    fn prepare(&self, chunk: &[Found], known: &mut Known, report: &mut Report) -> Result<Batch> {
        let read: Vec<Read> = {
            let known = &*known;
            chunk
                .par_iter()
                .map(|f| {
                    let bytes = match std::fs::read(&f.path) {
                        Ok(b) if b.is_empty() => return Read::Failed("empty file".into()),
                        Ok(b) => b,
                        Err(e) => return Read::Failed(e.to_string()),
                    };
                    let hash = content_hash(&bytes);
                    // From the bytes already in memory: moved, copied and touched files get
                    // it too, and nothing is read twice.
                    let meta = Box::new(read_metadata(&bytes));
                    let input = (!known.has(&f.path, &hash))
                        .then(|| self.embedder.preprocess(&f.path, &bytes));
                    Read::Hashed { hash, meta, input }
                })
                .collect()
        };
        let mut batch = Batch::default();
        // Files to embed, with their inputs; a failed preprocess fails the file alone.
        let mut to_embed: Vec<(usize, Crop)> = Vec::new();
        let mut hashes = vec![String::new(); chunk.len()];
        let mut metas = vec![PhotoMetadata::default(); chunk.len()];
        // Vectors reused from the store, fetched in one go.
        let mut reuse: Vec<(usize, PathBuf)> = Vec::new();
        let mut embed_first: HashMap<String, usize> = HashMap::new();
        // Move sources claimed earlier in this chunk: a second file with that content copies.
        let mut moved_here: HashMap<String, PathBuf> = HashMap::new();
        let mut same_as: Vec<(usize, usize)> = Vec::new();
        for (i, (f, read)) in chunk.iter().zip(read).enumerate() {
            let (hash, input) = match read {
                Read::Failed(e) => {
                    report.failed.push(failure(&f.path, &e));
                    continue;
                }
                Read::Hashed { hash, meta, input } => {
                    metas[i] = *meta;
                    (hash, input)
                }
            };
            if known.previous.get(&f.path) == Some(&hash) {
                report.touched += 1;
                reuse.push((i, f.path.clone()));
            } else if let Some(source) = known.present.get(&hash) {
                report.copied += 1;
                reuse.push((i, source.clone()));
            } else if let Some(source) = known.gone.get_mut(&hash).and_then(|v| v.pop()) {
                report.moved += 1;
                batch.removals.push(source.clone());
                moved_here.insert(hash.clone(), source.clone());
                reuse.push((i, source));
            } else if let Some(source) = moved_here.get(&hash) {
                report.copied += 1;
                reuse.push((i, source.clone()));
            } else if let Some(&first) = embed_first.get(&hash) {
                report.copied += 1;
                same_as.push((i, first));
            } else {
                match input.expect("preprocessed: the store had no vector for this content") {
                    Ok(input) => {
                        embed_first.insert(hash.clone(), i);
                        to_embed.push((i, input));
                    }
                    Err(e) => {
                        // Later files with these bytes fail on their own (each was decoded).
                        report.failed.push(failure(&f.path, &e.to_string()));
                        continue;
                    }
                }
            }
            hashes[i] = hash;
        }

        let record = |i: usize| FileRecord {
            path: chunk[i].path.clone(),
            size: chunk[i].size,
            mtime_ns: chunk[i].mtime_ns,
            hash: hashes[i].clone(),
            meta: metas[i].clone(),
        };
        let sources: Vec<PathBuf> = reuse.iter().map(|(_, p)| p.clone()).collect();
        for ((i, source), vector) in reuse.iter().zip(self.store.vectors(&sources)?) {
            match vector {
                Some(vector) => batch.upserts.push(Entry {
                    file: record(*i),
                    vector,
                }),
                None => report.failed.push(failure(
                    &chunk[*i].path,
                    &format!("{} vanished from the store", source.display()),
                )),
            }
        }

        let (order, crops): (Vec<usize>, Vec<Crop>) = to_embed.into_iter().unzip();
        let embedded = match self.embedder.embed_crops(crops) {
            Ok(v) if v.len() == order.len() => Ok(v),
            Ok(v) => Err(format!(
                "model: {} embeddings for {} images",
                v.len(),
                order.len()
            )),
            Err(e) => Err(format!("model: {e}")),
        };
        let mut vectors: HashMap<usize, Vec<f32>> = HashMap::new();
        match embedded {
            Ok(embedded) => {
                for (i, vector) in order.iter().zip(embedded) {
                    report.embedded += 1;
                    vectors.insert(*i, vector.clone());
                    batch.upserts.push(Entry {
                        file: record(*i),
                        vector,
                    });
                }
            }
            Err(e) => {
                for i in &order {
                    report.failed.push(failure(&chunk[*i].path, &e));
                }
            }
        }
        for (i, first) in same_as {
            match vectors.get(&first) {
                Some(v) => batch.upserts.push(Entry {
                    file: record(i),
                    vector: v.clone(),
                }),
                None => {
                    report.copied -= 1;
                    report.failed.push(failure(
                        &chunk[i].path,
                        "same content as a file that failed",
                    ));
                }
            }
        }
        for e in &batch.upserts {
            known
                .present
                .entry(e.file.hash.clone())
                .or_insert_with(|| e.file.path.clone());
        }
        Ok(batch)
    }
}

/// Reads the capture metadata of stored entries from their files (EXIF only: nothing is
/// decoded or embedded) and records it, `chunk` files per write. For stores written before
/// metadata was recorded: [`Indexer::run`] calls it for the unchanged files under its roots
/// ([`Store::unread_metadata`] lists the candidates). Stops between chunks when `cancel` is
/// set (what was recorded stays). Returns how many were recorded, and the files that could
/// not be read (their entries stay unread, to be tried again).
pub fn backfill_metadata(
    store: &mut dyn Store,
    paths: &[PathBuf],
    chunk: usize,
    cancel: Option<&AtomicBool>,
) -> Result<(usize, Vec<Failure>)> {
    let mut recorded = 0;
    let mut failed = Vec::new();
    for part in paths.chunks(chunk.max(1)) {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            break;
        }
        let read: Vec<(PathBuf, std::io::Result<PhotoMetadata>)> = part
            .par_iter()
            .map(|p| (p.clone(), read_head(p).map(|bytes| read_metadata(&bytes))))
            .collect();
        let mut found = Vec::with_capacity(read.len());
        for (path, meta) in read {
            match meta {
                Ok(meta) => found.push((path, meta)),
                Err(e) => failed.push(failure(&path, &e.to_string())),
            }
        }
        recorded += found.len();
        store.set_metadata(&found)?;
    }
    Ok((recorded, failed))
}

/// What [`read_metadata`] needs of a file: a JPEG's headers (its EXIF segment and frame size
/// sit before the image data, within the first few hundred KiB — no need to read a 5 MB
/// photo whole), any other format entire (PNG, WebP and HEIF may keep EXIF anywhere).
fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    const JPEG_HEAD: u64 = 512 * 1024;
    let mut file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    (&mut file).take(JPEG_HEAD).read_to_end(&mut bytes)?;
    if !clipkit_image::jpeg::is_jpeg(&bytes) {
        file.read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}

/// One file of a chunk after the parallel read: its hash, and its model input unless the
/// store already had a vector for that content.
enum Read {
    Failed(String),
    Hashed {
        hash: String,
        meta: Box<PhotoMetadata>,
        input: Option<std::result::Result<Crop, ClipError>>,
    },
}

/// What the store already holds, by content hash.
#[derive(Default)]
struct Known {
    /// Files still on disk: copy sources.
    present: HashMap<String, PathBuf>,
    /// Files gone from disk: move sources, each claimable once.
    gone: HashMap<String, Vec<PathBuf>>,
    /// The stored hash of each file whose size or mtime changed.
    previous: HashMap<PathBuf, String>,
}

impl Known {
    /// Whether the store can supply the vector of `path` with content `hash` (unchanged bytes,
    /// a copy, or a move), so the file need not be decoded.
    fn has(&self, path: &Path, hash: &str) -> bool {
        self.previous.get(path).is_some_and(|h| h == hash)
            || self.present.contains_key(hash)
            || self.gone.get(hash).is_some_and(|v| !v.is_empty())
    }
}

fn failure(path: &Path, error: &str) -> Failure {
    Failure {
        path: path.display().to_string(),
        error: error.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str) -> FileRecord {
        FileRecord {
            path: path.into(),
            size: 10,
            mtime_ns: 1,
            hash: "h".into(),
            meta: Default::default(),
        }
    }

    fn found(path: &str, mtime_ns: i64) -> Found {
        Found {
            path: path.into(),
            size: 10,
            mtime_ns,
        }
    }

    #[test]
    fn files_under_an_unreadable_folder_are_not_missing() {
        let stored = vec![
            record("/p/a.jpg"),
            record("/p/b.jpg"),
            record("/p/gone.jpg"),
            record("/p/locked/c.jpg"),
            record("/p/locked/deeper/d.jpg"),
            record("/p/lockedness/e.jpg"),
            record("/elsewhere/f.jpg"),
        ];
        let on_disk = vec![found("/p/a.jpg", 1), found("/p/b.jpg", 2)];
        let unreadable = vec![(PathBuf::from("/p/locked"), "Permission denied".into())];
        let d = compare(stored, on_disk, unreadable, &[PathBuf::from("/p")]);
        assert_eq!(d.unchanged, 1);
        assert_eq!(d.changed, vec![found("/p/b.jpg", 2)]);
        assert!(d.new.is_empty());
        // Only what is really gone: not the unreadable folder's files (a component match,
        // so `/p/lockedness` is not covered by `/p/locked`), not files outside the roots.
        let missing: Vec<&Path> = d.missing.iter().map(|r| r.path.as_path()).collect();
        assert_eq!(
            missing,
            [Path::new("/p/gone.jpg"), Path::new("/p/lockedness/e.jpg")]
        );
        assert_eq!(d.unreadable.len(), 1);
    }
}
