//! The real server on a loopback port, every endpoint exercised over HTTP, every JSON
//! response checked against the server's own OpenAPI spec, and results checked against the
//! library computing the same thing directly.

mod common;

use std::time::Duration;

use clipkit_core::scores;
use clipkit_core::Embedder;
use common::*;
use serde_json::{json, Value};

fn multipart_image(name: &str) -> reqwest::multipart::Part {
    reqwest::multipart::Part::bytes(image_bytes(name))
        .file_name(name.to_owned())
        .mime_str("image/png")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_match_the_library_for_texts_and_images() {
    let clip = load_clip();
    let s = TestServer::start(config(), None).await;

    // One string.
    let (status, body) = s
        .post_json(
            "/v1/embeddings",
            &json!({"input": "a photo of a cat", "model": "tiny-clip"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "tiny-clip");
    let direct = clip.embed_texts(&["a photo of a cat", "a dog"]).unwrap();
    let got = vector(&body["data"][0]["embedding"]);
    assert_eq!(got.len(), clip.embedding_dim());
    assert!((norm(&got) - 1.0).abs() < 1e-4);
    assert!(cosine(&got, &direct[0]) > 0.99999);
    let tokens = clip.tokenizer().encode("a photo of a cat").unwrap().len() as u64;
    assert_eq!(body["usage"]["prompt_tokens"], tokens);
    assert_eq!(body["usage"]["total_tokens"], tokens);

    // A list, in order; the model field may be left out.
    let (status, body) = s
        .post_json(
            "/v1/embeddings",
            &json!({"input": ["a photo of a cat", "a dog"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["index"], i);
        assert_eq!(d["object"], "embedding");
        assert!(cosine(&vector(&d["embedding"]), &direct[i]) > 0.99999);
    }

    // Images: a data: URI and bare base64 of the same file give the library's embedding.
    let direct = clip
        .embed_image_files(&[image_path("chelsea.png"), image_path("rocket.png")])
        .into_iter()
        .map(Result::unwrap)
        .collect::<Vec<_>>();
    let (status, body) = s
        .post_json(
            "/v1/embeddings",
            &json!({"modality": "image", "input": [data_uri("chelsea.png"), b64(&image_bytes("rocket.png"))]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for (i, d) in body["data"].as_array().unwrap().iter().enumerate() {
        let v = vector(&d["embedding"]);
        assert!((norm(&v) - 1.0).abs() < 1e-4);
        assert!(cosine(&v, &direct[i]) > 0.99999, "image {i}");
    }
    let config = clipkit_core::ClipConfig::from_file(&model_dir().join("config.json")).unwrap();
    let vision = &config.vision_config;
    let per_image = (vision.image_size / vision.patch_size).pow(2) + 1;
    assert_eq!(body["usage"]["prompt_tokens"], 2 * per_image as u64);

    // encoding_format=base64: little-endian f32s, OpenAI's encoding.
    let (status, body) = s
        .post_json(
            "/v1/embeddings",
            &json!({"input": "a dog", "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let floats: Vec<f32> = raw
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let dog = clip.embed_texts(&["a dog"]).unwrap().remove(0);
    assert!(cosine(&floats, &dog) > 0.99999);

    // A text over 77 tokens is truncated with a warning, not refused.
    let long = "word ".repeat(120);
    let (status, body) = s.post_json("/v1/embeddings", &json!({"input": long})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["warnings"][0].as_str().unwrap().contains("tokens"));

    let (status, body) = s.get_json("/v1/models", "/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(body["data"][0]["id"], "tiny-clip");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_right_4xx_and_the_server_keeps_serving() {
    let mut c = config();
    c.limits.body_bytes = 256 << 10;
    c.limits.max_pixels = 1_000_000;
    c.limits.max_inputs = 8;
    c.batch.queue_capacity = 64;
    let s = TestServer::start(c, None).await;
    let post_raw = |route: &'static str, content_type: &'static str, body: Vec<u8>| {
        s.http
            .post(s.url(route))
            .header("content-type", content_type)
            .body(body)
    };

    // Malformed JSON → 400.
    let (status, _, body) = s
        .json(
            "/v1/embeddings",
            post_raw(
                "/v1/embeddings",
                "application/json",
                b"{\"input\": [".to_vec(),
            ),
        )
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_json"), "{body}");
    // Wrong content type → 415, on JSON-only and JSON-or-multipart routes alike.
    for route in ["/v1/embeddings", "/v1/classify", "/v1/similarity"] {
        let (status, _, body) = s
            .json(
                route,
                post_raw(route, "text/plain", b"{\"input\":\"x\"}".to_vec()),
            )
            .await;
        assert_eq!(
            (status, code(&body)),
            (415, "unsupported_media_type"),
            "{route}"
        );
    }
    let (status, _, body) = s
        .json(
            "/v1/embeddings",
            s.http
                .post(s.url("/v1/embeddings"))
                .body("{\"input\":\"x\"}"),
        )
        .await;
    assert_eq!(status, 415, "no content type: {body}");
    // Valid JSON of the wrong shape → 422.
    for bad in [
        json!({"inputs": "x"}),
        json!({"input": 5}),
        json!({"input": []}),
        json!({"input": "x", "modality": "audio"}),
    ] {
        let (status, body) = s.post_json("/v1/embeddings", &bad).await;
        assert_eq!(
            (status, code(&body)),
            (422, "invalid_request"),
            "{bad}: {body}"
        );
    }
    let (status, body) = s
        .post_json("/v1/embeddings", &json!({"input": "x", "dimensions": 3}))
        .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (422, Some("dimensions"))
    );
    let (status, body) = s
        .post_json("/v1/embeddings", &json!({"input": "x", "model": "gpt-4"}))
        .await;
    assert_eq!((status, code(&body)), (404, "model_not_found"));
    // Too many inputs → 413 before any work.
    let (status, body) = s
        .post_json("/v1/embeddings", &json!({"input": vec!["x"; 9]}))
        .await;
    assert_eq!((status, code(&body)), (413, "too_many_inputs"));
    // Oversized body → 413, declared (Content-Length) or not.
    let big = json!({"input": "a".repeat(300 << 10)})
        .to_string()
        .into_bytes();
    let (status, _, body) = s
        .json(
            "/v1/embeddings",
            post_raw("/v1/embeddings", "application/json", big.clone()),
        )
        .await;
    assert_eq!((status, code(&body)), (413, "payload_too_large"), "{body}");
    let stream = futures_util::stream::iter(
        big.chunks(16 << 10)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let (status, _, body) = s
        .json(
            "/v1/embeddings",
            s.http
                .post(s.url("/v1/embeddings"))
                .header("content-type", "application/json")
                .body(reqwest::Body::wrap_stream(stream)),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (413, "payload_too_large"),
        "chunked: {body}"
    );

    // Corrupt, empty, non-image and truncated images → 422 naming the input.
    let png = image_bytes("wide.png");
    for (i, bad) in [
        b64(b"definitely not an image"),
        b64(&png[..png.len() / 3]),
        "data:image/png;base64,".to_owned(),
        "https://example.com/cat.png".to_owned(),
    ]
    .into_iter()
    .enumerate()
    {
        let (status, body) = s
            .post_json(
                "/v1/embeddings",
                &json!({"modality": "image", "input": [data_uri("camera.png"), bad]}),
            )
            .await;
        assert_eq!(
            (status, code(&body)),
            (422, "invalid_image"),
            "case {i}: {body}"
        );
        assert_eq!(body["error"]["index"], 1, "case {i}");
    }
    // An image over the pixel limit → 413, from its header.
    let huge = {
        let img = image::GrayImage::new(1200, 1000);
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    };
    let (status, body) = s
        .post_json(
            "/v1/embeddings",
            &json!({"modality": "image", "input": b64(&huge)}),
        )
        .await;
    assert_eq!((status, code(&body)), (413, "image_too_large"), "{body}");

    // Classification without labels, with a bad template, with a bad chart type.
    let (status, body) = s
        .post_json(
            "/v1/classify",
            &json!({"image": data_uri("camera.png"), "labels": []}),
        )
        .await;
    assert_eq!((status, code(&body)), (422, "empty_labels"));
    let (status, body) = s
        .post_json("/v1/classify", &json!({"image": data_uri("camera.png")}))
        .await;
    assert_eq!((status, code(&body)), (422, "empty_labels"));
    let (status, body) = s
        .post_json(
            "/v1/classify",
            &json!({"image": data_uri("camera.png"), "labels": ["cat"], "templates": ["no placeholder"]}),
        )
        .await;
    assert_eq!((status, code(&body)), (422, "bad_template"));
    let (status, _, body) = s
        .json(
            "/v1/classify",
            s.http
                .post(s.url("/v1/classify?chart=svg"))
                .json(&json!({"image": data_uri("camera.png"), "labels": ["cat"]})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (422, Some("chart"))
    );
    let form = reqwest::multipart::Form::new().text("label", "cat");
    let (status, _, body) = s
        .json(
            "/v1/classify",
            s.http.post(s.url("/v1/classify")).multipart(form),
        )
        .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (422, Some("image"))
    );
    let (status, _, body) = s
        .json(
            "/v1/classify",
            post_raw(
                "/v1/classify",
                "multipart/form-data; boundary=xyz",
                b"--xyz\r\nnot a part".to_vec(),
            ),
        )
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_multipart"), "{body}");
    let (status, body) = s
        .post_json("/v1/similarity", &json!({"images": [], "texts": ["a"]}))
        .await;
    assert_eq!((status, code(&body)), (422, "invalid_request"));

    // No store attached: search is 404 no_store.
    let (status, body) = s.get_json("/v1/search", "/v1/search?q=cat").await;
    assert_eq!((status, code(&body)), (404, "no_store"));

    // Unknown routes and wrong methods.
    let (status, body) = s.get_json("/v2/nothing", "/v2/nothing").await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let (status, body) = s.get_json("/v1/embeddings", "/v1/embeddings").await;
    assert_eq!((status, code(&body)), (405, "method_not_allowed"));
    let (status, _, body) = s.json("/healthz", s.http.delete(s.url("/healthz"))).await;
    assert_eq!((status, code(&body)), (405, "method_not_allowed"));

    // After all that, the server still works, and the failures were counted.
    let (status, body) = s
        .post_json(
            "/v1/embeddings",
            &json!({"modality": "image", "input": data_uri("rocket.png")}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = s.get_json("/healthz", "/healthz").await;
    assert_eq!(status, 200);
    assert!(s.metric("clipkit_image_decode_failures_total").await >= 3.0);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_and_similarity_match_the_library() {
    let clip = load_clip();
    let s = TestServer::start(config(), None).await;
    let labels = ["a photo of a cat", "a photo of a rocket", "a cup of coffee"];
    let image = clip
        .embed_image_files(&[image_path("chelsea.png")])
        .remove(0)
        .unwrap();
    let label_vectors = clip
        .label_embeddings(&labels.map(String::from), &[])
        .unwrap();
    let logits = scores::logits(
        std::slice::from_ref(&image),
        &label_vectors,
        clip.logit_scale(),
    )
    .remove(0);
    let probs = scores::softmax(&logits);

    let (status, body) = s
        .post_json(
            "/v1/classify",
            &json!({"image": data_uri("chelsea.png"), "labels": labels}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // CLIP's head: a softmax over the labels, and the response says so.
    assert_eq!(body["probability"], "softmax");
    let got = body["scores"].as_array().unwrap();
    assert_eq!(got.len(), 3);
    let mut total = 0.0;
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g["label"], labels[i], "label order kept");
        assert!(
            (g["logit"].as_f64().unwrap() as f32 - logits[i]).abs() < 1e-3 * clip.logit_scale()
        );
        assert!((g["prob"].as_f64().unwrap() as f32 - probs[i]).abs() < 1e-3);
        total += g["prob"].as_f64().unwrap();
    }
    assert!((total - 1.0).abs() < 1e-4);

    // top_k: best first; templates: prompt-ensembled like the library.
    let templates = ["a photo of a {}.", "a drawing of a {}."];
    let ensembled = clip
        .label_embeddings(
            &["cat".into(), "rocket".into()],
            &templates.map(String::from),
        )
        .unwrap();
    let elogits =
        scores::logits(std::slice::from_ref(&image), &ensembled, clip.logit_scale()).remove(0);
    let eprobs = scores::softmax(&elogits);
    let best = scores::top_k(&eprobs, 1)[0];
    let (status, body) = s
        .post_json(
            "/v1/classify",
            &json!({"image": data_uri("chelsea.png"), "labels": ["cat", "rocket"], "templates": templates, "top_k": 1}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scores"].as_array().unwrap().len(), 1);
    assert_eq!(body["scores"][0]["label"], ["cat", "rocket"][best]);
    assert!((body["scores"][0]["prob"].as_f64().unwrap() as f32 - eprobs[best]).abs() < 1e-3);

    // Multipart, labels as a textarea would send them; same numbers as JSON.
    let form = reqwest::multipart::Form::new()
        .part("image", multipart_image("chelsea.png"))
        .text("labels", labels.join("\n"));
    let (status, _, mbody) = s
        .json(
            "/v1/classify",
            s.http.post(s.url("/v1/classify")).multipart(form),
        )
        .await;
    assert_eq!(status, 200, "{mbody}");
    for i in 0..3 {
        assert!(
            (mbody["scores"][i]["prob"].as_f64().unwrap() - got[i]["prob"].as_f64().unwrap()).abs()
                < 1e-6
        );
    }

    // ?chart=png: the image beside the bars, as a PNG.
    let response = s
        .http
        .post(s.url("/v1/classify?chart=png"))
        .json(&json!({"image": data_uri("chelsea.png"), "labels": labels}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    let png = response.bytes().await.unwrap();
    let chart = image::load_from_memory_with_format(&png, image::ImageFormat::Png).unwrap();
    assert_eq!((chart.width(), chart.height()), (1100, 480));

    // Similarity: the logits matrix, JSON and multipart.
    let texts = ["a cat", "a rocket"];
    let images = clip
        .embed_image_files(&[image_path("chelsea.png"), image_path("rocket.png")])
        .into_iter()
        .map(Result::unwrap)
        .collect::<Vec<_>>();
    let tv = clip.embed_texts(&texts).unwrap();
    let expected = scores::logits(&images, &tv, clip.logit_scale());
    let (status, body) = s
        .post_json(
            "/v1/similarity",
            &json!({"images": [data_uri("chelsea.png"), data_uri("rocket.png")], "texts": texts}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let form = reqwest::multipart::Form::new()
        .part("image", multipart_image("chelsea.png"))
        .part("image", multipart_image("rocket.png"))
        .text("text", texts[0])
        .text("text", texts[1]);
    let (mstatus, _, mbody) = s
        .json(
            "/v1/similarity",
            s.http.post(s.url("/v1/similarity")).multipart(form),
        )
        .await;
    assert_eq!(mstatus, 200, "{mbody}");
    for b in [&body, &mbody] {
        assert!((b["logit_scale"].as_f64().unwrap() as f32 - clip.logit_scale()).abs() < 1e-4);
        assert_eq!(b["probability"], "softmax");
        assert!(b.get("logit_bias").is_none(), "CLIP has no logit bias: {b}");
        for i in 0..2 {
            let row = vector(&b["logits_per_image"][i]);
            let prow = vector(&b["probs_per_image"][i]);
            assert!((prow.iter().sum::<f32>() - 1.0).abs() < 1e-4);
            for j in 0..2 {
                assert!(
                    (row[j] - expected[i][j]).abs() < 1e-3 * clip.logit_scale(),
                    "{i},{j}"
                );
            }
        }
    }
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_by_text_and_image_with_thumbnails() {
    let clip = load_clip();
    let dir = tempfile::tempdir().unwrap();
    let store = build_store(dir.path(), &clip);
    // What `clipkit search` computes for the same query, straight from the library.
    let q = clip.embed_texts(&["a rocket launch"]).unwrap().remove(0);
    let expected =
        clipkit_index::search::search(&*store, &q, 3, None, &Default::default()).unwrap();
    let s = TestServer::start(config(), Some(store)).await;

    let (status, body) = s
        .get_json("/v1/search", "/v1/search?q=a%20rocket%20launch&k=3")
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for (i, (r, e)) in results.iter().zip(&expected).enumerate() {
        assert_eq!(r["rank"], i + 1);
        assert_eq!(r["path"], e.path.to_string_lossy().as_ref());
        assert!((r["score"].as_f64().unwrap() as f32 - e.score).abs() < 1e-4);
    }

    // `-` pushes away: the query combines the phrases as `clipkit search` does.
    let parts = vec![
        (
            clipkit_index::search::Sign::Plus,
            clip.embed_texts(&["a rocket launch"]).unwrap().remove(0),
        ),
        (
            clipkit_index::search::Sign::Minus,
            clip.embed_texts(&["smoke"]).unwrap().remove(0),
        ),
    ];
    let (status, body) = s
        .get_json("/v1/search", "/v1/search?q=a+rocket+launch+-+smoke&k=7")
        .await;
    assert_eq!(status, 200, "{body}");
    let first = &body["results"][0];
    let server_store = &s.server.state().store.as_ref().unwrap().store;
    let direct =
        clipkit_index::search::query(&**server_store, &parts, 7, None, &Default::default())
            .unwrap();
    assert_eq!(first["path"], direct[0].path.to_string_lossy().as_ref());

    // By image: the photo itself comes first, at cosine ≈ 1.
    let (status, body) = s
        .post_json(
            "/v1/search",
            &json!({"image": data_uri("coffee.png"), "k": 2}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["results"][0]["path"]
        .as_str()
        .unwrap()
        .ends_with("coffee.png"));
    assert!(body["results"][0]["score"].as_f64().unwrap() > 0.9999);
    let form = reqwest::multipart::Form::new()
        .part("image", multipart_image("coffee.png"))
        .text("k", "1");
    let (status, _, mbody) = s
        .json(
            "/v1/search",
            s.http.post(s.url("/v1/search")).multipart(form),
        )
        .await;
    assert_eq!(status, 200, "{mbody}");
    assert_eq!(mbody["results"].as_array().unwrap().len(), 1);
    assert_eq!(mbody["results"][0]["path"], body["results"][0]["path"]);

    // Thumbnails of results are served as JPEGs no larger than 256 px.
    let thumb = body["results"][0]["thumbnail"].as_str().unwrap();
    let response = s.http.get(s.url(thumb)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/jpeg");
    let jpeg = image::load_from_memory(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(jpeg.width().max(jpeg.height()), 256);
    // Any stored file has a thumbnail, even one no search has returned yet.
    let (_, all) = s.get_json("/v1/search", "/v1/search?q=x&k=100").await;
    assert_eq!(all["results"].as_array().unwrap().len(), PHOTOS.len());
    let (status, body) = s
        .get_json("/v1/thumbnails/{id}", "/v1/thumbnails/12345")
        .await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let (status, body) = s
        .get_json("/v1/thumbnails/{id}", "/v1/thumbnails/..%2Fetc%2Fpasswd")
        .await;
    assert_eq!((status, code(&body)), (422, "invalid_request"));

    // Bad searches.
    for (url, param) in [
        ("/v1/search?q=cat&k=0", "k"),
        ("/v1/search?q=cat&k=5000", "k"),
        ("/v1/search?q=-+cat", "q"),
        ("/v1/search?q=+", "q"),
    ] {
        let (status, body) = s.get_json("/v1/search", url).await;
        assert_eq!(
            (status, body["error"]["param"].as_str()),
            (422, Some(param)),
            "{url}: {body}"
        );
    }
    let (status, body) = s.get_json("/v1/search", "/v1/search?k=3").await;
    assert_eq!(
        (status, code(&body)),
        (422, "invalid_request"),
        "missing q: {body}"
    );
    let (status, body) = s.get_json("/v1/search", "/v1/search?q=cat&k=many").await;
    assert_eq!((status, code(&body)), (422, "invalid_request"), "{body}");

    let (status, info) = s.get_json("/v1/info", "/v1/info").await;
    assert_eq!(status, 200);
    assert_eq!(info["store"]["images"], PHOTOS.len());
    assert_eq!(
        (info["family"].as_str(), info["probability"].as_str()),
        (Some("CLIP"), Some("softmax"))
    );
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints_health_metrics_and_spec() {
    let s = TestServer::start(config(), None).await;
    let (status, body) = s.get_json("/healthz", "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    let (status, _) = s.get_json("/readyz", "/readyz").await;
    assert_eq!(status, 200);

    // Concurrent requests, one with a corrupt image: that one fails, the others do not.
    let mut tasks = Vec::new();
    for (i, photo) in PHOTOS.iter().take(6).enumerate() {
        let http = s.http.clone();
        let url = s.url("/v1/embeddings");
        let input = if i == 3 {
            b64(b"corrupt")
        } else {
            data_uri(photo)
        };
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .json(&json!({"modality": "image", "input": input}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(statuses, [200, 200, 200, 422, 200, 200]);

    let text = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "clipkit_http_requests_total{route=\"/v1/embeddings\",method=\"POST\",status=\"200\"} 5",
        "clipkit_http_requests_total{route=\"/v1/embeddings\",method=\"POST\",status=\"422\"} 1",
        "clipkit_http_request_duration_seconds_bucket{route=\"/v1/embeddings\",le=\"+Inf\"} 6",
        "# TYPE clipkit_batch_size histogram",
        "# TYPE clipkit_images_per_second gauge",
        "clipkit_image_decode_failures_total 1",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert_eq!(
        metric_value(&text, "clipkit_images_embedded_total"),
        Some(5.0)
    );
    assert!(metric_value(&text, "clipkit_images_per_second").unwrap() > 0.0);
    // At least the warm-up probe (2 items) and the 5 images went through the model.
    assert!(metric_value(&text, "clipkit_batch_size_sum").unwrap() >= 7.0);

    // The spec lists every endpoint, and a response was validated against it above.
    let spec = s.spec.as_ref().unwrap().doc();
    for path in [
        "/v1/embeddings",
        "/v1/classify",
        "/v1/similarity",
        "/v1/search",
        "/v1/thumbnails/{id}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/v1/info",
        "/v1/models",
    ] {
        assert!(
            spec["paths"].get(path).is_some(),
            "{path} missing from the spec"
        );
    }
    assert!(spec["paths"]["/v1/search"].get("post").is_some());

    // The page and its assets are served from the binary.
    let page = s.http.get(s.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
    let html = page.text().await.unwrap();
    assert!(html.contains("/assets/app.js") && !html.contains("https://"));
    for asset in ["/assets/app.js", "/assets/app.css"] {
        assert_eq!(s.http.get(s.url(asset)).send().await.unwrap().status(), 200);
    }
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_merged_into_one_batch() {
    let mut c = config();
    // A batch closes when full long before it could time out.
    c.batch.max_batch = 8;
    c.batch.max_wait = Duration::from_secs(60);
    let s = TestServer::start_with(load_clip(), c, None, false).await;
    // The warm-up probe's 2 items + 6 requests of one text = one batch of 8.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let http = s.http.clone();
        let url = s.url("/v1/embeddings");
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .json(&json!({"input": format!("text number {i}")}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(s.metric("clipkit_batch_size_count").await, 1.0);
    assert_eq!(s.metric("clipkit_batch_size_sum").await, 8.0);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_with_retry_after() {
    let mut c = config();
    c.batch.max_batch = 4;
    c.batch.queue_capacity = 4;
    c.limits.max_inputs = 4;
    c.batch.max_wait = Duration::from_secs(60);
    let s = TestServer::start_with(load_clip(), c, None, false).await;
    // The warm-up probe holds 2 slots; one text takes a third and waits for a full batch.
    s.wait_for_metric("clipkit_queue_items", 2.0).await;
    let http = s.http.clone();
    let url = s.url("/v1/embeddings");
    let first = tokio::spawn(async move {
        http.post(url)
            .json(&json!({"input": "first"}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    s.wait_for_metric("clipkit_queue_items", 3.0).await;
    // Two more do not fit: 429 at once, with Retry-After, and the JSON error shape.
    let (status, headers, body) = s
        .json(
            "/v1/embeddings",
            s.http
                .post(s.url("/v1/embeddings"))
                .json(&json!({"input": ["a", "b"]})),
        )
        .await;
    assert_eq!((status, code(&body)), (429, "overloaded"), "{body}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    // One more fits and completes the batch; everyone queued is answered.
    let (status, body) = s
        .post_json("/v1/embeddings", &json!({"input": "last"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(s.metric("clipkit_rejected_total").await, 1.0);
    assert_eq!(s.metric("clipkit_queue_items").await, 0.0);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_gets_504_and_its_work_is_dropped() {
    let mut c = config();
    c.limits.request_timeout = Duration::from_millis(300);
    c.batch.max_batch = 16;
    c.batch.max_wait = Duration::from_secs(3);
    let s = TestServer::start_with(load_clip(), c, None, false).await;
    let (status, _, body) = s
        .json(
            "/v1/embeddings",
            s.http
                .post(s.url("/v1/embeddings"))
                .json(&json!({"input": "slow"})),
        )
        .await;
    assert_eq!((status, code(&body)), (504, "timeout"), "{body}");
    assert_eq!(s.metric("clipkit_timeouts_total").await, 1.0);
    // When the batch closes, the abandoned item is dropped before the forward pass: only the
    // warm-up probe's two items run, and every slot is free again.
    s.wait_for_metric("clipkit_batch_size_count", 1.0).await;
    s.wait_metric("clipkit_queue_items", |v| v == 0.0).await;
    assert_eq!(s.metric("clipkit_batch_size_count").await, 1.0);
    assert_eq!(s.metric("clipkit_batch_size_sum").await, 2.0);
    assert_eq!(s.metric("clipkit_texts_embedded_total").await, 0.0);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_requests_in_flight() {
    let mut c = config();
    c.batch.max_batch = 16;
    c.batch.max_wait = Duration::from_millis(1500);
    let s = TestServer::start_with(load_clip(), c, None, false).await;
    let http = s.http.clone();
    let url = s.url("/v1/embeddings");
    let in_flight = tokio::spawn(async move {
        let r = http
            .post(url)
            .json(&json!({"modality": "image", "input": data_uri("rocket.png")}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    });
    // Probe (2) + this request (1) are queued, waiting for the batch to close.
    s.wait_for_metric("clipkit_queue_items", 3.0).await;
    let base = s.base.clone();
    s.stop().await.expect("drains cleanly");
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        vector(&body["data"][0]["embedding"]).len(),
        load_clip().embedding_dim()
    );
    // Nothing listens any more.
    let after = reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .send()
        .await;
    assert!(after.is_err(), "the server still answers after shutdown");
}

/// A checkpoint whose image tower produces NaN: it loads, but cannot run.
fn nan_model(dir: &std::path::Path) -> std::path::PathBuf {
    let model = dir.join("nan-model");
    std::fs::create_dir_all(&model).unwrap();
    for entry in std::fs::read_dir(model_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), model.join(entry.file_name())).unwrap();
    }
    let index: Value =
        serde_json::from_slice(&std::fs::read(model.join("model.safetensors.index.json")).unwrap())
            .unwrap();
    let shard = model.join(
        index["weight_map"]["visual_projection.weight"]
            .as_str()
            .unwrap(),
    );
    let mut bytes = std::fs::read(&shard).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let tensor = &header["visual_projection.weight"];
    assert_eq!(tensor["dtype"], "F32");
    let (start, end) = (
        tensor["data_offsets"][0].as_u64().unwrap() as usize,
        tensor["data_offsets"][1].as_u64().unwrap() as usize,
    );
    let base = 8 + header_len;
    for chunk in bytes[base + start..base + end].chunks_mut(4) {
        chunk.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    std::fs::write(&shard, bytes).unwrap();
    model
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_fails_when_the_model_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let clip = load_clip_from(&nan_model(dir.path()));
    let mut s = TestServer::start_with(clip, config(), None, false).await;
    s.spec = Some(common::openapi::Spec::new(
        s.http
            .get(s.url("/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap(),
    ));
    let (status, body) = s.get_json("/healthz", "/healthz").await;
    assert_eq!((status, code(&body)), (503, "unhealthy"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("non-finite"),
        "{body}"
    );
    let (status, body) = s.get_json("/readyz", "/readyz").await;
    assert_eq!((status, code(&body)), (503, "not_ready"), "{body}");
    // Images fail with a server error; texts (the other tower) still work.
    let (status, body) = s
        .post_json(
            "/v1/embeddings",
            &json!({"modality": "image", "input": data_uri("rocket.png")}),
        )
        .await;
    assert_eq!((status, code(&body)), (500, "internal_error"), "{body}");
    let (status, body) = s
        .post_json("/v1/embeddings", &json!({"input": "a cat"}))
        .await;
    assert_eq!(status, 200, "{body}");
    // Recent successful text batches do not hide the broken image tower.
    let (status, _) = s.get_json("/healthz", "/healthz").await;
    assert_eq!(status, 503);
    s.stop().await.unwrap();
}

/// A collection whose backend is down: every call fails the way an unreachable Milvus does.
struct DownStore {
    info: clipkit_index::CollectionInfo,
}

impl DownStore {
    fn down<T>(&self) -> clipkit_index::Result<T> {
        Err(clipkit_index::IndexError::Milvus {
            uri: clipkit_index::Store::address(self),
            message: "connecting: timed out".into(),
            transient: true,
        })
    }
}

impl clipkit_index::Store for DownStore {
    fn address(&self) -> String {
        "milvus://127.0.0.1:1/images".into()
    }
    fn info(&self) -> &clipkit_index::CollectionInfo {
        &self.info
    }
    fn len(&self) -> clipkit_index::Result<usize> {
        self.down()
    }
    fn files(&self) -> clipkit_index::Result<Vec<clipkit_index::FileRecord>> {
        self.down()
    }
    fn vectors(
        &self,
        _paths: &[std::path::PathBuf],
    ) -> clipkit_index::Result<Vec<Option<Vec<f32>>>> {
        self.down()
    }
    fn apply(&mut self, _batch: clipkit_index::Batch) -> clipkit_index::Result<()> {
        self.down()
    }
    fn scan(
        &self,
        _chunk: usize,
        _visit: &mut dyn FnMut(&[clipkit_index::Entry]) -> clipkit_index::Result<()>,
    ) -> clipkit_index::Result<()> {
        self.down()
    }
    fn search(
        &self,
        _queries: &[Vec<f32>],
        _k: usize,
        _filter: &clipkit_index::Filter,
    ) -> clipkit_index::Result<Vec<Vec<clipkit_index::Hit>>> {
        self.down()
    }
    fn flush(&mut self) -> clipkit_index::Result<()> {
        self.down()
    }
    fn put_labels(
        &mut self,
        _set: &str,
        _labels: &[clipkit_index::LabelVector],
    ) -> clipkit_index::Result<()> {
        self.down()
    }
    fn labels(&self, _set: &str) -> clipkit_index::Result<Option<Vec<clipkit_index::LabelVector>>> {
        self.down()
    }
    fn roots(&self) -> clipkit_index::Result<Vec<std::path::PathBuf>> {
        self.down()
    }
    fn add_roots(&mut self, _roots: &[std::path::PathBuf]) -> clipkit_index::Result<()> {
        self.down()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_answers_503_with_retry_after() {
    let clip = load_clip();
    let store = DownStore {
        info: clipkit_index::CollectionInfo {
            model: clip.name().to_owned(),
            dim: clip.embedding_dim(),
            preprocess: clipkit_core::PreprocessMode::Transformers,
            family: None,
        },
    };
    let s = TestServer::start_with(clip, config(), Some(Box::new(store)), true).await;
    for path_and_query in ["/v1/search?q=a%20rocket%20launch&k=3", "/v1/info"] {
        let route = path_and_query.split('?').next().unwrap();
        let (status, headers, body) = s.json(route, s.http.get(s.url(path_and_query))).await;
        assert_eq!(status, 503, "{path_and_query}: {body}");
        assert_eq!(code(&body), "store_unavailable", "{body}");
        let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(retry >= 1, "{retry}");
    }
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_search_equals_the_library_and_bad_filters_name_their_field() {
    let clip = load_clip();
    let dir = tempfile::tempdir().unwrap();
    let store = build_store(dir.path(), &clip);
    let photos = std::fs::canonicalize(dir.path().join("photos")).unwrap();
    let mut sizes: Vec<u64> = PHOTOS
        .iter()
        .map(|p| std::fs::metadata(photos.join(p)).unwrap().len())
        .collect();
    sizes.sort();
    let (lo, hi) = (sizes[1], sizes[4]);
    let q = clip.embed_texts(&["a photo"]).unwrap().remove(0);
    let library = |filter: &clipkit_index::Filter| {
        clipkit_index::search::search(&*store, &q, 100, None, filter).unwrap()
    };
    let by_size = clipkit_index::Filter {
        min_size: Some(lo),
        max_size: Some(hi),
        folders: vec![photos.clone()],
        file_types: vec!["png".into()],
        after: Some(946_684_800), // 2000-01-01
        ..Default::default()
    };
    let want_size = library(&by_size);
    assert_eq!(want_size.len(), 4, "sizes {sizes:?}");
    let none = library(&clipkit_index::Filter {
        before: Some(946_684_800),
        ..Default::default()
    });
    assert!(none.is_empty());
    let s = TestServer::start(config(), Some(store)).await;

    let query = format!(
        "/v1/search?q=a+photo&k=100&min_size={lo}&max_size={hi}B&type=png,gif&in={}&after=2000-01-01",
        photos.to_str().unwrap()
    );
    let (status, body) = s.get_json("/v1/search", &query).await;
    assert_eq!(status, 200, "{body}");
    let got: Vec<(String, f64)> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_owned(),
                r["score"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got.len(), want_size.len());
    for (g, w) in got.iter().zip(&want_size) {
        assert_eq!(g.0, w.path.to_string_lossy());
        assert!((g.1 as f32 - w.score).abs() < 1e-4);
    }
    let (status, body) = s
        .get_json("/v1/search", "/v1/search?q=a+photo&before=2000")
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["results"].as_array().unwrap().is_empty());

    // The image search takes the same filters, in JSON and in multipart.
    let (status, body) = s
        .post_json(
            "/v1/search",
            &json!({"image": data_uri("coffee.png"), "k": 100, "min_size": lo.to_string(),
                    "max_size": hi, "type": "png"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let paths = |b: &Value| -> Vec<String> {
        let mut p: Vec<String> = b["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["path"].as_str().unwrap().to_owned())
            .collect();
        p.sort();
        p
    };
    let mut want: Vec<String> = want_size
        .iter()
        .map(|h| h.path.to_string_lossy().into_owned())
        .collect();
    want.sort();
    assert_eq!(paths(&body), want);
    let form = reqwest::multipart::Form::new()
        .part("image", multipart_image("coffee.png"))
        .text("k", "100")
        .text("min_size", lo.to_string())
        .text("max_size", hi.to_string());
    let (status, _, mbody) = s
        .json(
            "/v1/search",
            s.http.post(s.url("/v1/search")).multipart(form),
        )
        .await;
    assert_eq!(status, 200, "{mbody}");
    assert_eq!(paths(&mbody), want);

    // Bad values: the server's error shape, naming the field.
    for (filter, param) in [
        ("after=2023-13-01", "after"),
        ("before=yesterday", "before"),
        ("near=91,0,1km", "near"),
        ("near=48.8,2.3,5", "near"),
        ("min_size=5XB", "min_size"),
        ("max_size=-1", "max_size"),
        ("type=j/g", "type"),
        ("in=/no/such/folder/here", "in"),
        ("after=2024&before=2023", "after"),
        ("min_size=2MB&max_size=1MB", "min_size"),
    ] {
        let url = format!("/v1/search?q=cat&{filter}");
        let (status, body) = s.get_json("/v1/search", &url).await;
        assert_eq!(
            (status, code(&body), body["error"]["param"].as_str()),
            (422, "invalid_request", Some(param)),
            "{url}: {body}"
        );
    }
    let (status, body) = s
        .post_json(
            "/v1/search",
            &json!({"image": data_uri("coffee.png"), "near": "0,200,1km"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (422, Some("near")),
        "{body}"
    );
    s.stop().await.unwrap();
}
