//! End-to-end tests of the `clipkit` binary on the committed tiny checkpoints and photos:
//! the JSON contracts, agreement with transformers' numbers, and a clear error (naming the
//! file, never a panic) for every kind of bad input.

#[macro_use]
mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Output;

use common::{clipkit, fixtures, image, json, model, run_clipkit, stderr, stdout};

fn no_panic(o: &Output) {
    let err = stderr(o);
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn classify_json_matches_transformers_logits() {
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("reference/tiny-quickgelu.json")).unwrap(),
    )
    .unwrap();
    let tensors = candle_core::safetensors::load(
        fixtures().join("reference/tiny-quickgelu.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let ref_logits = tensors["logits_per_image"].to_vec2::<f32>().unwrap();
    let images: Vec<String> = reference["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let labels = [
        "a photo of a cat",
        "a photo of a dog",
        "an astronaut",
        "a cup of coffee",
    ];
    let row = images.iter().position(|n| n == "chelsea.png").unwrap();

    let m = model();
    let img = image("chelsea.png");
    let o = run!(
        "classify",
        "--model",
        m,
        "--ignore-exif",
        "--format",
        "json",
        "-l",
        labels[0],
        "-l",
        labels[1],
        "-l",
        labels[2],
        "-l",
        labels[3],
        img
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    let scores = v[0]["scores"].as_array().unwrap();
    assert_eq!(v[0]["image"].as_str().unwrap(), img.to_string_lossy());
    assert_eq!(scores.len(), 4);
    let scale = tensors["logit_scale"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0]
        .exp();
    let mut total = 0.0;
    for (j, s) in scores.iter().enumerate() {
        assert_eq!(s["label"], labels[j], "scores are in label order");
        let logit = s["logit"].as_f64().unwrap() as f32;
        assert!(
            (logit - ref_logits[row][j]).abs() <= 1e-3 * scale,
            "{logit} vs {}",
            ref_logits[row][j]
        );
        total += s["prob"].as_f64().unwrap();
    }
    assert!((total - 1.0).abs() < 1e-5);
}

#[test]
fn classify_top_k_table_and_csv() {
    let m = model();
    let img = image("coffee.png");
    let o = run!(
        "classify",
        "-m",
        m,
        "-l",
        "cat",
        "-l",
        "dog",
        "-l",
        "cup",
        "--top-k",
        "2",
        "-t",
        "a photo of a {}.",
        "-t",
        "a picture of a {}",
        img
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("image"), "{out}");
    assert_eq!(out.lines().count(), 3, "header + 2 rows:\n{out}");
    let o = run!("classify", "-m", m, "-l", "cat", "-l", "dog", "--format", "csv", img);
    let out = stdout(&o);
    assert_eq!(
        out.lines().next(),
        Some("image,label,logit,prob,probability")
    );
    assert_eq!(out.lines().count(), 3);
}

#[test]
fn directories_are_searched_and_bad_files_reported_without_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::copy(image("chelsea.png"), nested.join("cat.png")).unwrap();
    std::fs::copy(image("photo.jpg"), dir.path().join("photo.jpg")).unwrap();
    std::fs::write(dir.path().join("empty.png"), b"").unwrap();
    std::fs::write(dir.path().join("garbage.jpg"), b"this is not a jpeg at all").unwrap();
    let png = std::fs::read(image("chelsea.png")).unwrap();
    std::fs::write(dir.path().join("truncated.png"), &png[..png.len() / 3]).unwrap();
    std::fs::write(
        dir.path().join("notes.txt"),
        b"ignored: not an image extension",
    )
    .unwrap();
    let m = model();
    let o = run!(
        "classify",
        "-m",
        m,
        "-l",
        "cat",
        "-l",
        "dog",
        "--format",
        "json",
        dir.path()
    );
    no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "partial failure exits 1");
    let v = json(&o);
    let shown: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["image"].as_str().unwrap())
        .collect();
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert!(
        shown.iter().any(|p| p.ends_with("cat.png"))
            && shown.iter().any(|p| p.ends_with("photo.jpg"))
    );
    let err = stderr(&o);
    for (name, problem) in [
        ("empty.png", "file is empty"),
        ("garbage.jpg", "not a recognised image format"),
        ("truncated.png", "truncated"),
    ] {
        assert!(
            err.lines().any(|l| l.contains(name) && l.contains(problem)),
            "{name}: {problem}\n{err}"
        );
    }
}

