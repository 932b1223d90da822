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
//!
//! Each new file prunes the directory ([`prune`]): files whose checkpoint is gone or has
//! changed can never be used again and go; then the least recently used ones go until the rest
//! fit in the size limit (`$CLIPKIT_PACK_CACHE_MAX_MB`, default [`DEFAULT_LIMIT_MB`]).

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

/// The cache's default size limit: the packs of a few checkpoints in a few precisions
/// (ViT-B/32 is 0.6 GB in f32, ViT-L/14 1.7 GB).
pub const DEFAULT_LIMIT_MB: u64 = 8192;

/// `$CLIPKIT_PACK_CACHE_MAX_MB`, else [`DEFAULT_LIMIT_MB`], in bytes.
pub fn size_limit() -> u64 {
    std::env::var("CLIPKIT_PACK_CACHE_MAX_MB")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_LIMIT_MB)
        .saturating_mul(1 << 20)
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
    sources: Vec<Stamp>,
}

impl PackCache {
    /// The cache for `sources` packed as `format`, in `dir`. Never fails: without a usable
    /// directory or file, layers are simply packed (and not saved).
    pub fn open(dir: &Path, sources: &[PathBuf], format: WeightFormat) -> Self {
        let sources: Vec<Stamp> = sources.iter().map(|s| Stamp::of(s)).collect();
        let identity = identity(&sources, format);
        let path = dir.join(format!("{:016x}.pack", fnv1a(identity.as_bytes())));
        let reader = Reader::open(&path, &identity);
        if reader.is_some() {
            // Recently used, for pruning (the identity, not the file's time, decides a hit).
            let _ = File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        }
        let writer = if reader.is_none() {
            Writer::create(dir, &path, identity, sources)
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
        // The version, panel width and sources again as fields, for `prune` to judge the file.
        let index = serde_json::json!({
            "identity": w.identity,
            "version": VERSION,
            "nr": clipkit_kernels::gemm::NR,
            "sources": w.sources,
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
        } else if let Some(dir) = self.path.parent() {
            prune(dir, &self.path, size_limit());
        }
    }
}

/// Temporary files older than this belong to loads that were killed.
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Cleans the cache directory `dir` after `keep` was written: removes pack files whose
/// checkpoint is gone or changed (or that an older clipkit wrote), temporaries of killed loads,
/// and then the least recently used packs until the rest fit in `limit` bytes. `keep` stays
/// even if it alone is over the limit; files that are not clipkit's are never touched.
pub fn prune(dir: &Path, keep: &Path, limit: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = std::time::SystemTime::now();
    let mut packs = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let modified = meta.modified().unwrap_or(now);
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.contains(".tmp.") {
            if now
                .duration_since(modified)
                .is_ok_and(|age| age > STALE_TEMPORARY)
            {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        if !name.ends_with(".pack") || path == keep {
            continue;
        }
        if read_index(&path).is_some_and(|index| is_stale(&index) == Some(true)) {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        packs.push((modified, meta.len(), path));
    }
    let mut total = std::fs::metadata(keep).map_or(0, |m| m.len())
        + packs.iter().map(|(_, len, _)| len).sum::<u64>();
    packs.sort_by_key(|(modified, _, _)| *modified); // oldest first
    for (_, len, path) in packs {
        if total <= limit {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}

/// The index of a pack file, read from its end (not the whole file, as a mapping would).
fn read_index(path: &Path) -> Option<serde_json::Value> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(path).ok()?;
    let size = file.metadata().ok()?.len();
    let mut tail = [0u8; 16];
    file.seek(SeekFrom::Start(size.checked_sub(16)?)).ok()?;
    file.read_exact(&mut tail).ok()?;
    let index_len = index_len(&tail)?;
    if index_len > 64 << 20 {
        return None;
    }
    file.seek(SeekFrom::Start(size.checked_sub(16 + index_len)?))
        .ok()?;
    let mut index = vec![0u8; index_len as usize];
    file.read_exact(&mut index).ok()?;
    serde_json::from_slice(&index).ok()
}

/// The index length from a pack file's last 16 bytes (length, then the magic).
fn index_len(tail: &[u8]) -> Option<u64> {
    let (len, magic) = tail.split_at_checked(8)?;
    (magic == MAGIC).then(|| u64::from_le_bytes(len.try_into().expect("8 bytes")))
}

/// Whether a pack file can never match a load again: another version or panel width, or a
/// source file changed or gone. `None` for an index without these fields (then the file is
/// left alone).
fn is_stale(index: &serde_json::Value) -> Option<bool> {
    let version = index["version"].as_u64()?;
    let nr = index["nr"].as_u64()?;
    let sources: Vec<Stamp> = serde_json::from_value(index["sources"].clone()).ok()?;
    Some(
        version != u64::from(VERSION)
            || nr != clipkit_kernels::gemm::NR as u64
            || sources.iter().any(|s| Stamp::of(Path::new(&s.path)) != *s),
    )
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
        let index_len = index_len(&bytes[tail..])? as usize;
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
    fn create(dir: &Path, path: &Path, identity: String, sources: Vec<Stamp>) -> Option<Self> {
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
            sources,
        })
    }
}

/// A source file as the cache knows it: canonical path, size and modification time.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Stamp {
    path: String,
    len: u64,
    mtime_ns: u64,
}

impl Stamp {
    /// The file as it is now (size and time 0 when it cannot be read).
    fn of(source: &Path) -> Stamp {
        let path = std::fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
        let meta = std::fs::metadata(source).ok();
        let mtime_ns = meta
            .as_ref()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        Stamp {
            path: path.display().to_string(),
            len: meta.map_or(0, |m| m.len()),
            mtime_ns,
        }
    }
}

fn identity(sources: &[Stamp], format: WeightFormat) -> String {
    let mut id = format!(
        "clipkit-pack v{VERSION} {format:?} nr={} kernel={}",
        clipkit_kernels::gemm::NR,
        clipkit_kernels::gemm::kernel_name(format)
    );
    for s in sources {
        id.push_str(&format!(" | {} {} {}", s.path, s.len, s.mtime_ns));
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

    /// A pack for `source` saved in `dir`, its path.
    fn saved(dir: &Path, source: &Path, format: WeightFormat) -> PathBuf {
        let cache = PackCache::open(dir, &[source.to_path_buf()], format);
        cache.put("a", &layer(0.5, format));
        cache.finish();
        cache.path().to_path_buf()
    }

    fn set_age(path: &Path, seconds: u64) {
        let t = std::time::SystemTime::now() - std::time::Duration::from_secs(seconds);
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn pruning_drops_packs_of_changed_or_deleted_checkpoints_and_dead_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("packed");
        let (a, b, c) = (
            dir.path().join("a.safetensors"),
            dir.path().join("b b.safetensors"), // a space in the path
            dir.path().join("c.safetensors"),
        );
        for f in [&a, &b, &c] {
            std::fs::write(f, b"weights").unwrap();
        }
        let pack_a = saved(&cache, &a, WeightFormat::F32);
        let pack_b = saved(&cache, &b, WeightFormat::Int8);
        let pack_c = saved(&cache, &c, WeightFormat::F32);
        assert_eq!(is_stale(&read_index(&pack_b).unwrap()), Some(false));
        let dead_tmp = cache.join("0123.pack.tmp.999.0");
        let live_tmp = cache.join("4567.pack.tmp.998.0");
        std::fs::write(&dead_tmp, b"half").unwrap();
        std::fs::write(&live_tmp, b"half").unwrap();
        set_age(&dead_tmp, 2 * 3600);
        let foreign = cache.join("notes.txt");
        std::fs::write(&foreign, b"mine").unwrap();

        std::fs::remove_file(&a).unwrap(); // checkpoint deleted
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&b, b"weights, retrained").unwrap(); // checkpoint changed
        let pack_c2 = saved(&cache, &c, WeightFormat::Bf16); // prunes

        for (path, kept) in [
            (&pack_a, false),
            (&pack_b, false),
            (&pack_c, true),
            (&pack_c2, true),
            (&dead_tmp, false),
            (&live_tmp, true),
            (&foreign, true),
        ] {
            assert_eq!(path.exists(), kept, "{}", path.display());
        }
    }

    #[test]
    fn pruning_keeps_the_cache_under_its_limit_dropping_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("packed");
        let sources: Vec<PathBuf> = (0..3)
            .map(|i| dir.path().join(format!("m{i}.safetensors")))
            .collect();
        for s in &sources {
            std::fs::write(s, b"weights").unwrap();
        }
        let first = saved(&cache, &sources[0], WeightFormat::F32);
        let second = saved(&cache, &sources[1], WeightFormat::F32);
        let size = std::fs::metadata(&first).unwrap().len();
        set_age(&first, 300);
        set_age(&second, 200);
        // Loading the first again marks it recently used.
        assert!(
            PackCache::open(&cache, std::slice::from_ref(&sources[0]), WeightFormat::F32).is_hit()
        );
        let third = saved(&cache, &sources[2], WeightFormat::F32);
        prune(&cache, &third, 2 * size);
        assert!(first.exists() && third.exists());
        assert!(!second.exists(), "the least recently used pack goes first");
        // The file just written stays even when it alone is over the limit.
        prune(&cache, &third, 1);
        assert!(third.exists() && !first.exists());
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
