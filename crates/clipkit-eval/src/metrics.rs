//! Classification metrics as CLIP_benchmark reports them.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub top1: f64,
    /// `None` with fewer than five classes, where top-5 says nothing.
    pub top5: Option<f64>,
    /// Balanced accuracy: the mean over classes of each class's recall.
    pub mean_per_class_recall: f64,
    /// Recall of each class, in class order (`NaN`-free: classes without images get `None`).
    pub per_class_accuracy: Vec<Option<f64>>,
    /// `[true class][predicted class]` counts.
    pub confusion_matrix: Vec<Vec<usize>>,
}

/// Index of the largest value (the first on ties, as argmax does).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

/// Is `label` among the `k` highest logits?
fn in_top_k(logits: &[f32], label: usize, k: usize) -> bool {
    let target = logits[label];
    // Ranks the true class as torch.topk does for distinct values: count strictly larger.
    logits.iter().filter(|&&v| v > target).count() < k
}

pub fn compute(logits: &[Vec<f32>], labels: &[usize], classes: usize) -> Metrics {
    let n = labels.len().max(1) as f64;
    let mut confusion = vec![vec![0usize; classes]; classes];
    let mut top1 = 0usize;
    let mut top5 = 0usize;
    for (row, &label) in logits.iter().zip(labels) {
        let pred = argmax(row);
        confusion[label][pred] += 1;
        top1 += usize::from(pred == label);
        top5 += usize::from(in_top_k(row, label, 5));
    }
    let per_class: Vec<Option<f64>> = confusion
        .iter()
        .enumerate()
        .map(|(c, row)| {
            let total: usize = row.iter().sum();
            (total > 0).then(|| row[c] as f64 / total as f64)
        })
        .collect();
    let present: Vec<f64> = per_class.iter().flatten().copied().collect();
    Metrics {
        top1: top1 as f64 / n,
        top5: (classes >= 5).then(|| top5 as f64 / n),
        mean_per_class_recall: present.iter().sum::<f64>() / present.len().max(1) as f64,
        per_class_accuracy: per_class,
        confusion_matrix: confusion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_on_a_hand_made_example() {
        // 3 classes; class 0 has 2 images (1 right), class 1 has 1 (right), class 2 none.
        let logits = vec![
            vec![0.9, 0.1, 0.0],
            vec![0.1, 0.8, 0.1],
            vec![0.0, 1.0, 0.5],
        ];
        let m = compute(&logits, &[0, 0, 1], 3);
        assert!((m.top1 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.top5, None);
        assert_eq!(m.per_class_accuracy, vec![Some(0.5), Some(1.0), None]);
        assert!((m.mean_per_class_recall - 0.75).abs() < 1e-12);
        assert_eq!(
            m.confusion_matrix,
            vec![vec![1, 1, 0], vec![0, 1, 0], vec![0, 0, 0]]
        );
    }

    #[test]
    fn top5_counts_rank() {
        let row = vec![6.0, 5.0, 4.0, 3.0, 2.0, 1.0];
        assert!(in_top_k(&row, 4, 5));
        assert!(!in_top_k(&row, 5, 5));
        let m = compute(&[row], &[5], 6);
        assert_eq!(m.top5, Some(0.0));
    }
}
