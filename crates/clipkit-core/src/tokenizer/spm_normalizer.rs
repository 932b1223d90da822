//! SentencePiece's normaliser, as `normalizer.cc` runs it: at each position the longest match
//! of the remaining bytes in the precompiled character map (a darts-clone double array) is
//! replaced by its normalised form, else one character is copied; then (with
//! `remove_extra_whitespaces`) spaces at the start, in runs and at the end are dropped, and
//! spaces become `▁`.
//!
//! Why not the `tokenizers` crate's `Precompiled` normaliser: it looks characters up per
//! grapheme cluster (and only clusters under 6 bytes whole), so where SentencePiece's longest
//! byte match spans more or less than one cluster (Hangul jamo sequences, half-width kana with
//! voicing marks, combining marks) the two give different text, hence different ids.
//! Every array access is bounds-checked: a malformed map gives no match, never a panic.

/// A parsed `precompiled_charsmap`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharsMap {
    units: Vec<u32>,
    normalized: Vec<u8>,
}

/// The space symbol SentencePiece writes for a space.
const SPACE_SYMBOL: &str = "\u{2581}";

impl CharsMap {
    /// `[u32 trie size in bytes][trie units][normalised strings, NUL-terminated]`.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let head = bytes
            .get(..4)
            .ok_or("precompiled_charsmap shorter than its header")?;
        let trie_bytes = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if !trie_bytes.is_multiple_of(4) || trie_bytes == 0 {
            return Err(format!(
                "precompiled_charsmap trie size {trie_bytes} is not a positive multiple of 4"
            ));
        }
        let trie = bytes
            .get(4..4 + trie_bytes)
            .ok_or("precompiled_charsmap trie runs past its end")?;
        let units = trie
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Self {
            units,
            normalized: bytes[4 + trie_bytes..].to_vec(),
        })
    }

    /// The longest key that prefixes `key`: `(value, length in bytes)`.
    fn longest_prefix(&self, key: &[u8]) -> Option<(usize, usize)> {
        let unit = |pos: usize| self.units.get(pos).copied();
        let offset = |u: u32| ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize;
        let mut pos = offset(unit(0)?);
        let mut best = None;
        for (i, &c) in key.iter().enumerate() {
            if c == 0 {
                break;
            }
            pos ^= usize::from(c);
            let u = unit(pos)?;
            if (u & ((1 << 31) | 0xff)) != u32::from(c) {
                break;
            }
            pos ^= offset(u);
            if (u >> 8) & 1 == 1 {
                let value = (unit(pos)? & ((1 << 31) - 1)) as usize;
                best = Some((value, i + 1));
            }
        }
        best
    }

    /// The normalised form of the longest match at the start of `input` and the bytes it
    /// consumed; without a match, the first character as it is.
    fn prefix<'a>(&'a self, input: &'a str) -> (&'a str, usize) {
        if let Some((value, len)) = self.longest_prefix(input.as_bytes()) {
            let tail = self.normalized.get(value..).unwrap_or_default();
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            // A match ends on a character boundary in any well-formed map; if not, or if the
            // stored text is not UTF-8, the character is copied as it is.
            if input.is_char_boundary(len) {
                if let Ok(text) = std::str::from_utf8(&tail[..end]) {
                    return (text, len);
                }
            }
        }
        let len = input.chars().next().map_or(0, char::len_utf8);
        (&input[..len], len)
    }
}

/// The flags of `NormalizerSpec` this normaliser follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WhitespaceRules {
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

/// SentencePiece's normalisation of `text` when it follows a non-space character (transformers
/// encodes `"<unk>" + text` and drops `<unk>`'s tokens): no dummy prefix and no leading-space
/// removal here, the rest as `normalizer.cc`.
pub fn normalize_continuation(
    map: Option<&CharsMap>,
    rules: WhitespaceRules,
    text: &str,
) -> String {
    let space = if rules.escape_whitespaces {
        SPACE_SYMBOL
    } else {
        " "
    };
    let mut out = String::with_capacity(text.len() + 8);
    let mut prev_space = false;
    let mut input = text;
    while !input.is_empty() {
        let (mut piece, consumed) = match map {
            Some(map) => map.prefix(input),
            None => {
                let len = input.chars().next().map_or(0, char::len_utf8);
                (&input[..len], len)
            }
        };
        if rules.remove_extra_whitespaces && prev_space {
            piece = piece.trim_start_matches(' ');
        }
        if !piece.is_empty() {
            for c in piece.chars() {
                if c == ' ' {
                    out.push_str(space);
                } else {
                    out.push(c);
                }
            }
            prev_space = piece.ends_with(' ');
        }
        input = &input[consumed..];
        if !rules.remove_extra_whitespaces {
            prev_space = false;
        }
    }
    if rules.remove_extra_whitespaces {
        while let Some(rest) = out.strip_suffix(space) {
            out.truncate(rest.len());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_maps_are_errors_or_no_matches() {
        assert!(CharsMap::parse(&[]).is_err());
        assert!(CharsMap::parse(&[8, 0, 0, 0, 1]).is_err());
        assert!(CharsMap::parse(&[3, 0, 0, 0, 1, 2, 3]).is_err());
        // A trie whose offsets point anywhere: lookups find nothing, and nothing panics.
        let mut bytes = 16u32.to_le_bytes().to_vec();
        bytes.extend([0xff; 16]);
        let map = CharsMap::parse(&bytes).unwrap();
        let rules = WhitespaceRules {
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        };
        assert_eq!(normalize_continuation(Some(&map), rules, "a  b "), "a▁b");
    }
}
