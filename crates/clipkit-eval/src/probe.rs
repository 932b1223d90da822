//! Few-shot linear probes on CLIP image embeddings: multinomial logistic regression (the
//! objective of scikit-learn's `LogisticRegression`: `½‖W‖² + C·Σ log-loss`, intercept not
//! penalised) or the nearest class mean. A fitted probe is saved as JSON and used by
//! `clipkit classify --probe`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{EvalError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    LogisticRegression,
    NearestClassMean,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub kind: ProbeKind,
    pub classes: Vec<String>,
    /// `[class][dim]`.
    pub weights: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
    /// The checkpoint the embeddings came from, to catch a probe used with another model.
    pub model: String,
    pub dim: usize,
}

impl Probe {
    /// Class scores (logits for logistic regression, cosines for the class mean).
    pub fn scores(&self, embedding: &[f32]) -> Vec<f32> {
        self.weights
            .iter()
            .zip(&self.bias)
            .map(|(w, b)| w.iter().zip(embedding).map(|(x, y)| x * y).sum::<f32>() + b)
            .collect()
    }

    /// Scores on the logit scale users read: logistic-regression logits as they are, class-mean
    /// cosines times 100 (CLIP's scale), so a softmax gives sensible probabilities.
    pub fn logits(&self, embedding: &[f32]) -> Vec<f32> {
        let s = self.scores(embedding);
        match self.kind {
            ProbeKind::LogisticRegression => s,
            ProbeKind::NearestClassMean => s.into_iter().map(|v| 100.0 * v).collect(),
        }
    }

