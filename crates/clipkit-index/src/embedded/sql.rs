//! The SQLite side of the embedded store: schema, collection info, meta keys, vector bytes.

use std::path::Path;

use clipkit_image::{PhotoMetadata, PreprocessMode};
use rusqlite::{Connection, OptionalExtension};

use super::FORMAT_VERSION;
use crate::filter::file_type;
use crate::store::{CollectionInfo, FileRecord};
use crate::{IndexError, Result};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path BLOB NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash TEXT NOT NULL,
    vector BLOB NOT NULL,
    meta_read INTEGER NOT NULL DEFAULT 0,
    taken INTEGER,
    offset_minutes INTEGER,
    latitude REAL,
    longitude REAL,
    make TEXT,
    model TEXT,
    width INTEGER,
    height INTEGER,
    taken_key INTEGER,
    camera_lc TEXT,
    file_type TEXT
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

/// The capture-metadata columns of `files`, added in format 2, as `ALTER TABLE` adds them to
/// a store written before (SQLite adds a column to every row at no cost: old rows read the
/// default). `meta_read` says whether the file's metadata was ever read: 0 on rows of old
/// stores, and on rows written with no metadata at all (an import), until the backfill has
/// read their files.
///
/// The other columns hold [`PhotoMetadata`] as it is, plus what the filters compare, computed
/// once at write time so that a filter is plain SQL over indexed columns:
/// `taken_key` (the EXIF date, else the mtime in seconds: [`FileRecord::taken`]),
/// `camera_lc` (the camera, lower case, for a case-insensitive substring) and `file_type`
/// (the canonical extension).
const META_COLUMNS: [(&str, &str); 12] = [
    ("meta_read", "INTEGER NOT NULL DEFAULT 0"),
    ("taken", "INTEGER"),
    ("offset_minutes", "INTEGER"),
    ("latitude", "REAL"),
    ("longitude", "REAL"),
    ("make", "TEXT"),
    ("model", "TEXT"),
    ("width", "INTEGER"),
    ("height", "INTEGER"),
    ("taken_key", "INTEGER"),
    ("camera_lc", "TEXT"),
    ("file_type", "TEXT"),
];

/// Indexes for filtered search, created after the columns exist. `files_filter` covers
/// every filter column, so a filter that cannot use a range still scans this narrow index
/// rather than the table's rows with their vectors; it leads with `taken_key`, the filter
/// most searches carry. `files_place` serves the bounding box of a `near` filter. Folder
/// prefixes use the `path` column's own unique index.
const FILTER_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS files_filter
    ON files(taken_key, size, latitude, longitude, file_type, camera_lc);
CREATE INDEX IF NOT EXISTS files_place ON files(latitude, longitude);
CREATE INDEX IF NOT EXISTS files_unread ON files(meta_read) WHERE meta_read = 0;
";

/// Brings an older store's schema up to this format: the missing metadata columns (rows of
/// an old store get `taken_key` from their mtime, so date filters work before the
/// backfill), the filter indexes and the format number. Runs inside the caller's
/// transaction; a store already current is left as it is.
pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let mut present = Vec::new();
    {
        let mut stmt = conn.prepare("PRAGMA table_info(files)")?;
        let names = stmt.query_map([], |r| r.get::<_, String>(1))?;
        for name in names {
            present.push(name?);
        }
    }
    let mut added = false;
    for (name, kind) in META_COLUMNS {
        if !present.iter().any(|p| p == name) {
            conn.execute_batch(&format!("ALTER TABLE files ADD COLUMN {name} {kind}"))?;
            added = true;
        }
    }
    if added {
        conn.execute(
            &format!("UPDATE files SET taken_key = {TAKEN_FROM_MTIME} WHERE taken_key IS NULL"),
            [],
        )?;
    }
    conn.execute_batch(FILTER_INDEXES)?;
    let format = conn
        .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
            r.get::<_, String>(0)
        })
        .optional()?;
    if format.is_some_and(|f| f.parse::<u32>().unwrap_or(0) < FORMAT_VERSION.parse().unwrap_or(0)) {
        set_meta(conn, "format", FORMAT_VERSION)?;
    }
    Ok(())
}

/// `mtime_ns` as whole seconds rounded down (SQLite's `/` truncates towards zero), the
/// clock [`FileRecord::taken`] falls back to.
pub(super) const TAKEN_FROM_MTIME: &str = "CASE WHEN mtime_ns >= 0 THEN mtime_ns / 1000000000 \
    ELSE -((999999999 - mtime_ns) / 1000000000) END";

/// The metadata columns' values for one file, in `META_COLUMNS` order (less `meta_read` and
/// `size`, which the writer sets).
pub(super) fn meta_values(file: &FileRecord) -> [rusqlite::types::Value; 11] {
    use rusqlite::types::Value;
    let m = &file.meta;
    let int = |v: Option<i64>| v.map_or(Value::Null, Value::Integer);
    let real = |v: Option<f64>| v.filter(|x| x.is_finite()).map_or(Value::Null, Value::Real);
    let text = |v: Option<String>| v.map_or(Value::Null, Value::Text);
    [
        int(m.taken),
        int(m.offset_minutes.map(i64::from)),
        real(m.latitude),
        real(m.longitude),
        text(m.make.clone()),
        text(m.model.clone()),
        int(m.width.map(i64::from)),
        int(m.height.map(i64::from)),
        Value::Integer(file.taken()),
        text(m.camera().map(|c| c.to_lowercase())),
        text(file_type(&file.path)),
    ]
}

/// The columns [`read_meta`] reads, in its order, for a `SELECT`.
pub(super) const META_SELECT: &str =
    "taken, offset_minutes, latitude, longitude, make, model, width, height";

/// [`PhotoMetadata`] from the columns of [`META_SELECT`], starting at column `at`.
pub(super) fn read_meta(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<PhotoMetadata> {
    Ok(PhotoMetadata {
        taken: r.get(at)?,
        offset_minutes: r.get(at + 1)?,
        latitude: r.get(at + 2)?,
        longitude: r.get(at + 3)?,
        make: r.get(at + 4)?,
        model: r.get(at + 5)?,
        width: r.get(at + 6)?,
        height: r.get(at + 7)?,
    })
}

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
