//! ecgfed-datasets: real ECG files (WFDB `.hea`/`.dat`/`.atr` in every variant, MATLAB v4
//! `.mat`, EDF/EDF+/BDF, DICOM waveform ECG, HL7 aECG, label files) into typed, hashable site stores
//! (Parquet + manifest), and strata over them.
//!
//! The path of a hospital's files: [`layout::discover`] finds source folders,
//! [`load::load_record`] decodes and verifies each record, [`labels`] normalises its labels,
//! [`segment`] cuts it into segments with a canonical content hash, [`store`] writes and
//! reads the site store, [`strata`] counts it. [`ingest::ingest`] runs the whole path.
//! Every file named by input (a header's signal files, a manifest's Parquet files, the files a
//! layout finds) is opened through [`paths`]: a plain name, inside its folder, a regular file,
//! its size checked before reading.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod aecg;
pub mod annotation;
pub mod demographics;
pub mod dicom;
pub mod edf;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod header;
pub mod ingest;
pub mod labels;
pub mod layout;
pub mod leads;
pub mod load;
mod mat4;
pub mod multisegment;
pub mod paths;
pub mod record;
pub mod resample;
pub mod segment;
pub mod signal;
pub mod store;
pub mod strata;
pub mod wfdb;

pub use error::{DatasetError, Result};
pub use ingest::{IngestOptions, Progress, ingest};
pub use segment::{Segment, Segmentation};
pub use store::Manifest;
