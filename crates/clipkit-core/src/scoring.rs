//! From embeddings to what users read: logits, probabilities, rankings, prompt ensembles.
//!
//! The command line and the HTTP server both score through [`classify`] and [`similarity`],
//! so a family's scoring head ([`Scoring`]) is applied in one place and the two can never
//! disagree on a number.

use crate::error::{ClipError, Result};

/// How a model family turns cosine similarities into logits and probabilities.
///
/// `logit_scale` is the factor itself (the checkpoint's `exp(logit_scale)`), not its log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scoring {
    /// CLIP: `logit = logit_scale · cos`; the probabilities are a softmax over the labels, so
    /// they compete and sum to one.
    Softmax { logit_scale: f32 },
    /// SigLIP: `logit = logit_scale · cos + logit_bias`; each probability is the sigmoid of its
    /// own logit, independent of the other labels.
    Sigmoid { logit_scale: f32, logit_bias: f32 },
}

impl Scoring {
    /// The factor cosines are multiplied by.
    pub fn logit_scale(&self) -> f32 {
        match *self {
            Scoring::Softmax { logit_scale } | Scoring::Sigmoid { logit_scale, .. } => logit_scale,
        }
    }

    /// The logit of one cosine similarity.
    pub fn logit(&self, cos: f32) -> f32 {
        match *self {
            Scoring::Softmax { logit_scale } => logit_scale * cos,
            Scoring::Sigmoid {
                logit_scale,
                logit_bias,
            } => logit_scale * cos + logit_bias,
        }
    }

    /// The logits of a row of cosine similarities.
    pub fn logits(&self, cos: &[f32]) -> Vec<f32> {
        cos.iter().map(|&c| self.logit(c)).collect()
    }

    /// The probabilities of one image's row of logits (over labels or texts).
    pub fn probabilities(&self, logits: &[f32]) -> Vec<f32> {
        match self {
            Scoring::Softmax { .. } => softmax(logits),
            Scoring::Sigmoid { .. } => logits.iter().map(|&l| sigmoid(l)).collect(),
        }
    }

    /// The name of the probability function (`softmax`, `sigmoid`), for labelling output.
    pub fn probability_name(&self) -> &'static str {
        match self {
            Scoring::Softmax { .. } => "softmax",
            Scoring::Sigmoid { .. } => "sigmoid",
        }
    }

    /// The bias added to every logit (SigLIP's `logit_bias`); `None` for a head without one.
    pub fn logit_bias(&self) -> Option<f32> {
        match *self {
            Scoring::Softmax { .. } => None,
            Scoring::Sigmoid { logit_bias, .. } => Some(logit_bias),
        }
    }

    /// What a chart's probability axis says, so that a reader knows whether the bars compete
    /// (softmax: they sum to one over the labels shown and hidden) or stand alone (sigmoid).
    pub fn probability_axis(&self) -> &'static str {
        match self {
            Scoring::Softmax { .. } => "probability (softmax over the labels)",
            Scoring::Sigmoid { .. } => "probability (sigmoid, each label on its own)",
        }
    }

    /// The same head with another factor for the cosines (CLIP_benchmark scores every model
    /// with 100): the family's probability function and bias are kept.
    pub fn with_logit_scale(&self, logit_scale: f32) -> Scoring {
        match *self {
            Scoring::Softmax { .. } => Scoring::Softmax { logit_scale },
            Scoring::Sigmoid { logit_bias, .. } => Scoring::Sigmoid {
                logit_scale,
                logit_bias,
            },
        }
    }
}

/// One label's score for one image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelScore {
    /// Index into the labels that were scored.
    pub label: usize,
    pub logit: f32,
    pub probability: f32,
}

/// Zero-shot classification: per image, one [`LabelScore`] per label, in label order, or the
/// `top_k` most probable best first. Embeddings are normalised, so dot products are cosines.
pub fn classify(
    images: &[Vec<f32>],
    labels: &[Vec<f32>],
    scoring: &Scoring,
    top_k: Option<usize>,
) -> Vec<Vec<LabelScore>> {
    images
        .iter()
        .map(|image| {
            let cos: Vec<f32> = labels.iter().map(|label| dot(image, label)).collect();
            rank(&scoring.logits(&cos), scoring, top_k)
        })
        .collect()
}

