//! From verified slice rows to model windows: lead choice, resampling to the common rate,
//! fixed-length windows, normalisation; the patient-level split; the cohort data hash.

use arrow::array::{
    Array, AsArray, Float32Array, ListArray, RecordBatch, StringArray, UInt8Array, UInt32Array,
    UInt64Array,
};
use arrow::datatypes::Float32Type;
use ecgfed_datasets::resample::ResampleError;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, TrainerError};
use crate::spec::{BEAT_SET_RR, BEAT_SET_RR_TEMPLATE, CohortSpec, Fractions, SignalSpec};

/// What the trainer keeps of a row besides its window (no identifiers: the pseudonym only
/// groups rows of one patient for the split).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowMeta {
    /// Site.
    pub site: String,
    /// Source database.
    pub source: String,
    /// Segment id.
    pub segment_id: String,
    /// Record id.
    pub record_id: String,
    /// Split group: site and pseudonym (the record where a source has no patient ids).
    pub group: String,
    /// `M`, `F` or `unknown`.
    pub sex: String,
    /// Age band or `unknown`.
    pub age_band: String,
    /// Store label.
    pub label: String,
    /// Class index.
    pub class: usize,
    /// True for rows of held-out sites.
    pub held_out: bool,
    /// Time of the window's centre from the start of its record, in milliseconds (the beat's
    /// time for beat-centred windows).
    #[serde(default)]
    pub centre_ms: u64,
}

/// The assembled cohort: one window per row, rows in (site, segment id) order.
#[derive(Debug, Clone, Default)]
pub struct CohortData {
    /// Samples per window.
    pub window: usize,
    /// Row descriptions.
    pub meta: Vec<RowMeta>,
    /// Windows, row-major (`meta.len() × window`).
    pub windows: Vec<f32>,
    /// Scalar features per row besides the window (0: none; [`BEAT_FEATURES`] after
    /// [`CohortData::add_beat_features`]).
    pub features: usize,
    /// Those features, row-major (`meta.len() × features`).
    pub feature_values: Vec<f32>,
    /// The [`morphology`] of each row's other lead (the first lead besides the chosen one),
    /// row-major (`meta.len() × MORPH_POINTS`), for the beat features; empty when not
    /// assembled.
    pub other_lead: Vec<f32>,
}

/// Writes `bytes` to `path` readable by its owner only (0600): exported rows are pulled data.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| TrainerError::io(path, e))?;
    f.write_all(bytes).map_err(|e| TrainerError::io(path, e))
}

/// Number of RR-interval features per beat (see [`rr_features`]).
pub const RR_FEATURES: usize = 4;

/// Points of a beat's morphology in its features (see [`morphology`]).
pub const MORPH_POINTS: usize = 54;

/// Beat features per row (see [`CohortData::add_beat_features`]): the RR features, the
/// morphology minus the record's template, two template-fit values, and the same two for the
/// row's other lead.
pub const BEAT_FEATURES: usize = RR_FEATURES + MORPH_POINTS + 4;

/// Spacing of the morphology points, in seconds.
const MORPH_STEP_S: f64 = 1.0 / 90.0;

/// RR intervals assumed for a record with fewer than two beats, in seconds.
const RR_UNKNOWN_S: f64 = 1.0;

/// Bounds that intervals are clipped to before their logarithm, in seconds.
const RR_CLIP_S: (f64, f64) = (0.05, 5.0);

/// Half-width of the window of the average interval, in milliseconds.
const RR_AVERAGE_MS: u64 = 300_000;

/// RR-interval features of the beats of one record, given their times in whole milliseconds
/// (sorted): the natural logarithms of `[pre, post, local, average]`, where `pre` and `post`
/// are the intervals to the previous and next beat (the first beat takes its `post` as `pre`,
/// the last its `pre` as `post`), `local` the mean `pre` of beats i−5 … i+4 (those that
/// exist) and `average` the mean `pre` of the beats within ±300 s of the beat (both ends
/// included, in whole milliseconds). Intervals are in seconds; the four values are clipped to
/// [0.05, 5] before the logarithm; a record of fewer than two beats gets intervals of 1 s.
/// Absolute intervals, not ratios to the record's median: where premature beats are the
/// majority (MIT-BIH 232), the median is one of them.
pub fn rr_features(times_ms: &[u64]) -> Vec<[f32; RR_FEATURES]> {
    let n = times_ms.len();
    let d: Vec<f64> = times_ms
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]) as f64 / 1000.0)
        .collect();
    let interval = |k: usize| d.get(k).copied().unwrap_or(RR_UNKNOWN_S);
    let pre: Vec<f64> = (0..n).map(|i| interval(i.saturating_sub(1))).collect();
    let mut sum = vec![0f64; n + 1];
    for i in 0..n {
        sum[i + 1] = sum[i] + pre[i];
    }
    let mean = |a: usize, b: usize| (sum[b] - sum[a]) / (b - a).max(1) as f64;
    (0..n)
        .map(|i| {
            let post = if i + 1 < n { interval(i) } else { pre[i] };
            let local = mean(i.saturating_sub(5), (i + 5).min(n));
            let ti = times_ms[i];
            let lo = times_ms.partition_point(|&t| t + RR_AVERAGE_MS < ti);
            let hi = times_ms.partition_point(|&t| t <= ti + RR_AVERAGE_MS);
            let average = mean(lo, hi);
            [pre[i], post, local, average].map(|v| v.clamp(RR_CLIP_S.0, RR_CLIP_S.1).ln() as f32)
        })
        .collect()
}

