//! Evaluation metrics: per-class precision (positive predictivity), recall (sensitivity) and
//! F1, macro-F1 over the scored classes (the CinC 2017 score over N, A, O), one-vs-rest AUROC
//! and expected calibration error; the same for any subgroup of rows.

use serde::{Deserialize, Serialize};

/// Metrics of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Class name.
    pub class: String,
    /// Rows of this class.
    pub support: u64,
    /// Precision = positive predictivity (+P); null when nothing was predicted as this class.
    pub precision: Option<f64>,
    /// Recall = sensitivity (Se); null without rows of this class.
    pub recall: Option<f64>,
    /// F1 (0 when precision or recall is undefined but the class has rows or predictions).
    pub f1: Option<f64>,
    /// One-vs-rest AUROC; null when the rows hold only one side.
    pub auroc: Option<f64>,
}

/// Metrics of a set of rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Rows.
    pub n: u64,
    /// Accuracy.
    pub accuracy: f64,
    /// Mean F1 over the scored classes that have rows or predictions here.
    pub macro_f1: Option<f64>,
    /// Expected calibration error (15 equal-width bins of the top probability).
    pub ece: f64,
    /// Per class, in class order.
    pub classes: Vec<ClassMetrics>,
    /// Confusion matrix: `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

/// Ranks with ties averaged (1-based).
fn average_ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            ranks[k] = r;
        }
        i = j + 1;
    }
    ranks
}

/// One-vs-rest AUROC of `scores` for `positive` rows (Mann–Whitney U with ties averaged).
pub(crate) fn auroc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let n_pos = positive.iter().filter(|&&p| p).count() as f64;
    let n_neg = positive.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return None;
    }
    let ranks = average_ranks(scores);
    let sum: f64 = ranks
        .iter()
        .zip(positive)
        .filter(|(_, p)| **p)
        .map(|(r, _)| r)
        .sum();
    Some((sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg))
}

/// Expected calibration error over `bins` equal-width bins of the top probability.
pub(crate) fn ece(top_prob: &[f64], correct: &[bool], bins: usize) -> f64 {
    if top_prob.is_empty() {
        return 0.0;
    }
    let mut n = vec![0f64; bins];
    let mut conf = vec![0f64; bins];
    let mut acc = vec![0f64; bins];
    for (&p, &c) in top_prob.iter().zip(correct) {
        let b = ((p * bins as f64) as usize).min(bins - 1);
        n[b] += 1.0;
        conf[b] += p;
        acc[b] += f64::from(u8::from(c));
    }
    let total = top_prob.len() as f64;
    (0..bins)
        .filter(|&b| n[b] > 0.0)
        .map(|b| (n[b] / total) * ((acc[b] - conf[b]) / n[b]).abs())
        .sum()
}

/// Metrics of rows with true classes `y`, predicted probabilities `probs` (row-major,
/// `classes.len()` per row); macro-F1 averages the classes named in `scored`.
pub(crate) fn evaluate(
    y: &[usize],
    probs: &[f32],
    classes: &[String],
    scored: &[String],
) -> Report {
    let k = classes.len();
    let n = y.len();
    let mut confusion = vec![vec![0u64; k]; k];
    let mut top = Vec::with_capacity(n);
    let mut correct = Vec::with_capacity(n);
    for (i, &t) in y.iter().enumerate() {
        let p = &probs[i * k..(i + 1) * k];
        let (pred, &pmax) = p
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap_or((0, &0.0));
        confusion[t.min(k - 1)][pred] += 1;
        top.push(pmax as f64);
        correct.push(pred == t);
    }
    let mut out = class_metrics(&confusion, classes);
    for (c, m) in out.iter_mut().enumerate() {
        let scores: Vec<f64> = (0..n).map(|i| probs[i * k + c] as f64).collect();
        let pos: Vec<bool> = y.iter().map(|&t| t == c).collect();
        m.auroc = auroc(&scores, &pos);
    }
    Report {
        n: n as u64,
        accuracy: if n == 0 {
            0.0
        } else {
            correct.iter().filter(|&&c| c).count() as f64 / n as f64
        },
        macro_f1: macro_f1(&out, scored),
        ece: ece(&top, &correct, 15),
        classes: out,
        confusion,
    }
}

/// Precision, recall and F1 of each class from a confusion matrix (`confusion[true][pred]`);
/// AUROC is left empty (it needs the scores).
fn class_metrics(confusion: &[Vec<u64>], classes: &[String]) -> Vec<ClassMetrics> {
    let k = classes.len();
    (0..k)
        .map(|c| {
            let tp = confusion[c][c] as f64;
            let support: u64 = confusion[c].iter().sum();
            let predicted: u64 = (0..k).map(|t| confusion[t][c]).sum();
            let precision = (predicted > 0).then(|| tp / predicted as f64);
            let recall = (support > 0).then(|| tp / support as f64);
            let f1 = if support == 0 && predicted == 0 {
                None
            } else {
                let (p, r) = (precision.unwrap_or(0.0), recall.unwrap_or(0.0));
                Some(if p + r > 0.0 {
                    2.0 * p * r / (p + r)
                } else {
                    0.0
                })
            };
            ClassMetrics {
                class: classes[c].clone(),
                support,
                precision,
                recall,
                f1,
                auroc: None,
            }
        })
        .collect()
}

/// Mean F1 over the scored classes that have one.
fn macro_f1(out: &[ClassMetrics], scored: &[String]) -> Option<f64> {
    let f1s: Vec<f64> = out
        .iter()
        .filter(|m| scored.contains(&m.class))
        .filter_map(|m| m.f1)
        .collect();
    (!f1s.is_empty()).then(|| f1s.iter().sum::<f64>() / f1s.len() as f64)
}

