//! SigLIP's two tokenizers.
//!
//! - SigLIP v1 ships only `spiece.model` (SentencePiece unigram). transformers' `SiglipTokenizer`
//!   cleans the text in Python first ([`canonicalize`](super::siglip_cleaning::canonicalize): `▁` prefix, lower-case, ASCII
//!   punctuation removed, whitespace collapsed), then runs SentencePiece and appends `</s>`;
//!   [`from_spiece`] does the cleaning and SentencePiece's normaliser in Rust
//!   ([`SiglipCleaning`]) and the unigram segmentation (pieces and scores from the proto) in
//!   the `tokenizers` crate.
//! - SigLIP 2 FixRes ships a Gemma `tokenizer.json` (byte-fallback BPE). transformers'
//!   `GemmaTokenizer` uses it as is, except that `add_bos_token` / `add_eos_token` in
//!   `tokenizer_config.json`, when given, decide its post-processor, and a `Siglip2Tokenizer`
//!   class lower-cases first ([`from_gemma_json`]).
//!
//! Both truncate to the context (64) keeping the end token last, and pad with the config's
//! `pad_token`.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::{Lowercase, Sequence};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, NormalizerWrapper, Tokenizer};

use super::siglip_cleaning::SiglipCleaning;
use super::spm::{SpmModel, UNIGRAM};
use super::spm_normalizer::{CharsMap, WhitespaceRules};
use super::{TextCleaning, TextTokenizer};
use crate::error::{ClipError, Result};

fn err(path: &Path, message: impl Into<String>) -> ClipError {
    ClipError::Tokenizer {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// `tokenizer_config.json` of `dir`, or an empty object when there is none.
fn tokenizer_config(dir: &Path) -> Result<Value> {
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(Value::Object(Default::default()));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| ClipError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|source| ClipError::Json { path, source })
}

/// A special token's text in `tokenizer_config.json`: a string or an `AddedToken` object.
fn token_text(config: &Value, key: &str, default: &str) -> String {
    match config.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string(),
        _ => default.to_string(),
    }
}

/// The tokenizer of a SigLIP checkpoint directory: `spiece.model` when the checkpoint has no
/// `tokenizer.json` or says `SiglipTokenizer`, else its `tokenizer.json`.
pub fn load(dir: &Path, context_length: usize) -> Result<TextTokenizer> {
    let config = tokenizer_config(dir)?;
    let class = config.get("tokenizer_class").and_then(Value::as_str);
    let spiece = dir.join("spiece.model");
    let json = dir.join("tokenizer.json");
    if spiece.is_file() && (class == Some("SiglipTokenizer") || !json.is_file()) {
        return from_spiece(&spiece, &config, context_length);
    }
    if json.is_file() {
        return from_gemma_json(&json, &config, context_length);
    }
    Err(ClipError::MissingFile {
        dir: dir.to_path_buf(),
        file: "spiece.model".into(),
        hint: "a SigLIP checkpoint has spiece.model (SigLIP) or tokenizer.json (SigLIP 2)".into(),
    })
}

/// SigLIP v1's `SiglipTokenizer` from `spiece.model`.
pub fn from_spiece(path: &Path, config: &Value, context_length: usize) -> Result<TextTokenizer> {
    let bytes = std::fs::read(path).map_err(|e| ClipError::io(path, e))?;
    let model = SpmModel::parse(&bytes)
        .map_err(|m| err(path, format!("not a SentencePiece model: {m}")))?;
    if model.model_type != UNIGRAM {
        return Err(err(
            path,
            format!(
                "SentencePiece model type {} is not unigram (1)",
                model.model_type
            ),
        ));
    }
    let id_of = |token: &str| -> Result<u32> {
        model
            .pieces
            .iter()
            .position(|p| p.piece == token)
            .map(|i| i as u32)
            .ok_or_else(|| err(path, format!("the vocabulary has no `{token}` piece")))
    };
    let eos = token_text(config, "eos_token", "</s>");
    let pad = token_text(config, "pad_token", "</s>");
    let (eos_id, pad_id) = (id_of(&eos)?, id_of(&pad)?);
    let lowercase = config
        .get("do_lower_case")
        .and_then(Value::as_bool)
        .unwrap_or(true);

    let vocab = model
        .pieces
        .iter()
        .map(|p| (p.piece.clone(), f64::from(p.score)))
        .collect();
    let unigram = Unigram::from(vocab, Some(model.unk_id), model.byte_fallback)
        .map_err(|e| err(path, format!("cannot build the unigram model: {e}")))?;
    let mut tokenizer = Tokenizer::new(unigram);

    let n = &model.normalizer;
    let map = if n.precompiled_charsmap.is_empty() {
        None
    } else {
        let map = CharsMap::parse(&n.precompiled_charsmap).map_err(|m| err(path, m))?;
        Some(Arc::new(map))
    };
    let unk = model.pieces[model.unk_id].piece.clone();
    let unk = token_text(config, "unk_token", &unk);
    let mut specials = vec![eos.clone(), unk.clone(), pad.clone()];
    specials.sort_by_key(|s| std::cmp::Reverse(s.len()));
    specials.dedup();
    let cleaning = SiglipCleaning {
        lowercase,
        map,
        rules: WhitespaceRules {
            remove_extra_whitespaces: n.remove_extra_whitespaces,
            escape_whitespaces: n.escape_whitespaces,
        },
        specials: specials.clone(),
        eos: eos.clone(),
    };
    // The special tokens' literal text (kept by the cleaning) maps to their ids.
    for special in &specials {
        id_of(special)?;
    }
    let added: Vec<AddedToken> = specials
        .iter()
        .map(|s| AddedToken::from(s.clone(), true))
        .collect();
    tokenizer
        .add_special_tokens(added)
        .map_err(|e| err(path, e.to_string()))?;
    tokenizer.with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::Never, true)));
    tokenizer.with_post_processor(Some(eos_template(path, &eos, eos_id, None)?));
    TextTokenizer::from_pipeline(
        tokenizer,
        path,
        context_length,
        pad_id,
        TextCleaning::Siglip(cleaning),
    )
}

