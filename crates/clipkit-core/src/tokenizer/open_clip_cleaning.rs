//! open_clip's text cleaning (`clean_fn`), apart from its tokenizer so that `TextCleaning`
//! can hold it without a module cycle.
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

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use tokenizers::normalizers::unicode::{NFC, NFKC};
use tokenizers::{NormalizedString, Normalizer};

use crate::error::{ClipError, Result};

/// Python's `html.entities.html5`: name (with or without `;`) and code points in hex.
const HTML5_ENTITIES: &str = include_str!("../../data/html5_entities.tsv");

/// open_clip's `clean` option (`text_cfg.tokenizer_kwargs.clean`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clean {
    /// ftfy + HTML unescape + whitespace collapsed + lower-cased (`lower`, the default).
    Lower,
    /// The same without lower-casing (`whitespace`; `HFTokenizer`'s default).
    Whitespace,
    /// ftfy + HTML unescape, then `_` to space, ASCII punctuation removed, lower-cased,
    /// whitespace collapsed (`canonicalize`).
    Canonicalize,
}

impl Clean {
    pub(crate) fn parse(name: &str, path: &Path) -> Result<Self> {
        match name {
            "lower" => Ok(Clean::Lower),
            "whitespace" => Ok(Clean::Whitespace),
            "canonicalize" => Ok(Clean::Canonicalize),
            other => Err(ClipError::config(
                path,
                "model_cfg.text_cfg.tokenizer_kwargs.clean",
                format!("`{other}` is not one of lower, whitespace, canonicalize"),
            )),
        }
    }

    /// open_clip's `clean_fn` on `text`.
    pub fn apply(self, text: &str) -> String {
        let text = html_unescape(&html_unescape(&fix_text(text)));
        let text = text.trim_matches(is_py_space);
        match self {
            Clean::Lower => collapse_whitespace(text).to_lowercase(),
            Clean::Whitespace => collapse_whitespace(text),
            Clean::Canonicalize => {
                let text: String = text
                    .replace('_', " ")
                    .chars()
                    .filter(|c| !c.is_ascii_punctuation())
                    .collect();
                collapse_whitespace(&text.to_lowercase())
            }
        }
    }
}

