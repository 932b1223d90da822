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
             run once to fill the cache, or download the repository (its config.json or \
             open_clip_config.json, tokenizer and preprocessor files, and weights) and load \
             it from that directory"
        ),
    }
}

/// The files that tell a checkpoint's format: transformers' config, open_clip's config.
const CONFIG_FILES: &[&str] = &["config.json", OPEN_CLIP_CONFIG];

/// open_clip's model config (`model_cfg`, `preprocess_cfg`).
const OPEN_CLIP_CONFIG: &str = "open_clip_config.json";

/// The weights files of one format, in the order a loader prefers them. A repository that
/// ships several formats needs only one, so only the first present is downloaded.
const TRANSFORMERS_WEIGHTS: &[&str] = &[SINGLE_FILE, INDEX_FILE, "pytorch_model.bin"];
const OPEN_CLIP_WEIGHTS: &[&str] = &["open_clip_model.safetensors", "open_clip_pytorch_model.bin"];

/// Small files a family may read; each is fetched when the repository has it, and a missing
/// one is not an error (CLIP's older repositories have no tokenizer.json, SigLIP 1 ships only
/// spiece.model, open_clip repositories may carry no tokenizer at all and use the bundled one).
const OPTIONAL_FILES: &[&str] = &[
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
];

/// Whether `config.json` is a transformers model config (it names a `model_type`, or has
/// CLIP's `text_config`). timm's hub repositories also have a `config.json`, describing only
/// the image tower, beside the `open_clip_config.json` that describes the checkpoint.
fn is_transformers_config(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .is_some_and(|json| json.get("model_type").is_some() || json.get("text_config").is_some())
}

/// The weights files the checkpoint in `dir` is loaded from: transformers' when `config.json`
/// is a transformers config, else open_clip's when there is an `open_clip_config.json`.
fn weights_files_for(dir: &Path) -> &'static [&'static str] {
    let config = dir.join("config.json");
    if config.is_file() && is_transformers_config(&config) {
        TRANSFORMERS_WEIGHTS
    } else if dir.join(OPEN_CLIP_CONFIG).is_file() {
        OPEN_CLIP_WEIGHTS
    } else {
        TRANSFORMERS_WEIGHTS
    }
}

/// A cached snapshot with everything needed, if the HF cache has one: a config, and weights
/// of the format that config asks for (sharded safetensors complete). Tokenizer files are
/// optional, as for [`download`]: a family without its tokenizer says so when it loads.
fn cached_snapshot(spec: &str) -> Option<PathBuf> {
    let repo = hf_hub::Cache::from_env().model(spec.to_string());
    let dir = CONFIG_FILES
        .iter()
        .find_map(|f| repo.get(f))?
        .parent()?
        .to_path_buf();
    let weights = weights_files_for(&dir);
    let complete = weights.iter().any(|&f| {
        if f == INDEX_FILE || f == SINGLE_FILE {
            dir.join(f).is_file() && Weights::files(&dir).is_ok()
        } else {
            dir.join(f).is_file()
        }
    });
    complete.then_some(dir)
}

fn download(spec: &str) -> Result<ResolvedModel> {
    let hub_err = |e: hf_hub::api::sync::ApiError| offline_error(spec, &e.to_string());
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(hub_err)?;
    let repo = api.model(spec.to_string());
    // Every config the repository has: which one decides the format is read from both.
    let mut dir = None;
    let mut first_error = None;
    for file in CONFIG_FILES {
        match repo.get(file) {
            Ok(path) => dir = dir.or_else(|| path.parent().map(Path::to_path_buf)),
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    let Some(dir) = dir else {
        return Err(first_error.map_or_else(
            || offline_error(spec, "it has neither config.json nor open_clip_config.json"),
            hub_err,
        ));
    };
    for file in OPTIONAL_FILES {
        // Absent files are normal (see OPTIONAL_FILES); the loader names what it misses.
        let _ = repo.get(file);
    }
    let candidates = weights_files_for(&dir);
    let mut last_error = None;
    for &file in candidates {
        match repo.get(file) {
            Ok(path) => {
                if file == INDEX_FILE {
                    for shard in shards(&path)? {
                        repo.get(&shard).map_err(hub_err)?;
                    }
                }
                return Ok(ResolvedModel {
                    dir,
                    name: spec.to_string(),
                });
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(offline_error(
        spec,
        &format!(
            "it has none of the weights files {} ({})",
            candidates.join(", "),
            last_error.map_or_else(String::new, |e| e.to_string())
        ),
    ))
}

/// The shard files a safetensors index names, each once, sorted.
fn shards(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|e| ClipError::io(index, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| ClipError::Json {
            path: index.to_path_buf(),
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
    Ok(shards)
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

    #[test]
    fn the_weights_format_follows_the_config_that_describes_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(weights_files_for(d), TRANSFORMERS_WEIGHTS);
        std::fs::write(d.join(OPEN_CLIP_CONFIG), "{}").unwrap();
        assert_eq!(weights_files_for(d), OPEN_CLIP_WEIGHTS);
        // timm's config.json (the image tower only) beside open_clip's: open_clip's weights.
        std::fs::write(d.join("config.json"), r#"{"architecture": "vit_huge"}"#).unwrap();
        assert_eq!(weights_files_for(d), OPEN_CLIP_WEIGHTS);
        std::fs::write(d.join("config.json"), r#"{"model_type": "clip"}"#).unwrap();
        assert_eq!(weights_files_for(d), TRANSFORMERS_WEIGHTS);
    }

    #[test]
    fn index_shards_are_listed_once() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join(INDEX_FILE);
        std::fs::write(
            &index,
            r#"{"weight_map": {"a": "m-2.safetensors", "b": "m-1.safetensors", "c": "m-2.safetensors"}}"#,
        )
        .unwrap();
        assert_eq!(
            shards(&index).unwrap(),
            ["m-1.safetensors", "m-2.safetensors"]
        );
    }
}
