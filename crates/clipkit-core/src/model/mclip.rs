//! M-CLIP (`model_type: M-CLIP`, the `multilingual-clip` package): an XLM-RoBERTa text encoder
//! (`transformer.*`, architecture from `modelBase`) mean-pooled over the real tokens and mapped
//! by `LinearTransformation` into the space of a CLIP image tower that the checkpoint does not
//! contain. The image tower comes from a second checkpoint: see [`MclipConfig::image_model`].

use std::path::Path;

use candle_core::Tensor;
use serde::Deserialize;

use super::clip::VisionTower;
use super::tower::{DualEncoder, TextBatch, TextInput, TextPoolingRule};
use super::xlm_roberta::XlmRobertaTextTower;
use crate::config::ClipConfig;
use crate::error::{ClipError, Result};
use crate::scoring::Scoring;

/// M-CLIP's `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct MclipConfig {
    /// The text encoder's architecture: a transformers model name (`xlm-roberta-large`).
    #[serde(rename = "modelBase")]
    pub model_base: String,
    /// The encoder's width.
    #[serde(rename = "transformerDimensions")]
    pub transformer_dimensions: usize,
    /// The CLIP embedding size the text is mapped to.
    #[serde(rename = "numDims")]
    pub num_dims: usize,
    /// clipkit's own key: the CLIP checkpoint (directory, relative to this one, or hub id)
    /// whose image tower this text tower was trained against.
    #[serde(default)]
    pub clipkit_image_model: Option<String>,
    #[serde(default, rename = "_name_or_path")]
    pub name_or_path: Option<String>,
}

/// The CLIP image towers the published M-CLIP text towers were distilled against (the
/// model cards'), for checkpoints loaded without `clipkit_image_model`.
const PAIRINGS: [(&str, &str); 2] = [
    (
        "M-CLIP/XLM-Roberta-Large-Vit-B-32",
        "openai/clip-vit-base-patch32",
    ),
    (
        "M-CLIP/XLM-Roberta-Large-Vit-L-14",
        "openai/clip-vit-large-patch14",
    ),
];

impl MclipConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ClipError::io(path, e))?;
        serde_json::from_str(&text).map_err(|source| ClipError::Json {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The image model to pair with the checkpoint in `dir` (whose `config.json` this is):
    /// `clipkit_image_model` when given, else the known pairing of the M-CLIP repository —
    /// named by `_name_or_path`, or by the HF cache's `models--M-CLIP--<name>` directory the
    /// snapshot sits in.
    pub fn image_model(&self, dir: &Path) -> Result<String> {
        if let Some(model) = &self.clipkit_image_model {
            return Ok(model.clone());
        }
        let cached = dir
            .ancestors()
            .filter_map(|d| d.file_name()?.to_str()?.strip_prefix("models--"))
            .map(|repo| repo.replacen("--", "/", 1))
            .next();
        let names = [self.name_or_path.clone(), cached];
        PAIRINGS
            .iter()
            .find(|(repo, _)| names.iter().flatten().any(|n| n == repo))
            .map(|(_, image)| image.to_string())
            .ok_or_else(|| {
                ClipError::config(
                    dir.join("config.json"),
                    "clipkit_image_model",
                    format!(
                        "an M-CLIP text tower needs the CLIP checkpoint whose image tower it \
                         pairs with; this one is not among the known ones ({}): add \
                         \"clipkit_image_model\": \"<directory or hub id>\" to its config.json",
                        PAIRINGS.map(|(repo, _)| repo).join(", ")
                    ),
                )
            })
    }
}

/// An M-CLIP text tower with the CLIP image tower it pairs with.
pub struct MclipModel {
    pub text: XlmRobertaTextTower,
    pub vision: VisionTower,
    /// The image checkpoint's learned temperature, exponentiated (M-CLIP has none of its own).
    logit_scale: f32,
    image_config: ClipConfig,
    embedding_dim: usize,
}

impl MclipModel {
    pub fn new(
        text: XlmRobertaTextTower,
        vision: VisionTower,
        logit_scale: f32,
        image_config: ClipConfig,
        embedding_dim: usize,
    ) -> Self {
        Self {
            text,
            vision,
            logit_scale,
            image_config,
            embedding_dim,
        }
    }
}

impl DualEncoder for MclipModel {
    fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let dtype = super::tower::Embeddings::dtype(self.vision.embeddings());
        self.vision.forward(&pixel_values.to_dtype(dtype)?)
    }

    fn text_features(&self, batch: &TextBatch) -> Result<Tensor> {
        self.text.forward(batch)
    }

    fn text_input(&self) -> TextInput {
        TextInput {
            pooling: TextPoolingRule::Tower,
            pad_to: None,
            causal: false,
        }
    }

    fn scoring(&self) -> Scoring {
        Scoring::Softmax {
            logit_scale: self.logit_scale,
        }
    }

    fn embedding_dim(&self) -> usize {
        self.embedding_dim
    }

    fn image_size(&self) -> usize {
        self.image_config.vision_config.image_size
    }

    fn image_tokens(&self) -> usize {
        self.image_config.vision_config.num_patches() + 1
    }

    fn image_flops(&self) -> f64 {
        self.image_config.vision_config.flops_per_image()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> MclipConfig {
        let json = format!(
            r#"{{"model_type": "M-CLIP", "modelBase": "xlm-roberta-large",
                "transformerDimensions": 1024, "numDims": 512{extra}}}"#
        );
        serde_json::from_str(&json).unwrap()
    }

    #[test]
    fn the_image_model_comes_from_the_key_the_cache_path_or_the_name() {
        let snapshot =
            Path::new("/hf/hub/models--M-CLIP--XLM-Roberta-Large-Vit-B-32/snapshots/ab12");
        assert_eq!(
            config("").image_model(snapshot).unwrap(),
            "openai/clip-vit-base-patch32"
        );
        let named = config(r#", "_name_or_path": "M-CLIP/XLM-Roberta-Large-Vit-L-14""#);
        assert_eq!(
            named.image_model(Path::new("/anywhere")).unwrap(),
            "openai/clip-vit-large-patch14"
        );
        let explicit = config(r#", "clipkit_image_model": "../my-clip""#);
        assert_eq!(explicit.image_model(snapshot).unwrap(), "../my-clip");
        let err = config("").image_model(Path::new("/elsewhere")).unwrap_err();
        assert!(err.to_string().contains("clipkit_image_model"), "{err}");
    }
}
