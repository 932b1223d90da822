//! `ann.vectors`: the stored f32 vectors again, in one memory-mapped file keyed by graph key,
//! so rescoring a graph search's candidates reads memory instead of running one SQL query
//! per candidate (which cost more than the graph walk itself).
//!
//! Like the graph it is derived data: it records the store generation it reflects and is
//! only ever replaced whole (written to a temporary file, then renamed), never changed in
//! place — so a memory map of it stays valid while a newer one is written, and a crash
//! leaves the old file or the new one. Layout, little-endian:
//!
//! ```text
//! magic "CKVECS01" | dim u64 | count u64 | generation i64
//! count × dim f32   vectors, in key order
//! count u64         keys (path ids), ascending
//! ```
//!
//! Keys are sorted, so a lookup is a binary search: no table to build at open, and the
//! file can be written streaming from SQLite's `ORDER BY id` scan.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::{IndexError, Result};

const MAGIC: &[u8; 8] = b"CKVECS01";
const HEADER: usize = 32;

/// A read-only view of a vectors file.
pub(super) struct VectorFile {
    map: Mmap,
    dim: usize,
    count: usize,
    generation: i64,
}

impl VectorFile {
    /// Maps `path`; `None` when it is missing, of another dimension, or malformed — derived
    /// data the caller then rebuilds.
    pub(super) fn open(path: &Path, dim: usize) -> Option<Self> {
        let file = File::open(path).ok()?;
        // SAFETY: the file is never modified in place (replacements are renamed over it, which
        // leaves this mapping on the old inode), so the mapped bytes do not change under us.
        let map = unsafe { Mmap::map(&file) }.ok()?;
        if map.len() < HEADER || &map[..8] != MAGIC {
            return None;
        }
        let word =
            |i: usize| u64::from_le_bytes(map[8 * i..8 * i + 8].try_into().unwrap_or([0; 8]));
        let (file_dim, count, generation) = (word(1) as usize, word(2) as usize, word(3) as i64);
        let expected = count
            .checked_mul(dim.checked_mul(4)?.checked_add(8)?)?
            .checked_add(HEADER)?;
        if file_dim != dim || map.len() != expected {
            return None;
        }
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::Random);
        Some(Self {
            map,
            dim,
            count,
            generation,
        })
    }

    pub(super) fn generation(&self) -> i64 {
        self.generation
    }

    pub(super) fn len(&self) -> usize {
        self.count
    }

    /// Bytes on disk.
    pub(super) fn size_bytes(&self) -> usize {
        self.map.len()
    }

    fn key_at(&self, slot: usize) -> u64 {
        let at = HEADER + self.count * self.dim * 4 + slot * 8;
        u64::from_le_bytes(self.map[at..at + 8].try_into().unwrap_or([0; 8]))
    }

    fn slot(&self, key: u64) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key_at(mid).cmp(&key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    fn bytes_at(&self, slot: usize) -> &[u8] {
        let at = HEADER + slot * self.dim * 4;
        &self.map[at..at + self.dim * 4]
    }

    /// The dot product of `query` with the vector of `key`, `None` when the key is absent.
    pub(super) fn dot(&self, key: u64, query: &[f32]) -> Option<f32> {
        let bytes = self.bytes_at(self.slot(key)?);
        let mut v = vec![0f32; self.dim];
        for (x, b) in v.iter_mut().zip(bytes.chunks_exact(4)) {
            *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        Some(clipkit_core::scores::dot(query, &v))
    }

    /// Every (key, vector bytes) in key order.
    fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        (0..self.count).map(|s| (self.key_at(s), self.bytes_at(s)))
    }
}

/// Writes a vectors file in key order to a temporary path, then renames it into place.
pub(super) struct VectorWriter {
    tmp: PathBuf,
    path: PathBuf,
    out: BufWriter<File>,
    dim: usize,
    keys: Vec<u64>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io {
        path: path.to_owned(),
        source,
    }
}

impl VectorWriter {
    pub(super) fn create(path: &Path, dim: usize) -> Result<Self> {
        let mut name = path.file_name().unwrap_or_default().to_owned();
        name.push(format!(".{}.tmp", std::process::id()));
        let tmp = path.with_file_name(name);
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[0u8; HEADER]).map_err(io(&tmp))?;
        Ok(Self {
            tmp,
            path: path.to_owned(),
            out,
            dim,
            keys: Vec::new(),
        })
    }

    /// Appends one vector; keys must come in ascending order.
    pub(super) fn push(&mut self, key: u64, vector: &[f32]) -> Result<()> {
        debug_assert!(self.keys.last().is_none_or(|&last| last < key));
        debug_assert_eq!(vector.len(), self.dim);
        for x in vector {
            self.out
                .write_all(&x.to_le_bytes())
                .map_err(io(&self.tmp))?;
        }
        self.keys.push(key);
        Ok(())
    }

    fn push_bytes(&mut self, key: u64, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(io(&self.tmp))?;
        self.keys.push(key);
        Ok(())
    }

    /// Completes the file for `generation`, renames it into place and maps it.
    pub(super) fn finish(mut self, generation: i64) -> Result<VectorFile> {
        let err = io(&self.tmp);
        for k in &self.keys {
            self.out.write_all(&k.to_le_bytes()).map_err(&err)?;
        }
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&(self.dim as u64).to_le_bytes());
        header.extend_from_slice(&(self.keys.len() as u64).to_le_bytes());
        header.extend_from_slice(&generation.to_le_bytes());
        let mut file = self.out.into_inner().map_err(|e| err(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(&err)?;
        file.write_all(&header).map_err(&err)?;
        file.sync_all().map_err(&err)?;
        drop(file);
        super::sql::rename(&self.tmp, &self.path)?;
        VectorFile::open(&self.path, self.dim).ok_or_else(|| IndexError::Io {
            path: self.path.clone(),
            source: std::io::Error::other("vectors file unreadable right after writing it"),
        })
    }
}

/// A new file: `old` with `changes` applied (each id's current vector, `None` when removed);
/// `changes` must be sorted by key.
pub(super) fn merge(
    old: &VectorFile,
    changes: &[(u64, Option<Vec<f32>>)],
    mut out: VectorWriter,
    generation: i64,
) -> Result<VectorFile> {
    let mut old_iter = old.iter().peekable();
    let mut changes = changes.iter().peekable();
    loop {
        let take_old = match (old_iter.peek(), changes.peek()) {
            (None, None) => break,
            (Some(o), Some(c)) => o.0 < c.0,
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        if take_old {
            if let Some((key, bytes)) = old_iter.next() {
                out.push_bytes(key, bytes)?;
            }
        } else if let Some((key, vector)) = changes.next() {
            if old_iter.peek().is_some_and(|o| o.0 == *key) {
                old_iter.next();
            }
            if let Some(v) = vector {
                out.push(*key, v)?;
            }
        }
    }
    out.finish(generation)
}
