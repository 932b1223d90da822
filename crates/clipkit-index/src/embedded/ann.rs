//! The HNSW graph over the stored vectors: derived data, kept in step with SQLite through
//! the change log, saved beside it, searched with exact rescoring.
//!
//! Three files make up the graph's state: `ann.usearch` (the graph, with i8 copies of the
//! vectors that the walk compares), `ann.vectors` (the f32 vectors the candidates are
//! rescored against, see [`super::vectors`]) and `ann.json` (the store generation both
//! reflect, and the graph's build parameters). Each is replaced whole by a rename, graph and
//! vectors before `ann.json`, so after a crash each file reflects a generation at or after
//! the one `ann.json` names: replaying the change log from there over either is harmless,
//! because every replayed step sets an id to its current state (remove, then add if present).

use std::sync::Arc;

use rayon::prelude::*;
use rusqlite::OptionalExtension;

use super::sql::{decode_vector, meta_i64, rename, set_meta};
use super::vectors::{merge, VectorFile, VectorWriter};
use super::{EmbeddedStore, ANN_FILE, ANN_STATE_FILE, ANN_VECTORS_FILE, PARALLEL_BUILD_MIN};
use crate::paths::path_from_bytes;
use crate::store::{Hit, Store};
use crate::{IndexError, Result};

/// A predicate over graph keys (path ids): which entries a filtered search may return.
pub type AllowKey<'a> = dyn Fn(u64) -> bool + Sync + 'a;

/// How the graph is built and searched. The defaults were chosen by measurement on clustered
/// unit vectors (docs/store-scale.md): i8 copies in the graph (a quarter of f32's memory,
/// and the fastest distance kernel), 32 links per node, enough f32-rescored candidates that
/// the i8 rounding never costs recall, and the expansions that keep recall@10 above 0.99 at a
/// million vectors (64/128 gave 0.85 there: the graph's quality at build time matters most).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GraphParams {
    /// Links per node (HNSW's M).
    pub connectivity: usize,
    /// Candidate list while inserting (HNSW's efConstruction).
    pub expansion_add: usize,
    /// Candidate list while searching (HNSW's ef); raised to the candidate count when lower.
    pub expansion_search: usize,
    /// Vectors in the graph as i8 (`true`) or f16.
    pub i8: bool,
    /// Candidates rescored against the f32 vectors for a top-k: `max(k × this, k + 30)`.
    pub rescore_factor: usize,
}

impl Default for GraphParams {
    fn default() -> Self {
        Self {
            connectivity: 32,
            expansion_add: 128,
            expansion_search: 512,
            i8: true,
            rescore_factor: 4,
        }
    }
}

impl GraphParams {
    /// What the saved graph must have been built with to be reused (search-time settings
    /// excluded).
    fn build_tag(&self) -> String {
        format!(
            "{} M{} efc{}",
            if self.i8 { "i8" } else { "f16" },
            self.connectivity,
            self.expansion_add
        )
    }

    pub fn candidates(&self, k: usize) -> usize {
        (k * self.rescore_factor).max(k + 30)
    }

    pub fn usearch_options(&self, dim: usize) -> usearch::IndexOptions {
        usearch::IndexOptions {
            dimensions: dim,
            metric: usearch::MetricKind::IP,
            quantization: if self.i8 {
                usearch::ScalarKind::I8
            } else {
                usearch::ScalarKind::F16
            },
            connectivity: self.connectivity,
            expansion_add: self.expansion_add,
            expansion_search: self.expansion_search,
            multi: false,
        }
    }
}

/// The graph and the vectors it is rescored against, at one generation.
///
/// Field order matters: `graph` may view `_graph_map`'s bytes, so it is declared (and dropped)
/// first.
pub(super) struct Ann {
    pub(super) generation: i64,
    pub(super) graph: usearch::Index,
    pub(super) vectors: Arc<VectorFile>,
    /// Whether the graph was opened by mapping the saved file (no rebuild, no catch-up); a
    /// copy into memory may since have replaced the view (see `load_in_background`).
    pub(super) mapped: bool,
    /// The graph file's mapping when `mapped`; `graph` reads straight from it.
    _graph_map: Option<memmap2::Mmap>,
}

