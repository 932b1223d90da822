//! Text to token ids, for every family, through the `tokenizers` crate.
//!
//! [`TextTokenizer`] is one seam: a `tokenizers::Tokenizer` pipeline (however the family's files
//! describe it) plus the text cleaning the family's reference library does in Python before
//! tokenizing ([`TextCleaning`]), the context length it truncates to and the id it pads with.
//! A family's loader builds one from its files; `Clip` only calls `encode` and `pad_id`.
//!
//! CLIP's byte-level BPE: `tokenizer.json` (what transformers saves) is used as-is. Older checkpoints ship only
//! `vocab.json` + `merges.txt`; for those the same pipeline transformers builds for CLIP
//! (NFC, collapse whitespace, lower-case, CLIP's split regex, byte-level BPE with `</w>`,
//! `<|startoftext|> … <|endoftext|>`) is assembled here. Text longer than the context is
//! truncated with the end-of-text token kept last, as transformers does with
//! `truncation=True` — never an error.

pub mod siglip;
pub mod siglip_cleaning;
pub mod spm;
pub mod spm_normalizer;
mod xlmr;

use std::path::{Path, PathBuf};

use serde_json::json;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{ClipError, Result};

pub mod open_clip;
pub mod open_clip_cleaning;

pub const START_OF_TEXT: &str = "<|startoftext|>";
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// CLIP's pre-tokenisation regex (from OpenAI's `simple_tokenizer.py`).
const SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// Text transformations a family's reference library applies before its tokenizer runs
/// (transformers' CLIP does none; open_clip and SigLIP clean the text in Python).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TextCleaning {
    /// The text goes to the tokenizer as given.
    #[default]
    None,
    /// transformers' `SiglipTokenizer`: its `canonicalize_text`, then SentencePiece's
    /// normaliser (see [`siglip_cleaning::SiglipCleaning`]).
    Siglip(siglip_cleaning::SiglipCleaning),
    /// open_clip's `clean_fn` (ftfy-style fixes, HTML unescaping, whitespace; see
    /// [`open_clip`]).
    OpenClip(open_clip_cleaning::Clean),
}

impl TextCleaning {
    /// The text the tokenizer pipeline sees.
    pub fn apply<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        match self {
            TextCleaning::None => std::borrow::Cow::Borrowed(text),
            TextCleaning::Siglip(cleaning) => std::borrow::Cow::Owned(cleaning.apply(text)),
            TextCleaning::OpenClip(clean) => std::borrow::Cow::Owned(clean.apply(text)),
        }
    }
}

#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// The same pipeline without truncation, made once, for counting tokens.
    untruncated: Tokenizer,
    context_length: usize,
    pad_id: u32,
    cleaning: TextCleaning,
    source: PathBuf,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("source", &self.source)
            .field("context_length", &self.context_length)
            .finish()
    }
}

