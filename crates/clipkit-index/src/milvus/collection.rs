//! Collection lifecycle on the server: creating the image collection with its schema and
//! properties, checking that an existing one fits the model asked for, building and waiting
//! for the vector index, loading, and dropping. Kept apart from the row traffic because it is
//! what [`MilvusStore::open`] and label sets need, and none of it touches rows.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ::milvus::v2::prelude::*;
use ::milvus::v2::{ConsistencyLevel, DataType};
use clipkit_image::PreprocessMode;

use super::errors::is_index_not_found;
use super::filter::{MAX_CAMERA_BYTES, MAX_FILE_TYPE_BYTES, MAX_META_BYTES};
use super::{
    MilvusStore, CAMERA, FILE_TYPE, FILTER_FIELDS, HASH, ID, LATITUDE, LONGITUDE, MAX_HASH_BYTES,
    MAX_PATH_BYTES, META, MTIME, PATH, PROP_FAMILY, PROP_MODEL, PROP_PREPROCESS, PROP_ROOTS,
    READY_TIMEOUT, SIZE, TAKEN, VECTOR,
};
use crate::{CollectionInfo, IndexError, Result};

/// HNSW build parameters: the usual defaults for embeddings of a few hundred dimensions.
const HNSW_M: &str = "16";
const HNSW_EF_CONSTRUCTION: &str = "200";

impl MilvusStore {
    pub(super) fn has_collection(&self, name: &str) -> Result<bool> {
        let request = HasCollectionRequest::builder()
            .collection_name(name)
            .build()
            .map_err(|e| self.error("checking for the collection", e))?;
        self.block_on(self.client.has_collection(request))
            .map(|r| r.exists())
            .map_err(|e| self.error(&format!("checking for collection {name}"), e))
    }

