//! The HNSW graph over the stored vectors: derived data, kept in step with SQLite through
//! the change log, saved beside it, searched with exact rescoring.

use std::sync::Arc;

use rayon::prelude::*;
use rusqlite::OptionalExtension;

use super::sql::{decode_vector, meta_i64, rename, set_meta};
use super::{EmbeddedStore, ANN_FILE, ANN_STATE_FILE, PARALLEL_BUILD_MIN};
use crate::paths::path_from_bytes;
use crate::store::{Entry, Hit, Store};
use crate::{IndexError, Result};

/// A predicate over graph keys (path ids): which entries a filtered search may return.
pub type AllowKey<'a> = dyn Fn(u64) -> bool + Sync + 'a;

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
        let ann = self.ann_index()?;
        // Twice the candidates, then exact rescoring: f16 graph distances can swap close
        // neighbours, the stored f32 vectors settle the order.
        let candidates = (2 * k).max(k + 8);
        let found: Vec<Vec<u64>> = queries
            .par_iter()
            .map(|q| {
                match allow {
                    Some(allow) => ann.filtered_search(q, candidates, allow),
                    None => ann.search(q, candidates),
                }
                .map(|m| m.keys)
                .map_err(|e| self.ann_error(e))
            })
            .collect::<Result<_>>()?;
        let mut out = Vec::with_capacity(queries.len());
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT path, vector FROM files WHERE id = ?1")
            .map_err(|e| self.sql(e))?;
        for (q, keys) in queries.iter().zip(found) {
            let mut hits = Vec::with_capacity(keys.len());
            for key in keys {
                let row = stmt
                    .query_row([key as i64], |r| {
                        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
                    })
                    .optional()
                    .map_err(|e| self.sql(e))?;
                if let Some((path, vector)) = row {
                    let v = decode_vector(&vector);
                    hits.push(Hit {
                        path: path_from_bytes(&path),
                        score: clipkit_core::scores::dot(q, &v),
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
    pub(super) fn ann_error(&self, e: impl std::fmt::Display) -> IndexError {
        IndexError::Ann {
            store: self.address(),
            message: e.to_string(),
        }
    }

    pub(super) fn ann_options(&self) -> usearch::IndexOptions {
        usearch::IndexOptions {
            dimensions: self.info.dim,
            metric: usearch::MetricKind::IP,
            quantization: usearch::ScalarKind::F16,
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 256,
            multi: false,
        }
    }

    /// The ANN index, brought up to the store's current generation: loaded from disk and
    /// caught up through the change log, or rebuilt when there is none.
    pub(super) fn ann_index(&self) -> Result<Arc<usearch::Index>> {
        let generation = self.generation()?;
        let mut cached = self.ann.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((g, index)) = cached.as_ref() {
            if *g == generation {
                return Ok(index.clone());
            }
        }
        let (index, changed) = self.refresh_ann(generation)?;
        if changed {
            self.save_ann(&index, generation)?;
        }
        let index = Arc::new(index);
        *cached = Some((generation, index.clone()));
        Ok(index)
    }

    pub(super) fn refresh_ann(&self, generation: i64) -> Result<(usearch::Index, bool)> {
        let index = usearch::Index::new(&self.ann_options()).map_err(|e| self.ann_error(e))?;
        let file = self.dir.join(ANN_FILE);
        if let Some(saved) = self.saved_ann_generation() {
            if file.exists() && saved <= generation {
                index
                    .load(&file.to_string_lossy())
                    .map_err(|e| self.ann_error(e))?;
                if saved == generation {
                    return Ok((index, false));
                }
                if self.catch_up(&index, saved)? {
                    return Ok((index, true));
                }
            }
        }
        self.rebuild_ann(&index)?;
        Ok((index, true))
    }

    /// Replays the change log since `since`; false when the log no longer reaches back
    /// that far (then the caller rebuilds).
    pub(super) fn catch_up(&self, index: &usearch::Index, since: i64) -> Result<bool> {
        let conn = self.conn();
        // The log holds every change after `log_since`; older ones were pruned.
        let logged_since = meta_i64(&conn, "log_since").map_err(|e| self.sql(e))?;
        if since < logged_since {
            return Ok(false);
        }
        let mut stmt = conn
            .prepare(
                "SELECT DISTINCT c.id, f.vector FROM changes c LEFT JOIN files f ON f.id = c.id
                 WHERE c.generation > ?1",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([since], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Option<Vec<u8>>>(1)?))
            })
            .map_err(|e| self.sql(e))?;
        for row in rows {
            let (id, vector) = row.map_err(|e| self.sql(e))?;
            index.remove(id as u64).map_err(|e| self.ann_error(e))?;
            if let Some(v) = vector {
                if index.size() + 1 > index.capacity() {
                    index
                        .reserve((index.capacity() * 2).max(1024))
                        .map_err(|e| self.ann_error(e))?;
                }
                index
                    .add(id as u64, &decode_vector(&v))
                    .map_err(|e| self.ann_error(e))?;
            }
        }
        Ok(true)
    }

    pub(super) fn rebuild_ann(&self, index: &usearch::Index) -> Result<()> {
        let n = self.len()?;
        let threads = rayon::current_num_threads();
        index
            .reserve_capacity_and_threads(n.max(1024), threads)
            .map_err(|e| self.ann_error(e))?;
        // Parallel inserts only for large builds: concurrent HNSW inserts give a graph that
        // depends on thread timing, and on small collections (where search must equal exact
        // search) an occasionally poorly-linked node was measured to be missed by search.
        let parallel = n >= PARALLEL_BUILD_MIN;
        self.scan(8192, &mut |entries| {
            let add = |e: &Entry| index.add(e.file.id() as u64, &e.vector);
            if parallel {
                entries.par_iter().try_for_each(add)
            } else {
                entries.iter().try_for_each(add)
            }
            .map_err(|e| self.ann_error(e))
        })
    }

    pub(super) fn saved_ann_generation(&self) -> Option<i64> {
        let text = std::fs::read_to_string(self.dir.join(ANN_STATE_FILE)).ok()?;
        let state: serde_json::Value = serde_json::from_str(&text).ok()?;
        state.get("generation")?.as_i64()
    }

    /// Writes the index and its generation, each atomically (temp file + rename). A crash
    /// between the two leaves a newer index under an older generation; replaying the log
    /// over it is harmless because every replayed step is remove-then-add.
    pub(super) fn save_ann(&self, index: &usearch::Index, generation: i64) -> Result<()> {
        let file = self.dir.join(ANN_FILE);
        let tmp = self.dir.join(format!("{ANN_FILE}.tmp"));
        index
            .save(&tmp.to_string_lossy())
            .map_err(|e| self.ann_error(e))?;
        rename(&tmp, &file)?;
        let state = serde_json::json!({ "generation": generation, "vectors": index.size() });
        let tmp = self.dir.join(format!("{ANN_STATE_FILE}.tmp"));
        std::fs::write(&tmp, state.to_string()).map_err(|source| IndexError::Io {
            path: tmp.clone(),
            source,
        })?;
        rename(&tmp, &self.dir.join(ANN_STATE_FILE))?;
        // The log before this generation is no longer needed by this index.
        let conn = self.conn();
        conn.execute("DELETE FROM changes WHERE generation <= ?1", [generation])
            .map_err(|e| self.sql(e))?;
        set_meta(&conn, "log_since", &generation.to_string()).map_err(|e| self.sql(e))?;
        Ok(())
    }
}
