//! Label sets: each lives in a small collection of its own next to the image collection,
//! named after the set, and is written and read whole. Apart because it has its own schema
//! and naming rules and shares nothing with the image rows but the vector field.

use std::collections::HashMap;

use ::milvus::v2::prelude::*;
use ::milvus::v2::DataType;

use super::{MilvusStore, READ_RESPONSE_BYTES, ROW_OVERHEAD_BYTES, VECTOR, WRITE_REQUEST_BYTES};
use crate::{LabelVector, Result};

const LABEL_ORDER: &str = "idx";
const LABEL_TEXT: &str = "label";
const PROP_LABEL_SET: &str = "clipkit.label_set";
const MAX_LABEL_BYTES: usize = 16_384;

impl MilvusStore {
    pub(super) fn label_collection(&self, set: &str) -> String {
        label_collection_name(&self.collection, set)
    }

    /// [`crate::Store::put_labels`]: replaces label set `set` with `labels`.
    pub(super) fn write_label_set(&mut self, set: &str, labels: &[LabelVector]) -> Result<()> {
        for label in labels {
            self.check_dim(label.vector.len())?;
            if label.label.len() > MAX_LABEL_BYTES {
                return Err(self.error(
                    "storing labels",
                    format!(
                        "label `{}…` is longer than {MAX_LABEL_BYTES} bytes",
                        label.label.chars().take(40).collect::<String>()
                    ),
                ));
            }
        }
        let name = self.label_collection(set);
        // Replacing is drop-and-recreate: a label set is small and written whole, and a
        // fresh collection cannot keep rows of the previous version.
        if self.has_collection(&name)? {
            self.drop_collection(&name)?;
        }
        let schema = CollectionSchema::new()
            .description(format!("clipkit label set `{set}` of {}", self.collection))
            .enable_dynamic_field(false)
            .add_field(
                FieldSchema::new()
                    .name(LABEL_ORDER)
                    .description("position of the label in the set")
                    .data_type(DataType::Int64)
                    .primary_key(true)
                    .auto_id(false),
            )
            .add_field(
                FieldSchema::new()
                    .name(LABEL_TEXT)
                    .data_type(DataType::VarChar)
                    .max_length(MAX_LABEL_BYTES as u32),
            )
            .add_field(
                FieldSchema::new()
                    .name(VECTOR)
                    .data_type(DataType::FloatVector)
                    .dimension(self.info.dim as u32),
            );
        let properties = HashMap::from([(PROP_LABEL_SET.to_owned(), set.to_owned())]);
        self.create_collection(&name, schema, properties)?;
        // Label sets are small and searched exhaustively anyway.
        self.ensure_index(&name, IndexType::Flat)?;
        let rows_per_request = (WRITE_REQUEST_BYTES / (self.info.dim * 4 + 256)).clamp(1, 10_000);
        for (n, chunk) in labels.chunks(rows_per_request).enumerate() {
            let first = (n * rows_per_request) as i64;
            let columns = vec![
                FieldData::int64(
                    LABEL_ORDER,
                    (0..chunk.len() as i64).map(|i| first + i).collect(),
                ),
                FieldData::varchar(LABEL_TEXT, chunk.iter().map(|l| l.label.clone()).collect()),
                FieldData::float_vector(VECTOR, chunk.iter().map(|l| l.vector.clone()).collect()),
            ];
            let what = format!("storing label set `{set}`");
            let request = InsertRequest::builder()
                .collection_name(&name)
                .columns(columns)
                .build()
                .map_err(|e| self.error(&what, e))?;
            self.block_on(self.client.insert(request))
                .map_err(|e| self.error(&what, e))?;
        }
        self.load(&name)
    }

    /// [`crate::Store::labels`]: label set `set` in its stored order, `None` when there is none.
    pub(super) fn read_label_set(&self, set: &str) -> Result<Option<Vec<LabelVector>>> {
        let name = self.label_collection(set);
        if !self.has_collection(&name)? {
            return Ok(None);
        }
        let stored = self
            .describe(&name)?
            .get_properties()
            .get(PROP_LABEL_SET)
            .cloned();
        if stored.as_deref() != Some(set) {
            return Err(self.error(
                &format!("reading label set `{set}`"),
                format!(
                    "collection {name} holds label set {:?}, not `{set}`",
                    stored.unwrap_or_default()
                ),
            ));
        }
        self.load(&name)?;
        let what = format!("reading label set `{set}`");
        let mut labels: Vec<(i64, LabelVector)> = Vec::new();
        // Label positions are dense (0..n), so plain position ranges make the pages.
        let page = (READ_RESPONSE_BYTES / 2 / (ROW_OVERHEAD_BYTES + self.info.dim * 4)).max(1);
        let total = self.count(&name)?;
        for first in (0..total).step_by(page) {
            let filter = format!(
                "{LABEL_ORDER} >= {first} and {LABEL_ORDER} < {}",
                first + page
            );
            let results = self.query(
                &name,
                &filter,
                &[LABEL_ORDER, LABEL_TEXT, VECTOR],
                Some(page),
            )?;
            for row in results.rows().map_err(|e| self.error(&what, e))? {
                let order = row.get_i64(LABEL_ORDER).map_err(|e| self.error(&what, e))?;
                let label = row.get_str(LABEL_TEXT).map_err(|e| self.error(&what, e))?;
                let vector = row
                    .get_float_vector(VECTOR)
                    .map_err(|e| self.error(&what, e))?;
                labels.push((
                    order,
                    LabelVector {
                        label: label.to_owned(),
                        vector: vector.to_vec(),
                    },
                ));
            }
        }
        if labels.len() != total {
            return Err(self.error(&what, format!("read {} labels of {total}", labels.len())));
        }
        labels.sort_by_key(|(order, _)| *order);
        Ok(Some(labels.into_iter().map(|(_, l)| l).collect()))
    }
}

/// The collection of a label set. Set names are free text but collection names are letters,
/// digits and underscores, so other characters become `_` and a hash of the real name is
/// appended whenever that changed anything (`a-b` and `a_b` must not share a collection).
pub fn label_collection_name(collection: &str, set: &str) -> String {
    const MAX_SET_CHARS: usize = 64;
    let sanitized: String = set
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(MAX_SET_CHARS)
        .collect();
    // A name kept as is has no `_`, and a changed one always ends in `_` and a hash, so the
    // two kinds can never produce the same collection name.
    let unchanged = !set.is_empty() && sanitized == set && !set.contains('_');
    if unchanged {
        format!("{collection}_labels_{sanitized}")
    } else {
        let hash = blake3::hash(set.as_bytes()).to_hex();
        format!("{collection}_labels_{sanitized}_{}", &hash[..12])
    }
}
