//! [`Store`] for [`MilvusStore`]: writing batches (upserts keyed by path id, removals),
//! reading files, vectors and whole entries, searching, and the indexed roots. The collection
//! management, paging and label sets it builds on live in the sibling modules.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use ::milvus::v2::prelude::*;
use ::milvus::v2::ConsistencyLevel;

use super::filter::{scalars, Scalars};
use super::{
    display_address, MilvusStore, CAMERA, FILE_TYPE, HASH, HNSW_EF_SEARCH, ID, IDS_PER_REQUEST,
    LATITUDE, LONGITUDE, MAX_HASH_BYTES, MAX_PATH_BYTES, MAX_TOPK, META, MTIME, PATH, PROP_ROOTS,
    QUERIES_PER_REQUEST, READY_TIMEOUT, READ_RESPONSE_BYTES, ROW_OVERHEAD_BYTES, SIZE, TAKEN,
    VECTOR, WRITE_REQUEST_BYTES,
};
use crate::filter::Filter;
use crate::paths::{decode_path, encode_path, path_id};
use crate::Store;
use crate::{Batch, CollectionInfo, Entry, FileRecord, Hit, IndexError, LabelVector, Result};

impl Store for MilvusStore {
    fn address(&self) -> String {
        display_address(&self.endpoint, &self.collection)
    }

    fn info(&self) -> &CollectionInfo {
        &self.info
    }

    fn len(&self) -> Result<usize> {
        self.count(&self.collection)
    }

    fn files(&self) -> Result<Vec<FileRecord>> {
        let mut files = Vec::new();
        self.for_each_page(
            &self.collection,
            &self.record_fields(),
            self.rows_per_response(false),
            &mut |rows| {
                for row in rows {
                    files.push(self.row_to_record(row)?);
                }
                Ok(())
            },
        )?;
        Ok(files)
    }

    fn vectors(&self, paths: &[PathBuf]) -> Result<Vec<Option<Vec<f32>>>> {
        let what = "fetching vectors";
        let mut ids: Vec<i64> = paths.iter().map(|p| path_id(p)).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut found: HashMap<i64, (String, Vec<f32>)> = HashMap::new();
        let per_request = self.rows_per_response(true).min(IDS_PER_REQUEST);
        for chunk in ids.chunks(per_request) {
            // A filter rather than the SDK's `get`, which sends a filter template that
            // milvus-lite cannot parse.
            let results = self.query(
                &self.collection,
                &Self::ids_filter(chunk),
                &[ID, PATH, VECTOR],
                None,
            )?;
            let rows = results.rows().map_err(|e| self.error(what, e))?;
            for row in rows {
                let id = row.get_i64(ID).map_err(|e| self.error(what, e))?;
                let path = row.get_str(PATH).map_err(|e| self.error(what, e))?;
                let vector = row
                    .get_float_vector(VECTOR)
                    .map_err(|e| self.error(what, e))?;
                found.insert(id, (path.to_owned(), vector.to_vec()));
            }
        }
        // The stored path is compared too, so that two paths sharing a 63-bit id (never seen,
        // but possible) cannot return each other's vector.
        Ok(paths
            .iter()
            .map(|p| {
                found
                    .get(&path_id(p))
                    .filter(|(stored, _)| *stored == encode_path(p))
                    .map(|(_, v)| v.clone())
            })
            .collect())
    }