/// A beat's morphology: the (normalised) window's samples at offsets (j − 27) / 90 s from its
/// centre sample (index ⌊len/2⌋), j = 0 … 53, rounded to the nearest sample at `rate` Hz; 0
/// outside the window. At 180 Hz: every second sample from centre − 54 to centre + 52.
pub fn morphology(window: &[f32], rate: f64) -> [f32; MORPH_POINTS] {
    let c = (window.len() / 2) as i64;
    std::array::from_fn(|j| {
        let off = ((j as f64 - (MORPH_POINTS / 2) as f64) * MORPH_STEP_S * rate).round() as i64;
        usize::try_from(c + off)
            .ok()
            .and_then(|k| window.get(k))
            .copied()
            .unwrap_or(0.0)
    })
}

/// The median of `v` (the mean of the two middle values for an even count; 0 when empty).
fn median(v: &mut [f32]) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f32::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Template features of one record's beats, given their [`morphology`] vectors: the record's
/// template is the point-wise [`median`] of them; each beat gets its morphology minus the
/// template, then the Pearson correlation of its morphology with the template (0 where either
/// is constant) and ln(‖morphology − template‖₂ + 0.001).
pub fn template_features(morph: &[[f32; MORPH_POINTS]]) -> Vec<[f32; MORPH_POINTS + 2]> {
    let template: Vec<f64> = (0..MORPH_POINTS)
        .map(|j| median(&mut morph.iter().map(|m| m[j]).collect::<Vec<_>>()) as f64)
        .collect();
    let centred = |v: &[f64]| -> Vec<f64> {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        v.iter().map(|x| x - mean).collect()
    };
    let tc = centred(&template);
    let tn = tc.iter().map(|x| x * x).sum::<f64>().sqrt();
    morph
        .iter()
        .map(|m| {
            let mv: Vec<f64> = m.iter().map(|&x| x as f64).collect();
            let mc = centred(&mv);
            let mn = mc.iter().map(|x| x * x).sum::<f64>().sqrt();
            let corr = if mn > 0.0 && tn > 0.0 {
                mc.iter().zip(&tc).map(|(a, b)| a * b).sum::<f64>() / (mn * tn)
            } else {
                0.0
            };
            let mut out = [0f32; MORPH_POINTS + 2];
            let mut norm = 0f64;
            for j in 0..MORPH_POINTS {
                let d = mv[j] - template[j];
                out[j] = d as f32;
                norm += d * d;
            }
            out[MORPH_POINTS] = corr as f32;
            out[MORPH_POINTS + 1] = (norm.sqrt() + 1e-3).ln() as f32;
            out
        })
        .collect()
}

