//! The filter flags end to end: `search` and `label` with `--in`, `--type`, `--min-size`/
//! `--max-size` and `--after`/`--before` (on modification times: these fixture photos carry no
//! EXIF date) return exactly the files that pass, checked against the files' own sizes, types,
//! folders and times; bad values are refused with messages naming the flag.

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use common::{fixtures, json, model, stderr};

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\n{}",
        o.status.code(),
        stderr(o)
    );
}

/// One photo file of the test library: where it is and what the filters ask about it.
struct Photo {
    path: PathBuf,
    size: u64,
    ext: &'static str,
    /// Modification time, seconds since the epoch.
    mtime: i64,
}

/// Fixture photos spread over folders, with modification times a day apart from 2023-06-01.
fn library(root: &Path) -> Vec<Photo> {
    let files = [
        ("chelsea.png", "trips/paris/cat.png"),
        ("astronaut.png", "trips/paris/astronaut.png"),
        ("photo.jpg", "trips/rome/photo.jpg"),
        ("progressive.jpg", "trips/rome/progressive.JPEG"),
        ("rocket.png", "home/rocket.png"),
        ("palette.png", "home/palette.png"),
        ("cmyk.jpg", "home/deeper/cmyk.jpg"),
        ("camera.png", "tripsX/camera.png"),
    ];
    let start = 1_685_577_600; // 2023-06-01T00:00:00Z
    files
        .iter()
        .enumerate()
        .map(|(i, (from, to))| {
            let path = root.join(to);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::copy(fixtures().join("images").join(from), &path).unwrap();
            // Noon on day i, so a date bound never falls on a photo.
            let mtime = start + i as i64 * 86_400 + 43_200;
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime as u64))
                .unwrap();
            let ext = if to.ends_with(".png") { "png" } else { "jpg" };
            let path = std::fs::canonicalize(&path).unwrap();
            Photo {
                size: std::fs::metadata(&path).unwrap().len(),
                path,
                ext,
                mtime,
            }
        })
        .collect()
}

fn paths(results: &Value, key: &str) -> BTreeSet<PathBuf> {
    results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| PathBuf::from(r[key].as_str().unwrap()))
        .collect()
}

fn expected(photos: &[Photo], keep: impl Fn(&Photo) -> bool) -> BTreeSet<PathBuf> {
    photos
        .iter()
        .filter(|p| keep(p))
        .map(|p| p.path.clone())
        .collect()
}

