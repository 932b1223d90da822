//! The text cleaning transformers' `SiglipTokenizer` does in Python before SentencePiece's
//! unigram model runs ([`SiglipCleaning`]), kept apart from the tokenizer's loading so that
//! `TextCleaning` can name it without a module cycle.

use std::sync::Arc;

use super::spm_normalizer::{normalize_continuation, CharsMap, WhitespaceRules};

/// `SiglipTokenizer.canonicalize_text` on one piece of text between special tokens:
/// lower-cased if asked, Python's `string.punctuation` removed, every run of whitespace
/// (Python's `\s`) one space, `strip()`ped. (`▁` is not whitespace: a piece that starts with
/// the `▁` transformers prepends keeps the space after it.)
pub fn canonicalize(text: &str, lowercase: bool) -> String {
    let lowered = if lowercase {
        text.to_lowercase()
    } else {
        text.to_string()
    };
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
        if in_space && !out.is_empty() {
            out.push(' ');
        }
        in_space = false;
        out.push(c);
    }
    out
}

/// What `SiglipTokenizer` does to a text before SentencePiece's unigram model, as text the
/// `tokenizers` pipeline then splits at each `▁` and at the special tokens:
/// 1. `▁` + the text (with its own `▁` made spaces), split at the special tokens' literal
///    text (`</s>`, `<unk>`), which stay as they are;
/// 2. every other piece [`canonicalize`]d, then normalised as SentencePiece does it after
///    `<unk>` ([`normalize_continuation`]: transformers encodes `"<unk>" + piece` and drops
///    `<unk>`'s tokens);
/// 3. a literal end token at the very end dropped, because transformers then does not append
///    a second one (the pipeline's post-processor appends exactly one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiglipCleaning {
    pub lowercase: bool,
    pub map: Option<Arc<CharsMap>>,
    pub rules: WhitespaceRules,
    /// The special tokens' text, longest first; the first of `eos` is the end token.
    pub specials: Vec<String>,
    pub eos: String,
}

impl SiglipCleaning {
    pub fn apply(&self, text: &str) -> String {
        let mut full = String::with_capacity(text.len() + 3);
        full.push('▁');
        full.extend(text.chars().map(|c| if c == '▁' { ' ' } else { c }));
        let mut out = String::with_capacity(full.len() + 8);
        let mut rest = full.as_str();
        let mut piece_start = 0;
        let mut i = 0;
        while i < rest.len() {
            let special = self
                .specials
                .iter()
                .find(|s| !s.is_empty() && rest[i..].starts_with(s.as_str()));
            match special {
                Some(special) => {
                    self.push_piece(&mut out, &rest[piece_start..i]);
                    out.push_str(special);
                    rest = &rest[i + special.len()..];
                    piece_start = 0;
                    i = 0;
                }
                None => i += rest[i..].chars().next().map_or(1, char::len_utf8),
            }
        }
        self.push_piece(&mut out, &rest[piece_start..]);
        if let Some(kept) = out.strip_suffix(self.eos.as_str()) {
            out.truncate(kept.len());
        }
        out
    }

    fn push_piece(&self, out: &mut String, piece: &str) {
        if piece.is_empty() {
            return;
        }
        out.push_str(&normalize_continuation(
            self.map.as_deref(),
            self.rules,
            &canonicalize(piece, self.lowercase),
        ));
    }
}

/// Python's `str.isspace` (what `re`'s `\s` matches in a `str` pattern): Unicode's White_Space
/// plus the information separators U+001C..U+001F.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalize_is_siglips() {
        assert_eq!(
            canonicalize("▁A Photo, of a CAT!", true),
            "▁a photo of a cat"
        );
        assert_eq!(canonicalize("▁", true), "▁");
        assert_eq!(canonicalize("▁  x\t\ny  ", true), "▁ x y");
        assert_eq!(canonicalize("  b ", true), "b");
        assert_eq!(canonicalize("Keep Case", false), "Keep Case");
        assert_eq!(canonicalize("a\u{1c}b", true), "a b");
    }

    #[test]
    fn special_tokens_split_the_text_and_a_final_end_token_is_not_doubled() {
        let c = SiglipCleaning {
            lowercase: true,
            map: None,
            rules: WhitespaceRules {
                remove_extra_whitespaces: true,
                escape_whitespaces: true,
            },
            specials: vec!["<unk>".into(), "</s>".into()],
            eos: "</s>".into(),
        };
        assert_eq!(c.apply("A </s> b"), "▁a</s>b");
        assert_eq!(c.apply("</s>"), "");
        assert_eq!(c.apply("x <unk>!"), "▁x<unk>");
        assert_eq!(c.apply("a▁b"), "▁a▁b");
    }
}