/// Python's `str.isspace` (what `str.split()` and `str.strip()` use).
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// `" ".join(text.split())`.
fn collapse_whitespace(text: &str) -> String {
    text.split(is_py_space)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn entities() -> &'static HashMap<&'static str, String> {
    static TABLE: OnceLock<HashMap<&'static str, String>> = OnceLock::new();
    TABLE.get_or_init(|| {
        HTML5_ENTITIES
            .lines()
            .filter_map(|line| {
                let (name, points) = line.split_once('\t')?;
                let value = points
                    .split(' ')
                    .filter_map(|h| u32::from_str_radix(h, 16).ok())
                    .filter_map(char::from_u32)
                    .collect();
                Some((name, value))
            })
            .collect()
    })
}

/// Windows-1252's characters for bytes 0x80–0x9F (`None`: undefined there).
const CP1252_HIGH: [Option<char>; 32] = [
    Some('€'),
    None,
    Some('‚'),
    Some('ƒ'),
    Some('„'),
    Some('…'),
    Some('†'),
    Some('‡'),
    Some('ˆ'),
    Some('‰'),
    Some('Š'),
    Some('‹'),
    Some('Œ'),
    None,
    Some('Ž'),
    None,
    None,
    Some('‘'),
    Some('’'),
    Some('“'),
    Some('”'),
    Some('•'),
    Some('–'),
    Some('—'),
    Some('˜'),
    Some('™'),
    Some('š'),
    Some('›'),
    Some('œ'),
    None,
    Some('ž'),
    None,
];

/// A numeric character reference as Python's `html.unescape` resolves it.
fn numeric_reference(n: u64) -> String {
    if n == 0 {
        return '\u{fffd}'.to_string();
    }
    if n == 0x0d {
        return "\r".into();
    }
    if (0x80..=0x9f).contains(&n) {
        if let Some(c) = CP1252_HIGH[(n - 0x80) as usize] {
            return c.to_string();
        }
    }
    if (0xd800..=0xdfff).contains(&n) || n > 0x10ffff {
        return '\u{fffd}'.to_string();
    }
    let invalid = (0x1..=0x8).contains(&n)
        || (0xe..=0x1f).contains(&n)
        || (0x7f..=0x9f).contains(&n)
        || (0xfdd0..=0xfdef).contains(&n)
        || n == 0xb
        || (n & 0xfffe) == 0xfffe;
    if invalid {
        return String::new();
    }
    char::from_u32(n as u32)
        .map(String::from)
        .unwrap_or_default()
}

/// Python's `html.unescape`.
pub fn html_unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let table = entities();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (replacement, used) = unescape_one(after, table);
        match replacement {
            Some(r) => {
                out.push_str(&r);
                rest = &after[used..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The reference after an `&`: its replacement and how many bytes of `s` it used.
fn unescape_one(s: &str, table: &HashMap<&str, String>) -> (Option<String>, usize) {
    if let Some(num) = s.strip_prefix('#') {
        let (hex, digits) = match num.strip_prefix(['x', 'X']) {
            Some(h) => (true, h),
            None => (false, num),
        };
        let len = digits
            .bytes()
            .take_while(|b| {
                if hex {
                    b.is_ascii_hexdigit()
                } else {
                    b.is_ascii_digit()
                }
            })
            .count();
        if len == 0 {
            return (None, 0);
        }
        let value = u64::from_str_radix(&digits[..len.min(16)], if hex { 16 } else { 10 })
            .unwrap_or(u64::MAX);
        let value = if len > 16 { u64::MAX } else { value };
        let mut used = 1 + usize::from(hex) + len;
        if s[used..].starts_with(';') {
            used += 1;
        }
        return (Some(numeric_reference(value)), used);
    }
    // Named: up to 32 characters other than tab, newline, form feed, space, <, &, #, ;.
    let name_len: usize = s
        .char_indices()
        .take_while(|&(_, c)| !matches!(c, '\t' | '\n' | '\x0c' | ' ' | '<' | '&' | '#' | ';'))
        .take(32)
        .map(|(_, c)| c.len_utf8())
        .sum();
    if name_len == 0 {
        return (None, 0);
    }
    let with_semicolon = s[name_len..].starts_with(';');
    let full = if with_semicolon {
        &s[..name_len + 1]
    } else {
        &s[..name_len]
    };
    if let Some(v) = table.get(full) {
        return (Some(v.clone()), full.len());
    }
    // The longest prefix that is an entity without `;` (`&ampx` → `&x`).
    let boundaries: Vec<usize> = full.char_indices().map(|(i, _)| i).skip(2).collect();
    for &end in boundaries.iter().rev() {
        if let Some(v) = table.get(&full[..end]) {
            return (Some(v.clone()), end);
        }
    }
    (None, 0)
}

/// ftfy's own HTML step: only `&…;` references of up to 24 letters or digits, named ones
/// from the HTML5 table, numeric ones as `html.unescape` reads them.
fn ftfy_unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let table = entities();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let hash = usize::from(after.starts_with('#'));
        let body = after[hash..]
            .bytes()
            .take_while(u8::is_ascii_alphanumeric)
            .count();
        let end = hash + body;
        if (1..=24).contains(&body) && after[end..].starts_with(';') {
            let entity = &after[..end + 1];
            let replaced = if hash == 1 {
                let r = html_unescape(&format!("&{entity}"));
                (!r.contains(';')).then_some(r)
            } else {
                table.get(entity).cloned()
            };
            if let Some(r) = replaced {
                out.push_str(&r);
                rest = &after[end + 1..];
                continue;
            }
        }
        out.push('&');
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The byte a character stands for when UTF-8 was read as Windows-1252 (or Latin-1, for
/// the C1 controls Windows-1252 leaves undefined).
fn as_cp1252_byte(c: char) -> Option<u8> {
    let n = c as u32;
    if n < 0x80 || (0xa0..=0xff).contains(&n) {
        return Some(n as u8);
    }
    if (0x80..=0x9f).contains(&n) {
        return Some(n as u8);
    }
    CP1252_HIGH
        .iter()
        .position(|&x| x == Some(c))
        .map(|i| 0x80 + i as u8)
}

/// Decodes runs of characters that are UTF-8 multi-byte sequences read as Windows-1252.
fn fix_mojibake(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let lead = as_cp1252_byte(chars[i]).filter(|b| (0xc2..=0xf4).contains(b));
        let need = match lead {
            Some(b) if b < 0xe0 => 1,
            Some(b) if b < 0xf0 => 2,
            Some(_) => 3,
            None => 0,
        };
        if need > 0 && i + need < chars.len() {
            let mut bytes = vec![lead.unwrap_or(0)];
            for &c in &chars[i + 1..=i + need] {
                match as_cp1252_byte(c) {
                    Some(b) if (0x80..=0xbf).contains(&b) => bytes.push(b),
                    _ => break,
                }
            }
            if bytes.len() == need + 1 {
                if let Ok(s) = std::str::from_utf8(&bytes) {
                    out.push_str(s);
                    i += need + 1;
                    continue;
                }
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

fn normalize(text: &str, nfkc: bool) -> String {
    let mut n = NormalizedString::from(text);
    let done = if nfkc {
        NFKC.normalize(&mut n)
    } else {
        NFC.normalize(&mut n)
    };
    match done {
        Ok(()) => n.get().to_string(),
        Err(_) => text.to_string(),
    }
}

fn ligature(c: char) -> Option<&'static str> {
    Some(match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "ʼn",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "DŽ",
        'ǅ' => "Dž",
        'ǆ' => "dž",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "ſt",
        'ﬆ' => "st",
        _ => return None,
    })
}

fn is_removed_control(c: char) -> bool {
    matches!(c as u32, 0x0..=0x8 | 0xb | 0xe..=0x1f | 0x7f | 0x206a..=0x206f | 0xfeff | 0xfff9..=0xfffc)
}

/// The character-level fixes after mojibake, in ftfy's order.
fn fix_chars(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let n = c as u32;
        // fix_c1_controls
        let c = if (0x80..=0x9f).contains(&n) {
            CP1252_HIGH[(n - 0x80) as usize].unwrap_or(c)
        } else {
            c
        };
        if let Some(l) = ligature(c) {
            out.push_str(l);
            continue;
        }
        // fix_character_width: U+3000 and the half/full-width forms.
        if c == '\u{3000}' {
            out.push(' ');
            continue;
        }
        if ('\u{ff01}'..='\u{ffef}').contains(&c) {
            out.push_str(&normalize(&c.to_string(), true));
            continue;
        }
        // uncurl_quotes
        if c == '\u{2bc}' || ('\u{2018}'..='\u{201b}').contains(&c) {
            out.push('\'');
            continue;
        }
        if ('\u{201c}'..='\u{201f}').contains(&c) {
            out.push('"');
            continue;
        }
        // fix_line_breaks
        if c == '\r' {
            if chars.peek() == Some(&'\n') {
                chars.next();
            }
            out.push('\n');
            continue;
        }
        if matches!(c, '\u{2028}' | '\u{2029}' | '\u{85}') {
            out.push('\n');
            continue;
        }
        // remove_terminal_escapes: ESC [ digits/semicolons letter
        if c == '\x1b' {
            let rest: String = chars.clone().collect();
            if let Some(body) = rest.strip_prefix('[') {
                let len = body
                    .bytes()
                    .take_while(|b| b.is_ascii_digit() || *b == b';')
                    .count();
                if body[len..].starts_with(|x: char| x.is_ascii_alphabetic()) {
                    for _ in 0..len + 2 {
                        chars.next();
                    }
                    continue;
                }
            }
        }
        if is_removed_control(c) {
            continue;
        }
        out.push(c);
    }
    out
}

/// `ftfy.fix_text` as far as implemented (module docs): one round of fixes, repeated until
/// nothing changes.
pub fn fix_text(text: &str) -> String {
    let unescape = !text.contains('<');
    let mut text = text.to_string();
    for _ in 0..16 {
        let before = text.clone();
        if unescape {
            text = ftfy_unescape(&text);
        }
        text = fix_mojibake(&text);
        text = fix_chars(&text);
        text = normalize(&text, false);
        if text == before {
            break;
        }
    }
    text
}
