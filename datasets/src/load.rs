//! Picking the reader of a record file: WFDB (single- or multi-segment), EDF/EDF+/BDF,
//! HL7 aECG or DICOM waveform.

use std::path::Path;

use crate::error::Result;
use crate::header::{AnyHeader, read_any_header};
use crate::record::{Record, Verification};
use crate::{aecg, dicom, edf, multisegment, wfdb};

/// Loads the record whose header is `hea` (single- or multi-segment), verifying checksums
/// and initial values; an `.edf` or `.bdf` file is read by [`edf`], an aECG file by
/// [`aecg`], a DICOM file by [`dicom`].
pub fn load_record(hea: &Path, verification: Verification) -> Result<Record> {
    #[cfg(feature = "fault-injection")]
    crate::fault::reading(hea);
    if edf::is_edf(hea) {
        return edf::load(hea);
    }
    if aecg::is_aecg(hea) {
        return aecg::load(hea);
    }
    if hea
        .extension()
        .is_none_or(|e| !e.eq_ignore_ascii_case("hea"))
        && dicom::is_dicom(hea)
    {
        return dicom::load(hea);
    }
    match read_any_header(hea)? {
        AnyHeader::Single(header) => wfdb::load_with_header(header, verification),
        AnyHeader::Multi(m) => multisegment::load(m, verification),
    }
}
