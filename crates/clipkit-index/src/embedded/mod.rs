//! The embedded store: one directory per collection.
//!
//! SQLite (`store.sqlite`) is the source of truth for metadata *and* vectors, so every batch
//! is one transaction and a process killed at any point leaves either the old or the new
//! state. The ANN index (`ann.usearch`) is derived data: it records the store generation it
//! reflects, and a change log in SQLite lets it catch up incrementally (or be rebuilt) when
//! it lags — a crash can make it stale, never wrong.
//!
//! Small collections are searched exactly (a matrix product over all vectors is faster than
//! a graph walk below a few tens of thousands and has perfect recall); larger ones through
//! usearch's HNSW graph with the candidates rescored against the stored f32 vectors, so the
//! scores reported are always exact cosines.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use clipkit_image::PhotoMetadata;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

mod ann;
pub use ann::{AllowKey, AnnFootprint, GraphParams};
mod filtered;
pub use filtered::FILTER_EXACT_SHARE;
mod sql;
mod vectors;

use crate::exact::ExactIndex;
use crate::filter::Filter;
use crate::paths::{path_bytes, path_from_bytes, path_id};
use crate::store::{Batch, CollectionInfo, Entry, FileRecord, Hit, LabelVector, Store};
use crate::{IndexError, Result};
use sql::{
    check_compatible, decode_vector, encode_vector, generation, meta_values, migrate, read_info,
    read_meta, set_meta, sqlite_error, write_info, META_SELECT, SCHEMA,
};

/// 2: capture metadata columns and the filter indexes (format-1 stores gain them on open).
const FORMAT_VERSION: &str = "2";
const DB_FILE: &str = "store.sqlite";
const ANN_FILE: &str = "ann.usearch";
const ANN_STATE_FILE: &str = "ann.json";
const ANN_VECTORS_FILE: &str = "ann.vectors";

/// Below this many vectors search is exact.
pub const DEFAULT_EXACT_LIMIT: usize = 20_000;
/// Below this many vectors the ANN index is built single-threaded (deterministic graph);
/// the graph only serves collections this small when a test or benchmark forces it.
const PARALLEL_BUILD_MIN: usize = DEFAULT_EXACT_LIMIT;

pub struct EmbeddedStore {
    dir: PathBuf,
    info: CollectionInfo,
    db: Mutex<Connection>,
    exact_limit: usize,
    /// A filter matching at most this share of the collection is searched exactly over its
    /// matches ([`FILTER_EXACT_SHARE`] unless set).
    filter_exact_share: f64,
    /// All vectors in memory for exact search, tagged with the generation they reflect.
    exact: Mutex<Option<(i64, Arc<ExactIndex>)>>,
    /// Shared with the thread that copies a mapped graph into memory (`ann.rs`).
    ann: Arc<Mutex<Option<Arc<ann::Ann>>>>,
    graph: GraphParams,
    seen: Mutex<Seen>,
    /// The last filter's matching ids and the write counters they were listed at.
    filter_cache: Mutex<Option<FilterIds>>,
}

/// A filter's matching ids (sorted), with the write counters they were listed at.
type FilterIds = ((i64, u64), Filter, Arc<Vec<i64>>);

/// The store's generation and size as this process last read them, and the two counters that
/// say, in O(1), whether they may have changed since: SQLite's `data_version` (bumped when
/// another connection — another process — commits) and this connection's `total_changes`
/// (bumped by our own writes). So a search costs no `COUNT(*)` and no meta query, yet sees
/// another process's writes without reopening the store.
#[derive(Default)]
struct Seen {
    counters: Option<(i64, u64)>,
    generation: i64,
    len: Option<usize>,
}

impl EmbeddedStore {
    /// Opens (or with `create`, creates) the store in `dir`.
    pub fn open(dir: &Path, create: Option<&CollectionInfo>) -> Result<Box<dyn Store>> {
        Ok(Box::new(Self::open_dir(dir, create)?))
    }

