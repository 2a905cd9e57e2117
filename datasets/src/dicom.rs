//! DICOM waveform ECG files (`.dcm`, or any file with the `DICM` signature) read into a
//! [`Record`] with the dicom-rs crates (`dicom-object`).
//!
//! Accepted: the 12-Lead ECG (1.2.840.10008.5.1.4.1.1.9.1.1), General ECG (…9.1.2) and
//! Ambulatory ECG (…9.1.3) Waveform Storage SOP classes; any other SOP class is refused.
//!
//! Mapping to a record (checked against pydicom's `waveform_array(as_raw=False)`):
//!
//! - The record is the first multiplex group of the Waveform Sequence (5400,0100) that is not
//!   a median or representative beat (its Multiplex Group Label contains `MEDIAN` or
//!   `REPRESENTATIVE`): those are computed beats, not a recording. Other recording groups are
//!   named in a `dicom_group_skipped` warning.
//! - Samples are multiplexed channel by channel within each sample (little-endian), of the
//!   group's Waveform Bits Allocated and Sample Interpretation: `SB`/`UB` (8 bits), `SS`/`US`
//!   (16), `SL`/`UL` (32). µ-law and A-law (`MB`, `AB`) are refused.
//! - Value = raw × Channel Sensitivity × Channel Sensitivity Correction Factor + Channel
//!   Baseline, in the units of the Channel Sensitivity Units Sequence (UCUM `uV`, `mV`, `V`),
//!   converted to mV. A channel in other units is not ECG (the mixed-signal rules apply).
//! - Lead names come from the Channel Source Sequence: SCP-ECG (`5.6.3-9-N`) and MDC (`2:N`)
//!   lead codes map to `I`, `II`, `III`, `aVR`, `aVL`, `aVF`, `V1`–`V6`; other codes keep their
//!   Code Meaning without a leading `Lead ` and a trailing parenthesis.
//! - Patient: Patient ID is the patient id at the site (the name and birth date are never
//!   kept); sex from Patient's Sex (`M`/`F`); age from Patient's Age (`042Y`; months, weeks and
//!   days under a year count as 0), else whole years from Patient's Birth Date to the Study
//!   Date.
//! - Labels: each Waveform Annotation's Unformatted Text Value is a header comment (the
//!   diagnosis phrase table applies; a text that reads as a `Dx:` line is dropped, so free
//!   text never becomes codes); coded annotations whose Concept Name is a SNOMED CT code
//!   (scheme `SCT`, digits only) become a `Dx:` comment, mapped as the CinC `#Dx` codes are.
//! - Samples equal to the group's Waveform Padding Value are NaN.
//! - Before the parser sees the file, every element length it declares is checked against the
//!   bytes that remain (dicom-parser reserves a buffer of the declared length before reading).
//! - Channel Sample Skew and the group's time offset are not applied (every file seen writes
//!   0).

use std::io::Cursor;
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;
use dicom_object::file::ReadPreamble;
use dicom_object::mem::InMemDicomObject;

use crate::demographics::{age_between, yyyymmdd};
use crate::error::{DatasetError, Result};
use crate::header::{Header, SignalSpec};
use crate::labels;
use crate::paths;
use crate::record::{Record, RecordWarning};

/// The ECG waveform storage SOP classes accepted: (UID, name).
pub const ECG_SOP_CLASSES: [(&str, &str); 3] = [
    (
        "1.2.840.10008.5.1.4.1.1.9.1.1",
        "12-Lead ECG Waveform Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.9.1.2",
        "General ECG Waveform Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.9.1.3",
        "Ambulatory ECG Waveform Storage",
    ),
];

fn bad(path: &Path, reason: impl Into<String>) -> DatasetError {
    DatasetError::signal(path, "*", reason.into())
}

