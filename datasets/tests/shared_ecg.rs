//! Known values of the real ECG databases in `../shared/ecg` (FACTS.md), checked against the
//! readers and a full ingest. The folder is found at `$ECGFED_SHARED_ECG` or `../shared/ecg`
//! beside the repository; `.ci/run` sets `ECGFED_REQUIRE_SHARED=1` when it exists, so these
//! tests cannot pass by skipping there.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ecgfed_datasets::annotation::{is_beat, read_annotations};
use ecgfed_datasets::demographics::{Sex, from_comments};
use ecgfed_datasets::header::read_header;
use ecgfed_datasets::labels::aami_class;
use ecgfed_datasets::load::load_record;
use ecgfed_datasets::record::Verification;
use ecgfed_datasets::segment::rhythm_changes;
use ecgfed_datasets::store::Manifest;
use ecgfed_datasets::strata::{Dimension, StrataOptions, strata};
use ecgfed_datasets::{IngestOptions, ingest};

fn shared() -> Option<PathBuf> {
    let p = std::env::var_os("ECGFED_SHARED_ECG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/ecg"));
    if p.join("mitdb").is_dir() {
        return Some(p);
    }
    assert!(
        std::env::var_os("ECGFED_REQUIRE_SHARED").is_none(),
        "ECGFED_REQUIRE_SHARED is set but {} has no mitdb folder",
        p.display()
    );
    eprintln!(
        "shared ECG data not present at {}: test not run",
        p.display()
    );
    None
}

const MITDB: [&str; 48] = [
    "100", "101", "102", "103", "104", "105", "106", "107", "108", "109", "111", "112", "113",
    "114", "115", "116", "117", "118", "119", "121", "122", "123", "124", "200", "201", "202",
    "203", "205", "207", "208", "209", "210", "212", "213", "214", "215", "217", "219", "220",
    "221", "222", "223", "228", "230", "231", "232", "233", "234",
];

#[test]
fn mitdb_101_first_samples() {
    let Some(d) = shared() else { return };
    let r = load_record(&d.join("mitdb/101.hea"), Verification::Strict).unwrap();
    assert_eq!(r.leads, vec!["MLII", "V1"]);
    assert_eq!((r.digital[0][0], r.digital[1][0]), (955, 992));
    assert_eq!(r.n_samples, 650_000);
    let mv = r.physical().unwrap();
    assert!((mv[0][0] - (955.0 - 1024.0) / 200.0).abs() < 1e-6);
}

#[test]
fn mitdb_all_48_checksums_initial_values_and_demographics() {
    let Some(d) = shared() else { return };
    let mut sex = BTreeMap::new();
    let mut unknown_age = vec![];
    let mut signals = 0;
    for rec in MITDB {
        // Strict verification: any checksum or initial-value mismatch is an error.
        let r = load_record(&d.join(format!("mitdb/{rec}.hea")), Verification::Strict)
            .unwrap_or_else(|e| panic!("{rec}: {e}"));
        for (spec, s) in r.header.signals.iter().zip(&r.digital) {
            assert_eq!(spec.initial_value, Some(s[0] as i64), "{rec}");
            let sum = s.iter().fold(0i64, |a, &v| a + v as i64);
            assert_eq!(spec.checksum.map(|c| c as i16), Some(sum as i16), "{rec}");
            signals += 1;
        }
        let dm = from_comments(&r.header.comments);
        *sex.entry(dm.sex.map(Sex::code)).or_insert(0) += 1;
        if dm.age.is_none() {
            unknown_age.push(rec);
        }
    }
    assert_eq!(signals, 96);
    assert_eq!((sex[&Some("M")], sex[&Some("F")]), (26, 22));
    assert_eq!(unknown_age, vec!["103", "219"]);
}

