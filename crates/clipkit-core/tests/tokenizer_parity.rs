//! Token ids equal transformers' on a corpus of 2,000+ strings (unicode, punctuation, numbers,
//! whitespace oddities, texts far beyond 77 tokens), for both ways a checkpoint can ship its
//! tokenizer.

mod common;

use clipkit_core::TextTokenizer;

fn corpus() -> Vec<(String, Vec<u32>)> {
    let json = common::read_json(&common::fixtures().join("reference/tokenizer_corpus.json"));
    json.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let ids = e["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32);
            (e["text"].as_str().unwrap().to_string(), ids.collect())
        })
        .collect()
}

fn check(tokenizer: &TextTokenizer) {
    let corpus = corpus();
    assert!(corpus.len() >= 1000);
    assert!(corpus.iter().filter(|(_, ids)| ids.len() == 77).count() >= 30);
    let mut mismatches = Vec::new();
    for (text, expected) in &corpus {
        let got = tokenizer.encode(text).unwrap();
        if &got != expected {
            mismatches.push(format!(
                "{text:?}\n  expected {expected:?}\n  got      {got:?}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} differ, first ones:\n{}",
        mismatches.len(),
        corpus.len(),
        mismatches[..mismatches.len().min(5)].join("\n")
    );
}

#[test]
fn tokenizer_json_matches_transformers() {
    let dir = common::fixtures().join("tokenizer");
    check(&TextTokenizer::from_tokenizer_json(&dir.join("tokenizer.json"), 77).unwrap());
}

#[test]
fn vocab_and_merges_match_transformers() {
    let dir = common::fixtures().join("tokenizer");
    check(
        &TextTokenizer::from_vocab_and_merges(&dir.join("vocab.json"), &dir.join("merges.txt"), 77)
            .unwrap(),
    );
}

#[test]
fn long_text_is_truncated_with_end_token_last() {
    let dir = common::fixtures().join("tokenizer");
    let tok = TextTokenizer::from_dir(&dir, 77).unwrap();
    let text = "photo ".repeat(200);
    let ids = tok.encode(&text).unwrap();
    assert_eq!(ids.len(), 77);
    assert_eq!(ids[0], 49406);
    assert_eq!(ids[76], 49407);
    assert_eq!(tok.untruncated_len(&text).unwrap(), 200);
    assert_eq!(
        tok.encode("a photo of a cat").unwrap(),
        [49406, 320, 1125, 539, 320, 2368, 49407]
    );
}

#[test]
fn missing_tokenizer_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = TextTokenizer::from_dir(dir.path(), 77)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    std::fs::write(dir.path().join("tokenizer.json"), b"{not json").unwrap();
    let err = TextTokenizer::from_dir(dir.path(), 77)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("tokenizer"),
        "{err}"
    );
}
