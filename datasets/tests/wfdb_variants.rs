//! Every WFDB variant on real public records (wfdb-python's sample set, a subset committed
//! under testdata/wfdb-python with its licence): formats 310, 311 and FLAC, skew,
//! multi-frequency, mixed-signal and multi-segment records, headers without a length.
//! Reference values are what the WFDB software package's `rdsamp` printed for the same files
//! (testdata/wfdb-python/expected, from wfdb-python's tests) or follow from the headers'
//! own checksums, verified on every load.

use std::fs;
use std::path::{Path, PathBuf};

use ecgfed_datasets::load::load_record;
use ecgfed_datasets::record::Verification;
use ecgfed_datasets::store::{Manifest, read_record};
use ecgfed_datasets::{IngestOptions, ingest};

mod common;

fn data() -> PathBuf {
    common::crate_path("testdata/wfdb-python")
}

fn load(rel: &str) -> ecgfed_datasets::record::Record {
    load_record(&data().join(rel), Verification::Strict).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Whitespace-separated numbers of a reference file, one row per line.
fn expected(name: &str) -> Vec<Vec<f64>> {
    fs::read_to_string(data().join("expected").join(name))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
        .collect()
}

fn column(rows: &[Vec<f64>], c: usize) -> Vec<f64> {
    rows.iter().map(|r| r[c]).collect()
}

/// Bit-for-bit equality of two runs of samples (NaN equals NaN).
fn same(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn as_f64(v: &[i32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[test]
fn every_binary_format_equals_the_wfdb_library() {
    // binformats: one signal file per format 8, 16, 61, 80, 160, 212, 310, 311, 24, 32.
    let r = load("binformats.hea");
    let want = expected("record-1f");
    let formats: Vec<u16> = r.header.signals.iter().map(|s| s.format).collect();
    assert_eq!(formats, vec![8, 16, 61, 80, 160, 212, 310, 311, 24, 32]);
    assert_eq!(r.n_samples, 499);
    for (i, d) in r.digital.iter().enumerate() {
        assert_eq!(as_f64(d), column(&want, i), "format {}", formats[i]);
    }
}

#[test]
fn flac_formats_equal_the_wfdb_library() {
    let r = load("flacformats.hea");
    let want = expected("record-flac");
    for (i, d) in r.digital.iter().enumerate() {
        assert_eq!(as_f64(d), column(&want, i), "signal {i}");
    }
    // 5.6 million frames of three constant signals (25, 50, 75 at gain 200) in one FLAC
    // stream of 20 kB: 0.125, 0.25 and 0.375 mV throughout.
    let r = load("flac_3_constant.hea");
    assert_eq!(r.n_samples, 5_600_000);
    for (lead, mv) in [0.125f32, 0.25, 0.375].iter().enumerate() {
        let v = r.lead_mv(lead).unwrap();
        assert_eq!(v.len(), 5_600_000);
        assert!(v.iter().all(|x| x == mv), "lead {lead}");
    }
}

#[test]
fn formats_310_and_311_equal_the_wfdb_library() {
    // record-2d: 310derive from sample 2, digital.
    let r = load("310derive.hea");
    let want = expected("record-2d");
    for c in 0..2 {
        assert_eq!(as_f64(&r.digital[c][2..]), column(&want, c), "signal {c}");
    }
    // record-2e: 311derive samples 1..978 in mV, printed to 8 decimals.
    let r = load("311derive.hea");
    let mv = r.lead_mv(0).unwrap();
    for (got, want) in mv[1..978].iter().zip(column(&expected("record-2e"), 0)) {
        assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
    }
    // Partial last blocks: 1020, 1019 and 1018 samples, whole or ending inside a block; the
    // headers' checksums verify (Strict), and each derives from the same samples.
    let full = load("310derive_2.hea").digital[0].clone();
    assert_eq!(full.len(), 1020);
    for rel in [
        "310derive_3.hea",
        "311derive_2.hea",
        "311derive_3.hea",
        "311derive_4.hea",
    ] {
        let d = &load(rel).digital[0];
        assert_eq!(d[..], full[..d.len()], "{rel}");
    }
}

/// A store of the committed sample records, whole records as one segment each.
fn store_of(folders: &[PathBuf], leads: Option<Vec<String>>) -> (tempfile::TempDir, Manifest) {
    let tmp = tempfile::tempdir().unwrap();
    let opts = IngestOptions {
        leads,
        ..common::windows("wfdb", 0.0)
    };
    let m = ingest(folders, &tmp.path().join("store"), &opts, &|_| {}).unwrap();
    (tmp, m)
}

fn row(tmp: &tempfile::TempDir, record: &str) -> ecgfed_datasets::Segment {
    let mut rows = read_record(&tmp.path().join("store"), record).unwrap();
    assert_eq!(rows.len(), 1, "{record}");
    rows.remove(0).segment
}

fn lead<'a>(s: &'a ecgfed_datasets::Segment, name: &str) -> &'a [f32] {
    let i = s.leads.iter().position(|l| l == name).unwrap();
    let n = s.signal.len() / s.leads.len();
    &s.signal[i * n..(i + 1) * n]
}

#[test]
fn multi_frequency_and_skew_equal_the_wfdb_library_high_resolution_output() {
    // test01_00s_skewframe: ECG_1 (1 sample per frame, skew 3), ECG_2 (2 per frame), ECG_3.
    // Stored at the highest rate (1000 Hz), the slower leads held: what the WFDB library's
    // `rdsamp -P -H` prints (record-4d: it stops 3 frames early because of the skew).
    let (tmp, m) = store_of(&[data()], None);
    assert_eq!(m.skipped, 0, "{:?}", m.sources[0].errors);
    let s = row(&tmp, "test01_00s_skewframe");
    assert_eq!((s.fs, s.n_samples, s.leads.len()), (1000.0, 4000, 3));
    let want = expected("record-4d");
    for (c, name) in ["ECG_1", "ECG_2", "ECG_3"].iter().enumerate() {
        let got = lead(&s, name);
        assert_eq!(got.len(), 8000);
        for (j, w) in column(&want, c).iter().enumerate() {
            assert!(
                (got[j] as f64 - w).abs() < 1e-6,
                "{name}[{j}]: {} vs {w}",
                got[j]
            );
        }
    }
    // The skewed lead has no samples for its last 3 frames (6 samples at 1000 Hz).
    assert!(lead(&s, "ECG_1")[7994..].iter().all(|v| v.is_nan()));
    assert!(lead(&s, "ECG_2").iter().all(|v| !v.is_nan()));
    // A skew alone: ECG_2 of test01_00s_skew is ECG_2 of test01_00s three frames later.
    let plain = row(&tmp, "test01_00s");
    let skew = row(&tmp, "test01_00s_skew");
    assert!(same(
        &lead(&skew, "ECG_2")[..3997],
        &lead(&plain, "ECG 2")[3..]
    ));
    assert!(lead(&skew, "ECG_2")[3997..].iter().all(|v| v.is_nan()));
    assert!(same(lead(&skew, "ECG_1"), lead(&plain, "ECG 1")));
}

#[test]
fn mixed_signal_records_keep_their_ecg_leads_and_name_the_others() {
    let (tmp, m) = store_of(&[data()], None);
    let src = &m.sources[0];
    let w = &src.warnings["non_ecg_signals_skipped"];
    assert!(w.records.contains(&"a103l".to_string()), "{w:?}");
    assert!(w.records.contains(&"mixedsignals".to_string()), "{w:?}");
    // a103l: II and V kept, PLETH (units NU) skipped; the header without a length reads the
    // same samples.
    let a = row(&tmp, "a103l");
    assert_eq!(a.leads, vec!["II", "V"]);
    assert_eq!((a.fs, a.n_samples), (250.0, 82_500));
    let no_len = row(&tmp, "a103l-no-len");
    assert!(same(&no_len.signal, &a.signal));
    // mixedsignals: three ECG leads at 4 samples per frame in FLAC; ABP (mmHg), Pleth (NU)
    // and Resp (Ohm) skipped.
    let x = row(&tmp, "mixedsignals");
    assert_eq!(x.leads, vec!["II", "III", "V"]);
    assert!((x.fs as f64 - 62.4725 * 4.0).abs() < 1e-3, "{}", x.fs);
    assert_eq!(x.signal.len(), 3 * 14_400 * 4);
    // --leads may not pick a skipped signal.
    let only = tempfile::tempdir().unwrap();
    common::copy_files(&data(), &["a103l.hea", "a103l.mat"], only.path());
    let opts = IngestOptions {
        leads: Some(vec!["PLETH".into()]),
        ..common::site("wfdb")
    };
    let e = ingest(
        &[only.path().to_path_buf()],
        &only.path().join("store"),
        &opts,
        &|_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("a103l.hea: lead PLETH: not an ECG lead: units `NU` are not a voltage"),
        "{e}"
    );
}

#[test]
fn fixed_layout_multi_segment_records_read_as_one() {
    let ms = data().join("multi-segment");
    // 041s: two segments of 1000 frames; III, I, V at 4 samples per frame (500 Hz).
    let r = load("multi-segment/041s/041s.hea");
    assert_eq!(r.n_samples, 2000);
    let s1 = load("multi-segment/041s/041s01.hea");
    let s2 = load("multi-segment/041s/041s02.hea");
    for (i, name) in ["III", "I", "V"].iter().enumerate() {
        assert_eq!(r.leads[i], *name);
        let joined = r.lead_mv(i).unwrap();
        assert_eq!(joined.len(), 8000);
        assert!(same(&joined[..4000], &s1.lead_mv(i).unwrap()), "{name}");
        assert!(same(&joined[4000..], &s2.lead_mv(i).unwrap()), "{name}");
    }
    // fixed1: the same record three times.
    let v = load("multi-segment/fixed1/v102s.hea");
    let one = load("multi-segment/fixed1/v102s_1.hea").lead_mv(0).unwrap();
    let ii = v.lead_mv(0).unwrap();
    assert_eq!(ii.len(), 225_000);
    for k in 0..3 {
        assert!(same(&ii[k * 75_000..(k + 1) * 75_000], &one), "copy {k}");
    }
    // Ingest lists each multi-segment record once, never its segments.
    let (tmp, m) = store_of(&[ms.join("041s"), ms.join("fixed1")], None);
    assert_eq!((m.records, m.skipped), (2, 0), "{:?}", m.sources);
    let s = row(&tmp, "041s");
    assert_eq!(
        (s.fs, s.n_samples, s.leads.clone()),
        (500.0, 2000, vec!["III".to_string(), "I".into(), "V".into()])
    );
}

/// A variable-layout record (MIMIC) made of the layout, a gap and two segments of
/// p000878 (wfdb-python's sample), under a master header written here.
fn variable_layout_record(dir: &Path, master: &str) -> PathBuf {
    let from = data().join("multi-segment/p000878");
    for e in fs::read_dir(&from).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    let hea = dir.join("p000878.hea");
    fs::write(&hea, master).unwrap();
    hea
}

#[test]
fn variable_layout_multi_segment_records_join_by_lead_name_with_gaps() {
    let tmp = tempfile::tempdir().unwrap();
    let hea = variable_layout_record(
        tmp.path(),
        "p000878/4 4 125 7500 16:57:09.000 26/10/2137\n3269321_layout 0\n~ 3750\n\
         3269321_0001 2000\n3269321_0002 1750\n",
    );
    let r = load_record(&hea, Verification::Strict).unwrap();
    assert_eq!(r.leads, vec!["PLETH", "II", "V", "ABP"]);
    assert_eq!(r.n_samples, 7500);
    let ii = r.lead_mv(1).unwrap();
    // The gap (3750 frames) and segment 0001 (PLETH only) leave II empty; 0002 supplies it.
    assert!(ii[..5750].iter().all(|v| v.is_nan()));
    let seg = load_record(&tmp.path().join("3269321_0002.hea"), Verification::Strict).unwrap();
    assert!(same(&ii[5750..], &seg.lead_mv(0).unwrap()));
    assert!(
        r.lead_mv(2).unwrap().iter().all(|v| v.is_nan()),
        "no segment has V"
    );
    assert!(r.lead_mv(0).is_err(), "PLETH is not a voltage");
    // Ingested as one record of its folder: II and V kept, PLETH and ABP skipped.
    let (store, m) = store_of(&[tmp.path().to_path_buf()], None);
    assert_eq!((m.records, m.skipped), (1, 0), "{:?}", m.sources[0].errors);
    let s = row(&store, "p000878");
    assert_eq!(s.leads, vec!["II", "V"]);
}

#[test]
fn broken_multi_segment_records_are_errors_naming_the_segment() {
    let cases = [
        (
            "p/2 4 125 2100\n3269321_layout 0\n3269321_0003 2100\n",
            "p.hea:3: segment 3269321_0003:",
        ),
        (
            "p/2 4 125 2001\n3269321_layout 0\n3269321_0001 2001\n",
            "holds 2000 frames by its header, 2001 by the segment line",
        ),
        (
            "p/2 4 250 2000\n3269321_layout 0\n3269321_0001 2000\n",
            "sampled at 125 Hz, the record at 250 Hz",
        ),
        (
            "p/2 4 125 9\n3269321_layout 0\n3269321_0001 2000\n",
            "announces 9 frames, its segments add up to 2000",
        ),
        (
            "p/1 4 125 5\np 5\n",
            "segment p is itself a multi-segment record",
        ),
        (
            "p/2 3 125 2000\n3269321_layout 0\n3269321_0001 2000\n",
            "announces 3 signals, its layout 3269321_layout has 4",
        ),
        (
            "p/1 4 125 5\n~ 5\n",
            "no segment names the record's signals",
        ),
        // Lengths that overflow a u64 when added; a segment named twice.
        (
            "p/3 4 125\n3269321_layout 0\n~ 18446744073709551615\n~ 1\n",
            "the segments' lengths overflow",
        ),
        (
            "p/3 4 125 4000\n3269321_layout 0\n3269321_0001 2000\n3269321_0001 2000\n",
            "segment 3269321_0001 is named twice",
        ),
    ];
    for (master, want) in cases {
        let tmp = tempfile::tempdir().unwrap();
        variable_layout_record(tmp.path(), "");
        let hea = tmp.path().join("p.hea");
        fs::write(&hea, master).unwrap();
        let e = load_record(&hea, Verification::Strict)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{master:?}: {e}");
    }
}

/// A header that names another record of the folder as its segment (by mistake, or to hide
/// it) and is refused: that record is named among the errors as not ingested, never dropped
/// unseen; a master named as a segment stays a record of its own.
#[test]
fn a_refused_multi_segment_record_names_the_segments_it_took() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("site");
    fs::create_dir(&dir).unwrap();
    common::copy_files(&data(), &["100_3chan.hea", "100_3chan.dat"], &dir);
    // 999 frames at 360 Hz: the master's 250 Hz refuses it.
    fs::write(dir.join("hider.hea"), "hider/1 3 250 999\n100_3chan 999\n").unwrap();
    // A master naming the hider as a segment: the hider is still read as a record.
    fs::write(dir.join("outer.hea"), "outer/1 3 250 999\nhider 999\n").unwrap();
    let tmp_out = tempfile::tempdir().unwrap();
    let out = tmp_out.path().join("store");
    let opts = common::site("s");
    let e = ingest(std::slice::from_ref(&dir), &out, &opts, &|_| {})
        .unwrap_err()
        .to_string();
    let hea = |n: &str| dir.join(format!("{n}.hea")).display().to_string();
    assert!(
        e.contains(&format!(
            "not ingested: a segment of the multi-segment record {}, which was refused",
            hea("hider")
        )),
        "{e}"
    );
    assert!(e.contains("sampled at 360 Hz, the record at 250 Hz"), "{e}");
    assert!(
        e.contains("segment hider is itself a multi-segment record"),
        "{e}"
    );
    // With the hider gone, 100_3chan is a record again.
    fs::remove_file(dir.join("hider.hea")).unwrap();
    fs::remove_file(dir.join("outer.hea")).unwrap();
    let m = ingest(std::slice::from_ref(&dir), &out, &opts, &|_| {}).unwrap();
    assert_eq!((m.records, m.skipped), (1, 0), "{:?}", m.sources[0].errors);
}

/// wfdb-python's record of three FLAC signal files, one per format (508, 516, 524).
const FLAC_FILES: [&str; 4] = [
    "flacformats.hea",
    "flacformats.d0",
    "flacformats.d1",
    "flacformats.d2",
];

#[test]
fn corrupt_flac_files_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    common::copy_files(&data(), &FLAC_FILES, tmp.path());
    let d1 = tmp.path().join("flacformats.d1");
    let bytes = fs::read(&d1).unwrap();
    // Cut short: fewer frames than the header announces.
    fs::write(&d1, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_record(&tmp.path().join("flacformats.hea"), Verification::Strict)
        .unwrap_err()
        .to_string();
    assert!(e.contains("flacformats.d1"), "{e}");
    // Not a FLAC stream at all.
    fs::write(&d1, vec![0u8; bytes.len()]).unwrap();
    let e = load_record(&tmp.path().join("flacformats.hea"), Verification::Strict)
        .unwrap_err()
        .to_string();
    assert!(e.contains("flacformats.d1") && e.contains("fLaC"), "{e}");
    // A 24-bit stream announced as format 516 (at most 16 bits).
    fs::write(
        tmp.path().join("bits.hea"),
        "bits 1 200 499\nflacformats.d2 516 200/mV 16 0 -8388605 8721 0 sig 2\n",
    )
    .unwrap();
    let e = load_record(&tmp.path().join("bits.hea"), Verification::Strict)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("flacformats.d2") && e.contains("FLAC stream of 24 bits in format 516"),
        "{e}"
    );
    // A stream of three channels that the header gives two signals.
    fs::copy(
        data().join("flac_3_constant.dat"),
        tmp.path().join("three.dat"),
    )
    .unwrap();
    fs::write(
        tmp.path().join("three.hea"),
        "three 2 250 5600000\nthree.dat 508 200 8 0 25 15104 0 col 0\n\
         three.dat 508 200 8 0 50 30208 0 col 1\n",
    )
    .unwrap();
    let e = load_record(&tmp.path().join("three.hea"), Verification::Strict)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("three.dat")
            && e.contains("FLAC stream has 3 channels but the header gives 2 signals in this file"),
        "{e}"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// A real FLAC signal file with bytes overwritten anywhere: an error or samples, never
    /// a panic (the headers' checksums catch changed samples).
    #[test]
    fn damaged_flac_never_panics(at in proptest::collection::vec((0usize..881, proptest::num::u8::ANY), 1..8)) {
        let tmp = tempfile::tempdir().unwrap();
        common::copy_files(&data(), &FLAC_FILES, tmp.path());
        let d1 = tmp.path().join("flacformats.d1");
        let mut bytes = fs::read(&d1).unwrap();
        for (i, b) in at {
            let n = bytes.len();
            bytes[i % n] = b;
        }
        fs::write(&d1, &bytes).unwrap();
        let _ = load_record(&tmp.path().join("flacformats.hea"), Verification::Strict);
    }
}