    pub fn open_dir(dir: &Path, create: Option<&CollectionInfo>) -> Result<Self> {
        let db_path = dir.join(DB_FILE);
        if !db_path.exists() {
            if create.is_none() {
                return Err(IndexError::NotFound {
                    store: dir.display().to_string(),
                });
            }
            std::fs::create_dir_all(dir).map_err(|source| IndexError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        let sql = |e: rusqlite::Error| sqlite_error(dir, e);
        let mut conn = Connection::open(&db_path).map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(sql)?;
        // Every transaction here writes, so each takes the write lock up front (IMMEDIATE,
        // which waits out the busy timeout). A deferred one reads first and upgrades later,
        // and in WAL mode that upgrade fails at once ("database is locked") if another
        // connection (`index status` opening the store) wrote in between.
        conn.set_transaction_behavior(TransactionBehavior::Immediate);
        // 16 KiB pages (set before anything is written; an existing store keeps its own):
        // a 512-d f32 vector is a 2 KiB row, and with SQLite's default 4 KiB pages only one
        // such row fits in a page, doubling the file. 16 KiB pages hold seven.
        conn.pragma_update(None, "page_size", 16384).map_err(sql)?;
        // WAL: readers (a search) never block the writer (an indexing run) and a killed
        // writer loses at most its open transaction.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        // Schema and collection info in one transaction: a store killed while being
        // created is either complete or absent, never a database without its model. An
        // older store is migrated in the same transaction (all of it or none of it).
        {
            let tx = conn.transaction().map_err(sql)?;
            tx.execute_batch(SCHEMA).map_err(sql)?;
            migrate(&tx).map_err(sql)?;
            tx.commit().map_err(sql)?;
        }

        let stored = read_info(&conn).map_err(sql)?;
        let info = match (stored, create) {
            (Some(stored), Some(wanted)) => {
                check_compatible(dir, &stored, wanted)?;
                stored
            }
            (Some(stored), None) => stored,
            (None, Some(wanted)) => {
                let tx = conn.unchecked_transaction().map_err(sql)?;
                write_info(&tx, wanted).map_err(sql)?;
                tx.commit().map_err(sql)?;
                wanted.clone()
            }
            (None, None) => {
                return Err(IndexError::NotFound {
                    store: dir.display().to_string(),
                })
            }
        };
        Ok(Self {
            dir: dir.to_owned(),
            info,
            db: Mutex::new(conn),
            exact_limit: DEFAULT_EXACT_LIMIT,
            filter_exact_share: FILTER_EXACT_SHARE,
            exact: Mutex::new(None),
            ann: Arc::new(Mutex::new(None)),
            graph: GraphParams::default(),
            seen: Mutex::new(Seen::default()),
            filter_cache: Mutex::new(None),
        })
    }

    /// Changes the size below which search is exact (0 forces the ANN index).
    pub fn set_exact_limit(&mut self, limit: usize) {
        self.exact_limit = limit;
    }

    /// Changes the share of the collection below which a filter's matches are searched
    /// exactly rather than through the graph (1.0: always exactly; 0.0: through the graph
    /// whenever the collection is past the exact limit).
    pub fn set_filter_exact_share(&mut self, share: f64) {
        self.filter_exact_share = share;
    }

    /// Changes how the graph is built and searched (benchmarks; a saved graph built with
    /// other parameters is rebuilt on next use).
    pub fn set_graph_params(&mut self, params: GraphParams) {
        self.graph = params;
        *self.ann.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub fn graph_params(&self) -> GraphParams {
        self.graph
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn sql(&self, e: rusqlite::Error) -> IndexError {
        sqlite_error(&self.dir, e)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store's generation, re-read only when a write (ours or another process's) may
    /// have changed it.
    fn generation(&self) -> Result<i64> {
        let conn = self.conn();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh_seen(&conn, &mut seen)?;
        Ok(seen.generation)
    }

    /// SQLite's change counters (another connection's commits, this one's writes): they move
    /// on every write, metadata-only ones included, which the generation does not count.
    fn write_counters(&self) -> Result<(i64, u64)> {
        let conn = self.conn();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh_seen(&conn, &mut seen)?;
        Ok(seen.counters.unwrap_or_default())
    }

    fn refresh_seen(&self, conn: &Connection, seen: &mut Seen) -> Result<()> {
        let version: i64 = conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(|e| self.sql(e))?;
        let counters = (version, conn.total_changes());
        if seen.counters != Some(counters) {
            let g = generation(conn).map_err(|e| self.sql(e))?;
            if seen.counters.is_none() || g != seen.generation {
                seen.len = None;
            }
            seen.generation = g;
            seen.counters = Some(counters);
        }
        Ok(())
    }

    /// The paths (stored as bytes) a one-column query returns.
    fn select_paths(&self, query: &str) -> Result<Vec<PathBuf>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(query).map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .map_err(|e| self.sql(e))?;
        rows.map(|r| r.map(|b| path_from_bytes(&b)))
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sql(e))
    }

    fn check_dim(&self, v: &[f32]) -> Result<()> {
        if v.len() != self.info.dim {
            return Err(IndexError::WrongVectorDimension {
                store: self.address(),
                expected: self.info.dim,
                got: v.len(),
            });
        }
        Ok(())
    }

    /// Exact top-k over every stored vector, whatever the collection size.
    pub fn search_exact(&self, queries: &[Vec<f32>], k: usize) -> Result<Vec<Vec<Hit>>> {
        for q in queries {
            self.check_dim(q)?;
        }
        let index = self.exact_index()?;
        Ok(index
            .top_k(queries, k)
            .into_iter()
            .map(|hits| {
                hits.into_iter()
                    .map(|(row, score)| Hit {
                        path: index.paths[row].clone(),
                        score,
                    })
                    .collect()
            })
            .collect())
    }

    fn exact_index(&self) -> Result<Arc<ExactIndex>> {
        let generation = self.generation()?;
        let mut cached = self.exact.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((g, index)) = cached.as_ref() {
            if *g == generation {
                return Ok(index.clone());
            }
        }
        let mut index = ExactIndex::new(self.info.dim);
        self.scan(4096, &mut |entries| {
            for e in entries {
                index.push(e.file.path.clone(), &e.vector);
            }
            Ok(())
        })?;
        let index = Arc::new(index);
        *cached = Some((generation, index.clone()));
        Ok(index)
    }

    fn uses_ann(&self) -> Result<bool> {
        Ok(self.len()? > self.exact_limit)
    }
}

impl Store for EmbeddedStore {
    fn address(&self) -> String {
        self.dir.display().to_string()
    }

    fn info(&self) -> &CollectionInfo {
        &self.info
    }

    /// Counted once per generation (see [`Seen`]).
    fn len(&self) -> Result<usize> {
        let conn = self.conn();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh_seen(&conn, &mut seen)?;
        if let Some(n) = seen.len {
            return Ok(n);
        }
        let n = conn
            .query_row("SELECT COUNT(*) FROM files", [], |r| r.get::<_, i64>(0))
            .map(|n| n as usize)
            .map_err(|e| self.sql(e))?;
        seen.len = Some(n);
        Ok(n)
    }

    fn files(&self) -> Result<Vec<FileRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT path, size, mtime_ns, hash, {META_SELECT} FROM files ORDER BY id"
            ))
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(FileRecord {
                    path: path_from_bytes(&r.get::<_, Vec<u8>>(0)?),
                    size: r.get::<_, i64>(1)? as u64,
                    mtime_ns: r.get(2)?,
                    hash: r.get(3)?,
                    meta: read_meta(r, 4)?,
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sql(e))
    }

