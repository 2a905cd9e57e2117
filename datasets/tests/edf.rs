//! EDF, EDF+ and BDF recordings (pyedflib's test files, committed under testdata/pyedflib with
//! their licence). Reference values are pyedflib 0.1.42's `readSignal` (µV, converted to mV
//! here) and the files' own EDF+ patient fields.

use std::fs;
use std::path::PathBuf;

use ecgfed_datasets::demographics::{Sex, from_comments};
use ecgfed_datasets::edf;
use ecgfed_datasets::ingest;
use ecgfed_datasets::store::read_record;

mod common;

fn data(name: &str) -> PathBuf {
    common::crate_path("testdata/pyedflib").join(name)
}

fn close(got: f32, want_uv: f64) {
    let want = want_uv / 1000.0;
    assert!((got as f64 - want).abs() < 1e-6, "{got} mV vs {want} mV");
}

#[test]
fn edf_plus_values_demographics_and_patient_code() {
    let r = edf::load(&data("test_generator.edf")).unwrap();
    assert_eq!((r.fs(), r.n_samples, r.leads.len()), (200.0, 120_000, 11));
    assert_eq!(r.leads[0], "squarewave");
    assert_eq!(r.leads[10], "sine 50 Hz");
    let square = r.lead_mv(0).unwrap();
    assert_eq!(square.len(), 120_000);
    close(square[0], 99.99237048905165);
    let noise = r.lead_mv(3).unwrap();
    close(noise[0], 84.0009155413138);
    close(noise[1], 38.986800946059354);
    close(noise[12345], 46.00595101853971);
    let sine50 = r.lead_mv(10).unwrap();
    close(sine50[2], -99.96185244525826);
    // EDF+ patient field `abcxyz99 M 30-JUN-1969 ...`, recorded 04-APR-2011: 41 years.
    assert_eq!(r.patient.as_deref(), Some("abcxyz99"));
    let d = from_comments(&r.header.comments);
    assert_eq!((d.sex, d.age), (Some(Sex::M), Some(41)));
    // Nothing of the name or the birth date is kept.
    assert!(r.header.comments.iter().all(|c| !c.contains("1969")));
    // `X F 20-JAN-1998`, recorded 24-JAN-2020: 22 years, no patient code.
    let r = edf::load(&data("test_subsecond.edf")).unwrap();
    let d = from_comments(&r.header.comments);
    assert_eq!(
        (d.sex, d.age, r.patient.as_deref()),
        (Some(Sex::F), Some(22), None)
    );
}

#[test]
fn bdf_signals_at_several_rates() {
    // 1000, 800, 500, 975 and 999 Hz in 1-s records: frames of 1 s, one sample per Hz.
    let r = edf::load(&data("test_generator.bdf")).unwrap();
    assert_eq!((r.fs(), r.n_samples), (1.0, 30));
    let spf: Vec<u32> = (0..5).map(|i| r.samples_per_frame(i)).collect();
    assert_eq!(spf, vec![1000, 800, 500, 975, 999]);
    let sine = r.lead_mv(0).unwrap();
    assert_eq!(sine.len(), 30_000);
    close(sine[0], 31.410636389889834);
    close(sine[1], 62.79033796729705);
    close(sine[12345], -992.1146626540814);
    let pink = r.lead_mv(3).unwrap();
    assert_eq!(pink.len(), 29_250);
    close(pink[0], 108.28310896653619);
    close(pink[12345], -182.41472139446233);
    // The same generator with 2-s data records: the same samples.
    let two = edf::load(&data("test_generator_datarec_generator_2.bdf")).unwrap();
    assert_eq!((two.fs(), two.n_samples), (0.5, 15));
    close(two.lead_mv(0).unwrap()[1], 62.79033796729705);
}