/// An MIT annotation file of rhythm changes (`+` with an aux string), each preceded by a
/// SKIP to its sample.
fn rhythm_atr(changes: &[(u32, &str)]) -> Vec<u8> {
    let mut v = Vec::new();
    let mut t = 0;
    for &(s, aux) in changes {
        let d = s - t;
        v.extend((59u16 << 10).to_le_bytes());
        v.extend(((d >> 16) as u16).to_le_bytes());
        v.extend((d as u16).to_le_bytes());
        v.extend((28u16 << 10).to_le_bytes());
        let mut b = aux.as_bytes().to_vec();
        v.extend(((63u16 << 10) | b.len() as u16).to_le_bytes());
        if b.len() % 2 == 1 {
            b.push(0);
        }
        v.extend(b);
        t = s;
    }
    v.extend([0, 0]);
    v
}

#[test]
fn header_comment_diagnoses_label_records_and_windows() {
    // 3000003_0003 (MIMIC-III, 125 Hz, 1028 frames) with a header diagnosis and a rhythm
    // annotation `(N` at frame 500; windows of 2 s (250 frames).
    let run = |comment: &str, atr: bool| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("rec");
        fs::create_dir(&dir).unwrap();
        let hea = fs::read_to_string(data().join("3000003_0003.hea")).unwrap();
        fs::write(dir.join("3000003_0003.hea"), format!("{hea}#{comment}\n")).unwrap();
        fs::copy(
            data().join("3000003_0003.dat"),
            dir.join("3000003_0003.dat"),
        )
        .unwrap();
        if atr {
            fs::write(dir.join("3000003_0003.atr"), rhythm_atr(&[(500, "(N")])).unwrap();
        }
        let opts = common::windows("h", 2.0);
        let m = ingest(&[dir], &tmp.path().join("store"), &opts, &|_| {}).unwrap();
        let rows: Vec<(String, Vec<String>)> =
            read_record(&tmp.path().join("store"), "3000003_0003")
                .unwrap()
                .into_iter()
                .map(|s| (s.segment.label, s.segment.label_raw))
                .collect();
        (m.sources[0].clone(), rows)
    };
    let af = "164889003";
    let sr = "426783006";
    // Persistent AF: the windows before the first annotation take AF from the header.
    let (src, rows) = run("persistent atrial fibrillation", true);
    let labels: Vec<&str> = rows.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels, vec![af, af, sr, sr]);
    assert_eq!(rows[0].1, vec!["persistent atrial fibrillation"]);
    assert_eq!(
        src.records_by_label.get(af),
        Some(&1),
        "record label from the header"
    );
    assert_eq!(
        src.segments_by_label_origin,
        [("annotation".to_string(), 2), ("header".to_string(), 2)].into()
    );
    // Paroxysmal AF: the record is AF, but before the first annotation nothing is known.
    let (src, rows) = run("paroxysmal atrial fibrillation", true);
    let labels: Vec<&str> = rows.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels, vec!["unknown", "unknown", sr, sr]);
    assert_eq!(src.records_by_label.get(af), Some(&1));
    assert_eq!(
        src.segments_by_label_origin,
        [("annotation".to_string(), 2), ("unknown".to_string(), 2)].into()
    );
    // No annotations: every window takes the header's statement (CinC 2015 style).
    let (src, rows) = run("Ventricular_Tachycardia", false);
    assert!(
        rows.iter()
            .all(|(l, raw)| l == "other" && raw == &vec!["Ventricular_Tachycardia".to_string()])
    );
    assert_eq!(
        src.segments_by_label_origin,
        [("header".to_string(), 4)].into()
    );
    // A comment that is not a diagnosis leaves the record unknown.
    let (src, _) = run("False alarm", false);
    assert_eq!(
        src.segments_by_label_origin,
        [("unknown".to_string(), 4)].into()
    );
}