    pub fn predict(&self, embedding: &[f32]) -> usize {
        crate::metrics::argmax(&self.scores(embedding))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string(self).expect("a probe serialises");
        std::fs::write(path, text).map_err(|source| EvalError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let probe: Probe = serde_json::from_str(&text)
            .map_err(|e| EvalError::dataset(path, format!("not a clipkit probe: {e}")))?;
        if probe.weights.len() != probe.classes.len()
            || probe.bias.len() != probe.classes.len()
            || probe.weights.iter().any(|w| w.len() != probe.dim)
        {
            return Err(EvalError::dataset(
                path,
                "probe weights do not match its classes and dim",
            ));
        }
        Ok(probe)
    }
}

/// Class means of the (normalised) embeddings, renormalised; scores are cosines.
pub fn nearest_class_mean(x: &[Vec<f32>], y: &[usize], classes: &[String], model: &str) -> Probe {
    let dim = x.first().map_or(0, Vec::len);
    let mut weights = vec![vec![0f32; dim]; classes.len()];
    for (row, &label) in x.iter().zip(y) {
        weights[label]
            .iter_mut()
            .zip(row)
            .for_each(|(w, v)| *w += v);
    }
    for w in &mut weights {
        clipkit_core::scores::normalize(w);
    }
    Probe {
        kind: ProbeKind::NearestClassMean,
        bias: vec![0.0; classes.len()],
        classes: classes.to_vec(),
        weights,
        model: model.to_string(),
        dim,
    }
}

/// Multinomial logistic regression, fitted to convergence by gradient descent with
/// backtracking line search (the objective is strictly convex, so the optimum is the one
/// scikit-learn's lbfgs finds).
pub fn logistic_regression(
    x: &[Vec<f32>],
    y: &[usize],
    classes: &[String],
    c: f64,
    model: &str,
) -> Probe {
    let (n, k) = (x.len(), classes.len());
    let d = x.first().map_or(0, Vec::len);
    let xs: Vec<Vec<f64>> = x
        .iter()
        .map(|r| r.iter().map(|&v| f64::from(v)).collect())
        .collect();
    // Parameters: k rows of d weights, then k intercepts.
    let mut theta = vec![0f64; k * d + k];

    let objective = |theta: &[f64], grad: Option<&mut [f64]>| -> f64 {
        let (w, b) = theta.split_at(k * d);
        let mut loss = 0.5 * w.iter().map(|v| v * v).sum::<f64>();
        let mut g = grad;
        if let Some(g) = g.as_deref_mut() {
            g[..k * d].copy_from_slice(w);
            g[k * d..].iter_mut().for_each(|v| *v = 0.0);
        }
        for (row, &label) in xs.iter().zip(y) {
            let z: Vec<f64> = (0..k)
                .map(|j| {
                    b[j] + w[j * d..(j + 1) * d]
                        .iter()
                        .zip(row)
                        .map(|(a, v)| a * v)
                        .sum::<f64>()
                })
                .collect();
            let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
            let log_norm = max + sum.ln();
            loss += c * (log_norm - z[label]);
            if let Some(g) = g.as_deref_mut() {
                for j in 0..k {
                    let p = (z[j] - log_norm).exp() - if j == label { 1.0 } else { 0.0 };
                    for (gi, v) in g[j * d..(j + 1) * d].iter_mut().zip(row) {
                        *gi += c * p * v;
                    }
                    g[k * d + j] += c * p;
                }
            }
        }
        loss
    };

    let mut grad = vec![0f64; theta.len()];
    let mut value = objective(&theta, Some(&mut grad));
    let mut step = 1.0;
    for _ in 0..20_000 {
        let norm2: f64 = grad.iter().map(|g| g * g).sum();
        if norm2.sqrt() < 1e-9 * (1.0 + n as f64) {
            break;
        }
        // Armijo backtracking along the negative gradient.
        step *= 2.0;
        loop {
            let trial: Vec<f64> = theta.iter().zip(&grad).map(|(t, g)| t - step * g).collect();
            let v = objective(&trial, None);
            if v <= value - 0.5 * step * norm2 || step < 1e-12 {
                theta = trial;
                break;
            }
            step *= 0.5;
        }
        value = objective(&theta, Some(&mut grad));
    }
    let (w, b) = theta.split_at(k * d);
    Probe {
        kind: ProbeKind::LogisticRegression,
        classes: classes.to_vec(),
        weights: w
            .chunks(d.max(1))
            .map(|r| r.iter().map(|&v| v as f32).collect())
            .collect(),
        bias: b.iter().map(|&v| v as f32).collect(),
        model: model.to_string(),
        dim: d,
    }
}

/// The first `shots` items of each class (in dataset order) for training, the rest for
/// testing: deterministic, so runs and reference implementations agree.
pub fn few_shot_split(labels: &[usize], shots: usize) -> (Vec<usize>, Vec<usize>) {
    let mut seen = std::collections::HashMap::new();
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (i, &l) in labels.iter().enumerate() {
        let count = seen.entry(l).or_insert(0usize);
        if *count < shots {
            train.push(i);
        } else {
            test.push(i);
        }
        *count += 1;
    }
    (train, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_toy_problem_is_learned_and_round_trips() {
        let x = vec![
            vec![1.0, 0.0],
            vec![0.9, 0.1],
            vec![0.0, 1.0],
            vec![0.1, 0.9],
        ];
        let y = vec![0, 0, 1, 1];
        let classes = vec!["a".to_string(), "b".to_string()];
        let lr = logistic_regression(&x, &y, &classes, 1.0, "m");
        assert_eq!(x.iter().map(|r| lr.predict(r)).collect::<Vec<_>>(), y);
        let ncm = nearest_class_mean(&x, &y, &classes, "m");
        assert_eq!(x.iter().map(|r| ncm.predict(r)).collect::<Vec<_>>(), y);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        lr.save(&path).unwrap();
        assert_eq!(Probe::load(&path).unwrap(), lr);
    }

    #[test]
    fn split_takes_the_first_shots_of_each_class() {
        let (train, test) = few_shot_split(&[0, 0, 0, 1, 1, 1], 2);
        assert_eq!(train, vec![0, 1, 3, 4]);
        assert_eq!(test, vec![2, 5]);
    }
}
