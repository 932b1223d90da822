//! From embeddings to what users read: logits, probabilities, prompt ensembles.

use crate::error::{ClipError, Result};

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
    fn logits_scale_cosines() {
        let l = logits(&[vec![1.0, 0.0]], &[vec![0.6, 0.8], vec![1.0, 0.0]], 100.0);
        assert!((l[0][0] - 60.0).abs() < 1e-4 && (l[0][1] - 100.0).abs() < 1e-4);
    }
}