    fn vectors(&self, paths: &[PathBuf]) -> Result<Vec<Option<Vec<f32>>>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT vector FROM files WHERE path = ?1")
            .map_err(|e| self.sql(e))?;
        paths
            .iter()
            .map(|p| {
                stmt.query_row([path_bytes(p)], |r| r.get::<_, Vec<u8>>(0))
                    .optional()
                    .map(|v| v.map(|v| decode_vector(&v)))
                    .map_err(|e| self.sql(e))
            })
            .collect()
    }

    fn apply(&mut self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        for e in &batch.upserts {
            self.check_dim(&e.vector)?;
        }
        let mut conn = self.conn();
        let dir = self.dir.clone();
        let sql = |e: rusqlite::Error| sqlite_error(&dir, e);
        let tx = conn.transaction().map_err(sql)?;
        let generation = generation(&tx).map_err(sql)? + 1;
        {
            let mut upsert = tx
                .prepare_cached(
                    // An entry with metadata was read by its writer (the indexer); one with
                    // none at all (an import, or a file whose header was unreadable) is left
                    // for the backfill to read from disk: `meta_read` = ?18.
                    "INSERT INTO files (id, path, size, mtime_ns, hash, vector,
                       taken, offset_minutes, latitude, longitude, make, model, width, height,
                       taken_key, camera_lc, file_type, meta_read)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6,
                       ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
                     ON CONFLICT(id) DO UPDATE SET path = excluded.path, size = excluded.size,
                       mtime_ns = excluded.mtime_ns, hash = excluded.hash, vector = excluded.vector,
                       meta_read = excluded.meta_read, taken = excluded.taken,
                       offset_minutes = excluded.offset_minutes, latitude = excluded.latitude,
                       longitude = excluded.longitude, make = excluded.make, model = excluded.model,
                       width = excluded.width, height = excluded.height,
                       taken_key = excluded.taken_key, camera_lc = excluded.camera_lc,
                       file_type = excluded.file_type",
                )
                .map_err(sql)?;
            let mut remove = tx
                .prepare_cached("DELETE FROM files WHERE id = ?1")
                .map_err(sql)?;
            let mut log = tx
                .prepare_cached("INSERT INTO changes (generation, id) VALUES (?1, ?2)")
                .map_err(sql)?;
            for e in &batch.upserts {
                let id = e.file.id();
                let row: Vec<rusqlite::types::Value> = [
                    id.into(),
                    path_bytes(&e.file.path).into(),
                    (e.file.size as i64).into(),
                    e.file.mtime_ns.into(),
                    e.file.hash.clone().into(),
                    encode_vector(&e.vector).into(),
                ]
                .into_iter()
                .chain(meta_values(&e.file))
                .chain([i64::from(e.file.meta != PhotoMetadata::default()).into()])
                .collect();
                upsert
                    .execute(rusqlite::params_from_iter(row))
                    .map_err(sql)?;
                log.execute(params![generation, id]).map_err(sql)?;
            }
            for p in &batch.removals {
                let id = path_id(p);
                remove.execute([id]).map_err(sql)?;
                log.execute(params![generation, id]).map_err(sql)?;
            }
        }
        set_meta(&tx, "generation", &generation.to_string()).map_err(sql)?;
        tx.commit().map_err(sql)
    }

    fn scan(&self, chunk: usize, visit: &mut dyn FnMut(&[Entry]) -> Result<()>) -> Result<()> {
        let chunk = chunk.max(1);
        let mut after = i64::MIN;
        loop {
            let entries: Vec<(i64, Entry)> = {
                let conn = self.conn();
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT id, path, size, mtime_ns, hash, vector, {META_SELECT} FROM files
                         WHERE id > ?1 ORDER BY id LIMIT ?2"
                    ))
                    .map_err(|e| self.sql(e))?;
                let rows = stmt
                    .query_map(params![after, chunk as i64], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            Entry {
                                file: FileRecord {
                                    path: path_from_bytes(&r.get::<_, Vec<u8>>(1)?),
                                    size: r.get::<_, i64>(2)? as u64,
                                    mtime_ns: r.get(3)?,
                                    hash: r.get(4)?,
                                    meta: read_meta(r, 6)?,
                                },
                                vector: decode_vector(&r.get::<_, Vec<u8>>(5)?),
                            },
                        ))
                    })
                    .map_err(|e| self.sql(e))?;
                rows.collect::<rusqlite::Result<_>>()
                    .map_err(|e| self.sql(e))?
            };
            let Some((last, _)) = entries.last() else {
                return Ok(());
            };
            after = *last;
            let entries: Vec<Entry> = entries.into_iter().map(|(_, e)| e).collect();
            visit(&entries)?;
            if entries.len() < chunk {
                return Ok(());
            }
        }
    }

    fn search(&self, queries: &[Vec<f32>], k: usize, filter: &Filter) -> Result<Vec<Vec<Hit>>> {
        if !filter.is_empty() {
            return self.search_filtered(queries, k, filter);
        }
        if self.uses_ann()? {
            self.search_ann(queries, k, None)
        } else {
            self.search_exact(queries, k)
        }
    }

    fn flush(&mut self) -> Result<()> {
        if self.uses_ann()? {
            self.ann_index()?;
        } else {
            // Exact search needs no log; an ANN index built later starts from scratch.
            let generation = self.generation()?;
            let conn = self.conn();
            conn.execute("DELETE FROM changes", [])
                .map_err(|e| self.sql(e))?;
            set_meta(&conn, "log_since", &generation.to_string()).map_err(|e| self.sql(e))?;
            drop(conn);
            for f in [ANN_FILE, ANN_STATE_FILE, ANN_VECTORS_FILE] {
                let _ = std::fs::remove_file(self.dir.join(f));
            }
        }
        Ok(())
    }

    fn put_labels(&mut self, set: &str, labels: &[LabelVector]) -> Result<()> {
        for l in labels {
            self.check_dim(&l.vector)?;
        }
        let mut conn = self.conn();
        let dir = self.dir.clone();
        let sql = |e: rusqlite::Error| sqlite_error(&dir, e);
        let tx = conn.transaction().map_err(sql)?;
        tx.execute("DELETE FROM labels WHERE set_name = ?1", [set])
            .map_err(sql)?;
        tx.execute(
            "INSERT OR IGNORE INTO label_sets (set_name) VALUES (?1)",
            [set],
        )
        .map_err(sql)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO labels (set_name, position, label, vector) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(sql)?;
            for (i, l) in labels.iter().enumerate() {
                insert
                    .execute(params![set, i as i64, l.label, encode_vector(&l.vector)])
                    .map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)
    }

    fn labels(&self, set: &str) -> Result<Option<Vec<LabelVector>>> {
        let conn = self.conn();
        let exists = conn
            .query_row(
                "SELECT 1 FROM label_sets WHERE set_name = ?1",
                [set],
                |_| Ok(()),
            )
            .optional()
            .map_err(|e| self.sql(e))?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let mut stmt = conn
            .prepare("SELECT label, vector FROM labels WHERE set_name = ?1 ORDER BY position")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([set], |r| {
                Ok(LabelVector {
                    label: r.get(0)?,
                    vector: decode_vector(&r.get::<_, Vec<u8>>(1)?),
                })
            })
            .map_err(|e| self.sql(e))?;
        let labels: Vec<LabelVector> = rows
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sql(e))?;
        Ok(Some(labels))
    }

    fn unread_metadata(&self) -> Result<Vec<PathBuf>> {
        // `meta_read = 0` is what the partial index `files_unread` holds: no table scan.
        self.select_paths("SELECT path FROM files WHERE meta_read = 0 ORDER BY path")
    }

    fn set_metadata(&mut self, files: &[(PathBuf, PhotoMetadata)]) -> Result<()> {
        // Metadata is not in the graph: no new generation, the ANN index stays current.
        let mut conn = self.conn();
        let dir = self.dir.clone();
        let sql = |e: rusqlite::Error| sqlite_error(&dir, e);
        let tx = conn.transaction().map_err(sql)?;
        {
            let mut update = tx
                .prepare_cached(&format!(
                    "UPDATE files SET meta_read = 1, taken = ?2, offset_minutes = ?3,
                       latitude = ?4, longitude = ?5, make = ?6, model = ?7, width = ?8,
                       height = ?9, taken_key = COALESCE(?2, {}), camera_lc = ?11,
                       file_type = ?12
                     WHERE id = ?1 AND path = ?13",
                    sql::TAKEN_FROM_MTIME
                ))
                .map_err(sql)?;
            for (path, meta) in files {
                let f = FileRecord {
                    path: path.clone(),
                    size: 0,
                    mtime_ns: 0,
                    hash: String::new(),
                    meta: meta.clone(),
                };
                // ?10 (a taken_key from this stand-in's mtime) is unused: the stored mtime
                // decides.
                let row: Vec<rusqlite::types::Value> = std::iter::once(f.id().into())
                    .chain(meta_values(&f))
                    .chain(std::iter::once(path_bytes(&f.path).into()))
                    .collect();
                update
                    .execute(rusqlite::params_from_iter(row))
                    .map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)
    }

    fn roots(&self) -> Result<Vec<PathBuf>> {
        self.select_paths("SELECT path FROM roots ORDER BY rowid")
    }

    fn add_roots(&mut self, roots: &[PathBuf]) -> Result<()> {
        let conn = self.conn();
        for r in roots {
            conn.execute(
                "INSERT OR IGNORE INTO roots (path) VALUES (?1)",
                [path_bytes(r)],
            )
            .map_err(|e| self.sql(e))?;
        }
        Ok(())
    }
}
