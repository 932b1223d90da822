//! Filtered search on the embedded store.
//!
//! The filter becomes SQL over the metadata columns (indexed: see `sql::FILTER_INDEXES`),
//! which yields the ids of the entries it lets through; a `near` circle is a bounding box in
//! SQL and the exact great-circle distance here, so the answer is [`Filter::matches`] to the
//! letter. Then the number of matches decides how to search them:
//!
//! - few (or a collection small enough to be searched exactly anyway): exact scores over just
//!   those entries' vectors (the graph's memory-mapped f32 copy, not SQLite) — exact top-k,
//!   and cheaper than a graph walk that would skip almost every node it visits;
//! - many: the HNSW graph, walking only to allowed keys (usearch's filtered search), with
//!   the usual exact rescoring. Should the walk come back with fewer than `k` hits (a
//!   selective filter in a badly connected region), that query is answered exactly instead.
//!
//! The matching ids of the last filter are kept until the next write, so a run of queries
//! under one filter lists them once.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use rusqlite::types::Value;
use rusqlite::OptionalExtension;

use super::{AllowKey, EmbeddedStore};
use crate::exact::ExactIndex;
use crate::filter::{canonical_type, distance_m, Filter, Near, EARTH_RADIUS_M};
use crate::paths::{path_bytes, path_from_bytes, path_id};
use crate::store::{Hit, Store};
use crate::Result;

/// A filter matching at most this share of the collection (or `exact_limit` entries, if
/// more) is searched exactly over the matching vectors, above it through the graph.
pub const FILTER_EXACT_SHARE: f64 = 0.02;

