//! SigLIP's two tokenizers.
//!
//! - SigLIP v1 ships only `spiece.model` (SentencePiece unigram). transformers' `SiglipTokenizer`
//!   cleans the text in Python first ([`canonicalize`]: `▁` prefix, lower-case, ASCII
//!   punctuation removed, whitespace collapsed), then runs SentencePiece and appends `</s>`;
//!   [`from_spiece`] builds the same pipeline in the `tokenizers` crate from the proto (its
//!   precompiled normaliser, whitespace handling, the unigram pieces and scores).
//! - SigLIP 2 FixRes ships a Gemma `tokenizer.json` (byte-fallback BPE). transformers'
//!   `GemmaTokenizer` uses it as is, except that `add_bos_token` / `add_eos_token` in
//!   `tokenizer_config.json`, when given, decide its post-processor ([`from_gemma_json`]).
//!
//! Both truncate to the context (64) keeping the end token last, and pad with the config's
//! `pad_token`.

use std::path::Path;

use serde_json::Value;
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::{Precompiled, Replace, Sequence, Strip};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{NormalizerWrapper, Tokenizer};

use super::spm::{SpmModel, UNIGRAM};
use super::{TextCleaning, TextTokenizer};
use crate::error::{ClipError, Result};

/// `SiglipTokenizer.canonicalize_text` on the text `tokenize` hands it: `▁` + the text (with
/// any `▁` in it made a space), lower-cased if asked, Python's `string.punctuation` removed,
/// every run of whitespace (Python's `\s`) one space, trailing whitespace stripped.
pub fn canonicalize(text: &str, lowercase: bool) -> String {
    let mut raw = String::with_capacity(text.len() + 3);
    raw.push('▁');
    raw.extend(text.chars().map(|c| if c == '▁' { ' ' } else { c }));
    let lowered = if lowercase { raw.to_lowercase() } else { raw };
    let mut out = String::with_capacity(lowered.len());
    let mut in_space = false;
    for c in lowered.chars() {
        if c.is_ascii_punctuation() {
            continue;
        }
        if py_isspace(c) {
            in_space = true;
            continue;
        }
        if in_space {
            out.push(' ');
            in_space = false;
        }
        out.push(c);
    }
    // `strip()`: the leading `▁` is not whitespace, so only the end can be stripped (done by
    // not emitting a pending space).
    out
}

/// Python's `str.isspace` (what `re`'s `\s` matches in a `str` pattern): Unicode's White_Space
/// plus the information separators U+001C..U+001F.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

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

    // SentencePiece's normaliser on "<unk>" + the cleaned text, of which transformers keeps the
    // tokens after "<unk>"'s: the character map, then (remove_extra_whitespaces) runs of
    // spaces collapsed and trailing ones dropped. The cleaned text starts with `▁`, which the
    // map turns into the space that starts the first word, so no dummy prefix is added here.
    let n = &model.normalizer;
    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    if !n.precompiled_charsmap.is_empty() {
        let trie_len = n
            .precompiled_charsmap
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        if trie_len.is_none_or(|t| t + 4 > n.precompiled_charsmap.len() || t % 4 != 0) {
            return Err(err(path, "malformed precompiled_charsmap"));
        }
        let map = Precompiled::from(&n.precompiled_charsmap)
            .map_err(|e| err(path, format!("malformed precompiled_charsmap: {e}")))?;
        normalizers.push(map.into());
    }
    if n.remove_extra_whitespaces {
        let collapse = Replace::new(
            tokenizers::normalizers::replace::ReplacePattern::Regex(" {2,}".into()),
            " ",
        )
        .map_err(|e| err(path, e.to_string()))?;
        normalizers.push(collapse.into());
        normalizers.push(Strip::new(false, true).into());
    }
    tokenizer
        .with_normalizer(Some(Sequence::new(normalizers)))
        .map_err(|e| err(path, e.to_string()))?;
    tokenizer.with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::Never, true)));
    tokenizer.with_post_processor(Some(eos_template(path, &eos, eos_id, None)?));
    TextTokenizer::from_pipeline(
        tokenizer,
        path,
        context_length,
        pad_id,
        TextCleaning::Siglip { lowercase },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalize_is_siglips() {
        assert_eq!(
            canonicalize("A Photo, of a CAT!", true),
            "▁a photo of a cat"
        );
        assert_eq!(canonicalize("", true), "▁");
        assert_eq!(canonicalize("  x\t\ny  ", true), "▁ x y");
        assert_eq!(canonicalize("a▁b", false), "▁a b");
        assert_eq!(canonicalize("Keep Case", false), "▁Keep Case");
        assert_eq!(canonicalize("a\u{1c}b", true), "▁a b");
    }
}
