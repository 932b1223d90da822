//! The Milvus backend against a real server: milvus-lite, which speaks Milvus's gRPC API, run
//! as a child process on a free loopback port with a throwaway data directory.
//!
//! milvus-lite is a Python package (`pip install milvus-lite==3.2.2 pymilvus==3.0.2`); the
//! tests find its `milvus-lite` executable through `CLIPKIT_MILVUS_LITE` or on `PATH`, and
//! fail — rather than skip — when it is missing, so a green run always means the backend was
//! exercised.

mod common;

use clipkit_index::Filter;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use clipkit_index::milvus::{label_collection_name, MilvusStore};
use clipkit_index::{Batch, CollectionInfo, Entry, IndexError, Result, Store, StoreAddress};
use common::conformance::{self, entries, info, upserts, Rng};

const INSTALL_HINT: &str = "install it with:\n    \
    python3 -m venv ~/.cache/clipkit-ci/milvus-venv\n    \
    ~/.cache/clipkit-ci/milvus-venv/bin/pip install milvus-lite==3.2.2 pymilvus==3.0.2\n    \
    export CLIPKIT_MILVUS_LITE=~/.cache/clipkit-ci/milvus-venv/bin/milvus-lite\n\
    (.ci/run does this)";

/// How long a starting server may take to accept connections: it imports numpy, pyarrow and
/// faiss first, which takes seconds on a busy machine.
const START_TIMEOUT: Duration = Duration::from_secs(90);

fn milvus_lite_executable() -> PathBuf {
    if let Some(path) = std::env::var_os("CLIPKIT_MILVUS_LITE") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "CLIPKIT_MILVUS_LITE={} is not a file; point it at the milvus-lite executable, or {INSTALL_HINT}",
            path.display()
        );
        return path;
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("milvus-lite"))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("the Milvus tests need milvus-lite, found neither $CLIPKIT_MILVUS_LITE nor milvus-lite on PATH; {INSTALL_HINT}")
    })
}

/// A running milvus-lite server, stopped (SIGTERM) when dropped.
struct MilvusLite {
    child: Child,
    port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl MilvusLite {
    fn start() -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().join("data");
        let mut server = Self::start_in(&data_dir, temp.path());
        server._temp = Some(temp);
        server
    }

