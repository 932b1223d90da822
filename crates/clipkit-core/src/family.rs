//! Which model family a checkpoint directory holds, read from its files before anything else
//! is loaded: transformers' `config.json` names it in `model_type`; open_clip's hub repos carry
//! `open_clip_config.json` instead (or beside it).
//!
//! Adding a family: a variant here with its detection arm, its towers in `model/<family>/`
//! implementing [`crate::model::DualEncoder`], and its load in [`crate::Clip`]'s
//! `load_family`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::config::ClipConfig;
use crate::device::MatmulPath;
use crate::error::{ClipError, Result};
use crate::hub;
use crate::model::dense::Dense;
use crate::model::mclip::{MclipConfig, MclipModel};
use crate::model::open_clip::config::{self as open_clip_config, OpenClipConfig};
use crate::model::open_clip::naming::naming as open_clip_naming;
use crate::model::open_clip::OpenClipModel;
use crate::model::siglip::SiglipConfig;
use crate::model::xlm_roberta::open_clip::OpenClipXlmrModel;
use crate::model::xlm_roberta::{PoolerType, Projection, XlmRobertaConfig, XlmRobertaTextTower};
use crate::model::{ClipModel, DualEncoder, SiglipModel};
use crate::tokenizer::{TextCleaning, TextTokenizer};
use crate::weights::Weights;
use clipkit_image::{PreprocessMode, PreprocessorConfig};

/// The model families clipkit knows by their files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFamily {
    /// OpenAI CLIP and every checkpoint in transformers' `CLIPModel` format
    /// (`model_type: clip`).
    Clip,
    /// SigLIP and SigLIP 2 FixRes (`model_type: siglip`).
    Siglip,
    /// An open_clip checkpoint (`open_clip_config.json`).
    OpenClip,
    /// M-CLIP (`model_type: M-CLIP`): an XLM-RoBERTa text tower paired with another
    /// checkpoint's CLIP image tower.
    Mclip,
}

/// The `model_type` values [`ModelFamily::detect`] accepts, for the error that lists them.
const KNOWN_MODEL_TYPES: &str = "clip, siglip, M-CLIP";

impl ModelFamily {
    /// The family of the checkpoint in `dir`. A transformers `config.json` decides when there
    /// is one (hub repos that ship both formats load in transformers' names); otherwise an
    /// `open_clip_config.json` makes it open_clip.
    pub fn detect(dir: &Path) -> Result<Self> {
        let config = dir.join("config.json");
        let open_clip = dir.join("open_clip_config.json").is_file();
        if config.is_file() {
            return match Self::from_config(&config)? {
                // timm's config.json beside open_clip's files (MetaCLIP 2's hub repos) is
                // neither a transformers CLIP config nor a family of its own.
                Some(family) => Ok(family),
                None if open_clip => Ok(ModelFamily::OpenClip),
                None => Ok(ModelFamily::Clip),
            };
        }
        if open_clip {
            return Ok(ModelFamily::OpenClip);
        }
        Err(ClipError::MissingFile {
            dir: dir.to_path_buf(),
            file: "config.json".into(),
            hint: "not a model checkpoint directory: expected a transformers config.json or \
                   an open_clip open_clip_config.json"
                .into(),
        })
    }

