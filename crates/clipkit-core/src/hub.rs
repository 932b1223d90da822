//! Finding a checkpoint: a local directory, or a Hugging Face Hub id resolved through the HF
//! cache (`~/.cache/huggingface/hub`, `HF_HOME`), downloading with hf-hub when allowed.

use std::path::{Path, PathBuf};

use crate::error::{ClipError, Result};
use crate::weights::{Weights, INDEX_FILE, SINGLE_FILE};

/// The default checkpoint, as in OpenAI's and Hugging Face's examples.
pub const DEFAULT_MODEL: &str = "openai/clip-vit-base-patch32";

#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub dir: PathBuf,
    /// The hub id, or the directory as given.
    pub name: String,
}

/// Resolves `spec` (a directory or a hub id such as `openai/clip-vit-base-patch32`).
pub fn resolve(spec: &str) -> Result<ResolvedModel> {
    let path = Path::new(spec);
    if path.exists() {
        if !path.is_dir() {
            return Err(ClipError::Hub {
                model: spec.into(),
                message: "is a file; a model is a checkpoint directory \
                          (with config.json and model.safetensors) or a hub id"
                    .into(),
            });
        }
        return Ok(ResolvedModel {
            dir: path.to_path_buf(),
            name: spec.to_string(),
        });
    }
    if !looks_like_hub_id(spec) {
        return Err(ClipError::Hub {
            model: spec.into(),
            message: "no such directory, and not a Hugging Face Hub id (owner/name)".into(),
        });
    }
    if let Some(dir) = cached_snapshot(spec) {
        return Ok(ResolvedModel {
            dir,
            name: spec.to_string(),
        });
    }
    if std::env::var_os("HF_HUB_OFFLINE").is_some_and(|v| v != "0" && !v.is_empty()) {
        return Err(offline_error(
            spec,
            "HF_HUB_OFFLINE is set and it is not in the cache",
        ));
    }
    download(spec)
}

/// A model that another checkpoint names (a paired image model, M-CLIP's `modelBase`,
/// open_clip's `hf_model_name`): a directory — a relative one is taken relative to
/// `relative_to`, the naming checkpoint's directory, so that checkpoints can travel together —
/// or else a hub id as [`resolve`] takes it.
pub fn resolve_relative(spec: &str, relative_to: &Path) -> Result<ResolvedModel> {
    let local = relative_to.join(spec);
    if local.is_dir() {
        return Ok(ResolvedModel {
            dir: local,
            name: spec.to_string(),
        });
    }
    resolve(spec)
}

/// One file of hub repository `repo`, from the HF cache or (unless `HF_HUB_OFFLINE` is set)
/// downloaded: for the small files (a `config.json`, a `tokenizer.json`) of a repository whose
/// weights are not needed.
pub fn resolve_file(repo: &str, file: &str) -> Result<PathBuf> {
    if !looks_like_hub_id(repo) {
        return Err(ClipError::Hub {
            model: repo.into(),
            message: "no such directory, and not a Hugging Face Hub id (owner/name)".into(),
        });
    }
    if let Some(path) = hf_hub::Cache::from_env().model(repo.to_string()).get(file) {
        return Ok(path);
    }
    if std::env::var_os("HF_HUB_OFFLINE").is_some_and(|v| v != "0" && !v.is_empty()) {
        return Err(offline_error(
            repo,
            &format!("HF_HUB_OFFLINE is set and its {file} is not in the cache"),
        ));
    }
    let hub_err = |e: hf_hub::api::sync::ApiError| offline_error(repo, &e.to_string());
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(hub_err)?;
    api.model(repo.to_string()).get(file).map_err(hub_err)
}