#[test]
fn filters_return_exactly_the_matching_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    let photos = library(&root);
    let store = dir.path().join("store");
    let m = model();
    ok(&run!("index", "add", "-m", m, "--store", store, "-q", root));

    let search = |filters: &[&str]| -> Value {
        let mut args: Vec<std::ffi::OsString> =
            ["search", "--store"].iter().map(Into::into).collect();
        args.push(store.clone().into());
        for a in ["a photo", "-k", "100", "-f", "json"].iter().chain(filters) {
            args.push(a.into());
        }
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let o = common::run_clipkit(&refs);
        ok(&o);
        json(&o)
    };

    // Folders: whole components (`trips` does not contain `tripsX`), any of several.
    let trips = root.join("trips");
    let trips_s = trips.to_str().unwrap();
    let got = search(&["--in", trips_s]);
    assert_eq!(
        paths(&got["results"], "path"),
        expected(&photos, |p| p
            .path
            .starts_with(root.canonicalize().unwrap().join("trips")))
    );
    assert_eq!(paths(&got["results"], "path").len(), 4);
    assert_eq!(
        got["filter"]["in"][0].as_str().unwrap(),
        trips.canonicalize().unwrap().to_str().unwrap()
    );
    let rome = root.join("trips/rome");
    let deeper = root.join("home/deeper");
    let got = search(&[
        "--in",
        rome.to_str().unwrap(),
        "--in",
        deeper.to_str().unwrap(),
    ]);
    assert_eq!(
        paths(&got["results"], "path"),
        expected(&photos, |p| {
            let s = p.path.to_str().unwrap();
            s.contains("/trips/rome/") || s.contains("/home/deeper/")
        })
    );

    // Types: `jpg` matches .jpg and .JPEG; a comma list.
    let got = search(&["--type", "jpg"]);
    assert_eq!(
        paths(&got["results"], "path"),
        expected(&photos, |p| p.ext == "jpg")
    );
    let got = search(&["--type", "png,jpeg"]);
    assert_eq!(paths(&got["results"], "path").len(), photos.len());

    // Sizes, bounds inclusive, with units.
    let mut sizes: Vec<u64> = photos.iter().map(|p| p.size).collect();
    sizes.sort();
    let (lo, hi) = (sizes[2], sizes[5]);
    let got = search(&[
        "--min-size",
        &lo.to_string(),
        "--max-size",
        &format!("{hi}B"),
    ]);
    assert_eq!(
        paths(&got["results"], "path"),
        expected(&photos, |p| (lo..=hi).contains(&p.size))
    );
    assert_eq!(paths(&got["results"], "path").len(), 4);
    let got = search(&["--min-size", "100KB"]);
    assert_eq!(
        paths(&got["results"], "path"),
        expected(&photos, |p| p.size >= 100_000)
    );

    // Dates: --after includes its day, --before excludes its own.
    let got = search(&["--after", "2023-06-03", "--before", "2023-06-06"]);
    let (from, to) = (1_685_577_600 + 2 * 86_400, 1_685_577_600 + 5 * 86_400);
    assert_eq!(
        paths(&got["results"], "path"),
        expected(&photos, |p| p.mtime >= from && p.mtime < to)
    );
    assert_eq!(paths(&got["results"], "path").len(), 3);
    assert_eq!(got["filter"]["after"]["date"], "2023-06-03T00:00:00");
    let got = search(&["--before", "2023-06-02T12:00:01"]);
    assert_eq!(paths(&got["results"], "path").len(), 2);

    // Filters combine; nothing passing is an empty result, not an error.
    let got = search(&["--in", trips_s, "--type", "jpg", "--after", "2023-06-04"]);
    assert_eq!(
        paths(&got["results"], "path"),
        expected(&photos, |p| p
            .path
            .starts_with(trips.canonicalize().unwrap())
            && p.ext == "jpg"
            && p.mtime >= 1_685_577_600 + 3 * 86_400)
    );
    assert!(search(&["--camera", "Hasselblad"])["results"]
        .as_array()
        .unwrap()
        .is_empty());

    // Label: both directions only among the filtered files.
    let home = root.join("home");
    let o = run!(
        "label",
        "--store",
        store,
        "-l",
        "cat",
        "-l",
        "rocket",
        "-l",
        "coffee",
        "--images-per-label",
        "10",
        "--labels-per-image",
        "2",
        "--in",
        home,
        "-q",
        "-f",
        "json"
    );
    ok(&o);
    let labelled = json(&o);
    let want = expected(&photos, |p| {
        p.path.starts_with(home.canonicalize().unwrap())
    });
    assert_eq!(paths(&labelled["per_image"], "path"), want);
    for l in labelled["per_label"].as_array().unwrap() {
        assert_eq!(paths(&l["images"], "path"), want, "{l}");
    }
    for i in labelled["per_image"].as_array().unwrap() {
        assert_eq!(i["labels"].as_array().unwrap().len(), 2);
    }
}

#[test]
fn bad_filter_values_are_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("no-store");
    let fails = |args: &[&str], flag: &str, says: &str| {
        let mut all = vec!["search", "--store", store.to_str().unwrap(), "dog"];
        all.extend(args);
        let refs: Vec<&std::ffi::OsStr> = all.iter().map(std::ffi::OsStr::new).collect();
        let o = common::run_clipkit(&refs);
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(flag) && err.contains(says), "{args:?}: {err}");
    };
    fails(&["--after", "2023-13-01"], "--after", "month 13");
    fails(&["--before", "2023-02-30"], "--before", "no day 30");
    fails(&["--after", "June"], "--after", "YYYY-MM-DD");
    fails(&["--near", "91,2,5km"], "--near", "latitude");
    fails(&["--near", "48.8,2.3,5"], "--near", "unit");
    fails(&["--near", "48.8,2.3"], "--near", "LAT,LON,RADIUS");
    fails(&["--min-size", "5XB"], "--min-size", "200KB");
    fails(&["--type", "j/g"], "--type", "extension");
    let missing = dir.path().join("not-there");
    fails(&["--in", missing.to_str().unwrap()], "--in", "not-there");
    fails(
        &["--after", "2024", "--before", "2023"],
        "--after",
        "nothing can match",
    );
    fails(
        &["--min-size", "2MB", "--max-size", "1MB"],
        "--min-size",
        "more than",
    );
    let o = run!("search", "--help");
    assert!(common::stdout(&o).contains("--before 2023-09-01"));
}
