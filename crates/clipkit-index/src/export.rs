//! Collections in and out, in clip-retrieval's layout so its tools (autofaiss,
//! clip-retrieval back, notebooks) read what clipkit writes and vice versa:
//! `img_emb/img_emb_{i}.npy` (one row per image) beside `metadata/metadata_{i}.parquet`
//! (`image_path` and friends, same row order). `parquet` keeps each embedding in the
//! metadata row instead (`embeddings/part_{i}.parquet`).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::parquet_io::{read_table, write_table, Column};
use crate::paths::{decode_path, encode_path};
use crate::store::{Batch, Entry, FileRecord, Store};
use crate::{IndexError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// `img_emb/*.npy` + `metadata/*.parquet` (clip-retrieval).
    Npy,
    /// `embeddings/*.parquet` with an `embedding` list column.
    Parquet,
}

#[derive(Clone, Debug)]
pub struct ExportOptions {
    pub format: ExportFormat,
    /// Rows per file.
    pub shard_size: usize,
    /// Write f16 embeddings (clip-retrieval's default; halves the size, cosine ≥ 0.9999).
    pub half: bool,
}

/// Writes the whole store to `out`; returns how many rows were written.
pub fn export(store: &dyn Store, out: &Path, options: &ExportOptions) -> Result<usize> {
    let dim = store.info().dim;
    let dirs: &[&str] = match options.format {
        ExportFormat::Npy => &["img_emb", "metadata"],
        ExportFormat::Parquet => &["embeddings"],
    };
    for d in dirs {
        let p = out.join(d);
        std::fs::create_dir_all(&p).map_err(|source| IndexError::Io { path: p, source })?;
    }
    let mut shard = 0usize;
    let mut rows = 0usize;
    store.scan(options.shard_size.max(1), &mut |entries| {
        write_shard(out, shard, entries, dim, options)?;
        shard += 1;
        rows += entries.len();
        Ok(())
    })?;
    Ok(rows)
}

fn write_shard(
    out: &Path,
    shard: usize,
    entries: &[Entry],
    dim: usize,
    options: &ExportOptions,
) -> Result<()> {
    let meta = vec![
        Column::Str(
            "image_path".into(),
            entries.iter().map(|e| encode_path(&e.file.path)).collect(),
        ),
        Column::I64(
            "size".into(),
            entries.iter().map(|e| e.file.size as i64).collect(),
        ),
        Column::I64(
            "mtime_ns".into(),
            entries.iter().map(|e| e.file.mtime_ns).collect(),
        ),
        Column::Str(
            "hash".into(),
            entries.iter().map(|e| e.file.hash.clone()).collect(),
        ),
    ];
    let flat: Vec<f32> = entries
        .iter()
        .flat_map(|e| e.vector.iter().copied())
        .collect();
    match options.format {
        ExportFormat::Npy => {
            let path = out.join("img_emb").join(format!("img_emb_{shard}.npy"));
            let npy_error = |e: candle_core::Error| IndexError::BadFile {
                path: path.clone(),
                problem: e.to_string(),
            };
            let mut t =
                Tensor::from_vec(flat, (entries.len(), dim), &Device::Cpu).map_err(npy_error)?;
            if options.half {
                t = t.to_dtype(DType::F16).map_err(npy_error)?;
            }
            t.write_npy(&path).map_err(npy_error)?;
            write_table(
                &out.join("metadata")
                    .join(format!("metadata_{shard}.parquet")),
                &meta,
            )
        }
        ExportFormat::Parquet => {
            let mut columns = meta;
            let flat = if options.half {
                flat.iter()
                    .map(|&x| half::f16::from_f32(x).to_f32())
                    .collect()
            } else {
                flat
            };
            columns.push(Column::F32List("embedding".into(), dim, flat));
            write_table(
                &out.join("embeddings").join(format!("part_{shard}.parquet")),
                &columns,
            )
        }
    }
}

