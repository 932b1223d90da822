//! Packed weights saved next to nothing else: a file per (checkpoint, weight format) under the
//! cache directory, mapped back on the next load.
//!
//! Why: packing copies every weight into fresh memory, and on some machines (this project's VMs
//! among them) the kernel zeroing fresh pages, not the packing, made a ViT-B/32 load take 1.3–2.3
//! s instead of 0.35 s. A mapped file needs no fresh memory: its pages are the page cache's,
//! shared by every process that loads the same model. The first load packs as before and writes
//! the file (to a temporary name, renamed when complete, so a killed load leaves no half file).
//!
//! A cache file is only used when its recorded identity matches: format version, weight format,
//! panel width, and each safetensors file's path, size and modification time. Anything else
//! (another checkpoint, an edited file, a newer clipkit with another layout) packs afresh.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use clipkit_kernels::{Backing, PackedWeights, WeightFormat};

/// Bumped whenever the file layout or the panel layout changes.
const VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"CKPACK01";

/// clipkit's cache directory: `$CLIPKIT_CACHE`, else `$XDG_CACHE_HOME/clipkit`, else
/// `~/.cache/clipkit`.
pub fn cache_root() -> PathBuf {
    std::env::var_os("CLIPKIT_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("clipkit")))
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache/clipkit")))
        .unwrap_or_else(|| PathBuf::from(".clipkit-cache"))
}

/// Where the binary keeps packed weights: `$CLIPKIT_PACK_CACHE` (a directory, or `off`), else
/// `packed/` in [`cache_root`].
pub fn default_dir() -> Option<PathBuf> {
    match std::env::var_os("CLIPKIT_PACK_CACHE") {
        Some(v) if v == "off" || v == "0" || v.is_empty() => None,
        Some(v) => Some(PathBuf::from(v)),
        None => Some(cache_root().join("packed")),
    }
}

pub struct PackCache {
    path: PathBuf,
    reader: Option<Reader>,
    writer: Mutex<Option<Writer>>,
}

struct Reader {
    backing: Backing,
    layers: HashMap<String, usize>,
}

struct Writer {
    tmp: PathBuf,
    file: BufWriter<File>,
    offset: usize,
    layers: Vec<(String, usize)>,
    identity: String,
}

impl PackCache {
    /// The cache for `sources` packed as `format`, in `dir`. Never fails: without a usable
    /// directory or file, layers are simply packed (and not saved).
    pub fn open(dir: &Path, sources: &[PathBuf], format: WeightFormat) -> Self {
        let identity = identity(sources, format);
        let path = dir.join(format!("{:016x}.pack", fnv1a(identity.as_bytes())));
        let reader = Reader::open(&path, &identity);
        let writer = if reader.is_none() {
            Writer::create(dir, &path, identity)
        } else {
            None
        };
        Self {
            path,
            reader,
            writer: Mutex::new(writer),
        }
    }

    /// Where this checkpoint's packed weights are (or will be) saved.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this load reads the saved panels (rather than packing and saving them).
    pub fn is_hit(&self) -> bool {
        self.reader.is_some()
    }

    /// The saved layer `name`, if the file has it with this shape.
    pub fn get(&self, name: &str, n: usize, k: usize) -> Option<PackedWeights> {
        let reader = self.reader.as_ref()?;
        let &offset = reader.layers.get(name)?;
        let (layer, _) = PackedWeights::from_backing(reader.backing.clone(), offset).ok()?;
        (layer.n() == n && layer.k() == k).then_some(layer)
    }

    /// Appends a freshly packed layer to the file being written.
    pub fn put(&self, name: &str, layer: &PackedWeights) {
        let mut guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let Some(w) = guard.as_mut() else {
            return;
        };
        match layer.write_to(&mut w.file) {
            Ok(written) => {
                w.layers.push((name.to_string(), w.offset));
                w.offset += written;
            }
            Err(_) => {
                // A full disk, say: give up on saving, the model itself is fine.
                let _ = std::fs::remove_file(&w.tmp);
                *guard = None;
            }
        }
    }

    /// Completes the file: the index of layers, then the rename that makes it visible.
    pub fn finish(&self) {
        let mut guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut w) = guard.take() else {
            return;
        };
        let index = serde_json::json!({
            "identity": w.identity,
            "layers": w.layers.iter().map(|(n, o)| (n.clone(), *o)).collect::<HashMap<_, _>>(),
        })
        .to_string();
        let done = (|| -> std::io::Result<()> {
            if w.layers.is_empty() {
                return Err(std::io::ErrorKind::InvalidInput.into());
            }
            w.file.write_all(index.as_bytes())?;
            w.file.write_all(&(index.len() as u64).to_le_bytes())?;
            w.file.write_all(MAGIC)?;
            w.file.flush()?;
            std::fs::rename(&w.tmp, &self.path)
        })();
        if done.is_err() {
            let _ = std::fs::remove_file(&w.tmp);
        }
    }
}

impl Drop for PackCache {
    fn drop(&mut self) {
        // A load that failed half way: no file, and no temporary one left behind.
        if let Some(w) = self.writer.get_mut().ok().and_then(Option::take) {
            drop(w.file);
            let _ = std::fs::remove_file(&w.tmp);
        }
    }
}

