//! `clipkit serve` end to end: the real binary on an ephemeral loopback port, with a
//! collection indexed by `clipkit index add`, answering over HTTP, then stopped with SIGTERM
//! and draining cleanly.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use common::{clipkit, fixtures};

#[test]
fn serve_answers_over_http_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for name in ["chelsea.png", "rocket.png", "coffee.png"] {
        std::fs::copy(fixtures().join("images").join(name), photos.join(name)).unwrap();
    }
    let model = fixtures().join("models/tiny-quickgelu");
    let store = dir.path().join("store");
    let indexed = clipkit()
        .args(["index", "add", "-q", "-m"])
        .arg(&model)
        .arg("--store")
        .arg(&store)
        .arg(&photos)
        .output()
        .unwrap();
    assert!(
        indexed.status.success(),
        "{}",
        String::from_utf8_lossy(&indexed.stderr)
    );

    // No --model: the store's own model is used, as for `clipkit search`.
    let mut child = clipkit()
        .args(["serve", "--addr", "127.0.0.1:0", "--store"])
        .arg(&store)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let base = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("serve prints where it listens");
        if let Some(url) = line.strip_prefix("clipkit serve: listening on ") {
            break url.to_owned();
        }
    };
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut ready = false;
    for _ in 0..400 {
        if http
            .get(format!("{base}/readyz"))
            .send()
            .is_ok_and(|r| r.status() == 200)
        {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(ready, "never ready");

    // Same vector as `clipkit embed`.
    let embedded = clipkit()
        .args(["embed", "--format", "json", "-m"])
        .arg(&model)
        .args(["--text", "a photo of a cat"])
        .output()
        .unwrap();
    let embedded: Value = serde_json::from_slice(&embedded.stdout).unwrap();
    let expected: Vec<f64> = embedded["texts"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let response: Value = http
        .post(format!("{base}/v1/embeddings"))
        .json(&json!({"input": "a photo of a cat"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let got: Vec<f64> = response["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let dot: f64 = got.iter().zip(&expected).map(|(a, b)| a * b).sum();
    assert!(dot > 0.99999, "cosine {dot}");
    assert_eq!(response["model"], model.to_string_lossy().as_ref());

    let search: Value = http
        .get(format!("{base}/v1/search?q=a%20rocket&k=2"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(search["results"].as_array().unwrap().len(), 2, "{search}");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status:?}");
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("clipkit serve: stopped")),
        "{rest:?}"
    );
}

#[test]
fn serve_refuses_inconsistent_flags() {
    let model = fixtures().join("models/tiny-quickgelu");
    for (flags, needle) in [
        (
            vec!["--max-batch", "64", "--batch-size", "32"],
            "--max-batch",
        ),
        (
            vec!["--queue-capacity", "8", "--max-batch", "16"],
            "queue capacity",
        ),
        (vec!["--timeout=-1"], "--timeout"),
    ] {
        let out = clipkit()
            .args(["serve", "--addr", "127.0.0.1:0", "-m"])
            .arg(&model)
            .args(&flags)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flags:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{flags:?}: {stderr}");
    }
}
