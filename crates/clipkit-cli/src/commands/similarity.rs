use anyhow::Result;
use clipkit_core::scoring;
use serde_json::json;

use super::{embed_images, Outcome};
use crate::cli::{Format, SimilarityArgs};
use crate::output::{path_str, print_csv, print_json, print_table};
use crate::settings::{expand_images, load_model, warn_truncated};

pub fn run(args: &SimilarityArgs) -> Result<Outcome> {
    let images = expand_images(&args.images)?;
    let clip = load_model(&args.model)?;
    let texts: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    warn_truncated(&clip, texts.iter().copied())?;
    let text_embeddings = clip.embed_texts(&texts)?;
    let (embedded, failures) = embed_images(&clip, &images);
    let image_embeddings: Vec<Vec<f32>> = embedded.iter().map(|(_, e)| e.clone()).collect();
    let head = clip.scoring();
    let scoring::Similarity {
        logits,
        probabilities: probs,
        ..
    } = scoring::similarity(&image_embeddings, &text_embeddings, &head);

    match args.print.format {
        Format::Json => print_json(&json!({
            "images": embedded.iter().map(|(p, _)| path_str(p)).collect::<Vec<_>>(),
            "texts": texts,
            "logit_scale": head.logit_scale(),
            "logit_bias": head.logit_bias(),
            "probability": head.probability_name(),
            "logits_per_image": logits,
            "probs_per_image": probs,
        }))?,
        Format::Csv => {
            let mut rows = Vec::new();
            for ((path, _), (row, prow)) in embedded.iter().zip(logits.iter().zip(&probs)) {
                for ((text, logit), prob) in texts.iter().zip(row).zip(prow) {
                    rows.push(vec![
                        path_str(path),
                        text.to_string(),
                        logit.to_string(),
                        prob.to_string(),
                        head.probability_name().to_owned(),
                    ]);
                }
            }
            print_csv(&["image", "text", "logit", "prob", "probability"], &rows)?;
        }
        Format::Table => {
            let mut header = vec!["image"];
            header.extend(texts.iter().copied());
            let rows: Vec<Vec<String>> = embedded
                .iter()
                .zip(&logits)
                .map(|((path, _), row)| {
                    let mut cells = vec![path_str(path)];
                    cells.extend(row.iter().map(|l| format!("{l:.3}")));
                    cells
                })
                .collect();
            print_table(&header, &rows);
        }
    }
    Ok(Outcome::from_failures(failures))
}
