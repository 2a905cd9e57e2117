//! Site store reads that stream (one row group at a time) and erasure that completes in fact:
//! idempotent, resumable after a crash at any step, manifest recomputed from the files.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use ecgfed_datasets::fault::{self, ErasureStep};
use ecgfed_datasets::segment::{Segment, Segmentation};
use ecgfed_datasets::store::{
    self, IngestSettings, MANIFEST, Manifest, ROW_GROUP_ROWS, StoreWriter, delete_patients,
    read_file, read_file_batches,
};
use ecgfed_datasets::{IngestOptions, ingest};

mod common;

use common::sample;

fn segment(i: u64) -> Segment {
    Segment {
        source: "syn".into(),
        record_id: format!("r{}", i / 10),
        patient: format!("p{}", i / 100),
        site: "s".into(),
        fs: 100.0,
        leads: vec!["I".into()],
        start_sample: (i % 10) * 8,
        n_samples: 8,
        signal: (0..8).map(|k| (i * 8 + k) as f32).collect(),
        label: "unknown".into(),
        label_raw: vec![],
        age: None,
        sex: None,
    }
}

/// A store of 3,000 synthetic rows written in one call (so only the writer's row-group bound
/// splits it).
fn synthetic_store(out: &Path) -> Manifest {
    let mut w = StoreWriter::create(out, false).unwrap();
    let segs: Vec<Segment> = (0..3000).map(segment).collect();
    w.write("syn", &segs).unwrap();
    w.finish(Manifest {
        schema_version: store::SCHEMA_VERSION,
        tool: "test".into(),
        created: "2026-01-01T00:00:00Z".into(),
        site: "s".into(),
        settings: IngestSettings {
            segmentation: Segmentation::default(),
            resample_hz: None,
            leads: None,
        },
        files: vec![],
        sources: vec![],
        records: 300,
        segments: 3000,
        skipped: 0,
        errors: vec![],
    })
    .unwrap()
}

fn assert_send_static<T: Send + 'static>(_: &T) {}

#[test]
fn file_batches_are_read_lazily_one_row_group_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("store");
    let m = synthetic_store(&out);
    let name = &m.files[0].name;
    let path = out.join(name);
    // The writer bounds row groups: 3,000 rows are three row groups, not one.
    let meta = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        fs::File::open(&path).unwrap(),
    )
    .unwrap()
    .metadata()
    .clone();
    let groups: Vec<i64> = meta.row_groups().iter().map(|g| g.num_rows()).collect();
    assert_eq!(groups, vec![1024, 1024, 952]);
    assert_eq!(ROW_GROUP_ROWS, 1024);

    let mut it = read_file_batches(&out, name, None, None, 1024).unwrap();
    assert_send_static(&it);
    let first = it.next().unwrap().unwrap();
    assert_eq!(first.num_rows(), 1024);
    // Truncate the file under the reader: one that had read further ahead than the row group
    // it is on would still produce the remaining batches.
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let rest: Vec<_> = std::thread::spawn(move || it.collect::<Vec<_>>())
        .join()
        .unwrap();
    // One error, then the end: the remaining row groups were not read before.
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert!(rest[0].is_err(), "{rest:?}");
}

#[test]
fn file_batches_select_rows_and_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("store");
    let m = synthetic_store(&out);
    let name = &m.files[0].name;
    let rows = [0usize, 1023, 1024, 2999];
    let batches: Vec<_> = read_file_batches(&out, name, Some(&["segment_id"]), Some(&rows), 2)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        batches
            .iter()
            .all(|b| b.num_rows() <= 2 && b.num_columns() == 1)
    );
    let ids: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_string::<i32>()
                .iter()
                .map(|s| s.unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        ids,
        vec!["syn/r0@0", "syn/r102@24", "syn/r102@32", "syn/r299@72"]
    );
    // read_file is the same read, collected.
    let collected = read_file(&out, name, Some(&["segment_id"]), Some(&rows), 2).unwrap();
    assert_eq!(collected, batches);
    let e = read_file_batches(&out, name, None, Some(&[5, 3000]), 16)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("row position 3000 is past the file's 3000 rows"),
        "{e}"
    );
    let e = read_file_batches(&out, name, None, Some(&[5, 5]), 16)
        .unwrap_err()
        .to_string();
    assert!(e.contains("sorted and distinct"), "{e}");
}

/// Patients erased in the tests below: CinC 2017 A00001 (3 segments) and LUDB 1 (1 segment).
fn gone() -> Vec<(String, String)> {
    vec![
        ("cinc2017".into(), "A00001".into()),
        ("ludb".into(), "1".into()),
    ]
}

fn sample_store(tmp: &Path) -> PathBuf {
    let out = tmp.join("pristine");
    let opts = IngestOptions {
        site: "test-site".into(),
        ..Default::default()
    };
    ingest(&[sample()], &out, &opts, &|_| {}).unwrap();
    out
}

fn copy_store(from: &Path, to: &Path) -> PathBuf {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
    to.to_path_buf()
}