/// A PNG whose header claims 100 000 × 100 000 pixels: refused before decoding.
#[test]
fn decompression_bombs_are_refused_from_the_header() {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(100_000u32.to_be_bytes());
    ihdr.extend(100_000u32.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32(&ihdr).to_be_bytes());
    // A little compressed data, as a real bomb has (it would inflate to 30 GB).
    for (kind, data) in [
        (
            &b"IDAT"[..],
            &b"\x78\x9c\x63\x60\x00\x00\x00\x02\x00\x01"[..],
        ),
        (b"IEND", b""),
    ] {
        let mut chunk = kind.to_vec();
        chunk.extend(data);
        png.extend((data.len() as u32).to_be_bytes());
        png.extend(&chunk);
        png.extend(crc32(&chunk).to_be_bytes());
    }
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.png");
    std::fs::write(&bomb, &png).unwrap();
    let m = model();
    let o = run!("classify", "-m", m, "-l", "x", bomb);
    no_panic(&o);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("bomb.png") && err.contains("decompression bomb"),
        "{err}"
    );
    // A lower limit refuses an ordinary photo too, and says how to raise it.
    let img = image("chelsea.png");
    let o = run!("classify", "-m", m, "-l", "x", "--max-pixels", "1000", img);
    assert!(stderr(&o).contains("--max-pixels"), "{}", stderr(&o));
}

#[test]
fn non_utf8_paths_work() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9 \xff.png");
    let path = dir.path().join(name);
    std::fs::copy(image("chelsea.png"), &path).unwrap();
    let m = model();
    let o = run!("classify", "-m", m, "-l", "cat", "--format", "json", path);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(json(&o)[0]["image"]
        .as_str()
        .unwrap()
        .contains("caf\u{fffd}"));
}

