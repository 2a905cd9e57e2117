//! HL7 aECG (HL7's published example, committed under testdata/hl7-aecg with its source).
//! Reference values: the file's digits read with Python's xml.etree (counts, sums, first and
//! last digits, printed in the comments below), scaled by the file's 2.5 µV.

use std::fs;
use std::path::{Path, PathBuf};

use ecgfed_datasets::aecg;
use ecgfed_datasets::demographics::{Sex, from_comments};
use ecgfed_datasets::ingest;
use ecgfed_datasets::store::read_record;

mod common;

fn file() -> PathBuf {
    common::crate_path("testdata/hl7-aecg/Example aECG.xml")
}

#[test]
fn example_rhythm_series_values_and_subject() {
    let r = aecg::load(&file()).unwrap();
    assert_eq!(
        r.leads,
        vec![
            "I", "II", "V1", "V2", "V3", "V4", "V5", "V6", "III", "aVR", "aVL", "aVF"
        ]
    );
    assert_eq!((r.fs(), r.n_samples), (500.0, 5000));
    // (lead, digit sum, first digit, last digit) by xml.etree.
    let want = [
        (0, -4921, -2, -13),
        (1, -4084, -7, -7),
        (2, -2299, 43, 11),
        (7, -1762, -9, -15),
        (8, 837, -5, 6),
        (9, 4432, 4, 10),
        (11, -1570, -6, 0),
    ];
    for (i, sum, first, last) in want {
        let v = r.lead_mv(i).unwrap();
        assert_eq!(v.len(), 5000);
        let got: f64 = v.iter().map(|&x| x as f64).sum();
        assert!(
            (got - sum as f64 * 0.0025).abs() < 1e-6 * 5000.0,
            "lead {i}: {got}"
        );
        assert!(
            (v[0] as f64 - first as f64 * 0.0025).abs() < 1e-7,
            "lead {i}"
        );
        assert!(
            (v[4999] as f64 - last as f64 * 0.0025).abs() < 1e-7,
            "lead {i}"
        );
    }
    // Trial subject SBJ-123, sex M, reported age 46 (not the 49 years from the birth time).
    assert_eq!(r.patient.as_deref(), Some("SBJ-123"));
    let d = from_comments(&r.header.comments);
    assert_eq!((d.sex, d.age), (Some(Sex::M), Some(46)));
    assert!(
        r.header
            .comments
            .iter()
            .all(|c| !c.contains("Clark") && !c.contains("1953"))
    );
}

#[test]
fn ingest_detects_aecg_and_ignores_other_xml() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::folder_of(tmp.path(), "trial", &[(file(), "subject1.xml")]);
    fs::write(dir.join("other.xml"), "<?xml version=\"1.0\"?><config/>").unwrap();
    let store = tmp.path().join("store");
    let m = ingest(&[dir], &store, &common::windows("a", 10.0), &|_| {}).unwrap();
    assert_eq!((m.records, m.skipped), (1, 0), "{:?}", m.sources[0].errors);
    let rows = read_record(&store, "subject1").unwrap();
    let s = &rows[0].segment;
    assert_eq!(
        (s.fs, s.n_samples, s.leads.len(), s.patient.as_str()),
        (500.0, 5000, 12, "SBJ-123")
    );
}

#[test]
fn damaged_aecg_files_are_errors_naming_the_file() {
    let text = fs::read_to_string(file()).unwrap();
    let p = Path::new("bad.xml");
    let err = |t: &str| aecg::parse(t, p).unwrap_err().to_string();
    assert!(err(&text[..text.len() / 2]).contains("not well-formed XML"));
    assert!(err("<config/>").contains("is not an HL7 aECG"));
    let e = err(&text.replacen("<digits> -2 -2", "<digits> -2 x2", 1));
    assert!(e.contains("lead I: digit `x2` is not a number"), "{e}");
    let e = err(&text.replacen("value=\"0.002\" unit=\"s\"", "value=\"0\" unit=\"s\"", 1));
    assert!(e.contains("increment 0 is not positive"), "{e}");
    // A birth time with a multi-byte character: no panic, the age still comes from the
    // reported age.
    let r = aecg::parse(&text.replace("19530508", "1953é508"), p).unwrap();
    assert_eq!(from_comments(&r.header.comments).age, Some(46));
    // A DTD (and so any entity expansion) is refused by the XML parser.
    let e = err(&format!(
        "<!DOCTYPE x [<!ENTITY a \"aaaa\">]>{}",
        &text[text.find("<AnnotatedECG").unwrap()..]
    ));
    assert!(e.contains("not well-formed XML"), "{e}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    /// The example with characters replaced anywhere: an error or a record, never a panic.
    #[test]
    fn damaged_text_never_panics(at in proptest::collection::vec((0usize..505_000, proptest::char::any()), 1..6)) {
        let mut t: Vec<char> = fs::read_to_string(file()).unwrap().chars().collect();
        for (i, c) in at {
            let n = t.len();
            t[i % n] = c;
        }
        let s: String = t.into_iter().collect();
        let _ = aecg::parse(&s, Path::new("x.xml"));
    }
}
