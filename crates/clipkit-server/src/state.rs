//! What every handler shares: the model, the batcher in front of it, the image decoder, the
//! optional collection, metrics, and the two ways of embedding a request's inputs.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use clipkit_core::Clip;
use clipkit_index::Store;
use image::RgbImage;
use tokio::sync::Semaphore;

use crate::batcher::{Batcher, Input};
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::images::Decoder;
use crate::metrics::{Metrics, QueueGauges};
use crate::thumbnails::Thumbnails;

/// Text embeddings kept for reuse: classification labels and prompt templates repeat from
/// request to request, and re-embedding them would cost more than the image itself.
const TEXT_CACHE_ENTRIES: usize = 4096;

pub struct AppState {
    pub config: ServerConfig,
    pub clip: Arc<Clip>,
    pub batcher: Batcher,
    pub decoder: Decoder,
    pub store: Option<StoreState>,
    pub metrics: Arc<Metrics>,
    /// Requests being handled; full means 429 before the body is read.
    pub request_slots: Arc<Semaphore>,
    /// Set once the warm-up probe has passed.
    pub ready: AtomicBool,
    /// Set when graceful shutdown begins.
    pub draining: AtomicBool,
    text_cache: Mutex<TextCache>,
}

/// A collection attached with `--store`, and the thumbnails of its images.
pub struct StoreState {
    pub store: Arc<dyn Store>,
    pub thumbnails: Thumbnails,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("model", &self.config.served_model_name)
            .field("batcher", &self.batcher)
            .field("store", &self.store.as_ref().map(|s| s.store.address()))
            .finish()
    }
}

#[derive(Default)]
struct TextCache {
    vectors: HashMap<String, Vec<f32>>,
    order: VecDeque<String>,
}

impl TextCache {
    fn insert(&mut self, text: String, vector: Vec<f32>) {
        if self.vectors.contains_key(&text) {
            return;
        }
        while self.vectors.len() >= TEXT_CACHE_ENTRIES {
            match self.order.pop_front() {
                Some(old) => {
                    self.vectors.remove(&old);
                }
                None => break,
            }
        }
        self.order.push_back(text.clone());
        self.vectors.insert(text, vector);
    }
}

/// Embedded images, with the pictures as decoded when asked for.
#[derive(Debug)]
pub struct EmbeddedImages {
    pub vectors: Vec<Vec<f32>>,
    pub shown: Vec<Option<RgbImage>>,
}

impl AppState {
    pub fn new(
        clip: Arc<Clip>,
        store: Option<Arc<dyn Store>>,
        config: ServerConfig,
        batcher: Batcher,
        metrics: Arc<Metrics>,
    ) -> Self {
        let decoder = Decoder::new(
            clip.preprocessor(),
            config.limits.max_pixels,
            config.limits.decode_concurrency,
            metrics.clone(),
        );
        Self {
            request_slots: Arc::new(Semaphore::new(config.limits.max_concurrent_requests)),
            store: store.map(|store| StoreState {
                store,
                thumbnails: Thumbnails::default(),
            }),
            clip,
            batcher,
            decoder,
            metrics,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            text_cache: Mutex::default(),
            config,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.draining.load(Ordering::Relaxed)
    }

    /// A request may name the model; it must be this one (or one of its aliases).
    pub fn check_model(&self, requested: Option<&str>) -> Result<(), ApiError> {
        match requested {
            None => Ok(()),
            Some(name) if self.serves(name) => Ok(()),
            Some(name) => Err(ApiError::ModelNotFound {
                requested: name.to_owned(),
                served: self.config.served_model_name.clone(),
            }),
        }
    }

    fn serves(&self, name: &str) -> bool {
        let served = &self.config.served_model_name;
        name == served || name == self.clip.name() || name.is_empty()
    }

    /// Refuses requests with more inputs than one request may carry.
    pub fn check_inputs(&self, n: usize) -> Result<(), ApiError> {
        let limit = self.config.limits.max_inputs;
        if n > limit {
            return Err(ApiError::TooManyInputs { got: n, limit });
        }
        Ok(())
    }

    /// Text embeddings in order, from the cache where possible, the rest through the batcher.
    pub async fn embed_texts(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ApiError> {
        let mut out: Vec<Option<Vec<f32>>> = {
            let cache = lock(&self.text_cache);
            texts
                .iter()
                .map(|t| cache.vectors.get(t).cloned())
                .collect()
        };
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
        if !missing.is_empty() {
            let mut ticket = self.batcher.admit(missing.len())?;
            let inputs = missing
                .iter()
                .map(|&i| Input::Text(texts[i].clone()))
                .collect();
            let results = self.batcher.embed(&mut ticket, inputs).await;
            let mut cache = lock(&self.text_cache);
            for (&i, result) in missing.iter().zip(results) {
                let vector = result?;
                cache.insert(texts[i].clone(), vector.clone());
                out[i] = Some(vector);
            }
        }
        self.metrics.texts_done(texts.len() as u64);
        Ok(out.into_iter().map(|v| v.expect("filled")).collect())
    }

    /// Decodes (on the blocking pool) and embeds images. Room in the queue is reserved before
    /// decoding, so decoded pixels never pile up beyond the queue's capacity.
    pub async fn embed_images(
        &self,
        images: Vec<Vec<u8>>,
        keep_shown: bool,
    ) -> Result<EmbeddedImages, ApiError> {
        let mut ticket = self.batcher.admit(images.len())?;
        let decoded = self.decoder.decode_all(images, keep_shown).await?;
        let (pixels, shown): (Vec<_>, Vec<_>) = decoded
            .into_iter()
            .map(|d| (Input::Pixels(d.pixels), d.shown))
            .unzip();
        let n = pixels.len();
        let results = self.batcher.embed(&mut ticket, pixels).await;
        let vectors = results
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(ApiError::from)?;
        self.metrics.images_done(n as u64);
        Ok(EmbeddedImages { vectors, shown })
    }

    /// Warnings for texts the tokenizer truncates to the context length.
    pub fn truncation_warnings(&self, texts: &[String]) -> Vec<String> {
        let tokenizer = self.clip.tokenizer();
        let room = tokenizer.context_length().saturating_sub(2);
        texts
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let n = tokenizer.untruncated_len(t).ok()?;
                (n > room).then(|| {
                    format!("text {i} has {n} tokens; CLIP reads the first {room} of them")
                })
            })
            .collect()
    }

    pub fn gauges(&self) -> QueueGauges {
        QueueGauges {
            admitted_items: self.batcher.admitted(),
            capacity: self.batcher.capacity(),
            requests_in_flight: self.config.limits.max_concurrent_requests
                - self.request_slots.available_permits(),
        }
    }

    pub fn store(&self) -> Result<&StoreState, ApiError> {
        self.store.as_ref().ok_or(ApiError::NoStore)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
