//! Value parsers for flags with a valid range. The range is checked while the flags are
//! parsed, so a bad value is refused before any model loads, and clap's error names the flag
//! and the value (`invalid value '0' for '--batch-size <BATCH_SIZE>': must be 1 or more`).

use clipkit_eval::LogitScale;
use clipkit_index::dedup::Threshold;
/// The filter flags' values, parsed as the server parses the same fields.
pub use clipkit_index::filter_text::{date, file_type, near, size};
use clipkit_index::shard::Shard;

/// A count that must be at least one (batch sizes, iterations, shots, rows per file).
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        Ok(_) => Err("must be 1 or more".into()),
        Err(_) => Err("must be a whole number, 1 or more".into()),
    }
}

/// A finite number above zero.
pub fn positive(s: &str) -> Result<f64, String> {
    match finite(s)? {
        v if v > 0.0 => Ok(v),
        _ => Err("must be a number above 0".into()),
    }
}

/// A finite number, zero or above (durations).
pub fn non_negative(s: &str) -> Result<f64, String> {
    match finite(s)? {
        v if v >= 0.0 => Ok(v),
        _ => Err("must be a number, 0 or above".into()),
    }
}

/// A fraction above 0, at most 1 (a filter's selectivity).
pub fn fraction(s: &str) -> Result<f64, String> {
    match finite(s)? {
        v if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err("must be a number above 0 and at most 1".into()),
    }
}

fn finite(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err("must be a finite number".into()),
    }
}

/// `auto`, or a cosine in -1..=1.
pub fn dedup_threshold(s: &str) -> Result<Threshold, String> {
    if s == "auto" {
        return Ok(Threshold::Auto);
    }
    match s.parse::<f32>() {
        Ok(v) if (-1.0..=1.0).contains(&v) => Ok(Threshold::Fixed(v)),
        _ => Err("must be a cosine between -1 and 1, or `auto`".into()),
    }
}

/// `model` (the checkpoint's own scale), or a positive number.
pub fn logit_scale(s: &str) -> Result<LogitScale, String> {
    if s == "model" {
        return Ok(LogitScale::Model);
    }
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(LogitScale::Fixed(v)),
        _ => Err("must be a positive number or `model`".into()),
    }
}

/// `I/N`: worker I of N (0 ≤ I < N) of a tree split between workers.
pub fn shard(s: &str) -> Result<Shard, String> {
    s.parse::<Shard>().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        assert_eq!(at_least_one("3"), Ok(3));
        for bad in ["0", "-1", "1.5", "x"] {
            assert!(at_least_one(bad).is_err(), "{bad}");
        }
        assert_eq!(positive("0.5"), Ok(0.5));
        for bad in ["0", "-1", "inf", "NaN", "x"] {
            assert!(positive(bad).is_err(), "{bad}");
        }
        assert_eq!(non_negative("0"), Ok(0.0));
        assert!(non_negative("-0.1").is_err());
        assert_eq!(dedup_threshold("auto"), Ok(Threshold::Auto));
        assert_eq!(dedup_threshold("-1"), Ok(Threshold::Fixed(-1.0)));
        assert!(dedup_threshold("1.01").is_err());
        assert_eq!(logit_scale("model"), Ok(LogitScale::Model));
        assert_eq!(logit_scale("100"), Ok(LogitScale::Fixed(100.0)));
        assert!(logit_scale("0").is_err());
        assert_eq!(shard("1/2").map(|s| s.to_string()), Ok("1/2".to_owned()));
        for bad in ["2/2", "0/0", "1", "a/2"] {
            assert!(shard(bad).is_err(), "{bad}");
        }
    }
}