#[test]
fn embed_writes_json_contract_and_npy() {
    let dir = tempfile::tempdir().unwrap();
    let m = fixtures().join("models/tiny-gelu");
    let (a, b) = (image("astronaut.png"), image("rocket.png"));
    let o = run!(
        "embed", "-m", m, "--image", a, "--image", b, "--text", "a rocket", "--format", "json"
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["images"].as_array().unwrap().len(), 2);
    assert_eq!(v["texts"][0]["text"], "a rocket");
    for item in v["images"]
        .as_array()
        .unwrap()
        .iter()
        .chain(v["texts"].as_array().unwrap())
    {
        let e: Vec<f64> = item["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(e.len(), 16);
        assert!(
            (e.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-5,
            "L2-normalised"
        );
    }
    let npy = dir.path().join("out.npy");
    let o = run!("embed", "-m", m, "-i", a, "-x", "one", "-x", "two", "-o", npy);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = candle_core::Tensor::read_npy(&npy).unwrap();
    assert_eq!(t.dims(), &[3, 16]);
    let o = run!(
        "embed",
        "-m",
        m,
        "-x",
        "x",
        "-o",
        dir.path().join("out.txt")
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains(".npy or .json"));
}

/// `--jpeg-draft` decodes a large JPEG at reduced scale: a slightly different embedding, and an
/// image less than twice the model's input is left alone.
#[test]
fn jpeg_draft_moves_large_jpegs_a_little_and_leaves_small_ones() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.jpg");
    let photo = image::open(image("chelsea.png")).unwrap().to_rgb8();
    image::imageops::resize(&photo, 1200, 900, image::imageops::FilterType::Triangle)
        .save(&big)
        .unwrap();
    // The tiny model resizes to 32: a shortest edge under 64 leaves no 1/2-scale draft.
    let small = dir.path().join("small.jpg");
    image::imageops::resize(&photo, 60, 50, image::imageops::FilterType::Triangle)
        .save(&small)
        .unwrap();
    let m = model();
    let embed = |draft: bool| {
        let mut args: Vec<&std::ffi::OsStr> = ["embed", "-f", "json", "-m"]
            .iter()
            .map(std::ffi::OsStr::new)
            .collect();
        args.extend([m.as_os_str(), "-i".as_ref(), big.as_os_str()]);
        args.extend(["-i".as_ref(), small.as_os_str()]);
        if draft {
            args.push("--jpeg-draft".as_ref());
        }
        let o = run_clipkit(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        json(&o)["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let e = i["embedding"].as_array().unwrap();
                e.iter().map(|x| x.as_f64().unwrap()).collect::<Vec<f64>>()
            })
            .collect::<Vec<_>>()
    };
    let (full, draft) = (embed(false), embed(true));
    let cos: f64 = full[0].iter().zip(&draft[0]).map(|(a, b)| a * b).sum();
    assert!(full[0] != draft[0], "the 1200x900 JPEG was decoded in full");
    assert!(cos > 0.999, "cosine {cos}");
    assert_eq!(full[1], draft[1], "too small to draft");
}

#[test]
fn similarity_matrix_shape_and_softmax() {
    let m = model();
    let (a, b) = (image("astronaut.png"), image("coffee.png"));
    let o = run!(
        "similarity",
        "-m",
        m,
        "-i",
        a,
        "-i",
        b,
        "-x",
        "an astronaut",
        "-x",
        "coffee",
        "-x",
        "cat",
        "--format",
        "json"
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    let logits = v["logits_per_image"].as_array().unwrap();
    assert_eq!(logits.len(), 2);
    assert_eq!(logits[0].as_array().unwrap().len(), 3);
    let p: f64 = v["probs_per_image"][1]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .sum();
    assert!((p - 1.0).abs() < 1e-5);
    let o = run!("similarity", "-m", m, "-i", a, "-x", "an astronaut");
    assert!(stdout(&o).lines().next().unwrap().contains("an astronaut"));
}

#[test]
fn plot_writes_a_chart() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("chart.png");
    let m = model();
    let img = image("rgba.png");
    let o = run!("plot", "-m", m, "-l", "cat", "-l", "dog", "-l", "bird", img, "-o", out);
    assert!(o.status.success(), "{}", stderr(&o));
    let chart = image::open(&out).unwrap();
    assert_eq!((chart.width(), chart.height()), (1100, 480));
}

#[test]
fn label_and_text_problems_are_clear() {
    let m = model();
    let img = image("chelsea.png");
    let o = run!("classify", "-m", m, img);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no labels"), "{}", stderr(&o));
    let o = run!(
        "classify",
        "-m",
        m,
        "-l",
        "cat",
        "-t",
        "no placeholder",
        img
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("placeholder"), "{}", stderr(&o));
    let o = run!(
        "classify",
        "-m",
        m,
        "--labels",
        "/nonexistent/labels.txt",
        img
    );
    assert!(
        stderr(&o).contains("/nonexistent/labels.txt"),
        "{}",
        stderr(&o)
    );
    // Longer than 77 tokens: truncated with a warning, never an error.
    let long = "a photo of a very fluffy cat ".repeat(20);
    let o = run!("classify", "-m", m, "-l", long, "-l", "dog", img);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("tokens; CLIP reads the first 75"),
        "{}",
        stderr(&o)
    );
}

/// Copies a fixture model into a temp dir (files, not links) so a test can break it.
fn broken_copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join("models").join(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    dir
}

