//! Embedded store (in progress in main; being written now).

use std::path::Path;

use crate::{CollectionInfo, IndexError, Result};

pub struct EmbeddedStore;

impl EmbeddedStore {
    pub fn open(dir: &Path, _create: Option<&CollectionInfo>) -> Result<Box<dyn crate::Store>> {
        Err(IndexError::NotFound {
            store: dir.display().to_string(),
        })
    }
}