impl CohortData {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// The window of row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.windows[i * self.window..(i + 1) * self.window]
    }

    /// Keeps the rows for which `keep` is true.
    pub fn retain(&mut self, keep: impl Fn(&RowMeta) -> bool) {
        let idx: Vec<usize> = (0..self.len()).filter(|&i| keep(&self.meta[i])).collect();
        self.take(&idx);
    }

    /// Sorts rows by (site, segment id) so that the same cohort always assembles the same way.
    pub fn sort(&mut self) {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.sort_by(|&a, &b| {
            (&self.meta[a].site, &self.meta[a].segment_id)
                .cmp(&(&self.meta[b].site, &self.meta[b].segment_id))
        });
        self.take(&idx);
    }

    /// Drops `other_lead` unless it holds one morphology per row (all rows or none), so that
    /// no row can take another row's.
    fn check_other_lead(&mut self) {
        if self.other_lead.len() != self.len() * MORPH_POINTS {
            self.other_lead.clear();
        }
    }

    /// The scalar features of row `i` (empty without features).
    pub fn row_features(&self, i: usize) -> &[f32] {
        &self.feature_values[i * self.features..(i + 1) * self.features]
    }

    /// Writes the rows to `dir`: `windows.f32` (the windows as the network sees them before
    /// augmentation, row-major little-endian f32, `len × window`), `features.f32` (the beat
    /// features likewise, `len × features`, when there are any) and `rows.jsonl` (one object
    /// per row, in the same order: row, site, record_id, group, class, label, part).
    pub fn export(&self, parts: &[Part], dir: &std::path::Path) -> Result<()> {
        use std::io::Write;
        std::fs::create_dir_all(dir).map_err(|e| TrainerError::io(dir, e))?;
        let mut floats = vec![("windows.f32", &self.windows)];
        if self.features > 0 {
            floats.push(("features.f32", &self.feature_values));
        }
        for (name, values) in floats {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            write_private(&dir.join(name), &bytes)?;
        }
        let p = dir.join("rows.jsonl");
        let mut out = Vec::new();
        for (i, (m, part)) in self.meta.iter().zip(parts).enumerate() {
            let line = serde_json::json!({
                "row": i, "site": m.site, "record_id": m.record_id, "group": m.group,
                "class": m.class, "label": m.label, "part": part.name(),
            });
            writeln!(out, "{line}").map_err(|e| TrainerError::io(&p, e))?;
        }
        write_private(&p, &out)
    }

    /// Keeps rows `idx`, in that order.
    pub fn take(&mut self, idx: &[usize]) {
        self.check_other_lead();
        let mut x = Vec::with_capacity(idx.len() * self.window);
        let mut f = Vec::with_capacity(idx.len() * self.features);
        let mut o = Vec::with_capacity(self.other_lead.len().min(idx.len() * MORPH_POINTS));
        for &i in idx {
            x.extend_from_slice(self.row(i));
            f.extend_from_slice(self.row_features(i));
            if let Some(m) = self
                .other_lead
                .get(i * MORPH_POINTS..(i + 1) * MORPH_POINTS)
            {
                o.extend_from_slice(m);
            }
        }
        self.meta = idx.iter().map(|&i| self.meta[i].clone()).collect();
        self.windows = x;
        self.feature_values = f;
        self.other_lead = o;
    }

    /// The spec's beat features ([`CohortData::add_beat_features`]) when it asks for them, the
    /// groups outside `train.beat_feature_set` set to 0 (a linear classifier then ignores them).
    pub fn add_spec_features(&mut self, spec: &CohortSpec) {
        if !spec.train.beat_features {
            return;
        }
        self.add_beat_features(spec.signal.sample_rate);
        let used = match spec.train.beat_feature_set.as_str() {
            BEAT_SET_RR => RR_FEATURES,
            BEAT_SET_RR_TEMPLATE => RR_FEATURES + MORPH_POINTS + 2,
            _ => BEAT_FEATURES,
        };
        for row in self.feature_values.chunks_mut(BEAT_FEATURES) {
            row[used..].fill(0.0);
        }
    }

    /// Sets each row's features to its beat features (beat-centred windows at `rate` Hz),
    /// computed among the rows of the same record (site, source and record id) ordered by
    /// window centre: the [`rr_features`] of the beat times, then the [`template_features`] of the
    /// windows' [`morphology`], then the two template-fit values (correlation, log distance)
    /// of the other lead's morphology (`other_lead`; the chosen lead's where it was not
    /// assembled) — [`BEAT_FEATURES`] values a row. They describe each beat against
    /// its own patient's rhythm and usual beat, which the window alone does not show across
    /// patients. Only the beats in the cohort count: a beat left out (another class,
    /// suppressed) lengthens its neighbours' intervals and is not in the template.
    pub fn add_beat_features(&mut self, rate: u32) {
        use std::collections::BTreeMap;
        self.check_other_lead();
        let mut records: BTreeMap<(&str, &str, &str), Vec<usize>> = BTreeMap::new();
        for (i, m) in self.meta.iter().enumerate() {
            records
                .entry((m.site.as_str(), m.source.as_str(), m.record_id.as_str()))
                .or_default()
                .push(i);
        }
        let mut f = vec![0f32; self.meta.len() * BEAT_FEATURES];
        for rows in records.values_mut() {
            rows.sort_by_key(|&i| (self.meta[i].centre_ms, i));
            let times: Vec<u64> = rows.iter().map(|&i| self.meta[i].centre_ms).collect();
            let morph: Vec<_> = rows
                .iter()
                .map(|&i| morphology(self.row(i), rate as f64))
                .collect();
            let other: Vec<[f32; MORPH_POINTS]> = rows
                .iter()
                .zip(&morph)
                .map(|(&i, own)| {
                    self.other_lead
                        .get(i * MORPH_POINTS..(i + 1) * MORPH_POINTS)
                        .and_then(|m| m.try_into().ok())
                        .unwrap_or(*own)
                })
                .collect();
            let rows_of = rows
                .iter()
                .zip(rr_features(&times))
                .zip(template_features(&morph))
                .zip(template_features(&other));
            for (((&i, rr), t), o) in rows_of {
                let row = &mut f[i * BEAT_FEATURES..(i + 1) * BEAT_FEATURES];
                row[..RR_FEATURES].copy_from_slice(&rr);
                row[RR_FEATURES..RR_FEATURES + MORPH_POINTS + 2].copy_from_slice(&t);
                row[RR_FEATURES + MORPH_POINTS + 2..].copy_from_slice(&o[MORPH_POINTS..]);
            }
        }
        self.features = BEAT_FEATURES;
        self.feature_values = f;
    }

    /// SHA-256 over every row in order: segment id ‖ 0x00 ‖ class (u32 LE) ‖ window (f32 LE).
    /// Two assemblies of the same cohort give the same hash (docs/cohorts.md).
    pub fn data_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for (i, m) in self.meta.iter().enumerate() {
            h.update(m.segment_id.as_bytes());
            h.update([0]);
            h.update((m.class as u32).to_le_bytes());
            for v in self.row(i) {
                h.update(v.to_le_bytes());
            }
        }
        h.finalize().into()
    }
}

/// The index of `want` among `leads`: case-insensitive; `II` also matches `MLII`; a
/// single-lead record uses its lead.
pub fn pick_lead(leads: &[String], want: &str) -> Option<usize> {
    if let Some(i) = leads.iter().position(|l| l.eq_ignore_ascii_case(want)) {
        return Some(i);
    }
    if want.eq_ignore_ascii_case("ii")
        && let Some(i) = leads.iter().position(|l| l.eq_ignore_ascii_case("mlii"))
    {
        return Some(i);
    }
    (leads.len() == 1).then_some(0)
}

/// Resamples one lead from `fs` to the spec's rate (rubato FFT resampler, as at ingest).
pub fn to_rate(
    samples: &[f32],
    fs: f32,
    sig: &SignalSpec,
) -> std::result::Result<Vec<f32>, ResampleError> {
    if !(fs.is_finite() && fs > 0.0) || (fs - fs.round()).abs() > 1e-3 {
        return Err(ResampleError::NotWholeHz { hz: f64::from(fs) });
    }
    let mut out = ecgfed_datasets::resample::resample(
        &[samples.to_vec()],
        fs.round() as u32,
        sig.sample_rate,
    )?;
    Ok(out.pop().unwrap_or_default())
}

