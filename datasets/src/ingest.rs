//! Ingest: source folders → records → labelled segments → a site store, in parallel, with
//! per-file errors reported and skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::annotation::{self, Annotation};
use crate::demographics::{self, Demographics};
use crate::error::{DatasetError, Result};
use crate::labels::{self, Label};
use crate::layout::{self, Layout, SourceFolder};
use crate::leads;
use crate::load;
use crate::paths;
use crate::record::{self, RecordWarning};
use crate::segment::{self, LabelOrigin, Segment, Segmentation, Window};
use crate::store::{
    AgeSummary, AnnotationSummary, FileError, IngestSettings, Manifest, SCHEMA_VERSION,
    SourceSummary, StoreWriter, summarize_warnings,
};

/// Options of one ingest.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Site name written into every row.
    pub site: String,
    /// Segmentation choice.
    pub segmentation: Segmentation,
    /// Resample every record to this rate (Hz).
    pub resample_hz: Option<u32>,
    /// Keep only these leads (matched case-insensitively), in this order.
    pub leads: Option<Vec<String>>,
    /// Replace an existing store at the output folder.
    pub force: bool,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            site: "site".into(),
            segmentation: Segmentation::default(),
            resample_hz: None,
            leads: None,
            force: false,
        }
    }
}

/// Progress events reported during an ingest.
#[derive(Debug, Clone)]
pub enum Progress<'a> {
    /// Sources found; `records` in total.
    Discovered {
        /// Number of records (headers) over all sources.
        records: u64,
    },
    /// One record was processed (successfully or not).
    Record {
        /// Source id.
        source: &'a str,
        /// Record id.
        record: &'a str,
        /// Error message when the record was skipped.
        error: Option<&'a str>,
    },
}

/// What one record contributes.
struct RecordOutput {
    unmapped: BTreeSet<String>,
    segments: Vec<Segment>,
    label: Label,
    demographics: Demographics,
    warnings: Vec<RecordWarning>,
    bytes: u64,
    annotations: Option<AnnotationSummary>,
    /// Windows per label origin ([`LabelOrigin::name`]).
    segments_by_label_origin: BTreeMap<String, u64>,
}

/// Shared per-source context.
struct SourceContext<'a> {
    src: &'a SourceFolder,
    reference: Option<BTreeMap<String, String>>,
    opts: &'a IngestOptions,
}

fn window_samples(secs: f64, fs: f64) -> u64 {
    (secs * fs).round().max(0.0) as u64
}

fn process_record(ctx: &SourceContext, hea: &Path) -> Result<RecordOutput> {
    let rec = load::load_record(hea, ctx.src.layout.verification())?;
    let mut warnings = rec.warnings.clone();
    let demographics = demographics::from_comments(&rec.header.comments);
    // Annotations (MIT .atr) where present (opened under the rules of `paths`: a link out of
    // the folder or a special file is an error for the record).
    let atr = hea.with_extension("atr");
    let ann: Vec<Annotation> = annotation::read_annotations_if_present(&atr)?.unwrap_or_default();
    let changes = segment::rhythm_changes(&ann);
    let ann_summary = summarise_annotations(ctx, hea, &rec, &ann, &changes, &mut warnings);
    let (label, origin) = record_label(ctx, &rec, &changes, &mut warnings);
    let (leads, signals, fs_out) = output_signals(ctx, hea, &rec, &mut warnings)?;
    let windows = record_windows(
        ctx,
        &rec,
        &ann,
        &changes,
        (&label, origin),
        &atr,
        &mut warnings,
    );
    let mut segments_by_label_origin: BTreeMap<String, u64> = BTreeMap::new();
    for w in &windows {
        *segments_by_label_origin
            .entry(w.origin.name().to_string())
            .or_default() += 1;
    }

    let fs_in = rec.fs();
    let ratio = fs_out / fs_in;
    let out_len = signals.first().map_or(0, Vec::len);
    let patient = match &rec.patient {
        Some(p) => p.clone(),
        None => layout::patient_of(&ctx.src.id, ctx.src.layout, &rec.id),
    };
    let mut segments = Vec::with_capacity(windows.len());
    let mut unmapped: BTreeSet<String> = label.unmapped.iter().cloned().collect();
    for w in windows {
        unmapped.extend(w.unmapped);
        let s0 = ((w.start as f64 * ratio).round() as usize).min(out_len);
        let l = ((w.len as f64 * ratio).round() as usize).min(out_len - s0);
        let mut sig = Vec::with_capacity(l * signals.len());
        for lead in &signals {
            sig.extend_from_slice(&lead[s0..s0 + l]);
        }
        segments.push(Segment {
            source: ctx.src.id.clone(),
            record_id: rec.id.clone(),
            patient: patient.clone(),
            site: ctx.opts.site.clone(),
            fs: fs_out as f32,
            leads: leads.clone(),
            start_sample: w.start,
            n_samples: u32::try_from(w.len).unwrap_or(u32::MAX),
            signal: sig,
            label: w.label,
            label_raw: w.raw,
            age: demographics.age,
            sex: demographics.sex,
        });
    }
    Ok(RecordOutput {
        unmapped,
        segments,
        label,
        demographics,
        warnings,
        bytes: rec.bytes_read,
        annotations: ann_summary,
        segments_by_label_origin,
    })
}