/// Scores one row of logits that did not come from cosines (a fitted linear probe's): its
/// probabilities under `scoring`, in label order or the `top_k` most probable best first.
pub fn rank(logits: &[f32], scoring: &Scoring, top_k: Option<usize>) -> Vec<LabelScore> {
    let probabilities = scoring.probabilities(logits);
    let order: Vec<usize> = match top_k {
        Some(k) => self::top_k(&probabilities, k),
        None => (0..logits.len()).collect(),
    };
    order
        .into_iter()
        .map(|i| LabelScore {
            label: i,
            logit: logits[i],
            probability: probabilities[i],
        })
        .collect()
}

/// Every image against every text: CLIP's `logits_per_image` and, per image, the
/// probabilities over the texts.
#[derive(Debug, Clone, PartialEq)]
pub struct Similarity {
    /// `cosines[i][j]` = cos(image i, text j).
    pub cosines: Vec<Vec<f32>>,
    /// `logits[i][j]`, the scoring head applied to `cosines[i][j]`.
    pub logits: Vec<Vec<f32>>,
    /// `probabilities[i]`: image i's logits through the probability function.
    pub probabilities: Vec<Vec<f32>>,
}

/// The [`Similarity`] of normalised image and text embeddings.
pub fn similarity(images: &[Vec<f32>], texts: &[Vec<f32>], scoring: &Scoring) -> Similarity {
    let cosines: Vec<Vec<f32>> = images
        .iter()
        .map(|i| texts.iter().map(|t| dot(i, t)).collect())
        .collect();
    let logits: Vec<Vec<f32>> = cosines.iter().map(|row| scoring.logits(row)).collect();
    let probabilities = logits
        .iter()
        .map(|row| scoring.probabilities(row))
        .collect();
    Similarity {
        cosines,
        logits,
        probabilities,
    }
}

