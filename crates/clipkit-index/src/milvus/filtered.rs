//! Filtered search on Milvus: the server searches among the rows the filter's expression
//! admits (see [`super::filter`]), the client keeps the candidates [`Filter::matches`] admits,
//! and asks again for more candidates while a query has fewer than `k` matches and the server
//! had more to give. Where even the largest candidate list is not enough (a filter the
//! expression says only loosely, on a huge collection), the rows the expression admits are
//! read and searched exactly; so is a collection made before the filter fields existed.

use std::collections::HashMap;

use ::milvus::v2::prelude::*;
use ::milvus::v2::ConsistencyLevel;

use super::filter::{expression, stored_meta};
use super::{
    MilvusStore, HNSW_EF_SEARCH, LATITUDE, LONGITUDE, MAX_TOPK, META, MTIME, PATH,
    QUERIES_PER_REQUEST, READ_RESPONSE_BYTES, ROW_OVERHEAD_BYTES, SIZE, VECTOR,
};
use crate::filter::Filter;
use crate::paths::decode_path;
use crate::{FileRecord, Hit, Result};

/// How much larger each retry's candidate list is.
const GROWTH: usize = 4;
/// At most this many rows admitted by the expression: search them exactly.
const EXACT_BELOW: usize = 2048;

impl MilvusStore {
    pub(super) fn search_filtered(
        &self,
        queries: &[Vec<f32>],
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<Vec<Hit>>> {
        let mut results: Vec<Vec<Hit>> = vec![Vec::new(); queries.len()];
        if k == 0 || queries.is_empty() {
            return Ok(results);
        }
        let all: Vec<usize> = (0..queries.len()).collect();
        if !self.has_filter_fields {
            self.exact_filtered(queries, &all, k, filter, None, &mut results)?;
            return Ok(results);
        }
        let condition = expression(filter);
        // Selective filters are answered exactly from the few rows they admit: cheaper than a
        // graph search that must skip most of the graph, and never short of results.
        let admitted = self.count_where(&self.collection, condition.as_deref())?;
        if admitted <= EXACT_BELOW.max(GROWTH * k) {
            self.exact_filtered(queries, &all, k, filter, condition.as_deref(), &mut results)?;
            return Ok(results);
        }
        // The largest candidate list one response can carry.
        let cap = (READ_RESPONSE_BYTES / ROW_OVERHEAD_BYTES)
            .max(k)
            .min(MAX_TOPK);
        let mut pending = all;
        let mut limit = k.min(cap);
        loop {
            let block: Vec<Vec<f32>> = pending.iter().map(|&i| queries[i].clone()).collect();
            let answers = self.candidates(&block, limit, condition.as_deref())?;
            let mut short = Vec::new();
            for (&i, candidates) in pending.iter().zip(answers) {
                // More rows pass the expression than were asked for, so a short list means
                // the graph search gave up early (approximate search), not that there are no
                // more: only a full list that the check thinned is retried larger.
                let exhausted = admitted <= candidates.len();
                let hits: Vec<Hit> = candidates
                    .into_iter()
                    .filter(|(file, _)| filter.matches(file))
                    .take(k)
                    .map(|(file, score)| Hit {
                        path: file.path,
                        score,
                    })
                    .collect();
                if hits.len() >= k || exhausted {
                    results[i] = hits;
                } else {
                    short.push(i);
                }
            }
            pending = short;
            if pending.is_empty() {
                break;
            }
            if limit >= cap {
                self.exact_filtered(
                    queries,
                    &pending,
                    k,
                    filter,
                    condition.as_deref(),
                    &mut results,
                )?;
                break;
            }
            limit = (limit * GROWTH).min(cap);
        }
        Ok(results)
    }

    /// The best `limit` rows satisfying `condition` for each query, best first, with what
    /// [`Filter::matches`] reads (not the content hash).
    fn candidates(
        &self,
        queries: &[Vec<f32>],
        limit: usize,
        condition: Option<&str>,
    ) -> Result<Vec<Vec<(FileRecord, f32)>>> {
        let what = "searching with a filter";
        let per_request =
            (READ_RESPONSE_BYTES / (limit * ROW_OVERHEAD_BYTES)).clamp(1, QUERIES_PER_REQUEST);
        let mut all = Vec::with_capacity(queries.len());
        for block in queries.chunks(per_request) {
            let mut request = SearchRequest::builder()
                .collection_name(&self.collection)
                .vector_field(VECTOR)
                .vectors(SearchVectors::Float(block.to_vec()))
                .metric_type(MetricType::Ip)
                .extra_params(HashMap::from([(
                    "ef".to_owned(),
                    limit.max(HNSW_EF_SEARCH).to_string(),
                )]))
                .output_fields([PATH, SIZE, MTIME, META, LATITUDE, LONGITUDE])
                .limit(limit as i64)
                .consistency_level(ConsistencyLevel::Strong);
            if let Some(condition) = condition {
                request = request.filter(condition);
            }
            let request = request.build().map_err(|e| self.error(what, e))?;
            let response = self
                .block_on(self.client.search(request))
                .map_err(|e| self.error(what, e))?;
            let results = response.results();
            self.check_result_lists(what, results.len(), block.len())?;
            for result in results.iter() {
                let scores = result.get_scores();
                let rows = result.rows().map_err(|e| self.error(what, e))?;
                let mut found = Vec::with_capacity(scores.len());
                for (row, &score) in rows.zip(scores) {
                    let bad = |e| self.error(what, e);
                    let file = FileRecord {
                        path: decode_path(row.get_str(PATH).map_err(bad)?),
                        size: u64::try_from(row.get_i64(SIZE).map_err(bad)?).unwrap_or(0),
                        mtime_ns: row.get_i64(MTIME).map_err(bad)?,
                        hash: String::new(),
                        meta: stored_meta(&row).map_err(|e| bad(*e))?,
                    };
                    found.push((file, score));
                }
                found.sort_by(|a, b| b.1.total_cmp(&a.1));
                all.push(found);
            }
        }
        Ok(all)
    }

    /// Exact filtered search for the queries `which`: every row satisfying `condition` is
    /// read, checked with [`Filter::matches`] and scored against each query.
    fn exact_filtered(
        &self,
        queries: &[Vec<f32>],
        which: &[usize],
        k: usize,
        filter: &Filter,
        condition: Option<&str>,
        results: &mut [Vec<Hit>],
    ) -> Result<()> {
        let mut best: Vec<Vec<Hit>> = vec![Vec::new(); which.len()];
        let mut fields = self.record_fields();
        fields.push(VECTOR);
        let keep = |hits: &mut Vec<Hit>| {
            hits.sort_by(|a, b| {
                b.score
                    .total_cmp(&a.score)
                    .then_with(|| a.path.cmp(&b.path))
            });
            hits.truncate(k);
        };
        self.for_each_page_where(
            &self.collection,
            &fields,
            self.rows_per_response(true),
            condition,
            &mut |rows| {
                for row in rows {
                    let file = self.row_to_record(row)?;
                    if !filter.matches(&file) {
                        continue;
                    }
                    let vector = row
                        .get_float_vector(VECTOR)
                        .map_err(|e| self.error("decoding a row", e))?;
                    for (hits, &q) in best.iter_mut().zip(which) {
                        let score = vector.iter().zip(&queries[q]).map(|(a, b)| a * b).sum();
                        hits.push(Hit {
                            path: file.path.clone(),
                            score,
                        });
                        if hits.len() >= 2 * k.max(64) {
                            keep(hits);
                        }
                    }
                }
                Ok(())
            },
        )?;
        for (mut hits, &q) in best.into_iter().zip(which) {
            keep(&mut hits);
            results[q] = hits;
        }
        Ok(())
    }
}
