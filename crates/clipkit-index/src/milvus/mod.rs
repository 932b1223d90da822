//! Milvus backend: a collection on a Milvus server (standalone, distributed, or milvus-lite)
//! reached over its gRPC API.
//!
//! One Milvus collection holds the image entries, keyed by
//! [`paths::path_id`](crate::paths::path_id) so that an upsert of the same path replaces the
//! row instead of adding one — that is what makes [`Batch`](crate::Batch)es idempotent on a
//! server without transactions. The collection's
//! [`CollectionInfo`] and the indexed roots live in the collection's own properties, so they
//! are created, read and dropped together with the data. Each label set is a separate small
//! collection next to it.
//!
//! The [`Store`] trait is synchronous while the SDK is async, so the store owns a one-worker
//! tokio runtime and blocks on it. A caller already inside a tokio runtime must therefore use
//! the store from a blocking context (`spawn_blocking`), as with any blocking I/O.
//!
//! The backend is split by job: this file connects and opens the store and holds the field
//! names and limits every part shares; `collection` manages collections (schema, vector
//! index, loading, properties); `reads` pages rows out of a collection; `store` implements
//! [`Store`] on top of those; `labels` keeps label sets in their own collections; and
//! `errors` classifies the SDK's errors.

mod collection;
mod errors;
mod filter;
mod filtered;
mod labels;
mod migrate;
mod reads;
mod store;

use std::future::Future;
use std::time::Duration;

use ::milvus::v2::prelude::*;
use clipkit_image::PreprocessMode;

use crate::Store;
use crate::{CollectionInfo, IndexError, Result};

use collection::check_compatible;
use errors::is_unreachable;
pub use labels::label_collection_name;

const ID: &str = "id";
const PATH: &str = "path";
const SIZE: &str = "size";
const MTIME: &str = "mtime_ns";
const HASH: &str = "hash";
const VECTOR: &str = "vector";
/// The scalar fields the filters read (see [`filter`]): the capture time as
/// [`FileRecord::taken`](crate::FileRecord::taken) computes it, the GPS position
/// ([`filter::NO_POSITION`] when unknown), the camera in lower case, the canonical file type,
/// and the whole [`PhotoMetadata`](clipkit_image::PhotoMetadata) as JSON so reads give it back.
const TAKEN: &str = "taken";
const LATITUDE: &str = "latitude";
const LONGITUDE: &str = "longitude";
const CAMERA: &str = "camera";
const FILE_TYPE: &str = "file_type";
const META: &str = "meta";
/// The filter fields, all present in a collection made since they exist and all absent in an
/// older one (which [`MilvusStore::open`] migrates when it opens it for writing).
const FILTER_FIELDS: [&str; 6] = [TAKEN, LATITUDE, LONGITUDE, CAMERA, FILE_TYPE, META];

const PROP_MODEL: &str = "clipkit.model";
/// The model family (`CLIP`, `SigLIP`, …); absent in collections made before it was recorded.
const PROP_FAMILY: &str = "clipkit.family";
const PROP_PREPROCESS: &str = "clipkit.preprocess";
const PROP_ROOTS: &str = "clipkit.roots";

/// Longest encoded path a row can hold, in bytes. PATH_MAX is 4096 bytes on Linux, and a
/// non-UTF-8 path is stored hex-escaped (two characters per byte), so this leaves room for
/// every path the OS can produce; Milvus allows VARCHARs up to 65,535 bytes.
pub const MAX_PATH_BYTES: usize = 16_384;
const MAX_HASH_BYTES: usize = 64;

/// Milvus refuses more than this many results per query (`topk`) and per query page.
pub const MAX_TOPK: usize = 16_384;

/// Search-time candidate list. Well above any `k` the CLI asks for by default, so recall is
/// effectively exact on small and medium collections while a query stays in the milliseconds.
const HNSW_EF_SEARCH: usize = 256;

/// Rows are written in requests of at most about this many bytes, well under the server's
/// message limit (64 MiB on Milvus, 256 MiB on milvus-lite).
const WRITE_REQUEST_BYTES: usize = 8 << 20;
/// Reads are sized so that a response stays under about this many bytes even when a page
/// comes back twice as full as planned: the SDK's gRPC client refuses messages over 4 MiB.
const READ_RESPONSE_BYTES: usize = 3 << 19;
/// What one row may take in a response besides its vector (id, a path, the other fields),
/// generously: paths are usually far shorter.
const ROW_OVERHEAD_BYTES: usize = 512;
/// Primary keys per `id in [...]` filter: keeps the expression short.
const IDS_PER_REQUEST: usize = 4_096;
/// Query vectors per search request at most.
const QUERIES_PER_REQUEST: usize = 256;

/// How long to wait for the server to finish building an index or loading a collection.
const READY_TIMEOUT: Duration = Duration::from_secs(600);

pub struct MilvusStore {
    client: ClientV2,
    /// Always `Some` until dropped (see the `Drop` impl).
    runtime: Option<tokio::runtime::Runtime>,
    /// `http://HOST:PORT`, as parsed from the address.
    endpoint: String,
    collection: String,
    info: CollectionInfo,
    /// Whether the collection has the [`FILTER_FIELDS`]: false only for a collection made
    /// before them and opened read-only, which is then filtered on the client.
    has_filter_fields: bool,
}