/// Edits a text file in place; the text must be there, so a test cannot silently edit nothing.
fn replace_in(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{}: no {from:?}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

#[test]
fn broken_models_are_named() {
    let img = image("chelsea.png");
    let check = |dir: &Path, expected: &[&str]| {
        let o = run!("classify", "-m", dir, "-l", "cat", img);
        no_panic(&o);
        assert_eq!(o.status.code(), Some(2));
        let err = stderr(&o);
        for e in expected {
            assert!(err.contains(e), "expected {e:?} in:\n{err}");
        }
    };

    let missing = tempfile::tempdir().unwrap();
    check(&missing.path().join("nope"), &["nope", "no such directory"]);
    check(missing.path(), &["config.json"]);

    // Weights of the wrong shape for the config.
    let d = broken_copy("tiny-quickgelu");
    replace_in(
        &d.path().join("config.json"),
        "\"projection_dim\": 24",
        "\"projection_dim\": 30",
    );
    check(
        d.path(),
        &["text_projection.weight", "[24, 32]", "[30, 32]"],
    );

    // A shard missing from the index: its tensors are missing, by name.
    let d = broken_copy("tiny-quickgelu");
    let index_path = d.path().join("model.safetensors.index.json");
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    let map = index["weight_map"].as_object_mut().unwrap();
    map.retain(|_, file| file.as_str().unwrap().starts_with("model-00002"));
    std::fs::write(&index_path, index.to_string()).unwrap();
    check(d.path(), &["is missing from the checkpoint"]);

    // The index names a shard that is not there.
    let d = broken_copy("tiny-quickgelu");
    std::fs::remove_file(d.path().join("model-00002-of-00002.safetensors")).unwrap();
    check(d.path(), &["model-00002-of-00002.safetensors"]);

    // Empty and corrupt weights, NaN in the config, no weights at all, pickles only.
    let d = broken_copy("tiny-gelu");
    std::fs::write(d.path().join("model.safetensors"), b"").unwrap();
    check(d.path(), &["model.safetensors", "too short"]);
    std::fs::write(
        d.path().join("model.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\x00garbage",
    )
    .unwrap();
    check(d.path(), &["model.safetensors"]);
    let d = broken_copy("tiny-gelu");
    replace_in(
        &d.path().join("config.json"),
        "\"layer_norm_eps\": 1e-06",
        "\"layer_norm_eps\": NaN",
    );
    check(d.path(), &["config.json"]);
    let d = broken_copy("tiny-gelu");
    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    std::fs::write(d.path().join("pytorch_model.bin"), b"pickle").unwrap();
    check(d.path(), &["pickle", "never executes"]);
}

#[test]
fn offline_hub_id_says_how_to_use_a_directory() {
    let home = tempfile::tempdir().unwrap();
    let img = image("chelsea.png");
    let o = clipkit()
        .args(["classify", "-l", "cat"])
        .arg(&img)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", home.path())
        .env_remove("CLIPKIT_MODEL")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("openai/clip-vit-base-patch32") && err.contains("--model /path/to"),
        "{err}"
    );
}

/// A small ImageFolder made of the fixture photos (two images per class).
fn tiny_image_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (class, files) in [
        ("cat", ["chelsea.png", "photo.jpg"]),
        ("coffee", ["coffee.png", "progressive.jpg"]),
        ("rocket", ["rocket.png", "wide.png"]),
    ] {
        std::fs::create_dir(dir.path().join(class)).unwrap();
        for f in files {
            std::fs::copy(image(f), dir.path().join(class).join(f)).unwrap();
        }
    }
    dir
}

