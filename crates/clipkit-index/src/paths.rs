//! Paths as keys. File paths are not always UTF-8, but Milvus stores strings and users read
//! results as text, so paths have a lossless string form and a stable 63-bit id derived from
//! their bytes — the same path gets the same id in every backend, which makes writes
//! idempotent: replaying a batch after a crash converges instead of duplicating.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Marks the escaped form of a non-UTF-8 path. No real path starts with NUL, so a UTF-8 path
/// is always stored as itself.
const ESCAPE_PREFIX: &str = "\0hex:";

pub fn path_bytes(path: &Path) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        path.to_string_lossy().into_owned().into_bytes()
    }
}

pub fn path_from_bytes(bytes: &[u8]) -> PathBuf {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        PathBuf::from(OsString::from_vec(bytes.to_vec()))
    }
    #[cfg(not(unix))]
    {
        PathBuf::from(OsString::from(String::from_utf8_lossy(bytes).into_owned()))
    }
}

/// Lossless string form: the path itself when it is UTF-8, else an escaped hex dump.
pub fn encode_path(path: &Path) -> String {
    match path.to_str() {
        Some(s) => s.to_owned(),
        None => {
            let mut out = String::from(ESCAPE_PREFIX);
            for b in path_bytes(path) {
                out.push_str(&format!("{b:02x}"));
            }
            out
        }
    }
}

pub fn decode_path(s: &str) -> PathBuf {
    if let Some(hex) = s.strip_prefix(ESCAPE_PREFIX) {
        let bytes: Option<Vec<u8>> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
            .collect();
        if let Some(bytes) = bytes {
            return path_from_bytes(&bytes);
        }
    }
    PathBuf::from(s)
}

/// Stable id of a path: the first 63 bits of its blake3 hash (positive as an i64, which is
/// what Milvus and SQLite keys are).
pub fn path_id(path: &Path) -> i64 {
    let hash = blake3::hash(&path_bytes(path));
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    (u64::from_le_bytes(first) >> 1) as i64
}

/// Content hash used to recognise renamed, moved and copied files.
pub fn content_hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Serde helper: paths shown to people (JSON output) as text, lossily for non-UTF-8 names
/// — serde's own impl refuses those, which would fail a whole listing over one file name.
pub fn serialize_lossy<S: serde::Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

pub fn serialize_lossy_vec<S: serde::Serializer>(
    paths: &[PathBuf],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(paths.iter().map(|p| p.to_string_lossy()))
}

pub fn serialize_lossy_pairs<S: serde::Serializer>(
    pairs: &[(PathBuf, PathBuf, f32)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        pairs
            .iter()
            .map(|(a, b, score)| (a.to_string_lossy(), b.to_string_lossy(), score)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_paths_encode_as_themselves() {
        let p = Path::new("photos/été/chat.jpg");
        assert_eq!(encode_path(p), "photos/été/chat.jpg");
        assert_eq!(decode_path(&encode_path(p)), p);
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_paths_round_trip() {
        let p = path_from_bytes(b"photos/caf\xe9.jpg");
        let encoded = encode_path(&p);
        assert!(encoded.starts_with(ESCAPE_PREFIX));
        assert_eq!(decode_path(&encoded), p);
    }

    #[test]
    fn ids_are_stable_positive_and_distinct() {
        let a = path_id(Path::new("a.jpg"));
        assert_eq!(a, path_id(Path::new("a.jpg")));
        assert!(a >= 0);
        assert_ne!(a, path_id(Path::new("b.jpg")));
    }
}