/// Cuts (at the centre) or zero-pads (at the end) to `len` samples, then normalises: NaN → 0,
/// minus the mean, divided by the standard deviation (at least 0.01 mV).
pub fn fit_window(samples: &[f32], len: usize) -> Vec<f32> {
    let mut w = vec![0f32; len];
    if samples.len() >= len {
        let start = (samples.len() - len) / 2;
        w.copy_from_slice(&samples[start..start + len]);
    } else {
        w[..samples.len()].copy_from_slice(samples);
    }
    let n = samples.len().min(len).max(1) as f64;
    for v in w.iter_mut() {
        if !v.is_finite() {
            *v = 0.0;
        }
    }
    let used = &w[..samples.len().min(len)];
    let mean = used.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = used.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let sd = var.sqrt().max(0.01);
    for v in w[..samples.len().min(len)].iter_mut() {
        *v = ((*v as f64 - mean) / sd) as f32;
    }
    w
}

/// A row's description, window and (beat features only) other-lead morphology.
type Window = (RowMeta, Vec<f32>, Option<[f32; MORPH_POINTS]>);

fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| TrainerError::Column {
            column: name.into(),
        })
}

/// Turns verified served rows into windows. Rows whose label is outside the task are skipped
/// (they cannot be in a cohort of this spec); a row without the lead, or with a bad rate, is
/// an error naming its segment.
pub fn windows_from_batch(
    b: &RecordBatch,
    spec: &CohortSpec,
    age_edges: &[u32],
    held_out: bool,
) -> Result<Assembled> {
    let seg: &StringArray = col(b, "segment_id")?;
    let rec: &StringArray = col(b, "record_id")?;
    let pseudo: &StringArray = col(b, "pseudonym")?;
    let site: &StringArray = col(b, "site")?;
    let source: &StringArray = col(b, "source")?;
    let fs: &Float32Array = col(b, "fs")?;
    let start: &UInt64Array = col(b, "start_sample")?;
    let n_samples: &UInt32Array = col(b, "n_samples")?;
    let leads: &ListArray = col(b, "leads")?;
    let signal: &ListArray = col(b, "signal")?;
    let label: &StringArray = col(b, "label")?;
    let age: &UInt8Array = col(b, "age")?;
    let sex: &StringArray = col(b, "sex")?;
    let edges: Vec<u8> = age_edges.iter().map(|&e| e.min(255) as u8).collect();
    let len = spec.window_samples();
    let rows: Vec<Result<Option<Window>>> = (0..b.num_rows())
        .into_par_iter()
        .map(|i| {
            let Some(class) = spec.class_of(label.value(i)) else {
                return Ok(None);
            };
            let sid = seg.value(i);
            let names: Vec<String> = leads
                .value(i)
                .as_string::<i32>()
                .iter()
                .map(|s| s.unwrap_or("").to_string())
                .collect();
            let li = pick_lead(&names, &spec.signal.lead).ok_or_else(|| TrainerError::NoLead {
                segment: sid.into(),
                lead: spec.signal.lead.clone(),
                leads: names.clone(),
            })?;
            let sig = signal.value(i);
            let sig = sig.as_primitive::<Float32Type>().values();
            let per = sig.len() / names.len().max(1);
            // Lead k at the spec's rate, cut and normalised.
            let lead_window = |k: usize| {
                to_rate(&sig[k * per..(k + 1) * per], fs.value(i), &spec.signal)
                    .map(|r| fit_window(&r, len))
                    .map_err(|source| TrainerError::Resample {
                        segment: sid.into(),
                        source,
                    })
            };
            let window = lead_window(li)?;
            // Beat features also describe the row's other lead (the first besides `li`; the
            // chosen lead where the row has no other).
            let rate = spec.signal.sample_rate as f64;
            let other = match (
                spec.train.beat_features,
                (0..names.len()).find(|&k| k != li),
            ) {
                (true, Some(k)) => Some(morphology(&lead_window(k)?, rate)),
                (true, None) => Some(morphology(&window, rate)),
                (false, _) => None,
            };
            let a = age.is_valid(i).then(|| age.value(i));
            let meta = RowMeta {
                site: site.value(i).to_string(),
                source: source.value(i).to_string(),
                segment_id: sid.to_string(),
                record_id: rec.value(i).to_string(),
                group: format!("{}/{}", site.value(i), pseudo.value(i)),
                sex: if sex.is_valid(i) {
                    sex.value(i).to_string()
                } else {
                    "unknown".into()
                },
                age_band: ecgfed_datasets::strata::age_band(a, &edges),
                label: label.value(i).to_string(),
                class,
                held_out,
                centre_ms: ((start.value(i) as f64 + n_samples.value(i) as f64 / 2.0)
                    / fs.value(i) as f64
                    * 1000.0)
                    .round() as u64,
            };
            Ok(Some((meta, window, other)))
        })
        .collect();
    let mut out = Assembled::default();
    for r in rows {
        if let Some((m, w, o)) = r? {
            out.meta.push(m);
            out.windows.extend_from_slice(&w);
            if let Some(o) = o {
                out.other_lead.extend_from_slice(&o);
            }
        }
    }
    Ok(out)
}

/// Rows of one batch as [`windows_from_batch`] assembles them (see [`CohortData`]'s fields
/// of the same names).
#[derive(Debug, Default)]
pub struct Assembled {
    /// Row descriptions.
    pub meta: Vec<RowMeta>,
    /// Windows of the chosen lead, row-major.
    pub windows: Vec<f32>,
    /// Other-lead morphologies (beat features only), row-major.
    pub other_lead: Vec<f32>,
}