/// The logistic function, computed on the side that cannot overflow.
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// `logits[i][j] = scale · cos(image_i, text_j)` for normalised embeddings: CLIP's
/// `logits_per_image`.
pub fn logits(images: &[Vec<f32>], texts: &[Vec<f32>], scale: f32) -> Vec<Vec<f32>> {
    images
        .iter()
        .map(|i| texts.iter().map(|t| scale * dot(i, t)).collect())
        .collect()
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The mean of normalised embeddings, renormalised: CLIP's prompt ensembling.
pub fn ensemble(embeddings: &[Vec<f32>]) -> Vec<f32> {
    let dim = embeddings.first().map_or(0, Vec::len);
    let mut mean = vec![0f32; dim];
    for e in embeddings {
        mean.iter_mut().zip(e).for_each(|(m, x)| *m += x);
    }
    mean.iter_mut().for_each(|m| *m /= embeddings.len() as f32);
    normalize(&mut mean);
    mean
}

/// Puts `label` into `template` at `{}` (or CLIP_benchmark's `{c}`).
pub fn apply_template(template: &str, label: &str) -> Result<String> {
    if template.contains("{}") {
        Ok(template.replace("{}", label))
    } else if template.contains("{c}") {
        Ok(template.replace("{c}", label))
    } else {
        Err(ClipError::BadTemplate {
            template: template.to_string(),
        })
    }
}

/// Indices of the `k` largest values, largest first (ties keep the earlier index first).
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_survives_large_logits() {
        let p = softmax(&[1000.0, 999.0, -1000.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((p[0] / p[1] - std::f32::consts::E).abs() < 1e-3);
        assert_eq!(p[2], 0.0);
    }

    #[test]
    fn ensemble_is_unit_length_mean_direction() {
        let e = ensemble(&[vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert!((e[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert!((e[1] - e[0]).abs() < 1e-7);
    }

    #[test]
    fn templates_and_top_k() {
        assert_eq!(
            apply_template("a photo of a {}.", "cat").unwrap(),
            "a photo of a cat."
        );
        assert_eq!(apply_template("a {c} photo", "dog").unwrap(), "a dog photo");
        assert!(apply_template("no placeholder", "x").is_err());
        assert_eq!(top_k(&[0.1, 0.7, 0.2, 0.7], 3), vec![1, 3, 2]);
    }

    #[test]
    fn softmax_head_matches_the_plain_functions() {
        let scoring = Scoring::Softmax { logit_scale: 100.0 };
        let images = [vec![1.0, 0.0], vec![0.0, 1.0]];
        let texts = [vec![0.6, 0.8], vec![1.0, 0.0], vec![0.0, 1.0]];
        let s = similarity(&images, &texts, &scoring);
        assert_eq!(s.logits, logits(&images, &texts, 100.0));
        assert_eq!(s.probabilities[1], softmax(&s.logits[1]));
        assert!((s.cosines[0][0] - 0.6).abs() < 1e-6);

        let ranked = classify(&images, &texts, &scoring, Some(2));
        assert_eq!(
            ranked[0].iter().map(|s| s.label).collect::<Vec<_>>(),
            [1, 0]
        );
        let all = classify(&images[..1], &texts, &scoring, None).remove(0);
        assert_eq!(all.iter().map(|s| s.label).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(all[1].logit, s.logits[0][1]);
        assert_eq!(all[1].probability, s.probabilities[0][1]);
        assert_eq!(scoring.probability_name(), "softmax");
    }

    #[test]
    fn sigmoid_head_scores_each_label_on_its_own() {
        let scoring = Scoring::Sigmoid {
            logit_scale: 10.0,
            logit_bias: -5.0,
        };
        assert_eq!(scoring.logits(&[0.5, 1.0]), [0.0, 5.0]);
        let p = scoring.probabilities(&[0.0, 5.0, -200.0, 200.0]);
        assert_eq!(p[0], 0.5);
        assert!((p[1] - 1.0 / (1.0 + (-5f32).exp())).abs() < 1e-7);
        assert!(p[2] >= 0.0 && p[2] < 1e-30 && p[3] == 1.0);
        assert_eq!(scoring.logit_scale(), 10.0);
        assert_eq!(scoring.probability_name(), "sigmoid");
        assert_eq!(scoring.logit_bias(), Some(-5.0));
        assert!(scoring.probability_axis().contains("sigmoid"));
    }

    #[test]
    fn sigmoid_probabilities_do_not_compete_and_need_not_sum_to_one() {
        let scoring = Scoring::Sigmoid {
            logit_scale: 10.0,
            logit_bias: -5.0,
        };
        let images = [vec![1.0, 0.0]];
        let texts = [vec![1.0, 0.0], vec![0.0, 1.0], vec![0.6, 0.8]];
        let s = similarity(&images, &texts, &scoring);
        // logits 10·cos − 5: 5, −5, 1; each probability is its own logit's sigmoid.
        for (got, want) in s.logits[0].iter().zip([5.0, -5.0, 1.0]) {
            assert!((got - want).abs() < 1e-5, "{:?}", s.logits[0]);
        }
        for (p, l) in s.probabilities[0].iter().zip(&s.logits[0]) {
            assert!((p - 1.0 / (1.0 + (-l).exp())).abs() < 1e-7);
        }
        assert!((s.probabilities[0].iter().sum::<f32>() - 1.0).abs() > 0.1);
        // Adding a label leaves the others' probabilities as they were (unlike softmax).
        let fewer = similarity(&images, &texts[..2], &scoring);
        assert_eq!(fewer.probabilities[0], s.probabilities[0][..2]);
        let softmax = Scoring::Softmax { logit_scale: 10.0 };
        let (all, two) = (
            similarity(&images, &texts, &softmax),
            similarity(&images, &texts[..2], &softmax),
        );
        assert_ne!(two.probabilities[0], all.probabilities[0][..2]);
        // Ranking: classify orders by probability, which for sigmoid is the logit order.
        let ranked = classify(&images, &texts, &scoring, Some(3)).remove(0);
        assert_eq!(
            ranked.iter().map(|r| r.label).collect::<Vec<_>>(),
            [0, 2, 1]
        );
        assert_eq!(ranked[1].probability, s.probabilities[0][2]);
    }

    #[test]
    fn a_new_scale_keeps_the_family_head() {
        let sigmoid = Scoring::Sigmoid {
            logit_scale: 117.0,
            logit_bias: -12.0,
        };
        assert_eq!(
            sigmoid.with_logit_scale(100.0),
            Scoring::Sigmoid {
                logit_scale: 100.0,
                logit_bias: -12.0
            }
        );
        let softmax = Scoring::Softmax { logit_scale: 100.0 }.with_logit_scale(1.0);
        assert_eq!(softmax, Scoring::Softmax { logit_scale: 1.0 });
        assert_eq!(softmax.logit_bias(), None);
        assert!(softmax.probability_axis().contains("softmax"));
    }

    #[test]
    fn logits_scale_cosines() {
        let l = logits(&[vec![1.0, 0.0]], &[vec![0.6, 0.8], vec![1.0, 0.0]], 100.0);
        assert!((l[0][0] - 60.0).abs() < 1e-4 && (l[0][1] - 100.0).abs() < 1e-4);
    }
}