/// Files in `dir` ending in `ext`, in shard order (`name_2` before `name_10`).
fn shards(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| IndexError::Io {
            path: dir.to_owned(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    let number = |p: &PathBuf| -> (u64, PathBuf) {
        let stem = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let digits: String = stem
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        (
            digits
                .chars()
                .rev()
                .collect::<String>()
                .parse()
                .unwrap_or(0),
            p.clone(),
        )
    };
    files.sort_by_key(number);
    Ok(files)
}

/// Reads a collection exported by clipkit or clip-retrieval into `store`; returns the rows
/// imported. Rows whose vectors have the wrong size are refused with the file named.
pub fn import(store: &mut dyn Store, dir: &Path) -> Result<usize> {
    let dim = store.info().dim;
    let mut imported = 0;
    if dir.join("img_emb").is_dir() {
        let npys = shards(&dir.join("img_emb"), "npy")?;
        let metas = shards(&dir.join("metadata"), "parquet")?;
        if npys.len() != metas.len() {
            return Err(IndexError::BadFile {
                path: dir.to_owned(),
                problem: format!(
                    "{} embedding files but {} metadata files",
                    npys.len(),
                    metas.len()
                ),
            });
        }
        for (npy, meta) in npys.iter().zip(&metas) {
            let bad = |problem: String| IndexError::BadFile {
                path: npy.clone(),
                problem,
            };
            let t = Tensor::read_npy(npy).map_err(|e| bad(e.to_string()))?;
            let t = t.to_dtype(DType::F32).map_err(|e| bad(e.to_string()))?;
            let (rows, cols) = t.dims2().map_err(|e| bad(e.to_string()))?;
            if cols != dim {
                return Err(IndexError::WrongVectorDimension {
                    store: npy.display().to_string(),
                    expected: dim,
                    got: cols,
                });
            }
            let vectors: Vec<Vec<f32>> = t.to_vec2().map_err(|e| bad(e.to_string()))?;
            let table = read_table(meta)?;
            if table.rows != rows {
                return Err(IndexError::BadFile {
                    path: meta.clone(),
                    problem: format!(
                        "{} metadata rows for {rows} embeddings in {}",
                        table.rows,
                        npy.display()
                    ),
                });
            }
            imported += import_rows(store, meta, &table, vectors)?;
        }
    } else if dir.join("embeddings").is_dir() {
        for part in shards(&dir.join("embeddings"), "parquet")? {
            let mut table = read_table(&part)?;
            let vectors = table
                .lists
                .remove("embedding")
                .ok_or_else(|| IndexError::BadFile {
                    path: part.clone(),
                    problem: "no `embedding` column".into(),
                })?;
            if let Some(v) = vectors.iter().find(|v| v.len() != dim) {
                return Err(IndexError::WrongVectorDimension {
                    store: part.display().to_string(),
                    expected: dim,
                    got: v.len(),
                });
            }
            imported += import_rows(store, &part, &table, vectors)?;
        }
    } else {
        return Err(IndexError::BadFile {
            path: dir.to_owned(),
            problem: "neither img_emb/ + metadata/ (clip-retrieval) nor embeddings/ found".into(),
        });
    }
    store.flush()?;
    Ok(imported)
}

fn import_rows(
    store: &mut dyn Store,
    file: &Path,
    table: &crate::parquet_io::Table,
    vectors: Vec<Vec<f32>>,
) -> Result<usize> {
    let paths = table
        .strings
        .get("image_path")
        .ok_or_else(|| IndexError::BadFile {
            path: file.to_owned(),
            problem: "no `image_path` column".into(),
        })?;
    let ints = |name: &str, i: usize| {
        table
            .ints
            .get(name)
            .and_then(|v| v.get(i))
            .copied()
            .unwrap_or(0)
    };
    let hashes = table.strings.get("hash");
    let mut batch = Batch::default();
    for (i, (path, mut vector)) in paths.iter().zip(vectors).enumerate() {
        clipkit_core::scores::normalize(&mut vector);
        batch.upserts.push(Entry {
            file: FileRecord {
                path: decode_path(path),
                size: ints("size", i) as u64,
                mtime_ns: ints("mtime_ns", i),
                hash: hashes.and_then(|h| h.get(i)).cloned().unwrap_or_default(),
                meta: Default::default(),
            },
            vector,
        });
    }
    let n = batch.upserts.len();
    store.apply(batch)?;
    Ok(n)
}
