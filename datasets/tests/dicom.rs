//! DICOM waveform ECG (pydicom's `waveform_ecg.dcm`, committed under testdata/pydicom with its
//! licence). Reference values are pydicom 3.0.2's `waveform_array(0)` (µV, converted to mV
//! here) and the file's own attributes.

use std::fs;
use std::path::{Path, PathBuf};

use ecgfed_datasets::demographics::{Sex, from_comments};
use ecgfed_datasets::dicom;
use ecgfed_datasets::ingest;
use ecgfed_datasets::store::read_record;

mod common;

fn file() -> PathBuf {
    common::crate_path("testdata/pydicom/waveform_ecg.dcm")
}

#[test]
fn twelve_lead_rhythm_group_equals_pydicom() {
    let r = dicom::load(&file()).unwrap();
    assert_eq!(
        r.leads,
        vec![
            "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"
        ]
    );
    assert_eq!((r.fs(), r.n_samples), (1000.0, 10_000));
    let want_uv: [(usize, [f64; 12]); 3] = [
        (
            0,
            [
                100.0, 112.5, 12.5, -106.25, 43.75, 62.5, 50.0, 18.75, -12.5, -25.0, -68.75, -50.0,
            ],
        ),
        (
            5000,
            [
                53.75, 68.75, 15.0, -61.25, 18.75, 41.25, 68.75, 31.25, 12.5, -50.0, -87.5, -31.25,
            ],
        ),
        (
            9999,
            [
                25.0, 137.5, 112.5, -81.25, -43.75, 125.0, 25.0, -12.5, -112.5, -137.5, -150.0,
                -112.5,
            ],
        ),
    ];
    let leads = r.physical().unwrap();
    for (s, row) in want_uv {
        for (c, w) in row.iter().enumerate() {
            assert!(
                (leads[c][s] as f64 - w / 1000.0).abs() < 1e-7,
                "lead {c} sample {s}"
            );
        }
    }
    // Sum of lead II over the record: 908,587.5 µV by pydicom.
    let sum: f64 = leads[1].iter().map(|&v| v as f64).sum();
    assert!((sum - 908.5875).abs() < 1e-3, "{sum}");
    // The median beat group is not read, and said so only when another recording exists.
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    // Patient's Sex F, Patient's Age 042Y; Patient ID is the patient at the site.
    let d = from_comments(&r.header.comments);
    assert_eq!((d.sex, d.age), (Some(Sex::F), Some(42)));
    assert_eq!(r.patient.as_deref(), Some("642341"));
    // The statements are header comments; the name is never kept.
    assert!(r.header.comments.contains(&"RITMO SINUSALE".to_string()));
    assert!(r.header.comments.iter().all(|c| !c.contains("Anonymous")));
}

#[test]
fn ingest_detects_dicom_with_or_without_extension() {
    let tmp = tempfile::tempdir().unwrap();
    // The second, a PACS export without an extension: found by its `DICM` signature.
    let files = [(file(), "ecg1.dcm"), (file(), "1.2.826.0.1.3680043.2.1125")];
    let dir = common::folder_of(tmp.path(), "pacs", &files);
    fs::write(dir.join("notes"), b"not dicom").unwrap();
    let store = tmp.path().join("store");
    let m = ingest(&[dir], &store, &common::windows("d", 10.0), &|_| {}).unwrap();
    assert_eq!((m.records, m.skipped), (2, 0), "{:?}", m.sources[0].errors);
    let rows = read_record(&store, "ecg1").unwrap();
    assert_eq!(rows.len(), 1);
    let s = &rows[0].segment;
    assert_eq!(
        (s.fs, s.n_samples, s.leads.len(), s.signal.len()),
        (1000.0, 10_000, 12, 120_000)
    );
    assert_eq!(
        (s.sex.map(|x| x.code()), s.age, s.patient.as_str()),
        (Some("F"), Some(42), "642341")
    );
}

#[test]
fn damaged_dicom_files_are_errors_naming_the_file() {
    let bytes = fs::read(file()).unwrap();
    let p = Path::new("bad.dcm");
    let err = |b: &[u8]| dicom::parse(b, p).unwrap_err().to_string();
    assert!(err(&bytes[..200]).starts_with("bad.dcm"));
    assert!(err(b"hello").contains("not a readable DICOM file"));
    // Another SOP class: the media storage SOP class UID rewritten (same length).
    let sop = b"1.2.840.10008.5.1.4.1.1.9.1.1";
    let at = bytes.windows(sop.len()).position(|w| w == sop).unwrap();
    let mut other = bytes.clone();
    other[at..at + sop.len()].copy_from_slice(b"1.2.840.10008.5.1.4.1.1.9.2.1");
    assert!(
        err(&other).contains("is not an ECG waveform"),
        "{}",
        err(&other)
    );
}

#[test]
fn declared_lengths_beyond_the_file_are_refused_before_parsing() {
    // Waveform Data (5400,1010), explicit VR `OW`: its 4-byte length set to 0xFFFFFFF0. The
    // parser would reserve 4 GiB before noticing that the bytes are not there.
    let bytes = fs::read(file()).unwrap();
    let tag = [0x00, 0x54, 0x10, 0x10];
    let at = bytes.windows(4).position(|w| w == tag).unwrap();
    assert!(&bytes[at + 4..at + 6] == b"OW" || &bytes[at + 4..at + 6] == b"OB");
    let mut b = bytes.clone();
    b[at + 8..at + 12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let e = dicom::parse(&b, Path::new("big.dcm"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("element (5400,1010)") && e.contains("declares 4294967280 bytes"),
        "{e}"
    );
    // A 150-byte file: preamble, `DICM`, one meta element declaring 4 GiB.
    let mut tiny = vec![0u8; 128];
    tiny.extend_from_slice(b"DICM");
    tiny.extend_from_slice(&[0x02, 0x00, 0x01, 0x00, b'O', b'B', 0, 0]);
    tiny.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    tiny.extend_from_slice(&[0; 6]);
    let e = dicom::parse(&tiny, Path::new("tiny.dcm"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("element (0002,0001)") && e.contains("declares"),
        "{e}"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    /// The file with bytes overwritten anywhere or cut anywhere: an error or a record, never a
    /// panic.
    #[test]
    fn damaged_files_never_panic(at in proptest::collection::vec((0usize..300_000, proptest::num::u8::ANY), 1..6),
                                 cut in proptest::option::of(0usize..300_000)) {
        let b = common::damaged(&fs::read(file()).unwrap(), &at, cut);
        let _ = dicom::parse(&b, Path::new("x.dcm"));
    }
}