#[test]
fn mitdb_beat_counts_aami_totals_and_rhythm_strings() {
    let Some(d) = shared() else { return };
    let expect_beats: BTreeMap<&str, usize> = [
        ("101", 1865),
        ("102", 2187),
        ("104", 2229),
        ("106", 2027),
        ("107", 2137),
        ("108", 1763),
        ("203", 2980),
        ("208", 2955),
    ]
    .into();
    let mut aami: BTreeMap<&str, u64> = BTreeMap::new();
    let mut aux: BTreeMap<String, u64> = BTreeMap::new();
    for rec in MITDB {
        let a = read_annotations(&d.join(format!("mitdb/{rec}.atr"))).unwrap();
        let beats = a.iter().filter(|x| is_beat(x.symbol())).count();
        if let Some(&n) = expect_beats.get(rec) {
            assert_eq!(beats, n, "beats in {rec}");
        }
        for x in &a {
            if let Some(c) = aami_class(x.symbol()) {
                *aami.entry(c).or_default() += 1;
            }
        }
        if rec == "208" {
            let f = a.iter().filter(|x| x.symbol() == "F").count();
            assert_eq!(f, 373, "208 fusion beats");
        }
        for (_, s) in rhythm_changes(&a) {
            *aux.entry(s).or_default() += 1;
        }
    }
    assert_eq!(
        aami,
        BTreeMap::from([
            ("N", 90631),
            ("S", 2781),
            ("V", 7236),
            ("F", 803),
            ("Q", 8043)
        ])
    );
    let expect_aux: BTreeMap<String, u64> = [
        ("(N", 530),
        ("(B", 221),
        ("(AFIB", 107),
        ("(PREX", 103),
        ("(T", 83),
        ("(VT", 61),
        ("(P", 60),
        ("(AFL", 45),
        ("(NOD", 36),
        ("(SVTA", 26),
        ("(VFL", 6),
        ("(BII", 5),
        ("(IVR", 4),
        ("(AB", 3),
        ("(SBR", 1),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), *v))
    .collect();
    assert_eq!(aux, expect_aux);
}

#[test]
fn ludb_record_1_wave_annotations_and_header() {
    let Some(d) = shared() else { return };
    let a = read_annotations(&d.join("ludb/data/1.ii")).unwrap();
    assert_eq!(a.len(), 48);
    let mut sym: BTreeMap<&str, usize> = BTreeMap::new();
    for x in &a {
        *sym.entry(x.symbol()).or_default() += 1;
    }
    assert_eq!(
        sym,
        BTreeMap::from([("(", 16), ("N", 6), (")", 16), ("t", 5), ("p", 5)])
    );
    for lead in [
        "i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6",
    ] {
        assert_eq!(
            read_annotations(&d.join(format!("ludb/data/1.{lead}")))
                .unwrap()
                .len(),
            48,
            "lead {lead}"
        );
    }
    let h = read_header(&d.join("ludb/data/1.hea")).unwrap();
    assert_eq!(
        (
            h.signals[0].adc_gain,
            h.signals[0].baseline,
            h.signals[0].checksum
        ),
        (1716.0, 6, Some(-32198))
    );
}

fn count(m: &BTreeMap<String, u64>, k: &str) -> u64 {
    m.get(k).copied().unwrap_or(0)
}

