//! EDF, EDF+ and BDF(+) recordings (`.edf`, `.bdf`) read into a [`Record`].
//!
//! Our own reader, written from the EDF specification (Kemp et al. 1992), its EDF+ extension
//! (Kemp and Olivan 2003) and BioSemi's BDF: the Rust crates for EDF are first releases by
//! single authors (`edfplus` 0.1.0, `edf-rs` 0.2.0) or unmaintained (`edf-reader` 0.6.0), and
//! the format is small. Values are checked against pyedflib's decoding
//! (`bench/edf_compare.py`, `datasets/tests/edf.rs`).
//!
//! Mapping to a record:
//!
//! - A 256-byte header, then 256 bytes per signal; then data records, each holding
//!   `samples_per_record[i]` little-endian samples of every signal in turn (int16 for EDF,
//!   int24 for BDF).
//! - Physical value = (digital − digital_min) × (physical_max − physical_min) /
//!   (digital_max − digital_min) + physical_min, in the signal's physical dimension (`uV`,
//!   `mV`, `V` are voltages, converted to mV).
//! - A *frame* is `g / duration` seconds, where `g` is the greatest common divisor of the data
//!   signals' samples per record: the record's rate is `g / duration` Hz and signal `i` has
//!   `samples_per_record[i] / g` samples per frame (a multi-frequency record in WFDB's terms).
//! - EDF+ annotation signals (`EDF Annotations`, `BDF Annotations`) are not signals: they are
//!   read for the time-keeping annotation of each data record. In a discontinuous file
//!   (`EDF+D`) each data record is placed at its onset, and the time between records is a gap
//!   (NaN); onsets must increase and records may not overlap.
//! - Demographics come only from EDF+'s structured patient field (`code sex birthdate name`):
//!   sex `M`/`F`, and age in whole years from the birth date to the recording's start date.
//!   The patient code (when not `X`) is the record's patient id at the site; the name and the
//!   birth date are never kept. Plain EDF's free-text patient field is not read.

use std::path::Path;

use crate::demographics::age_between;
use crate::error::{DatasetError, Result};
use crate::header::{Header, SignalSpec};
use crate::paths;
use crate::record::{MAX_RECORD_SAMPLES, Record, RecordWarning};

/// A parse or consistency error about `path`.
fn bad(path: &Path, reason: impl Into<String>) -> DatasetError {
    DatasetError::signal(path, "*", reason.into())
}

/// One signal's header fields.
#[derive(Debug, Clone)]
struct EdfSignal {
    label: String,
    dimension: String,
    physical_min: f64,
    physical_max: f64,
    digital_min: f64,
    digital_max: f64,
    samples_per_record: usize,
    annotations: bool,
}

/// An ASCII field: trimmed text (bytes outside printable ASCII become `?`).
fn field(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if (32..127).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect::<String>()
        .trim()
        .to_string()
}

fn number<T: std::str::FromStr>(path: &Path, what: &str, bytes: &[u8]) -> Result<T> {
    let text = field(bytes);
    text.parse()
        .map_err(|_| bad(path, format!("{what} `{text}` is not a number")))
}

/// Whether `path` names an EDF or BDF file (by extension).
pub fn is_edf(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("edf") || e.eq_ignore_ascii_case("bdf"))
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Month of an EDF+ date (`02-MAY-1951`).
fn month(m: &str) -> Option<u32> {
    let months = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    months
        .iter()
        .position(|x| x.eq_ignore_ascii_case(m))
        .map(|i| i as u32 + 1)
}

/// An EDF+ date `dd-MMM-yyyy` as (year, month, day).
fn edf_plus_date(s: &str) -> Option<(i32, u32, u32)> {
    if !s.is_ascii() {
        return None;
    }
    let mut it = s.split('-');
    let d: u32 = it.next()?.parse().ok()?;
    let m = month(it.next()?)?;
    let y: i32 = it.next()?.parse().ok()?;
    (it.next().is_none() && (1..=31).contains(&d)).then_some((y, m, d))
}

