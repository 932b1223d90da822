//! The table of known checkpoints.
//!
//! Accuracies are ImageNet-1k zero-shot top-1 as their source publishes them, rounded to one
//! decimal; parameters are both towers together. open_clip's results table
//! (`docs/openclip_results.csv` in mlfoundations/open_clip) evaluates OpenAI's, LAION's,
//! Apple's, DataComp's and Google's SigLIP checkpoints with one protocol, so it is preferred
//! where it lists a checkpoint; SigLIP 2 and MetaCLIP 2 are not in it and are quoted from
//! their papers. A number no source we trust gives is left out (`None`), never estimated.
//! SigLIP parameter counts were counted from transformers' `SiglipModel` built with each
//! checkpoint's shapes (they agree with open_clip's table for the two SigLIP 1 checkpoints).

use super::known::Architecture::{Clip, MClip, OpenClip, OpenClipXlmRoberta, Siglip};
use super::known::Languages::{English, Multilingual};
use super::known::Source::{OpenClipResults, Paper};
use super::known::{KnownModel, Source, ZeroShot};

const SIGLIP2_PAPER: Source = Paper("SigLIP 2 paper (arXiv 2502.14786)");
const METACLIP2_PAPER: Source = Paper("MetaCLIP 2 paper (arXiv 2507.22062)");

const fn published(top1: f32, source: Source) -> Option<ZeroShot> {
    Some(ZeroShot { top1, source })
}