    /// The family named by a transformers `config.json`'s `model_type`. Configs written before
    /// transformers recorded it (no `model_type`, but CLIP's `text_config`/`vision_config`)
    /// are CLIP's; `None` when the file has neither (another library's config).
    fn from_config(path: &Path) -> Result<Option<Self>> {
        let text = std::fs::read_to_string(path).map_err(|e| ClipError::io(path, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ClipError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        match json.get("model_type").and_then(|t| t.as_str()) {
            Some("clip") => Ok(Some(ModelFamily::Clip)),
            Some("siglip") => Ok(Some(ModelFamily::Siglip)),
            Some("M-CLIP") => Ok(Some(ModelFamily::Mclip)),
            Some(other) => Err(unknown(path, other)),
            None if json.get("model_type").is_some() => Err(unknown(path, "(not a string)")),
            None if json.get("text_config").is_some() || json.get("vision_config").is_some() => {
                Ok(Some(ModelFamily::Clip))
            }
            None => Ok(None),
        }
    }

    /// The name users and error messages see.
    pub fn name(self) -> &'static str {
        match self {
            ModelFamily::Clip => "CLIP",
            ModelFamily::Siglip => "SigLIP",
            ModelFamily::OpenClip => "open_clip",
            ModelFamily::Mclip => "M-CLIP",
        }
    }
}

impl std::fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a family's loader hands [`crate::Clip`]: the towers, the tokenizer, and the
/// preprocessing its reference library applies.
pub(crate) struct Parts {
    pub model: Box<dyn DualEncoder>,
    pub tokenizer: TextTokenizer,
    pub preprocess: PreprocessorConfig,
    /// The pixel order of the family's reference library, used unless the caller picks one:
    /// transformers' PIL processors (RGB first) for CLIP and SigLIP; open_clip's torchvision
    /// transform (resize and crop in the file's mode, then RGB, crop rounded half to even) is
    /// the order `PreprocessMode::OpenAi` reproduces.
    pub reference_mode: PreprocessMode,
}

/// How a family's weights are loaded: where, on which matmul path, in which dtype, and the
/// directory of packed CPU weights kept between loads (if any).
pub(crate) struct WeightsPlan<'a> {
    pub device: &'a Device,
    pub path: MatmulPath,
    pub dtype: DType,
    pub pack_cache: Option<&'a Path>,
}

/// Loads the checkpoint in `dir` as `family` by `plan`. Configs, preprocessing and tokenizer
/// are read first, so a broken small file is reported before gigabytes of weights are read.
pub(crate) fn load(family: ModelFamily, dir: &Path, plan: &WeightsPlan) -> Result<Parts> {
    match family {
        ModelFamily::Clip => load_clip(dir, plan),
        ModelFamily::Mclip => load_mclip(dir, plan),
        ModelFamily::OpenClip => load_open_clip(dir, plan),
        ModelFamily::Siglip => load_siglip(dir, plan),
    }
}

fn load_clip(dir: &Path, plan: &WeightsPlan) -> Result<Parts> {
    let config = ClipConfig::from_file(&dir.join("config.json"))?;
    let preprocess = clip_preprocess(dir, &config)?;
    let tokenizer = TextTokenizer::from_dir(dir, config.text_config.max_position_embeddings)?;
    let weights = || Weights::open(dir, plan.dtype, plan.device);
    let model = with_weights(weights, plan, |w| {
        ClipModel::load(&w.root(), &config, plan.path)
    })?;
    Ok(Parts {
        model: Box::new(model),
        tokenizer,
        preprocess,
        reference_mode: PreprocessMode::Transformers,
    })
}