#[test]
fn ingest_finds_edf_and_bdf_records_and_refuses_a_second_file_with_the_same_id() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("edf");
    fs::create_dir(&dir).unwrap();
    let names = [
        "test_generator.edf",
        "test_generator.bdf",
        "test_subsecond.edf",
    ];
    common::copy_files(&data(""), &names, &dir);
    let store = tmp.path().join("store");
    let m = ingest(&[dir], &store, &common::windows("e", 10.0), &|_| {}).unwrap();
    let src = &m.sources[0];
    assert_eq!((src.records, src.skipped), (1, 2), "{:?}", src.errors);
    let reasons: Vec<&str> = src.errors.iter().map(|e| e.reason.as_str()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("record id `test_generator` is already taken by")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("no ECG signal: Fp1 (")),
        "{reasons:?}"
    );
    // The BDF sorts first: 1000 Hz, the slower signals held; 3 windows of 10 s.
    let rows = read_record(&store, "test_generator").unwrap();
    assert_eq!(rows.len(), 3);
    let s = &rows[0].segment;
    assert_eq!((s.fs, s.n_samples, s.leads.len()), (1000.0, 10, 5));
    assert_eq!(s.signal.len(), 5 * 10_000);
    assert_eq!(s.patient, "test_generator");
}

#[test]
fn damaged_edf_files_are_errors_naming_the_file() {
    let bytes = fs::read(data("test_generator.edf")).unwrap();
    let p = PathBuf::from("bad.edf");
    let err = |b: &[u8]| edf::parse(b, &p).unwrap_err().to_string();
    assert!(err(&bytes[..100]).contains("shorter than the 256-byte EDF header"));
    assert!(err(&bytes[..3000]).contains("truncated header"));
    assert!(
        err(&bytes[..bytes.len() - 10]).contains("truncated: header announces 600 data records")
    );
    let mut b = bytes.clone();
    b[0] = b'9';
    assert!(err(&b).contains("not an EDF file"));
    let mut b = bytes.clone();
    b[252..256].copy_from_slice(b"999 ");
    assert!(err(&b).contains("does not match 999 signals"));
    // A patient field that is not EDF+'s structured one is free text: never read.
    let mut b = bytes.clone();
    b[8..88].copy_from_slice(format!("{:<80}", "Jane Doe 1960").as_bytes());
    let r = edf::parse(&b, &p).unwrap();
    assert_eq!(r.patient, None);
    assert!(r.header.comments.is_empty(), "{:?}", r.header.comments);
    // A data record duration so short that the rate is infinite.
    let mut b = bytes.clone();
    b[244..252].copy_from_slice(b"4.9e-324");
    assert!(err(&b).contains("is too short"), "{}", err(&b));
    // Only annotations (wfdb-python's test_edfann.edf).
    let ann = common::crate_path("testdata/wfdb-python/edf/test_edfann.edf");
    let e = edf::load(&ann).unwrap_err().to_string();
    assert!(
        e.contains("test_edfann.edf") && e.contains("no signals, only annotations"),
        "{e}"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// The header of a real EDF+ file with bytes overwritten anywhere, or the file cut
    /// anywhere: an error or a record, never a panic.
    #[test]
    fn damaged_headers_never_panic(at in proptest::collection::vec((0usize..3072, proptest::num::u8::ANY), 1..8),
                                   cut in proptest::option::of(0usize..4000)) {
        let b = common::damaged(&fs::read(data("test_generator.bdf")).unwrap(), &at, cut);
        let _ = edf::parse(&b, std::path::Path::new("x.bdf"));
    }
}

#[test]
fn edf_and_dicom_files_linked_out_of_the_folder_are_refused() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    let (dir, outside) = (tmp.path().join("site"), tmp.path().join("outside"));
    fs::create_dir(&dir).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::copy(data("test_generator.bdf"), dir.join("good.bdf")).unwrap();
    fs::copy(data("test_generator.edf"), outside.join("secret.edf")).unwrap();
    let dcm = common::crate_path("testdata/pydicom/waveform_ecg.dcm");
    fs::copy(dcm, outside.join("secret.dcm")).unwrap();
    symlink(outside.join("secret.edf"), dir.join("link.edf")).unwrap();
    symlink(outside.join("secret.dcm"), dir.join("other.dcm")).unwrap();
    let m = ingest(
        &[dir],
        &tmp.path().join("store"),
        &common::site("e"),
        &|_| {},
    )
    .unwrap();
    let src = &m.sources[0];
    assert_eq!((src.records, src.skipped), (1, 2), "{:?}", src.errors);
    for name in ["link.edf", "other.dcm"] {
        let e = src.errors.iter().find(|e| e.file.ends_with(name)).unwrap();
        assert!(
            e.reason.contains(name) && e.reason.contains("outside its folder"),
            "{}",
            e.reason
        );
    }
}
