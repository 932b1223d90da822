//! [`PreprocessMode`]: which reference the pixels should match. One type for the library, the
//! command line (`--preprocess hf|openai`, with the `clap` feature) and collections, which
//! record it by its stable name so that a query is preprocessed as the stored images were.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which reference the pixels should match. Its names, `hf` and `openai`, are stable: they are
/// what `Display`, `FromStr` and serde use, and what collections store on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum PreprocessMode {
    /// transformers' PIL image processor (`CLIPProcessor` as most people ran it): RGB first
    /// (transparent pixels on white), resize, crop with the offset rounded down.
    #[default]
    #[serde(rename = "hf")]
    Transformers,
    /// OpenAI's `clip` package: resize in the file's own mode (premultiplied alpha, nearest
    /// neighbour for palette images), crop with the offset rounded half to even, then RGB
    /// (alpha dropped).
    #[serde(rename = "openai")]
    OpenAi,
}

impl PreprocessMode {
    pub const ALL: [Self; 2] = [Self::Transformers, Self::OpenAi];

    /// The stable name: `hf` or `openai`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Transformers => "hf",
            Self::OpenAi => "openai",
        }
    }

    /// One line for a command line's help (clap's style: no closing period).
    pub fn summary(self) -> &'static str {
        match self {
            Self::Transformers => {
                "transformers' CLIPProcessor (PIL path): RGB first, transparent pixels on white"
            }
            Self::OpenAi => {
                "OpenAI's original transform: resize in the file's mode, crop rounded half to even"
            }
        }
    }
}

impl fmt::Display for PreprocessMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a [`PreprocessMode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown preprocessing `{0}` (expected `hf` or `openai`)")]
pub struct UnknownPreprocessMode(pub String);

impl FromStr for PreprocessMode {
    type Err = UnknownPreprocessMode;

    /// `hf` or `openai`; `transformers` is accepted too, as an older name of `hf`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hf" | "transformers" => Ok(Self::Transformers),
            "openai" => Ok(Self::OpenAi),
            other => Err(UnknownPreprocessMode(other.to_owned())),
        }
    }
}

/// By hand rather than derived, so the values and their help are the stable names and
/// [`PreprocessMode::summary`], not the variant names and their longer docs.
#[cfg(feature = "clap")]
impl clap::ValueEnum for PreprocessMode {
    fn value_variants<'a>() -> &'a [Self] {
        &Self::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()).help(self.summary()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_display_from_str_and_serde() {
        for mode in PreprocessMode::ALL {
            assert_eq!(mode.to_string().parse::<PreprocessMode>(), Ok(mode));
            let json = serde_json::to_string(&mode).unwrap();
            assert_eq!(json, format!("\"{mode}\""));
            assert_eq!(serde_json::from_str::<PreprocessMode>(&json).unwrap(), mode);
        }
        assert_eq!(PreprocessMode::Transformers.to_string(), "hf");
        assert_eq!(PreprocessMode::OpenAi.to_string(), "openai");
        assert_eq!("transformers".parse(), Ok(PreprocessMode::Transformers));
        assert!("pil".parse::<PreprocessMode>().is_err());
    }
}