/// Beat and rhythm counts of the record's annotations; for LUDB, its per-lead wave
/// annotations, parsed (and counted) to prove they are readable. `None` without annotations.
fn summarise_annotations(
    ctx: &SourceContext,
    hea: &Path,
    rec: &record::Record,
    ann: &[Annotation],
    changes: &[(u64, String)],
    warnings: &mut Vec<RecordWarning>,
) -> Option<AnnotationSummary> {
    let mut ann_summary = (!ann.is_empty()).then(AnnotationSummary::default);
    if let Some(s) = ann_summary.as_mut() {
        for a in ann {
            let sym = a.symbol();
            if annotation::is_beat(sym) {
                s.beats += 1;
                let class = labels::aami_class(sym).unwrap_or(labels::UNMAPPED_BEAT);
                *s.beats_by_aami.entry(class.to_string()).or_default() += 1;
            }
        }
        for (_, aux) in changes {
            *s.rhythm_changes.entry(aux.clone()).or_default() += 1;
        }
    }
    if ctx.src.layout == Layout::Ludb {
        let mut waves = 0u64;
        let stem = hea.file_stem().unwrap_or_default().to_string_lossy();
        for lead in &rec.leads {
            // The file name comes from the header's lead name: one that is not a plain file
            // name cannot name a file of the record's folder.
            let name = format!("{stem}.{lead}");
            if paths::check_name(&name).is_err() {
                continue;
            }
            match annotation::read_annotations_if_present(&hea.with_file_name(&name)) {
                Ok(a) => waves += a.map_or(0, |a| a.len() as u64),
                Err(e) => warnings.push(RecordWarning {
                    kind: "wave_annotation_error".into(),
                    record: rec.id.clone(),
                    detail: e.to_string(),
                }),
            }
        }
        ann_summary
            .get_or_insert_with(AnnotationSummary::default)
            .wave_annotations = waves;
    }
    ann_summary
}

