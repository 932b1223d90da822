//! Reading rows: counts, filtered queries, and paging through a whole collection in
//! responses small enough for the SDK's gRPC client. Apart because the paging scheme (by
//! primary-key ranges) is the subtle part of the backend and deserves to be read alone.

use ::milvus::v2::prelude::*;
use ::milvus::v2::ConsistencyLevel;

use super::filter::stored_meta;
use super::{
    MilvusStore, HASH, ID, LATITUDE, LONGITUDE, MAX_TOPK, META, MTIME, PATH, READ_RESPONSE_BYTES,
    ROW_OVERHEAD_BYTES, SIZE,
};
use crate::paths::decode_path;
use crate::{FileRecord, Result};

impl MilvusStore {
    /// Number of rows in collection `name`.
    pub(super) fn count(&self, name: &str) -> Result<usize> {
        self.count_where(name, None)
    }

    /// Number of rows in collection `name` satisfying `condition`.
    pub(super) fn count_where(&self, name: &str, condition: Option<&str>) -> Result<usize> {
        let what = format!("counting the rows of {name}");
        let mut request = QueryRequest::builder()
            .collection_name(name)
            .output_fields(["count(*)"])
            .consistency_level(ConsistencyLevel::Strong);
        if let Some(condition) = condition {
            request = request.filter(condition);
        }
        let request = request.build().map_err(|e| self.error(&what, e))?;
        let response = self
            .block_on(self.client.query(request))
            .map_err(|e| self.error(&what, e))?;
        let rows = response
            .results()
            .rows()
            .map_err(|e| self.error(&what, e))?;
        let mut count = 0;
        for row in rows {
            count = row.get_i64("count(*)").map_err(|e| self.error(&what, e))?;
        }
        Ok(usize::try_from(count).unwrap_or(0))
    }

    /// Rows of `name` matching `filter` (at most `limit`), in no particular order.
    pub(super) fn query(
        &self,
        name: &str,
        filter: &str,
        fields: &[&str],
        limit: Option<usize>,
    ) -> Result<QueryResults> {
        let what = format!("reading collection {name}");
        let mut request = QueryRequest::builder()
            .collection_name(name)
            .filter(filter)
            .output_fields(fields.iter().copied())
            .consistency_level(ConsistencyLevel::Strong);
        if let Some(limit) = limit {
            request = request.limit(limit as i64);
        }
        let request = request.build().map_err(|e| self.error(&what, e))?;
        self.block_on(self.client.query(request))
            .map(|r| r.results().clone())
            .map_err(|e| self.error(&what, e))
    }

    /// Every row of `name`, in primary-key order, about `page` rows at a time.
    ///
    /// A plain query stops at the server's result window (16,384 rows), and the SDK's query
    /// iterator needs server features milvus-lite lacks (a collection id, ordered pages), so
    /// this pages by primary-key *ranges*: path ids are uniform hashes, so splitting the id
    /// space into `rows / page` equal ranges gives pages of about `page` rows; a range that
    /// comes back full is split in two and read again. It relies only on filters and limits,
    /// which every Milvus honours.
    pub(super) fn for_each_page(
        &self,
        name: &str,
        fields: &[&str],
        page: usize,
        visit: &mut dyn FnMut(&[ResultRow<'_>]) -> Result<()>,
    ) -> Result<()> {
        self.for_each_page_where(name, fields, page, None, visit)
    }

    /// [`for_each_page`](Self::for_each_page) over the rows that also satisfy `condition`.
    pub(super) fn for_each_page_where(
        &self,
        name: &str,
        fields: &[&str],
        page: usize,
        condition: Option<&str>,
        visit: &mut dyn FnMut(&[ResultRow<'_>]) -> Result<()>,
    ) -> Result<()> {
        let what = format!("reading collection {name}");
        let page = page.clamp(1, MAX_TOPK / 2);
        let limit = 2 * page;
        let total = self.count(name)?;
        let ranges = total.div_ceil(page).max(1) as i128;
        let start = 0i128;
        let end = i64::MAX as i128 + 1;
        // Ranges still to read, the lowest last (popped first). Negative ids are not produced
        // by clipkit but are read all the same.
        let mut todo: Vec<(i128, i128)> = (0..ranges)
            .rev()
            .map(|i| {
                let lo = start + (end - start) * i / ranges;
                let hi = start + (end - start) * (i + 1) / ranges;
                (lo, hi)
            })
            .collect();
        todo.push((i64::MIN as i128, 0));
        let mut fields: Vec<&str> = fields.to_vec();
        if !fields.contains(&ID) {
            fields.push(ID);
        }
        while let Some((lo, hi)) = todo.pop() {
            let mut conditions = Vec::new();
            if lo > i64::MIN as i128 {
                conditions.push(format!("{ID} >= {lo}"));
            }
            if hi <= i64::MAX as i128 {
                conditions.push(format!("{ID} < {hi}"));
            }
            if let Some(condition) = condition {
                conditions.push(format!("({condition})"));
            }
            let results = self.query(name, &conditions.join(" and "), &fields, Some(limit))?;
            let mut rows: Vec<(i64, ResultRow<'_>)> = Vec::new();
            for row in results.rows().map_err(|e| self.error(&what, e))? {
                let id = row.get_i64(ID).map_err(|e| self.error(&what, e))?;
                rows.push((id, row));
            }
            if rows.len() >= limit && hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                todo.push((mid, hi));
                todo.push((lo, mid));
                continue;
            }
            if rows.is_empty() {
                continue;
            }
            rows.sort_by_key(|(id, _)| *id);
            let rows: Vec<ResultRow<'_>> = rows.into_iter().map(|(_, row)| row).collect();
            visit(&rows)?;
        }
        Ok(())
    }

    /// How many rows of the image collection fit in one read response.
    pub(super) fn rows_per_response(&self, with_vectors: bool) -> usize {
        let row = ROW_OVERHEAD_BYTES + if with_vectors { self.info.dim * 4 } else { 0 };
        (READ_RESPONSE_BYTES / 2 / row).max(1)
    }

    /// An `id in [...]` filter.
    pub(super) fn ids_filter(ids: &[i64]) -> String {
        let list: Vec<String> = ids.iter().map(i64::to_string).collect();
        format!("{ID} in [{}]", list.join(","))
    }

    /// The fields [`row_to_record`](Self::row_to_record) reads: the record's own, and its
    /// metadata where the collection has it.
    pub(super) fn record_fields(&self) -> Vec<&'static str> {
        let mut fields = vec![ID, PATH, SIZE, MTIME, HASH];
        if self.has_filter_fields {
            fields.extend([META, LATITUDE, LONGITUDE]);
        }
        fields
    }

    pub(super) fn row_to_record(&self, row: &ResultRow<'_>) -> Result<FileRecord> {
        let bad = |e: ::milvus::v2::error::Error| self.error("decoding a row", e);
        let meta = if self.has_filter_fields {
            stored_meta(row).map_err(|e| bad(*e))?
        } else {
            Default::default()
        };
        Ok(FileRecord {
            path: decode_path(row.get_str(PATH).map_err(bad)?),
            size: u64::try_from(row.get_i64(SIZE).map_err(bad)?).unwrap_or(0),
            mtime_ns: row.get_i64(MTIME).map_err(bad)?,
            hash: row.get_str(HASH).map_err(bad)?.to_owned(),
            meta,
        })
    }
}
