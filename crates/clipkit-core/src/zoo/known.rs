//! What a catalogued checkpoint is: the types of [`super::CATALOGUE`]'s rows, apart from the
//! table so that the data and the code that reads it do not depend on each other.

/// How a checkpoint is built and loaded, as users tell checkpoints apart (finer than
/// [`crate::ModelFamily`], which only says which loader reads the files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// OpenAI CLIP in transformers' `CLIPModel` format.
    Clip,
    /// SigLIP or SigLIP 2 (transformers' `SiglipModel`): sigmoid scoring.
    Siglip,
    /// An open_clip checkpoint with CLIP's two towers (LAION, DataComp, DFN, MetaCLIP).
    OpenClip,
    /// An open_clip checkpoint whose text tower is XLM-RoBERTa (an HF text model inside
    /// open_clip).
    OpenClipXlmRoberta,
    /// M-CLIP: an XLM-RoBERTa text tower with a linear projection, paired with OpenAI's
    /// image tower.
    MClip,
}

impl Architecture {
    /// The name `clipkit models` prints.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Clip => "CLIP",
            Architecture::Siglip => "SigLIP",
            Architecture::OpenClip => "open_clip",
            Architecture::OpenClipXlmRoberta => "open_clip + XLM-R",
            Architecture::MClip => "M-CLIP",
        }
    }
}

/// Which languages the text tower was trained to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Languages {
    English,
    /// Trained on many languages (a multilingual tokenizer and captions).
    Multilingual,
}

impl Languages {
    pub fn name(self) -> &'static str {
        match self {
            Languages::English => "English",
            Languages::Multilingual => "multilingual",
        }
    }
}

/// Where a published accuracy comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// open_clip's results table (`docs/openclip_results.csv`, CLIP_benchmark protocol), which
    /// also evaluates OpenAI's and Google's checkpoints with one protocol.
    OpenClipResults,
    /// The paper that introduced the checkpoint (its ImageNet zero-shot table), named.
    Paper(&'static str),
    /// The checkpoint's model card on the Hugging Face Hub.
    ModelCard,
}

impl Source {
    /// A short citation for tables.
    pub fn cite(self) -> &'static str {
        match self {
            Source::OpenClipResults => "open_clip results table",
            Source::Paper(paper) => paper,
            Source::ModelCard => "model card",
        }
    }
}

/// A published ImageNet-1k zero-shot top-1 accuracy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZeroShot {
    /// Top-1 accuracy in percent.
    pub top1: f32,
    pub source: Source,
}

/// One checkpoint clipkit knows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnownModel {
    /// The Hugging Face Hub id `--model` takes.
    pub id: &'static str,
    pub architecture: Architecture,
    /// Side of the square image the image tower reads, in pixels.
    pub image_size: u32,
    /// Length of the shared embedding.
    pub embedding_dim: u32,
    /// ImageNet zero-shot top-1 as published; `None` where no source we trust gives one.
    pub imagenet: Option<ZeroShot>,
    /// Parameters of both towers, in millions; `None` where not known exactly.
    pub params_m: Option<f32>,
    pub languages: Languages,
}