/// Which part of the work a row serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Part {
    /// Training.
    Train,
    /// Validation: epochs (rounds) and hyper-parameters are chosen on it.
    Val,
    /// Test: scored once, at the end, with the kept weights; nothing is chosen on it.
    Test,
    /// A held-out site (evaluation only, at the end).
    HeldOut,
}

impl Part {
    /// `train`, `validation`, `test` or `held_out` (the model card's names).
    pub fn name(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Val => "validation",
            Part::Test => "test",
            Part::HeldOut => "held_out",
        }
    }
}

/// Splits by [`split`]; when `val_records` is not empty, the rows of those records are
/// validation whatever their group's part, and no other group is (the test part stays as
/// [`split`] draws it).
pub fn split_with(
    meta: &[RowMeta],
    val_records: &[String],
    fractions: Fractions,
    seed: u64,
    n_classes: usize,
) -> Vec<Part> {
    if val_records.is_empty() {
        return split(meta, fractions, seed, n_classes);
    }
    let base = split(
        meta,
        Fractions {
            val: 0.0,
            ..fractions
        },
        seed,
        n_classes,
    );
    meta.iter()
        .zip(base)
        .map(|(m, p)| {
            if p != Part::HeldOut && val_records.contains(&m.record_id) {
                Part::Val
            } else {
                p
            }
        })
        .collect()
}

