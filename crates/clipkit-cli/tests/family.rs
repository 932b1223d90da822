//! Everything follows the model family: every probability a command prints says which
//! function produced it (CLIP's softmax, SigLIP's sigmoid), every family's committed tiny
//! checkpoint runs the commands, and a collection records the checkpoint's family and refuses
//! a model of another.

#[macro_use]
mod common;

use std::path::Path;

use common::*;

/// Two images per class, from the fixture photos.
fn image_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (class, files) in [
        ("cat", ["chelsea.png", "photo.jpg"]),
        ("coffee", ["coffee.png", "progressive.jpg"]),
    ] {
        std::fs::create_dir(dir.path().join(class)).unwrap();
        for f in files {
            std::fs::copy(image(f), dir.path().join(class).join(f)).unwrap();
        }
    }
    dir
}

#[test]
fn every_probability_names_the_function_that_produced_it() {
    let m = model();
    let img = image("chelsea.png");

    let o = run!("classify", "-m", m, "-l", "cat", "-l", "dog", "-f", "json", img);
    let v = json(&o);
    assert_eq!(v[0]["probability"], "softmax");
    let total: f64 = v[0]["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["prob"].as_f64().unwrap())
        .sum();
    assert!((total - 1.0).abs() < 1e-5, "a softmax sums to one: {total}");

    let o = run!("classify", "-m", m, "-l", "cat", "-l", "dog", "-f", "csv", img);
    let mut reader = csv::Reader::from_reader(o.stdout.as_slice());
    assert_eq!(
        reader.headers().unwrap().iter().next_back(),
        Some("probability")
    );
    for row in reader.records() {
        assert_eq!(row.unwrap().iter().next_back(), Some("softmax"));
    }
    let o = run!("classify", "-m", m, "-l", "cat", "-l", "dog", img);
    let header = stdout(&o).lines().next().unwrap().to_owned();
    assert!(header.contains("prob (softmax)"), "{header}");

    let o = run!(
        "similarity",
        "-m",
        m,
        "-i",
        img,
        "-x",
        "a cat",
        "-f",
        "json"
    );
    let v = json(&o);
    assert_eq!(v["probability"], "softmax");
    assert!(v["logit_bias"].is_null(), "CLIP has no logit bias: {v}");
    let o = run!("similarity", "-m", m, "-i", img, "-x", "a cat", "-f", "csv");
    assert!(stdout(&o).lines().next().unwrap().ends_with(",probability"));

    let data = image_folder();
    let o = run!(
        "eval",
        "-m",
        m,
        "--templates",
        "openai7",
        "--no-cache",
        "-f",
        "json",
        data.path()
    );
    let v = json(&o);
    assert_eq!(v["probability"], "softmax");
    assert!(v["logit_bias"].is_null());
    assert_eq!(v["logit_scale"], 100.0);

    let chart = tempfile::tempdir().unwrap();
    let svg = chart.path().join("chart.svg");
    let o = run!("plot", "-m", m, "-l", "cat", "-l", "dog", img, "-o", svg);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.contains("softmax over the labels"),
        "axis label missing"
    );
}

fn store_info(store: &Path) -> clipkit_index::CollectionInfo {
    let address = clipkit_index::StoreAddress::parse(store.to_str().unwrap()).unwrap();
    clipkit_index::open(&address, None).unwrap().info().clone()
}