/// What the graph costs: its bytes in memory (usearch's own count) and on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnnFootprint {
    pub vectors: usize,
    pub graph_memory_bytes: usize,
    pub graph_file_bytes: usize,
    pub vectors_file_bytes: usize,
    pub mapped: bool,
}

type Changes = Vec<(u64, Option<Vec<f32>>)>;

impl EmbeddedStore {
    /// Approximate top-k through the HNSW index, rescored exactly; with `allow`, only among
    /// the keys (path ids) it accepts — the graph walk skips the others (usearch's filtered
    /// search), so a filter costs no over-fetch when it is not very selective.
    pub fn search_ann(
        &self,
        queries: &[Vec<f32>],
        k: usize,
        allow: Option<&AllowKey<'_>>,
    ) -> Result<Vec<Vec<Hit>>> {
        for q in queries {
            self.check_dim(q)?;
        }
        if k == 0 {
            return Ok(vec![Vec::new(); queries.len()]);
        }
        let ann = self.ann_index()?;
        // The graph compares i8 copies, which can swap close neighbours: more candidates
        // than asked for, then the f32 vectors settle the order.
        let candidates = self.graph.candidates(k);
        let one = |q: &Vec<f32>| -> Result<Vec<(u64, f32)>> {
            let m = match allow {
                Some(allow) => ann.graph.filtered_search(q, candidates, allow),
                None => ann.graph.search(q, candidates),
            }
            .map_err(|e| self.ann_error(e))?;
            let mut scored: Vec<(u64, f32)> = m
                .keys
                .iter()
                .filter_map(|&key| ann.vectors.dot(key, q).map(|s| (key, s)))
                .collect();
            scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            // Keep ties with the k-th score: the final order breaks ties by path.
            if let Some(&(_, kth)) = scored.get(k.saturating_sub(1)) {
                let keep = scored.iter().take_while(|s| s.1 >= kth).count();
                scored.truncate(keep.max(k));
            }
            Ok(scored)
        };
        // A single query runs on the caller's thread: handing it to the pool costs a wake-up,
        // which on a loaded machine is more than the search.
        let found: Vec<Vec<(u64, f32)>> = if queries.len() == 1 {
            queries.iter().map(one).collect::<Result<_>>()?
        } else {
            queries.par_iter().map(one).collect::<Result<_>>()?
        };
        // Only the results' paths come from SQLite: a handful of primary-key lookups.
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT path FROM files WHERE id = ?1")
            .map_err(|e| self.sql(e))?;
        let mut out = Vec::with_capacity(queries.len());
        for scored in found {
            let mut hits = Vec::with_capacity(scored.len());
            for (key, score) in scored {
                let path = stmt
                    .query_row([key as i64], |r| r.get::<_, Vec<u8>>(0))
                    .optional()
                    .map_err(|e| self.sql(e))?;
                if let Some(path) = path {
                    hits.push(Hit {
                        path: path_from_bytes(&path),
                        score,
                    });
                }
            }
            hits.sort_by(|a, b| {
                b.score
                    .total_cmp(&a.score)
                    .then_with(|| a.path.cmp(&b.path))
            });
            hits.truncate(k);
            out.push(hits);
        }
        Ok(out)
    }

    /// The graph's size in memory and on disk (building or catching it up first).
    pub fn ann_footprint(&self) -> Result<AnnFootprint> {
        let ann = self.ann_index()?;
        let graph_file_bytes = std::fs::metadata(self.dir.join(ANN_FILE))
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        Ok(AnnFootprint {
            vectors: ann.vectors.len(),
            graph_memory_bytes: ann.graph.memory_usage(),
            graph_file_bytes,
            vectors_file_bytes: ann.vectors.size_bytes(),
            mapped: ann.mapped,
        })
    }