    /// Starts a server on `data_dir` (which may hold a previous server's data), logging into
    /// `log_dir`.
    fn start_in(data_dir: &Path, log_dir: &Path) -> Self {
        let exe = milvus_lite_executable();
        let port = free_port();
        let log = log_dir.join(format!("milvus-lite-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("server log file");
        let child = Command::new(&exe)
            .args(["server", "--data-dir"])
            .arg(data_dir)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}; {INSTALL_HINT}", exe.display()));
        let mut server = Self {
            child,
            port,
            data_dir: data_dir.to_owned(),
            log,
            _temp: None,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let started = Instant::now();
        loop {
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return;
            }
            let exited = self.child.try_wait().ok().flatten();
            if exited.is_some() || started.elapsed() > START_TIMEOUT {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let state = match exited {
                    Some(status) => format!("it exited: {status}"),
                    None => format!("not within {} s", START_TIMEOUT.as_secs()),
                };
                panic!(
                    "milvus-lite did not accept connections on 127.0.0.1:{} ({state}); data dir {}; its output:\n{log}",
                    self.port,
                    self.data_dir.display(),
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn open(&self, collection: &str, create: Option<&CollectionInfo>) -> Result<Box<dyn Store>> {
        MilvusStore::open(&self.endpoint(), collection, create)
    }

    /// SIGTERM, then SIGKILL if the server has not gone within 10 s.
    fn stop(&mut self) {
        #[cfg(unix)]
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        #[cfg(not(unix))]
        let _ = self.child.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MilvusLite {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// One server shared by the tests that run at the same time (they use distinct collections);
/// it stops when the last of them drops it.
fn shared_server() -> Arc<MilvusLite> {
    static SHARED: Mutex<Weak<MilvusLite>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(server) = slot.upgrade() {
        return server;
    }
    let server = Arc::new(MilvusLite::start());
    *slot = Arc::downgrade(&server);
    server
}

/// Runs one conformance check, in collections prefixed by the check's name so checks sharing
/// a server never meet.
fn conformance_check(name: &str) {
    let (_, check) = conformance::CHECKS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no conformance check {name}"));
    let server = shared_server();
    let open = |store: &str, create: Option<&CollectionInfo>| {
        server.open(&format!("{name}__{store}"), create)
    };
    check(&open);
}

macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                conformance_check(stringify!($check));
            }
        )*

        #[test]
        fn every_conformance_check_has_a_test() {
            let tested = [$(stringify!($check)),*];
            for (name, _) in conformance::CHECKS {
                assert!(tested.contains(name), "conformance check {name} is not run");
            }
        }
    };
}

conformance_tests!(
    create_and_reopen,
    refuses_other_models_and_dims,
    apply_upserts_then_removals,
    apply_twice_changes_nothing,
    files_and_scan_are_complete,
    vectors_of_present_and_absent_paths,
    search_equals_brute_force,
    odd_paths_round_trip,
    label_sets,
    roots_persist,
    filtered_search_equals_brute_force,
);

/// Everything survives the server stopping (SIGTERM, no clean shutdown) and a new server
/// starting on the same data directory. The new server also builds the HNSW index of the
/// flushed data when the collection is loaded, so the searches after the restart go through
/// the index — and must still equal brute force at this size.
#[test]
fn survives_a_server_restart() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let mut rng = Rng::new(42);
    let flushed = entries("flushed", 2_000, 16, &mut rng);
    let unflushed = entries("unflushed", 50, 16, &mut rng);
    let labels = vec![clipkit_index::LabelVector {
        label: "sunset".into(),
        vector: rng.vector(16),
    }];
    let queries: Vec<Vec<f32>> = (0..40).map(|_| rng.vector(16)).collect();
    let before_files = {
        let server = MilvusLite::start_in(&data, temp.path());
        let mut store = server.open("restart", Some(&info(16))).unwrap();
        store.apply(upserts(flushed.clone())).unwrap();
        store.add_roots(&["/photos".into()]).unwrap();
        store.put_labels("sky", &labels).unwrap();
        store.flush().unwrap();
        store
            .apply(Batch {
                upserts: unflushed.clone(),
                removals: vec![flushed[0].file.path.clone()],
            })
            .unwrap();
        let mut files = store.files().unwrap();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    };
    let current: Vec<_> = flushed[1..].iter().chain(&unflushed).cloned().collect();
    let server = MilvusLite::start_in(&data, temp.path());
    let store = server.open("restart", None).unwrap();
    assert_eq!(store.info(), &info(16));
    let mut files = store.files().unwrap();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(files, before_files);
    conformance::assert_contents(store.as_ref(), &current);
    assert_eq!(store.roots().unwrap(), vec![PathBuf::from("/photos")]);
    assert_eq!(store.labels("sky").unwrap(), Some(labels));
    conformance::assert_search_matches(store.as_ref(), &current, &queries, 10);
}

/// Wide vectors make every read span several gRPC messages (the client takes at most 4 MiB
/// per message): 2,000 entries of dimension 768 are 6 MB of vectors.
#[test]
fn wide_vectors_are_read_in_pieces() {
    const DIM: usize = 768;
    let server = shared_server();
    let mut store = server.open("wide", Some(&info(DIM))).unwrap();
    let mut rng = Rng::new(768);
    let content = entries("wide", 2_000, DIM, &mut rng);
    store.apply(upserts(content.clone())).unwrap();
    conformance::assert_contents(store.as_ref(), &content);
    assert_eq!(conformance::scan_all(store.as_ref(), 5_000).len(), 2_000);

    // 300 queries × 200 hits is more than one response can carry too.
    let queries: Vec<Vec<f32>> = content[..300].iter().map(|e| e.vector.clone()).collect();
    let results = store.search(&queries, 200, &Filter::default()).unwrap();
    assert_eq!(results.len(), 300);
    for (e, hits) in content.iter().zip(&results) {
        assert_eq!(hits.len(), 200);
        assert_eq!(hits[0].path, e.file.path);
        assert!((hits[0].score - 1.0).abs() < 1e-4);
    }

    let labels: Vec<_> = content
        .iter()
        .map(|e| clipkit_index::LabelVector {
            label: e.file.path.display().to_string(),
            vector: e.vector.clone(),
        })
        .collect();
    store.put_labels("wide", &labels).unwrap();
    assert_eq!(store.labels("wide").unwrap(), Some(labels));
}

/// `--store milvus://…` reaches this backend through `clipkit_index::open`.
#[test]
fn opens_through_store_addresses() {
    let server = shared_server();
    let address =
        StoreAddress::parse(&format!("milvus://127.0.0.1:{}/via_address", server.port)).unwrap();
    match clipkit_index::open(&address, None) {
        Err(IndexError::NotFound { store }) => {
            assert_eq!(
                store,
                format!("milvus://127.0.0.1:{}/via_address", server.port)
            )
        }
        Err(e) => panic!("expected NotFound, got {e}"),
        Ok(_) => panic!("a missing collection opened without create"),
    }
    let store = clipkit_index::open(&address, Some(&info(4))).unwrap();
    assert_eq!(
        store.address(),
        format!("milvus://127.0.0.1:{}/via_address", server.port)
    );
    assert!(store.is_empty().unwrap());
}

/// A server that is not there gives a Milvus error naming the address, not a hang.
#[test]
fn unreachable_server_is_an_error() {
    let port = free_port();
    let started = Instant::now();
    let result = MilvusStore::open(&format!("http://127.0.0.1:{port}"), "nothing", None);
    match result {
        Err(e @ IndexError::Milvus { .. }) => {
            let message = e.to_string();
            eprintln!("{message}");
            assert!(
                message.starts_with(&format!(
                    "store milvus://127.0.0.1:{port}/nothing: connecting"
                )),
                "{message}"
            );
        }
        Err(e) => panic!("expected a Milvus error, got {e}"),
        Ok(_) => panic!("opened a store on a closed port"),
    }
    assert!(started.elapsed() < Duration::from_secs(90));
}

/// Paths longer than the VARCHAR column are refused up front, naming the path.
#[test]
fn overlong_paths_are_refused() {
    let server = shared_server();
    let mut store = server.open("overlong", Some(&info(4))).unwrap();
    let long = PathBuf::from("x/".repeat(9_000));
    let batch = Batch {
        upserts: vec![conformance::entry(long.clone(), 1, Rng::new(1).vector(4))],
        removals: Vec::new(),
    };
    match store.apply(batch) {
        Err(IndexError::PathTooLong { path, len, max, .. }) => {
            assert_eq!(path, long);
            assert_eq!(len, 18_000);
            assert_eq!(max, clipkit_index::milvus::MAX_PATH_BYTES);
        }
        other => panic!("expected PathTooLong, got {other:?}"),
    }
    assert!(store.is_empty().unwrap());
}

#[test]
fn label_collection_names_are_valid_and_distinct() {
    let names: Vec<String> = ["animals", "my-set", "my_set", "my set", "étiquettes", ""]
        .iter()
        .map(|set| label_collection_name("photos", set))
        .collect();
    assert_eq!(names[0], "photos_labels_animals");
    for name in &names {
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{name}"
        );
        assert!(name.len() <= 255, "{name}");
    }
    let distinct: std::collections::HashSet<_> = names.iter().collect();
    assert_eq!(distinct.len(), names.len(), "{names:?}");
}

/// A collection that clipkit did not create is refused, not taken for an image collection.
#[test]
fn foreign_collections_are_refused() {
    use milvus::v2::prelude::*;
    let server = shared_server();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = ClientV2::new(&ConnectConfig::new().uri(server.endpoint()))
            .await
            .unwrap();
        let request = CreateSimpleCollectionRequest::builder()
            .collection_name("foreign")
            .primary_field("pk")
            .vector_field("embedding")
            .dimension(4)
            .build()
            .unwrap();
        client.create_collection(request).await.unwrap();
    });
    for create in [None, Some(info(4))] {
        match server.open("foreign", create.as_ref()) {
            Err(IndexError::Milvus { message, .. }) => {
                assert!(message.contains("not created by clipkit"), "{message}")
            }
            Err(e) => panic!("expected a Milvus error, got {e}"),
            Ok(_) => panic!("a foreign collection opened"),
        }
    }
}