/// The record-level label and where it came from: the source's reference file (CinC 2017),
/// LUDB's `Rhythm:` comment, or else, for a record with rhythm annotations, a free-text
/// diagnosis of its header ([`labels::header_diagnosis`]) or the rhythm in force for most of
/// the record; for a record without, its `#Dx` codes or a free-text diagnosis.
fn record_label(
    ctx: &SourceContext,
    rec: &record::Record,
    changes: &[(u64, String)],
    warnings: &mut Vec<RecordWarning>,
) -> (Label, LabelOrigin) {
    let comments = &rec.header.comments;
    let n = rec.n_samples;
    let unknown = || Label {
        label: labels::UNKNOWN.into(),
        raw: vec![],
        unmapped: vec![],
    };
    let known = |l: Label, origin: LabelOrigin| {
        let origin = if l.label == labels::UNKNOWN {
            LabelOrigin::Unknown
        } else {
            origin
        };
        (l, origin)
    };
    let stated = labels::header_diagnosis(comments).map(|d| d.label());
    match ctx.src.layout {
        Layout::Cinc2017 => match ctx.reference.as_ref().and_then(|r| r.get(&rec.id)) {
            Some(class) => known(
                Label {
                    label: labels::cinc2017_label(class)
                        .unwrap_or(labels::UNKNOWN)
                        .to_string(),
                    raw: vec![class.clone()],
                    unmapped: vec![],
                },
                LabelOrigin::LabelFile,
            ),
            None => {
                warnings.push(RecordWarning {
                    kind: "missing_label".into(),
                    record: rec.id.clone(),
                    detail: format!(
                        "{}: no row for {}",
                        ctx.src
                            .reference
                            .as_deref()
                            .unwrap_or(Path::new("REFERENCE.csv"))
                            .display(),
                        rec.id
                    ),
                });
                (unknown(), LabelOrigin::Unknown)
            }
        },
        Layout::Ludb => known(labels::ludb_label(comments), LabelOrigin::Header),
        _ if !changes.is_empty() => match stated {
            Some(l) => (l, LabelOrigin::Header),
            None => {
                let w = segment::label_by_rhythm(changes, 0, n, None);
                (
                    Label {
                        label: w.label,
                        raw: w.raw,
                        unmapped: w.unmapped,
                    },
                    w.origin,
                )
            }
        },
        _ => match labels::dx_codes(comments).map(|c| labels::dx_label(&c)) {
            Some(l) if l.label != labels::UNKNOWN || stated.is_none() => {
                known(l, LabelOrigin::Header)
            }
            _ => match stated {
                Some(l) => (l, LabelOrigin::Header),
                None => (unknown(), LabelOrigin::Unknown),
            },
        },
    }
}

