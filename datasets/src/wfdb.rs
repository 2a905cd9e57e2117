//! Loading one single-segment WFDB record (header + signal files) with checksum and
//! initial-value verification.
//!
//! Every signal file format of [`signal`] is read, with the header's modifiers: samples per
//! frame (each signal keeps its own rate: `digital[i]` holds `n_samples * spf` samples), skew
//! (signal `i` of frame `t` is stored in frame `t + skew`; frames the file does not hold are
//! invalid samples, NaN in millivolts) and byte offsets (sample offsets for FLAC files).

use std::path::{Path, PathBuf};

use crate::error::{DatasetError, Result};
use crate::header::Header;
use crate::paths::{self, PathError};
use crate::record::{MAX_RECORD_SAMPLES, Record, RecordWarning, Verification, lead_names};
use crate::{mat4, signal};

/// Bytes of a MATLAB v4 file read to check its matrix header (20 bytes and a name of at most
/// 64 bytes).
const MAT4_HEADER_MAX: u64 = 20 + 64;

/// Loads a record from an already parsed header.
///
/// Each signal file is opened under the rules of [`paths`] in the header's folder, its size is
/// checked against what the header announces before anything is read, and only the bytes the
/// header needs are read (at most [`paths::MAX_FILE_BYTES`]; a file larger than that is refused
/// when the header gives no sample count).
pub fn load_with_header(header: Header, verification: Verification) -> Result<Record> {
    let hea = header.path.clone();
    let dir = hea.parent().unwrap_or(Path::new("."));
    let folder = paths::Folder::new(dir).map_err(|e| e.at(dir))?;
    let id = hea
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let leads = lead_names(&header);

    // Signals grouped by file, in order of first appearance.
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, s) in header.signals.iter().enumerate() {
        match groups.iter_mut().find(|(f, _)| *f == s.file_name) {
            Some((_, v)) => v.push(i),
            None => groups.push((s.file_name.clone(), vec![i])),
        }
    }
    let mut digital: Vec<Vec<i32>> = vec![Vec::new(); header.signals.len()];
    let mut stored: Vec<Vec<i32>> = vec![Vec::new(); header.signals.len()];
    let mut n_samples = header.n_samples;
    let mut bytes_read = 0u64;
    let mut budget = MAX_RECORD_SAMPLES;
    for (file, idx) in &groups {
        let path: PathBuf = dir.join(file);
        check_group(&header, &leads, idx, &path)?;
        let g = read_group(&folder, &header, file, idx, n_samples, &mut budget)?;
        bytes_read += g.bytes;
        n_samples = Some(g.frames);
        for ((&i, d), s) in idx.iter().zip(g.decoded).zip(g.stored) {
            digital[i] = d;
            stored[i] = s;
        }
    }

    let mut warnings = Vec::new();
    for (i, s) in header.signals.iter().enumerate() {
        let path = dir.join(&s.file_name);
        let d = &digital[i];
        // A skewed signal's header values may describe the samples as stored or as aligned:
        // either is accepted.
        let as_stored = if s.skew > 0 { &stored[i] } else { d };
        // `slip`: a mismatch that is a warning whatever the verification.
        let mut problem = |kind: &str, detail: String, slip: bool| -> Result<()> {
            match verification {
                Verification::Strict if !slip => {
                    Err(DatasetError::signal(&path, leads[i].clone(), detail))
                }
                _ => {
                    warnings.push(RecordWarning {
                        kind: kind.to_string(),
                        record: id.clone(),
                        detail: format!("{}: lead {}: {detail}", path.display(), leads[i]),
                    });
                    Ok(())
                }
            }
        };
        let matches = |ck: i64, sum: i16| ck as i16 == sum && (-32768..=65535).contains(&ck);
        let got = s.checksum.map(|_| signal::checksum(d));
        let checksum_ok = s.checksum.zip(got).is_some_and(|(ck, got)| {
            matches(ck, got) || (s.skew > 0 && matches(ck, signal::checksum(as_stored)))
        });
        if let (Some(init), Some(&first)) = (s.initial_value, d.first())
            && init != first as i64
            && as_stored.first().is_none_or(|&f| init != f as i64)
        {
            // The initial value is a weak check: when the checksum over every sample verifies
            // or the first sample is the invalid value, a mismatch is the header's slip.
            problem(
                "initial_value_mismatch",
                format!("initial value {init} in the header, first sample is {first}"),
                checksum_ok || Some(first) == signal::invalid_sample(s.format),
            )?;
        }
        if let (Some(ck), Some(got)) = (s.checksum, got)
            && !checksum_ok
        {
            let kind = if ck == 0 {
                "checksum_not_recorded"
            } else {
                "checksum_mismatch"
            };
            problem(
                kind,
                format!("checksum {ck} in the header, samples sum to {got} (16-bit)"),
                false,
            )?;
        }
    }
    Ok(Record {
        id,
        header,
        leads,
        digital,
        n_samples: n_samples.unwrap_or(0),
        bytes_read,
        warnings,
        patient: None,
        joined: None,
    })
}