/// Ingests all of `../shared/ecg` once and checks every per-folder fact of FACTS.md from the
/// manifest, then strata over the store.
#[test]
fn full_ingest_matches_facts() {
    let Some(d) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("store");
    let m = ingest(
        std::slice::from_ref(&d),
        &out,
        &IngestOptions {
            site: "facts".into(),
            ..Default::default()
        },
        &|_| {},
    )
    .unwrap();
    assert_eq!(
        Manifest::read(&out).unwrap(),
        m,
        "manifest on disk equals the one returned"
    );
    let by_id: BTreeMap<&str, _> = m.sources.iter().map(|s| (s.id.as_str(), s)).collect();
    assert_eq!(
        by_id.keys().copied().collect::<Vec<_>>(),
        vec![
            "cinc2017",
            "cinc2021-chapman_shaoxing",
            "cinc2021-cpsc_2018",
            "cinc2021-georgia",
            "cinc2021-ningbo",
            "cinc2021-ptb-xl",
            "ludb",
            "mitdb"
        ]
    );
    for s in &m.sources {
        assert_eq!(s.skipped, 0, "{}: {:?}", s.id, s.errors);
        assert!(
            s.license.as_deref().is_some_and(|l| l.contains("Licen")),
            "{} carries its licence",
            s.id
        );
    }
    assert!(m.errors.is_empty());
    assert_eq!(m.records, 1604);

    // CinC 2017: 1,200 records, N 727 / A 118 / O 351 / ~ 4, 57 initial-value warnings.
    let c = by_id["cinc2017"];
    assert_eq!(c.records, 1200);
    assert_eq!(
        [
            count(&c.records_by_raw_label, "N"),
            count(&c.records_by_raw_label, "A"),
            count(&c.records_by_raw_label, "O"),
            count(&c.records_by_raw_label, "~")
        ],
        [727, 118, 351, 4]
    );
    assert_eq!(count(&c.records_by_label, "164889003"), 118);
    assert_eq!(c.warnings["initial_value_mismatch"].records.len(), 57);
    assert_eq!(c.warnings["checksum_not_recorded"].records.len(), 1200);
    assert_eq!(c.sex.get("unknown"), Some(&1200));
    assert_eq!(c.age.unknown, 1200);

    // LUDB: 200 records, M 115 / F 85, age 11..90 median 56, rhythm statements.
    let l = by_id["ludb"];
    assert_eq!(l.records, 200);
    assert_eq!((count(&l.sex, "M"), count(&l.sex, "F")), (115, 85));
    assert_eq!(
        (l.age.min, l.age.median, l.age.max, l.age.unknown),
        (Some(11), Some(56.0), Some(90), 0)
    );
    assert_eq!(count(&l.records_by_label, "426783006"), 143);
    assert_eq!(count(&l.records_by_label, "426177001"), 25);
    assert_eq!(count(&l.records_by_label, "164889003"), 15);
    assert_eq!(count(&l.records_by_label, "427393009"), 8 + 2);
    assert_eq!(count(&l.records_by_label, "427084000"), 4);
    assert_eq!(count(&l.records_by_label, "164890007"), 3);
    // Every per-lead wave annotation file of the 200 records was parsed and counted.
    let mut waves = 0u64;
    for rec in 1..=200 {
        for lead in [
            "i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6",
        ] {
            waves += read_annotations(&d.join(format!("ludb/data/{rec}.{lead}")))
                .unwrap()
                .len() as u64;
        }
    }
    assert!(waves > 200 * 12 * 10);
    assert_eq!(l.annotations.as_ref().unwrap().wave_annotations, waves);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);

    // CinC 2021: per-site records and sex, Female 79 / Male 77 in all.
    let sites = [
        ("chapman_shaoxing", 9, 4, 5),
        ("cpsc_2018", 4, 1, 3),
        ("georgia", 60, 33, 27),
        ("ningbo", 56, 26, 30),
        ("ptb-xl", 27, 15, 12),
    ];
    let (mut f, mut mm) = (0, 0);
    for (site, n, females, males) in sites {
        let s = by_id[format!("cinc2021-{site}").as_str()];
        assert_eq!(
            (s.records, count(&s.sex, "F"), count(&s.sex, "M")),
            (n, females, males),
            "{site}"
        );
        f += females;
        mm += males;
    }
    assert_eq!((f, mm), (79, 77));
    let p = by_id["cinc2021-ptb-xl"];
    assert_eq!(count(&p.records_by_raw_label, "426783006"), 25);
    assert_eq!(count(&p.records_by_raw_label, "426177001"), 2);
    assert_eq!(count(&p.records_by_raw_label, "427084000"), 1);
    let g = by_id["cinc2021-georgia"];
    assert_eq!((g.age.min, g.age.max), (Some(29), Some(88)));

    // MIT-BIH: 48 records, 2 unknown ages, AAMI totals from the annotations, 180 windows each.
    let mi = by_id["mitdb"];
    assert_eq!((mi.records, mi.age.unknown, mi.segments), (48, 2, 48 * 180));
    let an = mi.annotations.as_ref().unwrap();
    assert_eq!(
        ["N", "S", "V", "F", "Q"].map(|k| an.beats_by_aami[k]),
        [90631, 2781, 7236, 803, 8043]
    );

    // Strata over the store: every segment counted once; small cells suppressed.
    let all = strata(
        &out,
        &StrataOptions {
            by: vec![],
            age_edges: vec![20, 40, 60, 80],
            k: 1,
        },
    )
    .unwrap();
    assert_eq!(all.cells.len(), 1);
    assert_eq!(
        (all.cells[0].segments, all.cells[0].records),
        (m.segments, 1604)
    );
    assert_eq!(
        all.cells[0].patients, 1603,
        "MIT-BIH 201 and 202 are one patient"
    );
    let by_sex = strata(
        &out,
        &StrataOptions {
            by: vec![Dimension::Source, Dimension::Sex],
            age_edges: vec![],
            k: 1,
        },
    )
    .unwrap();
    let ludb_m = by_sex
        .cells
        .iter()
        .find(|c| c.key == ["ludb", "M"])
        .unwrap();
    assert_eq!(ludb_m.records, 115);
    let cinc_unknown = by_sex
        .cells
        .iter()
        .find(|c| c.key == ["cinc2017", "unknown"])
        .unwrap();
    assert_eq!(cinc_unknown.records, 1200);
    let k10 = strata(&out, &StrataOptions::default()).unwrap();
    assert!(k10.suppressed_cells > 0);
    assert!(k10.cells.iter().all(|c| c.patients >= 10));
}