#[test]
fn cinc_2015_alarm_records_take_their_header_diagnosis() {
    // Real headers of the PhysioNet/CinC 2015 challenge: a103l states `#Asystole` then
    // `#False alarm`; v102s (fixed1) states `#Ventricular_Tachycardia` in its segments.
    let (tmp, m) = store_of(&[data(), data().join("multi-segment/fixed1")], None);
    let a = row(&tmp, "a103l");
    assert_eq!(
        (a.label.as_str(), a.label_raw.clone()),
        ("other", vec!["Asystole".to_string()])
    );
    let v = row(&tmp, "v102s");
    assert_eq!(
        (v.label.as_str(), v.label_raw.clone()),
        ("other", vec!["Ventricular_Tachycardia".to_string()])
    );
    let fixed1 = m.sources.iter().find(|s| s.id == "fixed1").unwrap();
    assert_eq!(
        fixed1.segments_by_label_origin,
        [("header".to_string(), 1)].into()
    );
}

#[test]
fn a_segment_without_a_length_never_spills_into_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    variable_layout_record(tmp.path(), "");
    // Segment 0002 (II and PLETH, 1750 frames) with its length removed from its header, and
    // a master that takes 100 of its frames, then a gap of 2000.
    let seg = tmp.path().join("3269321_0002.hea");
    let text = fs::read_to_string(&seg).unwrap();
    fs::write(
        &seg,
        text.replacen("3269321_0002 2 125 1750 16:57:55", "3269321_0002 2 125", 1),
    )
    .unwrap();
    let hea = tmp.path().join("p.hea");
    fs::write(
        &hea,
        "p/3 4 125 2100\n3269321_layout 0\n3269321_0002 100\n~ 2000\n",
    )
    .unwrap();
    let r = load_record(&hea, Verification::Strict).unwrap();
    let ii = r.lead_mv(1).unwrap();
    assert_eq!(ii.len(), 2100);
    let whole = load_record(&seg, Verification::Strict)
        .unwrap()
        .lead_mv(0)
        .unwrap();
    assert_eq!(whole.len(), 1750, "the segment alone reads all its frames");
    assert!(same(&ii[..100], &whole[..100]));
    assert!(ii[100..].iter().all(|v| v.is_nan()), "the gap stays a gap");
}

