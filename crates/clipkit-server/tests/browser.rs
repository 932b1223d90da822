//! The web page in a real browser: Debian's chromium, driven headless through chromedriver
//! (WebDriver, via fantoccini), searches the collection and classifies an image, and what it
//! shows is checked against the API's own answers. Fails — never skips — when chromium or
//! chromedriver is missing: `tools/test` installs them.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

fn find_program(name: &str, fallbacks: &[&str]) -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| fallbacks.iter().map(PathBuf::from).find(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "{name} not found: the browser test needs Debian's chromium and chromium-driver \
                 (tools/test installs them: apt-get install -y chromium chromium-driver)"
            )
        })
}

/// chromedriver on a loopback port, killed when the test ends.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> Driver {
    let chromedriver = find_program("chromedriver", &["/usr/bin/chromedriver"]);
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver { child, port };
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..200 {
        let status = http
            .get(format!("http://127.0.0.1:{port}/status"))
            .send()
            .await;
        if let Ok(r) = status {
            let body: Value = r.json().await.unwrap_or_default();
            if body["value"]["ready"] == true {
                return driver;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chromedriver did not become ready");
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let chromium = find_program("chromium", &["/usr/bin/chromium"]);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a chromium session")
}

/// Polls a JS expression until it is true (bounded).
async fn wait_js(client: &Client, expression: &str) {
    let script = format!("return Boolean({expression});");
    for _ in 0..600 {
        if client.execute(&script, vec![]).await.unwrap() == json!(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never true in the page: {expression}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_searches_and_classifies_in_a_real_browser() {
    let clip = load_clip();
    let dir = tempfile::tempdir().unwrap();
    let store = build_store(dir.path(), &clip);
    let s = TestServer::start(config(), Some(store)).await;
    let driver = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let client = browser(&driver, profile.path()).await;
    client.goto(&s.base).await.unwrap();

    // The header says what is served, once /v1/info has answered.
    wait_js(
        &client,
        "document.getElementById('model').textContent.includes('tiny-clip')",
    )
    .await;
    let header = client
        .find(Locator::Id("model"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        header.contains(&format!("{} images", PHOTOS.len())),
        "{header}"
    );

    // Search: type, submit, and the grid shows what the API returns, in its order.
    let query = "a rocket launch";
    let search_box = client.find(Locator::Id("search-q")).await.unwrap();
    search_box.send_keys(query).await.unwrap();
    client
        .find(Locator::Id("search-go"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#results .result"))
        .await
        .unwrap();
    let (_, expected) = s
        .get_json("/v1/search", "/v1/search?q=a%20rocket%20launch&k=12")
        .await;
    let expected: Vec<String> = expected["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(expected.len(), PHOTOS.len());
    let cards = client
        .find_all(Locator::Css("#results .result"))
        .await
        .unwrap();
    let mut shown = Vec::new();
    for card in &cards {
        shown.push(card.attr("data-path").await.unwrap().unwrap());
    }
    assert_eq!(shown, expected);
    let status = client
        .find(Locator::Id("search-status"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(status, format!("{} results for “{query}”", expected.len()));
    // The thumbnails actually load (served by /v1/thumbnails), at most 256 px wide.
    wait_js(
        &client,
        "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)",
    )
    .await;
    let widths = client
        .execute(
            "return [...document.querySelectorAll('#results img')].map(i => i.naturalWidth);",
            vec![],
        )
        .await
        .unwrap();
    assert!(widths
        .as_array()
        .unwrap()
        .iter()
        .all(|w| w.as_u64().unwrap() <= 256));

    // Classify: choose a file, type labels, submit; the image is shown beside the bars, and
    // the bars are the API's probabilities, best first.
    let labels = ["a photo of a cat", "a photo of a rocket", "a cup of coffee"];
    let file = client.find(Locator::Id("classify-file")).await.unwrap();
    file.send_keys(
        &image_path("chelsea.png")
            .canonicalize()
            .unwrap()
            .to_string_lossy(),
    )
    .await
    .unwrap();
    let textarea = client.find(Locator::Id("classify-labels")).await.unwrap();
    textarea.clear().await.unwrap();
    textarea.send_keys(&labels.join("\n")).await.unwrap();
    client
        .find(Locator::Id("classify-go"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#bars .bar"))
        .await
        .unwrap();
    let (_, api) = s
        .post_json(
            "/v1/classify",
            &json!({"image": data_uri("chelsea.png"), "labels": labels}),
        )
        .await;
    let mut expected: Vec<(String, f64)> = api["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["label"].as_str().unwrap().to_owned(),
                s["prob"].as_f64().unwrap(),
            )
        })
        .collect();
    expected.sort_by(|a, b| b.1.total_cmp(&a.1));
    let bars = client.find_all(Locator::Css("#bars .bar")).await.unwrap();
    assert_eq!(bars.len(), labels.len());
    for (bar, (label, prob)) in bars.iter().zip(&expected) {
        assert_eq!(&bar.attr("data-label").await.unwrap().unwrap(), label);
        let text = bar.text().await.unwrap();
        assert!(text.contains(label.as_str()), "{text}");
        assert!(
            text.contains(&format!("{:.1}%", prob * 100.0)),
            "{text} vs {prob}"
        );
        let shown: f64 = bar
            .attr("data-prob")
            .await
            .unwrap()
            .unwrap()
            .parse()
            .unwrap();
        assert!((shown - prob).abs() < 1e-6);
    }
    let status = client
        .find(Locator::Id("classify-status"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(status, format!("most likely: {}", expected[0].0));
    // The dropped image itself is displayed beside the chart.
    wait_js(
        &client,
        "document.getElementById('classify-preview').naturalWidth === 451",
    )
    .await;
    let visible = client
        .execute(
            "return !document.getElementById('classification').hidden;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(visible, json!(true));

    // A classification without labels is refused with a message.
    textarea.clear().await.unwrap();
    client
        .find(Locator::Id("classify-go"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        &client,
        "document.getElementById('classify-status').classList.contains('error')",
    )
    .await;

    client.close().await.unwrap();
    drop(driver);
    s.stop().await.unwrap();
}