/// The report of the rows of several reports together (sites scored apart): confusion matrices
/// summed, precision, recall, F1 and accuracy from the sum, ECE the row-weighted mean of
/// theirs, AUROC left empty (it needs every row's scores).
pub(crate) fn pooled(reports: &[&Report], classes: &[String], scored: &[String]) -> Report {
    let k = classes.len();
    let mut confusion = vec![vec![0u64; k]; k];
    for r in reports {
        for (row, theirs) in confusion.iter_mut().zip(&r.confusion) {
            for (a, b) in row.iter_mut().zip(theirs) {
                *a += b;
            }
        }
    }
    let n: u64 = reports.iter().map(|r| r.n).sum();
    let right: u64 = (0..k).map(|c| confusion[c][c]).sum();
    let out = class_metrics(&confusion, classes);
    Report {
        n,
        accuracy: if n == 0 { 0.0 } else { right as f64 / n as f64 },
        macro_f1: macro_f1(&out, scored),
        ece: if n == 0 {
            0.0
        } else {
            reports.iter().map(|r| r.ece * r.n as f64).sum::<f64>() / n as f64
        },
        classes: out,
        confusion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f1_auroc_and_ece_match_hand_computed_values() {
        let classes: Vec<String> = ["N", "A", "O"].iter().map(|s| s.to_string()).collect();
        // true:  N N N A A O ; predicted: N N A A O O
        let y = [0, 0, 0, 1, 1, 2];
        let p = [
            [0.8, 0.1, 0.1],
            [0.6, 0.3, 0.1],
            [0.3, 0.6, 0.1],
            [0.2, 0.7, 0.1],
            [0.1, 0.4, 0.5],
            [0.1, 0.1, 0.8],
        ];
        let flat: Vec<f32> = p.iter().flatten().map(|&v| v as f32).collect();
        let r = evaluate(&y, &flat, &classes, &classes);
        assert_eq!(
            r.confusion,
            vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]
        );
        // N: P 2/2, R 2/3, F1 0.8; A: P 1/2, R 1/2, F1 0.5; O: P 1/2, R 1, F1 2/3.
        let f1: Vec<f64> = r.classes.iter().map(|c| c.f1.unwrap()).collect();
        for (a, b) in f1.iter().zip([0.8, 0.5, 2.0 / 3.0]) {
            assert!((a - b).abs() < 1e-12);
        }
        assert!((r.macro_f1.unwrap() - (0.8 + 0.5 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert!((r.accuracy - 4.0 / 6.0).abs() < 1e-12);
        // AUROC of N: positives {0.8, 0.6, 0.3}, negatives {0.2, 0.1, 0.1}: all 9 pairs right.
        assert_eq!(r.classes[0].auroc, Some(1.0));
        // AUROC of A: positives {0.7, 0.4}, negatives {0.1, 0.3, 0.6, 0.1}: 4 + 3 = 7 of 8.
        assert!((r.classes[1].auroc.unwrap() - 7.0 / 8.0).abs() < 1e-6);
        // Ties count one half.
        assert_eq!(auroc(&[0.5, 0.5], &[true, false]), Some(0.5));
        assert_eq!(auroc(&[0.5, 0.5], &[true, true]), None);
        // ECE: bins of 0.8 (2 rows, both right: |1-0.8|), 0.6 (2 rows, 1 right: |0.5-0.6|),
        // 0.7 (1 right), 0.5 (1 wrong).
        let e = 2.0 / 6.0 * 0.2 + 2.0 / 6.0 * 0.1 + 1.0 / 6.0 * 0.3 + 1.0 / 6.0 * 0.5;
        assert!((r.ece - e).abs() < 1e-6, "{} vs {e}", r.ece);
        // Scored subset: N and A only.
        let r2 = evaluate(&y, &flat, &classes, &classes[..2]);
        assert!((r2.macro_f1.unwrap() - 0.65).abs() < 1e-12);
    }

    #[test]
    fn pooled_reports_equal_the_report_of_all_rows() {
        let classes: Vec<String> = ["N", "A", "O"].iter().map(|s| s.to_string()).collect();
        let y = [0, 0, 0, 1, 1, 2, 2, 1];
        let p: Vec<f32> = [
            [0.8, 0.1, 0.1],
            [0.6, 0.3, 0.1],
            [0.3, 0.6, 0.1],
            [0.2, 0.7, 0.1],
            [0.1, 0.4, 0.5],
            [0.1, 0.1, 0.8],
            [0.5, 0.2, 0.3],
            [0.1, 0.8, 0.1],
        ]
        .iter()
        .flatten()
        .map(|&v| v as f32)
        .collect();
        let all = evaluate(&y, &p, &classes, &classes);
        let a = evaluate(&y[..5], &p[..15], &classes, &classes);
        let b = evaluate(&y[5..], &p[15..], &classes, &classes);
        let pooled = pooled(&[&a, &b], &classes, &classes);
        assert_eq!(pooled.confusion, all.confusion);
        assert_eq!(pooled.n, 8);
        assert_eq!(pooled.macro_f1, all.macro_f1);
        assert_eq!(pooled.accuracy, all.accuracy);
        for (x, z) in pooled.classes.iter().zip(&all.classes) {
            assert_eq!((x.precision, x.recall, x.f1), (z.precision, z.recall, z.f1));
            assert_eq!(x.auroc, None);
        }
    }
}
