//! Collections of CLIP image embeddings.
//!
//! The pipeline reads top to bottom: [`store`] is the one interface every backend implements
//! ([`embedded`] — SQLite + usearch in a directory — and `milvus`, behind the `milvus` cargo
//! feature so that a program keeping only embedded stores compiles no gRPC); [`indexer`] keeps a
//! store in step with folders on disk; [`search`], [`label`], [`cluster`] and [`dedup`] are
//! queries over any store; [`export`] moves collections in and out in clip-retrieval's layout.

pub mod bench;
pub mod cluster;
pub mod dedup;
pub mod embedded;
pub mod error;
pub mod exact;
pub mod export;
pub mod filter;
pub mod filter_text;
pub mod indexer;
pub mod label;
#[cfg(feature = "milvus")]
pub mod milvus;
pub mod parquet_io;
pub mod paths;
mod rng;
pub mod search;
pub mod shard;
pub mod store;

pub use error::{IndexError, Result};
pub use filter::{Filter, Near};
pub use store::{Batch, CollectionInfo, Entry, FileRecord, Hit, LabelVector, Store, StoreAddress};

/// Opens the store at `address`. With `create`, a missing store is created for that model and
/// an existing one must have been built with it; without, the store must exist.
///
/// A Milvus address is refused with [`IndexError::FeatureNotEnabled`] when this crate was built
/// without the `milvus` feature: the address still parses, so the error can say what is missing
/// instead of calling it an unknown scheme.
pub fn open(address: &StoreAddress, create: Option<&CollectionInfo>) -> Result<Box<dyn Store>> {
    match address {
        StoreAddress::Embedded(dir) => embedded::EmbeddedStore::open(dir, create),
        #[cfg(feature = "milvus")]
        StoreAddress::Milvus {
            endpoint,
            collection,
        } => milvus::MilvusStore::open(endpoint, collection, create),
        #[cfg(not(feature = "milvus"))]
        StoreAddress::Milvus {
            endpoint,
            collection,
        } => {
            let _ = create;
            let host = endpoint.trim_start_matches("http://");
            Err(IndexError::FeatureNotEnabled {
                store: format!("milvus://{host}/{collection}"),
                feature: "milvus",
            })
        }
    }
}

#[cfg(all(test, not(feature = "milvus")))]
mod tests {
    use super::*;

    #[test]
    fn a_milvus_address_without_the_feature_names_it() {
        let address = StoreAddress::parse("milvus://db:19531/photos").unwrap();
        let error = open(&address, None).err().expect("no Milvus in this build");
        assert!(
            matches!(&error, IndexError::FeatureNotEnabled { store, feature: "milvus" }
                if store == "milvus://db:19531/photos"),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("`milvus` cargo feature"),
            "{error}"
        );
    }
}