impl MilvusStore {
    /// Connects to `endpoint` and opens `collection`. With `create`, a missing collection is
    /// created for that model and an existing one must have been built with it; without, the
    /// collection must exist.
    pub fn open(
        endpoint: &str,
        collection: &str,
        create: Option<&CollectionInfo>,
    ) -> Result<Box<dyn Store>> {
        let address = display_address(endpoint, collection);
        let fail = |what: &str, e: &dyn std::fmt::Display| IndexError::Milvus {
            uri: address.clone(),
            message: format!("{what}: {e}"),
            transient: false,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("clipkit-milvus")
            .enable_all()
            .build()
            .map_err(|e| fail("starting the I/O runtime", &e))?;
        let client = runtime
            .block_on(connect(endpoint))
            .map_err(|e| IndexError::Milvus {
                uri: address.clone(),
                message: format!("connecting: {e}"),
                transient: is_unreachable(&e),
            })?;
        let mut store = MilvusStore {
            client,
            runtime: Some(runtime),
            endpoint: endpoint.to_owned(),
            collection: collection.to_owned(),
            info: CollectionInfo {
                model: String::new(),
                dim: 0,
                preprocess: PreprocessMode::default(),
                family: None,
            },
            has_filter_fields: true,
        };
        // A migration killed between its two renames leaves the collection under a
        // temporary name; finish it before looking.
        store.finish_interrupted_migration()?;
        let mut exists = store.has_collection(collection)?;
        if !exists {
            let Some(wanted) = create else {
                return Err(IndexError::NotFound { store: address });
            };
            if wanted.dim == 0 {
                return Err(fail(
                    "creating",
                    &"vectors of 0 dimensions cannot be stored",
                ));
            }
            store.info = wanted.clone();
            if let Err(e) = store.create_image_collection() {
                // Several workers starting at once race to create it: whoever loses opens
                // the winner's collection (and checks it like any existing one), once the
                // server shows it.
                let started = std::time::Instant::now();
                while !store.has_collection(collection)? {
                    if started.elapsed() > Duration::from_secs(30) {
                        return Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                exists = true;
            }
        }
        if exists {
            let stored = store.read_info()?;
            if let Some(wanted) = create {
                check_compatible(&address, &stored, wanted)?;
            }
            store.info = stored;
            store.has_filter_fields = store.schema_has_filter_fields(collection)?;
            if !store.has_filter_fields && create.is_some() {
                // Opened to write: bring the collection to the current schema first, so
                // that what is written from now on carries the filter fields.
                store.migrate()?;
                store.has_filter_fields = true;
            }
            store.ensure_index(collection, IndexType::Hnsw)?;
        }
        store.load(collection)?;
        Ok(Box::new(store))
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the store")
            .block_on(future)
    }

    /// A failed call, as an error naming the store. Only the SDK's own errors can say that
    /// the server was unreachable; any other cause (a bad row, our own checks) is not transient.
    fn error(&self, what: &str, e: impl std::fmt::Display + 'static) -> IndexError {
        let sdk = (&e as &dyn std::any::Any).downcast_ref::<::milvus::v2::error::Error>();
        IndexError::Milvus {
            uri: self.address(),
            message: format!("{what}: {e}"),
            transient: sdk.is_some_and(is_unreachable),
        }
    }

    /// A search answers one result list per query; anything else is a server fault.
    fn check_result_lists(&self, what: &str, lists: usize, queries: usize) -> Result<()> {
        if lists == queries {
            return Ok(());
        }
        Err(self.error(
            what,
            format!("the server answered {lists} result lists for {queries} queries"),
        ))
    }

    fn check_dim(&self, got: usize) -> Result<()> {
        if got != self.info.dim {
            return Err(IndexError::WrongVectorDimension {
                store: self.address(),
                expected: self.info.dim,
                got,
            });
        }
        Ok(())
    }
}

impl Drop for MilvusStore {
    /// Dropping a runtime normally waits for its worker, which panics when the store is
    /// dropped inside async code (a server holding the store in its state); nothing is in
    /// flight between calls, so the worker can simply be let go.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// `milvus://HOST:PORT/COLLECTION`, the form the user typed (see
/// [`crate::StoreAddress::parse`]).
fn display_address(endpoint: &str, collection: &str) -> String {
    let host = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint);
    format!("milvus://{host}/{collection}")
}

async fn connect(endpoint: &str) -> ::milvus::v2::error::Result<ClientV2> {
    let mut config = ConnectConfig::new()
        .uri(endpoint)
        .connect_timeout(Duration::from_secs(10))
        // Retries ride out a server that is briefly busy, but a server that is gone must
        // fail the command within a minute rather than after the SDK's 75 attempts.
        .retry(RetryConfig::new().max_retry_timeout(Duration::from_secs(60)))
        // A CLI process lives for seconds; nothing to report to the server.
        .telemetry(TelemetryConfig::new().enabled(false));
    if let Ok(token) = std::env::var("CLIPKIT_MILVUS_TOKEN") {
        config = config.token(token);
    }
    ClientV2::new(&config).await
}
