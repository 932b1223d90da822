//! Memory-mapped safetensors checkpoints, single-file or sharded.
//!
//! Tensors are fetched by their Hugging Face names with the shape the config implies; a
//! missing tensor or a wrong shape is an error naming the tensor, never a silent random init.
//! Model code asks for names relative to a [`Scope`] (`weights.root().pp("vision_model")`), the
//! way candle's `VarBuilder::pp` scopes them, so a layer struct knows only its own leaf names
//! (`weight`, `bias`) and the same struct loads wherever a family nests it.
//! Pickle checkpoints (`pytorch_model.bin`) are refused: loading them means executing code.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use clipkit_kernels::WeightFormat;

use crate::error::{ClipError, Result};
use crate::pack_cache::PackCache;

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

pub struct Weights {
    dir: PathBuf,
    files: Vec<PathBuf>,
    tensors: MmapedSafetensors,
    dtype: DType,
    device: Device,
    pack_cache: Option<PackCache>,
}

impl Weights {
    /// Opens `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
    pub fn open(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let files = Self::files(dir)?;
        for file in &files {
            let len = std::fs::metadata(file)
                .map_err(|e| ClipError::io(file, e))?
                .len();
            if len < 8 {
                return Err(ClipError::Safetensors {
                    path: file.clone(),
                    message: format!(
                        "file is {len} bytes long, too short for a safetensors header"
                    ),
                });
            }
        }
        // SAFETY: the files are mapped read-only; like every mmap-based loader we rely on them
        // not being truncated while the model is alive.
        let tensors =
            unsafe { MmapedSafetensors::multi(&files) }.map_err(|e| ClipError::Safetensors {
                path: files.first().cloned().unwrap_or_else(|| dir.to_path_buf()),
                message: e.to_string(),
            })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            tensors,
            dtype,
            device: device.clone(),
            pack_cache: None,
        })
    }

    /// Keeps packed layers in (or reads them from) a cache file in `dir`: see [`PackCache`].
    pub fn use_pack_cache(&mut self, dir: &Path, format: WeightFormat) {
        self.pack_cache = Some(PackCache::open(dir, &self.files, format));
    }

    /// Starts reading the checkpoint files into the page cache in the background.
    pub fn read_ahead(&self) {
        for file in &self.files {
            read_ahead(file);
        }
    }

    pub fn pack_cache(&self) -> Option<&PackCache> {
        self.pack_cache.as_ref()
    }

    /// The safetensors files a checkpoint directory consists of.
    pub fn files(dir: &Path) -> Result<Vec<PathBuf>> {
        let single = dir.join(SINGLE_FILE);
        if single.is_file() {
            return Ok(vec![single]);
        }
        let index = dir.join(INDEX_FILE);
        if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|e| ClipError::io(&index, e))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|source| ClipError::Json {
                    path: index.clone(),
                    source,
                })?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| {
                    ClipError::config(&index, "weight_map", "missing or not an object")
                })?;
            let mut shards = BTreeSet::new();
            for (name, file) in map {
                let file = file.as_str().ok_or_else(|| {
                    ClipError::config(&index, format!("weight_map.{name}"), "is not a file name")
                })?;
                shards.insert(file.to_string());
            }
            let mut files = Vec::new();
            for shard in shards {
                let path = dir.join(&shard);
                if !path.is_file() {
                    return Err(ClipError::MissingFile {
                        dir: dir.to_path_buf(),
                        file: shard,
                        hint: format!("listed in {INDEX_FILE}"),
                    });
                }
                files.push(path);
            }
            return Ok(files);
        }
        let hint = if dir.join("pytorch_model.bin").exists() {
            "only pickle weights (pytorch_model.bin) are present; clipkit never executes pickles — \
             convert them with `safetensors` first"
                .to_string()
        } else {
            format!("expected {SINGLE_FILE} or {INDEX_FILE}")
        };
        Err(ClipError::MissingFile {
            dir: dir.to_path_buf(),
            file: SINGLE_FILE.into(),
            hint,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.get(name).is_ok()
    }

    /// Appends tensor `name` (checked to have exactly `shape`) to `out` as f32, straight from
    /// the mapped file: the packed kernels repack it anyway, so going through a candle tensor
    /// would only add copies (and fresh pages, the larger part of a load's time here).
    pub fn read_f32(&self, name: &str, shape: &[usize], out: &mut Vec<f32>) -> Result<()> {
        use safetensors::Dtype;
        let view = self.view(name, shape)?;
        let bytes = view.data();
        match view.dtype() {
            Dtype::F32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
            Dtype::F16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
            ),
            Dtype::BF16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            ),
            Dtype::F64 => out.extend(
                bytes
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32),
            ),
            other => {
                return Err(ClipError::UnsupportedDtype {
                    dir: self.dir.clone(),
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        }
        release_pages(bytes);
        Ok(())
    }

    fn view(&self, name: &str, shape: &[usize]) -> Result<safetensors::tensor::TensorView<'_>> {
        let view = self
            .tensors
            .get(name)
            .map_err(|_| ClipError::MissingTensor {
                dir: self.dir.clone(),
                name: name.to_string(),
            })?;
        if view.shape() != shape {
            return Err(ClipError::WrongShape {
                dir: self.dir.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
                got: view.shape().to_vec(),
            });
        }
        Ok(view)
    }

    /// Loads tensor `name`, checking it has exactly `shape`, converted to the model dtype.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let view = self.view(name, shape)?;
        use candle_core::safetensors::Load;
        let tensor = view
            .load(&self.device)
            .map_err(|e| ClipError::Safetensors {
                path: self.dir.clone(),
                message: format!("tensor `{name}`: {e}"),
            })?;
        release_pages(view.data());
        if !tensor.dtype().is_float() {
            return Err(ClipError::UnsupportedDtype {
                dir: self.dir.clone(),
                name: name.to_string(),
                dtype: format!("{:?}", tensor.dtype()),
            });
        }
        Ok(tensor.to_dtype(self.dtype)?)
    }

    /// The scope of the whole checkpoint: names below it are the file's own.
    pub fn root(&self) -> Scope<'_> {
        Scope {
            weights: self,
            prefix: String::new(),
        }
    }

    /// A scalar stored either as shape `[]` or `[1]` (exports differ).
    pub fn get_scalar(&self, name: &str) -> Result<f32> {
        let shape = self
            .tensors
            .get(name)
            .map(|v| v.shape().to_vec())
            .map_err(|_| ClipError::MissingTensor {
                dir: self.dir.clone(),
                name: name.to_string(),
            })?;
        let expected: &[usize] = if shape.is_empty() { &[] } else { &[1] };
        let value = self
            .get(name, expected)?
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?[0];
        if !value.is_finite() {
            return Err(ClipError::Safetensors {
                path: self.dir.clone(),
                message: format!("tensor `{name}` is {value}, expected a finite number"),
            });
        }
        Ok(value)
    }
}

