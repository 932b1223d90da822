//! The SQLite side of the embedded store: schema, collection info, meta keys, vector bytes.

use std::path::Path;

use clipkit_image::PreprocessMode;
use rusqlite::{Connection, OptionalExtension};

use super::FORMAT_VERSION;
use crate::store::CollectionInfo;
use crate::{IndexError, Result};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path BLOB NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS files_hash ON files(hash);
CREATE TABLE IF NOT EXISTS changes (generation INTEGER NOT NULL, id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS labels (
    set_name TEXT NOT NULL,
    position INTEGER NOT NULL,
    label TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (set_name, position)
);
CREATE TABLE IF NOT EXISTS label_sets (set_name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS roots (path BLOB PRIMARY KEY);
";

pub(super) fn sqlite_error(dir: &Path, e: rusqlite::Error) -> IndexError {
    IndexError::Sqlite {
        store: dir.to_owned(),
        message: e.to_string(),
    }
}

pub(super) fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|source| IndexError::Io {
        path: to.to_owned(),
        source,
    })
}

pub(super) fn check_compatible(
    dir: &Path,
    stored: &CollectionInfo,
    wanted: &CollectionInfo,
) -> Result<()> {
    let store = dir.display().to_string();
    if stored.dim != wanted.dim {
        return Err(IndexError::WrongVectorDimension {
            store,
            expected: stored.dim,
            got: wanted.dim,
        });
    }
    if !stored.accepts(wanted) {
        return Err(IndexError::ModelMismatch {
            store,
            stored: stored.describe(),
            requested: wanted.describe(),
        });
    }
    Ok(())
}

pub(super) fn read_info(conn: &Connection) -> rusqlite::Result<Option<CollectionInfo>> {
    let get = |key: &str| {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
            r.get::<_, String>(0)
        })
        .optional()
    };
    let (Some(model), Some(dim), Some(preprocess)) =
        (get("model")?, get("dim")?, get("preprocess")?)
    else {
        return Ok(None);
    };
    let preprocess = preprocess.parse::<PreprocessMode>().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(Some(CollectionInfo {
        model,
        dim: dim.parse().unwrap_or(0),
        preprocess,
        family: get("family")?,
    }))
}

pub(super) fn write_info(conn: &Connection, info: &CollectionInfo) -> rusqlite::Result<()> {
    set_meta(conn, "format", FORMAT_VERSION)?;
    set_meta(conn, "model", &info.model)?;
    set_meta(conn, "dim", &info.dim.to_string())?;
    set_meta(conn, "preprocess", &info.preprocess.to_string())?;
    if let Some(family) = &info.family {
        set_meta(conn, "family", family)?;
    }
    set_meta(conn, "generation", "0")?;
    set_meta(conn, "log_since", "0")
}

pub(super) fn set_meta(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )
    .map(|_| ())
}

pub(super) fn meta_i64(conn: &Connection, key: &str) -> rusqlite::Result<i64> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
            r.get::<_, String>(0)
        })
        .optional()?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

pub(super) fn generation(conn: &Connection) -> rusqlite::Result<i64> {
    meta_i64(conn, "generation")
}

/// Vectors are stored as little-endian f32 bytes: exact, and 4 bytes a dimension.
pub(crate) fn encode_vector(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn decode_vector(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
