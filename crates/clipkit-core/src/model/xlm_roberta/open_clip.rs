//! open_clip's multilingual models (`xlm-roberta-base-ViT-B-32`, `xlm-roberta-large-ViT-H-14`,
//! any `open_clip_config.json` whose `text_cfg.hf_model_name` names an XLM-R encoder):
//! open_clip's ViT image tower (CLIP's, read through open_clip's names) with an XLM-R text tower
//! (`text.transformer.*`) pooled and projected as `text_cfg.hf_pooler_type` and
//! `hf_proj_type` say (`text.proj.*`).
//!
//! open_clip reads the encoder's config from the hub by name (`AutoConfig.from_pretrained`);
//! here [`XlmRobertaConfig::resolve`] finds it offline for the known names, else as a
//! directory (relative to the checkpoint) or a hub repository.

use candle_core::Tensor;

use super::config::XlmRobertaConfig;
use super::text::{PoolerType, Projection, XlmRobertaTextTower};
use crate::error::{ClipError, Result};
use crate::model::clip::{vision, VisionTower};
use crate::model::dense::{Dense, MatmulPath};
use crate::model::open_clip::config::OpenClipConfig;
use crate::model::tower::{DualEncoder, Embeddings, TextBatch, TextInput, TextPoolingRule};
use crate::scoring::Scoring;
use crate::weights::Scope;

pub struct OpenClipXlmrModel {
    pub vision: VisionTower,
    pub text: XlmRobertaTextTower,
    scoring: Scoring,
    config: OpenClipConfig,
}

impl OpenClipXlmrModel {
    /// The model from its root scope `w` (read through open_clip's naming), with the text
    /// encoder's config `text_config` (see [`XlmRobertaConfig::resolve`]).
    pub fn load(
        w: &Scope,
        config: &OpenClipConfig,
        text_config: &XlmRobertaConfig,
        path: MatmulPath,
    ) -> Result<Self> {
        let t = &config.model.text_cfg;
        let field = |name: &str| format!("model_cfg.text_cfg.{name}");
        let pooler = PoolerType::from_open_clip(&t.hf_pooler_type).ok_or_else(|| {
            ClipError::config(
                &config.path,
                field("hf_pooler_type"),
                format!(
                    "`{}` is not supported (expected mean_pooler, cls_pooler or \
                     cls_last_hidden_state_pooler)",
                    t.hf_pooler_type
                ),
            )
        })?;
        let (width, embed_dim) = (text_config.hidden_size, config.model.embed_dim);
        let text = w.pp("text");
        let proj_type = t.hf_proj_type.as_deref();
        let projection =
            Projection::load_open_clip(&text.pp("proj"), proj_type, width, embed_dim, path)?
                .ok_or_else(|| {
                    ClipError::config(
                        &config.path,
                        field("hf_proj_type"),
                        format!(
                            "{proj_type:?} is not supported from width {width} to embed_dim \
                         {embed_dim} (expected linear, mlp, or none when they are equal)"
                        ),
                    )
                })?;
        let text = XlmRobertaTextTower::load(
            &text.pp("transformer"),
            text_config,
            pooler,
            projection,
            path,
        )?;
        let v = &config.clip.vision_config;
        let visual_projection = Dense::load(
            &w.pp("visual_projection"),
            v.hidden_size,
            embed_dim,
            false,
            path,
        )?;
        let vision = vision::load(&w.pp("vision_model"), v, visual_projection, path)?;
        let logit_scale = w.get_scalar("logit_scale")?.exp();
        let scoring = if w.weights().contains("logit_bias") {
            Scoring::Sigmoid {
                logit_scale,
                logit_bias: w.get_scalar("logit_bias")?,
            }
        } else {
            Scoring::Softmax { logit_scale }
        };
        Ok(Self {
            vision,
            text,
            scoring,
            config: config.clone(),
        })
    }
}

impl DualEncoder for OpenClipXlmrModel {
    fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let dtype = self.vision.embeddings().dtype();
        self.vision.forward(&pixel_values.to_dtype(dtype)?)
    }

    fn text_features(&self, batch: &TextBatch) -> Result<Tensor> {
        self.text.forward(batch)
    }

    /// open_clip pads to the context length, but its attention mask makes the padding
    /// irrelevant: any padding gives the same result.
    fn text_input(&self) -> TextInput {
        TextInput {
            pooling: TextPoolingRule::Tower,
            pad_to: None,
            causal: false,
        }
    }

    fn scoring(&self) -> Scoring {
        self.scoring
    }

    fn embedding_dim(&self) -> usize {
        self.config.model.embed_dim
    }

    fn image_size(&self) -> usize {
        self.config.clip.vision_config.image_size
    }

    fn image_tokens(&self) -> usize {
        self.config.clip.vision_config.num_patches() + 1
    }

    fn image_flops(&self) -> f64 {
        self.config.clip.vision_config.flops_per_image()
    }
}