/// Checks that the signals of one file (`idx`) share format and byte offset, and that a
/// MATLAB file has one sample per frame.
fn check_group(header: &Header, leads: &[String], idx: &[usize], path: &Path) -> Result<()> {
    let first = &header.signals[idx[0]];
    let is_mat = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("mat"));
    for &i in idx {
        let s = &header.signals[i];
        signal::check_supported(s.format, path)?;
        if s.format != first.format || s.byte_offset != first.byte_offset {
            return Err(DatasetError::signal(
                path,
                leads[i].clone(),
                "signals in one file must share format and byte offset",
            ));
        }
        if is_mat && s.samples_per_frame != 1 {
            return Err(DatasetError::signal(
                path,
                leads[i].clone(),
                format!(
                    "a MATLAB signal file holds one sample per frame, the header gives {}",
                    s.samples_per_frame
                ),
            ));
        }
    }
    Ok(())
}

/// One signal file's samples, decoded: per signal of the group, in order.
struct GroupRead {
    /// Samples aligned by skew (`frames * spf` per signal).
    decoded: Vec<Vec<i32>>,
    /// For skewed signals, the samples as stored in the file's first `frames` frames
    /// (empty otherwise).
    stored: Vec<Vec<i32>>,
    /// Frames per signal.
    frames: u64,
    /// Bytes read from the file (its byte offset included).
    bytes: u64,
}

/// Applies each signal's skew: signal `j` of frame `t` is the stored sample of frame
/// `t + skew`; frames past what was read are the format's invalid value. Returns the
/// aligned samples and, for skewed signals, the first `frames` frames as stored.
fn deskew(
    read: Vec<Vec<i32>>,
    spf: &[u32],
    skews: &[u64],
    frames: u64,
    invalid: i32,
) -> (Vec<Vec<i32>>, Vec<Vec<i32>>) {
    let mut stored = Vec::with_capacity(read.len());
    let mut aligned = Vec::with_capacity(read.len());
    for ((mut v, &k), &skew) in read.into_iter().zip(spf).zip(skews) {
        let want = (frames * u64::from(k)) as usize;
        if skew == 0 {
            v.truncate(want);
            stored.push(Vec::new());
            aligned.push(v);
            continue;
        }
        let shift = ((skew * u64::from(k)) as usize).min(v.len());
        let mut a: Vec<i32> = v[shift..].to_vec();
        a.resize(want, invalid);
        a.truncate(want);
        v.truncate(want);
        stored.push(v);
        aligned.push(a);
    }
    (aligned, stored)
}