/// An async server can use the store from blocking tasks and drop it anywhere.
#[test]
fn works_under_an_async_runtime() {
    let server = shared_server();
    let mut store = server.open("under_async", Some(&info(4))).unwrap();
    let mut rng = Rng::new(11);
    store
        .apply(upserts(entries("async", 3, 4, &mut rng)))
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let (store, len) = tokio::task::spawn_blocking(move || {
            let len = store.len();
            (store, len)
        })
        .await
        .unwrap();
        assert_eq!(len.unwrap(), 3);
        drop(store);
    });
}

// ---------------------------------------------------------------------------------------------
// Collections made before the filter fields.

/// Creates `name` as clipkit did before the filter fields existed (no `taken`, `meta`, …) and
/// writes `entries` into it, through the SDK directly.
fn create_pre_filter_collection(endpoint: &str, name: &str, dim: usize, entries: &[Entry]) {
    use ::milvus::v2::prelude::*;
    use ::milvus::v2::{ConsistencyLevel, DataType};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = ClientV2::new(
            &ConnectConfig::new()
                .uri(endpoint)
                .telemetry(TelemetryConfig::new().enabled(false)),
        )
        .await
        .unwrap();
        let schema = CollectionSchema::new()
            .enable_dynamic_field(false)
            .add_field(
                FieldSchema::new()
                    .name("id")
                    .data_type(DataType::Int64)
                    .primary_key(true)
                    .auto_id(false),
            )
            .add_field(
                FieldSchema::new()
                    .name("path")
                    .data_type(DataType::VarChar)
                    .max_length(16384),
            )
            .add_field(FieldSchema::new().name("size").data_type(DataType::Int64))
            .add_field(
                FieldSchema::new()
                    .name("mtime_ns")
                    .data_type(DataType::Int64),
            )
            .add_field(
                FieldSchema::new()
                    .name("hash")
                    .data_type(DataType::VarChar)
                    .max_length(64),
            )
            .add_field(
                FieldSchema::new()
                    .name("vector")
                    .data_type(DataType::FloatVector)
                    .dimension(dim as u32),
            );
        let i = info(dim);
        let request = CreateCollectionRequest::builder()
            .collection_name(name)
            .schema(schema)
            .consistency_level(ConsistencyLevel::Strong)
            .properties(std::collections::HashMap::from([
                ("clipkit.model".to_owned(), i.model.clone()),
                ("clipkit.preprocess".to_owned(), i.preprocess.to_string()),
                ("clipkit.family".to_owned(), i.family.clone().unwrap()),
                ("clipkit.roots".to_owned(), "[\"/lib\"]".to_owned()),
            ]))
            .build()
            .unwrap();
        client.create_collection(request).await.unwrap();
        let request = CreateIndexRequest::builder()
            .collection_name(name)
            .index_param(
                IndexParam::new()
                    .field_name("vector")
                    .index_name("vector")
                    .index_type(IndexType::Hnsw)
                    .metric_type(MetricType::Ip),
            )
            .sync(false)
            .build()
            .unwrap();
        client.create_index(request).await.unwrap();
        let request = LoadCollectionRequest::builder()
            .collection_name(name)
            .sync(true)
            .build()
            .unwrap();
        client.load_collection(request).await.unwrap();
        let columns = vec![
            FieldData::int64("id", entries.iter().map(|e| e.file.id()).collect()),
            FieldData::varchar(
                "path",
                entries
                    .iter()
                    .map(|e| clipkit_index::paths::encode_path(&e.file.path))
                    .collect(),
            ),
            FieldData::int64("size", entries.iter().map(|e| e.file.size as i64).collect()),
            FieldData::int64(
                "mtime_ns",
                entries.iter().map(|e| e.file.mtime_ns).collect(),
            ),
            FieldData::varchar(
                "hash",
                entries.iter().map(|e| e.file.hash.clone()).collect(),
            ),
            FieldData::float_vector("vector", entries.iter().map(|e| e.vector.clone()).collect()),
        ];
        let request = InsertRequest::builder()
            .collection_name(name)
            .columns(columns)
            .build()
            .unwrap();
        client.insert(request).await.unwrap();
    });
}

