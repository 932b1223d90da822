//! Bringing a collection made before the filter fields to the current schema.
//!
//! Neither milvus-lite nor older Milvus servers can add fields to a collection, so the rows are
//! copied into a new collection (`NAME__clipkit_new`) with the current schema, and the two
//! are swapped by renames: `NAME` → `NAME__clipkit_old`, `NAME__clipkit_new` → `NAME`, then
//! the old one is dropped. Nothing is lost wherever the process is killed:
//!
//! - during the copy, `NAME` is untouched; the next open drops the partial copy and starts
//!   again (a copy is cheap next to the embeddings it preserves);
//! - between the renames, `NAME` is missing while both others exist, and the copy is known to
//!   be complete (it was checked before the first rename): the next open finishes the swap
//!   ([`MilvusStore::finish_interrupted_migration`]);
//! - after the swap, a leftover `NAME__clipkit_old` is dropped.
//!
//! Rows are copied with empty metadata, so their capture time is their modification time
//! until the indexer writes them again.

use std::collections::HashMap;

use super::{MilvusStore, VECTOR};
use crate::{Entry, Result};

const NEW_SUFFIX: &str = "__clipkit_new";
const OLD_SUFFIX: &str = "__clipkit_old";

impl MilvusStore {
    fn migration_names(&self) -> (String, String) {
        (
            format!("{}{NEW_SUFFIX}", self.collection),
            format!("{}{OLD_SUFFIX}", self.collection),
        )
    }

    /// Completes a swap that a killed migration left half done, and drops what a finished
    /// one left behind.
    pub(super) fn finish_interrupted_migration(&self) -> Result<()> {
        let (new, old) = self.migration_names();
        if !self.has_collection(&self.collection)? {
            if self.has_collection(&new)? && self.has_collection(&old)? {
                self.rename_collection(&new, &self.collection)?;
                self.drop_collection(&old)?;
            }
            return Ok(());
        }
        if self.has_collection(&old)? {
            self.drop_collection(&old)?;
        }
        Ok(())
    }

    /// Copies the collection into one of the current schema and swaps them (see the module
    /// documentation). Called on a collection without the filter fields, opened to write.
    pub(super) fn migrate(&mut self) -> Result<()> {
        let (new, old) = self.migration_names();
        if self.has_collection(&new)? {
            self.drop_collection(&new)?;
        }
        let properties: HashMap<String, String> = self.properties()?;
        self.create_image_collection_named(&new, properties)?;
        self.load(&new)?;

        let mut fields = self.record_fields();
        fields.push(VECTOR);
        let mut copied = 0usize;
        self.for_each_page(
            &self.collection,
            &fields,
            self.rows_per_response(true),
            &mut |rows| {
                let mut entries = Vec::with_capacity(rows.len());
                for row in rows {
                    let file = self.row_to_record(row)?;
                    let vector = row
                        .get_float_vector(VECTOR)
                        .map_err(|e| self.error("decoding a row", e))?
                        .to_vec();
                    entries.push(Entry { file, vector });
                }
                let refs: Vec<&Entry> = entries.iter().collect();
                self.write_entries(&new, &refs, true)?;
                copied += entries.len();
                Ok(())
            },
        )?;
        let (before, after) = (self.count(&self.collection)?, self.count(&new)?);
        if after != before || copied != before {
            return Err(self.error(
                "adding the filter fields",
                format!(
                    "the copy {new} holds {after} rows ({copied} copied), the collection {before}; \
                     it is left as it was"
                ),
            ));
        }
        self.rename_collection(&self.collection, &old)?;
        self.rename_collection(&new, &self.collection)?;
        self.drop_collection(&old)?;
        self.has_filter_fields = true;
        Ok(())
    }
}
