//! Ingest of the embedded sample, store round trips, atomic replacement, and corrupt input:
//! every bad file gets an error naming it and the reason; the rest is ingested.

use std::fs;
use std::path::Path;

use ecgfed_datasets::layout::{Layout, discover};
use ecgfed_datasets::load::load_record;
use ecgfed_datasets::record::Verification;
use ecgfed_datasets::store::{Manifest, read_record};
use ecgfed_datasets::{IngestOptions, Segmentation, ingest};

mod common;

use common::{opts, sample};

fn copy_record(from: &Path, stem: &str, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.file_stem().is_some_and(|s| s == stem) {
            fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn sample_layouts_are_detected() {
    let s = discover(&sample()).unwrap();
    let got: Vec<(&str, Layout, usize)> = s
        .iter()
        .map(|s| (s.id.as_str(), s.layout, s.headers.len()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("cinc2017", Layout::Cinc2017, 74),
            ("cinc2021-georgia", Layout::Cinc2021, 6),
            ("cinc2021-ptb-xl", Layout::Cinc2021, 6),
            ("ludb", Layout::Ludb, 13)
        ]
    );
    // The cinc2021 sites inherit the licence file of their parent folder.
    assert!(s[1].license.as_deref().unwrap().contains("CC BY 4.0"));
}

#[test]
fn sample_ingest_round_trips_and_hashes_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("store");
    let m = ingest(&[sample()], &out, &opts(), &|_| {}).unwrap();
    assert_eq!((m.records, m.skipped), (99, 0));
    let c = m.sources.iter().find(|s| s.id == "cinc2017").unwrap();
    assert_eq!(c.records_by_raw_label.get("A"), Some(&25));
    // LUDB record 1 (sinus bradycardia, F 51): one 10 s window of 12 leads.
    let segs = read_record(&out, "ludb/1").unwrap();
    assert_eq!(segs.len(), 1);
    let g = &segs[0].segment;
    assert_eq!(
        (g.label.as_str(), g.age, g.fs, g.leads.len(), g.signal.len()),
        ("426177001", Some(51), 500.0, 12, 60_000)
    );
    assert_eq!(g.segment_id(), "ludb/1@0");
    assert_eq!(g.content_hash(), segs[0].content_hash);
    // First sample of lead i: (digital - baseline) / gain, decoded independently here.
    let dat = fs::read(sample().join("ludb/data/1.dat")).unwrap();
    let d0 = i16::from_le_bytes([dat[0], dat[1]]) as f32;
    assert!((g.signal[0] - (d0 - 6.0) / 1716.0).abs() < 1e-6);
    // A 30 s CinC 2017 record becomes three 10 s windows; a shorter one a single segment.
    let a1 = read_record(&out, "A00001").unwrap();
    assert_eq!(
        a1.iter()
            .map(|s| s.segment.start_sample)
            .collect::<Vec<_>>(),
        vec![0, 3000, 6000]
    );
}

#[test]
fn existing_store_is_refused_and_force_replaces_atomically() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("store");
    let src = tmp.path().join("in");
    copy_record(&sample().join("cinc2021/ptb-xl"), "HR03961", &src);
    ingest(std::slice::from_ref(&src), &out, &opts(), &|_| {}).unwrap();
    let e = ingest(std::slice::from_ref(&src), &out, &opts(), &|_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("already exists"), "{e}");
    // A failing forced ingest leaves the old store untouched and no temporary folder.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let before = fs::read(out.join("manifest.json")).unwrap();
    let forced = IngestOptions {
        force: true,
        ..opts()
    };
    assert!(ingest(&[empty], &out, &forced, &|_| {}).is_err());
    assert_eq!(fs::read(out.join("manifest.json")).unwrap(), before);
    let leftovers: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 3, "{leftovers:?}");
    // A successful forced ingest replaces it.
    let m = ingest(
        &[src],
        &out,
        &IngestOptions {
            segmentation: Segmentation::Windows { secs: 5.0 },
            ..forced
        },
        &|_| {},
    )
    .unwrap();
    assert_eq!(m.segments, 2);
    assert_eq!(Manifest::read(&out).unwrap().segments, 2);
}

