//! Milvus backend: a collection on a Milvus server (standalone, distributed, or milvus-lite)
//! reached over its gRPC API.
//!
//! One Milvus collection holds the image entries, keyed by [`paths::path_id`] so that an
//! upsert of the same path replaces the row instead of adding one — that is what makes
//! [`Batch`]es idempotent on a server without transactions. The collection's
//! [`CollectionInfo`] and the indexed roots live in the collection's own properties, so they
//! are created, read and dropped together with the data. Each label set is a separate small
//! collection next to it.
//!
//! The [`Store`] trait is synchronous while the SDK is async, so the store owns a one-worker
//! tokio runtime and blocks on it. A caller already inside a tokio runtime must therefore use
//! the store from a blocking context (`spawn_blocking`), as with any blocking I/O.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ::milvus::v2::prelude::*;
use ::milvus::v2::{ConsistencyLevel, DataType};
use clipkit_image::PreprocessMode;

use crate::paths::{decode_path, encode_path, path_id};
use crate::Store;
use crate::{Batch, CollectionInfo, Entry, FileRecord, Hit, IndexError, LabelVector, Result};

const ID: &str = "id";
const PATH: &str = "path";
const SIZE: &str = "size";
const MTIME: &str = "mtime_ns";
const HASH: &str = "hash";
const VECTOR: &str = "vector";

const LABEL_ORDER: &str = "idx";
const LABEL_TEXT: &str = "label";

const PROP_MODEL: &str = "clipkit.model";
const PROP_PREPROCESS: &str = "clipkit.preprocess";
const PROP_ROOTS: &str = "clipkit.roots";
const PROP_LABEL_SET: &str = "clipkit.label_set";

/// Longest encoded path a row can hold, in bytes. PATH_MAX is 4096 bytes on Linux, and a
/// non-UTF-8 path is stored hex-escaped (two characters per byte), so this leaves room for
/// every path the OS can produce; Milvus allows VARCHARs up to 65,535 bytes.
pub const MAX_PATH_BYTES: usize = 16_384;
const MAX_HASH_BYTES: usize = 64;
const MAX_LABEL_BYTES: usize = 16_384;

/// Milvus refuses more than this many results per query (`topk`) and per query page.
pub const MAX_TOPK: usize = 16_384;

