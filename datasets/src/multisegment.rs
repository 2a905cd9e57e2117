//! Multi-segment WFDB records (`header(5)`: a header whose record line reads `name/n`), read
//! as one continuous record.
//!
//! Each segment is an ordinary record of the same folder, loaded and verified as such; a `~`
//! segment is a gap. The record's signals are those of its layout: the first segment when
//! it has length 0 (a *layout segment*, as in the MIMIC waveform databases, whose signal
//! lines name no file), otherwise the first segment with samples (a *fixed layout*: every
//! segment has the same signals in the same order). A segment's signal joins the layout
//! signal of the same name (fixed layout: of the same position); samples that no segment
//! supplies, gaps included, are NaN. Each segment is converted to millivolts with its own
//! gain and baseline, so only voltage signals are joined (the others are not ECG: see
//! [`crate::leads`]).
//!
//! Refused, with an error naming the segment: a segment named twice, a segment header that is missing, nested
//! (multi-segment itself), at another sampling frequency, with another length than its
//! segment line, with another number of signals (fixed layout), or with other samples per
//! frame than the layout for a signal.

use std::path::Path;

use crate::error::{DatasetError, Result};
use crate::header::{AnyHeader, Header, MultiHeader, read_any_header};
use crate::record::{MAX_RECORD_SAMPLES, Record, RecordWarning, Verification, lead_names};

