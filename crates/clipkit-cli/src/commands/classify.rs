use anyhow::Result;
use clipkit_core::scoring::{self, LabelScore, Scoring};
use clipkit_eval::probe::Probe;
use serde_json::json;

use super::{embed_images, Outcome};
use crate::cli::{ClassifyArgs, Format};
use crate::output::{path_str, print_csv, print_json, print_table};
use crate::settings::{expand_images, load_model, Labels};

/// Turns an image embedding into one score per class, in label order or best first.
type Scorer = Box<dyn Fn(&[f32], Option<usize>) -> Vec<LabelScore>>;

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
    // A probe is a softmax classifier over its own logits: no cosine scale applies. Zero-shot
    // labels are scored by the family's head (CLIP's softmax, SigLIP's sigmoid).
    let head = match probe {
        Some(_) => Scoring::Softmax { logit_scale: 1.0 },
        None => clip.scoring(),
    };
    let probability = head.probability_name();
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
            Box::new(move |e, top_k| scoring::rank(&p.logits(e), &head, top_k))
        }
        (None, Some(zero_shot)) => {
            let label_embeddings = zero_shot.embed(&clip)?;
            Box::new(move |e, top_k| {
                scoring::classify(&[e.to_vec()], &label_embeddings, &head, top_k).remove(0)
            })
        }
        (None, None) => unreachable!("labels are parsed whenever there is no probe"),
    };
    let (embedded, failures) = embed_images(&clip, &images);

    // Per image: (label index, logit, prob), in label order or best first with --top-k.
    let mut results = Vec::new();
    for (path, embedding) in &embedded {
        let scored: Vec<(usize, f32, f32)> = scorer(embedding, args.top_k)
            .into_iter()
            .map(|s| (s.label, s.logit, s.probability))
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
                        "probability": probability,
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
                    let mut row = vec![image, labels[i].clone(), logit, prob];
                    if args.print.format == Format::Csv {
                        row.push(probability.to_owned());
                    }
                    rows.push(row);
                }
            }
            if args.print.format == Format::Csv {
                print_csv(&["image", "label", "logit", "prob", "probability"], &rows)?;
            } else {
                let prob = format!("prob ({probability})");
                print_table(&["image", "label", "logit", prob.as_str()], &rows);
            }
        }
    }
    Ok(Outcome::from_failures(failures))
}
