//! Loading one WFDB record (header + signal files) with checksum and initial-value
//! verification, and conversion to physical units (mV).

use std::path::{Path, PathBuf};

use crate::error::{DatasetError, Result};
use crate::header::{Header, read_header};
use crate::paths::{self, PathError};
use crate::{mat4, signal};

/// Bytes of a MATLAB v4 file read to check its matrix header (20 bytes and a name of at most
/// 64 bytes).
const MAT4_HEADER_MAX: u64 = 20 + 64;

/// How header checksums and initial values are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verification {
    /// A mismatch is corruption: the record is rejected with an error naming file and lead.
    #[default]
    Strict,
    /// A mismatch is a data-quality warning (CinC 2017: checksum field always 0, initial value
    /// differs from the first sample in some records).
    Warn,
}

/// A data-quality observation on a record that did not prevent loading it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordWarning {
    /// Kind: `initial_value_mismatch`, `checksum_mismatch`, `checksum_not_recorded`, ...
    pub kind: String,
    /// Record id.
    pub record: String,
    /// Human-readable detail naming the file and lead.
    pub detail: String,
}

/// A decoded record.
#[derive(Debug, Clone)]
pub struct Record {
    /// Record id: the header file's stem.
    pub id: String,
    /// Parsed header.
    pub header: Header,
    /// Lead names in signal order (signal descriptions; `sig<i>` when empty).
    pub leads: Vec<String>,
    /// Digital samples, one vector per signal.
    pub digital: Vec<Vec<i32>>,
    /// Samples per signal.
    pub n_samples: u64,
    /// Bytes of the signal files used: each file's byte offset plus the sample bytes read
    /// (for throughput figures).
    pub bytes_read: u64,
    /// Warnings raised while loading.
    pub warnings: Vec<RecordWarning>,
}

impl Record {
    /// Sampling frequency in Hz.
    pub fn fs(&self) -> f64 {
        self.header.fs
    }

    /// All leads in millivolts; invalid samples become NaN. Fails when a signal's units are
    /// not a voltage.
    pub fn physical(&self) -> Result<Vec<Vec<f32>>> {
        self.header
            .signals
            .iter()
            .zip(&self.digital)
            .zip(&self.leads)
            .map(|((spec, d), lead)| {
                let mv = spec.to_millivolts().ok_or_else(|| {
                    DatasetError::signal(
                        &self.header.path,
                        lead.clone(),
                        format!("units `{}` are not a voltage", spec.units),
                    )
                })?;
                let scale = mv / spec.adc_gain;
                let base = spec.baseline as f64;
                let invalid = signal::invalid_sample(spec.format);
                Ok(d.iter()
                    .map(|&v| {
                        if Some(v) == invalid {
                            f32::NAN
                        } else {
                            ((v as f64 - base) * scale) as f32
                        }
                    })
                    .collect())
            })
            .collect()
    }
}

/// Loads the record whose header is `hea`, verifying checksums and initial values.
pub fn load_record(hea: &Path, verification: Verification) -> Result<Record> {
    let header = read_header(hea)?;
    load_with_header(header, verification)
}

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
    let leads: Vec<String> = header
        .signals
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if s.description.is_empty() {
                format!("sig{i}")
            } else {
                s.description.clone()
            }
        })
        .collect();

    // Signals grouped by file, in order of first appearance.
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, s) in header.signals.iter().enumerate() {
        match groups.iter_mut().find(|(f, _)| *f == s.file_name) {
            Some((_, v)) => v.push(i),
            None => groups.push((s.file_name.clone(), vec![i])),
        }
    }
    let mut digital: Vec<Vec<i32>> = vec![Vec::new(); header.signals.len()];
    let mut n_samples = header.n_samples;
    let mut bytes_read = 0u64;
    for (file, idx) in &groups {
        let path: PathBuf = dir.join(file);
        check_group(&header, &leads, idx, &path)?;
        let g = read_group(&folder, &header, file, idx, n_samples)?;
        bytes_read += g.bytes;
        n_samples = Some(g.frames);
        for (&i, d) in idx.iter().zip(g.decoded) {
            digital[i] = d;
        }
    }

    let mut warnings = Vec::new();
    for (i, s) in header.signals.iter().enumerate() {
        let path = dir.join(&s.file_name);
        let d = &digital[i];
        let mut problem = |kind: &str, detail: String| -> Result<()> {
            match verification {
                Verification::Strict => Err(DatasetError::signal(&path, leads[i].clone(), detail)),
                Verification::Warn => {
                    warnings.push(RecordWarning {
                        kind: kind.to_string(),
                        record: id.clone(),
                        detail: format!("{}: lead {}: {detail}", path.display(), leads[i]),
                    });
                    Ok(())
                }
            }
        };
        if let (Some(init), Some(&first)) = (s.initial_value, d.first())
            && init != first as i64
        {
            problem(
                "initial_value_mismatch",
                format!("initial value {init} in the header, first sample is {first}"),
            )?;
        }
        if let Some(ck) = s.checksum {
            let got = signal::checksum(d);
            if ck as i16 != got || !(-32768..=65535).contains(&ck) {
                let kind = if ck == 0 {
                    "checksum_not_recorded"
                } else {
                    "checksum_mismatch"
                };
                problem(
                    kind,
                    format!("checksum {ck} in the header, samples sum to {got} (16-bit)"),
                )?;
            }
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
    })
}

/// Checks that the signals of one file (`idx`) share format and byte offset and use no
/// multi-frequency frames or skew.
fn check_group(header: &Header, leads: &[String], idx: &[usize], path: &Path) -> Result<()> {
    let first = &header.signals[idx[0]];
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
        if s.samples_per_frame != 1 {
            return Err(DatasetError::signal(
                path,
                leads[i].clone(),
                format!(
                    "multi-frequency records ({} samples per frame) are not supported",
                    s.samples_per_frame
                ),
            ));
        }
        if s.skew != 0 {
            return Err(DatasetError::signal(
                path,
                leads[i].clone(),
                format!("skew {} is not supported", s.skew),
            ));
        }
    }
    Ok(())
}

/// One signal file's samples, decoded: per signal of the group, in order.
struct GroupRead {
    decoded: Vec<Vec<i32>>,
    /// Samples per signal.
    frames: u64,
    /// Bytes read from the file (its byte offset included).
    bytes: u64,
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
    let is_mat = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("mat"));
    let offset = first.byte_offset;
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
        (None, None) => signal::frames_in(first.format, data_len, idx.len()),
    };
    // Size checks before any sample byte is read: only the bytes the header needs.
    let need = signal::bytes_needed(first.format, frames, idx.len()).ok_or_else(|| {
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
    let data = read(offset, need)?;
    let initial: Vec<i64> = idx
        .iter()
        .map(|&i| header.signals[i].initial_value.unwrap_or(0))
        .collect();
    let decoded = signal::decode(first.format, &data, idx.len(), frames, &initial, &path)?;
    Ok(GroupRead {
        decoded,
        frames,
        bytes: offset + need,
    })
}