fn seg_err(path: &Path, line: usize, reason: impl Into<String>) -> DatasetError {
    DatasetError::Header {
        path: path.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

/// Loads multi-segment record `m` as one record (see the module documentation).
pub(crate) fn load(m: MultiHeader, verification: Verification) -> Result<Record> {
    let dir = m.path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let id = m
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Segment headers first: the layout, and every check that needs no sample. A segment
    // named twice is refused (its header would be parsed and held once per line).
    let mut headers: Vec<Option<Header>> = Vec::with_capacity(m.segments.len().min(4096));
    let mut names = std::collections::HashSet::new();
    for seg in &m.segments {
        let Some(name) = &seg.name else {
            headers.push(None);
            continue;
        };
        if !names.insert(name.as_str()) {
            return Err(seg_err(
                &m.path,
                seg.line,
                format!("segment {name} is named twice"),
            ));
        }
        let hea = dir.join(format!("{name}.hea"));
        let h = match read_any_header(&hea) {
            Ok(AnyHeader::Single(h)) => h,
            Ok(AnyHeader::Multi(_)) => {
                return Err(seg_err(
                    &m.path,
                    seg.line,
                    format!("segment {name} is itself a multi-segment record"),
                ));
            }
            Err(e) => {
                return Err(seg_err(&m.path, seg.line, format!("segment {name}: {e}")));
            }
        };
        if (h.fs - m.fs).abs() > 1e-9 * m.fs.max(1.0) {
            return Err(seg_err(
                &m.path,
                seg.line,
                format!(
                    "segment {name} is sampled at {} Hz, the record at {} Hz",
                    h.fs, m.fs
                ),
            ));
        }
        if h.n_samples.is_some_and(|n| n != seg.n_samples) {
            return Err(seg_err(
                &m.path,
                seg.line,
                format!(
                    "segment {name} holds {} frames by its header, {} by the segment line",
                    h.n_samples.unwrap_or(0),
                    seg.n_samples
                ),
            ));
        }
        headers.push(Some(h));
    }
    let layout_segment = matches!(
        (m.segments.first(), headers.first()),
        (Some(s), Some(Some(_))) if s.n_samples == 0
    );
    let layout = headers
        .iter()
        .zip(&m.segments)
        .find_map(|(h, s)| h.as_ref().filter(|_| layout_segment || s.n_samples > 0))
        .cloned()
        .ok_or_else(|| seg_err(&m.path, m.line, "no segment names the record's signals"))?;
    if layout.signals.len() != m.n_signals {
        return Err(seg_err(
            &m.path,
            m.line,
            format!(
                "record line announces {} signals, its layout {} has {}",
                m.n_signals,
                layout.record_name,
                layout.signals.len()
            ),
        ));
    }
    let total = m
        .segments
        .iter()
        .try_fold(0u64, |t, s| t.checked_add(s.n_samples))
        .ok_or_else(|| seg_err(&m.path, m.line, "the segments' lengths overflow"))?;
    if m.n_samples.is_some_and(|n| n != total) {
        return Err(seg_err(
            &m.path,
            m.line,
            format!(
                "record line announces {} frames, its segments add up to {total}",
                m.n_samples.unwrap_or(0)
            ),
        ));
    }
    let leads = lead_names(&layout);
    let spf: Vec<u64> = layout
        .signals
        .iter()
        .map(|s| u64::from(s.samples_per_frame))
        .collect();
    let volts: Vec<bool> = layout
        .signals
        .iter()
        .map(|s| s.to_millivolts().is_some())
        .collect();
    let slots: u64 = spf
        .iter()
        .zip(&volts)
        .filter(|(_, v)| **v)
        .map(|(k, _)| k)
        .sum();
    if total
        .checked_mul(slots.max(1))
        .is_none_or(|n| n > MAX_RECORD_SAMPLES)
    {
        return Err(seg_err(
            &m.path,
            m.line,
            format!(
                "{total} frames of {slots} samples: more than the {MAX_RECORD_SAMPLES} samples one record may hold"
            ),
        ));
    }
    let mut joined: Vec<Option<Vec<f32>>> = spf
        .iter()
        .zip(&volts)
        .map(|(&k, &v)| v.then(|| vec![f32::NAN; (total * k) as usize]))
        .collect();

    let mut warnings = Vec::new();
    let mut bytes_read = 0u64;
    let mut comments = m.comments.clone();
    let mut seen_segment_comments = false;
    let mut at = 0u64;
    for (seg, h) in m.segments.iter().zip(headers) {
        let start = at;
        at += seg.n_samples;
        let (Some(h), true) = (h, seg.n_samples > 0) else {
            continue;
        };
        let name = h.record_name.clone();
        if !layout_segment && h.signals.len() != layout.signals.len() {
            return Err(seg_err(
                &m.path,
                seg.line,
                format!(
                    "segment {name} has {} signals, the fixed layout {}",
                    h.signals.len(),
                    layout.signals.len()
                ),
            ));
        }
        if !seen_segment_comments {
            // The first segment's comments follow the master header's (v102s states its
            // rhythm in its segments only).
            seen_segment_comments = true;
            for c in &h.comments {
                if !comments.contains(c) {
                    comments.push(c.clone());
                }
            }
        }
        let rec = crate::wfdb::load_with_header(h, verification)
            .map_err(|e| seg_err(&m.path, seg.line, format!("segment {name}: {e}")))?;
        bytes_read += rec.bytes_read;
        warnings.extend(rec.warnings.iter().map(|w| RecordWarning {
            kind: w.kind.clone(),
            record: id.clone(),
            detail: format!("segment {name}: {}", w.detail),
        }));
        for (j, lead) in rec.leads.iter().enumerate() {
            let target = if layout_segment {
                leads.iter().position(|l| l == lead)
            } else {
                Some(j)
            };
            let Some(i) = target else {
                warnings.push(RecordWarning {
                    kind: "signal_not_in_layout".into(),
                    record: id.clone(),
                    detail: format!("segment {name}: signal {lead} is not in the layout: dropped"),
                });
                continue;
            };
            if u64::from(rec.samples_per_frame(j)) != spf[i] {
                return Err(seg_err(
                    &m.path,
                    seg.line,
                    format!(
                        "segment {name}: signal {lead} has {} samples per frame, the layout {}",
                        rec.samples_per_frame(j),
                        spf[i]
                    ),
                ));
            }
            let Some(out) = joined[i].as_mut() else {
                continue;
            };
            match rec.lead_mv(j) {
                Ok(mv) => {
                    // Never more than the segment line's frames: a segment whose header gives
                    // no length may hold more, which must not spill into the next segment.
                    let from = ((start * spf[i]) as usize).min(out.len());
                    let n = mv
                        .len()
                        .min((seg.n_samples * spf[i]) as usize)
                        .min(out.len() - from);
                    out[from..from + n].copy_from_slice(&mv[..n]);
                }
                Err(e) => warnings.push(RecordWarning {
                    kind: "segment_signal_not_voltage".into(),
                    record: id.clone(),
                    detail: format!("segment {name}: {e}: left as a gap"),
                }),
            }
        }
    }
    let header = Header {
        path: m.path.clone(),
        record_name: m.record_name.clone(),
        fs: m.fs,
        n_samples: Some(total),
        base_time: m.base_time.clone(),
        base_date: m.base_date.clone(),
        signals: layout.signals,
        comments,
    };
    Ok(Record::from_physical(
        id, header, joined, total, bytes_read, warnings, None,
    ))
}
