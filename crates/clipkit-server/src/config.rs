//! What a server is allowed to do: batch shape and every limit that keeps memory and latency
//! bounded under load. The CLI validates flags into this; library users fill it directly.

use std::time::Duration;

/// How requests are merged into model batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most items (images or texts) in one forward pass.
    pub max_batch: usize,
    /// How long the first item of a batch may wait for others to join it. Under load the
    /// queue fills while the model runs, so batches are full without waiting at all.
    pub max_wait: Duration,
    /// Items admitted (decoding, queued or in the model) at once; more are refused with 429.
    pub queue_capacity: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_wait: Duration::from_millis(5),
            queue_capacity: 512,
        }
    }
}

/// Limits on what one request, and all of them together, may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request bodies larger than this are refused with 413 before they are read in full.
    pub body_bytes: usize,
    /// Images with more pixels are refused (413) from their header, before decoding.
    pub max_pixels: u64,
    /// Images plus texts in one request (labels × templates count as texts).
    pub max_inputs: usize,
    /// Whole-request deadline; past it the client gets 504 and queued work is dropped.
    pub request_timeout: Duration,
    /// Requests being handled at once (bodies included); more are refused with 429 before
    /// their body is read, which bounds buffered bodies to this × `body_bytes`.
    pub max_concurrent_requests: usize,
    /// Images decoded and preprocessed at once (on the blocking pool).
    pub decode_concurrency: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 32 << 20,
            max_pixels: 40_000_000,
            max_inputs: 256,
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 256,
            decode_concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// Everything a server needs besides the model and the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The `model` name reported in responses and accepted in requests.
    pub served_model_name: String,
    pub batch: BatchConfig,
    pub limits: Limits,
}

impl ServerConfig {
    pub fn new(served_model_name: impl Into<String>) -> Self {
        Self {
            served_model_name: served_model_name.into(),
            batch: BatchConfig::default(),
            limits: Limits::default(),
        }
    }

    /// Checks that the numbers make sense together.
    pub fn validate(&self) -> Result<(), String> {
        let b = &self.batch;
        let l = &self.limits;
        if b.max_batch == 0 {
            return Err("max batch must be at least 1".into());
        }
        if b.queue_capacity < b.max_batch {
            return Err(format!(
                "queue capacity ({}) must be at least the max batch ({})",
                b.queue_capacity, b.max_batch
            ));
        }
        if l.max_inputs == 0 || l.max_inputs > b.queue_capacity {
            return Err(format!(
                "max inputs per request ({}) must be between 1 and the queue capacity ({})",
                l.max_inputs, b.queue_capacity
            ));
        }
        if l.body_bytes < 1024 {
            return Err("the body limit must be at least 1 KiB".into());
        }
        if l.max_pixels == 0 {
            return Err("max pixels must be at least 1".into());
        }
        if l.request_timeout.is_zero() {
            return Err("the request timeout must be positive".into());
        }
        if l.max_concurrent_requests == 0 || l.decode_concurrency == 0 {
            return Err("concurrency limits must be at least 1".into());
        }
        Ok(())
    }
}