/// What a collection made before the filter fields holds: the same entries without metadata.
fn without_meta(entries: &[Entry]) -> Vec<Entry> {
    entries
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.file.meta = Default::default();
            e
        })
        .collect()
}

/// A collection made before the filter fields is read as before (filtered searches are exact
/// on the client); opened to write, it is copied into the current schema with nothing lost,
/// and then filtered on the server; new writes carry their metadata.
#[test]
fn collections_made_before_the_filters_keep_working_and_are_migrated() {
    let server = shared_server();
    let dim = 8;
    let mut rng = Rng::new(7);
    let all = conformance::filter_entries(300, dim, &mut rng);
    let old = without_meta(&all);
    create_pre_filter_collection(&server.endpoint(), "premigration", dim, &old);

    let check_filters = |store: &dyn Store, entries: &[Entry], rng: &mut Rng| {
        let queries: Vec<Vec<f32>> = (0..2).map(|_| rng.vector(dim)).collect();
        for _ in 0..20 {
            let filter = conformance::random_filter(rng);
            let admitted: Vec<Entry> = entries
                .iter()
                .filter(|e| filter.matches(&e.file))
                .cloned()
                .collect();
            let results = store.search(&queries, 10, &filter).unwrap();
            for (query, hits) in queries.iter().zip(&results) {
                let want: Vec<PathBuf> = conformance::brute_force(&admitted, query, 10)
                    .into_iter()
                    .map(|(p, _)| p)
                    .collect();
                let got: Vec<PathBuf> = hits.iter().map(|h| h.path.clone()).collect();
                assert_eq!(got, want, "filter {filter:?}");
            }
        }
    };

    // Read-only: as before, and filters work (on the client).
    let store = server.open("premigration", None).unwrap();
    conformance::assert_contents(&*store, &old);
    check_filters(&*store, &old, &mut rng);
    drop(store);

    // Opened to write: migrated, nothing lost, roots and model kept.
    let mut store = server.open("premigration", Some(&info(dim))).unwrap();
    conformance::assert_contents(&*store, &old);
    assert_eq!(store.roots().unwrap(), vec![PathBuf::from("/lib")]);
    check_filters(&*store, &old, &mut rng);
    assert!(!has_collection(&server, "premigration__clipkit_new"));
    assert!(!has_collection(&server, "premigration__clipkit_old"));
    // New writes carry metadata, and the filters see it.
    store.apply(upserts(all.clone())).unwrap();
    conformance::assert_contents(&*store, &all);
    check_filters(&*store, &all, &mut rng);
    drop(store);
    let store = server.open("premigration", None).unwrap();
    conformance::assert_contents(&*store, &all);
}