/// Beat segmentation of MIT-BIH 208 and 232: one window per beat, labelled with its AAMI class
/// (FACTS.md per-record table).
#[test]
fn mitdb_beat_windows_carry_aami_classes() {
    let Some(d) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("mitdb");
    std::fs::create_dir(&src).unwrap();
    // Copies, not symbolic links: a link out of the ingested folder is refused (paths.rs).
    for rec in ["208", "232"] {
        for ext in ["hea", "dat", "atr"] {
            std::fs::copy(
                d.join(format!("mitdb/{rec}.{ext}")),
                src.join(format!("{rec}.{ext}")),
            )
            .unwrap();
        }
    }
    let out = tmp.path().join("store");
    let opts = IngestOptions {
        site: "s".into(),
        segmentation: ecgfed_datasets::Segmentation::Beats {
            secs: 1.0,
            fallback_secs: 10.0,
        },
        ..Default::default()
    };
    let m = ingest(&[src], &out, &opts, &|_| {}).unwrap();
    let s = &m.sources[0];
    let dropped = s
        .warnings
        .get("duplicate_beat_window")
        .map_or(0, |w| w.records.len());
    assert_eq!(dropped, 0, "{:?}", s.warnings);
    let seg = |k: &str| s.segments_by_label.get(k).copied().unwrap_or(0);
    // 208: N 1586 S 2 V 992 F 373 Q 2; 232: N 398 S 1382.
    assert_eq!(
        [seg("N"), seg("S"), seg("V"), seg("F"), seg("Q")],
        [1586 + 398, 2 + 1382, 992, 373, 2]
    );
    let rows = ecgfed_datasets::store::read_record(&out, "208").unwrap();
    assert_eq!(rows.len(), 2955);
    assert!(
        rows.iter()
            .all(|r| r.segment.n_samples == 360 && r.segment.signal.len() == 720)
    );
    // Unmapped beat codes (232 has none of B, r, n, ?, so all are mapped).
    assert_eq!(seg("unmapped"), 0);
}
