use anyhow::Result;
use clipkit_core::scores;
use clipkit_eval::probe::Probe;
use serde_json::json;

use super::{embed_images, Outcome};
use crate::cli::{ClassifyArgs, Format};
use crate::output::{path_str, print_csv, print_json, print_table};
use crate::settings::{expand_images, load_model, Labels};

/// Turns an image embedding into one logit per class.
type Scorer = Box<dyn Fn(&[f32]) -> Vec<f32>>;

pub fn run(args: &ClassifyArgs) -> Result<Outcome> {
    let probe = args.probe.as_deref().map(Probe::load).transpose()?;
    // Either a saved probe or zero-shot labels decide the classes and score an embedding.
    let (labels, zero_shot) = match &probe {
        Some(p) => (p.classes.clone(), None),
        None => {
            let l = Labels::from_args(&args.labels)?;
            (l.labels.clone(), Some(l))
        }
    };
    let images = expand_images(&args.images)?;
    let clip = load_model(&args.model)?;
    let scorer: Scorer = match (probe, zero_shot) {
        (Some(p), _) => {
            if p.dim != clip.embedding_dim() {
                anyhow::bail!(
                    "the probe was fitted on {}-d embeddings ({}), this model gives {}",
                    p.dim,
                    p.model,
                    clip.embedding_dim()
                );
            }
            Box::new(move |e| p.logits(e))
        }
        (None, Some(zero_shot)) => {
            let label_embeddings = zero_shot.embed(&clip)?;
            let scale = clip.logit_scale();
            Box::new(move |e| scores::logits(&[e.to_vec()], &label_embeddings, scale).remove(0))
        }
        (None, None) => unreachable!("labels are parsed whenever there is no probe"),
    };
    let (embedded, failures) = embed_images(&clip, &images);

    // Per image: (label index, logit, prob), in label order or best first with --top-k.
    let mut results = Vec::new();
    for (path, embedding) in &embedded {
        let logits = scorer(embedding);
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

    match args.print.format {
        Format::Json => {
            let value: Vec<_> = results
                .iter()
                .map(|(path, scored)| {
                    json!({
                        "image": path_str(path),
                        "scores": scored.iter().map(|&(i, logit, prob)| json!({
                            "label": labels[i], "logit": logit, "prob": prob,
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
                    let image = if n == 0 || args.print.format == Format::Csv {
                        path_str(path)
                    } else {
                        String::new()
                    };
                    let prob = if args.print.format == Format::Csv {
                        format!("{prob}")
                    } else {
                        format!("{:.2}%", prob * 100.0)
                    };
                    let logit = if args.print.format == Format::Csv {
                        format!("{logit}")
                    } else {
                        format!("{logit:.3}")
                    };
                    rows.push(vec![image, labels[i].clone(), logit, prob]);
                }
            }
            let header = ["image", "label", "logit", "prob"];
            if args.print.format == Format::Csv {
                print_csv(&header, &rows)?;
            } else {
                print_table(&header, &rows);
            }
        }
    }
    Ok(Outcome::from_failures(failures))
}