#[test]
fn corrupt_inputs_are_named_and_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bad");
    let ludb = sample().join("ludb/data");
    // A good record, plus one copy per kind of damage (renamed so each is its own record).
    copy_record(&ludb, "1", &dir);
    let hea1 = fs::read_to_string(ludb.join("1.hea")).unwrap();
    let dat1 = fs::read(ludb.join("1.dat")).unwrap();
    let put = |name: &str, hea: String, dat: Option<Vec<u8>>| {
        fs::write(
            dir.join(format!("{name}.hea")),
            hea.replace("1.dat", &format!("{name}.dat"))
                .replacen("1 12", &format!("{name} 12"), 1),
        )
        .unwrap();
        if let Some(d) = dat {
            fs::write(dir.join(format!("{name}.dat")), d).unwrap();
        }
    };
    put(
        "truncated",
        hea1.clone(),
        Some(dat1[..dat1.len() / 2].to_vec()),
    );
    let mut flipped = dat1.clone();
    flipped[1000] ^= 0x01; // lead index (1000/2) % 12 = 8 → v3
    put("checksum", hea1.clone(), Some(flipped));
    put("missing", hea1.clone(), None);
    put(
        "unsupported",
        hea1.replace(" 16 ", " 999 "),
        Some(dat1.clone()),
    );
    fs::write(dir.join("garbage.hea"), "\u{1}\u{2} not a header\nxx yy\n").unwrap();

    let out = tmp.path().join("store");
    let m = ingest(std::slice::from_ref(&dir), &out, &opts(), &|_| {}).unwrap();
    assert_eq!((m.records, m.skipped), (1, 5));
    let errors: Vec<String> = m.sources[0]
        .errors
        .iter()
        .map(|e| format!("{} :: {}", e.file, e.reason))
        .collect();
    let find = |needle: &str| {
        errors
            .iter()
            .find(|e| e.contains(needle))
            .cloned()
            .unwrap_or_else(|| panic!("no error for {needle}: {errors:#?}"))
    };
    assert!(find("truncated.hea").contains("truncated: header announces 5000 samples"));
    let ck = find("checksum.hea");
    assert!(ck.contains("checksum.dat: lead v3: checksum"), "{ck}");
    assert!(find("missing.hea").contains("missing.dat: No such file"));
    assert!(find("unsupported.hea").contains("unsupported format 999 in"));
    assert!(find("garbage.hea").contains("garbage.hea:1: number of signals"));

    // Nothing ingestible at all: an error listing each reason, and no store.
    fs::remove_file(dir.join("1.hea")).unwrap();
    let out2 = tmp.path().join("store2");
    let e = ingest(&[dir], &out2, &opts(), &|_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nothing could be ingested") && e.contains("unsupported format 999"),
        "{e}"
    );
    assert!(!out2.exists());
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let e = ingest(&[empty], &out2, &opts(), &|_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("no WFDB records (.hea files) found"), "{e}");
}

#[test]
fn strict_verification_rejects_cinc2017_style_headers_elsewhere() {
    // The CinC 2017 headers' checksum 0 is only tolerated for that layout.
    let r = load_record(&sample().join("cinc2017/A00001.hea"), Verification::Strict);
    assert!(
        r.unwrap_err()
            .to_string()
            .contains("checksum 0 in the header")
    );
    let r = load_record(&sample().join("cinc2017/A00001.hea"), Verification::Warn).unwrap();
    assert_eq!(r.warnings[0].kind, "checksum_not_recorded");
}

#[test]
fn resampling_and_lead_selection() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("store");
    let o = IngestOptions {
        resample_hz: Some(250),
        leads: Some(vec!["II".into()]),
        ..opts()
    };
    let m = ingest(&[sample().join("cinc2021")], &out, &o, &|_| {}).unwrap();
    assert_eq!(m.records, 12);
    let s = read_record(&out, "HR03961").unwrap();
    assert_eq!(
        (
            s[0].segment.fs,
            s[0].segment.leads.clone(),
            s[0].segment.signal.len()
        ),
        (250.0, vec!["II".to_string()], 2500)
    );
    assert_eq!(
        (s[0].segment.n_samples, s[0].segment.start_sample),
        (5000, 0)
    );
    let bad = IngestOptions {
        leads: Some(vec!["MLII".into()]),
        ..opts()
    };
    let e = ingest(
        &[sample().join("cinc2021")],
        &tmp.path().join("s2"),
        &bad,
        &|_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("lead not in record"), "{e}");
}