/// The signals to store: the record's ECG leads ([`crate::leads`]; the others skipped with a
/// `non_ecg_signals_skipped` warning), the leads asked for, in millivolts, at one rate (the
/// highest samples per frame of the leads kept: a lead with fewer samples per frame is held,
/// each sample repeated), resampled to the rate asked for. Returns (lead names, signals, rate).
fn output_signals(
    ctx: &SourceContext,
    hea: &Path,
    rec: &record::Record,
    warnings: &mut Vec<RecordWarning>,
) -> Result<(Vec<String>, Vec<Vec<f32>>, f64)> {
    let mut skipped: Vec<(usize, String)> = Vec::new();
    let mut ecg: Vec<usize> = Vec::new();
    for (i, (spec, lead)) in rec.header.signals.iter().zip(&rec.leads).enumerate() {
        match leads::not_ecg(lead, &spec.units, spec.to_millivolts().is_some()) {
            Some(why) => skipped.push((i, why)),
            None => ecg.push(i),
        }
    }
    let described = |v: &[(usize, String)]| {
        v.iter()
            .map(|(i, why)| format!("{} ({why})", rec.leads[*i]))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if ecg.is_empty() {
        return Err(DatasetError::signal(
            hea,
            "*",
            format!("no ECG signal: {}", described(&skipped)),
        ));
    }
    let sel: Vec<usize> = match &ctx.opts.leads {
        None => ecg,
        Some(want) => want
            .iter()
            .map(|w| {
                let found = rec.leads.iter().position(|l| l.eq_ignore_ascii_case(w));
                match found {
                    Some(i) if ecg.contains(&i) => Ok(i),
                    Some(i) => Err(DatasetError::signal(
                        hea,
                        w.clone(),
                        format!(
                            "not an ECG lead: {}",
                            skipped
                                .iter()
                                .find(|(j, _)| *j == i)
                                .map_or("", |(_, why)| why.as_str())
                        ),
                    )),
                    None => Err(DatasetError::signal(
                        hea,
                        w.clone(),
                        format!("lead not in record (it has {})", rec.leads.join(", ")),
                    )),
                }
            })
            .collect::<Result<_>>()?,
    };
    if !skipped.is_empty() {
        warnings.push(RecordWarning {
            kind: "non_ecg_signals_skipped".into(),
            record: rec.id.clone(),
            detail: format!("{}: skipped {}", hea.display(), described(&skipped)),
        });
    }
    let k_max = sel
        .iter()
        .map(|&i| rec.samples_per_frame(i))
        .max()
        .unwrap_or(1);
    let leads: Vec<String> = sel.iter().map(|&i| rec.leads[i].clone()).collect();
    let fs_in = rec.fs() * f64::from(k_max);
    if !(MIN_RATE_HZ..=MAX_RATE_HZ).contains(&fs_in) {
        return Err(DatasetError::signal(
            hea,
            "*",
            format!("sampling rate {fs_in} Hz is outside {MIN_RATE_HZ}–{MAX_RATE_HZ} Hz"),
        ));
    }
    // Holding slower leads to the fastest lead's rate may not exceed a record's samples.
    let out_samples = rec
        .n_samples
        .saturating_mul(u64::from(k_max))
        .saturating_mul(sel.len() as u64);
    if out_samples > record::MAX_RECORD_SAMPLES {
        return Err(DatasetError::signal(
            hea,
            "*",
            format!(
                "{} leads of {} frames at {k_max} samples per frame: more than the {} samples one record may hold",
                sel.len(),
                rec.n_samples,
                record::MAX_RECORD_SAMPLES
            ),
        ));
    }
    let mut signals = sel
        .iter()
        .map(|&i| {
            let mv = rec.lead_mv(i)?;
            Ok(hold(mv, rec.samples_per_frame(i), k_max))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut fs_out = fs_in;
    if let Some(hz) = ctx.opts.resample_hz
        && (fs_in - hz as f64).abs() > 1e-9
    {
        if fs_in.fract() != 0.0 {
            return Err(DatasetError::signal(
                hea,
                "*",
                format!("cannot resample a non-integer rate {fs_in} Hz"),
            ));
        }
        if fs_in > f64::from(u32::MAX) {
            return Err(DatasetError::signal(
                hea,
                "*",
                format!(
                    "cannot resample a rate of {fs_in} Hz (above {} Hz)",
                    u32::MAX
                ),
            ));
        }
        signals = crate::resample::resample(&signals, fs_in as u32, hz)
            .map_err(|e| DatasetError::signal(hea, "*", e))?;
        fs_out = hz as f64;
    }
    Ok((leads, signals, fs_out))
}

/// A lead of `k` samples per frame at `k_max` samples per frame: output sample `j` is input
/// sample `floor(j * k / k_max)` (sample and hold).
fn hold(v: Vec<f32>, k: u32, k_max: u32) -> Vec<f32> {
    if k == k_max || k == 0 {
        return v;
    }
    let n = v.len() / k as usize * k_max as usize;
    (0..n).map(|j| v[j * k as usize / k_max as usize]).collect()
}

/// The record's windows in its own sample positions: fixed windows (labelled by the record's
/// label or its rhythm annotations) or beat-centred windows, as the options ask.
fn record_windows(
    ctx: &SourceContext,
    rec: &record::Record,
    ann: &[Annotation],
    changes: &[(u64, String)],
    (label, origin): (&Label, LabelOrigin),
    atr: &Path,
    warnings: &mut Vec<RecordWarning>,
) -> Vec<Window> {
    let n = rec.n_samples;
    let fs_in = rec.fs();
    // Before the first rhythm annotation: a rhythm the header states for the whole record.
    let before = labels::header_diagnosis(&rec.header.comments)
        .filter(|d| d.course == labels::Course::Whole)
        .map(|d| d.label());
    let fixed = |secs: f64| -> Vec<Window> {
        segment::fixed_windows(n, window_samples(secs, fs_in))
            .into_iter()
            .map(|(start, len)| {
                if changes.is_empty() {
                    Window {
                        start,
                        len,
                        label: label.label.clone(),
                        raw: label.raw.clone(),
                        unmapped: label.unmapped.clone(),
                        origin,
                    }
                } else {
                    segment::label_by_rhythm(changes, start, len, before.as_ref())
                }
            })
            .collect()
    };
    match ctx.opts.segmentation {
        Segmentation::Windows { secs } => fixed(secs),
        Segmentation::Beats {
            secs,
            fallback_secs,
        } => {
            if ann.iter().any(|a| annotation::is_beat(a.symbol())) {
                let (w, dropped) = segment::beat_windows(ann, n, window_samples(secs, fs_in));
                if dropped > 0 {
                    warnings.push(RecordWarning {
                        kind: "duplicate_beat_window".into(),
                        record: rec.id.clone(),
                        detail: format!(
                            "{}: {dropped} beat(s) share a clamped window or lie past the end",
                            atr.display()
                        ),
                    });
                }
                w
            } else {
                fixed(fallback_secs)
            }
        }
    }
}

fn merge_annotations(into: &mut Option<AnnotationSummary>, from: AnnotationSummary) {
    let s = into.get_or_insert_with(AnnotationSummary::default);
    s.beats += from.beats;
    s.wave_annotations += from.wave_annotations;
    for (k, v) in from.beats_by_aami {
        *s.beats_by_aami.entry(k).or_default() += v;
    }
    for (k, v) in from.rhythm_changes {
        *s.rhythm_changes.entry(k).or_default() += v;
    }
}

fn age_summary(ages: &mut [u8], unknown: u64) -> AgeSummary {
    ages.sort_unstable();
    let median = match ages.len() {
        0 => None,
        n if n % 2 == 1 => Some(ages[n / 2] as f64),
        n => Some((ages[n / 2 - 1] as f64 + ages[n / 2] as f64) / 2.0),
    };
    AgeSummary {
        min: ages.first().copied(),
        median,
        max: ages.last().copied(),
        unknown,
    }
}

/// The lowest sampling rate (Hz) of a stored record.
pub const MIN_RATE_HZ: f64 = 1.0;
/// The highest sampling rate (Hz) of a stored record.
pub const MAX_RATE_HZ: f64 = 100_000.0;

/// Records per parallel batch: bounds memory while keeping both cores busy.
const BATCH: usize = 32;

/// Ingests every source found under `folders` into a new store at `out`.
///
/// Bad records are reported (through `progress` and in the manifest) and skipped. Fails only
/// when nothing at all could be ingested, or the store cannot be written; a failed ingest
/// leaves no store behind (and an existing store untouched).
pub fn ingest(
    folders: &[PathBuf],
    out: &Path,
    opts: &IngestOptions,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<Manifest> {
    let mut sources = Vec::new();
    let mut folder_errors = Vec::new();
    for f in folders {
        match layout::discover(f) {
            Ok(s) => sources.extend(s.into_iter().map(|s| (f.clone(), s))),
            Err(e) => folder_errors.push(FileError {
                file: f.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }
    let mut seen = BTreeSet::new();
    for (_, s) in &sources {
        if !seen.insert(s.id.clone()) {
            return Err(DatasetError::Layout {
                path: s.root.clone(),
                reason: format!(
                    "source id `{}` found twice; ingest each source folder once",
                    s.id
                ),
            });
        }
    }
    progress(Progress::Discovered {
        records: sources.iter().map(|(_, s)| s.headers.len() as u64).sum(),
    });

    let mut writer = StoreWriter::create(out, opts.force)?;
    let mut summaries = Vec::new();
    for (_, src) in &sources {
        let mut summary = SourceSummary {
            id: src.id.clone(),
            layout: serde_json::to_value(src.layout)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            folder: src.root.display().to_string(),
            license: src.license.clone(),
            ..Default::default()
        };
        let reference = match &src.reference {
            Some(p) => match labels::read_reference_csv(p) {
                Ok(r) => Some(r),
                Err(e) => {
                    summary.errors.push(FileError {
                        file: p.display().to_string(),
                        reason: e.to_string(),
                    });
                    None
                }
            },
            None => None,
        };
        let ctx = SourceContext {
            src,
            reference,
            opts,
        };
        let mut warnings = Vec::new();
        let mut ages = Vec::new();
        // One record per id: a second file with the same stem (`x.edf` beside `x.bdf`) is an
        // error, never a second record with the same segment ids.
        let mut taken: BTreeMap<String, &PathBuf> = BTreeMap::new();
        let mut records = Vec::with_capacity(src.headers.len());
        for h in &src.headers {
            let id = record::record_id(h);
            match taken.get(&id) {
                Some(first) => {
                    summary.skipped += 1;
                    summary.errors.push(FileError {
                        file: h.display().to_string(),
                        reason: format!(
                            "record id `{id}` is already taken by {} in this folder",
                            first.display()
                        ),
                    });
                }
                None => {
                    taken.insert(id, h);
                    records.push(h.clone());
                }
            }
        }
        for chunk in records.chunks(BATCH) {
            let results: Vec<(PathBuf, Result<RecordOutput>)> = chunk
                .par_iter()
                .map(|h| {
                    // A panic in a reader (a third party's parser included) is that record's
                    // error, never the end of the ingest.
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        process_record(&ctx, h)
                    }))
                    .unwrap_or_else(|_| {
                        Err(DatasetError::signal(
                            h,
                            "*",
                            "the reader failed on this file (a panic, caught)",
                        ))
                    });
                    let id = record::record_id(h);
                    let err = r.as_ref().err().map(|e| e.to_string());
                    progress(Progress::Record {
                        source: &src.id,
                        record: &id,
                        error: err.as_deref(),
                    });
                    (h.clone(), r)
                })
                .collect();
            let mut batch = Vec::new();
            for (hea, r) in results {
                match r {
                    Ok(o) => {
                        summary.records += 1;
                        summary.segments += o.segments.len() as u64;
                        summary.signal_bytes += o.bytes;
                        *summary
                            .records_by_label
                            .entry(o.label.label.clone())
                            .or_default() += 1;
                        for raw in o.label.raw.iter().collect::<BTreeSet<_>>() {
                            *summary.records_by_raw_label.entry(raw.clone()).or_default() += 1;
                        }
                        for code in &o.unmapped {
                            *summary.unmapped_codes.entry(code.clone()).or_default() += 1;
                        }
                        for s in &o.segments {
                            *summary
                                .segments_by_label
                                .entry(s.label.clone())
                                .or_default() += 1;
                        }
                        let sex = o.demographics.sex.map_or("unknown", |s| s.code());
                        *summary.sex.entry(sex.to_string()).or_default() += 1;
                        match o.demographics.age {
                            Some(a) => ages.push(a),
                            None => summary.age.unknown += 1,
                        }
                        for (k, v) in o.segments_by_label_origin {
                            *summary.segments_by_label_origin.entry(k).or_default() += v;
                        }
                        if let Some(a) = o.annotations {
                            merge_annotations(&mut summary.annotations, a);
                        }
                        warnings.extend(o.warnings);
                        batch.extend(o.segments);
                    }
                    Err(e) => {
                        summary.skipped += 1;
                        summary.errors.push(FileError {
                            file: hea.display().to_string(),
                            reason: e.to_string(),
                        });
                        // Its segment headers are not records of their own: say that they
                        // were not ingested either, so none of them is lost unseen.
                        for seg in src.segments.get(&hea).into_iter().flatten() {
                            summary.errors.push(FileError {
                                file: seg.display().to_string(),
                                reason: format!(
                                    "not ingested: a segment of the multi-segment record {}, \
                                     which was refused",
                                    hea.display()
                                ),
                            });
                        }
                    }
                }
            }
            writer.write(&src.id, &batch)?;
        }
        summary.age = age_summary(&mut ages, summary.age.unknown);
        summary.warnings = summarize_warnings(&warnings);
        summaries.push(summary);
    }

    let records: u64 = summaries.iter().map(|s| s.records).sum();
    let segments: u64 = summaries.iter().map(|s| s.segments).sum();
    let skipped: u64 = summaries.iter().map(|s| s.skipped).sum();
    if records == 0 {
        let mut reasons: Vec<String> = folder_errors.iter().map(|e| e.reason.clone()).collect();
        for s in &summaries {
            reasons.extend(s.errors.iter().map(|e| e.reason.clone()));
        }
        return Err(DatasetError::Layout {
            path: out.to_path_buf(),
            reason: format!(
                "nothing could be ingested; no store written:\n  {}",
                reasons.join("\n  ")
            ),
        });
    }
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let manifest = Manifest {
        schema_version: SCHEMA_VERSION,
        tool: format!("ecgfed {}", env!("CARGO_PKG_VERSION")),
        created,
        site: opts.site.clone(),
        settings: IngestSettings {
            segmentation: opts.segmentation,
            resample_hz: opts.resample_hz,
            leads: opts.leads.clone(),
        },
        files: vec![],
        sources: summaries,
        records,
        segments,
        skipped,
        errors: folder_errors,
    };
    writer.finish(manifest)
}
