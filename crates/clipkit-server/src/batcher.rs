//! Dynamic batching: items from concurrent requests are merged into model batches.
//!
//! The worker embeds through [`Embedder`]: [`clipkit_core::Clip`] is the real one; tests use
//! fakes to make batching and failure deterministic.
//!
//! Requests first [`Batcher::admit`] the number of items they will submit; admission holds
//! permits of a semaphore the size of the queue, so the items decoding, waiting and running
//! are bounded, and a full server answers 429 at once instead of growing. Each item then goes
//! through a channel to one model worker: a plain OS thread (the model is CPU-bound and
//! must not block the async runtime), which takes up to `max_batch` items, waiting at most
//! `max_wait` after the first one arrived, and answers every item through its own oneshot.
//!
//! Failure stays with the item: when a batch fails, its items are retried one by one so
//! only the culprit gets an error, a panic in the model is caught (the worker lives on), and
//! non-finite output is reported as an error rather than returned as numbers. Items whose
//! requester has gone (timed out, disconnected) are dropped before they cost a forward pass.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use clipkit_core::{ClipError, Embedder};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::config::BatchConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// One item to embed.
#[derive(Debug, Clone)]
pub enum Input {
    /// Preprocessed `[3, H, W]` pixel values.
    Pixels(Vec<f32>),
    Text(String),
}

/// Why one item got no embedding.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ItemError {
    #[error("the model failed on this input: {0}")]
    Model(String),
    #[error("the model produced non-finite values (NaN or infinity)")]
    NonFinite,
    #[error("the model worker stopped")]
    WorkerGone,
    #[error("the server is shutting down")]
    ShuttingDown,
}

impl From<ItemError> for ApiError {
    fn from(e: ItemError) -> Self {
        match e {
            ItemError::ShuttingDown => ApiError::ShuttingDown,
            other => ApiError::Internal(other.to_string()),
        }
    }
}

type Reply = Result<Vec<f32>, ItemError>;

struct Job {
    input: Input,
    reply: oneshot::Sender<Reply>,
    enqueued: Instant,
    /// Released when the job is answered (just before the answer is sent, so a requester
    /// that has its answer sees the slot free) or dropped, freeing its queue slot.
    slot: OwnedSemaphorePermit,
}

/// Permits for the items one request has been admitted with.
#[derive(Debug)]
pub struct Ticket {
    permit: OwnedSemaphorePermit,
}

/// How the model last did on one kind of input, for `/healthz`.
#[derive(Debug, Clone)]
pub struct LastBatch {
    pub at: Instant,
    pub outcome: Result<(), String>,
}

/// The latest outcome per tower: a working text tower must not hide a broken image tower.
#[derive(Debug, Clone, Default)]
pub struct LastBatches {
    pub images: Option<LastBatch>,
    pub texts: Option<LastBatch>,
}

struct Shared {
    metrics: Arc<Metrics>,
    last_batch: Mutex<LastBatches>,
    /// Smoothed model time per item, in nanoseconds, for Retry-After.
    nanos_per_item: AtomicU64,
    /// Items handed to the worker so far.
    submitted: AtomicU64,
}

pub struct Batcher {
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    slots: Arc<Semaphore>,
    capacity: usize,
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("capacity", &self.capacity)
            .field("admitted", &self.admitted())
            .finish()
    }
}

impl Batcher {
    /// Starts the model worker thread.
    pub fn start(engine: Arc<dyn Embedder>, config: BatchConfig, metrics: Arc<Metrics>) -> Self {
        let (sender, receiver) = mpsc::channel();
        let shared = Arc::new(Shared {
            metrics,
            last_batch: Mutex::new(LastBatches::default()),
            nanos_per_item: AtomicU64::new(0),
            submitted: AtomicU64::new(0),
        });
        let worker_shared = shared.clone();
        let worker = std::thread::Builder::new()
            .name("clipkit-model".into())
            .spawn(move || worker(&*engine, &receiver, config, &worker_shared))
            .expect("can start the model thread");
        Self {
            sender: Mutex::new(Some(sender)),
            slots: Arc::new(Semaphore::new(config.queue_capacity)),
            capacity: config.queue_capacity,
            shared,
            worker: Mutex::new(Some(worker)),
        }
    }

    /// Reserves room for `n` items, or refuses at once: 429 when the queue is full, 413 when
    /// `n` could never fit, 503 while shutting down.
    pub fn admit(&self, n: usize) -> Result<Ticket, ApiError> {
        if n > self.capacity {
            return Err(ApiError::TooManyInputs {
                got: n,
                limit: self.capacity,
            });
        }
        if lock(&self.sender).is_none() {
            return Err(ApiError::ShuttingDown);
        }
        let n32 = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
        self.slots
            .clone()
            .try_acquire_many_owned(n32)
            .map(|permit| Ticket { permit })
            .map_err(|_| ApiError::Overloaded {
                retry_after_s: self.retry_after_s(),
            })
    }