    pub(super) fn ann_error(&self, e: impl std::fmt::Display) -> IndexError {
        IndexError::Ann {
            store: self.address(),
            message: e.to_string(),
        }
    }

    /// The ANN index, brought up to the store's current generation: memory-mapped from disk
    /// when it is current, loaded and caught up through the change log when it lags, or
    /// rebuilt when there is none (or the log no longer reaches back to it).
    pub(super) fn ann_index(&self) -> Result<Arc<Ann>> {
        let generation = self.generation()?;
        let mut cached = self.ann.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ann) = cached.as_ref() {
            if ann.generation == generation {
                return Ok(ann.clone());
            }
        }
        // Drop the old graph before building the next: at a million vectors each is big.
        *cached = None;
        let ann = Arc::new(self.refresh_ann(generation)?);
        *cached = Some(ann.clone());
        if ann._graph_map.is_some() {
            load_in_background(Arc::clone(&self.ann), Arc::clone(&ann), self.new_graph()?);
        }
        Ok(ann)
    }

    fn new_graph(&self) -> Result<usearch::Index> {
        usearch::Index::new(&self.graph.usearch_options(self.info.dim))
            .map_err(|e| self.ann_error(e))
    }

    fn refresh_ann(&self, generation: i64) -> Result<Ann> {
        let graph_file = self.dir.join(ANN_FILE);
        let graph_path = graph_file.to_string_lossy().into_owned();
        let saved = self
            .saved_ann_generation()
            .filter(|&saved| saved <= generation && graph_file.exists());
        let vectors = saved.and_then(|saved| {
            VectorFile::open(&self.dir.join(ANN_VECTORS_FILE), self.info.dim)
                .filter(|v| (saved..=generation).contains(&v.generation()))
                .map(|v| (saved, v))
        });
        if let Some((saved, vectors)) = vectors {
            if saved == generation && vectors.generation() == generation {
                // Current: map it, so opening a million-vector store costs no load.
                let graph = self.new_graph()?;
                let threads = rayon::current_num_threads();
                // A search per pool thread at once, each needing one of usearch's thread slots.
                if let Some(map) = map_populated(std::path::Path::new(&graph_path)) {
                    // SAFETY: `view_from_buffer` requires the buffer to outlive every use of
                    // the index: the map is stored beside the graph in the same `Ann`, which
                    // drops `graph` first (field order), and is never handed out. The file
                    // under it is only ever replaced by rename, never written in place, so
                    // the mapped bytes do not change while mapped.
                    let viewed = unsafe { graph.view_from_buffer(&map) }.is_ok();
                    if viewed
                        && graph
                            .reserve_capacity_and_threads(graph.size().max(1), threads)
                            .is_ok()
                    {
                        graph.change_expansion_search(self.graph.expansion_search);
                        return Ok(Ann {
                            generation,
                            graph,
                            vectors: Arc::new(vectors),
                            mapped: true,
                            _graph_map: Some(map),
                        });
                    }
                }
            }
            if let Some(changes) = self.changes_since(saved)? {
                let graph = self.new_graph()?;
                if graph.load(&graph_path).is_ok() && changes.len() <= graph.size() / 2 + 1024 {
                    graph.change_expansion_search(self.graph.expansion_search);
                    self.replay(&graph, &changes)?;
                    let out =
                        VectorWriter::create(&self.dir.join(ANN_VECTORS_FILE), self.info.dim)?;
                    let vectors = merge(&vectors, &changes, out, generation)?;
                    drop(changes);
                    self.save_ann(&graph, generation)?;
                    return Ok(Ann {
                        generation,
                        graph,
                        vectors: Arc::new(vectors),
                        mapped: false,
                        _graph_map: None,
                    });
                }
            }
        }
        self.rebuild_ann(generation)
    }

    /// Every id changed since `since`, sorted, with its current vector (`None`: removed);
    /// `None` when the log no longer reaches back that far (then the caller rebuilds).
    fn changes_since(&self, since: i64) -> Result<Option<Changes>> {
        let conn = self.conn();
        // The log holds every change after `log_since`; older ones were pruned.
        let logged_since = meta_i64(&conn, "log_since").map_err(|e| self.sql(e))?;
        if since < logged_since {
            return Ok(None);
        }
        let mut stmt = conn
            .prepare(
                "SELECT c.id, f.vector FROM (SELECT DISTINCT id FROM changes WHERE generation > ?1) c
                 LEFT JOIN files f ON f.id = c.id ORDER BY c.id",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([since], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, Option<Vec<u8>>>(1)?.map(|v| decode_vector(&v)),
                ))
            })
            .map_err(|e| self.sql(e))?;
        let changes = rows
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sql(e))?;
        Ok(Some(changes))
    }

    /// Applies changes to a loaded graph: each id removed, then added back if present.
    fn replay(&self, graph: &usearch::Index, changes: &Changes) -> Result<()> {
        for (id, _) in changes {
            graph.remove(*id).map_err(|e| self.ann_error(e))?;
        }
        let adds: Vec<(u64, &Vec<f32>)> = changes
            .iter()
            .filter_map(|(id, v)| v.as_ref().map(|v| (*id, v)))
            .collect();
        let threads = rayon::current_num_threads();
        graph
            .reserve_capacity_and_threads((graph.size() + adds.len()).max(1024), threads)
            .map_err(|e| self.ann_error(e))?;
        let add = |(id, v): &(u64, &Vec<f32>)| graph.add(*id, v);
        if adds.len() >= PARALLEL_BUILD_MIN {
            adds.par_iter().try_for_each(add)
        } else {
            adds.iter().try_for_each(add)
        }
        .map_err(|e| self.ann_error(e))
    }

    /// Builds the graph and the vectors file from every stored vector.
    fn rebuild_ann(&self, generation: i64) -> Result<Ann> {
        let graph = self.new_graph()?;
        let n = self.len()?;
        let threads = rayon::current_num_threads();
        graph
            .reserve_capacity_and_threads(n.max(1024), threads)
            .map_err(|e| self.ann_error(e))?;
        // Parallel inserts only for large builds: concurrent HNSW inserts give a graph that
        // depends on thread timing, and small forced-graph collections (where tests hold
        // search to exact search) are built the same way every time.
        let parallel = n >= PARALLEL_BUILD_MIN;
        let mut out = VectorWriter::create(&self.dir.join(ANN_VECTORS_FILE), self.info.dim)?;
        self.scan(8192, &mut |entries| {
            let add = |e: &crate::store::Entry| graph.add(e.file.id() as u64, &e.vector);
            if parallel {
                entries.par_iter().try_for_each(add)
            } else {
                entries.iter().try_for_each(add)
            }
            .map_err(|e| self.ann_error(e))?;
            // `scan` visits in id order, the order the vectors file keeps.
            for e in entries {
                out.push(e.file.id() as u64, &e.vector)?;
            }
            Ok(())
        })?;
        let vectors = out.finish(generation)?;
        self.save_ann(&graph, generation)?;
        Ok(Ann {
            generation,
            graph,
            vectors: Arc::new(vectors),
            mapped: false,
            _graph_map: None,
        })
    }

    /// The generation `ann.json` records, if it was written with this store's graph
    /// parameters.
    pub(super) fn saved_ann_generation(&self) -> Option<i64> {
        let text = std::fs::read_to_string(self.dir.join(ANN_STATE_FILE)).ok()?;
        let state: serde_json::Value = serde_json::from_str(&text).ok()?;
        if state.get("graph")?.as_str()? != self.graph.build_tag() {
            return None;
        }
        state.get("generation")?.as_i64()
    }

    /// Writes the graph, then its generation, each atomically (temp file + rename); the
    /// vectors file was renamed into place before. Then prunes the change log up to it.
    fn save_ann(&self, graph: &usearch::Index, generation: i64) -> Result<()> {
        let pid = std::process::id();
        let file = self.dir.join(ANN_FILE);
        let tmp = self.dir.join(format!("{ANN_FILE}.{pid}.tmp"));
        graph
            .save(&tmp.to_string_lossy())
            .map_err(|e| self.ann_error(e))?;
        rename(&tmp, &file)?;
        let state = serde_json::json!({
            "generation": generation,
            "vectors": graph.size(),
            "graph": self.graph.build_tag(),
        });
        let tmp = self.dir.join(format!("{ANN_STATE_FILE}.{pid}.tmp"));
        std::fs::write(&tmp, state.to_string()).map_err(|source| IndexError::Io {
            path: tmp.clone(),
            source,
        })?;
        rename(&tmp, &self.dir.join(ANN_STATE_FILE))?;
        // The log up to this generation is no longer needed by this index. Never moved back:
        // should another process have saved a newer graph and pruned further meanwhile,
        // files saved here are older than the log reaches and get rebuilt, not trusted.
        let conn = self.conn();
        let logged_since = meta_i64(&conn, "log_since").map_err(|e| self.sql(e))?;
        if generation > logged_since {
            conn.execute("DELETE FROM changes WHERE generation <= ?1", [generation])
                .map_err(|e| self.sql(e))?;
            set_meta(&conn, "log_since", &generation.to_string()).map_err(|e| self.sql(e))?;
        }
        Ok(())
    }
}

