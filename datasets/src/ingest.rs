//! Ingest: source folders → records → labelled segments → a site store, in parallel, with
//! per-file errors reported and skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::annotation::{self, Annotation};
use crate::demographics::{self, Demographics};
use crate::error::{DatasetError, Result};
use crate::header::read_header;
use crate::labels::{self, Label};
use crate::layout::{self, Layout, SourceFolder};
use crate::paths;
use crate::record::{self, RecordWarning};
use crate::segment::{self, Segment, Segmentation, Window};
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
    let header = read_header(hea)?;
    let rec = record::load_with_header(header, ctx.src.layout.verification())?;
    let mut warnings = rec.warnings.clone();
    let demographics = demographics::from_comments(&rec.header.comments);
    // Annotations (MIT .atr) where present (opened under the rules of `paths`: a link out of
    // the folder or a special file is an error for the record).
    let atr = hea.with_extension("atr");
    let ann: Vec<Annotation> = annotation::read_annotations_if_present(&atr)?.unwrap_or_default();
    let changes = segment::rhythm_changes(&ann);
    let ann_summary = summarise_annotations(ctx, hea, &rec, &ann, &changes, &mut warnings);
    let label = record_label(ctx, &rec, &changes, &mut warnings);
    let (leads, signals, fs_out) = output_signals(ctx, hea, &rec)?;
    let windows = record_windows(ctx, &rec, &ann, &changes, &label, &atr, &mut warnings);

    let fs_in = rec.fs();
    let ratio = fs_out / fs_in;
    let out_len = signals.first().map_or(0, Vec::len);
    let patient = layout::patient_of(&ctx.src.id, ctx.src.layout, &rec.id);
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

/// The record-level label: from the source's reference file (CinC 2017), its comments (LUDB,
/// the CinC 2020/2021 `Dx` codes) or its rhythm annotations.
fn record_label(
    ctx: &SourceContext,
    rec: &record::Record,
    changes: &[(u64, String)],
    warnings: &mut Vec<RecordWarning>,
) -> Label {
    let comments = &rec.header.comments;
    let n = rec.n_samples;
    match ctx.src.layout {
        Layout::Cinc2017 => match ctx.reference.as_ref().and_then(|r| r.get(&rec.id)) {
            Some(class) => Label {
                label: labels::cinc2017_label(class)
                    .unwrap_or(labels::UNKNOWN)
                    .to_string(),
                raw: vec![class.clone()],
                unmapped: vec![],
            },
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
                Label {
                    label: labels::UNKNOWN.into(),
                    raw: vec![],
                    unmapped: vec![],
                }
            }
        },
        Layout::Ludb => labels::ludb_label(comments),
        _ if !changes.is_empty() => {
            let w = segment::label_by_rhythm(changes, 0, n);
            Label {
                label: w.label,
                raw: w.raw,
                unmapped: w.unmapped,
            }
        }
        _ => match labels::dx_codes(comments) {
            Some(codes) => labels::dx_label(&codes),
            None => Label {
                label: labels::UNKNOWN.into(),
                raw: vec![],
                unmapped: vec![],
            },
        },
    }
}

/// The signals to store: physical units, the leads asked for, resampled to the rate asked
/// for. Returns (lead names, signals, rate).
fn output_signals(
    ctx: &SourceContext,
    hea: &Path,
    rec: &record::Record,
) -> Result<(Vec<String>, Vec<Vec<f32>>, f64)> {
    let mut leads = rec.leads.clone();
    let mut signals = rec.physical()?;
    if let Some(want) = &ctx.opts.leads {
        let mut sel = Vec::with_capacity(want.len());
        for w in want {
            let i = leads
                .iter()
                .position(|l| l.eq_ignore_ascii_case(w))
                .ok_or_else(|| {
                    DatasetError::signal(
                        hea,
                        w.clone(),
                        format!("lead not in record (it has {})", leads.join(", ")),
                    )
                })?;
            sel.push(i);
        }
        leads = sel.iter().map(|&i| leads[i].clone()).collect();
        signals = sel
            .iter()
            .map(|&i| std::mem::take(&mut signals[i]))
            .collect();
    }
    let fs_in = rec.fs();
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

/// The record's windows in its own sample positions: fixed windows (labelled by the record's
/// label or its rhythm annotations) or beat-centred windows, as the options ask.
fn record_windows(
    ctx: &SourceContext,
    rec: &record::Record,
    ann: &[Annotation],
    changes: &[(u64, String)],
    label: &Label,
    atr: &Path,
    warnings: &mut Vec<RecordWarning>,
) -> Vec<Window> {
    let n = rec.n_samples;
    let fs_in = rec.fs();
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
                    }
                } else {
                    segment::label_by_rhythm(changes, start, len)
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
        for chunk in src.headers.chunks(BATCH) {
            let results: Vec<(PathBuf, Result<RecordOutput>)> = chunk
                .par_iter()
                .map(|h| {
                    let r = process_record(&ctx, h);
                    let id = h
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
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
