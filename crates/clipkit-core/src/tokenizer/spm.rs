//! A reader for the few fields of a SentencePiece `ModelProto` (`spiece.model`) that building
//! its tokenizer needs: the pieces with their scores and types, the unknown id, the model type
//! and the normalizer (its precompiled character map and whitespace flags).
//!
//! Hand-written rather than generated: five fields of a stable format do not justify a protobuf
//! toolchain. Every read is bounds-checked and a malformed file is an error, never a panic.

/// What [`SpmModel::parse`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct SpmModel {
    pub pieces: Vec<SpmPiece>,
    /// `TrainerSpec.model_type`: 1 unigram, 2 BPE, 3 word, 4 char.
    pub model_type: u64,
    pub unk_id: usize,
    pub byte_fallback: bool,
    pub normalizer: SpmNormalizer,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpmPiece {
    pub piece: String,
    pub score: f32,
    /// 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub kind: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpmNormalizer {
    pub name: String,
    pub precompiled_charsmap: Vec<u8>,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

pub const UNIGRAM: u64 = 1;

/// Protobuf's defaults for the fields read here (proto2 `[default = ...]` values).
impl Default for SpmNormalizer {
    fn default() -> Self {
        Self {
            name: String::new(),
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

/// One field of a message: its number and its value.
enum Value<'a> {
    Varint(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
    Other,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| format!("truncated varint at byte {}", self.pos))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.pos))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("field of {n} bytes runs past the end at byte {}", self.pos))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next `(field number, value)`, or `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let value = match tag & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Other
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|e| e.to_string())?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            wire => return Err(format!("unsupported wire type {wire} at byte {}", self.pos)),
        };
        Ok(Some((tag >> 3, value)))
    }
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
}

impl SpmModel {
    /// Parses a serialized `ModelProto`.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut model = SpmModel {
            pieces: Vec::new(),
            model_type: UNIGRAM,
            unk_id: 0,
            byte_fallback: false,
            normalizer: SpmNormalizer::default(),
        };
        let mut r = Reader::new(bytes);
        while let Some((field, value)) = r.field()? {
            match (field, value) {
                (1, Value::Bytes(b)) => model.pieces.push(parse_piece(b)?),
                (2, Value::Bytes(b)) => model.parse_trainer(b)?,
                (3, Value::Bytes(b)) => model.normalizer = parse_normalizer(b)?,
                _ => {}
            }
        }
        if model.pieces.is_empty() {
            return Err("no pieces (not a SentencePiece model)".into());
        }
        if model.unk_id >= model.pieces.len() {
            return Err(format!(
                "unk_id {} is outside the {} pieces",
                model.unk_id,
                model.pieces.len()
            ));
        }
        Ok(model)
    }

    fn parse_trainer(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut r = Reader::new(bytes);
        while let Some((field, value)) = r.field()? {
            match (field, value) {
                (3, Value::Varint(v)) => self.model_type = v,
                (40, Value::Varint(v)) => {
                    self.unk_id = usize::try_from(v).map_err(|e| e.to_string())?
                }
                (35, Value::Varint(v)) => self.byte_fallback = v != 0,
                _ => {}
            }
        }
        Ok(())
    }
}

fn parse_piece(bytes: &[u8]) -> Result<SpmPiece, String> {
    let mut piece = SpmPiece {
        piece: String::new(),
        score: 0.0,
        kind: 1,
    };
    let mut r = Reader::new(bytes);
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => piece.piece = utf8(b, "a piece")?,
            (2, Value::Fixed32(bits)) => piece.score = f32::from_bits(bits),
            (3, Value::Varint(v)) => piece.kind = v,
            _ => {}
        }
    }
    Ok(piece)
}

fn parse_normalizer(bytes: &[u8]) -> Result<SpmNormalizer, String> {
    let mut n = SpmNormalizer::default();
    let mut r = Reader::new(bytes);
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => n.name = utf8(b, "the normalizer name")?,
            (2, Value::Bytes(b)) => n.precompiled_charsmap = b.to_vec(),
            (3, Value::Varint(v)) => n.add_dummy_prefix = v != 0,
            (4, Value::Varint(v)) => n.remove_extra_whitespaces = v != 0,
            (5, Value::Varint(v)) => n.escape_whitespaces = v != 0,
            _ => {}
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spiece() -> Vec<u8> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/siglip/tiny-spm/spiece.model");
        std::fs::read(dir).unwrap()
    }

    #[test]
    fn reads_the_fixture_model() {
        let m = SpmModel::parse(&spiece()).unwrap();
        assert_eq!(m.model_type, UNIGRAM);
        assert_eq!(m.unk_id, 2);
        assert_eq!(m.pieces[1].piece, "</s>");
        assert_eq!(m.pieces[1].kind, 3);
        assert_eq!(m.pieces[3].piece, "▁");
        assert!(m.pieces[3].score < 0.0);
        assert_eq!(m.normalizer.name, "nmt_nfkc");
        assert!(m.normalizer.add_dummy_prefix && m.normalizer.remove_extra_whitespaces);
        assert!(m.normalizer.precompiled_charsmap.len() > 1000);
    }

    #[test]
    fn every_truncation_and_garbage_is_an_error_not_a_panic() {
        let bytes = spiece();
        for cut in [1, 2, 3, 7, 100, 5000, bytes.len() - 1] {
            // A cut inside a field is an error; a cut on a field boundary may parse.
            let _ = SpmModel::parse(&bytes[..cut]);
        }
        assert!(SpmModel::parse(&[]).is_err());
        assert!(SpmModel::parse(&[0x0a, 0xff]).is_err());
        assert!(SpmModel::parse(&[0xff; 12]).is_err());
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let n = (state % 64) as usize;
            let garbage: Vec<u8> = (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = SpmModel::parse(&garbage);
        }
    }

    /// The fixture with a few bytes overwritten, thousands of times: the reader and the
    /// character map it carries (a trie read by offsets from the file) must refuse or survive
    /// every variant, never panic or loop, and the normaliser must run on whatever map parses.
    #[test]
    fn mutated_models_and_char_maps_never_panic() {
        use super::super::spm_normalizer::{normalize_continuation, CharsMap, WhitespaceRules};
        let original = spiece();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let rules = WhitespaceRules {
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        };
        let mut parsed = 0;
        for _ in 0..1500 {
            let mut bytes = original.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            let Ok(model) = SpmModel::parse(&bytes) else {
                continue;
            };
            parsed += 1;
            if let Ok(map) = CharsMap::parse(&model.normalizer.precompiled_charsmap) {
                for text in [
                    "ﬁne  Ｆｕｌｌ width",
                    "Ａ\u{0301} ｶﾀｶﾅ 한국어",
                    "plain text",
                ] {
                    let _ = normalize_continuation(Some(&map), rules, text);
                }
            }
        }
        // Most single-byte changes land in scores or piece text and still parse: the loop
        // really exercised the normaliser on damaged maps.
        assert!(parsed > 100, "only {parsed} mutated models parsed");
    }
}
