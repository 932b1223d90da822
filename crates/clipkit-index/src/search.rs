//! Queries made of several parts: `"beach" - "people"` searches for beaches without people.
//! Each part is embedded, the positive ones added and the negative ones subtracted, and the
//! sum renormalised (rclip's `+`/`-` arithmetic), so a query is always one vector.

use crate::filter::Filter;
use crate::store::{Hit, Store};
use crate::{IndexError, Result};

/// Whether a query part pulls results towards it or pushes them away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sign {
    Plus,
    Minus,
}

/// Splits command-line words into signed parts: a lone `+` or `-` gives the next word its
/// sign; a word starting with `-` (quoted, e.g. `'-people'`) is negative too.
pub fn parse_terms(words: &[String]) -> Vec<(Sign, String)> {
    let mut out = Vec::new();
    let mut sign = Sign::Plus;
    for w in words {
        match w.as_str() {
            "+" => sign = Sign::Plus,
            "-" => sign = Sign::Minus,
            _ => {
                let (s, text) = match w.strip_prefix('-') {
                    Some(rest) if !rest.trim().is_empty() => (Sign::Minus, rest),
                    _ => (sign, w.strip_prefix('+').unwrap_or(w)),
                };
                let text = text.trim().trim_matches('"').trim();
                if !text.is_empty() {
                    out.push((s, text.to_owned()));
                }
                sign = Sign::Plus;
            }
        }
    }
    out
}

/// Splits one query string (a search box, an HTTP `q=`) into signed phrases: a lone `+` or
/// `-` between words starts a new part with that sign, and the words between them stay one
/// phrase, so `"a dog on a beach - people"` is `+"a dog on a beach"`, `-"people"`.
pub fn parse_query(query: &str) -> Vec<(Sign, String)> {
    let mut out = Vec::new();
    let mut sign = Sign::Plus;
    let mut phrase: Vec<&str> = Vec::new();
    let mut flush = |sign: Sign, phrase: &mut Vec<&str>| {
        if !phrase.is_empty() {
            out.push((sign, phrase.join(" ")));
            phrase.clear();
        }
    };
    for word in query.split_whitespace() {
        match word {
            "+" | "-" => {
                flush(sign, &mut phrase);
                sign = if word == "-" { Sign::Minus } else { Sign::Plus };
            }
            _ => phrase.push(word),
        }
    }
    flush(sign, &mut phrase);
    out
}

/// Combines signed query vectors (see [`combine`]) and searches: what `clipkit search` and
/// the HTTP search endpoints both run once their parts are embedded.
pub fn query(
    store: &dyn Store,
    parts: &[(Sign, Vec<f32>)],
    k: usize,
    threshold: Option<f32>,
    filter: &Filter,
) -> Result<Vec<Hit>> {
    let q = combine(parts)?;
    search(store, &q, k, threshold, filter)
}

/// Sum of the positive vectors minus the negative ones, renormalised.
pub fn combine(parts: &[(Sign, Vec<f32>)]) -> Result<Vec<f32>> {
    let Some((_, first)) = parts.first() else {
        return Err(IndexError::EmptyQuery);
    };
    if parts.iter().all(|(s, _)| *s == Sign::Minus) {
        return Err(IndexError::EmptyQuery);
    }
    let mut q = vec![0.0f32; first.len()];
    for (sign, v) in parts {
        let w = if *sign == Sign::Plus { 1.0 } else { -1.0 };
        for (a, b) in q.iter_mut().zip(v) {
            *a += w * b;
        }
    }
    clipkit_core::scores::normalize(&mut q);
    Ok(q)
}

/// The `k` best hits for one query vector among the entries `filter` lets through, keeping
/// only scores ≥ `threshold`.
pub fn search(
    store: &dyn Store,
    query: &[f32],
    k: usize,
    threshold: Option<f32>,
    filter: &Filter,
) -> Result<Vec<Hit>> {
    let mut hits = store
        .search(&[query.to_vec()], k, filter)?
        .pop()
        .unwrap_or_default();
    if let Some(t) = threshold {
        hits.retain(|h| h.score >= t);
    }
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_keep_phrases_together() {
        assert_eq!(
            parse_query("  a dog on a beach - people + sunset "),
            vec![
                (Sign::Plus, "a dog on a beach".to_owned()),
                (Sign::Minus, "people".to_owned()),
                (Sign::Plus, "sunset".to_owned()),
            ]
        );
        assert_eq!(
            parse_query("- people"),
            vec![(Sign::Minus, "people".to_owned())]
        );
        assert!(parse_query("  -  ").is_empty());
        // A hyphen inside a word is part of the word.
        assert_eq!(
            parse_query("t-shirt"),
            vec![(Sign::Plus, "t-shirt".to_owned())]
        );
    }

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_signs() {
        assert_eq!(
            parse_terms(&words(&["beach", "-", "people", "+", "sunset", "-crowd"])),
            vec![
                (Sign::Plus, "beach".into()),
                (Sign::Minus, "people".into()),
                (Sign::Plus, "sunset".into()),
                (Sign::Minus, "crowd".into())
            ]
        );
        assert_eq!(
            parse_terms(&words(&["a dog on a beach"])),
            vec![(Sign::Plus, "a dog on a beach".into())]
        );
    }

    #[test]
    fn combination_moves_away_from_negatives() {
        let q = combine(&[(Sign::Plus, vec![1.0, 0.0]), (Sign::Minus, vec![0.6, 0.8])]).unwrap();
        assert!((q.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(q[1] < 0.0);
        assert!(combine(&[(Sign::Minus, vec![1.0, 0.0])]).is_err());
        assert!(combine(&[]).is_err());
    }
}