/// The tensors of [`Weights`] under one name prefix: `scope.pp("layers").pp(3)` reads
/// `….layers.3.weight` as `weight`. Cheap to clone; model structs take one by reference in their
/// `load` and pass narrower ones to their parts.
#[derive(Clone)]
pub struct Scope<'w> {
    weights: &'w Weights,
    prefix: String,
}

impl<'w> Scope<'w> {
    /// The scope `name` inside this one.
    pub fn pp(&self, name: impl std::fmt::Display) -> Scope<'w> {
        Scope {
            weights: self.weights,
            prefix: self.name(&name.to_string()),
        }
    }

    /// The full checkpoint name of `leaf` in this scope.
    pub fn name(&self, leaf: &str) -> String {
        if self.prefix.is_empty() {
            leaf.to_string()
        } else {
            format!("{}.{leaf}", self.prefix)
        }
    }

    /// This scope's own name (`vision_model.encoder.layers.3`); empty at the root.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The checkpoint the scope reads (its dtype, device and pack cache).
    pub fn weights(&self) -> &'w Weights {
        self.weights
    }

    /// [`Weights::get`] of `leaf` in this scope.
    pub fn get(&self, leaf: &str, shape: &[usize]) -> Result<Tensor> {
        self.weights.get(&self.name(leaf), shape)
    }

    /// [`Weights::get_scalar`] of `leaf` in this scope.
    pub fn get_scalar(&self, leaf: &str) -> Result<f32> {
        self.weights.get_scalar(&self.name(leaf))
    }

    /// [`Weights::read_f32`] of `leaf` in this scope.
    pub fn read_f32(&self, leaf: &str, shape: &[usize], out: &mut Vec<f32>) -> Result<()> {
        self.weights.read_f32(&self.name(leaf), shape, out)
    }
}

/// Drops the mapped file pages behind `bytes` once a tensor has been copied out of them.
///
/// Every tensor is read exactly once at load time, so keeping its pages resident would count
/// the checkpoint twice in the process's memory (mapped file + the model's own copy, packed or
/// not). The mapping stays valid: a later read would fault the pages in from the file again.
fn release_pages(bytes: &[u8]) {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
        let start = (bytes.as_ptr() as usize).div_ceil(page) * page;
        let end = (bytes.as_ptr() as usize + bytes.len()) / page * page;
        if end > start {
            // SAFETY: [start, end) lies inside a read-only file mapping that we own; for such
            // mappings MADV_DONTNEED only discards cached pages, which are re-read from the
            // file if touched again. A failure just leaves the pages resident.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
}

/// Asks the kernel to start reading the whole file into the page cache now, in the background,
/// so the copies out of the mapping find their pages there instead of faulting them in from
/// disk one readahead window at a time.
fn read_ahead(file: &Path) {
    #[cfg(target_os = "linux")]
    if let Ok(f) = std::fs::File::open(file) {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor; the advice only affects caching.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}
