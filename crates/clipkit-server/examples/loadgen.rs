//! Load generator for `clipkit serve` (a benchmark, not a test): `--concurrency` clients
//! send `--requests` image embedding requests in total to `/v1/embeddings` on a loopback
//! address, and it reports throughput, latency percentiles, status counts and (with `--pid`)
//! the server's resident memory sampled while it ran. It stops by itself after the requests.
//!
//! ```sh
//! cargo run --release -p clipkit-server --example loadgen -- \
//!     --url http://127.0.0.1:8080 --image fixtures/images/chelsea.png \
//!     --concurrency 64 --requests 2000 --pid "$(pgrep -n clipkit)"
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;

struct Args {
    url: String,
    image: String,
    concurrency: usize,
    requests: usize,
    pid: Option<u32>,
}

fn parse_args() -> Args {
    let mut args = Args {
        url: "http://127.0.0.1:8080".into(),
        image: "fixtures/images/chelsea.png".into(),
        concurrency: 64,
        requests: 1000,
        pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = value(),
            "--image" => args.image = value(),
            "--concurrency" => args.concurrency = value().parse().expect("a number"),
            "--requests" => args.requests = value().parse().expect("a number"),
            "--pid" => args.pid = Some(value().parse().expect("a pid")),
            other => panic!("unknown flag {other}"),
        }
    }
    let host = args
        .url
        .trim_start_matches("http://")
        .split([':', '/'])
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        host == "127.0.0.1" || host == "localhost" || host == "[::1]",
        "loadgen only sends traffic to loopback addresses, not {host}"
    );
    args
}

/// Resident set size of a process, in MiB (Linux).
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let bytes = std::fs::read(&args.image).expect("the image file");
    let body = Arc::new(
        json!({
            "modality": "image",
            "input": format!(
                "data:image/png;base64,{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            ),
        })
        .to_string(),
    );
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let url = format!("{}/v1/embeddings", args.url.trim_end_matches('/'));
    let remaining = Arc::new(AtomicUsize::new(args.requests));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(args.requests)));
    let statuses = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let done = Arc::new(AtomicU64::new(0));

    let rss_start = args.pid.and_then(rss_mib);
    let rss_max = Arc::new(Mutex::new(rss_start.unwrap_or(0.0)));
    let sampler = args.pid.map(|pid| {
        let rss_max = rss_max.clone();
        let done = done.clone();
        tokio::spawn(async move {
            while done.load(Ordering::Relaxed) == 0 {
                if let Some(r) = rss_mib(pid) {
                    let mut m = rss_max.lock().unwrap();
                    *m = m.max(r);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    });

    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..args.concurrency {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        let (remaining, latencies, statuses) =
            (remaining.clone(), latencies.clone(), statuses.clone());
        clients.push(tokio::spawn(async move {
            while remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let t = Instant::now();
                let result = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.as_str().to_owned())
                    .send()
                    .await;
                let key = match result {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let _ = r.bytes().await;
                        if status == 200 {
                            latencies.lock().unwrap().push(t.elapsed().as_secs_f64());
                        }
                        status.to_string()
                    }
                    Err(e) => format!(
                        "error: {}",
                        if e.is_timeout() {
                            "timeout"
                        } else {
                            "transport"
                        }
                    ),
                };
                *statuses.lock().unwrap().entry(key).or_default() += 1;
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    done.store(1, Ordering::Relaxed);
    if let Some(s) = sampler {
        s.await.unwrap();
    }
    let rss_end = args.pid.and_then(rss_mib);

    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(f64::total_cmp);
    let statuses = statuses.lock().unwrap().clone();
    let ok = statuses.get("200").copied().unwrap_or(0);
    let summary = json!({
        "url": url,
        "concurrency": args.concurrency,
        "requests": args.requests,
        "seconds": elapsed,
        "statuses": statuses,
        "ok_per_sec": ok as f64 / elapsed,
        "latency_ms_ok": {
            "p50": percentile(&lat, 50.0) * 1e3,
            "p90": percentile(&lat, 90.0) * 1e3,
            "p99": percentile(&lat, 99.0) * 1e3,
            "max": lat.last().copied().unwrap_or(f64::NAN) * 1e3,
        },
        "server_rss_mib": {
            "start": rss_start,
            "max_during": args.pid.map(|_| *rss_max.lock().unwrap()),
            "end": rss_end,
        },
    });
    println!("{}", serde_json::to_string_pretty(&summary).unwrap());
}