/// The graph file mapped read-only with its pages populated up front (`MAP_POPULATE`): a
/// search walks thousands of nodes scattered over the file, and faulting each page in on first
/// touch was measured at 1M vectors to cost more than the walk itself (p50 1.99 ms against
/// 0.82 ms for the same graph loaded into memory). Populating a cached file is one pass of
/// page-table work at open, far cheaper than reading it into memory. `None` when the file
/// cannot be mapped (the caller then loads it).
fn map_populated(path: &std::path::Path) -> Option<memmap2::Mmap> {
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: the file is only ever replaced by rename, never modified in place (see
    // `save_ann`), so the mapping's bytes stay what they were when mapped.
    unsafe { memmap2::MmapOptions::new().populate().map(&file) }.ok()
}

/// Copies a mapped graph into memory on a background thread and swaps the copy in, if the store
/// is still at that generation. The view answers at once after open; the copy answers faster
/// once there: at a million vectors, queries walking the file mapping's 4 KiB pages measured
/// 1.5× slower than the same graph in (huge-page-backed) heap memory, whose page walks are
/// shorter — populating the mapping did not close that gap. A process that exits first (a
/// one-shot search) simply never uses the copy.
fn load_in_background(
    slot: Arc<std::sync::Mutex<Option<Arc<Ann>>>>,
    viewed: Arc<Ann>,
    graph: usearch::Index,
) {
    std::thread::spawn(move || {
        let Some(map) = viewed._graph_map.as_ref() else {
            return;
        };
        // The same bytes the view reads, so the copy is the viewed graph by construction.
        if graph.load_from_buffer(map).is_err()
            || graph
                .reserve_capacity_and_threads(graph.size().max(1), rayon::current_num_threads())
                .is_err()
        {
            return;
        }
        graph.change_expansion_search(viewed.graph.expansion_search());
        let loaded = Arc::new(Ann {
            generation: viewed.generation,
            graph,
            vectors: Arc::clone(&viewed.vectors),
            mapped: true,
            _graph_map: None,
        });
        let mut cached = slot.lock().unwrap_or_else(|p| p.into_inner());
        if cached.as_ref().is_some_and(|c| Arc::ptr_eq(c, &viewed)) {
            *cached = Some(loaded);
        }
    });
}
