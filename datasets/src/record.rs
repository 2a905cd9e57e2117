//! One decoded record in memory, whatever format it was read from: its leads, samples (digital
//! with the header's gains, or already in mV), the warnings raised while loading it, and the
//! patient id the file gives. The readers of each format fill it: [`crate::wfdb`],
//! [`crate::multisegment`], [`crate::edf`], [`crate::dicom`], [`crate::aecg`];
//! [`crate::load::load_record`] picks the reader.

use std::path::Path;

use crate::error::{DatasetError, Result};
use crate::header::Header;
use crate::signal;

/// Samples one record may hold, all its signal files together (2^28: 1 GiB as 32-bit
/// values; a 24-hour 3-lead Holter at 1000 Hz is a quarter of it). Bounds what a small file
/// can make a reader allocate (a FLAC stream of constant values, a multi-segment gap, an EDF+D
/// onset far away, leads held to a fast lead's rate).
pub const MAX_RECORD_SAMPLES: u64 = 1 << 28;

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
    /// Parsed header (for a multi-segment record: its record line, comments and the signals
    /// of its layout).
    pub header: Header,
    /// Lead names in signal order (signal descriptions; `sig<i>` when empty).
    pub leads: Vec<String>,
    /// Digital samples, one vector per signal, `n_samples * samples_per_frame` each, skew
    /// applied. Empty vectors for a multi-segment record (its segments have their own gains:
    /// see [`Record::lead_mv`]).
    pub digital: Vec<Vec<i32>>,
    /// Frames per signal (samples per signal when every signal has one sample per frame).
    pub n_samples: u64,
    /// Bytes of the signal files used: each file's byte offset plus the sample bytes read
    /// (for throughput figures).
    pub bytes_read: u64,
    /// Warnings raised while loading.
    pub warnings: Vec<RecordWarning>,
    /// The patient id the file itself gives (EDF+'s patient code); `None` when the file has
    /// none (the site's layout rules then decide, by default the record id).
    pub patient: Option<String>,
    /// Voltage leads already in mV (multi-segment records joined with gaps NaN, EDF);
    /// `None` for a record read from digital samples.
    pub(crate) joined: Option<Vec<Option<Vec<f32>>>>,
}

impl Record {
    /// A record whose voltage leads are given in mV (`None` for the others), `n_samples`
    /// frames of `header.signals[i].samples_per_frame` samples each.
    pub(crate) fn from_physical(
        id: String,
        header: Header,
        physical: Vec<Option<Vec<f32>>>,
        n_samples: u64,
        bytes_read: u64,
        warnings: Vec<RecordWarning>,
        patient: Option<String>,
    ) -> Record {
        let leads = lead_names(&header);
        Record {
            id,
            digital: vec![Vec::new(); leads.len()],
            leads,
            header,
            n_samples,
            bytes_read,
            warnings,
            patient,
            joined: Some(physical),
        }
    }

    /// Sampling frequency in Hz (frames per second).
    pub fn fs(&self) -> f64 {
        self.header.fs
    }

    /// Samples per frame of signal `i` (1 when unknown).
    pub fn samples_per_frame(&self, i: usize) -> u32 {
        self.header
            .signals
            .get(i)
            .map_or(1, |s| s.samples_per_frame)
    }

    /// Signal `i` in millivolts (invalid samples NaN); an error naming the lead when its
    /// units are not a voltage.
    pub fn lead_mv(&self, i: usize) -> Result<Vec<f32>> {
        let (Some(spec), Some(lead)) = (self.header.signals.get(i), self.leads.get(i)) else {
            return Err(DatasetError::signal(
                &self.header.path,
                format!("#{i}"),
                "no such signal",
            ));
        };
        let not_voltage = || {
            DatasetError::signal(
                &self.header.path,
                lead.clone(),
                format!("units `{}` are not a voltage", spec.units),
            )
        };
        let mv = spec.to_millivolts().ok_or_else(not_voltage)?;
        if let Some(joined) = &self.joined {
            return joined.get(i).cloned().flatten().ok_or_else(not_voltage);
        }
        let scale = mv / spec.adc_gain;
        let base = spec.baseline as f64;
        let invalid = signal::invalid_sample(spec.format);
        Ok(self.digital[i]
            .iter()
            .map(|&v| {
                if Some(v) == invalid {
                    f32::NAN
                } else {
                    ((v as f64 - base) * scale) as f32
                }
            })
            .collect())
    }

    /// All leads in millivolts; invalid samples become NaN. Fails when a signal's units are
    /// not a voltage.
    pub fn physical(&self) -> Result<Vec<Vec<f32>>> {
        (0..self.leads.len()).map(|i| self.lead_mv(i)).collect()
    }
}

/// The record id of a record file: its stem for the extensions the readers know (`.hea`,
/// `.edf`, `.bdf`, `.dcm`, `.xml`), else its whole name (a PACS export named by a UID,
/// `1.2.826.0.1.3680043.2.1125`, keeps its dots).
pub fn record_id(path: &Path) -> String {
    let known = path.extension().is_some_and(|e| {
        ["hea", "edf", "bdf", "dcm", "xml"]
            .iter()
            .any(|k| e.eq_ignore_ascii_case(k))
    });
    let part = if known {
        path.file_stem()
    } else {
        path.file_name()
    };
    part.map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Lead names of a header's signals: their descriptions, `sig<i>` when empty.
pub(crate) fn lead_names(header: &Header) -> Vec<String> {
    header
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
        .collect()
}