impl Reader {
    fn open(path: &Path, identity: &str) -> Option<Self> {
        let file = File::open(path).ok()?;
        // SAFETY: cache files are only ever created whole under a temporary name and renamed
        // into place, never written in place, so the mapped file does not change under us.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }.ok()?;
        let bytes: &[u8] = &map;
        let tail = bytes.len().checked_sub(16)?;
        if &bytes[tail + 8..] != MAGIC {
            return None;
        }
        let index_len = u64::from_le_bytes(bytes[tail..tail + 8].try_into().ok()?) as usize;
        let index_at = tail.checked_sub(index_len)?;
        let index: serde_json::Value = serde_json::from_slice(&bytes[index_at..tail]).ok()?;
        if index["identity"].as_str()? != identity {
            return None;
        }
        let layers = index["layers"]
            .as_object()?
            .iter()
            .map(|(name, o)| Some((name.clone(), o.as_u64()? as usize)))
            .collect::<Option<HashMap<_, _>>>()?;
        Some(Self {
            backing: Arc::new(map),
            layers,
        })
    }
}

impl Writer {
    fn create(dir: &Path, path: &Path, identity: String) -> Option<Self> {
        std::fs::create_dir_all(dir).ok()?;
        // Unique per process and per load, so concurrent loads never write the same file.
        static LOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp.{}.{n}", std::process::id()));
        let file = File::create(&tmp).ok()?;
        Some(Self {
            tmp,
            file: BufWriter::with_capacity(1 << 20, file),
            offset: 0,
            layers: Vec::new(),
            identity,
        })
    }
}

fn identity(sources: &[PathBuf], format: WeightFormat) -> String {
    let mut id = format!(
        "clipkit-pack v{VERSION} {format:?} nr={}",
        clipkit_kernels::gemm::NR
    );
    for source in sources {
        let path = std::fs::canonicalize(source).unwrap_or_else(|_| source.clone());
        let meta = std::fs::metadata(source).ok();
        let len = meta.as_ref().map_or(0, |m| m.len());
        let mtime = meta
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        id.push_str(&format!(" | {} {len} {mtime}", path.display()));
    }
    id
}

/// FNV-1a, 64-bit: a file name that stays the same across Rust versions (the identity inside
/// the file is what is checked).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(seed: f32, format: WeightFormat) -> PackedWeights {
        let w: Vec<f32> = (0..70 * 33).map(|i| (i as f32 * seed).sin()).collect();
        let b: Vec<f32> = (0..70).map(|i| i as f32 / 70.0).collect();
        PackedWeights::new(&w, 70, 33, Some(&b), format)
    }

    fn output(l: &PackedWeights) -> Vec<f32> {
        let a: Vec<f32> = (0..3 * 33).map(|i| (i as f32).cos()).collect();
        let mut out = vec![0f32; 3 * 70];
        l.matmul(&a, 3, clipkit_kernels::Epilogue::default(), &mut out);
        out
    }

    #[test]
    fn a_saved_cache_is_read_back_and_a_changed_source_misses() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("model.safetensors");
        std::fs::write(&source, b"weights v1").unwrap();
        let cache_dir = dir.path().join("packed");
        let format = WeightFormat::F32;

        let first = PackCache::open(&cache_dir, std::slice::from_ref(&source), format);
        assert!(!first.is_hit());
        assert!(first.get("a", 70, 33).is_none());
        let (a, b) = (layer(0.1, format), layer(0.2, format));
        first.put("a", &a);
        first.put("b", &b);
        first.finish();
        assert!(first.path().is_file());
        let leftovers: Vec<_> = std::fs::read_dir(&cache_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");

        let second = PackCache::open(&cache_dir, std::slice::from_ref(&source), format);
        assert!(second.is_hit());
        assert_eq!(output(&second.get("a", 70, 33).unwrap()), output(&a));
        assert_eq!(output(&second.get("b", 70, 33).unwrap()), output(&b));
        assert!(second.get("a", 71, 33).is_none(), "shape is checked");
        assert!(second.get("c", 70, 33).is_none());

        // Another weight format, or the checkpoint rewritten: not this cache.
        let int8 = PackCache::open(
            &cache_dir,
            std::slice::from_ref(&source),
            WeightFormat::Int8,
        );
        assert!(!int8.is_hit());
        drop(int8);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&source, b"weights v2, longer").unwrap();
        let third = PackCache::open(&cache_dir, std::slice::from_ref(&source), format);
        assert!(!third.is_hit());
    }

    #[test]
    fn an_unfinished_or_damaged_file_is_never_used() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("model.safetensors");
        std::fs::write(&source, b"w").unwrap();
        let format = WeightFormat::Bf16;
        {
            let cache = PackCache::open(dir.path(), std::slice::from_ref(&source), format);
            cache.put("a", &layer(0.3, format));
            // dropped without finish(): a load that failed
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["model.safetensors"], "temporary file removed");

        let cache = PackCache::open(dir.path(), std::slice::from_ref(&source), format);
        cache.put("a", &layer(0.3, format));
        cache.finish();
        let path = cache.path().to_path_buf();
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0xff; // the magic
        std::fs::write(&path, &bytes).unwrap();
        assert!(!PackCache::open(dir.path(), std::slice::from_ref(&source), format).is_hit());
    }
}
