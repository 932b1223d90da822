//! Throughput measured on this machine: `clipkit bench` appends one JSON line per run to
//! `bench.jsonl` in clipkit's cache directory, and `clipkit models` shows the latest for this
//! CPU. Speed depends on the CPU far more than on anything else, so a record names its CPU
//! and is only shown on a machine with the same one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ClipError, Result};

/// The file the records are appended to, in [`crate::pack_cache::cache_root`].
pub const FILE_NAME: &str = "bench.jsonl";

/// One `clipkit bench` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRecord {
    /// The model as it was given (hub id or directory).
    pub model: String,
    /// The CPU's model name ([`cpu_name`]).
    pub cpu: String,
    /// `f32`, `bf16`, `f16` or `int8`.
    pub precision: String,
    pub batch: usize,
    pub threads: usize,
    /// Image-tower throughput on synthetic pixels (no decoding).
    pub images_per_sec: f64,
    /// UTC date and time of the run, `YYYY-MM-DDTHH:MM:SSZ`.
    pub date: String,
    /// The loaded checkpoint's family ([`crate::ModelFamily::name`]), image size and
    /// embedding size, so that a checkpoint outside the catalogue can be listed too.
    #[serde(default)]
    pub family: Option<String>,
    #[serde(default)]
    pub image_size: Option<usize>,
    #[serde(default)]
    pub embedding_dim: Option<usize>,
}

/// The default record file: `bench.jsonl` in clipkit's cache directory.
pub fn default_path() -> PathBuf {
    crate::pack_cache::cache_root().join(FILE_NAME)
}

/// Appends `record` as one line to `path`, creating the file and its directory.
pub fn append(path: &Path, record: &BenchRecord) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ClipError::io(dir, e))?;
    }
    let mut line = serde_json::to_string(record).map_err(|source| ClipError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    line.push('\n');
    // One write of one line in append mode: concurrent runs interleave whole lines.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|e| ClipError::io(path, e))
}

/// Every readable record in `path`, in file order. A missing file is no records; a line that
/// does not parse (a run killed mid-write, a future format) is skipped, since the records are
/// a convenience and one bad line should not hide the rest.
pub fn read(path: &Path) -> Result<Vec<BenchRecord>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ClipError::io(path, e)),
    };
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}

/// The most recent record of `model` on `cpu`, any precision and batch, preferring f32 (the
/// precision every machine runs, so that rows compare).
pub fn latest<'a>(records: &'a [BenchRecord], model: &str, cpu: &str) -> Option<&'a BenchRecord> {
    let mine = |r: &&BenchRecord| r.model.eq_ignore_ascii_case(model) && r.cpu == cpu;
    let newest = |rs: Vec<&'a BenchRecord>| rs.into_iter().max_by(|a, b| a.date.cmp(&b.date));
    let all: Vec<&BenchRecord> = records.iter().filter(mine).collect();
    let f32s: Vec<&BenchRecord> = all
        .iter()
        .copied()
        .filter(|r| r.precision == "f32")
        .collect();
    newest(f32s).or_else(|| newest(all))
}

/// This CPU's model name as the kernel reports it (`model name` in `/proc/cpuinfo`), or the
/// architecture where it is not available.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Now, as `YYYY-MM-DDTHH:MM:SSZ` (UTC), which sorts as text in time order.
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`, by the proleptic Gregorian
/// calendar (days to civil date as in Howard Hinnant's `civil_from_days`).
fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(model: &str, cpu: &str, precision: &str, ips: f64, date: &str) -> BenchRecord {
        BenchRecord {
            model: model.into(),
            cpu: cpu.into(),
            precision: precision.into(),
            batch: 8,
            threads: 2,
            images_per_sec: ips,
            date: date.into(),
            family: None,
            image_size: None,
            embedding_dim: None,
        }
    }

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_796_687_999), "2026-12-07T23:59:59Z");
    }

    #[test]
    fn records_round_trip_and_bad_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/bench.jsonl");
        assert!(read(&path).unwrap().is_empty());
        let a = record("m", "cpu A", "f32", 10.0, "2026-01-01T00:00:00Z");
        append(&path, &a).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"model\": \"trunc\n")
            .unwrap();
        let b = record("m", "cpu A", "int8", 30.0, "2026-01-02T00:00:00Z");
        append(&path, &b).unwrap();
        assert_eq!(read(&path).unwrap(), vec![a, b]);
    }

    #[test]
    fn latest_is_this_cpus_newest_preferring_f32() {
        let rs = vec![
            record("m", "cpu A", "f32", 10.0, "2026-01-01T00:00:00Z"),
            record("m", "cpu A", "f32", 12.0, "2026-01-03T00:00:00Z"),
            record("m", "cpu A", "int8", 40.0, "2026-01-04T00:00:00Z"),
            record("m", "cpu B", "f32", 99.0, "2026-01-05T00:00:00Z"),
            record("other", "cpu A", "int8", 50.0, "2026-01-05T00:00:00Z"),
        ];
        assert_eq!(latest(&rs, "M", "cpu A").unwrap().images_per_sec, 12.0);
        assert_eq!(latest(&rs, "m", "cpu B").unwrap().images_per_sec, 99.0);
        assert_eq!(latest(&rs, "other", "cpu A").unwrap().precision, "int8");
        assert!(latest(&rs, "m", "cpu C").is_none());
    }
}