#[test]
fn eval_reports_metrics_caches_embeddings_and_plots() {
    let data = tiny_image_folder();
    let work = tempfile::tempdir().unwrap();
    let (cache, plots) = (work.path().join("cache"), work.path().join("plots"));
    let m = model();
    let args = |extra: &[&str]| {
        let mut v: Vec<std::ffi::OsString> = vec![
            "eval".into(),
            "-m".into(),
            m.clone().into(),
            "--templates".into(),
            "openai7".into(),
            "--cache-dir".into(),
            cache.clone().into(),
            "-f".into(),
            "json".into(),
        ];
        v.extend(extra.iter().map(|s| s.into()));
        v.push(data.path().into());
        v
    };
    let first = clipkit()
        .args(args(&["--per-image", "--plot", plots.to_str().unwrap()]))
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    let v = json(&first);
    assert_eq!(v["classes"], serde_json::json!(["cat", "coffee", "rocket"]));
    assert_eq!(v["images"], 6);
    assert_eq!(v["cache_hits"], 0);
    let confusion: Vec<Vec<usize>> = serde_json::from_value(v["confusion_matrix"].clone()).unwrap();
    assert_eq!(confusion.iter().flatten().sum::<usize>(), 6);
    let correct: usize = (0..3).map(|i| confusion[i][i]).sum();
    assert!((v["metrics"]["acc1"].as_f64().unwrap() - correct as f64 / 6.0).abs() < 1e-9);
    assert!(v["metrics"]["acc5"].is_null(), "top-5 needs five classes");
    assert_eq!(v["predictions"].as_array().unwrap().len(), 6);
    for chart in ["confusion.png", "per_class.png"] {
        assert!(image::open(plots.join(chart)).is_ok(), "{chart}");
    }
    if correct < 6 {
        assert!(image::open(plots.join("mistakes.png")).is_ok());
    }
    let second = clipkit().args(args(&[])).output().unwrap();
    let w = json(&second);
    assert_eq!(
        w["cache_hits"], 6,
        "second run reads every image embedding from the cache"
    );
    assert_eq!(w["metrics"], v["metrics"]);
}

#[test]
fn probe_is_saved_and_used_by_classify() {
    let data = tiny_image_folder();
    let work = tempfile::tempdir().unwrap();
    let probe = work.path().join("probe.json");
    let m = model();
    let cache = work.path().join("cache");
    let o = run!(
        "probe",
        "-m",
        m,
        "--shots",
        "1",
        "--templates",
        "openai7",
        "--cache-dir",
        cache,
        "-o",
        probe,
        "-f",
        "json",
        data.path()
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(
        (v["train_images"].as_u64(), v["test_images"].as_u64()),
        (Some(3), Some(3))
    );
    let img = image("chelsea.png");
    let o = run!("classify", "-m", m, "--probe", probe, "-f", "json", img);
    assert!(o.status.success(), "{}", stderr(&o));
    let labels: Vec<String> = json(&o)[0]["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["label"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(labels, ["cat", "coffee", "rocket"]);
    // A probe fitted on another model's embeddings is refused.
    let other = fixtures().join("models/tiny-gelu");
    let o = run!("classify", "-m", other, "--probe", probe, img);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("24-d"), "{}", stderr(&o));
}

#[test]
fn bench_reports_throughput_as_json() {
    let m = model();
    let dir = fixtures().join("images");
    let o = run!(
        "bench",
        "-m",
        m,
        "--batch",
        "4",
        "--iters",
        "2",
        "--threads",
        "1",
        "--images",
        dir,
        "-f",
        "json"
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    for key in [
        "images_per_sec",
        "texts_per_sec",
        "image_gflops_per_sec",
        "model_load_sec",
        "peak_rss_mb",
    ] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}: {}", v[key]);
    }
    assert_eq!(v["batch"], 4);
    assert_eq!(v["threads"], 1);
    let files = std::fs::read_dir(&dir).unwrap().count() as u64;
    assert_eq!(v["end_to_end"]["files"].as_u64(), Some(files));
    assert_eq!(v["end_to_end"]["failed"], 0);
}

#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    use std::process::Stdio;
    let m = model();
    let a = image("astronaut.png");
    let mut child = clipkit()
        .args(["embed", "-f", "json", "-m"])
        .arg(&m)
        .arg("-i")
        .arg(&a)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // close the pipe before clipkit writes
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("error"), "{}", stderr(&o));
}