/// Whether `path` names a DICOM file: extension `.dcm`, or no extension (or an all-digit one,
/// as in a file named by a UID) and the `DICM` signature after the 128-byte preamble (read
/// through [`paths`]).
pub fn is_dicom(path: &Path) -> bool {
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned());
    match ext {
        Some(e) if e.eq_ignore_ascii_case("dcm") => true,
        Some(e) if !e.bytes().all(|b| b.is_ascii_digit()) => false,
        _ => paths::open_listed(path)
            .ok()
            .filter(|f| f.len() >= 132)
            .and_then(|f| f.read_range(128, 4).ok())
            .is_some_and(|b| b == b"DICM"),
    }
}

/// Reads the DICOM file at `path` (opened under the rules of [`paths`], at most
/// [`paths::MAX_FILE_BYTES`]) as a record.
pub fn load(path: &Path) -> Result<Record> {
    let bytes = paths::open_listed(path)
        .and_then(|f| f.read_all(paths::MAX_FILE_BYTES))
        .map_err(|e| e.at(path))?;
    parse(&bytes, path)
}

type Obj = InMemDicomObject;

fn text(obj: &Obj, tag: dicom_core::Tag) -> Option<String> {
    let v = obj.element_opt(tag).ok()??.to_str().ok()?;
    let v = v.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!v.is_empty()).then(|| v.to_string())
}

fn float(obj: &Obj, tag: dicom_core::Tag) -> Option<f64> {
    obj.element_opt(tag).ok()??.to_float64().ok()
}

fn int(obj: &Obj, tag: dicom_core::Tag) -> Option<u64> {
    obj.element_opt(tag).ok()??.to_int::<u64>().ok()
}

fn items(obj: &Obj, tag: dicom_core::Tag) -> &[Obj] {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .unwrap_or(&[])
}

/// Standard lead name of an SCP-ECG (`5.6.3-9-N`) or MDC (`2:N`) lead code.
fn lead_of_code(code: &str) -> Option<&'static str> {
    let n: u32 = code
        .strip_prefix("5.6.3-9-")
        .or_else(|| code.strip_prefix("2:"))?
        .parse()
        .ok()?;
    Some(match n {
        1 => "I",
        2 => "II",
        3 => "V1",
        4 => "V2",
        5 => "V3",
        6 => "V4",
        7 => "V5",
        8 => "V6",
        61 => "III",
        62 => "aVR",
        63 => "aVL",
        64 => "aVF",
        _ => return None,
    })
}

/// A channel's lead name from its Channel Source Sequence.
fn lead_name(channel: &Obj, i: usize) -> String {
    let Some(src) = items(channel, tags::CHANNEL_SOURCE_SEQUENCE).first() else {
        return format!("sig{i}");
    };
    if let Some(l) = text(src, tags::CODE_VALUE)
        .as_deref()
        .and_then(lead_of_code)
    {
        return l.to_string();
    }
    match text(src, tags::CODE_MEANING) {
        Some(m) => {
            let m = m.strip_prefix("Lead ").unwrap_or(&m);
            m.split(" (").next().unwrap_or(m).trim().to_string()
        }
        None => format!("sig{i}"),
    }
}

/// Patient's Age `nnnY` / `nnnM` / `nnnW` / `nnnD` in whole years.
fn dicom_age(s: &str) -> Option<u8> {
    if s.len() != 4 || !s.is_ascii() {
        return None;
    }
    let n: u32 = s[..3].parse().ok()?;
    let years = match &s[3..] {
        "Y" => n,
        "M" => n / 12,
        "W" => n / 52,
        "D" => n / 365,
        _ => return None,
    };
    u8::try_from(years).ok().filter(|&a| a <= 120)
}

/// Value representations whose explicit-VR header has a 4-byte length.
const LONG_VRS: [&[u8; 2]; 13] = [
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV",
];