/// An M-CLIP text checkpoint in `dir` and the CLIP checkpoint it pairs with (whose
/// preprocessing and temperature it takes). Both are read before either's weights.
fn load_mclip(dir: &Path, plan: &WeightsPlan) -> Result<Parts> {
    let config_path = dir.join("config.json");
    let config = MclipConfig::from_file(&config_path)?;
    let text_config = XlmRobertaConfig::resolve(&config.model_base, dir)?;
    if text_config.hidden_size != config.transformer_dimensions {
        return Err(ClipError::config(
            &config_path,
            "transformerDimensions",
            format!(
                "{} does not match the hidden_size {} of modelBase `{}`",
                config.transformer_dimensions, text_config.hidden_size, config.model_base
            ),
        ));
    }
    let image = hub::resolve_relative(&config.image_model(dir)?, dir)?;
    let image_config = ClipConfig::from_file(&image.dir.join("config.json"))?;
    if image_config.projection_dim != config.num_dims {
        return Err(ClipError::config(
            &config_path,
            "numDims",
            format!(
                "{} does not match the projection_dim {} of the paired image model {}",
                config.num_dims,
                image_config.projection_dim,
                image.dir.display()
            ),
        ));
    }
    let preprocess = clip_preprocess(&image.dir, &image_config)?;
    // Its own tokenizer.json, else its base encoder's (the same vocabulary). M-CLIP's own
    // call pads and never truncates (a longer text fails there); clipkit truncates where the
    // position table ends.
    let own = dir.join("tokenizer.json");
    let tokenizer_path = if own.is_file() {
        own
    } else {
        XlmRobertaConfig::resolve_tokenizer(&config.model_base, dir)?
    };
    let tokenizer = TextTokenizer::xlm_roberta(
        &tokenizer_path,
        text_config.max_tokens(),
        TextCleaning::None,
    )?;
    // M-CLIP's hub repositories ship only `pytorch_model.bin`: read without executing it.
    let pickle = dir.join("pytorch_model.bin");
    let text_weights = || {
        if Weights::files(dir).is_err() && pickle.is_file() {
            Weights::open_file(&pickle, plan.dtype, plan.device)
        } else {
            Weights::open(dir, plan.dtype, plan.device)
        }
    };
    let text = with_weights(text_weights, plan, |w| {
        let root = w.root();
        let (d, e) = (config.transformer_dimensions, config.num_dims);
        let linear = Dense::load(&root.pp("LinearTransformation"), d, e, true, plan.path)?;
        XlmRobertaTextTower::load(
            &root.pp("transformer"),
            &text_config,
            PoolerType::Mean,
            Projection::Linear(linear),
            plan.path,
        )
    })?;
    let image_weights = || Weights::open(&image.dir, plan.dtype, plan.device);
    let (vision, logit_scale) = with_weights(image_weights, plan, |w| {
        let root = w.root();
        let v = &image_config.vision_config;
        let projection = Dense::load(
            &root.pp("visual_projection"),
            v.hidden_size,
            image_config.projection_dim,
            false,
            plan.path,
        )?;
        let vision =
            crate::model::clip::vision::load(&root.pp("vision_model"), v, projection, plan.path)?;
        Ok((vision, root.get_scalar("logit_scale")?.exp()))
    })?;
    let model = MclipModel::new(text, vision, logit_scale, image_config, config.num_dims);
    Ok(Parts {
        model: Box::new(model),
        tokenizer,
        preprocess,
        reference_mode: PreprocessMode::Transformers,
    })
}