#[test]
fn flag_ranges_are_checked_before_anything_runs() {
    for (args, flag, range) in [
        (vec!["bench", "--batch", "0"], "--batch", "1 or more"),
        (vec!["bench", "--iters", "0"], "--iters", "1 or more"),
        (vec!["bench", "--threads", "0"], "--threads", "1 or more"),
        (
            vec!["classify", "-l", "cat", "--batch-size", "0"],
            "--batch-size",
            "1 or more",
        ),
        (
            vec!["classify", "-l", "cat", "--top-k", "0"],
            "--top-k",
            "1 or more",
        ),
        (vec!["probe", "--shots", "0"], "--shots", "1 or more"),
        (vec!["probe", "--c", "0"], "--c", "above 0"),
        (vec!["probe", "--c", "NaN"], "--c", "finite"),
        (
            vec!["eval", "--logit-scale=-3"],
            "--logit-scale",
            "positive",
        ),
        (
            vec!["dedup", "--threshold", "1.5"],
            "--threshold",
            "between -1 and 1",
        ),
        (
            vec!["export", "--shard-size", "0", "out"],
            "--shard-size",
            "1 or more",
        ),
        (
            vec!["index", "add", "--commit-every", "0"],
            "--commit-every",
            "1 or more",
        ),
        (
            vec!["serve", "--max-body-mib", "0"],
            "--max-body-mib",
            "above 0",
        ),
        (
            vec!["serve", "--max-wait-ms=-1"],
            "--max-wait-ms",
            "0 or above",
        ),
    ] {
        // Refused while parsing: no model, image or store is needed to get there.
        let o = clipkit().args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(flag) && err.contains(range), "{args:?}: {err}");
    }
}

/// Parses CSV on stdout into rows of (first column, last column).
fn csv_pairs(o: &Output) -> Vec<(String, String)> {
    assert!(o.status.success(), "{}", stderr(o));
    let mut reader = csv::Reader::from_reader(o.stdout.as_slice());
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].to_owned(), r[r.len() - 1].to_owned())
        })
        .collect()
}

#[test]
fn eval_probe_and_bench_write_csv() {
    let data = tiny_image_folder();
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let m = model();
    let value = |rows: &[(String, String)], key: &str| -> f64 {
        let (_, v) = rows
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no {key} in {rows:?}"));
        v.parse().unwrap()
    };

    // eval and probe on the same folder, templates and embedding cache, as CSV.
    let zero_shot = |command: &str, extra: &[&str]| {
        let mut args = vec![OsStr::new(command), OsStr::new("-m"), m.as_os_str()];
        args.extend(extra.iter().map(OsStr::new));
        args.extend(["--templates", "openai7", "--cache-dir"].map(OsStr::new));
        args.push(cache.as_os_str());
        args.extend(["-f", "csv"].map(OsStr::new));
        args.push(data.path().as_os_str());
        csv_pairs(&run_clipkit(&args))
    };

    let rows = zero_shot("eval", &[]);
    assert_eq!(value(&rows, "images"), 6.0);
    assert!((0.0..=1.0).contains(&value(&rows, "acc1")));
    let per_class = rows.iter().filter(|(k, _)| k == "accuracy").count();
    assert_eq!(per_class, 3, "{rows:?}");

    let rows = zero_shot("probe", &["--shots", "1"]);
    assert_eq!(value(&rows, "train_images"), 3.0);
    assert!((0.0..=1.0).contains(&value(&rows, "probe_accuracy")));

    let o = run!("bench", "-m", m, "--batch", "2", "--iters", "1", "-f", "csv");
    let rows = csv_pairs(&o);
    assert_eq!(value(&rows, "batch"), 2.0);
    assert!(value(&rows, "images_per_sec") > 0.0);
}