impl EmbeddedStore {
    /// Top-k among the entries `filter` lets through (non-empty filter).
    pub(super) fn search_filtered(
        &self,
        queries: &[Vec<f32>],
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<Vec<Hit>>> {
        for q in queries {
            self.check_dim(q)?;
        }
        let ids = self.cached_filter_ids(filter)?;
        if ids.is_empty() || k == 0 || queries.is_empty() {
            return Ok(vec![Vec::new(); queries.len()]);
        }
        if !self.uses_ann()? {
            return self.exact_in_memory(queries, k, &ids);
        }
        let total = self.len()?;
        let cutoff = self
            .exact_limit
            .max((total as f64 * self.filter_exact_share).ceil() as usize);
        if ids.len() <= cutoff {
            return self.exact_from_vector_file(queries, k, &ids);
        }
        let allow: &AllowKey<'_> = &|key: u64| ids.binary_search(&(key as i64)).is_ok();
        let mut found = self.search_ann(queries, k, Some(allow))?;
        let want = k.min(ids.len());
        let short: Vec<usize> = (0..found.len())
            .filter(|&i| found[i].len() < want)
            .collect();
        if !short.is_empty() {
            let redo: Vec<Vec<f32>> = short.iter().map(|&i| queries[i].clone()).collect();
            let exact = self.exact_from_vector_file(&redo, k, &ids)?;
            for (i, hits) in short.into_iter().zip(exact) {
                found[i] = hits;
            }
        }
        Ok(found)
    }

    /// [`filter_ids`](Self::filter_ids), remembered for the last filter until the next write
    /// (metadata backfills included, from any process): a
    /// search page or a labelling run asks many queries under one filter, and only the first
    /// pays for the SQL that lists the matches (which grows with their number).
    fn cached_filter_ids(&self, filter: &Filter) -> Result<Arc<Vec<i64>>> {
        let counters = self.write_counters()?;
        let mut cached = self.filter_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((c, f, ids)) = cached.as_ref() {
            if *c == counters && f == filter {
                return Ok(ids.clone());
            }
        }
        let ids = Arc::new(self.filter_ids(filter)?);
        *cached = Some((counters, filter.clone(), ids.clone()));
        Ok(ids)
    }

    /// Exact top-k over the entries `ids` (sorted), scored against the memory-mapped f32
    /// vectors the graph is rescored with — no vector read through SQLite; only the `k`
    /// results' paths are fetched.
    fn exact_from_vector_file(
        &self,
        queries: &[Vec<f32>],
        k: usize,
        ids: &[i64],
    ) -> Result<Vec<Vec<Hit>>> {
        let ann = self.ann_index()?;
        let ranked: Vec<Vec<(i64, f32)>> = queries
            .par_iter()
            .map(|q| {
                let mut scored: Vec<(i64, f32)> = ids
                    .iter()
                    .filter_map(|&id| ann.vectors.dot(id as u64, q).map(|s| (id, s)))
                    .collect();
                let cmp = |a: &(i64, f32), b: &(i64, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
                if k < scored.len() {
                    scored.select_nth_unstable_by(k, cmp);
                    scored.truncate(k);
                }
                scored.sort_by(cmp);
                scored
            })
            .collect();
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT path FROM files WHERE id = ?1")
            .map_err(|e| self.sql(e))?;
        let mut out = Vec::with_capacity(ranked.len());
        for hits in ranked {
            let mut resolved = Vec::with_capacity(hits.len());
            for (id, score) in hits {
                let path: Option<Vec<u8>> = stmt
                    .query_row([id], |r| r.get(0))
                    .optional()
                    .map_err(|e| self.sql(e))?;
                if let Some(path) = path {
                    resolved.push(Hit {
                        path: path_from_bytes(&path),
                        score,
                    });
                }
            }
            // Equal scores in path order, as every other search path reports them.
            resolved.sort_by(|a, b| {
                b.score
                    .total_cmp(&a.score)
                    .then_with(|| a.path.cmp(&b.path))
            });
            out.push(resolved);
        }
        Ok(out)
    }

    /// The ids (sorted) of the entries `filter` lets through.
    pub fn filter_ids(&self, filter: &Filter) -> Result<Vec<i64>> {
        let query = FilterSql::new(filter);
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&query.sql).map_err(|e| self.sql(e))?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(query.params.iter()))
            .map_err(|e| self.sql(e))?;
        let mut ids = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.sql(e))? {
            let id: i64 = r.get(0).map_err(|e| self.sql(e))?;
            if let Some(near) = &filter.near {
                let lat: f64 = r.get(1).map_err(|e| self.sql(e))?;
                let lon: f64 = r.get(2).map_err(|e| self.sql(e))?;
                // Filter::matches's own test, on the values it would see.
                if distance_m(near.latitude, near.longitude, lat, lon) > near.radius_m {
                    continue;
                }
            }
            ids.push(id);
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Exact search over the in-memory vectors of a small collection, restricted to `ids`.
    fn exact_in_memory(
        &self,
        queries: &[Vec<f32>],
        k: usize,
        ids: &[i64],
    ) -> Result<Vec<Vec<Hit>>> {
        let all: Arc<ExactIndex> = self.exact_index()?;
        let mut index = ExactIndex::new(self.info.dim);
        for (row, path) in all.paths.iter().enumerate() {
            if ids.binary_search(&path_id(path)).is_ok() {
                index.push(path.clone(), all.vector(row));
            }
        }
        Ok(top_k(&index, queries, k))
    }
}

fn top_k(index: &ExactIndex, queries: &[Vec<f32>], k: usize) -> Vec<Vec<Hit>> {
    index
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
        .collect()
}

/// A filter as one `SELECT id[, latitude, longitude] FROM files WHERE …` and its parameters.
struct FilterSql {
    sql: String,
    params: Vec<Value>,
}

impl FilterSql {
    fn new(filter: &Filter) -> Self {
        let mut clauses: Vec<String> = Vec::new();
        let mut params: Vec<Value> = Vec::new();
        if let Some(after) = filter.after {
            clauses.push("taken_key >= ?".into());
            params.push(after.into());
        }
        if let Some(before) = filter.before {
            clauses.push("taken_key < ?".into());
            params.push(before.into());
        }
        if !filter.folders.is_empty() {
            let mut any = Vec::new();
            for folder in &filter.folders {
                any.push(folder_clause(folder, &mut params));
            }
            clauses.push(format!("({})", any.join(" OR ")));
        }
        if let Some(near) = &filter.near {
            clauses.push(near_clause(near, &mut params));
        }
        if let Some(camera) = &filter.camera {
            // `camera_lc` is `PhotoMetadata::camera()` lower-cased at write time; instr is a
            // plain substring test (no LIKE wildcards to escape), NULL (no camera) never
            // matches.
            clauses.push("instr(camera_lc, ?) > 0".into());
            params.push(camera.to_lowercase().into());
        }
        if !filter.file_types.is_empty() {
            let marks = vec!["?"; filter.file_types.len()].join(", ");
            clauses.push(format!("file_type IN ({marks})"));
            params.extend(filter.file_types.iter().map(|t| canonical_type(t).into()));
        }
        if let Some(min) = filter.min_size {
            clauses.push("size >= ?".into());
            params.push(Value::Integer(min.min(i64::MAX as u64) as i64));
        }
        if let Some(max) = filter.max_size {
            clauses.push("size <= ?".into());
            params.push(Value::Integer(max.min(i64::MAX as u64) as i64));
        }
        let columns = if filter.near.is_some() {
            "id, latitude, longitude"
        } else {
            "id"
        };
        let condition = if clauses.is_empty() {
            "1".to_owned()
        } else {
            clauses.join(" AND ")
        };
        Self {
            sql: format!("SELECT {columns} FROM files WHERE {condition}"),
            params,
        }
    }
}

/// Paths under `folder` by whole components (`Path::starts_with`), as a range over the path
/// bytes: `folder/` ≤ path < `folder0` (`0` is the byte after `/`), plus the folder itself.
/// Stored paths are canonical (no `//`, `.` or trailing `/`), so the folder is normalised the
/// same way before its bytes are taken.
fn folder_clause(folder: &Path, params: &mut Vec<Value>) -> String {
    let normal: PathBuf = folder
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    let mut prefix = path_bytes(&normal);
    if prefix.is_empty() {
        // Every path starts with the empty path.
        return "1".into();
    }
    if prefix.last() != Some(&b'/') {
        params.push(Value::Blob(prefix.clone()));
        prefix.push(b'/');
        let mut end = prefix.clone();
        *end.last_mut().expect("not empty") = b'0';
        params.push(Value::Blob(prefix));
        params.push(Value::Blob(end));
        "(path = ? OR (path >= ? AND path < ?))".into()
    } else {
        let mut end = prefix.clone();
        *end.last_mut().expect("not empty") = b'0';
        params.push(Value::Blob(prefix));
        params.push(Value::Blob(end));
        "(path >= ? AND path < ?)".into()
    }
}

/// A bounding box around the circle, loose enough never to cut it (the exact distance is
/// tested on what it lets through). No longitude bound where the box would cross the
/// antimeridian or reach a pole, none at all for a circle of a quarter of the Earth or more
/// (or non-finite numbers, which `Filter::matches` lets through wherever there is a
/// position).
fn near_clause(near: &Near, params: &mut Vec<Value>) -> String {
    let present = "latitude IS NOT NULL AND longitude IS NOT NULL".to_owned();
    let angle = near.radius_m / EARTH_RADIUS_M;
    let finite = near.latitude.is_finite() && near.longitude.is_finite() && angle.is_finite();
    if !finite || angle >= std::f64::consts::FRAC_PI_2 {
        return format!("({present})");
    }
    if angle < 0.0 {
        return "0".into();
    }
    // A 1e-6 relative margin (and a few centimetres) against rounding at the box's edges.
    let margin = |deg: f64| deg * (1.0 + 1e-6) + 1e-6;
    let dlat = margin(angle.to_degrees());
    let (lo, hi) = (near.latitude - dlat, near.latitude + dlat);
    params.push(lo.into());
    params.push(hi.into());
    let lat = "latitude BETWEEN ? AND ?";
    if lo <= -90.0 || hi >= 90.0 {
        return format!("({lat} AND longitude IS NOT NULL)");
    }
    let cos = near.latitude.to_radians().cos();
    let ratio = angle.sin() / cos;
    if ratio.is_nan() || ratio >= 1.0 {
        return format!("({lat} AND longitude IS NOT NULL)");
    }
    let dlon = margin(ratio.asin().to_degrees());
    let (west, east) = (near.longitude - dlon, near.longitude + dlon);
    if west <= -180.0 || east >= 180.0 {
        return format!("({lat} AND longitude IS NOT NULL)");
    }
    params.push(west.into());
    params.push(east.into());
    // Longitudes off the map are not boxed: the distance decides for them.
    format!("({lat} AND (longitude BETWEEN ? AND ? OR longitude < -180 OR longitude > 180))")
}
