//! Evaluation of a trained model on the cohort: validation rows overall, per sex, per age band
//! and per site; held-out sites on their own; each both per window and per record (the mean of
//! a record's window probabilities).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::data::{CohortData, Part, RowMeta};
use crate::metrics::{Report, evaluate};

/// Metrics of a set of rows, per window and per record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Per window (segment).
    pub windows: Report,
    /// Per record (mean probability over the record's windows; the record's class is that of
    /// its windows, the most frequent one when they differ).
    pub records: Report,
}

/// The evaluation of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Validation rows of the training sites (what the kept epoch or round was chosen on).
    pub validation: Option<Scores>,
    /// Test rows of the training sites, scored once with the kept weights (the headline).
    #[serde(default)]
    pub test: Option<Scores>,
    /// Per sex: the test rows (the validation rows when there is no test part).
    pub by_sex: BTreeMap<String, Scores>,
    /// Per age band, likewise.
    pub by_age_band: BTreeMap<String, Scores>,
    /// Per site, likewise.
    pub by_site: BTreeMap<String, Scores>,
    /// Each held-out site, all its rows.
    pub held_out: BTreeMap<String, Scores>,
}

/// Per-window and per-record metrics of rows `idx` (`probs` row-major over all rows).
pub fn scores(
    idx: &[usize],
    meta: &[RowMeta],
    probs: &[f32],
    k: usize,
    classes: &[String],
    scored: &[String],
) -> Scores {
    let y: Vec<usize> = idx.iter().map(|&i| meta[i].class).collect();
    let p: Vec<f32> = idx
        .iter()
        .flat_map(|&i| probs[i * k..(i + 1) * k].iter().copied())
        .collect();
    let windows = evaluate(&y, &p, classes, scored);
    // Per (site, record): probability sums, class votes, windows.
    type Sums = (Vec<f64>, Vec<u64>, u64);
    let mut recs: BTreeMap<(&str, &str), Sums> = BTreeMap::new();
    for &i in idx {
        let m = &meta[i];
        let e = recs
            .entry((m.site.as_str(), m.record_id.as_str()))
            .or_insert_with(|| (vec![0.0; k], vec![0; k], 0));
        for c in 0..k {
            e.0[c] += probs[i * k + c] as f64;
        }
        e.1[m.class] += 1;
        e.2 += 1;
    }
    let mut ry = Vec::with_capacity(recs.len());
    let mut rp = Vec::with_capacity(recs.len() * k);
    for (sum, votes, n) in recs.values() {
        let class = (0..k)
            .max_by_key(|&c| (votes[c], std::cmp::Reverse(c)))
            .unwrap_or(0);
        ry.push(class);
        rp.extend(sum.iter().map(|&s| (s / *n as f64) as f32));
    }
    Scores {
        windows,
        records: evaluate(&ry, &rp, classes, scored),
    }
}

/// [`scores`] of rows `idx` per group (`key` of a row's description), groups in order.
pub fn scores_by(
    idx: &[usize],
    meta: &[RowMeta],
    probs: &[f32],
    classes: &[String],
    scored: &[String],
    key: &dyn Fn(&RowMeta) -> String,
) -> BTreeMap<String, Scores> {
    let mut m: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for &i in idx {
        m.entry(key(&meta[i])).or_default().push(i);
    }
    m.into_iter()
        .map(|(g, rows)| {
            (
                g,
                scores(&rows, meta, probs, classes.len(), classes, scored),
            )
        })
        .collect()
}

/// Evaluates `probs` (row-major, one row per cohort row) against the cohort's classes.
pub fn evaluate_cohort(
    data: &CohortData,
    parts: &[Part],
    probs: &[f32],
    classes: &[String],
    scored: &[String],
) -> Evaluation {
    let k = classes.len();
    let meta = &data.meta;
    let val: Vec<usize> = (0..data.len()).filter(|&i| parts[i] == Part::Val).collect();
    let group = |key: &dyn Fn(&RowMeta) -> String, rows: &[usize]| {
        scores_by(rows, meta, probs, classes, scored, key)
    };
    let held: Vec<usize> = (0..data.len())
        .filter(|&i| parts[i] == Part::HeldOut)
        .collect();
    let test: Vec<usize> = (0..data.len())
        .filter(|&i| parts[i] == Part::Test)
        .collect();
    let sub = if test.is_empty() { &val } else { &test };
    Evaluation {
        validation: (!val.is_empty()).then(|| scores(&val, meta, probs, k, classes, scored)),
        test: (!test.is_empty()).then(|| scores(&test, meta, probs, k, classes, scored)),
        by_sex: group(&|m| m.sex.clone(), sub),
        by_age_band: group(&|m| m.age_band.clone(), sub),
        by_site: group(&|m| m.site.clone(), sub),
        held_out: group(&|m| m.site.clone(), &held),
    }
}

/// A plain-text table of per-class metrics (for the terminal and the closing notes).
pub fn class_table(title: &str, r: &Report) -> String {
    let f = |v: Option<f64>| v.map_or("  -  ".to_string(), |x| format!("{x:.3}"));
    let mut s = format!(
        "{title}: n={} accuracy={:.3} macro-F1={} ECE={:.3}\n  class  support  precision(+P)  recall(Se)     F1   AUROC\n",
        r.n,
        r.accuracy,
        f(r.macro_f1),
        r.ece
    );
    for c in &r.classes {
        s.push_str(&format!(
            "  {:<5} {:>8}  {:>13}  {:>10}  {:>5}  {:>6}\n",
            c.class,
            c.support,
            f(c.precision),
            f(c.recall),
            f(c.f1),
            f(c.auroc)
        ));
    }
    s
}
