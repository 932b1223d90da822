//! Collections of CLIP image embeddings.
//!
//! The pipeline reads top to bottom: [`store`] is the one interface every backend implements
//! ([`embedded`] — SQLite + usearch in a directory — and [`milvus`]); [`indexer`] keeps a
//! store in step with folders on disk; [`search`], [`label`], [`cluster`] and [`dedup`] are
//! queries over any store; [`export`] moves collections in and out in clip-retrieval's layout.

pub mod cluster;
pub mod dedup;
pub mod embedded;
pub mod error;
pub mod exact;
pub mod export;
pub mod indexer;
pub mod label;
pub mod milvus;
pub mod parquet_io;
pub mod paths;
mod rng;
pub mod search;
pub mod store;

pub use error::{IndexError, Result};
pub use store::{Batch, CollectionInfo, Entry, FileRecord, Hit, LabelVector, Store, StoreAddress};

/// Opens the store at `address`. With `create`, a missing store is created for that model and
/// an existing one must have been built with it; without, the store must exist.
pub fn open(address: &StoreAddress, create: Option<&CollectionInfo>) -> Result<Box<dyn Store>> {
    match address {
        StoreAddress::Embedded(dir) => embedded::EmbeddedStore::open(dir, create),
        StoreAddress::Milvus {
            endpoint,
            collection,
        } => milvus::MilvusStore::open(endpoint, collection, create),
    }
}