/// SigLIP / SigLIP 2 FixRes: `SiglipImageProcessor`'s preprocessing (square resize, no
/// crop, mean = std = 0.5) when there is no `preprocessor_config.json`; its tokenizer from
/// `spiece.model` or `tokenizer.json` ([`crate::tokenizer::siglip`]).
fn load_siglip(dir: &Path, plan: &WeightsPlan) -> Result<Parts> {
    let config = SiglipConfig::from_file(&dir.join("config.json"))?;
    let image_size = config.vision_config.image_size as u32;
    let pp_path = dir.join("preprocessor_config.json");
    let preprocess = if pp_path.is_file() {
        let mut raw = read_json(&pp_path)?;
        // SiglipImageProcessor has no centre crop; its saved config says nothing about one.
        if let Some(obj) = raw.as_object_mut() {
            obj.entry("do_center_crop").or_insert(false.into());
        }
        PreprocessorConfig::from_json(&raw, image_size, &pp_path)?
    } else {
        PreprocessorConfig::siglip(image_size)
    };
    if preprocess.output_size() != (image_size, image_size) {
        return Err(ClipError::config(
            &pp_path,
            "size",
            format!(
                "{:?} does not match the model's image_size {image_size}",
                preprocess.output_size()
            ),
        ));
    }
    let tokenizer =
        crate::tokenizer::siglip::load(dir, config.text_config.max_position_embeddings)?;
    let weights = || Weights::open(dir, plan.dtype, plan.device);
    let model = with_weights(weights, plan, |w| {
        SiglipModel::load(&w.root(), &config, plan.path)
    })?;
    Ok(Parts {
        model: Box::new(model),
        tokenizer,
        preprocess,
        reference_mode: PreprocessMode::Transformers,
    })
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| ClipError::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| ClipError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// A CLIP checkpoint's preprocessing: its `preprocessor_config.json`, or OpenAI's.
fn clip_preprocess(dir: &Path, config: &ClipConfig) -> Result<PreprocessorConfig> {
    let image_size = config.vision_config.image_size as u32;
    let pp_path = dir.join("preprocessor_config.json");
    let preprocess = if pp_path.is_file() {
        PreprocessorConfig::from_file(&pp_path, image_size)?
    } else {
        PreprocessorConfig::openai(image_size)
    };
    if preprocess.crop_size != (image_size, image_size) {
        return Err(ClipError::config(
            &pp_path,
            "crop_size",
            format!(
                "{:?} does not match the model's image_size {image_size}",
                preprocess.crop_size
            ),
        ));
    }
    Ok(preprocess)
}

/// The weights files of an open_clip checkpoint, in the order open_clip's hub loader prefers.
pub const OPEN_CLIP_WEIGHTS: [&str; 2] =
    ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"];

/// An open_clip checkpoint: `open_clip_config.json` and its weights, read into CLIP's towers
/// through open_clip's tensor names.
fn load_open_clip(dir: &Path, plan: &WeightsPlan) -> Result<Parts> {
    let config = OpenClipConfig::from_file(&dir.join(open_clip_config::CONFIG_FILE))?;
    let preprocess = config.preprocessor()?;
    let tokenizer = crate::tokenizer::open_clip::for_checkpoint(dir, &config)?;
    let file = OPEN_CLIP_WEIGHTS
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| ClipError::MissingFile {
            dir: dir.to_path_buf(),
            file: OPEN_CLIP_WEIGHTS[0].into(),
            hint: format!(
                "expected {} or {}",
                OPEN_CLIP_WEIGHTS[0], OPEN_CLIP_WEIGHTS[1]
            ),
        })?;
    if let Some(name) = &config.model.text_cfg.hf_model_name {
        let text_config = XlmRobertaConfig::resolve(name, dir)?;
        let context = config.model.text_cfg.context_length;
        if context > text_config.max_tokens() {
            return Err(ClipError::config(
                &config.path,
                "model_cfg.text_cfg.context_length",
                format!(
                    "{context} is more than the {} tokens `{name}`'s positions cover",
                    text_config.max_tokens()
                ),
            ));
        }
        // The HF text tower is open_clip's `CustomTextCLIP` text (`text.*`, unmapped names).
        let weights = || {
            Ok(Weights::open_file(&file, plan.dtype, plan.device)?
                .with_naming(open_clip_naming("text.")))
        };
        let model = with_weights(weights, plan, |w| {
            OpenClipXlmrModel::load(&w.root(), &config, &text_config, plan.path)
        })?;
        return Ok(Parts {
            model: Box::new(model),
            tokenizer,
            preprocess,
            reference_mode: PreprocessMode::OpenAi,
        });
    }
    let text_prefix = if config.model.custom_text {
        "text."
    } else {
        ""
    };
    let weights = || {
        Ok(Weights::open_file(&file, plan.dtype, plan.device)?
            .with_naming(open_clip_naming(text_prefix)))
    };
    let model = with_weights(weights, plan, |w| {
        OpenClipModel::load(&w.root(), &config, plan.path)
    })?;
    Ok(Parts {
        model: Box::new(model),
        tokenizer,
        preprocess,
        reference_mode: PreprocessMode::OpenAi,
    })
}