/// Opens signal file `file` of the record's folder (under the rules of `paths`), checks its
/// size against the header (and against the sample count of an earlier file of the record,
/// `n_samples`) before reading, and decodes the signals `idx` it holds.
fn read_group(
    folder: &paths::Folder,
    header: &Header,
    file: &str,
    idx: &[usize],
    n_samples: Option<u64>,
    budget: &mut u64,
) -> Result<GroupRead> {
    let hea = &header.path;
    let first = &header.signals[idx[0]];
    // As named in the header, for messages; what is opened is checked by `folder.open`.
    let dir = hea.parent().unwrap_or(Path::new("."));
    let path: PathBuf = dir.join(file);
    let header_err = |reason: String| DatasetError::Header {
        path: hea.clone(),
        line: first.line,
        reason,
    };
    let opened = folder.open(file).map_err(|e| match e {
        PathError::Io(io) => DatasetError::io(&path, io),
        refused => header_err(refused.describe("signal file", file, "the record's folder")),
    })?;
    let len = opened.len();
    let read = |offset: u64, n: u64| opened.read_range(offset, n).map_err(|e| e.at(&path));
    let spf: Vec<u32> = idx
        .iter()
        .map(|&i| header.signals[i].samples_per_frame)
        .collect();
    let skews: Vec<u64> = idx
        .iter()
        .map(|&i| u64::from(header.signals[i].skew))
        .collect();
    let max_skew = skews.iter().copied().max().unwrap_or(0);
    let slots: usize = spf.iter().map(|&k| k as usize).sum();
    let invalid = signal::invalid_sample(first.format).unwrap_or(i32::MIN);
    let offset = first.byte_offset;

    if signal::is_flac(first.format) {
        if len > paths::MAX_FILE_BYTES {
            return Err(header_err(format!(
                "FLAC signal file {file:?} holds {len} bytes, more than the {} bytes one file may supply",
                paths::MAX_FILE_BYTES
            )));
        }
        let data = read(0, len)?;
        // The record's frames and those a skew reads past its end; every frame when the
        // header gives no length; within what is left of the record's sample budget.
        let (decoded, got) = signal::decode_flac(
            first.format,
            &data,
            &spf,
            offset,
            n_samples.map(|n| n.saturating_add(max_skew)),
            *budget,
            &path,
        )?;
        *budget = budget.saturating_sub(got.saturating_mul(slots as u64));
        if let Some(n) = n_samples
            && got < n
        {
            return Err(DatasetError::signal(
                &path,
                "*",
                format!("truncated: header announces {n} frames but the FLAC stream holds {got}"),
            ));
        }
        let frames = n_samples.unwrap_or(got);
        let (decoded, stored) = deskew(decoded, &spf, &skews, frames, invalid);
        return Ok(GroupRead {
            decoded,
            stored,
            frames,
            bytes: len,
        });
    }

    let is_mat = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("mat"));
    let mut frames_available = None;
    if is_mat {
        let head = read(0, len.min(MAT4_HEADER_MAX))?;
        let cols = mat4::check_val_matrix(&head, idx.len(), offset, &path)?;
        frames_available = Some(cols);
    }
    let data_len = len.checked_sub(offset).ok_or_else(|| {
        DatasetError::signal(
            &path,
            "*",
            format!("file is shorter than its byte offset {offset}"),
        )
    })?;
    let frames = match (n_samples, frames_available) {
        (Some(n), Some(cols)) if n != cols => {
            return Err(DatasetError::signal(
                &path,
                "*",
                format!("header announces {n} samples but the MATLAB matrix has {cols} columns"),
            ));
        }
        (Some(n), _) => n,
        (None, Some(cols)) => cols,
        (None, None) if len > paths::MAX_FILE_BYTES => {
            return Err(header_err(format!(
                "signal file {file:?} holds {len} bytes and the header gives no sample count: \
                 without one at most {} bytes are read",
                paths::MAX_FILE_BYTES
            )));
        }
        (None, None) => signal::frames_in(first.format, data_len, slots),
    };
    // Size checks before any sample byte is read: only the bytes the header needs.
    let need = signal::bytes_needed(first.format, frames, slots).ok_or_else(|| {
        DatasetError::signal(
            &path,
            "*",
            format!(
                "header announces {frames} samples per signal of {} signals: more bytes than can be addressed",
                idx.len()
            ),
        )
    })?;
    if data_len < need {
        return Err(DatasetError::signal(
            &path,
            "*",
            format!(
                "truncated: header announces {frames} samples per signal ({need} bytes of format {}) but the file holds {data_len} bytes",
                first.format
            ),
        ));
    }
    if need > paths::MAX_FILE_BYTES {
        return Err(DatasetError::signal(
            &path,
            "*",
            format!(
                "header announces {frames} samples per signal ({need} bytes of format {}), more than the {} bytes one file may supply",
                first.format,
                paths::MAX_FILE_BYTES
            ),
        ));
    }
    let samples = frames.saturating_mul(slots as u64);
    if samples > *budget {
        return Err(DatasetError::signal(
            &path,
            "*",
            format!(
                "header announces {frames} frames of {slots} samples: more than the {MAX_RECORD_SAMPLES} samples one record may hold"
            ),
        ));
    }
    *budget -= samples;
    // With a skew, the frames past the record's end are read too when the file holds them.
    let read_frames = if max_skew > 0 && !is_mat {
        frames
            .saturating_add(max_skew)
            .min(signal::frames_in(first.format, data_len, slots))
            .max(frames)
    } else {
        frames
    };
    let need = signal::bytes_needed(first.format, read_frames, slots).unwrap_or(need);
    let data = read(offset, need)?;
    let initial: Vec<i64> = idx
        .iter()
        .map(|&i| header.signals[i].initial_value.unwrap_or(0))
        .collect();
    let decoded = signal::decode(first.format, &data, &spf, read_frames, &initial, &path)?;
    let (decoded, stored) = deskew(decoded, &spf, &skews, frames, invalid);
    Ok(GroupRead {
        decoded,
        stored,
        frames,
        bytes: offset + need,
    })
}
