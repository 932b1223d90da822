//! What the integration tests share: the fixture model, a real server on an ephemeral
//! loopback port, a collection indexed from the fixture photos, and a client that checks
//! every JSON response against the server's own `/openapi.json`.

#![allow(dead_code)]

pub mod openapi;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use clipkit_core::{Clip, LoadOptions, PreprocessMode};
use clipkit_index::indexer::{canonical_roots, Indexer, NoProgress, WalkOptions};
use clipkit_index::{CollectionInfo, Store, StoreAddress};
use clipkit_server::{Server, ServerConfig};
use serde_json::Value;
use tokio::sync::oneshot;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

pub fn model_dir() -> PathBuf {
    fixtures().join("models/tiny-quickgelu")
}

pub fn image_path(name: &str) -> PathBuf {
    fixtures().join("images").join(name)
}

pub fn image_bytes(name: &str) -> Vec<u8> {
    std::fs::read(image_path(name)).unwrap()
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn data_uri(name: &str) -> String {
    format!("data:image/png;base64,{}", b64(&image_bytes(name)))
}

pub fn load_clip_from(dir: &Path) -> Clip {
    Clip::from_dir(dir, &LoadOptions::default()).expect("the fixture model loads")
}

pub fn load_clip() -> Clip {
    load_clip_from(&model_dir())
}

/// The fixture photos used for the collection.
pub const PHOTOS: &[&str] = &[
    "astronaut.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "rocket.png",
    "wide.png",
    "palette.png",
];

/// A collection indexed (with the real indexer) from copies of the fixture photos.
pub fn build_store(dir: &Path, clip: &Clip) -> Box<dyn Store> {
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for name in PHOTOS {
        std::fs::copy(image_path(name), photos.join(name)).unwrap();
    }
    let info = CollectionInfo {
        model: clip.name().to_owned(),
        dim: clip.embedding_dim(),
        preprocess: PreprocessMode::Transformers,
        family: None,
    };
    let mut store =
        clipkit_index::open(&StoreAddress::Embedded(dir.join("store")), Some(&info)).unwrap();
    let roots = canonical_roots(&[photos]).unwrap();
    let report = Indexer {
        store: &mut *store,
        embedder: clip,
        batch_size: 16,
        walk: WalkOptions::default(),
        cancel: None,
        progress: &NoProgress,
    }
    .run(&roots)
    .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    store.flush().unwrap();
    assert_eq!(store.len().unwrap(), PHOTOS.len());
    store
}

pub fn config() -> ServerConfig {
    let mut c = ServerConfig::new("tiny-clip");
    c.batch.max_wait = Duration::from_millis(2);
    c
}

/// A server running on 127.0.0.1 with an ephemeral port, in this test's runtime.
pub struct TestServer {
    pub base: String,
    pub server: Server,
    pub http: reqwest::Client,
    pub spec: Option<openapi::Spec>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), clipkit_server::ServeError>>,
}

impl TestServer {
    pub async fn start(config: ServerConfig, store: Option<Box<dyn Store>>) -> Self {
        Self::start_with(load_clip(), config, store, true).await
    }

    /// `wait_ready`: poll `/readyz` until the warm-up probe passed (bounded).
    pub async fn start_with(
        clip: Clip,
        config: ServerConfig,
        store: Option<Box<dyn Store>>,
        wait_ready: bool,
    ) -> Self {
        let server = Server::new(clip, store, config).expect("valid server");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(addr.ip().is_loopback());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut s = Self {
            base: format!("http://{addr}"),
            server,
            http,
            spec: None,
            stop: Some(stop),
            task,
        };
        if wait_ready {
            let mut ready = false;
            for _ in 0..400 {
                if let Ok(r) = s.http.get(s.url("/readyz")).send().await {
                    if r.status() == 200 {
                        ready = true;
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            assert!(ready, "the server never became ready");
            let spec: Value = s
                .http
                .get(s.url("/openapi.json"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            s.spec = Some(openapi::Spec::new(spec));
        }
        s
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends, reads the body as JSON, and checks it against the spec entry for
    /// (`method`, `route`, status) — or against the error schema for unknown routes.
    pub async fn json(
        &self,
        route: &str,
        request: reqwest::RequestBuilder,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let request = request.build().unwrap();
        let method = request.method().as_str().to_ascii_lowercase();
        let response = self.http.execute(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = response.text().await.unwrap();
        assert!(
            content_type.starts_with("application/json"),
            "{method} {route} → {status} with content type {content_type:?}: {text}"
        );
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {route} → {status}: not JSON ({e}): {text}"));
        if let Some(spec) = &self.spec {
            spec.check(&method, route, status, &body)
                .unwrap_or_else(|e| {
                    panic!("{method} {route} → {status} breaks the spec: {e}\n{body:#}")
                });
        }
        if status >= 400 {
            assert_error_shape(&body);
        }
        (status, headers, body)
    }

    pub async fn post_json(&self, route: &str, body: &Value) -> (u16, Value) {
        let (s, _, b) = self
            .json(route, self.http.post(self.url(route)).json(body))
            .await;
        (s, b)
    }

    pub async fn get_json(&self, route: &str, path_and_query: &str) -> (u16, Value) {
        let (s, _, b) = self
            .json(route, self.http.get(self.url(path_and_query)))
            .await;
        (s, b)
    }

    /// The value of an unlabelled metric.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric_value(&text, name).unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }

    /// Waits (boundedly) until `name` reaches at least `value`.
    pub async fn wait_for_metric(&self, name: &str, value: f64) {
        self.wait_metric(name, |v| v >= value).await
    }

    /// Waits (boundedly, about 10 s at most) until `name` satisfies `ok`.
    pub async fn wait_metric(&self, name: &str, ok: impl Fn(f64) -> bool) {
        let mut last = f64::NAN;
        for _ in 0..2000 {
            last = self.metric(name).await;
            if ok(last) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{name} never got where it should (last {last})");
    }

    /// Graceful shutdown; returns what `serve` returned.
    pub async fn stop(mut self) -> Result<(), clipkit_server::ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.expect("the server task does not panic")
    }
}

pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `{"error":{"code":"…","type":"…","message":"…"}}`, nothing else at the top.
pub fn assert_error_shape(body: &Value) {
    let obj = body.as_object().expect("an object");
    assert_eq!(obj.len(), 1, "only `error` at the top: {body}");
    let e = &body["error"];
    for key in ["code", "type", "message"] {
        assert!(
            e[key].as_str().is_some_and(|s| !s.is_empty()),
            "error.{key} missing in {body}"
        );
    }
}

pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

pub fn vector(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

pub fn norm(a: &[f32]) -> f32 {
    a.iter().map(|x| x * x).sum::<f32>().sqrt()
}