/// Checks every element length the file declares against the bytes that remain, before the
/// parser sees it: dicom-parser reserves a buffer of the declared length before reading, so
/// a few hundred bytes declaring a 4 GiB element would make it reserve 4 GiB. `body` starts at
/// `DICM`. Walks the file meta group (explicit VR little endian) and the data set in its
/// transfer syntax (implicit or explicit VR, little or big endian), descending into sequences
/// and items.
fn check_lengths(body: &[u8], path: &Path) -> Result<()> {
    let mut pos = 4; // `DICM`
    let mut implicit = false;
    let mut big = false;
    let mut in_meta = true;
    let n = body.len();
    let u16_at = |p: usize, big: bool| {
        let b = [body[p], body[p + 1]];
        if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    };
    let u32_at = |p: usize, big: bool| {
        let b = [body[p], body[p + 1], body[p + 2], body[p + 3]];
        if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    while pos + 8 <= n {
        let start = pos;
        let group_le = u16::from_le_bytes([body[pos], body[pos + 1]]);
        if in_meta && group_le != 0x0002 {
            in_meta = false;
        }
        let (le, explicit) = if in_meta {
            (true, true)
        } else {
            (!big, !implicit)
        };
        let group = u16_at(pos, !le);
        let element = u16_at(pos + 2, !le);
        let too_long = |len: u64, at: usize| {
            bad(
                path,
                format!(
                    "element ({group:04X},{element:04X}) at byte {} declares {len} bytes, {} remain",
                    start + 128,
                    n.saturating_sub(at)
                ),
            )
        };
        if group == 0xFFFE {
            // Item or delimiter: tag and a 4-byte length; an item's content is scanned.
            let len = u32_at(pos + 4, !le);
            pos += 8;
            if element == 0xE000 && len != u32::MAX && u64::from(len) > (n - pos) as u64 {
                return Err(too_long(u64::from(len), pos));
            }
            continue;
        }
        let (len, header, vr) = if explicit {
            let vr = [body[pos + 4], body[pos + 5]];
            if LONG_VRS.contains(&&vr) {
                if pos + 12 > n {
                    return Err(bad(path, "truncated element header"));
                }
                (u32_at(pos + 8, !le), 12, Some(vr))
            } else {
                (u32::from(u16_at(pos + 6, !le)), 8, Some(vr))
            }
        } else {
            (u32_at(pos + 4, !le), 8, None)
        };
        pos += header;
        if len == u32::MAX {
            continue; // undefined length: a sequence or encapsulated data, scanned inside
        }
        if u64::from(len) > (n - pos) as u64 {
            return Err(too_long(u64::from(len), pos));
        }
        let is_sequence = match vr {
            Some(vr) => &vr == b"SQ",
            // Implicit VR: a sequence is recognised by the item tag its content starts with.
            None => {
                len >= 8
                    && pos + 4 <= n
                    && u16_at(pos, !le) == 0xFFFE
                    && u16_at(pos + 2, !le) == 0xE000
            }
        };
        if in_meta && group == 0x0002 && element == 0x0010 {
            let ts = String::from_utf8_lossy(&body[pos..pos + len as usize]);
            let ts = ts.trim_end_matches(['\0', ' ']);
            implicit = ts == "1.2.840.10008.1.2";
            big = ts == "1.2.840.10008.1.2.2";
        }
        if !is_sequence {
            pos += len as usize;
        }
    }
    Ok(())
}

/// One little-endian waveform sample of 1, 2 or 4 bytes, signed or not.
fn sample_value(b: &[u8], signed: bool) -> f64 {
    match (b.len(), signed) {
        (1, true) => b[0] as i8 as f64,
        (1, false) => b[0] as f64,
        (2, true) => i16::from_le_bytes([b[0], b[1]]) as f64,
        (2, false) => u16::from_le_bytes([b[0], b[1]]) as f64,
        (4, true) => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
        _ => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
    }
}

/// Parses a DICOM file's bytes; `path` names it in errors and gives the record id.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Record> {
    let body = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        &bytes[128..]
    } else {
        bytes
    };
    if body.starts_with(b"DICM") {
        check_lengths(body, path)?;
    }
    // The parser is a third party's: a panic on hostile bytes is this file's error too.
    let obj = std::panic::catch_unwind(|| {
        OpenFileOptions::new()
            .read_preamble(ReadPreamble::Never)
            .from_reader(Cursor::new(body))
    })
    .map_err(|_| bad(path, "not a readable DICOM file: the parser failed on it"))?
    .map_err(|e| bad(path, format!("not a readable DICOM file: {e}")))?;
    let sop = obj
        .meta()
        .media_storage_sop_class_uid()
        .trim_end_matches('\0')
        .trim()
        .to_string();
    if !ECG_SOP_CLASSES.iter().any(|(uid, _)| *uid == sop) {
        return Err(bad(
            path,
            format!("SOP class {sop} is not an ECG waveform (12-lead, General or Ambulatory ECG)"),
        ));
    }
    let groups = items(&obj, tags::WAVEFORM_SEQUENCE);
    let is_beat = |g: &Obj| {
        text(g, tags::MULTIPLEX_GROUP_LABEL).is_some_and(|l| {
            let l = l.to_ascii_uppercase();
            l.contains("MEDIAN") || l.contains("REPRESENTATIVE")
        })
    };
    let mut recordings = groups.iter().enumerate().filter(|(_, g)| !is_beat(g));
    let (gi, group) = recordings.next().ok_or_else(|| {
        bad(
            path,
            "no multiplex group with a recording (only computed beats, or none)",
        )
    })?;
    let id = crate::record::record_id(path);
    let mut warnings = Vec::new();
    let others: Vec<String> = recordings
        .map(|(i, g)| {
            format!(
                "#{i} {}",
                text(g, tags::MULTIPLEX_GROUP_LABEL).unwrap_or_default()
            )
        })
        .collect();
    if !others.is_empty() {
        warnings.push(RecordWarning {
            kind: "dicom_group_skipped".into(),
            record: id.clone(),
            detail: format!(
                "{}: multiplex group #{gi} read; also recorded, not read: {}",
                path.display(),
                others.join(", ")
            ),
        });
    }
    let field = |what: &str, v: Option<u64>| {
        v.ok_or_else(|| bad(path, format!("multiplex group #{gi}: no {what}")))
    };
    let n_channels = field(
        "Number of Waveform Channels",
        int(group, tags::NUMBER_OF_WAVEFORM_CHANNELS),
    )? as usize;
    let n_samples = field(
        "Number of Waveform Samples",
        int(group, tags::NUMBER_OF_WAVEFORM_SAMPLES),
    )?;
    let fs = float(group, tags::SAMPLING_FREQUENCY)
        .filter(|f| f.is_finite() && *f > 0.0)
        .ok_or_else(|| {
            bad(
                path,
                format!("multiplex group #{gi}: no positive Sampling Frequency"),
            )
        })?;
    let bits = field(
        "Waveform Bits Allocated",
        int(group, tags::WAVEFORM_BITS_ALLOCATED),
    )?;
    let interpretation = text(group, tags::WAVEFORM_SAMPLE_INTERPRETATION).unwrap_or_default();
    let width = match (bits, interpretation.as_str()) {
        (8, "SB" | "UB") => 1,
        (16, "SS" | "US") => 2,
        (32, "SL" | "UL") => 4,
        _ => {
            return Err(bad(
                path,
                format!(
                    "multiplex group #{gi}: samples of {bits} bits `{interpretation}` are not supported (SB, UB, SS, US, SL, UL)"
                ),
            ));
        }
    };
    let signed = interpretation.starts_with('S');
    let data = group
        .element(tags::WAVEFORM_DATA)
        .ok()
        .and_then(|e| e.to_bytes().ok())
        .ok_or_else(|| bad(path, format!("multiplex group #{gi}: no Waveform Data")))?;
    let need = n_samples
        .checked_mul(n_channels as u64)
        .and_then(|n| n.checked_mul(width as u64))
        .filter(|&n| n <= paths::MAX_FILE_BYTES)
        .ok_or_else(|| {
            bad(
                path,
                format!(
                    "multiplex group #{gi}: {n_samples} samples of {n_channels} channels: too many"
                ),
            )
        })?;
    if (data.len() as u64) < need {
        return Err(bad(
            path,
            format!(
                "truncated: multiplex group #{gi} announces {n_samples} samples of {n_channels} channels ({need} bytes), Waveform Data holds {}",
                data.len()
            ),
        ));
    }
    let channels = items(group, tags::CHANNEL_DEFINITION_SEQUENCE);
    if channels.len() != n_channels {
        return Err(bad(
            path,
            format!(
                "multiplex group #{gi}: {n_channels} channels announced, {} defined",
                channels.len()
            ),
        ));
    }
    let raw = |s: usize, c: usize| -> f64 {
        let at = (s * n_channels + c) * width;
        sample_value(&data[at..at + width], signed)
    };
    // Waveform Padding Value (5400,100A): samples that hold no data, NaN in mV.
    let padding: Option<f64> = group
        .element_opt(tags::WAVEFORM_PADDING_VALUE)
        .ok()
        .flatten()
        .and_then(|e| e.to_bytes().ok())
        .filter(|b| b.len() >= width)
        .map(|b| sample_value(&b[..width], signed));
    let mut specs = Vec::with_capacity(n_channels);
    let mut physical = Vec::with_capacity(n_channels);
    for (c, ch) in channels.iter().enumerate() {
        let sensitivity = float(ch, tags::CHANNEL_SENSITIVITY).unwrap_or(1.0);
        let correction = float(ch, tags::CHANNEL_SENSITIVITY_CORRECTION_FACTOR).unwrap_or(1.0);
        let baseline = float(ch, tags::CHANNEL_BASELINE).unwrap_or(0.0);
        let units = items(ch, tags::CHANNEL_SENSITIVITY_UNITS_SEQUENCE)
            .first()
            .and_then(|u| text(u, tags::CODE_VALUE))
            .unwrap_or_default();
        let spec = SignalSpec::converted(path, lead_name(ch, c), units, 1);
        let values = match spec.to_millivolts() {
            Some(mv) if (sensitivity * correction).is_finite() && baseline.is_finite() => Some(
                (0..n_samples as usize)
                    .map(|s| {
                        let r = raw(s, c);
                        if Some(r) == padding {
                            f32::NAN
                        } else {
                            ((r * sensitivity * correction + baseline) * mv) as f32
                        }
                    })
                    .collect(),
            ),
            _ => None,
        };
        physical.push(values);
        specs.push(spec);
    }

    // Demographics and statements as header comments.
    let mut comments = Vec::new();
    if let Some(sex) = text(&obj, tags::PATIENT_SEX).filter(|s| s == "M" || s == "F") {
        comments.push(format!("<sex>: {sex}"));
    }
    let age = text(&obj, tags::PATIENT_AGE)
        .and_then(|a| dicom_age(&a))
        .or_else(|| {
            let birth = yyyymmdd(&text(&obj, tags::PATIENT_BIRTH_DATE)?)?;
            let at = yyyymmdd(&text(&obj, tags::STUDY_DATE)?)?;
            age_between(birth, at)
        });
    if let Some(age) = age {
        comments.push(format!("<age>: {age}"));
    }
    let mut codes = Vec::new();
    for a in items(&obj, tags::WAVEFORM_ANNOTATION_SEQUENCE) {
        if let Some(t) = text(a, tags::UNFORMATTED_TEXT_VALUE).and_then(|t| labels::statement(&t)) {
            comments.push(t);
        }
        if let Some(code) = items(a, tags::CONCEPT_NAME_CODE_SEQUENCE).first()
            && text(code, tags::CODING_SCHEME_DESIGNATOR).as_deref() == Some("SCT")
            && let Some(v) =
                text(code, tags::CODE_VALUE).filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
        {
            codes.push(v);
        }
    }
    if !codes.is_empty() {
        comments.push(format!("Dx: {}", codes.join(",")));
    }
    let header = Header {
        path: path.to_path_buf(),
        record_name: id.clone(),
        fs,
        n_samples: Some(n_samples),
        base_time: None,
        base_date: None,
        signals: specs,
        comments,
    };
    let patient = text(&obj, tags::PATIENT_ID);
    Ok(Record::from_physical(
        id,
        header,
        physical,
        n_samples,
        bytes.len() as u64,
        warnings,
        patient,
    ))
}