/// HNSW build parameters: the usual defaults for embeddings of a few hundred dimensions.
const HNSW_M: &str = "16";
const HNSW_EF_CONSTRUCTION: &str = "200";
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
            },
        };
        let exists = store.has_collection(collection)?;
        if exists {
            let stored = store.read_info()?;
            if let Some(wanted) = create {
                check_compatible(&address, &stored, wanted)?;
            }
            store.info = stored;
            store.ensure_index(collection, IndexType::Hnsw)?;
        } else {
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
            store.create_image_collection()?;
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

    fn has_collection(&self, name: &str) -> Result<bool> {
        let request = HasCollectionRequest::builder()
            .collection_name(name)
            .build()
            .map_err(|e| self.error("checking for the collection", e))?;
        self.block_on(self.client.has_collection(request))
            .map(|r| r.exists())
            .map_err(|e| self.error(&format!("checking for collection {name}"), e))
    }

    fn describe(&self, name: &str) -> Result<CollectionDesc> {
        let request = DescribeCollectionRequest::builder()
            .collection_name(name)
            .build()
            .map_err(|e| self.error("describing the collection", e))?;
        self.block_on(self.client.describe_collection(request))
            .map(|r| r.description().clone())
            .map_err(|e| self.error(&format!("describing collection {name}"), e))
    }

    /// The model and preprocessing come from the collection's properties; the dimension from
    /// its schema, which is what the server actually enforces.
    fn read_info(&self) -> Result<CollectionInfo> {
        let desc = self.describe(&self.collection)?;
        let props = desc.get_properties();
        let not_ours = |missing: &str| {
            self.error(
                "opening",
                format!(
                    "collection {} exists but was not created by clipkit (it has no {missing})",
                    self.collection
                ),
            )
        };
        let model = props
            .get(PROP_MODEL)
            .ok_or_else(|| not_ours(&format!("{PROP_MODEL} property")))?
            .clone();
        let preprocess = props
            .get(PROP_PREPROCESS)
            .ok_or_else(|| not_ours(&format!("{PROP_PREPROCESS} property")))?
            .parse::<PreprocessMode>()
            .map_err(|e| self.error("opening", format!("{PROP_PREPROCESS} property: {e}")))?;
        let dim = desc
            .get_schema()
            .get_fields()
            .iter()
            .find(|f| f.get_name() == VECTOR && f.get_data_type() == DataType::FloatVector)
            .map(|f| f.get_dimension() as usize)
            .ok_or_else(|| not_ours("float vector field `vector`"))?;
        Ok(CollectionInfo {
            model,
            dim,
            preprocess,
        })
    }

    fn create_image_collection(&self) -> Result<()> {
        let schema = CollectionSchema::new()
            .description(format!(
                "clipkit image embeddings ({}, {} preprocessing)",
                self.info.model, self.info.preprocess
            ))
            .enable_dynamic_field(false)
            .add_field(
                FieldSchema::new()
                    .name(ID)
                    .description("paths::path_id of the path")
                    .data_type(DataType::Int64)
                    .primary_key(true)
                    .auto_id(false),
            )
            .add_field(
                FieldSchema::new()
                    .name(PATH)
                    .description("the path, hex-escaped when not UTF-8")
                    .data_type(DataType::VarChar)
                    .max_length(MAX_PATH_BYTES as u32),
            )
            .add_field(FieldSchema::new().name(SIZE).data_type(DataType::Int64))
            .add_field(FieldSchema::new().name(MTIME).data_type(DataType::Int64))
            .add_field(
                FieldSchema::new()
                    .name(HASH)
                    .data_type(DataType::VarChar)
                    .max_length(MAX_HASH_BYTES as u32),
            )
            .add_field(
                FieldSchema::new()
                    .name(VECTOR)
                    .data_type(DataType::FloatVector)
                    .dimension(self.info.dim as u32),
            );
        let properties = HashMap::from([
            (PROP_MODEL.to_owned(), self.info.model.clone()),
            (PROP_PREPROCESS.to_owned(), self.info.preprocess.to_string()),
            (PROP_ROOTS.to_owned(), "[]".to_owned()),
        ]);
        self.create_collection(&self.collection, schema, properties)?;
        self.ensure_index(&self.collection, IndexType::Hnsw)
    }

    fn create_collection(
        &self,
        name: &str,
        schema: CollectionSchema,
        properties: HashMap<String, String>,
    ) -> Result<()> {
        let request = CreateCollectionRequest::builder()
            .collection_name(name)
            .schema(schema)
            // Reads right after a write (the indexer's next step, `index status`) must see
            // it; the default (Bounded) may hide the last second of writes.
            .consistency_level(ConsistencyLevel::Strong)
            .properties(properties)
            .build()
            .map_err(|e| self.error("creating the collection", e))?;
        self.block_on(self.client.create_collection(request))
            .map_err(|e| self.error(&format!("creating collection {name}"), e))
    }

    /// Creates the vector index unless there is one already (a run killed between creating
    /// the collection and its index leaves a collection that cannot be loaded), then waits
    /// for it. The index is created asynchronously and polled, because the SDK's synchronous
    /// wait needs the AllocTimestamp RPC, which milvus-lite does not implement.
    fn ensure_index(&self, name: &str, index_type: IndexType) -> Result<()> {
        if self.vector_index_state(name)?.is_none() {
            let mut params = HashMap::new();
            if index_type == IndexType::Hnsw {
                params.insert("M".to_owned(), HNSW_M.to_owned());
                params.insert("efConstruction".to_owned(), HNSW_EF_CONSTRUCTION.to_owned());
            }
            let request = CreateIndexRequest::builder()
                .collection_name(name)
                .index_param(
                    IndexParam::new()
                        .field_name(VECTOR)
                        .index_name(VECTOR)
                        .index_type(index_type)
                        .metric_type(MetricType::Ip)
                        .extra_params(params),
                )
                .sync(false)
                .build()
                .map_err(|e| self.error("creating the vector index", e))?;
            self.block_on(self.client.create_index(request))
                .map_err(|e| self.error(&format!("creating the vector index of {name}"), e))?;
        }
        let started = Instant::now();
        loop {
            match self.vector_index_state(name)? {
                Some((IndexStateCode::Finished, _)) => return Ok(()),
                Some((IndexStateCode::Failed, reason)) => {
                    return Err(self.error(
                        &format!("building the vector index of {name}"),
                        format!("the server reports failure: {reason}"),
                    ))
                }
                _ if started.elapsed() > READY_TIMEOUT => {
                    return Err(self.error(
                        &format!("building the vector index of {name}"),
                        format!("not finished after {} s", READY_TIMEOUT.as_secs()),
                    ))
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// The state of the index on the vector field, `None` when there is none.
    fn vector_index_state(&self, name: &str) -> Result<Option<(IndexStateCode, String)>> {
        let request = DescribeIndexRequest::builder()
            .collection_name(name)
            .field_name(VECTOR)
            .build()
            .map_err(|e| self.error("describing the vector index", e))?;
        match self.block_on(self.client.describe_index(request)) {
            Ok(response) => Ok(response
                .indexes()
                .iter()
                .find(|i| i.get_field_name() == VECTOR)
                .map(|i| (i.get_state(), i.get_failure_reason().to_owned()))),
            Err(e) if is_index_not_found(&e) => Ok(None),
            Err(e) => Err(self.error(&format!("describing the vector index of {name}"), e)),
        }
    }

    /// Loads a collection into the query nodes (a no-op when it already is): Milvus searches
    /// and queries only loaded collections.
    fn load(&self, name: &str) -> Result<()> {
        let request = LoadCollectionRequest::builder()
            .collection_name(name)
            .sync(true)
            .timeout_ms(READY_TIMEOUT.as_millis() as i64)
            .build()
            .map_err(|e| self.error("loading the collection", e))?;
        self.block_on(self.client.load_collection(request))
            .map_err(|e| self.error(&format!("loading collection {name}"), e))
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

    /// Number of rows in collection `name`.
    fn count(&self, name: &str) -> Result<usize> {
        let what = format!("counting the rows of {name}");
        let request = QueryRequest::builder()
            .collection_name(name)
            .output_fields(["count(*)"])
            .consistency_level(ConsistencyLevel::Strong)
            .build()
            .map_err(|e| self.error(&what, e))?;
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
    fn query(
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
    fn for_each_page(
        &self,
        name: &str,
        fields: &[&str],
        page: usize,
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
    fn rows_per_response(&self, with_vectors: bool) -> usize {
        let row = ROW_OVERHEAD_BYTES + if with_vectors { self.info.dim * 4 } else { 0 };
        (READ_RESPONSE_BYTES / 2 / row).max(1)
    }

    /// An `id in [...]` filter.
    fn ids_filter(ids: &[i64]) -> String {
        let list: Vec<String> = ids.iter().map(i64::to_string).collect();
        format!("{ID} in [{}]", list.join(","))
    }

    fn label_collection(&self, set: &str) -> String {
        label_collection_name(&self.collection, set)
    }

    fn properties(&self) -> Result<HashMap<String, String>> {
        Ok(self.describe(&self.collection)?.get_properties().clone())
    }

    fn set_property(&self, key: &str, value: String) -> Result<()> {
        let request = AlterCollectionPropertiesRequest::builder()
            .collection_name(&self.collection)
            .property(key, value)
            .build()
            .map_err(|e| self.error("updating collection properties", e))?;
        self.block_on(self.client.alter_collection_properties(request))
            .map_err(|e| self.error("updating collection properties", e))
    }

    fn drop_collection(&self, name: &str) -> Result<()> {
        let request = DropCollectionRequest::builder()
            .collection_name(name)
            .build()
            .map_err(|e| self.error("dropping a collection", e))?;
        self.block_on(self.client.drop_collection(request))
            .map_err(|e| self.error(&format!("dropping collection {name}"), e))
    }

    fn row_to_record(&self, row: &ResultRow<'_>) -> Result<FileRecord> {
        let bad = |e: ::milvus::v2::error::Error| self.error("decoding a row", e);
        Ok(FileRecord {
            path: decode_path(row.get_str(PATH).map_err(bad)?),
            size: u64::try_from(row.get_i64(SIZE).map_err(bad)?).unwrap_or(0),
            mtime_ns: row.get_i64(MTIME).map_err(bad)?,
            hash: row.get_str(HASH).map_err(bad)?.to_owned(),
        })
    }
}

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
            &[ID, PATH, SIZE, MTIME, HASH],
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

        let row_bytes = self.info.dim * 4 + 256;
        let rows_per_request = (WRITE_REQUEST_BYTES / row_bytes).clamp(1, 10_000);
        for chunk in upserts.chunks(rows_per_request) {
            let columns = vec![
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
            let what = "writing entries";
            let insert = InsertRequest::builder()
                .collection_name(&self.collection)
                .columns(columns)
                .build()
                .map_err(|e| self.error(what, e))?;
            let request = UpsertRequest::builder()
                .insert(insert)
                .build()
                .map_err(|e| self.error(what, e))?;
            self.block_on(self.client.upsert(request))
                .map_err(|e| self.error(what, e))?;
        }

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
        self.for_each_page(
            &self.collection,
            &[ID, PATH, SIZE, MTIME, HASH, VECTOR],
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

    fn search(&self, queries: &[Vec<f32>], k: usize) -> Result<Vec<Vec<Hit>>> {
        for q in queries {
            self.check_dim(q.len())?;
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
            if results.len() != block.len() {
                return Err(self.error(
                    what,
                    format!(
                        "the server answered {} result lists for {} queries",
                        results.len(),
                        block.len()
                    ),
                ));
            }
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

    fn labels(&self, set: &str) -> Result<Option<Vec<LabelVector>>> {
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

fn check_compatible(store: &str, stored: &CollectionInfo, wanted: &CollectionInfo) -> Result<()> {
    if stored.dim != wanted.dim {
        return Err(IndexError::WrongVectorDimension {
            store: store.to_owned(),
            expected: stored.dim,
            got: wanted.dim,
        });
    }
    if stored.model != wanted.model || stored.preprocess != wanted.preprocess {
        return Err(IndexError::ModelMismatch {
            store: store.to_owned(),
            stored: format!("{} ({})", stored.model, stored.preprocess),
            requested: format!("{} ({})", wanted.model, wanted.preprocess),
        });
    }
    Ok(())
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

/// Whether the SDK failed to reach the server at all (refused, gone, timed out), as opposed to
/// the server answering with an error.
fn is_unreachable(e: &::milvus::v2::error::Error) -> bool {
    use ::milvus::v2::error::Error;
    // gRPC's CANCELLED, DEADLINE_EXCEEDED and UNAVAILABLE (tonic is not a dependency of ours).
    const CANCELLED: i32 = 1;
    const DEADLINE_EXCEEDED: i32 = 4;
    const UNAVAILABLE: i32 = 14;
    match e {
        Error::Grpc(status) => matches!(
            i32::from(status.code()),
            CANCELLED | DEADLINE_EXCEEDED | UNAVAILABLE
        ),
        Error::Timeout(_) => true,
        Error::RetryExhausted { source, .. } => is_unreachable(source),
        _ => false,
    }
}

fn is_index_not_found(e: &::milvus::v2::error::Error) -> bool {
    use ::milvus::v2::error::Error;
    match e {
        // 700 is IndexNotExist in Milvus ≥ 2.3; 11 its legacy code.
        Error::Server(s) => {
            s.code() == 700 || s.legacy_code() == 11 || s.reason().contains("index not found")
        }
        Error::RetryExhausted { source, .. } => is_index_not_found(source),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::milvus::v2::error::Error;

    #[test]
    fn only_failures_to_reach_the_server_are_transient() {
        assert!(is_unreachable(&Error::Timeout("connecting".into())));
        assert!(is_unreachable(&Error::RetryExhausted {
            attempts: 3,
            source: Box::new(Error::Timeout("search".into())),
        }));
        assert!(!is_unreachable(&Error::MalformedResponse(
            "no status".into()
        )));
        assert!(!is_unreachable(&Error::Unexpected("x".into())));
    }
}
