//! `clipkit bench store` end to end: a small store forced through the graph, every format, and
//! `clipkit bench` still reading model flags.

mod common;

use common::*;

#[test]
fn bench_store_reports_every_measure_with_sane_recall() {
    let dir = tempfile::tempdir().unwrap();
    let o = clipkit()
        .args([
            "bench",
            "store",
            "--vectors",
            "3000",
            "--dim",
            "64",
            "--queries",
            "50",
            "--labels",
            "20",
            "--filter-selectivity",
            "0.2",
            "--format",
            "json",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    for field in [
        "build_s",
        "p50_ms",
        "p99_ms",
        "recall_at_10",
        "raw_p50_ms",
        "raw_recall_at_10",
        "label_s",
        "filtered_p50_ms",
        "filtered_recall_at_10",
        "ingest_per_s",
        "disk_mib",
        "graph_mib",
    ] {
        assert!(v[field].as_f64().is_some(), "{field} missing: {v}");
    }
    assert_eq!(v["vectors"], 3000);
    // Reopened, the saved graph was memory-mapped rather than loaded.
    assert_eq!(v["graph_mapped"], true);
    assert_eq!(v["dim"], 64);
    assert!(v["threads"].as_u64().unwrap() >= 1);
    assert!(!v["cpu"].as_str().unwrap().is_empty());
    assert!(v["recall_at_10"].as_f64().unwrap() >= 0.9, "{v}");
    assert!(v["raw_recall_at_10"].as_f64().unwrap() >= 0.9, "{v}");
    assert!(v["filtered_recall_at_10"].as_f64().unwrap() >= 0.9, "{v}");
    assert!(v["p99_ms"].as_f64().unwrap() >= v["p50_ms"].as_f64().unwrap());
    // The temporary store is gone.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let o = clipkit()
        .args([
            "bench",
            "store",
            "--vectors",
            "500",
            "--dim",
            "8",
            "--queries",
            "5",
        ])
        .args(["--format", "csv", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with("measure,value\n"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("recall_at_10,")),
        "{text}"
    );
}

#[test]
fn bench_store_refuses_bad_values_and_model_flags() {
    let o = clipkit()
        .args(["bench", "store", "--filter-selectivity", "1.5"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--filter-selectivity"),
        "{}",
        stderr(&o)
    );
    // Model flags belong to `bench` itself, not to `bench store`.
    let o = clipkit()
        .args(["bench", "--batch", "4", "store"])
        .output()
        .unwrap();
    assert!(!o.status.success());
}