/// A migration killed between its two renames (the collection is missing; the complete copy
/// and the original are under their temporary names) is finished by the next open.
#[test]
fn a_migration_killed_between_its_renames_is_finished() {
    let server = shared_server();
    let dim = 4;
    let mut rng = Rng::new(9);
    let all = conformance::filter_entries(50, dim, &mut rng);
    create_pre_filter_collection(
        &server.endpoint(),
        "halfswap__clipkit_old",
        dim,
        &without_meta(&all),
    );
    let mut copy = server
        .open("halfswap__clipkit_new", Some(&info(dim)))
        .unwrap();
    copy.apply(upserts(all.clone())).unwrap();
    drop(copy);
    let store = server.open("halfswap", None).unwrap();
    conformance::assert_contents(&*store, &all);
    assert!(!has_collection(&server, "halfswap__clipkit_new"));
    assert!(!has_collection(&server, "halfswap__clipkit_old"));
}

fn has_collection(server: &MilvusLite, name: &str) -> bool {
    use ::milvus::v2::prelude::*;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = ClientV2::new(
            &ConnectConfig::new()
                .uri(server.endpoint())
                .telemetry(TelemetryConfig::new().enabled(false)),
        )
        .await
        .unwrap();
        let request = HasCollectionRequest::builder()
            .collection_name(name)
            .build()
            .unwrap();
        client.has_collection(request).await.unwrap().exists()
    })
}

