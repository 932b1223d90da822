//! XLM-RoBERTa's tokenizer: `tokenizer.json` as transformers writes it for
//! `XLMRobertaTokenizer` (SentencePiece unigram, its precompiled normaliser, Metaspace
//! pre-tokenisation, `<s> … </s>`), run as-is; padding is `<pad>` (id 1 in XLM-R's fairseq
//! layout), which the tower masks.

use std::path::Path;

use tokenizers::Tokenizer;

use super::{TextCleaning, TextTokenizer};
use crate::error::{ClipError, Result};

/// XLM-R's padding token.
pub const PAD: &str = "<pad>";

impl TextTokenizer {
    /// The XLM-R `tokenizer.json` at `path`, truncated to `context_length` ids (`</s>` kept
    /// last, as transformers truncates), after `cleaning` (none for transformers; open_clip
    /// cleans whitespace first).
    pub fn xlm_roberta(path: &Path, context_length: usize, cleaning: TextCleaning) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| ClipError::io(path, e))?;
        let inner = Tokenizer::from_bytes(&bytes).map_err(|e| ClipError::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let pad_id = inner.token_to_id(PAD).ok_or_else(|| ClipError::Tokenizer {
            path: path.to_path_buf(),
            message: format!("the vocabulary has no `{PAD}` token (not an XLM-R tokenizer?)"),
        })?;
        Self::from_pipeline(inner, path, context_length, pad_id, cleaning)
    }
}