    fn apply(&mut self, batch: Batch) -> Result<()> {
        // Validate everything before writing anything, so a bad entry cannot leave half a
        // batch behind.
        for entry in &batch.upserts {
            self.check_dim(entry.vector.len())?;
            let encoded = encode_path(&entry.file.path);
            if encoded.len() > MAX_PATH_BYTES {
                return Err(IndexError::PathTooLong {
                    store: self.address(),
                    path: entry.file.path.clone(),
                    len: encoded.len(),
                    max: MAX_PATH_BYTES,
                });
            }
            if entry.file.hash.len() > MAX_HASH_BYTES {
                return Err(IndexError::BadFile {
                    path: entry.file.path.clone(),
                    problem: format!(
                        "content hash `{}` is longer than {MAX_HASH_BYTES} bytes",
                        entry.file.hash
                    ),
                });
            }
        }
        // One request must not carry the same primary key twice; the last entry for a path
        // wins, as it would if the upserts were applied one by one.
        let mut seen = HashSet::new();
        let mut upserts: Vec<&Entry> = batch
            .upserts
            .iter()
            .rev()
            .filter(|e| seen.insert(e.file.id()))
            .collect();
        upserts.reverse();

        self.write_entries(&self.collection, &upserts, self.has_filter_fields)?;

        let mut removals: Vec<i64> = batch.removals.iter().map(|p| path_id(p)).collect();
        removals.sort_unstable();
        removals.dedup();
        for chunk in removals.chunks(IDS_PER_REQUEST) {
            let what = "removing entries";
            // A filter rather than ids, which the SDK sends as a filter template that
            // milvus-lite cannot parse.
            let request = DeleteRequest::builder()
                .collection_name(&self.collection)
                .filter(Self::ids_filter(chunk))
                .build()
                .map_err(|e| self.error(what, e))?;
            self.block_on(self.client.delete(request))
                .map_err(|e| self.error(what, e))?;
        }
        Ok(())
    }

    fn scan(&self, chunk: usize, visit: &mut dyn FnMut(&[Entry]) -> Result<()>) -> Result<()> {
        let chunk = chunk.max(1);
        // Pages are sized for the transport, then re-cut to exactly `chunk` entries.
        let mut pending: Vec<Entry> = Vec::with_capacity(chunk.min(1 << 16));
        let mut fields = self.record_fields();
        fields.push(VECTOR);
        self.for_each_page(
            &self.collection,
            &fields,
            self.rows_per_response(true),
            &mut |rows| {
                for row in rows {
                    let file = self.row_to_record(row)?;
                    let vector = row
                        .get_float_vector(VECTOR)
                        .map_err(|e| self.error("decoding a row", e))?
                        .to_vec();
                    pending.push(Entry { file, vector });
                    if pending.len() == chunk {
                        visit(&pending)?;
                        pending.clear();
                    }
                }
                Ok(())
            },
        )?;
        if !pending.is_empty() {
            visit(&pending)?;
        }
        Ok(())
    }

    fn search(&self, queries: &[Vec<f32>], k: usize, filter: &Filter) -> Result<Vec<Vec<Hit>>> {
        for q in queries {
            self.check_dim(q.len())?;
        }
        if !filter.is_empty() {
            return self.search_filtered(queries, k, filter);
        }
        if k == 0 || queries.is_empty() {
            return Ok(vec![Vec::new(); queries.len()]);
        }
        if k > MAX_TOPK {
            return Err(self.error(
                "searching",
                format!("k = {k} is above Milvus's limit of {MAX_TOPK} results per query"),
            ));
        }
        let what = "searching";
        let mut all = Vec::with_capacity(queries.len());
        // Each hit costs an id, a score and a path in the response.
        let per_request =
            (READ_RESPONSE_BYTES / (k * ROW_OVERHEAD_BYTES)).clamp(1, QUERIES_PER_REQUEST);
        for block in queries.chunks(per_request) {
            let request = SearchRequest::builder()
                .collection_name(&self.collection)
                .vector_field(VECTOR)
                .vectors(SearchVectors::Float(block.to_vec()))
                .metric_type(MetricType::Ip)
                .extra_params(HashMap::from([(
                    "ef".to_owned(),
                    k.max(HNSW_EF_SEARCH).to_string(),
                )]))
                .output_fields([PATH])
                .limit(k as i64)
                .consistency_level(ConsistencyLevel::Strong)
                .build()
                .map_err(|e| self.error(what, e))?;
            let response = self
                .block_on(self.client.search(request))
                .map_err(|e| self.error(what, e))?;
            let results = response.results();
            self.check_result_lists(what, results.len(), block.len())?;
            for result in results.iter() {
                let scores = result.get_scores();
                let rows = result.rows().map_err(|e| self.error(what, e))?;
                let mut hits = Vec::with_capacity(scores.len());
                for (row, &score) in rows.zip(scores) {
                    let path = row.get_str(PATH).map_err(|e| self.error(what, e))?;
                    hits.push(Hit {
                        path: decode_path(path),
                        score,
                    });
                }
                // Milvus answers best first already; sorting (stably) only guards the order
                // the trait promises.
                hits.sort_by(|a, b| b.score.total_cmp(&a.score));
                all.push(hits);
            }
        }
        Ok(all)
    }

