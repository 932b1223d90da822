//! open_clip's tokenizers: its `SimpleTokenizer` (OpenAI's CLIP BPE, bundled with open_clip
//! and here compiled into the binary, gzip-compressed) with open_clip's text cleaning, or a
//! Hugging Face `tokenizer.json` where `text_cfg.hf_tokenizer_name` names one (open_clip's
//! `HFTokenizer`: whitespace cleaning, truncation to the context, the tokenizer's pad id).
//!
//! The cleaning is `ftfy.fix_text` (the fixes below, repeated until the text stops changing,
//! as ftfy does), `html.unescape` twice, whitespace collapsed, then lower-cased (`lower`, the
//! default), or only whitespace (`whitespace`), or `canonicalize` (punctuation removed).
//!
//! ftfy is large; what is implemented is what changes real prompts:
//! - HTML entities ending in `;` (ftfy's own step, skipped when the text contains `<`) and
//!   Python's `html.unescape` (with and without `;`, numeric references, its replacement
//!   table for invalid ones);
//! - mojibake: runs of characters that are the Windows-1252 (or Latin-1) reading of a UTF-8
//!   multi-byte sequence (`Ã©` → `é`, `â€™` → `’` → `'`) are decoded;
//! - C1 controls read as Windows-1252, Latin ligatures (`ﬁ` → `fi`), half/full-width forms,
//!   curly quotes straightened, terminal colour escapes and control characters removed, NFC.
//!
//! Known differences from ftfy 6.3: ftfy weighs a whole segment's "badness" before decoding
//! mojibake and also repairs sequences whose bytes were lost or altered (`restore_byte_a0`,
//! `replace_lossy_sequences`, other legacy encodings such as MacRoman or cp437); here any run
//! that is valid UTF-8 in Windows-1252 clothing is decoded, and nothing else. ftfy's upper-case
//! entity variants (`&EACUTE;`) are not decoded by the first step.

use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

use serde_json::json;
use tokenizers::Tokenizer;

pub use super::open_clip_cleaning::{fix_text, html_unescape, Clean};
use super::{TextCleaning, TextTokenizer};
use crate::error::{ClipError, Result};
use crate::model::open_clip::config::OpenClipConfig;
use crate::model::xlm_roberta::XlmRobertaConfig;

/// open_clip's copy of OpenAI's BPE merges (MIT, OpenAI 2021), gzip-compressed.
const BPE_GZ: &[u8] = include_bytes!("../../data/bpe_simple_vocab_16e6.txt.gz");

pub const START_OF_TEXT: &str = "<start_of_text>";
pub const END_OF_TEXT: &str = "<end_of_text>";

/// open_clip's split pattern: case-insensitive (`re.IGNORECASE`), its special tokens first.
const SPLIT_PATTERN: &str =
    r"(?i)<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// The tokenizer of the open_clip checkpoint in `dir`.
pub fn for_checkpoint(dir: &Path, config: &OpenClipConfig) -> Result<TextTokenizer> {
    let t = &config.model.text_cfg;
    let path = &config.path;
    let context = t.context_length;
    let clean_name = t
        .tokenizer_kwargs
        .as_ref()
        .and_then(|k| k.get("clean"))
        .and_then(|c| c.as_str());
    if let Some(name) = &t.hf_tokenizer_name {
        if t.hf_model_name.is_some() {
            // An XLM-RoBERTa text tower: transformers' XLMRobertaTokenizer, from the
            // checkpoint's tokenizer.json or else the named tokenizer's.
            let clean = Clean::parse(clean_name.unwrap_or("whitespace"), path)?;
            let kwargs = t.tokenizer_kwargs.as_ref();
            if kwargs.and_then(|k| k.get("strip_sep_token")) == Some(&serde_json::json!(true)) {
                return Err(ClipError::config(
                    path,
                    "model_cfg.text_cfg.tokenizer_kwargs.strip_sep_token",
                    "is not supported",
                ));
            }
            let own = dir.join("tokenizer.json");
            let file = if own.is_file() {
                own
            } else {
                XlmRobertaConfig::resolve_tokenizer(name, dir)?
            };
            return TextTokenizer::xlm_roberta(&file, context, TextCleaning::OpenClip(clean));
        }
        let file = dir.join("tokenizer.json");
        if !file.is_file() {
            return Err(ClipError::MissingFile {
                dir: dir.to_path_buf(),
                file: "tokenizer.json".into(),
                hint: format!("open_clip_config.json names the Hugging Face tokenizer `{name}`"),
            });
        }
        let clean = Clean::parse(clean_name.unwrap_or("whitespace"), path)?;
        let bytes = std::fs::read(&file).map_err(|e| ClipError::io(&file, e))?;
        let inner = Tokenizer::from_bytes(&bytes).map_err(|e| ClipError::Tokenizer {
            path: file.clone(),
            message: e.to_string(),
        })?;
        let strip_sep = t
            .tokenizer_kwargs
            .as_ref()
            .and_then(|k| k.get("strip_sep_token"))
            .and_then(|v| v.as_bool());
        if strip_sep == Some(true) {
            return Err(ClipError::config(
                path,
                "model_cfg.text_cfg.tokenizer_kwargs.strip_sep_token",
                "is not supported",
            ));
        }
        let pad_id = hf_pad_id(dir, &inner);
        return TextTokenizer::from_pipeline(
            inner,
            &file,
            context,
            pad_id,
            TextCleaning::OpenClip(clean),
        );
    }
    let clean = Clean::parse(clean_name.unwrap_or("lower"), path)?;
    simple_tokenizer(context, clean)
}