/// Every checkpoint `clipkit models` lists, roughly from fastest to most accurate per family.
pub const CATALOGUE: &[KnownModel] = &[
    // OpenAI CLIP (transformers format).
    KnownModel {
        id: "openai/clip-vit-base-patch32",
        architecture: Clip,
        image_size: 224,
        embedding_dim: 512,
        imagenet: published(63.3, OpenClipResults),
        params_m: Some(151.3),
        languages: English,
    },
    KnownModel {
        id: "openai/clip-vit-base-patch16",
        architecture: Clip,
        image_size: 224,
        embedding_dim: 512,
        imagenet: published(68.3, OpenClipResults),
        params_m: Some(149.6),
        languages: English,
    },
    KnownModel {
        id: "openai/clip-vit-large-patch14",
        architecture: Clip,
        image_size: 224,
        embedding_dim: 768,
        imagenet: published(75.5, OpenClipResults),
        params_m: Some(427.6),
        languages: English,
    },
    KnownModel {
        id: "openai/clip-vit-large-patch14-336",
        architecture: Clip,
        image_size: 336,
        embedding_dim: 768,
        imagenet: published(76.6, OpenClipResults),
        params_m: Some(427.9),
        languages: English,
    },
    // SigLIP 2 FixRes (transformers `model_type: siglip`, Gemma tokenizer).
    KnownModel {
        id: "google/siglip2-base-patch16-224",
        architecture: Siglip,
        image_size: 224,
        embedding_dim: 768,
        imagenet: published(78.2, SIGLIP2_PAPER),
        params_m: Some(375.2),
        languages: Multilingual,
    },
    KnownModel {
        id: "google/siglip2-base-patch16-256",
        architecture: Siglip,
        image_size: 256,
        embedding_dim: 768,
        imagenet: published(79.1, SIGLIP2_PAPER),
        params_m: Some(375.2),
        languages: Multilingual,
    },
    KnownModel {
        id: "google/siglip2-base-patch16-384",
        architecture: Siglip,
        image_size: 384,
        embedding_dim: 768,
        imagenet: published(80.6, SIGLIP2_PAPER),
        params_m: Some(375.5),
        languages: Multilingual,
    },
    KnownModel {
        id: "google/siglip2-large-patch16-256",
        architecture: Siglip,
        image_size: 256,
        embedding_dim: 1024,
        imagenet: published(82.5, SIGLIP2_PAPER),
        params_m: Some(881.5),
        languages: Multilingual,
    },
    KnownModel {
        id: "google/siglip2-large-patch16-384",
        architecture: Siglip,
        image_size: 384,
        embedding_dim: 1024,
        imagenet: published(83.1, SIGLIP2_PAPER),
        params_m: Some(881.9),
        languages: Multilingual,
    },
    KnownModel {
        id: "google/siglip2-so400m-patch14-384",
        architecture: Siglip,
        image_size: 384,
        embedding_dim: 1152,
        imagenet: published(84.1, SIGLIP2_PAPER),
        params_m: Some(1136.0),
        languages: Multilingual,
    },
    KnownModel {
        id: "google/siglip2-giant-opt-patch16-384",
        architecture: Siglip,
        image_size: 384,
        embedding_dim: 1536,
        imagenet: published(85.0, SIGLIP2_PAPER),
        params_m: None,
        languages: Multilingual,
    },
    // SigLIP 1 (SentencePiece tokenizer, English).
    KnownModel {
        id: "google/siglip-base-patch16-224",
        architecture: Siglip,
        image_size: 224,
        embedding_dim: 768,
        imagenet: published(76.0, OpenClipResults),
        params_m: Some(203.2),
        languages: English,
    },
    KnownModel {
        id: "google/siglip-so400m-patch14-384",
        architecture: Siglip,
        image_size: 384,
        embedding_dim: 1152,
        imagenet: published(83.1, OpenClipResults),
        params_m: Some(878.0),
        languages: English,
    },
    // open_clip checkpoints with CLIP's towers.
    KnownModel {
        id: "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        architecture: OpenClip,
        image_size: 224,
        embedding_dim: 512,
        imagenet: published(66.6, OpenClipResults),
        params_m: Some(151.3),
        languages: English,
    },
    KnownModel {
        id: "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
        architecture: OpenClip,
        image_size: 224,
        embedding_dim: 1024,
        imagenet: published(78.0, OpenClipResults),
        params_m: Some(986.1),
        languages: English,
    },
    KnownModel {
        id: "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k",
        architecture: OpenClip,
        image_size: 224,
        embedding_dim: 1280,
        imagenet: published(80.1, OpenClipResults),
        params_m: Some(2539.6),
        languages: English,
    },
    KnownModel {
        id: "laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K",
        architecture: OpenClip,
        image_size: 224,
        embedding_dim: 768,
        imagenet: published(79.2, OpenClipResults),
        params_m: Some(427.6),
        languages: English,
    },
    KnownModel {
        id: "apple/DFN2B-CLIP-ViT-L-14",
        architecture: OpenClip,
        image_size: 224,
        embedding_dim: 768,
        imagenet: published(81.4, OpenClipResults),
        params_m: Some(427.6),
        languages: English,
    },
    KnownModel {
        id: "apple/DFN5B-CLIP-ViT-H-14-378",
        architecture: OpenClip,
        image_size: 378,
        embedding_dim: 1024,
        imagenet: published(84.4, OpenClipResults),
        params_m: Some(986.7),
        languages: English,
    },
    // MetaCLIP 2 worldwide in open_clip format (XLM-V tokenizer, tokenizer.json).
    KnownModel {
        id: "timm/vit_huge_patch14_clip_224.metaclip2_worldwide",
        architecture: OpenClip,
        image_size: 224,
        embedding_dim: 1024,
        imagenet: published(81.3, METACLIP2_PAPER),
        params_m: None,
        languages: Multilingual,
    },
    // Multilingual text towers.
    KnownModel {
        id: "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k",
        architecture: OpenClipXlmRoberta,
        image_size: 224,
        embedding_dim: 512,
        imagenet: published(62.4, OpenClipResults),
        params_m: Some(366.1),
        languages: Multilingual,
    },
    KnownModel {
        id: "laion/CLIP-ViT-H-14-frozen-xlm-roberta-large-laion5B-s13B-b90k",
        architecture: OpenClipXlmRoberta,
        image_size: 224,
        embedding_dim: 1024,
        imagenet: published(77.0, OpenClipResults),
        params_m: Some(1193.0),
        languages: Multilingual,
    },
    // M-CLIP publishes multilingual retrieval, not ImageNet zero-shot.
    KnownModel {
        id: "M-CLIP/XLM-Roberta-Large-Vit-B-32",
        architecture: MClip,
        image_size: 224,
        embedding_dim: 512,
        imagenet: None,
        params_m: None,
        languages: Multilingual,
    },
];