    fn flush(&mut self) -> Result<()> {
        let request = FlushRequest::builder()
            .collection_names([self.collection.as_str()])
            .wait_flushed_ms(READY_TIMEOUT.as_millis() as i64)
            .build()
            .map_err(|e| self.error("flushing", e))?;
        self.block_on(self.client.flush(request))
            .map(|_| ())
            .map_err(|e| self.error("flushing", e))
    }

    fn put_labels(&mut self, set: &str, labels: &[LabelVector]) -> Result<()> {
        self.write_label_set(set, labels)
    }

    fn labels(&self, set: &str) -> Result<Option<Vec<LabelVector>>> {
        self.read_label_set(set)
    }

    fn roots(&self) -> Result<Vec<PathBuf>> {
        let props = self.properties()?;
        let Some(json) = props.get(PROP_ROOTS) else {
            return Ok(Vec::new());
        };
        let encoded: Vec<String> = serde_json::from_str(json).map_err(|e| {
            self.error(
                "reading the indexed roots",
                format!("property {PROP_ROOTS} is not a JSON list of strings: {e}"),
            )
        })?;
        Ok(encoded.iter().map(|s| decode_path(s)).collect())
    }

    fn add_roots(&mut self, roots: &[PathBuf]) -> Result<()> {
        let mut all = self.roots()?;
        let before = all.len();
        for root in roots {
            if !all.contains(root) {
                all.push(root.clone());
            }
        }
        if all.len() == before {
            return Ok(());
        }
        let encoded: Vec<String> = all.iter().map(|p| encode_path(p)).collect();
        let json = serde_json::to_string(&encoded).map_err(|e| self.error("saving roots", e))?;
        self.set_property(PROP_ROOTS, json)
    }
}

impl MilvusStore {
    /// Upserts `entries` (distinct paths) into collection `name`, in requests of bounded size;
    /// with `filter_fields`, the filter fields too (a collection of the current schema).
    pub(super) fn write_entries(
        &self,
        name: &str,
        entries: &[&Entry],
        filter_fields: bool,
    ) -> Result<()> {
        let row_bytes = self.info.dim * 4 + 512;
        let rows_per_request = (WRITE_REQUEST_BYTES / row_bytes).clamp(1, 10_000);
        for chunk in entries.chunks(rows_per_request) {
            let mut columns = vec![
                FieldData::int64(ID, chunk.iter().map(|e| e.file.id()).collect()),
                FieldData::varchar(
                    PATH,
                    chunk.iter().map(|e| encode_path(&e.file.path)).collect(),
                ),
                FieldData::int64(
                    SIZE,
                    chunk
                        .iter()
                        .map(|e| i64::try_from(e.file.size).unwrap_or(i64::MAX))
                        .collect(),
                ),
                FieldData::int64(MTIME, chunk.iter().map(|e| e.file.mtime_ns).collect()),
                FieldData::varchar(HASH, chunk.iter().map(|e| e.file.hash.clone()).collect()),
                FieldData::float_vector(VECTOR, chunk.iter().map(|e| e.vector.clone()).collect()),
            ];
            if filter_fields {
                let rows: Vec<Scalars> = chunk.iter().map(|e| scalars(&e.file)).collect();
                columns.extend([
                    FieldData::int64(TAKEN, rows.iter().map(|r| r.taken).collect()),
                    FieldData::double(LATITUDE, rows.iter().map(|r| r.latitude).collect()),
                    FieldData::double(LONGITUDE, rows.iter().map(|r| r.longitude).collect()),
                    FieldData::varchar(CAMERA, rows.iter().map(|r| r.camera.clone()).collect()),
                    FieldData::varchar(
                        FILE_TYPE,
                        rows.iter().map(|r| r.file_type.clone()).collect(),
                    ),
                    FieldData::varchar(META, rows.into_iter().map(|r| r.meta).collect()),
                ]);
            }
            let what = format!("writing entries to {name}");
            let insert = InsertRequest::builder()
                .collection_name(name)
                .columns(columns)
                .build()
                .map_err(|e| self.error(&what, e))?;
            let request = UpsertRequest::builder()
                .insert(insert)
                .build()
                .map_err(|e| self.error(&what, e))?;
            self.block_on(self.client.upsert(request))
                .map_err(|e| self.error(&what, e))?;
        }
        Ok(())
    }
}
