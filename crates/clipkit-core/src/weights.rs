//! Memory-mapped safetensors checkpoints, single-file or sharded.
//!
//! Tensors are fetched by their Hugging Face names with the shape the config implies; a
//! missing tensor or a wrong shape is an error naming the tensor, never a silent random init.
//! Model code asks for names relative to a [`Scope`] (`weights.root().pp("vision_model")`), the
//! way candle's `VarBuilder::pp` scopes them, so a layer struct knows only its own leaf names
//! (`weight`, `bias`) and the same struct loads wherever a family nests it.
//! A transformers `pytorch_model.bin` is refused (convert it); open_clip's
//! `open_clip_pytorch_model.bin` is read with candle's pickle reader, which interprets the
//! pickle's opcodes into data and never imports or calls anything ([`Weights::open_file`]).
//!
//! Checkpoints that name (or lay out) the same tensors differently — open_clip's
//! `visual.transformer.resblocks.N.attn.in_proj_weight` for CLIP's `q_proj`/`k_proj`/`v_proj`
//! — are read through a [`Naming`]: the model code keeps asking for transformers' names, and
//! the naming says where each lives in the file ([`Stored`]: a tensor, a block of its rows, or
//! its transpose). Every reader goes through it (`get`, `read_f32` for the packed kernels,
//! `get_scalar`, `contains`), so the model structs are shared between formats instead of
//! duplicated per naming scheme.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::pickle::PthTensors;
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
    tensors: Store,
    naming: Option<Naming>,
    dtype: DType,
    device: Device,
    pack_cache: Option<PackCache>,
}

/// Where the tensors are read from.
enum Store {
    /// Memory-mapped safetensors files: tensors are copied straight out of the mapping.
    Safetensors(MmapedSafetensors),
    /// A PyTorch zip checkpoint; `names` maps the names the model asks for (without a
    /// `module.` prefix that data-parallel training leaves) to the pickle's own.
    Pickle {
        tensors: PthTensors,
        names: HashMap<String, String>,
    },
}

/// Maps the name a model struct asks for to where a checkpoint stores it (see the module
/// docs). A closure rather than a table so a family can map whole patterns (every layer `N`)
/// without listing them.
pub type Naming = Box<dyn Fn(&str) -> Stored + Send + Sync>;

/// A tensor as the checkpoint stores it, and how the requested tensor is cut from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The checkpoint's name for the tensor.
    pub name: String,
    pub view: View,
}

/// How a requested tensor of shape `S` is taken from its [`Stored`] tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The stored tensor is the requested one (shape `S`).
    Whole,
    /// Block `index` of `count` equal blocks of rows: the stored tensor is `S` with its first
    /// dimension `count` times larger (a fused `[3·d, d]` QKV weight read as q, k or v).
    Rows { index: usize, count: usize },
    /// The transpose of a stored 2-D `[S₁, S₀]` tensor (a projection kept as `x @ P` rather
    /// than as a `Linear`'s `[out, in]` weight).
    Transposed,
}

impl View {
    /// The stored tensor's shape for a requested `shape`.
    fn stored_shape(self, shape: &[usize]) -> Vec<usize> {
        let mut stored = shape.to_vec();
        match self {
            View::Whole => {}
            View::Rows { count, .. } => {
                if let Some(first) = stored.first_mut() {
                    *first *= count;
                }
            }
            View::Transposed => stored.reverse(),
        }
        stored
    }
}

impl Weights {
    /// Opens `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
    pub fn open(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let files = Self::files(dir)?;
        Self::open_safetensors(dir, files, dtype, device)
    }

