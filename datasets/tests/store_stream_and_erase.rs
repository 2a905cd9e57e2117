//! Site store reads that stream (one row group at a time).

use std::fs;
use std::path::Path;

use arrow::array::AsArray;
use ecgfed_datasets::segment::{Segment, Segmentation};
use ecgfed_datasets::store::{
    self, IngestSettings, Manifest, ROW_GROUP_ROWS, StoreWriter, read_file, read_file_batches,
};

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