// ---------------------------------------------------------------------------------------------
// Several workers, one collection.

mod sharding {
    use super::*;
    use clipkit_core::{ClipError, Crop, Embedder, Scoring};
    use clipkit_index::indexer::{Indexer, NoProgress, Report, WalkOptions};
    use clipkit_index::shard::Shard;
    use clipkit_index::FileRecord;
    use std::collections::BTreeMap;

    const DIM: usize = 8;

    /// A stand-in model: the vector is a byte histogram of the file, so equal bytes give
    /// equal vectors on every worker.
    struct Histogram;

    impl Embedder for Histogram {
        fn embedding_dim(&self) -> usize {
            DIM
        }
        fn scoring(&self) -> Scoring {
            Scoring::Softmax { logit_scale: 1.0 }
        }
        fn embed_texts(&self, _: &[&str]) -> std::result::Result<Vec<Vec<f32>>, ClipError> {
            unimplemented!("the indexer embeds no text")
        }
        fn preprocess(&self, _: &Path, bytes: &[u8]) -> std::result::Result<Crop, ClipError> {
            let grey: Vec<u8> = bytes.iter().flat_map(|&b| [b, b, b]).collect();
            Ok(Crop::from_raw(bytes.len() as u32, 1, grey).unwrap())
        }
        fn embed_crops(&self, crops: Vec<Crop>) -> std::result::Result<Vec<Vec<f32>>, ClipError> {
            Ok(crops
                .iter()
                .map(|crop| {
                    let mut h = [1.0f32; DIM];
                    for b in crop.pixels().map(|p| p[0]) {
                        h[b as usize % DIM] += 1.0;
                    }
                    let norm = h.iter().map(|x| x * x).sum::<f32>().sqrt();
                    h.iter().map(|x| x / norm).collect()
                })
                .collect())
        }
        fn embed_pixels(&self, _: &[&[f32]]) -> std::result::Result<Vec<Vec<f32>>, ClipError> {
            unimplemented!("the indexer embeds crops")
        }
    }

    fn model_info() -> CollectionInfo {
        info(DIM)
    }

    /// A tree of `n` small files in nested folders, some of them copies of others.
    fn tree(root: &Path, n: usize, rng: &mut Rng) {
        for i in 0..n {
            let dir = root.join(format!("d{}", i % 5)).join(format!("e{}", i % 3));
            std::fs::create_dir_all(&dir).unwrap();
            let bytes: Vec<u8> = if i % 11 == 10 {
                format!("copy of {}", i % 7).into_bytes()
            } else {
                (0..20 + rng.next_u64() % 200)
                    .map(|_| rng.next_u64() as u8)
                    .collect()
            };
            std::fs::write(dir.join(format!("p{i:03}.jpg")), bytes).unwrap();
        }
    }

    fn index(store: &mut dyn Store, root: &Path, shard: Shard) -> Report {
        let roots = clipkit_index::indexer::canonical_roots(&[root.to_owned()]).unwrap();
        Indexer {
            store,
            embedder: &Histogram,
            batch_size: 7,
            walk: WalkOptions::default(),
            cancel: None,
            progress: &NoProgress,
        }
        .run_shard(&roots, shard)
        .unwrap()
    }

    /// Everything in a store, by path: records and vectors.
    fn contents(store: &dyn Store) -> BTreeMap<PathBuf, (FileRecord, Vec<f32>)> {
        let entries = conformance::scan_all(store, 1000);
        let n = entries.len();
        let map: BTreeMap<_, _> = entries
            .into_iter()
            .map(|Entry { file, vector }| (file.path.clone(), (file, vector)))
            .collect();
        assert_eq!(map.len(), n, "a path is stored twice");
        map
    }