    pub(super) fn describe(&self, name: &str) -> Result<CollectionDesc> {
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
    pub(super) fn read_info(&self) -> Result<CollectionInfo> {
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
            family: props.get(PROP_FAMILY).cloned(),
        })
    }

    /// Whether collection `name` has the filter fields; an error when it has only some of
    /// them, which no version of clipkit writes.
    pub(super) fn schema_has_filter_fields(&self, name: &str) -> Result<bool> {
        let desc = self.describe(name)?;
        let fields = desc.get_schema().get_fields();
        let present = FILTER_FIELDS
            .iter()
            .filter(|f| fields.iter().any(|field| field.get_name() == **f))
            .count();
        match present {
            0 => Ok(false),
            n if n == FILTER_FIELDS.len() => Ok(true),
            _ => Err(self.error(
                "opening",
                format!(
                    "collection {name} has some of the filter fields ({}) but not all",
                    FILTER_FIELDS.join(", ")
                ),
            )),
        }
    }

    pub(super) fn create_image_collection(&self) -> Result<()> {
        let mut properties = HashMap::from([
            (PROP_MODEL.to_owned(), self.info.model.clone()),
            (PROP_PREPROCESS.to_owned(), self.info.preprocess.to_string()),
            (PROP_ROOTS.to_owned(), "[]".to_owned()),
        ]);
        if let Some(family) = &self.info.family {
            properties.insert(PROP_FAMILY.to_owned(), family.clone());
        }
        self.create_image_collection_named(&self.collection, properties)
    }

    /// Creates an image collection with the current schema (the filter fields included) and
    /// its vector index.
    pub(super) fn create_image_collection_named(
        &self,
        name: &str,
        properties: HashMap<String, String>,
    ) -> Result<()> {
        let varchar = |name: &str, max: usize, description: &str| {
            FieldSchema::new()
                .name(name)
                .description(description)
                .data_type(DataType::VarChar)
                .max_length(max as u32)
        };
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
            .add_field(varchar(
                PATH,
                MAX_PATH_BYTES,
                "the path, hex-escaped when not UTF-8",
            ))
            .add_field(FieldSchema::new().name(SIZE).data_type(DataType::Int64))
            .add_field(FieldSchema::new().name(MTIME).data_type(DataType::Int64))
            .add_field(varchar(HASH, MAX_HASH_BYTES, "blake3 of the content"))
            .add_field(
                FieldSchema::new()
                    .name(TAKEN)
                    .description("capture time (EXIF, else mtime), seconds")
                    .data_type(DataType::Int64),
            )
            .add_field(
                FieldSchema::new()
                    .name(LATITUDE)
                    .description("degrees north; -1000 when unknown")
                    .data_type(DataType::Double),
            )
            .add_field(
                FieldSchema::new()
                    .name(LONGITUDE)
                    .description("degrees east; -1000 when unknown")
                    .data_type(DataType::Double),
            )
            .add_field(varchar(
                CAMERA,
                MAX_CAMERA_BYTES,
                "make and model, lower case",
            ))
            .add_field(varchar(
                FILE_TYPE,
                MAX_FILE_TYPE_BYTES,
                "extension, lower case",
            ))
            .add_field(varchar(META, MAX_META_BYTES, "PhotoMetadata as JSON"))
            .add_field(
                FieldSchema::new()
                    .name(VECTOR)
                    .data_type(DataType::FloatVector)
                    .dimension(self.info.dim as u32),
            );
        self.create_collection(name, schema, properties)?;
        self.ensure_index(name, IndexType::Hnsw)
    }

    pub(super) fn create_collection(
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
    pub(super) fn ensure_index(&self, name: &str, index_type: IndexType) -> Result<()> {
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
            let created = self.block_on(self.client.create_index(request));
            // Another worker may have created it meanwhile; then there is one to wait for.
            if let Err(e) = created {
                if self.vector_index_state(name)?.is_none() {
                    return Err(self.error(&format!("creating the vector index of {name}"), e));
                }
            }
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
    pub(super) fn vector_index_state(
        &self,
        name: &str,
    ) -> Result<Option<(IndexStateCode, String)>> {
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
    pub(super) fn load(&self, name: &str) -> Result<()> {
        let request = LoadCollectionRequest::builder()
            .collection_name(name)
            .sync(true)
            .timeout_ms(READY_TIMEOUT.as_millis() as i64)
            .build()
            .map_err(|e| self.error("loading the collection", e))?;
        self.block_on(self.client.load_collection(request))
            .map_err(|e| self.error(&format!("loading collection {name}"), e))
    }

    pub(super) fn properties(&self) -> Result<HashMap<String, String>> {
        Ok(self.describe(&self.collection)?.get_properties().clone())
    }

    /// Sets one collection property. Several shard workers update the same property (the
    /// roots) at about the same moment, and milvus-lite 3.2 can fail one of two concurrent
    /// updates (its `schema.json` rename races); the update is idempotent, so a failed one is
    /// retried a few times before it counts.
    pub(super) fn set_property(&self, key: &str, value: String) -> Result<()> {
        const ATTEMPTS: u64 = 5;
        let mut attempt = 1;
        loop {
            let request = AlterCollectionPropertiesRequest::builder()
                .collection_name(&self.collection)
                .property(key, value.clone())
                .build()
                .map_err(|e| self.error("updating collection properties", e))?;
            match self.block_on(self.client.alter_collection_properties(request)) {
                Ok(()) => return Ok(()),
                Err(_) if attempt < ATTEMPTS => {
                    std::thread::sleep(std::time::Duration::from_millis(50 * attempt));
                    attempt += 1;
                }
                Err(e) => return Err(self.error("updating collection properties", e)),
            }
        }
    }

    pub(super) fn rename_collection(&self, from: &str, to: &str) -> Result<()> {
        let what = format!("renaming collection {from} to {to}");
        let request = RenameCollectionRequest::builder()
            .collection_name(from)
            .new_collection_name(to)
            .build()
            .map_err(|e| self.error(&what, e))?;
        self.block_on(self.client.rename_collection(request))
            .map_err(|e| self.error(&what, e))
    }

    pub(super) fn drop_collection(&self, name: &str) -> Result<()> {
        let request = DropCollectionRequest::builder()
            .collection_name(name)
            .build()
            .map_err(|e| self.error("dropping a collection", e))?;
        self.block_on(self.client.drop_collection(request))
            .map_err(|e| self.error(&format!("dropping collection {name}"), e))
    }
}

pub(super) fn check_compatible(
    store: &str,
    stored: &CollectionInfo,
    wanted: &CollectionInfo,
) -> Result<()> {
    if stored.dim != wanted.dim {
        return Err(IndexError::WrongVectorDimension {
            store: store.to_owned(),
            expected: stored.dim,
            got: wanted.dim,
        });
    }
    if !stored.accepts(wanted) {
        return Err(IndexError::ModelMismatch {
            store: store.to_owned(),
            stored: stored.describe(),
            requested: wanted.describe(),
        });
    }
    Ok(())
}