    /// Embeds `inputs` (at most as many as `ticket` was admitted for), in order.
    pub async fn embed(&self, ticket: &mut Ticket, inputs: Vec<Input>) -> Vec<Reply> {
        let mut pending = Vec::with_capacity(inputs.len());
        {
            let sender = lock(&self.sender);
            for input in inputs {
                let (reply, receiver) = oneshot::channel();
                let sent = match (sender.as_ref(), ticket.permit.split(1)) {
                    (Some(s), Some(slot)) => s
                        .send(Job {
                            input,
                            reply,
                            enqueued: Instant::now(),
                            slot,
                        })
                        .is_ok(),
                    (None, _) => false,
                    (Some(_), None) => {
                        // More items than admitted: a bug in the caller, reported, not hidden.
                        let _ = reply.send(Err(ItemError::Model(
                            "more items submitted than admitted".into(),
                        )));
                        true
                    }
                };
                if sent {
                    self.shared.submitted.fetch_add(1, Ordering::Relaxed);
                }
                pending.push(sent.then_some(receiver));
            }
        }
        let mut out = Vec::with_capacity(pending.len());
        for receiver in pending {
            out.push(match receiver {
                Some(r) => r.await.unwrap_or(Err(ItemError::WorkerGone)),
                None => Err(ItemError::ShuttingDown),
            });
        }
        out
    }

    /// Items admitted and not yet answered.
    pub fn admitted(&self) -> usize {
        self.capacity - self.slots.available_permits()
    }