impl TextTokenizer {
    /// Loads the tokenizer files of a checkpoint directory.
    pub fn from_dir(dir: &Path, context_length: usize) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Self::from_tokenizer_json(&json, context_length);
        }
        let vocab = dir.join("vocab.json");
        let merges = dir.join("merges.txt");
        if vocab.is_file() && merges.is_file() {
            return Self::from_vocab_and_merges(&vocab, &merges, context_length);
        }
        Err(ClipError::MissingFile {
            dir: dir.to_path_buf(),
            file: "tokenizer.json".into(),
            hint: "expected tokenizer.json, or vocab.json and merges.txt".into(),
        })
    }

    pub fn from_tokenizer_json(path: &Path, context_length: usize) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| ClipError::io(path, e))?;
        let inner = Tokenizer::from_bytes(&bytes).map_err(|e| ClipError::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::finish(inner, path, context_length)
    }

    /// Builds the CLIP pipeline around a BPE vocabulary, as transformers does for CLIP.
    pub fn from_vocab_and_merges(
        vocab_path: &Path,
        merges_path: &Path,
        context_length: usize,
    ) -> Result<Self> {
        let vocab_text =
            std::fs::read_to_string(vocab_path).map_err(|e| ClipError::io(vocab_path, e))?;
        let vocab: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&vocab_text).map_err(|source| ClipError::Json {
                path: vocab_path.to_path_buf(),
                source,
            })?;
        let merges_text =
            std::fs::read_to_string(merges_path).map_err(|e| ClipError::io(merges_path, e))?;
        let merges: Vec<&str> = merges_text
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
            .collect();
        let id_of = |token: &str| -> Result<u64> {
            vocab
                .get(token)
                .and_then(|v| v.as_u64())
                .ok_or_else(|| ClipError::Tokenizer {
                    path: vocab_path.to_path_buf(),
                    message: format!("the vocabulary has no `{token}` token"),
                })
        };
        let (bos, eos) = (id_of(START_OF_TEXT)?, id_of(END_OF_TEXT)?);
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [
                {"id": bos, "content": START_OF_TEXT, "single_word": false, "lstrip": false,
                 "rstrip": false, "normalized": false, "special": true},
                {"id": eos, "content": END_OF_TEXT, "single_word": false, "lstrip": false,
                 "rstrip": false, "normalized": false, "special": true}
            ],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "NFC"},
                {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
                {"type": "Lowercase"}
            ]},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": SPLIT_PATTERN},
                 "behavior": "Removed", "invert": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                 "use_regex": true}
            ]},
            "post_processor": {"type": "RobertaProcessing",
                "sep": [END_OF_TEXT, eos], "cls": [START_OF_TEXT, bos],
                "trim_offsets": false, "add_prefix_space": false},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                        "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": END_OF_TEXT,
                "continuing_subword_prefix": "", "end_of_word_suffix": "</w>",
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges}
        });
        let inner: Tokenizer = serde_json::from_value(spec).map_err(|e| ClipError::Tokenizer {
            path: merges_path.to_path_buf(),
            message: format!("cannot build the BPE model: {e}"),
        })?;
        Self::finish(inner, merges_path, context_length)
    }

    /// CLIP's pipeline: pads with `<|endoftext|>`, as transformers pads CLIP.
    fn finish(inner: Tokenizer, source: &Path, context_length: usize) -> Result<Self> {
        let pad_id = inner
            .token_to_id(END_OF_TEXT)
            .ok_or_else(|| ClipError::Tokenizer {
                path: source.to_path_buf(),
                message: format!("the vocabulary has no `{END_OF_TEXT}` token"),
            })?;
        Self::from_pipeline(inner, source, context_length, pad_id, TextCleaning::None)
    }

    /// Any family's tokenizer: `inner` (with its special tokens added by its post-processor)
    /// truncated to `context_length` ids, padded with `pad_id`, after `cleaning`. `source` is
    /// the file the pipeline came from, for errors.
    pub fn from_pipeline(
        mut inner: Tokenizer,
        source: &Path,
        context_length: usize,
        pad_id: u32,
        cleaning: TextCleaning,
    ) -> Result<Self> {
        let err = |message: String| ClipError::Tokenizer {
            path: source.to_path_buf(),
            message,
        };
        let mut untruncated = inner.clone();
        untruncated
            .with_truncation(None)
            .map_err(|e| err(e.to_string()))?;
        untruncated.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: context_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| err(e.to_string()))?;
        inner.with_padding(None);
        Ok(Self {
            inner,
            untruncated,
            context_length,
            pad_id,
            cleaning,
            source: source.to_path_buf(),
        })
    }

    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// The id the batches are padded with (`<|endoftext|>` for CLIP, as transformers pads it).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of one text with start/end tokens, truncated to the context length.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(self.cleaning.apply(text).as_ref(), true)
            .map_err(|e| ClipError::Tokenizer {
                path: self.source.clone(),
                message: format!("cannot encode {text:?}: {e}"),
            })?;
        Ok(encoding.get_ids().to_vec())
    }

    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        texts.iter().map(|t| self.encode(t)).collect()
    }

    /// Number of BPE tokens of `text` before truncation, special tokens excluded; tells a
    /// user how far over the context a prompt is.
    pub fn untruncated_len(&self, text: &str) -> Result<usize> {
        let encoding = self
            .untruncated
            .encode(self.cleaning.apply(text).as_ref(), false)
            .map_err(|e| ClipError::Tokenizer {
                path: self.source.clone(),
                message: format!("cannot encode {text:?}: {e}"),
            })?;
        Ok(encoding.len())
    }
}