/// The header's start date `dd.mm.yy` (years 85–99 are 19xx, the others 20xx).
fn start_date(s: &str) -> Option<(i32, u32, u32)> {
    let mut it = s.split('.');
    let d: u32 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let yy: i32 = it.next()?.parse().ok()?;
    let y = if yy >= 85 { 1900 + yy } else { 2000 + yy };
    ((1..=31).contains(&d) && (1..=12).contains(&m)).then_some((y, m, d))
}

/// The onset (seconds) of a data record from its annotation signal's first TAL
/// (`+onset\x14\x14\0...`).
fn record_onset(bytes: &[u8]) -> Option<f64> {
    let end = bytes.iter().position(|&b| b == 0x14)?;
    let text = std::str::from_utf8(&bytes[..end]).ok()?;
    let v: f64 = text.parse().ok()?;
    v.is_finite().then_some(v)
}

/// Reads the EDF/BDF file at `path` (opened under the rules of [`paths`], at most
/// [`paths::MAX_FILE_BYTES`]) as a record.
pub fn load(path: &Path) -> Result<Record> {
    let bytes = paths::open_listed(path)
        .and_then(|f| f.read_all(paths::MAX_FILE_BYTES))
        .map_err(|e| e.at(path))?;
    parse(&bytes, path)
}