#[test]
fn a_collection_records_the_family_and_refuses_another() {
    let m = model();
    let work = tempfile::tempdir().unwrap();
    let photos = work.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    std::fs::copy(image("chelsea.png"), photos.join("chelsea.png")).unwrap();

    // `index add` records name, family and size.
    let store = work.path().join("clip.store");
    let o = run!("index", "add", "-q", "-s", store, "-m", m, photos);
    assert!(o.status.success(), "{}", stderr(&o));
    let info = store_info(&store);
    assert_eq!(info.family.as_deref(), Some("CLIP"));
    assert_eq!(info.dim, 24);
    assert_eq!(info.model, m.to_string_lossy());

    // A store of the same name and size from another family (a directory whose checkpoint was
    // replaced) is refused, by queries and by indexing, naming both families.
    let other = work.path().join("siglip.store");
    let address = clipkit_index::StoreAddress::parse(other.to_str().unwrap()).unwrap();
    let siglip = clipkit_index::CollectionInfo {
        family: Some("SigLIP".into()),
        ..info.clone()
    };
    drop(clipkit_index::open(&address, Some(&siglip)).unwrap());
    let o = run!("search", "-s", other, "cat");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("SigLIP") && err.contains("CLIP"), "{err}");
    let o = run!("index", "add", "-q", "-s", other, "-m", m, photos);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("SigLIP") && err.contains("CLIP"), "{err}");
}

#[test]
fn siglip_probabilities_are_sigmoids_in_every_output() {
    let m = fixtures().join("siglip/tiny-spm");
    let img = image("chelsea.png");
    let o = run!("classify", "-m", m, "-l", "cat", "-l", "dog", "-l", "car", "-f", "json", img);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v[0]["probability"], "sigmoid");
    let probs: Vec<f64> = v[0]["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["prob"].as_f64().unwrap())
        .collect();
    assert_eq!(probs.len(), 3);
    assert!(probs.iter().all(|p| (0.0..=1.0).contains(p)), "{probs:?}");
    let total: f64 = probs.iter().sum();
    assert!(
        (total - 1.0).abs() > 1e-3,
        "independent sigmoids, not a softmax: {total}"
    );

    let o = run!(
        "similarity",
        "-m",
        m,
        "-i",
        img,
        "-x",
        "a cat",
        "-f",
        "json"
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["probability"], "sigmoid");
    assert!(v["logit_bias"].is_number(), "SigLIP has a logit bias: {v}");

    let chart = tempfile::tempdir().unwrap();
    let svg = chart.path().join("chart.svg");
    let o = run!("plot", "-m", m, "-l", "cat", "-l", "dog", img, "-o", svg);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read_to_string(&svg).unwrap().contains("sigmoid"));
}

/// Each family's tiny checkpoint indexes a folder and answers a text search from the store,
/// recording its family (open_clip's own files, and open_clip with an XLM-R text tower queried
/// in French).
#[test]
fn every_family_indexes_and_searches() {
    for (dir, family, query) in [
        ("siglip/tiny-gemma", "SigLIP", "a cat"),
        ("open_clip/gelu-squash", "open_clip", "a cat"),
        ("xlmr/oc-mean-mlp", "open_clip", "un chien sur la plage"),
    ] {
        let m = fixtures().join(dir);
        let work = tempfile::tempdir().unwrap();
        let photos = work.path().join("photos");
        std::fs::create_dir(&photos).unwrap();
        for f in ["chelsea.png", "coffee.png", "photo.jpg"] {
            std::fs::copy(image(f), photos.join(f)).unwrap();
        }
        let store = work.path().join("s.store");
        let o = run!("index", "add", "-q", "-s", store, "-m", m, photos);
        assert!(o.status.success(), "{dir}: {}", stderr(&o));
        let info = store_info(&store);
        assert_eq!(info.family.as_deref(), Some(family), "{dir}");
        let o = run!("search", "-s", store, "-m", m, "-f", "json", query);
        assert!(o.status.success(), "{dir}: {}", stderr(&o));
        let v = json(&o);
        assert_eq!(v["results"].as_array().map(Vec::len), Some(3), "{dir}: {v}");
        // The stored vector of a photo is what its image query embeds to.
        let cat = photos.join("chelsea.png");
        let o = run!("search", "-s", store, "-m", m, "--image", cat, "-k", "1", "-f", "json");
        assert!(o.status.success(), "{dir}: {}", stderr(&o));
        let top = &json(&o)["results"][0];
        assert!(
            top["path"].as_str().unwrap().contains("chelsea"),
            "{dir}: {top}"
        );
        assert!(
            (top["score"].as_f64().unwrap() - 1.0).abs() < 1e-4,
            "{dir}: {top}"
        );
    }
}