    /// Opens one weights file: safetensors, or (by its `.bin`/`.pt`/`.pth` extension) a PyTorch
    /// zip checkpoint, read without executing the pickle (candle's reader interprets its
    /// opcodes as data). A checkpoint that nests its tensors under `state_dict` is read
    /// from there, and a `module.` prefix on every name is dropped, as open_clip does.
    pub fn open_file(path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let is_pickle = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("bin" | "pt" | "pth")
        );
        if !is_pickle {
            let mut weights =
                Self::open_safetensors(&dir, vec![path.to_path_buf()], dtype, device)?;
            weights.dir = dir;
            return Ok(weights);
        }
        let err = |e: candle_core::Error| ClipError::Safetensors {
            path: path.to_path_buf(),
            message: format!("cannot read the PyTorch checkpoint: {e}"),
        };
        let mut tensors = PthTensors::new(path, None).map_err(err)?;
        if tensors.tensor_infos().is_empty() {
            if let Ok(nested) = PthTensors::new(path, Some("state_dict")) {
                tensors = nested;
            }
        }
        if tensors.tensor_infos().is_empty() {
            return Err(ClipError::Safetensors {
                path: path.to_path_buf(),
                message: "no tensors found (expected a state dict, or one under `state_dict`)"
                    .into(),
            });
        }
        let all_module = tensors
            .tensor_infos()
            .keys()
            .all(|k| k.starts_with("module."));
        let names = tensors
            .tensor_infos()
            .keys()
            .map(|k| {
                let name = if all_module {
                    &k["module.".len()..]
                } else {
                    k.as_str()
                };
                (name.to_string(), k.clone())
            })
            .collect();
        Ok(Self {
            dir,
            files: vec![path.to_path_buf()],
            tensors: Store::Pickle { tensors, names },
            naming: None,
            dtype,
            device: device.clone(),
            pack_cache: None,
        })
    }

    fn open_safetensors(
        dir: &Path,
        files: Vec<PathBuf>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
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
            tensors: Store::Safetensors(tensors),
            naming: None,
            dtype,
            device: device.clone(),
            pack_cache: None,
        })
    }

    /// Reads every tensor through `naming` from now on (see [`Naming`]).
    pub fn with_naming(mut self, naming: Naming) -> Self {
        self.naming = Some(naming);
        self
    }

    /// What errors name: the file when the checkpoint is one file, else its directory.
    fn source(&self) -> PathBuf {
        match self.files.as_slice() {
            [one] => one.clone(),
            _ => self.dir.clone(),
        }
    }

    /// Where the tensor the model calls `name` is stored.
    fn resolve(&self, name: &str) -> Stored {
        match &self.naming {
            Some(naming) => naming(name),
            None => Stored {
                name: name.to_string(),
                view: View::Whole,
            },
        }
    }

    /// The shape of the checkpoint's own tensor `stored`, if it has one by that name.
    fn stored_shape(&self, stored: &str) -> Option<Vec<usize>> {
        match &self.tensors {
            Store::Safetensors(t) => t.get(stored).ok().map(|v| v.shape().to_vec()),
            Store::Pickle { tensors, names } => names
                .get(stored)
                .and_then(|k| tensors.tensor_infos().get(k))
                .map(|info| info.layout.dims().to_vec()),
        }
    }

    /// Checks the stored tensor behind `name` exists with the shape `shape` implies.
    fn check(&self, name: &str, shape: &[usize]) -> Result<Stored> {
        let stored = self.resolve(name);
        let expected = stored.view.stored_shape(shape);
        let got = self
            .stored_shape(&stored.name)
            .ok_or_else(|| ClipError::MissingTensor {
                dir: self.source(),
                name: stored.name.clone(),
            })?;
        if got != expected {
            return Err(ClipError::WrongShape {
                dir: self.source(),
                name: stored.name.clone(),
                expected,
                got,
            });
        }
        Ok(stored)
    }

    /// The stored tensor `stored` on the device, in its own dtype, cut as its view says.
    fn load_stored(&self, stored: &Stored, shape: &[usize]) -> Result<Tensor> {
        let err = |e: candle_core::Error| ClipError::Safetensors {
            path: self.source(),
            message: format!("tensor `{}`: {e}", stored.name),
        };
        let tensor = match &self.tensors {
            Store::Safetensors(t) => {
                use candle_core::safetensors::Load;
                let view = t.get(&stored.name).map_err(err)?;
                let tensor = view.load(&self.device).map_err(err)?;
                release_pages(view.data());
                tensor
            }
            Store::Pickle { tensors, names } => {
                let key = names
                    .get(&stored.name)
                    .ok_or_else(|| ClipError::MissingTensor {
                        dir: self.source(),
                        name: stored.name.clone(),
                    })?;
                tensors
                    .get(key)
                    .map_err(err)?
                    .ok_or_else(|| ClipError::MissingTensor {
                        dir: self.source(),
                        name: stored.name.clone(),
                    })?
                    .to_device(&self.device)?
            }
        };
        if !tensor.dtype().is_float() {
            return Err(ClipError::UnsupportedDtype {
                dir: self.source(),
                name: stored.name.clone(),
                dtype: format!("{:?}", tensor.dtype()),
            });
        }
        Ok(match stored.view {
            View::Whole => tensor,
            View::Rows { index, .. } => {
                let rows = shape.first().copied().unwrap_or(1);
                tensor.narrow(0, index * rows, rows)?.contiguous()?
            }
            View::Transposed => tensor.t()?.contiguous()?,
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

    /// Whether the checkpoint has the tensor the model calls `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.stored_shape(&self.resolve(name).name).is_some()
    }

    /// Appends tensor `name` (checked to have exactly `shape`) to `out` as f32, straight from
    /// the mapped file: the packed kernels repack it anyway, so going through a candle tensor
    /// would only add copies (and fresh pages, the larger part of a load's time here).
    pub fn read_f32(&self, name: &str, shape: &[usize], out: &mut Vec<f32>) -> Result<()> {
        let stored = self.check(name, shape)?;
        let Store::Safetensors(tensors) = &self.tensors else {
            return self.read_f32_via_tensor(&stored, shape, out);
        };
        let (start, len) = match stored.view {
            View::Whole => (0, shape.iter().product::<usize>()),
            View::Rows { index, .. } => {
                let len = shape.iter().product::<usize>();
                (index * len, len)
            }
            View::Transposed => return self.read_f32_via_tensor(&stored, shape, out),
        };
        use safetensors::Dtype;
        let view = tensors
            .get(&stored.name)
            .map_err(|_| ClipError::MissingTensor {
                dir: self.source(),
                name: stored.name.clone(),
            })?;
        let size = match view.dtype() {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::F64 => 8,
            other => {
                return Err(ClipError::UnsupportedDtype {
                    dir: self.source(),
                    name: stored.name.clone(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        let bytes = &view.data()[start * size..(start + len) * size];
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
            _ => out.extend(
                bytes
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32),
            ),
        }
        release_pages(bytes);
        Ok(())
    }

    /// [`read_f32`](Self::read_f32) for what cannot be copied out of a mapping as it lies
    /// (pickle checkpoints, transposed views): through a tensor on the CPU.
    fn read_f32_via_tensor(
        &self,
        stored: &Stored,
        shape: &[usize],
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let tensor = self.load_stored(stored, shape)?;
        out.extend(
            tensor
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_device(&Device::Cpu)?
                .to_vec1::<f32>()?,
        );
        Ok(())
    }

    /// Loads tensor `name`, checking it has exactly `shape`, converted to the model dtype.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let stored = self.check(name, shape)?;
        Ok(self.load_stored(&stored, shape)?.to_dtype(self.dtype)?)
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
        let stored = self.resolve(name);
        let shape = self
            .stored_shape(&stored.name)
            .ok_or_else(|| ClipError::MissingTensor {
                dir: self.source(),
                name: stored.name.clone(),
            })?;
        let expected: &[usize] = if shape.is_empty() { &[] } else { &[1] };
        let value = self
            .get(name, expected)?
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?[0];
        if !value.is_finite() {
            return Err(ClipError::Safetensors {
                path: self.source(),
                message: format!(
                    "tensor `{}` is {value}, expected a finite number",
                    stored.name
                ),
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