/// The id transformers pads with: `tokenizer.json`'s padding, else the `pad_token` of
/// `tokenizer_config.json` or `special_tokens_map.json`, else `<pad>`, else 0. The towers
/// open_clip pairs with these are causal, so the pad id never changes an embedding; it is
/// kept for the ids to equal `HFTokenizer`'s.
fn hf_pad_id(dir: &Path, inner: &Tokenizer) -> u32 {
    if let Some(p) = inner.get_padding() {
        return p.pad_id;
    }
    for file in ["tokenizer_config.json", "special_tokens_map.json"] {
        let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let token = match json.get("pad_token") {
            Some(serde_json::Value::String(s)) => Some(s.as_str()),
            Some(v) => v.get("content").and_then(|c| c.as_str()),
            None => None,
        };
        if let Some(id) = token.and_then(|t| inner.token_to_id(t)) {
            return id;
        }
    }
    inner.token_to_id("<pad>").unwrap_or(0)
}

/// open_clip's `SimpleTokenizer`: the bundled BPE, `<start_of_text> … <end_of_text>`, padded
/// with 0, truncated to `context_length` with the end token kept last.
pub fn simple_tokenizer(context_length: usize, clean: Clean) -> Result<TextTokenizer> {
    let source = Path::new("open_clip:bpe_simple_vocab_16e6.txt.gz");
    let inner = bundled_pipeline()
        .clone()
        .map_err(|message| ClipError::Tokenizer {
            path: source.to_path_buf(),
            message,
        })?;
    TextTokenizer::from_pipeline(
        inner,
        source,
        context_length,
        0,
        TextCleaning::OpenClip(clean),
    )
}

/// The BPE pipeline, built once per process (the vocabulary is 49,408 tokens).
fn bundled_pipeline() -> &'static std::result::Result<Tokenizer, String> {
    static PIPELINE: OnceLock<std::result::Result<Tokenizer, String>> = OnceLock::new();
    PIPELINE.get_or_init(build_pipeline)
}

fn build_pipeline() -> std::result::Result<Tokenizer, String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(BPE_GZ)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot decompress the bundled vocabulary: {e}"))?;
    // open_clip: merges are lines 1 .. 49152-256-2 of the file (line 0 is a version header).
    let merges: Vec<&str> = text.split('\n').skip(1).take(49152 - 256 - 2).collect();
    let bytes = byte_alphabet();
    let mut vocab: Vec<String> = bytes.iter().map(|c| c.to_string()).collect();
    vocab.extend(bytes.iter().map(|c| format!("{c}</w>")));
    vocab.extend(merges.iter().map(|m| m.replace(' ', "")));
    vocab.push(START_OF_TEXT.into());
    vocab.push(END_OF_TEXT.into());
    let (sot, eot) = (vocab.len() - 2, vocab.len() - 1);
    let vocab: serde_json::Map<String, serde_json::Value> = vocab
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, json!(i)))
        .collect();
    let special = |id: usize, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(sot, START_OF_TEXT), special(eot, END_OF_TEXT)],
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": SPLIT_PATTERN},
             "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
             "use_regex": false}
        ]},
        "post_processor": {"type": "RobertaProcessing",
            "sep": [END_OF_TEXT, eot], "cls": [START_OF_TEXT, sot],
            "trim_offsets": false, "add_prefix_space": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                    "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": "", "end_of_word_suffix": "</w>",
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges}
    });
    serde_json::from_value(spec).map_err(|e| format!("cannot build the BPE model: {e}"))
}

/// GPT-2's reversible byte → character table, in byte order of open_clip's vocabulary: the
/// printable bytes first as themselves, then the others mapped to U+0100 onwards.
fn byte_alphabet() -> Vec<char> {
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let mut chars: Vec<char> = (0..256u32)
        .filter(|&b| printable(b))
        .filter_map(char::from_u32)
        .collect();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable(b) {
            chars.push(char::from_u32(256 + n).expect("valid"));
            n += 1;
        }
    }
    chars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_fixes_what_open_clip_fixes() {
        assert_eq!(
            Clean::Lower.apply("  A  Photo\tof &amp;amp; a DOG "),
            "a photo of & a dog"
        );
        assert_eq!(
            Clean::Lower.apply("cafÃ© â€œquotedâ€\u{9d}"),
            "café \"quoted\""
        );
        assert_eq!(Clean::Whitespace.apply("ﬁne  Ｆｕｌｌ"), "fine Full");
        assert_eq!(Clean::Canonicalize.apply("a_b, C!"), "a b c");
        assert_eq!(
            html_unescape("&amp &ampx &#x41; &#65 &lt;&notit; &bogus;"),
            "& &x A A <¬it; &bogus;"
        );
    }

    #[test]
    fn the_bundled_vocabulary_is_open_clips() {
        let t = simple_tokenizer(77, Clean::Lower).unwrap();
        assert_eq!(t.vocab_size(), 49408);
        let ids = t.encode("a photo of a dog").unwrap();
        assert_eq!(ids.first(), Some(&49406));
        assert_eq!(ids.last(), Some(&49407));
        assert_eq!(t.pad_id(), 0);
    }
}