#[test]
fn implausible_sampling_rates_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("rates");
    fs::create_dir(&dir).unwrap();
    for (name, fs_field) in [("slow", "0.1"), ("fast", "1e9")] {
        fs::write(
            dir.join(format!("{name}.hea")),
            format!("{name} 1 {fs_field} 10\n{name}.dat 16 200 16 0 0 0 0 II\n"),
        )
        .unwrap();
        fs::write(dir.join(format!("{name}.dat")), [0u8; 20]).unwrap();
    }
    fs::copy(
        data().join("3000003_0003.hea"),
        dir.join("3000003_0003.hea"),
    )
    .unwrap();
    fs::copy(
        data().join("3000003_0003.dat"),
        dir.join("3000003_0003.dat"),
    )
    .unwrap();
    let (_t, m) = store_of(&[dir], None);
    let errors: Vec<String> = m.sources[0]
        .errors
        .iter()
        .map(|e| e.reason.clone())
        .collect();
    assert_eq!((m.records, m.skipped), (1, 2), "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("sampling rate 0.1 Hz is outside 1–100000 Hz")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("sampling rate 1000000000 Hz is outside")),
        "{errors:?}"
    );
}

#[test]
fn holding_slow_leads_to_a_fast_lead_stays_within_a_records_samples() {
    // 12 leads at 1 sample per frame and one at 25,000 (1,000 frames): 25 million samples read,
    // within a record's 2^28, but holding the 12 to 25 kHz would make 325 million.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("held");
    fs::create_dir(&dir).unwrap();
    let mut hea = String::from("big 13 1 1000\nfast.dat 80x25000 200 8 0 -128 -8192 0 V1\n");
    for i in 0..12 {
        hea.push_str(&format!("slow.dat 80 200 8 0 0 0 0 L{i}\n"));
    }
    fs::write(dir.join("big.hea"), hea).unwrap();
    let fast = fs::File::create(dir.join("fast.dat")).unwrap();
    fast.set_len(25_000_000).unwrap(); // sparse: zeros
    fs::write(dir.join("slow.dat"), vec![0x80u8; 12_000]).unwrap();
    let e = ingest(
        &[dir],
        &tmp.path().join("store"),
        &common::site("h"),
        &|_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(
            "13 leads of 1000 frames at 25000 samples per frame: more than the 268435456 samples"
        ),
        "{e}"
    );
}