fn looks_like_hub_id(spec: &str) -> bool {
    let mut parts = spec.split('/');
    let ok = |s: Option<&str>| {
        s.is_some_and(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

fn offline_error(spec: &str, why: &str) -> ClipError {
    ClipError::Hub {
        model: spec.into(),
        message: format!(
            "cannot fetch it from the Hugging Face Hub ({why}). On a machine with network, \
             run once to fill the cache, or download the repository (config.json, \
             preprocessor_config.json, tokenizer.json, model.safetensors) and load it \
             from that directory"
        ),
    }
}

/// A cached snapshot with everything needed, if the HF cache has one.
fn cached_snapshot(spec: &str) -> Option<PathBuf> {
    let repo = hf_hub::Cache::from_env().model(spec.to_string());
    let dir = repo.get("config.json")?.parent()?.to_path_buf();
    Weights::files(&dir).ok()?;
    let has_tokenizer = dir.join("tokenizer.json").is_file()
        || (dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file());
    has_tokenizer.then_some(dir)
}

fn download(spec: &str) -> Result<ResolvedModel> {
    let hub_err = |e: hf_hub::api::sync::ApiError| offline_error(spec, &e.to_string());
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(hub_err)?;
    let repo = api.model(spec.to_string());
    let config = repo.get("config.json").map_err(hub_err)?;
    let dir = config.parent().map(Path::to_path_buf).unwrap_or_default();
    // Optional: older repositories have no preprocessor config or tokenizer.json.
    let _ = repo.get("preprocessor_config.json");
    if repo.get("tokenizer.json").is_err() {
        repo.get("vocab.json").map_err(hub_err)?;
        repo.get("merges.txt").map_err(hub_err)?;
    }
    if repo.get(SINGLE_FILE).is_err() {
        let index = repo.get(INDEX_FILE).map_err(hub_err)?;
        let text = std::fs::read_to_string(&index).map_err(|e| ClipError::io(&index, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ClipError::Json {
                path: index.clone(),
                source,
            })?;
        let mut shards: Vec<String> = json["weight_map"]
            .as_object()
            .map(|m| {
                m.values()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        shards.sort();
        shards.dedup();
        for shard in shards {
            repo.get(&shard).map_err(hub_err)?;
        }
    }
    Ok(ResolvedModel {
        dir,
        name: spec.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_told_apart_from_paths() {
        assert!(looks_like_hub_id("openai/clip-vit-base-patch32"));
        assert!(!looks_like_hub_id("./models/clip"));
        assert!(!looks_like_hub_id("/abs/path"));
        assert!(!looks_like_hub_id("a/b/c"));
        assert!(!looks_like_hub_id("single"));
    }

    #[test]
    fn offline_miss_explains_how_to_point_at_a_directory() {
        let cache = tempfile::tempdir().unwrap();
        // Both variables are read per call; the test owns neither beyond this process.
        std::env::set_var("HF_HOME", cache.path());
        std::env::set_var("HF_HUB_OFFLINE", "1");
        let err = resolve("openai/clip-vit-base-patch32")
            .unwrap_err()
            .to_string();
        assert!(err.contains("openai/clip-vit-base-patch32"), "{err}");
        assert!(err.contains("load it from that directory"), "{err}");
    }

    #[test]
    fn an_offline_miss_for_one_file_names_the_repository_and_the_file() {
        let cache = tempfile::tempdir().unwrap();
        std::env::set_var("HF_HOME", cache.path());
        std::env::set_var("HF_HUB_OFFLINE", "1");
        let err = resolve_file("FacebookAI/xlm-roberta-large", "tokenizer.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("FacebookAI/xlm-roberta-large"), "{err}");
        assert!(err.contains("tokenizer.json"), "{err}");
        let err = resolve_file("../not/a/repo", "config.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a Hugging Face Hub id"), "{err}");
    }

    #[test]
    fn a_named_model_is_found_beside_the_naming_checkpoint() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("text")).unwrap();
        let found = resolve_relative("../text", &root.path().join("model")).unwrap_err();
        assert!(found.to_string().contains("../text"), "{found}");
        std::fs::create_dir(root.path().join("model")).unwrap();
        let found = resolve_relative("../text", &root.path().join("model")).unwrap();
        assert_eq!(found.dir, root.path().join("model").join("../text"));
    }

    #[test]
    fn a_file_is_not_a_model() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let err = resolve(f.path().to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("checkpoint directory"), "{err}");
    }
}
