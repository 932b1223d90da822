//! Prometheus metrics, in the text exposition format, without a metrics framework: a few
//! counters, gauges and fixed-bucket histograms are all `/metrics` needs, and keeping them
//! here makes every name and bucket visible in one place.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// Images per second are averaged over this window.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// A histogram with fixed upper bounds (cumulative when rendered, as Prometheus wants).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// f64 bits, updated by compare-and-swap.
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| value <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut current = self.sum.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(current) + value).to_bits();
            match self.sum.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = f64::from_bits(self.sum.load(Ordering::Relaxed));
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

#[derive(Debug, Default)]
struct Counter(AtomicU64);

impl Counter {
    fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Everything `/metrics` reports.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    pub batch_size: Histogram,
    pub batch_seconds: Histogram,
    pub queue_wait_seconds: Histogram,
    pub decode_seconds: Histogram,
    images: Counter,
    texts: Counter,
    decode_failures: Counter,
    item_failures: Counter,
    rejected: Counter,
    timeouts: Counter,
    /// Completion times of recent images (end to end, decode included), for images/s.
    recent_images: Mutex<VecDeque<(Instant, u64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            requests: Mutex::default(),
            latency: Mutex::default(),
            batch_size: Histogram::new(BATCH_BUCKETS),
            batch_seconds: Histogram::new(LATENCY_BUCKETS),
            queue_wait_seconds: Histogram::new(LATENCY_BUCKETS),
            decode_seconds: Histogram::new(LATENCY_BUCKETS),
            images: Counter::default(),
            texts: Counter::default(),
            decode_failures: Counter::default(),
            item_failures: Counter::default(),
            rejected: Counter::default(),
            timeouts: Counter::default(),
            recent_images: Mutex::default(),
        }
    }
}

/// Live numbers read from the batcher when metrics are rendered.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueGauges {
    pub admitted_items: usize,
    pub capacity: usize,
    pub requests_in_flight: usize,
}

impl Metrics {
    pub fn record_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        *lock(&self.requests)
            .entry((route.to_owned(), method.to_owned(), status))
            .or_default() += 1;
        lock(&self.latency)
            .entry(route.to_owned())
            .or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
            .observe(seconds);
        if status == 429 {
            self.rejected.add(1);
        }
        if status == 504 {
            self.timeouts.add(1);
        }
    }

    /// `n` images embedded end to end (decoded, preprocessed, through the model).
    pub fn images_done(&self, n: u64) {
        self.images.add(n);
        let now = Instant::now();
        let mut recent = lock(&self.recent_images);
        recent.push_back((now, n));
        while recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            recent.pop_front();
        }
    }

    pub fn texts_done(&self, n: u64) {
        self.texts.add(n);
    }

    pub fn decode_failed(&self) {
        self.decode_failures.add(1);
    }

    pub fn item_failed(&self) {
        self.item_failures.add(1);
    }

    pub fn images_total(&self) -> u64 {
        self.images.get()
    }

    /// Images per second over the last ten seconds (or since start, if sooner).
    pub fn images_per_second(&self) -> f64 {
        let now = Instant::now();
        let recent = lock(&self.recent_images);
        let n: u64 = recent
            .iter()
            .filter(|(t, _)| now.duration_since(*t) <= RATE_WINDOW)
            .map(|(_, n)| n)
            .sum();
        let window = RATE_WINDOW
            .min(now.duration_since(self.started))
            .as_secs_f64();
        if window > 0.0 {
            n as f64 / window
        } else {
            0.0
        }
    }

    pub fn render(&self, gauges: QueueGauges) -> String {
        let mut out = String::new();
        let help = |out: &mut String, name: &str, kind: &str, text: &str| {
            let _ = writeln!(out, "# HELP {name} {text}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        };
        help(
            &mut out,
            "clipkit_http_requests_total",
            "counter",
            "HTTP requests by route, method and status.",
        );
        for ((route, method, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "clipkit_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                escape(route),
                escape(method)
            );
        }
        help(
            &mut out,
            "clipkit_http_request_duration_seconds",
            "histogram",
            "Request latency by route, body reading included.",
        );
        for (route, h) in lock(&self.latency).iter() {
            h.render(
                &mut out,
                "clipkit_http_request_duration_seconds",
                &format!("route=\"{}\"", escape(route)),
            );
        }
        let histograms = [
            (
                "clipkit_batch_size",
                "Items (images + texts) per model batch.",
                &self.batch_size,
            ),
            (
                "clipkit_batch_duration_seconds",
                "Time the model took per batch.",
                &self.batch_seconds,
            ),
            (
                "clipkit_queue_wait_seconds",
                "Time items waited in the queue before their batch ran.",
                &self.queue_wait_seconds,
            ),
            (
                "clipkit_image_decode_seconds",
                "Decode + preprocess time per image (blocking pool).",
                &self.decode_seconds,
            ),
        ];
        for (name, text, h) in histograms {
            help(&mut out, name, "histogram", text);
            h.render(&mut out, name, "");
        }
        let counters = [
            (
                "clipkit_images_embedded_total",
                "Images embedded end to end.",
                self.images.get(),
            ),
            (
                "clipkit_texts_embedded_total",
                "Texts embedded.",
                self.texts.get(),
            ),
            (
                "clipkit_image_decode_failures_total",
                "Images that could not be decoded (the request got 4xx).",
                self.decode_failures.get(),
            ),
            (
                "clipkit_item_failures_total",
                "Items the model failed on (the request got 5xx).",
                self.item_failures.get(),
            ),
            (
                "clipkit_rejected_total",
                "Requests refused with 429 because the server was full.",
                self.rejected.get(),
            ),
            (
                "clipkit_timeouts_total",
                "Requests that ran past the request timeout (504).",
                self.timeouts.get(),
            ),
        ];
        for (name, text, v) in counters {
            help(&mut out, name, "counter", text);
            let _ = writeln!(out, "{name} {v}");
        }
        let gauge_values = [
            (
                "clipkit_images_per_second",
                "Images embedded per second over the last 10 s, decode included.",
                self.images_per_second(),
            ),
            (
                "clipkit_queue_items",
                "Items admitted and not yet answered (decoding, queued or in the model).",
                gauges.admitted_items as f64,
            ),
            (
                "clipkit_queue_capacity",
                "Most items admitted at once.",
                gauges.capacity as f64,
            ),
            (
                "clipkit_requests_in_flight",
                "Requests being handled now.",
                gauges.requests_in_flight as f64,
            ),
            (
                "clipkit_uptime_seconds",
                "Seconds since the server started.",
                self.started.elapsed().as_secs_f64(),
            ),
        ];
        for (name, text, v) in gauge_values {
            help(&mut out, name, "gauge", text);
            let _ = writeln!(out, "{name} {v}");
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Metrics must keep working even if a thread panicked while holding a lock.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[1.0, 2.0]);
        h.observe(0.5);
        h.observe(1.5);
        h.observe(5.0);
        let mut out = String::new();
        h.render(&mut out, "x", "");
        assert!(out.contains("x_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"2\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_sum 7\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }

    #[test]
    fn requests_are_counted_by_route_and_status() {
        let m = Metrics::default();
        m.record_request("/v1/embeddings", "POST", 200, 0.01);
        m.record_request("/v1/embeddings", "POST", 200, 0.02);
        m.record_request("/v1/embeddings", "POST", 429, 0.0);
        let text = m.render(QueueGauges::default());
        assert!(text.contains(
            "clipkit_http_requests_total{route=\"/v1/embeddings\",method=\"POST\",status=\"200\"} 2"
        ));
        assert!(text.contains("clipkit_rejected_total 1"));
    }
}