    /// Items handed to the worker since start.
    pub fn submitted(&self) -> u64 {
        self.shared.submitted.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn last_batches(&self) -> LastBatches {
        lock(&self.shared.last_batch).clone()
    }

    /// Whether the worker thread is still running.
    pub fn worker_alive(&self) -> bool {
        lock(&self.worker)
            .as_ref()
            .is_some_and(|w| !w.is_finished())
    }

    /// Roughly how long the current queue takes to clear, at least a second.
    pub fn retry_after_s(&self) -> u64 {
        let per_item = self.shared.nanos_per_item.load(Ordering::Relaxed) as f64 * 1e-9;
        let seconds = (self.admitted() as f64 * per_item).ceil() as u64;
        seconds.clamp(1, 60)
    }

    /// Stops taking items, lets the worker finish those already queued, and waits for it.
    pub fn shutdown(&self) {
        lock(&self.sender).take();
        if let Some(worker) = lock(&self.worker).take() {
            let _ = worker.join();
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn worker(
    engine: &dyn Embedder,
    receiver: &mpsc::Receiver<Job>,
    config: BatchConfig,
    shared: &Shared,
) {
    while let Ok(first) = receiver.recv() {
        let deadline = first.enqueued + config.max_wait;
        let mut batch = vec![first];
        while batch.len() < config.max_batch {
            match receiver.try_recv() {
                Ok(job) => {
                    batch.push(job);
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match receiver.recv_timeout(deadline - now) {
                Ok(job) => batch.push(job),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        run_batch(engine, batch, shared);
    }
}

fn run_batch(engine: &dyn Embedder, mut batch: Vec<Job>, shared: &Shared) {
    batch.retain(|job| !job.reply.is_closed());
    if batch.is_empty() {
        return;
    }
    let metrics = &shared.metrics;
    let started = Instant::now();
    for job in &batch {
        metrics
            .queue_wait_seconds
            .observe(started.duration_since(job.enqueued).as_secs_f64());
    }
    metrics.batch_size.observe(batch.len() as f64);

    let (images, texts): (Vec<Job>, Vec<Job>) = batch
        .into_iter()
        .partition(|job| matches!(job.input, Input::Pixels(_)));
    let n = images.len() + texts.len();
    let image_results = embed_group(&images, |jobs| {
        let pixels: Vec<&[f32]> = jobs
            .iter()
            .map(|j| match &j.input {
                Input::Pixels(p) => p.as_slice(),
                Input::Text(_) => &[],
            })
            .collect();
        engine.embed_pixels(&pixels)
    });
    let text_results = embed_group(&texts, |jobs| {
        let texts: Vec<&str> = jobs
            .iter()
            .map(|j| match &j.input {
                Input::Text(t) => t.as_str(),
                Input::Pixels(_) => "",
            })
            .collect();
        engine.embed_texts(&texts)
    });

    let elapsed = started.elapsed();
    metrics.batch_seconds.observe(elapsed.as_secs_f64());
    let per_item = elapsed.as_nanos() as u64 / n as u64;
    let old = shared.nanos_per_item.load(Ordering::Relaxed);
    let smoothed = if old == 0 {
        per_item
    } else {
        (old * 7 + per_item) / 8
    };
    shared.nanos_per_item.store(smoothed, Ordering::Relaxed);

    let images_outcome = answer(images, image_results, metrics);
    let texts_outcome = answer(texts, text_results, metrics);
    let mut last = lock(&shared.last_batch);
    let at = Instant::now();
    if let Some(outcome) = images_outcome {
        last.images = Some(LastBatch { at, outcome });
    }
    if let Some(outcome) = texts_outcome {
        last.texts = Some(LastBatch { at, outcome });
    }
}

/// Sends each job its result; returns the group's outcome (the first error), `None` for an
/// empty group.
fn answer(jobs: Vec<Job>, results: Vec<Reply>, metrics: &Metrics) -> Option<Result<(), String>> {
    if jobs.is_empty() {
        return None;
    }
    let mut failure = None;
    for (job, result) in jobs.into_iter().zip(results) {
        if let Err(e) = &result {
            metrics.item_failed();
            failure.get_or_insert_with(|| e.to_string());
        }
        let Job { reply, slot, .. } = job;
        drop(slot);
        let _ = reply.send(result);
    }
    Some(failure.map_or(Ok(()), Err))
}

/// Runs `f` on all `jobs` at once; if that fails, on each job alone, so one input the model
/// cannot handle fails only itself.
fn embed_group(
    jobs: &[Job],
    f: impl Fn(&[&Job]) -> Result<Vec<Vec<f32>>, ClipError>,
) -> Vec<Reply> {
    if jobs.is_empty() {
        return Vec::new();
    }
    let all: Vec<&Job> = jobs.iter().collect();
    match guarded(|| f(&all), jobs.len()) {
        Ok(vectors) => vectors.into_iter().map(check_finite).collect(),
        Err(e) if jobs.len() == 1 => vec![Err(e)],
        Err(_) => jobs
            .iter()
            .map(|job| match guarded(|| f(&[job]), 1) {
                Ok(mut v) => check_finite(v.remove(0)),
                Err(e) => Err(e),
            })
            .collect(),
    }
}

/// Calls the model, turning an error, a panic or a wrong number of outputs into an error.
fn guarded(
    f: impl FnOnce() -> Result<Vec<Vec<f32>>, ClipError>,
    expected: usize,
) -> Result<Vec<Vec<f32>>, ItemError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) if v.len() == expected => Ok(v),
        Ok(Ok(v)) => Err(ItemError::Model(format!(
            "{} outputs for {expected} inputs",
            v.len()
        ))),
        Ok(Err(e)) => Err(ItemError::Model(e.to_string())),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(ItemError::Model(format!("panicked: {message}")))
        }
    }
}

fn check_finite(v: Vec<f32>) -> Reply {
    if v.iter().all(|x| x.is_finite()) {
        Ok(v)
    } else {
        Err(ItemError::NonFinite)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Records batch sizes; fails any batch containing the text "bad", panics on "panic",
    /// returns NaN for "nan".
    #[derive(Default)]
    struct Fake {
        batches: Mutex<Vec<usize>>,
    }

    impl Embedder for Fake {
        fn embedding_dim(&self) -> usize {
            2
        }

        fn scoring(&self) -> clipkit_core::Scoring {
            clipkit_core::Scoring::Softmax { logit_scale: 1.0 }
        }

        fn embed_pixels(&self, pixels: &[&[f32]]) -> Result<Vec<Vec<f32>>, ClipError> {
            lock(&self.batches).push(pixels.len());
            Ok(pixels.iter().map(|p| vec![p[0], 0.0]).collect())
        }

        fn preprocess(
            &self,
            _name: &std::path::Path,
            _bytes: &[u8],
        ) -> Result<clipkit_core::Crop, ClipError> {
            unimplemented!("the server decodes images itself")
        }

        fn embed_crops(&self, _crops: Vec<clipkit_core::Crop>) -> Result<Vec<Vec<f32>>, ClipError> {
            unimplemented!("the server embeds pixels")
        }

        fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ClipError> {
            lock(&self.batches).push(texts.len());
            if texts.contains(&"panic") {
                panic!("boom");
            }
            if texts.contains(&"bad") {
                return Err(ClipError::InvalidArgument {
                    what: "text",
                    value: "bad".into(),
                    problem: "refused by the fake".into(),
                });
            }
            Ok(texts
                .iter()
                .map(|t| {
                    if *t == "nan" {
                        vec![f32::NAN]
                    } else {
                        vec![t.len() as f32]
                    }
                })
                .collect())
        }
    }

    fn batcher(fake: Arc<Fake>, max_batch: usize, wait_ms: u64, capacity: usize) -> Batcher {
        Batcher::start(
            fake,
            BatchConfig {
                max_batch,
                max_wait: Duration::from_millis(wait_ms),
                queue_capacity: capacity,
            },
            Arc::new(Metrics::default()),
        )
    }

    fn texts(t: &[&str]) -> Vec<Input> {
        t.iter().map(|s| Input::Text(s.to_string())).collect()
    }

    #[tokio::test]
    async fn concurrent_items_share_one_batch() {
        let fake = Arc::new(Fake::default());
        // A long wait: the batch closes because it is full, not because time ran out.
        let b = batcher(fake.clone(), 6, 60_000, 16);
        let (r1, r2, r3) = tokio::join!(
            async {
                let mut t = b.admit(2).unwrap();
                b.embed(&mut t, texts(&["a", "bb"])).await
            },
            async {
                let mut t = b.admit(2).unwrap();
                b.embed(&mut t, texts(&["ccc", "dddd"])).await
            },
            async {
                let mut t = b.admit(2).unwrap();
                b.embed(
                    &mut t,
                    vec![Input::Pixels(vec![7.0]), Input::Pixels(vec![8.0])],
                )
                .await
            },
        );
        assert_eq!(r1, vec![Ok(vec![1.0]), Ok(vec![2.0])]);
        assert_eq!(r2, vec![Ok(vec![3.0]), Ok(vec![4.0])]);
        assert_eq!(r3, vec![Ok(vec![7.0, 0.0]), Ok(vec![8.0, 0.0])]);
        // One batch of 6 items: 2 images and 4 texts, each group in one call.
        let mut sizes = lock(&fake.batches).clone();
        sizes.sort();
        assert_eq!(sizes, vec![2, 4]);
        assert_eq!(b.admitted(), 0);
    }

    #[tokio::test]
    async fn a_failing_item_fails_alone_and_the_worker_survives_panics() {
        let fake = Arc::new(Fake::default());
        let b = batcher(fake, 8, 1_000, 16);
        let mut t = b.admit(8).unwrap();
        let out = b
            .embed(
                &mut t,
                texts(&["ok", "bad", "fine", "panic", "nan", "x", "y", "z"]),
            )
            .await;
        assert_eq!(out[0], Ok(vec![2.0]));
        assert!(
            matches!(&out[1], Err(ItemError::Model(m)) if m == "invalid text `bad`: refused by the fake")
        );
        assert_eq!(out[2], Ok(vec![4.0]));
        assert!(matches!(&out[3], Err(ItemError::Model(m)) if m.contains("panicked: boom")));
        assert_eq!(out[4], Err(ItemError::NonFinite));
        assert_eq!(out[5..], [Ok(vec![1.0]), Ok(vec![1.0]), Ok(vec![1.0])]);
        assert!(b.worker_alive());
        assert!(b.last_batches().texts.unwrap().outcome.is_err());
        assert!(b.last_batches().images.is_none());
        let mut t = b.admit(1).unwrap();
        assert_eq!(
            b.embed(&mut t, texts(&["again"])).await,
            vec![Ok(vec![5.0])]
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_frees_up_after() {
        let fake = Arc::new(Fake::default());
        let b = batcher(fake, 4, 1, 3);
        let held = b.admit(3).unwrap();
        assert!(matches!(b.admit(1), Err(ApiError::Overloaded { .. })));
        assert!(matches!(
            b.admit(4),
            Err(ApiError::TooManyInputs { got: 4, limit: 3 })
        ));
        drop(held);
        let mut t = b.admit(1).unwrap();
        assert_eq!(b.embed(&mut t, texts(&["abc"])).await, vec![Ok(vec![3.0])]);
    }

    #[tokio::test]
    async fn shutdown_answers_queued_items_then_refuses() {
        let fake = Arc::new(Fake::default());
        let b = Arc::new(batcher(fake, 64, 200, 8));
        let b2 = b.clone();
        let queued = tokio::spawn(async move {
            let mut t = b2.admit(1).unwrap();
            b2.embed(&mut t, texts(&["queued"])).await
        });
        while b.submitted() == 0 {
            tokio::task::yield_now().await;
        }
        let b3 = b.clone();
        tokio::task::spawn_blocking(move || b3.shutdown())
            .await
            .unwrap();
        assert_eq!(queued.await.unwrap(), vec![Ok(vec![6.0])]);
        assert!(matches!(b.admit(1), Err(ApiError::ShuttingDown)));
        assert!(!b.worker_alive());
    }
}