    fn shard(i: u64, n: u64) -> Shard {
        Shard::new(i, n).unwrap()
    }

    /// Two workers running at the same time, one per shard, give exactly the index a single
    /// worker gives; each removes only its own shard's missing files.
    #[test]
    fn two_workers_give_the_single_worker_index() {
        let server = shared_server();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("photos");
        tree(&root, 120, &mut Rng::new(1));

        let mut single = server.open("single_worker", Some(&model_info())).unwrap();
        let report = index(&mut *single, &root, Shard::ALL);
        assert_eq!(report.total, 120);

        std::thread::scope(|s| {
            let workers: Vec<_> = (0..2)
                .map(|i| {
                    let (server, root) = (&server, &root);
                    s.spawn(move || {
                        let mut store = server.open("two_workers", Some(&model_info())).unwrap();
                        index(&mut *store, root, shard(i, 2))
                    })
                })
                .collect();
            let reports: Vec<Report> = workers.into_iter().map(|w| w.join().unwrap()).collect();
            assert_eq!(reports[0].scanned + reports[1].scanned, 120);
            assert!(reports.iter().all(|r| r.scanned > 30), "uneven shards");
        });
        let sharded = server.open("two_workers", None).unwrap();
        assert_eq!(contents(&*sharded), contents(&*single));
        assert_eq!(sharded.roots().unwrap(), single.roots().unwrap());

        // Two files go, one of each shard: each worker removes only its own.
        let all: Vec<PathBuf> = contents(&*sharded).into_keys().collect();
        let gone0 = all.iter().find(|p| shard(0, 2).owns(p)).unwrap().clone();
        let gone1 = all.iter().find(|p| shard(1, 2).owns(p)).unwrap().clone();
        std::fs::remove_file(&gone0).unwrap();
        std::fs::remove_file(&gone1).unwrap();
        let mut store = server.open("two_workers", Some(&model_info())).unwrap();
        let report = index(&mut *store, &root, shard(0, 2));
        assert_eq!(report.removed, 1);
        let now = contents(&*store);
        assert!(!now.contains_key(&gone0) && now.contains_key(&gone1));
        index(&mut *store, &root, shard(1, 2));
        index(&mut *single, &root, Shard::ALL);
        assert_eq!(contents(&*store), contents(&*single));
    }