/// Splits by group (patient; record where the source has no patient id), never by segment:
/// groups are taken per site and majority class, ordered by SHA-256(seed ‖ group); of each
/// (site, class)'s n groups the first `round(n × test)` go to test (at least one where there
/// are three groups or more and the share is positive), the next `round(n × val)` to
/// validation (at least one where two groups or more remain and the share is positive), the
/// rest to training. A site's parts depend on its own rows only, so a pooled (pull) run and a
/// federated run, where each site splits its own rows, have the same train, validation and
/// test parts.
pub fn split(meta: &[RowMeta], fractions: Fractions, seed: u64, n_classes: usize) -> Vec<Part> {
    use std::collections::BTreeMap;
    let mut groups: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for m in meta.iter().filter(|m| !m.held_out) {
        let counts = groups
            .entry((m.site.as_str(), m.group.as_str()))
            .or_insert_with(|| vec![0; n_classes]);
        counts[m.class.min(n_classes - 1)] += 1;
    }
    // (site, majority class) → its groups, each with SHA-256(seed ‖ group).
    type Stratum<'a> = Vec<([u8; 32], &'a str)>;
    let mut strata: BTreeMap<(&str, usize), Stratum> = BTreeMap::new();
    for ((site, g), counts) in &groups {
        let major = (0..n_classes)
            .max_by_key(|&c| (counts[c], std::cmp::Reverse(c)))
            .unwrap_or(0);
        let mut h = Sha256::new();
        h.update(seed.to_be_bytes());
        h.update(g.as_bytes());
        strata
            .entry((site, major))
            .or_default()
            .push((h.finalize().into(), g));
    }
    let mut part_of: std::collections::HashMap<&str, Part> = std::collections::HashMap::new();
    for v in strata.values_mut() {
        v.sort();
        let share = |f: f64, of: usize, least: usize| {
            let n = (of as f64 * f).round() as usize;
            if n == 0 && of >= least && f > 0.0 {
                1
            } else {
                n.min(of)
            }
        };
        let n_test = share(fractions.test, v.len(), 3);
        let n_val = share(fractions.val, v.len() - n_test, 2);
        for (i, (_, g)) in v.iter().enumerate() {
            let p = if i < n_test {
                Part::Test
            } else if i < n_test + n_val {
                Part::Val
            } else {
                Part::Train
            };
            part_of.insert(g, p);
        }
    }
    meta.iter()
        .map(|m| {
            if m.held_out {
                Part::HeldOut
            } else {
                part_of
                    .get(m.group.as_str())
                    .copied()
                    .unwrap_or(Part::Train)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leads_windows_and_normalisation() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(pick_lead(&l(&["I", "ii", "V1"]), "II"), Some(1));
        assert_eq!(pick_lead(&l(&["MLII", "V1"]), "II"), Some(0));
        assert_eq!(pick_lead(&l(&["ECG"]), "II"), Some(0));
        assert_eq!(pick_lead(&l(&["V1", "V5"]), "II"), None);
        let w = fit_window(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 4);
        // Centre cut [2, 3, 4, 5]: mean 3.5, sd sqrt(1.25).
        let sd = 1.25f64.sqrt();
        for (a, b) in w.iter().zip([-1.5, -0.5, 0.5, 1.5]) {
            assert!((*a as f64 - b / sd).abs() < 1e-6);
        }
        let w = fit_window(&[f32::NAN, 2.0], 4);
        assert_eq!(w[2..], [0.0, 0.0]);
        assert!((w[0] + 1.0).abs() < 1e-6 && (w[1] - 1.0).abs() < 1e-6);
        let sig = SignalSpec {
            sample_rate: 250,
            ..Default::default()
        };
        assert_eq!(to_rate(&vec![0.5; 3600], 360.0, &sig).unwrap().len(), 2500);
        assert!(to_rate(&[0.0; 10], 0.0, &sig).is_err());
    }

    #[test]
    fn beat_rows_carry_the_other_leads_morphology() {
        use arrow::array::{ArrayRef, ListBuilder, StringBuilder};
        use arrow::datatypes::{Field, Schema};
        use std::sync::Arc;
        // Two beat windows of 2 s at 180 Hz: "MLII" + "V1" (a ramp), and "MLII" alone.
        let n = 360usize;
        let mlii: Vec<f32> = (0..n).map(|k| ((k % 7) as f32).sin()).collect();
        let v1: Vec<f32> = (0..n).map(|k| k as f32).collect();
        let mut leads = ListBuilder::new(StringBuilder::new());
        leads.values().append_value("MLII");
        leads.values().append_value("V1");
        leads.append(true);
        leads.values().append_value("MLII");
        leads.append(true);
        let mut signal = ListBuilder::new(arrow::array::Float32Builder::new());
        signal.values().append_slice(&mlii);
        signal.values().append_slice(&v1);
        signal.append(true);
        signal.values().append_slice(&mlii);
        signal.append(true);
        let s2 = |a: &str, b: &str| Arc::new(StringArray::from(vec![a, b])) as ArrayRef;
        let cols: Vec<(&str, ArrayRef)> = vec![
            ("segment_id", s2("m/1@0", "m/2@0")),
            ("record_id", s2("1", "2")),
            ("pseudonym", s2("p", "q")),
            ("site", s2("s", "s")),
            ("source", s2("m", "m")),
            ("fs", Arc::new(Float32Array::from(vec![180.0, 180.0]))),
            ("start_sample", Arc::new(UInt64Array::from(vec![0, 0]))),
            ("n_samples", Arc::new(UInt32Array::from(vec![n as u32; 2]))),
            ("leads", Arc::new(leads.finish())),
            ("signal", Arc::new(signal.finish())),
            ("label", s2("V", "N")),
            ("age", Arc::new(UInt8Array::from(vec![Some(60), None]))),
            ("sex", s2("M", "F")),
        ];
        let schema = Schema::new(
            cols.iter()
                .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
                .collect::<Vec<_>>(),
        );
        let b = RecordBatch::try_new(Arc::new(schema), cols.into_iter().map(|(_, a)| a).collect())
            .unwrap();
        let mut spec: CohortSpec = toml::from_str(
            "purpose = \"t\"\ntask = \"aami-beats\"\n[signal]\nlead = \"II\"\n\
             sample_rate = 180\nwindow_secs = 2\n[train]\nchannels = []\nbeat_features = true\n",
        )
        .unwrap();
        spec.fill_defaults();
        let a = windows_from_batch(&b, &spec, &[], false).unwrap();
        assert_eq!((a.meta.len(), a.windows.len()), (2, 2 * n));
        assert_eq!(a.other_lead.len(), 2 * MORPH_POINTS);
        assert_eq!(a.meta[0].class, 2);
        // Row 0's other lead is V1: the ramp z-scored (mean 179.5, sd of 0 … 359), taken at
        // samples 126, 128, … 232.
        let sd = ((n * n - 1) as f64 / 12.0).sqrt();
        for j in [0, 27, 53] {
            let k = 126 + 2 * j;
            let want = (k as f64 - 179.5) / sd;
            assert!((a.other_lead[j] as f64 - want).abs() < 1e-5, "point {j}");
        }
        // Row 1 has one lead: its own window's morphology.
        assert_eq!(
            a.other_lead[MORPH_POINTS..],
            morphology(&a.windows[n..], 180.0)[..]
        );
        // Without beat features nothing of the other lead is kept.
        spec.train.beat_features = false;
        assert!(
            windows_from_batch(&b, &spec, &[], false)
                .unwrap()
                .other_lead
                .is_empty()
        );
    }

    #[test]
    fn rr_features_by_hand() {
        // Intervals 1, 1, 0.5, 1 s: the fourth beat is premature.
        let f = rr_features(&[0, 1000, 2000, 2500, 3500]);
        assert_eq!(f.len(), 5);
        let ln = |v: f64| v.ln() as f32;
        // local: all five beats are within i-5 .. i+4, mean pre = (1 + 1 + 1 + 0.5 + 1) / 5;
        // average: all within 300 s, the same.
        assert_eq!(f[0], [0.0, 0.0, ln(0.9), ln(0.9)]);
        assert_eq!(f[2], [0.0, ln(0.5), ln(0.9), ln(0.9)]);
        assert_eq!(f[3], [ln(0.5), 0.0, ln(0.9), ln(0.9)]);
        // The last beat takes its pre interval as post.
        assert_eq!(f[4][..2], [0.0, 0.0]);
        assert_eq!(rr_features(&[4000]), vec![[0.0; RR_FEATURES]]);
        assert!(rr_features(&[]).is_empty());
        // Intervals are clipped to [0.05, 5] s.
        let c = rr_features(&[0, 10, 20, 6020]);
        assert_eq!((c[1][0], c[3][0]), (ln(0.05), ln(5.0)));
        // The average covers ±300 s: beat 3 (400 s) sees beats 3 and 4 only, (398 + 1) / 2.
        let a = rr_features(&[0, 1000, 2000, 400_000, 401_000]);
        assert_eq!((a[0][3], a[1][3], a[3][3]), (0.0, 0.0, ln(5.0)));
        // 1-s beats from 0 to 300 s, then 2-s beats to 700 s: the beat at 400 s averages the
        // 201 beats of 100 … 300 s (1 s) and the 200 of 302 … 700 s (2 s).
        let t: Vec<u64> = (0..=300)
            .map(|k| k * 1000)
            .chain((151..=350).map(|k| k * 2000))
            .collect();
        let a = rr_features(&t);
        let at400 = t.iter().position(|&x| x == 400_000).unwrap();
        assert_eq!(a[0][3], 0.0);
        assert!((a[at400][3] as f64 - (601.0f64 / 401.0).ln()).abs() < 1e-6);
        // Both ends are included, exactly 300,000 ms away: beats 0 and 2 s (pre 2 s each),
        // then 1-s beats to 300 s; the first and the last beat both average all 300.
        let t: Vec<u64> = [0, 2000]
            .into_iter()
            .chain((3..=300).map(|k| k * 1000))
            .collect();
        let a = rr_features(&t);
        let want = (302.0f64 / 300.0).ln() as f32;
        assert_eq!((a[0][3], a[t.len() - 1][3]), (want, want));
    }

    #[test]
    fn morphology_and_template_by_hand() {
        let w: Vec<f32> = (0..360).map(|k| k as f32).collect();
        let m = morphology(&w, 180.0);
        assert_eq!((m[0], m[27], m[53]), (126.0, 180.0, 232.0));
        let w2: Vec<f32> = (0..720).map(|k| k as f32).collect();
        assert_eq!(morphology(&w2, 360.0)[0], 252.0);
        // Points outside a short window are 0.
        let short = morphology(&[5.0; 10], 180.0);
        // (centre 5; offsets 2 (j - 27): samples 1 … 9 are j = 25 … 29.)
        assert_eq!(
            (short[24], short[25], short[29], short[30]),
            (0.0, 5.0, 5.0, 0.0)
        );
        // Template of (ramp, ramp, -ramp) is the ramp.
        let ramp: [f32; MORPH_POINTS] = std::array::from_fn(|j| j as f32);
        let neg = ramp.map(|v| -v);
        let t = template_features(&[ramp, ramp, neg]);
        assert!(t[0][..MORPH_POINTS].iter().all(|&v| v == 0.0));
        assert!((t[0][MORPH_POINTS] - 1.0).abs() < 1e-6);
        assert_eq!(t[0][MORPH_POINTS + 1], (1e-3f64).ln() as f32);
        assert_eq!(t[2][5], -10.0);
        assert!((t[2][MORPH_POINTS] + 1.0).abs() < 1e-6);
        let sq: f64 = (0..MORPH_POINTS).map(|j| (2.0 * j as f64).powi(2)).sum();
        assert!((t[2][MORPH_POINTS + 1] as f64 - (sq.sqrt() + 1e-3).ln()).abs() < 1e-5);
        // An even count takes the mean of the two middle values: the template is 0 here and
        // a constant template gives correlation 0.
        let t = template_features(&[ramp, neg]);
        assert_eq!((t[0][7], t[0][MORPH_POINTS]), (7.0, 0.0));
    }

    #[test]
    fn rr_features_follow_each_record_and_survive_reordering() {
        // Two records' beats interleaved and out of time order.
        let beats = [
            ("a", 2000),
            ("b", 500),
            ("a", 0),
            ("b", 1500),
            ("a", 1000),
            ("b", 1000),
        ];
        let meta: Vec<RowMeta> = beats
            .iter()
            .enumerate()
            .map(|(i, (r, t))| RowMeta {
                site: "s".into(),
                source: "x".into(),
                segment_id: format!("{r}/{i}"),
                record_id: r.to_string(),
                group: r.to_string(),
                sex: "M".into(),
                age_band: "unknown".into(),
                label: "N".into(),
                class: 0,
                held_out: false,
                centre_ms: *t,
            })
            .collect();
        let mut d = CohortData {
            window: 1,
            windows: (0..meta.len()).map(|i| i as f32).collect(),
            meta,
            ..Default::default()
        };
        d.add_beat_features(180);
        assert_eq!(d.features, BEAT_FEATURES);
        // Record a: 0, 1, 2 s; record b: 0.5, 1, 1.5 s (ln of the intervals).
        let half = (0.5f64).ln() as f32;
        assert_eq!(d.row_features(0)[..2], [0.0, 0.0]);
        assert_eq!(d.row_features(1)[..2], [half, half]);
        d.sort();
        // Sorted by segment id: a/0 (2 s), a/2 (0 s), a/4 (1 s), b/1, b/3, b/5.
        assert_eq!(d.windows, [0.0, 2.0, 4.0, 1.0, 3.0, 5.0]);
        for (i, m) in d.meta.iter().enumerate() {
            let want = if m.record_id == "a" { 0.0 } else { half };
            assert_eq!(d.row_features(i)[0], want, "{}", m.segment_id);
        }
        // Without other-lead morphologies the last two features repeat the chosen lead's
        // template fit; with them, they follow the other lead and survive a retain.
        let fit = RR_FEATURES + MORPH_POINTS;
        assert_eq!(
            d.row_features(0)[fit..fit + 2],
            d.row_features(0)[fit + 2..]
        );
        // Other lead of record a: two beats alike and the third (segment a/4) far off.
        d.other_lead = (0..d.len())
            .flat_map(|i| {
                let off = d.meta[i].segment_id == "a/4";
                (0..MORPH_POINTS).map(move |j| if off { -(j as f32) } else { j as f32 })
            })
            .collect();
        d.add_beat_features(180);
        let far = d.meta.iter().position(|m| m.segment_id == "a/4").unwrap();
        assert!((d.row_features(0)[fit + 2] - 1.0).abs() < 1e-6);
        assert!((d.row_features(far)[fit + 2] + 1.0).abs() < 1e-6);
        d.retain(|m| m.segment_id != "a/0");
        assert_eq!(d.other_lead.len(), 5 * MORPH_POINTS);
        let far = d.meta.iter().position(|m| m.segment_id == "a/4").unwrap();
        assert_eq!((far, d.other_lead[far * MORPH_POINTS + 1]), (1, -1.0));
        // Other-lead morphologies that do not cover every row are not used.
        d.other_lead = vec![0.0; MORPH_POINTS];
        d.add_beat_features(180);
        assert!(d.other_lead.is_empty());
        assert_eq!(
            d.row_features(0)[fit..fit + 2],
            d.row_features(0)[fit + 2..]
        );
        // A spec's feature set: the groups it leaves out are zero, the others as computed.
        let all = d.feature_values.clone();
        let mut spec: CohortSpec = toml::from_str(
            "purpose = \"t\"\ntask = \"aami-beats\"\n[signal]\nsample_rate = 180\n[train]\nbeat_features = true\n",
        )
        .unwrap();
        for (set, used) in [("all", BEAT_FEATURES), ("rr+template", fit + 2), ("rr", 4)] {
            spec.train.beat_feature_set = set.into();
            d.add_spec_features(&spec);
            for i in 0..d.len() {
                let (f, want) = (
                    d.row_features(i),
                    &all[i * BEAT_FEATURES..][..BEAT_FEATURES],
                );
                assert_eq!(f[..used], want[..used], "{set}");
                assert!(f[used..].iter().all(|v| *v == 0.0), "{set}");
            }
        }
    }

    /// Row `i` of a split test: record `patient`, grouped as `site/p<patient>`.
    fn split_row(i: usize, site: &str, patient: usize, class: usize, held_out: bool) -> RowMeta {
        RowMeta {
            site: site.into(),
            source: "x".into(),
            segment_id: format!("x/{i}"),
            record_id: format!("{patient}"),
            group: format!("{site}/p{patient}"),
            sex: "M".into(),
            age_band: "unknown".into(),
            label: "l".into(),
            class,
            held_out,
            centre_ms: 0,
        }
    }

    #[test]
    fn split_keeps_patients_whole_and_is_deterministic() {
        let meta: Vec<RowMeta> = (0..200)
            .map(|i| split_row(i, "s", i / 4, (i / 4) % 2, i >= 180))
            .collect();
        let f = Fractions {
            val: 0.2,
            test: 0.2,
        };
        let parts = split(&meta, f, 7, 2);
        assert_eq!(parts, split(&meta, f, 7, 2));
        assert_ne!(parts, split(&meta, f, 8, 2));
        let mut group_part = std::collections::HashMap::new();
        for (m, p) in meta.iter().zip(&parts) {
            assert_eq!(*group_part.entry(&m.group).or_insert(*p), *p, "{}", m.group);
            assert_eq!(m.held_out, *p == Part::HeldOut);
        }
        // 45 groups not held out: 23 of class 0 → 5 test (round 4.6), then 4 val (round 3.6
        // of the 18 left); 22 of class 1 → 4 test, then 4 val (round 3.6 of 18).
        let count = |part: Part| group_part.values().filter(|p| **p == part).count();
        assert_eq!((count(Part::Test), count(Part::Val)), (9, 8));
        assert_eq!(count(Part::Train), 45 - 17);
        // Without a test share, validation is as before: 5 + 4.
        let no_test = split(
            &meta,
            Fractions {
                val: 0.2,
                test: 0.0,
            },
            7,
            2,
        );
        assert!(!no_test.contains(&Part::Test));
        let mut val = std::collections::HashSet::new();
        for (m, p) in meta.iter().zip(&no_test) {
            if *p == Part::Val {
                val.insert(&m.group);
            }
        }
        assert_eq!(val.len(), 9);
        // Named validation records: exactly their rows are validation; test as drawn.
        let named = vec!["0".to_string(), "1".to_string()];
        let by_name = split_with(&meta, &named, f, 7, 2);
        for ((m, p), q) in meta.iter().zip(&by_name).zip(&parts) {
            if m.held_out {
                assert_eq!(*p, Part::HeldOut);
            } else if named.contains(&m.record_id) {
                assert_eq!(*p, Part::Val);
            } else {
                assert_ne!(*p, Part::Val);
                assert_eq!(*p == Part::Test, *q == Part::Test, "{}", m.group);
            }
        }
    }

    #[test]
    fn a_sites_parts_are_the_same_pooled_or_alone() {
        // Three sites of unequal size and class mix: the pooled split, restricted to a site,
        // equals that site's split of its own rows (what a federated site computes).
        let meta: Vec<RowMeta> = (0..600)
            .map(|i| {
                let site = ["a", "b", "c"][(i * 7 / 3) % 3];
                let class = (i / 3) % if site == "a" { 2 } else { 5 } % 3;
                split_row(i, site, i / 3, class, false)
            })
            .collect();
        let f = Fractions {
            val: 0.2,
            test: 0.2,
        };
        let pooled = split(&meta, f, 11, 3);
        for site in ["a", "b", "c"] {
            let idx: Vec<usize> = (0..meta.len()).filter(|&i| meta[i].site == site).collect();
            let own: Vec<RowMeta> = idx.iter().map(|&i| meta[i].clone()).collect();
            let alone = split(&own, f, 11, 3);
            let from_pooled: Vec<Part> = idx.iter().map(|&i| pooled[i]).collect();
            assert_eq!(from_pooled, alone, "site {site}");
            assert!(
                alone.contains(&Part::Test) && alone.contains(&Part::Val),
                "{site}"
            );
        }
    }
}
