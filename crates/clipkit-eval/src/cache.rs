//! Image embeddings cached on disk per (model, file content), so re-running an evaluation
//! with other templates or class names costs only the text tower.
//!
//! Layout: `DIR/<model key>/<blake3 of the file>.f32`, little-endian floats. Entries are
//! written to a temporary name and renamed, so a killed run never leaves a torn entry.

use std::path::{Path, PathBuf};

use clipkit_core::Clip;

use crate::{EvalError, Result};

#[derive(Debug, Clone)]
pub struct EmbeddingCache {
    dir: PathBuf,
    dim: usize,
}

impl EmbeddingCache {
    /// The cache for `clip`'s image embeddings under `root`. The key covers everything that
    /// changes an embedding: the config, the weight files (name, size, modification time)
    /// and the preprocessing settings.
    pub fn new(root: &Path, clip: &Clip) -> Result<Self> {
        let mut hasher = blake3::Hasher::new();
        let dir = clip.model_dir();
        for name in ["config.json", "preprocessor_config.json"] {
            if let Ok(bytes) = std::fs::read(dir.join(name)) {
                hasher.update(&bytes);
            }
        }
        for file in clipkit_core::weights::Weights::files(dir)? {
            let meta = std::fs::metadata(&file).map_err(|source| EvalError::Io {
                path: file.clone(),
                source,
            })?;
            hasher.update(file.file_name().unwrap_or_default().as_encoded_bytes());
            hasher.update(&meta.len().to_le_bytes());
            if let Ok(modified) = meta.modified() {
                hasher.update(format!("{modified:?}").as_bytes());
            }
        }
        let p = clip.preprocessor();
        hasher.update(format!("{:?}{:?}{:?}", p.config, p.mode, p.decode).as_bytes());
        let key = hasher.finalize().to_hex();
        let dir = root.join(&key.as_str()[..16]);
        std::fs::create_dir_all(&dir).map_err(|source| EvalError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            dir,
            dim: clip.embedding_dim(),
        })
    }

    /// The default location: `$CLIPKIT_CACHE`, else `$XDG_CACHE_HOME/clipkit`, else
    /// `~/.cache/clipkit`, with `embeddings/` below it.
    pub fn default_root() -> PathBuf {
        clipkit_core::pack_cache::cache_root().join("embeddings")
    }

    pub fn content_hash(bytes: &[u8]) -> String {
        blake3::hash(bytes).to_hex().to_string()
    }

    fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}.f32"))
    }

    /// A cached embedding; anything unreadable or of the wrong size counts as a miss.
    pub fn get(&self, hash: &str) -> Option<Vec<f32>> {
        let bytes = std::fs::read(self.path(hash)).ok()?;
        if bytes.len() != self.dim * 4 {
            return None;
        }
        Some(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    }

    pub fn put(&self, hash: &str, embedding: &[f32]) -> Result<()> {
        let bytes: Vec<u8> = embedding.iter().flat_map(|v| v.to_le_bytes()).collect();
        let final_path = self.path(hash);
        let tmp = self.dir.join(format!("{hash}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, bytes)
            .and_then(|_| std::fs::rename(&tmp, &final_path))
            .map_err(|source| EvalError::Io {
                path: final_path,
                source,
            })
    }
}