    /// A store that dies after `left` batches: the last one half written, the way a process
    /// killed in the middle of a batch leaves it.
    struct Dying<'a> {
        inner: &'a mut dyn Store,
        left: usize,
    }

    impl Store for Dying<'_> {
        fn address(&self) -> String {
            self.inner.address()
        }
        fn info(&self) -> &CollectionInfo {
            self.inner.info()
        }
        fn len(&self) -> Result<usize> {
            self.inner.len()
        }
        fn files(&self) -> Result<Vec<FileRecord>> {
            self.inner.files()
        }
        fn vectors(&self, paths: &[PathBuf]) -> Result<Vec<Option<Vec<f32>>>> {
            self.inner.vectors(paths)
        }
        fn apply(&mut self, mut batch: Batch) -> Result<()> {
            if self.left == 0 {
                batch.upserts.truncate(batch.upserts.len() / 2);
                batch.removals.clear();
                self.inner.apply(batch)?;
                return Err(IndexError::Milvus {
                    uri: self.address(),
                    message: "killed".into(),
                    transient: true,
                });
            }
            self.left -= 1;
            self.inner.apply(batch)
        }
        fn scan(&self, chunk: usize, visit: &mut dyn FnMut(&[Entry]) -> Result<()>) -> Result<()> {
            self.inner.scan(chunk, visit)
        }
        fn search(
            &self,
            q: &[Vec<f32>],
            k: usize,
            f: &Filter,
        ) -> Result<Vec<Vec<clipkit_index::Hit>>> {
            self.inner.search(q, k, f)
        }
        fn flush(&mut self) -> Result<()> {
            self.inner.flush()
        }
        fn put_labels(&mut self, set: &str, labels: &[clipkit_index::LabelVector]) -> Result<()> {
            self.inner.put_labels(set, labels)
        }
        fn labels(&self, set: &str) -> Result<Option<Vec<clipkit_index::LabelVector>>> {
            self.inner.labels(set)
        }
        fn roots(&self) -> Result<Vec<PathBuf>> {
            self.inner.roots()
        }
        fn add_roots(&mut self, roots: &[PathBuf]) -> Result<()> {
            self.inner.add_roots(roots)
        }
    }

    /// A worker killed mid-run and restarted loses nothing and duplicates nothing: the union
    /// is still the single-worker index, and the restart embeds only what was not committed.
    #[test]
    fn a_killed_worker_resumes_without_loss_or_duplicates() {
        let server = shared_server();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("photos");
        tree(&root, 90, &mut Rng::new(2));
        let mut single = server.open("killed_single", Some(&model_info())).unwrap();
        index(&mut *single, &root, Shard::ALL);

        let roots = clipkit_index::indexer::canonical_roots(std::slice::from_ref(&root)).unwrap();
        for (kill_after, collection) in [(0, "killed_a"), (2, "killed_b")] {
            let mut store = server.open(collection, Some(&model_info())).unwrap();
            let mut dying = Dying {
                inner: &mut *store,
                left: kill_after,
            };
            let died = Indexer {
                store: &mut dying,
                embedder: &Histogram,
                batch_size: 7,
                walk: WalkOptions::default(),
                cancel: None,
                progress: &NoProgress,
            }
            .run_shard(&roots, shard(0, 2));
            assert!(died.is_err(), "the worker was to die");
            let committed = store.len().unwrap();
            assert!(committed > 0);
            drop(store);

            let mut store = server.open(collection, Some(&model_info())).unwrap();
            let resumed = index(&mut *store, &root, shard(0, 2));
            assert_eq!(resumed.unchanged, committed, "{collection}");
            index(&mut *store, &root, shard(1, 2));
            assert_eq!(contents(&*store), contents(&*single), "{collection}");
        }
    }
}

/// Filters that admit too many rows to read go through the graph with over-fetching: a
/// folder whose `like` prefix also admits its siblings (`/lib/a%` admits `/lib/ab`), and a
/// camera made only of wildcard characters, both thinned by the exact check and retried
/// with more candidates; the results still equal brute force.
#[test]
fn unselective_filters_search_the_graph_and_over_fetch() {
    let server = shared_server();
    let dim = 8;
    let mut rng = Rng::new(31);
    let all = conformance::filter_entries(4_000, dim, &mut rng);
    let mut store = server.open("unselective", Some(&info(dim))).unwrap();
    store.apply(upserts(all.clone())).unwrap();
    store.flush().unwrap();
    let queries: Vec<Vec<f32>> = (0..4).map(|_| rng.vector(dim)).collect();
    let filters = [
        Filter {
            folders: vec![PathBuf::from("/lib/a")],
            ..Filter::default()
        },
        Filter {
            camera: Some("_%".into()),
            ..Filter::default()
        },
        Filter {
            min_size: Some(2_000_000),
            ..Filter::default()
        },
    ];
    for filter in &filters {
        let admitted: Vec<Entry> = all
            .iter()
            .filter(|e| filter.matches(&e.file))
            .cloned()
            .collect();
        assert!(admitted.len() > 100, "{filter:?} admits {}", admitted.len());
        for k in [10, 60] {
            let results = store.search(&queries, k, filter).unwrap();
            for (query, hits) in queries.iter().zip(&results) {
                let want: Vec<PathBuf> = conformance::brute_force(&admitted, query, k)
                    .into_iter()
                    .map(|(p, _)| p)
                    .collect();
                let got: Vec<PathBuf> = hits.iter().map(|h| h.path.clone()).collect();
                assert_eq!(got, want, "k = {k}, filter {filter:?}");
            }
        }
    }
}
