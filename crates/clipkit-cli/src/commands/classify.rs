use anyhow::Result;
use clipkit_core::scores;
use serde_json::json;

use super::{embed_images, Outcome};
use crate::cli::{ClassifyArgs, Format};
use crate::output::{path_str, print_csv, print_json, print_table};
use crate::settings::{expand_images, load_model, Labels};

pub fn run(args: &ClassifyArgs) -> Result<Outcome> {
    let labels = Labels::from_args(&args.labels)?;
    if args.top_k == Some(0) {
        anyhow::bail!("--top-k must be at least 1");
    }
    let images = expand_images(&args.images)?;
    let clip = load_model(&args.model)?;
    let label_embeddings = labels.embed(&clip)?;
    let (embedded, failures) = embed_images(&clip, &images);

    // Per image: (label index, logit, prob), in label order or best first with --top-k.
    let mut results = Vec::new();
    for (path, embedding) in &embedded {
        let logits = scores::logits(
            std::slice::from_ref(embedding),
            &label_embeddings,
            clip.logit_scale(),
        )
        .remove(0);
        let probs = scores::softmax(&logits);
        let order: Vec<usize> = match args.top_k {
            Some(k) => scores::top_k(&probs, k),
            None => (0..logits.len()).collect(),
        };
        let scored: Vec<(usize, f32, f32)> = order
            .into_iter()
            .map(|i| (i, logits[i], probs[i]))
            .collect();
        results.push((path, scored));
    }

    match args.format {
        Format::Json => {
            let value: Vec<_> = results
                .iter()
                .map(|(path, scored)| {
                    json!({
                        "image": path_str(path),
                        "scores": scored.iter().map(|&(i, logit, prob)| json!({
                            "label": labels.labels[i], "logit": logit, "prob": prob,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            print_json(&json!(value))?;
        }
        Format::Table | Format::Csv => {
            let mut rows = Vec::new();
            for (path, scored) in &results {
                for (n, &(i, logit, prob)) in scored.iter().enumerate() {
                    let image = if n == 0 || args.format == Format::Csv {
                        path_str(path)
                    } else {
                        String::new()
                    };
                    let prob = if args.format == Format::Csv {
                        format!("{prob}")
                    } else {
                        format!("{:.2}%", prob * 100.0)
                    };
                    let logit = if args.format == Format::Csv {
                        format!("{logit}")
                    } else {
                        format!("{logit:.3}")
                    };
                    rows.push(vec![image, labels.labels[i].clone(), logit, prob]);
                }
            }
            let header = ["image", "label", "logit", "prob"];
            if args.format == Format::Csv {
                print_csv(&header, &rows)?;
            } else {
                print_table(&header, &rows);
            }
        }
    }
    Ok(Outcome::from_failures(failures))
}
