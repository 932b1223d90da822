//! `clipkit models` in every format, and `clipkit bench` recording the speed it shows.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// `clipkit` with its own cache directory, so that the bench results it reads and writes are
/// this test's alone.
fn clipkit_with_cache(cache: &Path) -> Command {
    let mut command = clipkit();
    command.env("CLIPKIT_CACHE", cache);
    command
}

#[test]
fn models_lists_the_catalogue_in_every_format() {
    let cache = tempfile::tempdir().unwrap();
    let run = |format: &str| {
        let o = clipkit_with_cache(cache.path())
            .args(["models", "-f", format])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        o
    };

    let v = json(&run("json"));
    let models = v["models"].as_array().unwrap();
    assert!(models.len() >= 20, "{}", models.len());
    let by_id = |id: &str| {
        models
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed"))
    };
    let b32 = by_id("openai/clip-vit-base-patch32");
    assert_eq!(b32["family"], "CLIP");
    assert_eq!(b32["image_size"], 224);
    assert_eq!(b32["embedding_dim"], 512);
    assert_eq!(b32["languages"], "English");
    assert!(b32["imagenet_top1"].as_f64().unwrap() > 60.0);
    assert!(b32["imagenet_source"].is_string());
    // Nothing was benchmarked with this cache: no speed anywhere.
    assert!(models.iter().all(|m| m["measured"].is_null()));
    let siglip2 = by_id("google/siglip2-base-patch16-224");
    assert_eq!(
        (siglip2["family"].as_str(), siglip2["languages"].as_str()),
        (Some("SigLIP"), Some("multilingual"))
    );
    // Unknown accuracy stays unknown rather than guessed.
    assert!(by_id("M-CLIP/XLM-Roberta-Large-Vit-B-32")["imagenet_top1"].is_null());
    assert!(v["cpu"].as_str().is_some_and(|c| !c.is_empty()));

    let o = run("csv");
    let mut reader = csv::Reader::from_reader(o.stdout.as_slice());
    let header = reader.headers().unwrap().clone();
    assert_eq!(&header[0], "id");
    assert!(header.iter().any(|h| h == "images_per_sec"));
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), models.len());
    assert_eq!(&rows[0][0], "openai/clip-vit-base-patch32");
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(&rows[0][col("embedding_dim")], "512");
    assert_eq!(&rows[0][col("images_per_sec")], "");

    let table = stdout(&run("table"));
    let first = table.lines().next().unwrap();
    for column in ["model", "family", "ImageNet", "source", "images/s here"] {
        assert!(first.contains(column), "{first}");
    }
    assert!(
        table.contains("laion/CLIP-ViT-H-14-laion2B-s32B-b79K"),
        "{table}"
    );
    assert!(table.contains("clipkit bench --model ID"), "{table}");

    let o = clipkit_with_cache(cache.path())
        .args(["models", "--multilingual", "-f", "json"])
        .output()
        .unwrap();
    let multilingual = json(&o);
    let listed = multilingual["models"].as_array().unwrap();
    assert!(!listed.is_empty() && listed.len() < models.len());
    assert!(listed.iter().all(|m| m["languages"] == "multilingual"));
}

#[test]
fn bench_records_its_result_and_models_shows_it() {
    let cache = tempfile::tempdir().unwrap();
    let m = model();
    let bench = |extra: &[&str]| {
        let o = clipkit_with_cache(cache.path())
            .args([
                "bench",
                "--batch",
                "2",
                "--iters",
                "1",
                "--threads",
                "1",
                "-f",
                "json",
                "-m",
            ])
            .arg(&m)
            .args(extra)
            .output()
            .unwrap();
        json(&o)
    };
    let first = bench(&[]);
    let file = cache.path().join("bench.jsonl");
    assert_eq!(first["recorded_in"].as_str(), file.to_str());
    let lines = std::fs::read_to_string(&file).unwrap();
    assert_eq!(lines.lines().count(), 1);
    let record: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(record["model"].as_str(), m.to_str());
    assert_eq!(record["precision"], "f32");
    assert_eq!(record["batch"], 2);
    assert_eq!(record["images_per_sec"], first["images_per_sec"]);
    assert!(record["cpu"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(record["date"].as_str().unwrap().ends_with('Z'));

    // --no-record measures without writing.
    let second = bench(&["--no-record"]);
    assert!(second["recorded_in"].is_null());
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 1);

    // `models` lists the benchmarked directory with the recorded speed and what it is.
    let o = clipkit_with_cache(cache.path())
        .args(["models", "-f", "json"])
        .output()
        .unwrap();
    let v = json(&o);
    assert_eq!(v["cpu"], record["cpu"]);
    let row = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"].as_str() == m.to_str())
        .expect("the benchmarked model is listed");
    assert_eq!(row["known"], false);
    assert_eq!(row["family"], "CLIP");
    assert_eq!(row["measured"]["images_per_sec"], record["images_per_sec"]);
    assert_eq!(row["embedding_dim"], record["embedding_dim"]);

    // A record from another CPU is not shown here.
    let foreign = record
        .to_string()
        .replace(record["cpu"].as_str().unwrap(), "Some Other CPU");
    std::fs::write(&file, format!("{foreign}\n")).unwrap();
    let o = clipkit_with_cache(cache.path())
        .args(["models", "-f", "json"])
        .output()
        .unwrap();
    let v = json(&o);
    assert!(v["models"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["measured"].is_null() && r["id"].as_str() != m.to_str()));
}