/// `$A <eos>` (with `<bos> ` first when `bos` is given), as transformers'
/// `update_post_processor` writes it.
fn eos_template(
    path: &Path,
    eos: &str,
    eos_id: u32,
    bos: Option<(&str, u32)>,
) -> Result<TemplateProcessing> {
    let mut single = String::new();
    let mut special = vec![(eos.to_string(), eos_id)];
    if let Some((bos, bos_id)) = bos {
        single.push_str(&format!("{bos} "));
        special.push((bos.to_string(), bos_id));
    }
    single.push_str(&format!("$A {eos}"));
    TemplateProcessing::builder()
        .try_single(single.as_str())
        .map_err(|e| err(path, e))?
        .special_tokens(special)
        .build()
        .map_err(|e| err(path, e.to_string()))
}

/// SigLIP 2's Gemma `tokenizer.json`.
pub fn from_gemma_json(
    path: &Path,
    config: &Value,
    context_length: usize,
) -> Result<TextTokenizer> {
    let bytes = std::fs::read(path).map_err(|e| ClipError::io(path, e))?;
    let mut tokenizer = Tokenizer::from_bytes(&bytes).map_err(|e| err(path, e.to_string()))?;
    if config.get("tokenizer_class").and_then(Value::as_str) == Some("Siglip2Tokenizer") {
        // transformers' Siglip2Tokenizer lower-cases before Gemma's normaliser (idempotent if
        // the saved file already does).
        let mut steps: Vec<NormalizerWrapper> = vec![Lowercase.into()];
        steps.extend(tokenizer.get_normalizer().cloned());
        tokenizer
            .with_normalizer(Some(Sequence::new(steps)))
            .map_err(|e| err(path, e.to_string()))?;
    }
    let id_of = |token: &str| -> Result<u32> {
        tokenizer
            .token_to_id(token)
            .ok_or_else(|| err(path, format!("the vocabulary has no `{token}` token")))
    };
    let pad_id = id_of(&token_text(config, "pad_token", "<pad>"))?;
    let add_bos = config.get("add_bos_token").and_then(Value::as_bool);
    let add_eos = config.get("add_eos_token").and_then(Value::as_bool);
    if add_bos.is_some() || add_eos.is_some() {
        // transformers rewrites the post-processor from these flags when the config has them.
        let eos = token_text(config, "eos_token", "<eos>");
        let bos = token_text(config, "bos_token", "<bos>");
        let bos = match add_bos {
            Some(true) => Some((bos.as_str(), id_of(&bos)?)),
            _ => None,
        };
        if add_eos == Some(true) {
            let template = eos_template(path, &eos, id_of(&eos)?, bos)?;
            tokenizer.with_post_processor(Some(template));
        } else if let Some((bos, bos_id)) = bos {
            let template = TemplateProcessing::builder()
                .try_single(format!("{bos} $A").as_str())
                .map_err(|e| err(path, e))?
                .special_tokens(vec![(bos.to_string(), bos_id)])
                .build()
                .map_err(|e| err(path, e.to_string()))?;
            tokenizer.with_post_processor(Some(template));
        } else {
            tokenizer.with_post_processor(None::<TemplateProcessing>);
        }
    }
    TextTokenizer::from_pipeline(tokenizer, path, context_length, pad_id, TextCleaning::None)
}