/// Every file of a store folder: name → bytes.
fn listing(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// (source, patient, record) of every row, read through the manifest.
fn rows(dir: &Path) -> Vec<(String, String, String)> {
    let m = Manifest::read(dir).unwrap();
    let mut out = Vec::new();
    for f in &m.files {
        let cols = ["source", "patient", "record_id"];
        for b in read_file_batches(dir, &f.name, Some(&cols), None, 512).unwrap() {
            let b = b.unwrap();
            // A projection keeps the file's column order: look columns up by name.
            let c: Vec<_> = cols
                .iter()
                .map(|n| b.column_by_name(n).unwrap().as_string::<i32>())
                .collect();
            for i in 0..b.num_rows() {
                out.push((
                    c[0].value(i).to_string(),
                    c[1].value(i).to_string(),
                    c[2].value(i).to_string(),
                ));
            }
        }
    }
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The state an uninterrupted erasure leaves: the patients' rows gone, every other row kept,
/// the manifest's entries and counts those of the files.
fn check_erased(before: &[(String, String, String)], dir: &Path) {
    let after = rows(dir);
    let is_gone = |r: &(String, String, String)| gone().iter().any(|(s, p)| *s == r.0 && *p == r.1);
    let kept: Vec<_> = before.iter().filter(|r| !is_gone(r)).cloned().collect();
    assert_eq!(after, kept);
    assert_eq!(before.len() - after.len(), 4);
    let m = Manifest::read(dir).unwrap();
    assert_eq!((m.segments, m.records), (after.len() as u64, 97));
    let by_id: BTreeMap<&str, _> = m.sources.iter().map(|s| (s.id.as_str(), s)).collect();
    assert_eq!(by_id["cinc2017"].records, 73);
    assert_eq!(by_id["ludb"].records, 12);
    for s in &m.sources {
        let n = after.iter().filter(|r| r.0 == s.id).count() as u64;
        assert_eq!(s.segments, n, "{}", s.id);
        assert_eq!(s.segments_by_label.values().sum::<u64>(), n, "{}", s.id);
    }
    for f in &m.files {
        let bytes = fs::read(dir.join(&f.name)).unwrap();
        assert_eq!(
            (f.bytes, &f.sha256),
            (bytes.len() as u64, &sha256_hex(&bytes))
        );
        assert_eq!(
            f.rows,
            after.iter().filter(|r| r.0 == f.source).count() as u64
        );
    }
    assert!(
        listing(dir).keys().all(|n| !n.contains(".tmp-")),
        "{:?}",
        listing(dir).keys()
    );
}

/// A crash between rewriting the files and rewriting the manifest leaves the old manifest
/// (wrong sizes, digests, counts) and temporary files: a rerun repairs both.
#[test]
fn erasure_rerun_repairs_a_stale_manifest_and_removes_leftover_temporaries() {
    let tmp = tempfile::tempdir().unwrap();
    let store = sample_store(tmp.path());
    let before = rows(&store);
    let stale = fs::read(store.join(MANIFEST)).unwrap();
    assert_eq!(delete_patients(&store, &gone()).unwrap(), 4);
    check_erased(&before, &store);
    let repaired = listing(&store);
    // The crash: the old manifest is back, and temporaries of both kinds are left over.
    fs::write(store.join(MANIFEST), &stale).unwrap();
    fs::write(store.join(".segments-00000.parquet.tmp-4242"), b"partial").unwrap();
    fs::write(store.join(".manifest.json.tmp-77"), b"{").unwrap();
    fs::write(store.join(".notes.tmp-1"), b"not ours").unwrap();
    assert_eq!(delete_patients(&store, &gone()).unwrap(), 0);
    let mut want = repaired.clone();
    want.insert(".notes.tmp-1".into(), b"not ours".to_vec());
    assert_eq!(listing(&store), want);
    // Idempotent: once more changes nothing.
    assert_eq!(delete_patients(&store, &gone()).unwrap(), 0);
    assert_eq!(listing(&store), want);
}

/// Stops the erasure at each of its steps in turn (as a crash there would), checks the store
/// is readable, reruns it, and compares every byte with an uninterrupted erasure.
#[test]
fn erasure_interrupted_at_every_step_converges_to_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = sample_store(tmp.path());
    let before = rows(&pristine);
    let reference = copy_store(&pristine, &tmp.path().join("reference"));
    fault::reached_steps();
    assert_eq!(delete_patients(&reference, &gone()).unwrap(), 4);
    let steps = fault::reached_steps();
    let f0 = "segments-00000.parquet".to_string();
    let f3 = "segments-00003.parquet".to_string();
    assert_eq!(
        steps,
        vec![
            ErasureStep::FileTmpWritten(f0.clone()),
            ErasureStep::FileRenamed(f0.clone()),
            ErasureStep::FileTmpWritten(f3.clone()),
            ErasureStep::FileRenamed(f3.clone()),
            ErasureStep::BeforeManifest,
            ErasureStep::ManifestTmpWritten,
            ErasureStep::ManifestRenamed,
        ]
    );
    check_erased(&before, &reference);
    let want = listing(&reference);

    for (i, step) in steps.iter().enumerate() {
        let b = copy_store(&pristine, &tmp.path().join(format!("crash-{i}")));
        fault::stop_erasure_at(Some(step.clone()));
        let e = delete_patients(&b, &gone()).unwrap_err().to_string();
        assert!(
            e.contains(&format!("fault injection: erasure stopped at {step:?}")),
            "{e}"
        );
        // The interrupted store is a readable store.
        let m = Manifest::read(&b).unwrap();
        for f in &m.files {
            read_file(&b, &f.name, None, None, 1024).unwrap();
        }
        delete_patients(&b, &gone()).unwrap();
        assert_eq!(listing(&b), want, "interrupted at {step:?}");
        check_erased(&before, &b);
    }

    // Interrupted twice, at different steps, then completed.
    let b = copy_store(&pristine, &tmp.path().join("crash-twice"));
    fault::stop_erasure_at(Some(ErasureStep::FileRenamed(f0)));
    assert!(delete_patients(&b, &gone()).is_err());
    fault::stop_erasure_at(Some(ErasureStep::ManifestTmpWritten));
    assert!(delete_patients(&b, &gone()).is_err());
    fault::stop_erasure_at(None);
    assert_eq!(delete_patients(&b, &gone()).unwrap(), 0);
    assert_eq!(listing(&b), want);
}