/// Opens the checkpoint's weights (through the pack cache when the packed kernels run), builds
/// the model from them, and completes the cache file.
fn with_weights<M>(
    open: impl FnOnce() -> Result<Weights>,
    plan: &WeightsPlan,
    build: impl FnOnce(&Weights) -> Result<M>,
) -> Result<M> {
    let mut weights = open()?;
    if let (Some(cache), MatmulPath::Packed(format)) = (plan.pack_cache, plan.path) {
        weights.use_pack_cache(cache, format);
    }
    if !weights.pack_cache().is_some_and(|c| c.is_hit()) {
        weights.read_ahead();
    }
    let model = build(&weights)?;
    if let Some(cache) = weights.pack_cache() {
        cache.finish();
    }
    Ok(model)
}

fn unknown(path: &Path, found: &str) -> ClipError {
    ClipError::UnknownFamily {
        path: PathBuf::from(path),
        model_type: found.to_string(),
        expected: KNOWN_MODEL_TYPES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn families_are_read_from_the_directory() {
        let clip = dir_with(&[("config.json", r#"{"model_type": "clip"}"#)]);
        assert_eq!(ModelFamily::detect(clip.path()).unwrap(), ModelFamily::Clip);
        let legacy = dir_with(&[("config.json", r#"{"text_config": {}}"#)]);
        assert_eq!(
            ModelFamily::detect(legacy.path()).unwrap(),
            ModelFamily::Clip
        );
        let siglip = dir_with(&[("config.json", r#"{"model_type": "siglip"}"#)]);
        assert_eq!(
            ModelFamily::detect(siglip.path()).unwrap(),
            ModelFamily::Siglip
        );
        let open_clip = dir_with(&[("open_clip_config.json", "{}")]);
        assert_eq!(
            ModelFamily::detect(open_clip.path()).unwrap(),
            ModelFamily::OpenClip
        );
        // timm's config.json (no model_type, no CLIP configs) beside open_clip's files.
        let timm = dir_with(&[
            ("open_clip_config.json", "{}"),
            (
                "config.json",
                r#"{"architecture": "vit_huge_patch14_clip_224"}"#,
            ),
        ]);
        assert_eq!(
            ModelFamily::detect(timm.path()).unwrap(),
            ModelFamily::OpenClip
        );
        // Both formats: transformers' names decide.
        let both = dir_with(&[
            ("open_clip_config.json", "{}"),
            ("config.json", r#"{"model_type": "clip"}"#),
        ]);
        assert_eq!(ModelFamily::detect(both.path()).unwrap(), ModelFamily::Clip);
    }

    #[test]
    fn mclip_is_read_from_its_model_type() {
        let mclip = dir_with(&[("config.json", r#"{"model_type": "M-CLIP"}"#)]);
        assert_eq!(
            ModelFamily::detect(mclip.path()).unwrap(),
            ModelFamily::Mclip
        );
    }

    #[test]
    fn siglip_loads_as_siglip() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/siglip/tiny-spm");
        let options = crate::clip::LoadOptions::default();
        let clip = crate::clip::Clip::from_dir(&dir, &options).unwrap();
        assert_eq!(clip.family(), ModelFamily::Siglip);
    }

    #[test]
    fn an_unknown_family_names_the_file_and_what_was_expected() {
        let bert = dir_with(&[("config.json", r#"{"model_type": "bert"}"#)]);
        let err = ModelFamily::detect(bert.path()).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
        assert!(
            err.contains("bert") && err.contains("clip, siglip"),
            "{err}"
        );
        let empty = dir_with(&[]);
        let err = ModelFamily::detect(empty.path()).unwrap_err().to_string();
        assert!(err.contains("open_clip_config.json"), "{err}");
        let broken = dir_with(&[("config.json", "{")]);
        let err = ModelFamily::detect(broken.path()).unwrap_err().to_string();
        assert!(err.contains("invalid JSON"), "{err}");
    }
}