/// Parses an EDF/BDF file's bytes; `path` names it in errors and gives the record id.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Record> {
    if bytes.len() < 256 {
        return Err(bad(
            path,
            format!(
                "{} bytes: shorter than the 256-byte EDF header",
                bytes.len()
            ),
        ));
    }
    let bdf = bytes[0] == 0xff && &bytes[1..8] == b"BIOSEMI";
    if !bdf && field(&bytes[..8]) != "0" {
        return Err(bad(
            path,
            "not an EDF file (version field is not `0`) nor a BDF file (`\\xffBIOSEMI`)",
        ));
    }
    let bps = if bdf { 3 } else { 2 };
    let patient = field(&bytes[8..88]);
    let recording = field(&bytes[88..168]);
    let start = field(&bytes[168..176]);
    let header_bytes: usize = number(path, "header size", &bytes[184..192])?;
    let reserved = field(&bytes[192..236]);
    let plus = reserved.starts_with("EDF+") || reserved.starts_with("BDF+");
    let discontinuous = plus && reserved[4..].starts_with('D');
    let n_records: i64 = number(path, "number of data records", &bytes[236..244])?;
    let duration: f64 = number(path, "data record duration", &bytes[244..252])?;
    let ns: usize = number(path, "number of signals", &bytes[252..256])?;
    if ns > 4096 || header_bytes != 256 * (ns + 1) {
        return Err(bad(
            path,
            format!("header size {header_bytes} does not match {ns} signals (256 × (ns + 1))"),
        ));
    }
    if bytes.len() < header_bytes {
        return Err(bad(
            path,
            format!("truncated header: {} of {header_bytes} bytes", bytes.len()),
        ));
    }
    let sig = |offset: usize, width: usize, i: usize| {
        let at = 256 + offset * ns + i * width;
        &bytes[at..at + width]
    };
    let mut signals = Vec::with_capacity(ns);
    for i in 0..ns {
        let label = field(sig(0, 16, i));
        let annotations = plus
            && (label.eq_ignore_ascii_case("EDF Annotations")
                || label.eq_ignore_ascii_case("BDF Annotations"));
        let num = |what: &str, offset: usize| -> Result<f64> {
            let v: f64 = number(
                path,
                &format!("signal {i} ({label}) {what}"),
                sig(offset, 8, i),
            )?;
            if v.is_finite() {
                Ok(v)
            } else {
                Err(bad(
                    path,
                    format!("signal {i} ({label}) {what} is not finite"),
                ))
            }
        };
        let s = EdfSignal {
            dimension: field(sig(96, 8, i)),
            physical_min: num("physical minimum", 104)?,
            physical_max: num("physical maximum", 112)?,
            digital_min: num("digital minimum", 120)?,
            digital_max: num("digital maximum", 128)?,
            samples_per_record: number(
                path,
                &format!("signal {i} ({label}) samples per record"),
                sig(216, 8, i),
            )?,
            annotations,
            label,
        };
        if !s.annotations && (s.digital_max <= s.digital_min || s.physical_max == s.physical_min) {
            return Err(bad(
                path,
                format!(
                    "signal {i} ({}): digital range [{}, {}] or physical range [{}, {}] is empty",
                    s.label, s.digital_min, s.digital_max, s.physical_min, s.physical_max
                ),
            ));
        }
        signals.push(s);
    }
    let record_bytes = signals
        .iter()
        .try_fold(0usize, |acc, s| acc.checked_add(s.samples_per_record))
        .and_then(|n| n.checked_mul(bps))
        .filter(|&b| b > 0 && b as u64 <= paths::MAX_FILE_BYTES)
        .ok_or_else(|| {
            bad(
                path,
                "data records hold no samples, or more than a file may",
            )
        })?;
    let available = (bytes.len() - header_bytes) / record_bytes;
    let n_records = if n_records < 0 {
        available
    } else {
        let n = usize::try_from(n_records).unwrap_or(usize::MAX);
        if n > available {
            return Err(bad(
                path,
                format!(
                    "truncated: header announces {n} data records of {record_bytes} bytes, the file holds {available}"
                ),
            ));
        }
        n
    };
    let data_signals: Vec<usize> = (0..ns).filter(|&i| !signals[i].annotations).collect();
    if data_signals.is_empty() {
        return Err(bad(path, "no signals, only annotations"));
    }
    if !(duration.is_finite() && duration > 0.0) {
        return Err(bad(
            path,
            format!("data record duration {duration} is not positive"),
        ));
    }
    let g = data_signals
        .iter()
        .map(|&i| signals[i].samples_per_record)
        .fold(0, gcd);
    if g == 0 {
        return Err(bad(path, "a data signal has 0 samples per record"));
    }
    let fs = g as f64 / duration;
    if !fs.is_finite() {
        return Err(bad(
            path,
            format!("data record duration {duration} s is too short"),
        ));
    }

    // Where each data record starts, in frames (EDF+D: at its onset).
    let annotation_signal = (0..ns).find(|&i| signals[i].annotations);
    let offsets: Vec<usize> = if discontinuous {
        let ann = annotation_signal.ok_or_else(|| {
            bad(
                path,
                "EDF+D without an annotation signal to time its records",
            )
        })?;
        let ann_at: usize = signals[..ann]
            .iter()
            .map(|s| s.samples_per_record * bps)
            .sum();
        let first = header_bytes;
        let mut out = Vec::with_capacity(n_records);
        let mut next = 0usize;
        let mut origin = None;
        for r in 0..n_records {
            let at = first + r * record_bytes + ann_at;
            let tal = &bytes[at..at + signals[ann].samples_per_record * bps];
            let onset = record_onset(tal)
                .ok_or_else(|| bad(path, format!("data record {r}: no time-keeping annotation")))?;
            let origin = *origin.get_or_insert(onset);
            let frame = ((onset - origin) * fs).round();
            if !(frame >= next as f64 && frame < 1e12) {
                return Err(bad(
                    path,
                    format!(
                        "data record {r}: onset {onset} s overlaps or precedes the record before it"
                    ),
                ));
            }
            out.push(frame as usize);
            next = frame as usize + g;
        }
        out
    } else {
        (0..n_records).map(|r| r * g).collect()
    };
    let frames = offsets.last().map_or(0, |&o| o + g);
    let total: usize = data_signals
        .iter()
        .map(|&i| signals[i].samples_per_record / g)
        .sum::<usize>()
        .saturating_mul(frames);
    if total as u64 > MAX_RECORD_SAMPLES || total == usize::MAX {
        return Err(bad(
            path,
            format!("{total} samples: more than the {MAX_RECORD_SAMPLES} one record may hold"),
        ));
    }

    // Decode: every data signal into its own vector, in physical units (mV when a voltage).
    let mut out: Vec<Option<Vec<f32>>> = Vec::with_capacity(data_signals.len());
    let mut specs = Vec::with_capacity(data_signals.len());
    for &i in &data_signals {
        let s = &signals[i];
        let k = s.samples_per_record / g;
        let spec = SignalSpec::converted(path, s.label.clone(), s.dimension.clone(), k as u32);
        let Some(to_mv) = spec.to_millivolts() else {
            out.push(None);
            specs.push(spec);
            continue;
        };
        let scale = (s.physical_max - s.physical_min) / (s.digital_max - s.digital_min);
        let at_in_record: usize = signals[..i]
            .iter()
            .map(|s| s.samples_per_record * bps)
            .sum();
        let mut v = vec![f32::NAN; frames * k];
        for (r, &offset) in offsets.iter().enumerate() {
            let at = header_bytes + r * record_bytes + at_in_record;
            let chunk = &bytes[at..at + s.samples_per_record * bps];
            let dst = &mut v[offset * k..offset * k + s.samples_per_record];
            for (d, c) in dst.iter_mut().zip(chunk.chunks_exact(bps)) {
                let digital = if bdf {
                    i32::from_le_bytes([0, c[0], c[1], c[2]]) >> 8
                } else {
                    i16::from_le_bytes([c[0], c[1]]) as i32
                };
                let phys = (digital as f64 - s.digital_min) * scale + s.physical_min;
                *d = (phys * to_mv) as f32;
            }
        }
        out.push(Some(v));
        specs.push(spec);
    }

    // EDF+ patient field: code sex birthdate name (X for unknown).
    let mut comments = Vec::new();
    let mut patient_code = None;
    // Only a well-formed EDF+ patient field is read: four or more subfields, sex M/F/X and a
    // date or X (a non-compliant field such as `Jane Doe 1960` is free text: never read).
    let parts: Vec<&str> = patient.split_whitespace().collect();
    let structured = parts.len() >= 4
        && matches!(parts[1], "M" | "F" | "X")
        && (parts[2] == "X" || edf_plus_date(parts[2]).is_some());
    if plus && structured {
        if let Some(code) = parts.first().filter(|c| **c != "X") {
            patient_code = Some(code.to_string());
        }
        if let Some(sex) = parts.get(1).filter(|s| matches!(**s, "M" | "F")) {
            comments.push(format!("<sex>: {sex}"));
        }
        let at = recording
            .split_whitespace()
            .nth(1)
            .and_then(edf_plus_date)
            .or_else(|| start_date(&start));
        if let (Some(b), Some(at)) = (parts.get(2).and_then(|b| edf_plus_date(b)), at)
            && let Some(age) = age_between(b, at)
        {
            comments.push(format!("<age>: {age}"));
        }
    }
    let id = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut warnings = Vec::new();
    if discontinuous && offsets.windows(2).any(|w| w[1] > w[0] + g) {
        warnings.push(RecordWarning {
            kind: "edf_discontinuous".into(),
            record: id.clone(),
            detail: format!(
                "{}: EDF+D with gaps between data records; the gaps are NaN",
                path.display()
            ),
        });
    }
    let header = Header {
        path: path.to_path_buf(),
        record_name: id.clone(),
        fs,
        n_samples: Some(frames as u64),
        base_time: Some(field(&bytes[176..184])),
        base_date: Some(start),
        signals: specs,
        comments,
    };
    Ok(Record::from_physical(
        id,
        header,
        out,
        frames as u64,
        bytes.len() as u64,
        warnings,
        patient_code,
    ))
}
