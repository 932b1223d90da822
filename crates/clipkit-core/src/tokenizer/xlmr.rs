//! XLM-RoBERTa's tokenizer as transformers 5's `XLMRobertaTokenizer` runs it: SentencePiece
//! unigram over XLM-R's fairseq-offset vocabulary, `<s> … </s>`, padded with `<pad>` (id 1),
//! which the tower masks.
//!
//! transformers does not run a `tokenizer.json`'s pipeline as written: it takes the file's
//! unigram vocabulary and its SentencePiece normaliser (the `Precompiled` character map) and
//! rebuilds the rest — whitespace split, then Metaspace (`▁`, prepended), `<s> $A </s>`, unknown
//! id 3. Hub files converted by older versions carry other pre-tokenisers and extra
//! normalisers (so `"a  b"` would gain a lone `▁` token); the same rebuild here gives
//! transformers' ids whichever converter wrote the file.

use std::path::Path;

use serde_json::{json, Value};
use tokenizers::Tokenizer;

use super::{TextCleaning, TextTokenizer};
use crate::error::{ClipError, Result};

/// XLM-R's padding token.
pub const PAD: &str = "<pad>";
const BOS: &str = "<s>";
const EOS: &str = "</s>";
/// transformers builds the unigram model with `unk_id=3` (`<unk>` in XLM-R's layout).
const UNK_ID: u64 = 3;

impl TextTokenizer {
    /// The XLM-R `tokenizer.json` at `path`, truncated to `context_length` ids (`</s>` kept
    /// last, as transformers truncates), after `cleaning` (none for transformers; open_clip
    /// cleans whitespace first).
    pub fn xlm_roberta(path: &Path, context_length: usize, cleaning: TextCleaning) -> Result<Self> {
        let err = |message: String| ClipError::Tokenizer {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| ClipError::io(path, e))?;
        let mut spec: Value = serde_json::from_str(&text).map_err(|source| ClipError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        if spec["model"]["type"] != "Unigram" {
            return Err(err(format!(
                "expected a SentencePiece unigram model (XLM-R), found `{}`",
                spec["model"]["type"]
            )));
        }
        let id_of = |token: &str| -> Result<u64> {
            let vocab = spec["model"]["vocab"].as_array();
            vocab
                .and_then(|v| v.iter().position(|entry| entry[0] == token))
                .map(|i| i as u64)
                .ok_or_else(|| err(format!("the vocabulary has no `{token}` token")))
        };
        let (bos, eos) = (id_of(BOS)?, id_of(EOS)?);
        spec["normalizer"] = precompiled(&spec["normalizer"]).unwrap_or(Value::Null);
        spec["pre_tokenizer"] = json!({"type": "Sequence", "pretokenizers": [
            {"type": "WhitespaceSplit"},
            {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true}
        ]});
        spec["post_processor"] = json!({"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": BOS, "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": EOS, "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": BOS, "type_id": 0}},
                 {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": EOS, "type_id": 0}},
                 {"SpecialToken": {"id": EOS, "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 0}},
                 {"SpecialToken": {"id": EOS, "type_id": 0}}],
        "special_tokens": {
            BOS: {"id": BOS, "ids": [bos], "tokens": [BOS]},
            EOS: {"id": EOS, "ids": [eos], "tokens": [EOS]}
        }});
        spec["model"]["unk_id"] = json!(UNK_ID);
        spec["model"]["byte_fallback"] = json!(false);
        spec["truncation"] = Value::Null;
        spec["padding"] = Value::Null;
        let inner: Tokenizer = serde_json::from_value(spec)
            .map_err(|e| err(format!("cannot build the pipeline: {e}")))?;
        let pad_id = inner
            .token_to_id(PAD)
            .ok_or_else(|| err(format!("the vocabulary has no `{PAD}` token")))?;
        Self::from_pipeline(inner, path, context_length, pad_id, cleaning)
    }
}

/// The SentencePiece character map among a normaliser (alone or in a `Sequence`), as
/// transformers looks for it.
fn precompiled(normalizer: &Value) -> Option<Value> {
    let candidates = match normalizer["type"].as_str() {
        Some("Sequence") => normalizer["normalizers"].as_array()?.clone(),
        _ => vec![normalizer.clone()],
    };
    candidates
        .into_iter()
        .find(|n| n["type"] == "Precompiled" && n.get("precompiled_charsmap").is_some())
}
