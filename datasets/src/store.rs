//! Site stores: a folder of zstd Parquet files (`segments-*.parquet`, schema v1) and a
//! `manifest.json`. Written into a temporary sibling folder and renamed into place, so a
//! reader never sees a half-written store. Files are read lazily, one row group at a time
//! ([`read_file_batches`]); the file names a manifest lists are checked by [`crate::paths`]
//! (plain names of regular files inside the store folder) before any is opened.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeBinaryBuilder, Float32Builder, ListBuilder, RecordBatch,
    StringBuilder, UInt8Builder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{
    DataType, Field, Float32Type, Schema, SchemaRef, UInt8Type, UInt32Type, UInt64Type,
};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use sha2::{Digest, Sha256};

use crate::demographics::Sex;
use crate::error::{DatasetError, Result};
use crate::paths::{self, PathError};
use crate::record::RecordWarning;
use crate::segment::{Segment, Segmentation};

/// Version of the store schema and manifest format. Version 2 changed the content hash
/// encoding (`ecgfed-segment-v2`: the samples enter as their BLAKE3 digest); a version-1 store
/// is refused and must be ingested again.
pub const SCHEMA_VERSION: u32 = 2;
/// Manifest file name.
pub const MANIFEST: &str = "manifest.json";

/// The Arrow schema of store v1 (column names are the contract, see docs/datasets.md).
pub fn schema() -> SchemaRef {
    let list = |t: DataType| DataType::List(Arc::new(Field::new_list_field(t, false)));
    Arc::new(Schema::new(vec![
        Field::new("segment_id", DataType::Utf8, false),
        Field::new("record_id", DataType::Utf8, false),
        Field::new("patient", DataType::Utf8, false),
        Field::new("site", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("fs", DataType::Float32, false),
        Field::new("leads", list(DataType::Utf8), false),
        Field::new("start_sample", DataType::UInt64, false),
        Field::new("n_samples", DataType::UInt32, false),
        Field::new("signal", list(DataType::Float32), false),
        Field::new("label", DataType::Utf8, false),
        Field::new("label_raw", list(DataType::Utf8), false),
        Field::new("age", DataType::UInt8, true),
        Field::new("sex", DataType::Utf8, true),
        Field::new("content_hash", DataType::FixedSizeBinary(32), false),
    ]))
}

/// Builds one record batch of store rows from segments.
pub fn to_batch(segments: &[Segment]) -> Result<RecordBatch> {
    let n = segments.len();
    let mut segment_id = StringBuilder::new();
    let mut record_id = StringBuilder::new();
    let mut patient = StringBuilder::new();
    let mut site = StringBuilder::new();
    let mut source = StringBuilder::new();
    let mut fs = Float32Builder::with_capacity(n);
    let nl = |t| Field::new_list_field(t, false);
    let mut leads = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(nl(DataType::Utf8)));
    let mut start = UInt64Builder::with_capacity(n);
    let mut len = UInt32Builder::with_capacity(n);
    let total: usize = segments.iter().map(|s| s.signal.len()).sum();
    let mut signal = ListBuilder::with_capacity(Float32Builder::with_capacity(total), n)
        .with_field(Arc::new(nl(DataType::Float32)));
    let mut label = StringBuilder::new();
    let mut raw = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(nl(DataType::Utf8)));
    let mut age = UInt8Builder::with_capacity(n);
    let mut sex = StringBuilder::new();
    let mut hash = FixedSizeBinaryBuilder::with_capacity(n, 32);
    for s in segments {
        segment_id.append_value(s.segment_id());
        record_id.append_value(&s.record_id);
        patient.append_value(&s.patient);
        site.append_value(&s.site);
        source.append_value(&s.source);
        fs.append_value(s.fs);
        leads.append_value(s.leads.iter().map(Some));
        start.append_value(s.start_sample);
        len.append_value(s.n_samples);
        signal.values().append_slice(&s.signal);
        signal.append(true);
        label.append_value(&s.label);
        raw.append_value(s.label_raw.iter().map(Some));
        age.append_option(s.age);
        sex.append_option(s.sex.map(Sex::code));
        hash.append_value(s.content_hash())
            .map_err(|e| DatasetError::store("content_hash", e))?;
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(segment_id.finish()),
        Arc::new(record_id.finish()),
        Arc::new(patient.finish()),
        Arc::new(site.finish()),
        Arc::new(source.finish()),
        Arc::new(fs.finish()),
        Arc::new(leads.finish()),
        Arc::new(start.finish()),
        Arc::new(len.finish()),
        Arc::new(signal.finish()),
        Arc::new(label.finish()),
        Arc::new(raw.finish()),
        Arc::new(age.finish()),
        Arc::new(sex.finish()),
        Arc::new(hash.finish()),
    ];
    RecordBatch::try_new(schema(), cols).map_err(|e| DatasetError::store("record batch", e))
}

/// A segment read back from a store, with its stored content hash.
#[derive(Debug, Clone)]
pub struct StoredSegment {
    /// The segment.
    pub segment: Segment,
    /// `content_hash` as stored.
    pub content_hash: [u8; 32],
}

/// Converts a store record batch back into segments.
pub fn from_batch(batch: &RecordBatch, path: &Path) -> Result<Vec<StoredSegment>> {
    let bad = |what: &str| {
        DatasetError::store(
            path,
            format!("column `{what}` missing or of the wrong type"),
        )
    };
    let col = |name: &str| batch.column_by_name(name).ok_or_else(|| bad(name));
    let utf8 = |name: &str| col(name)?.as_string_opt::<i32>().ok_or_else(|| bad(name));
    let list = |name: &str| col(name)?.as_list_opt::<i32>().ok_or_else(|| bad(name));
    let (record_id, patient, site, source, label, sex) = (
        utf8("record_id")?,
        utf8("patient")?,
        utf8("site")?,
        utf8("source")?,
        utf8("label")?,
        utf8("sex")?,
    );
    let fs = col("fs")?
        .as_primitive_opt::<Float32Type>()
        .ok_or_else(|| bad("fs"))?;
    let start = col("start_sample")?
        .as_primitive_opt::<UInt64Type>()
        .ok_or_else(|| bad("start_sample"))?;
    let len = col("n_samples")?
        .as_primitive_opt::<UInt32Type>()
        .ok_or_else(|| bad("n_samples"))?;
    let age = col("age")?
        .as_primitive_opt::<UInt8Type>()
        .ok_or_else(|| bad("age"))?;
    let (leads, signal, raw) = (list("leads")?, list("signal")?, list("label_raw")?);
    let hash = col("content_hash")?
        .as_fixed_size_binary_opt()
        .filter(|h| h.value_length() == 32)
        .ok_or_else(|| bad("content_hash"))?;
    let strings = |l: &arrow::array::ListArray, i: usize| -> Result<Vec<String>> {
        let v = l.value(i);
        let s = v.as_string_opt::<i32>().ok_or_else(|| bad("list<utf8>"))?;
        Ok(s.iter()
            .map(|x| x.unwrap_or_default().to_string())
            .collect())
    };
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let sig = signal.value(i);
        let sig = sig
            .as_primitive_opt::<Float32Type>()
            .ok_or_else(|| bad("signal"))?;
        let mut h = [0u8; 32];
        h.copy_from_slice(hash.value(i));
        out.push(StoredSegment {
            segment: Segment {
                source: source.value(i).to_string(),
                record_id: record_id.value(i).to_string(),
                patient: patient.value(i).to_string(),
                site: site.value(i).to_string(),
                fs: fs.value(i),
                leads: strings(leads, i)?,
                start_sample: start.value(i),
                n_samples: len.value(i),
                signal: sig.values().to_vec(),
                label: label.value(i).to_string(),
                label_raw: strings(raw, i)?,
                age: age.is_valid(i).then(|| age.value(i)),
                sex: if sex.is_valid(i) {
                    Sex::parse(sex.value(i))
                } else {
                    None
                },
            },
            content_hash: h,
        });
    }
    Ok(out)
}

/// One Parquet file of a store.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoreFile {
    /// File name inside the store folder.
    pub name: String,
    /// Source whose segments it holds.
    pub source: String,
    /// Rows (segments).
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

/// Age summary of a source (records with a known age).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AgeSummary {
    /// Youngest.
    pub min: Option<u8>,
    /// Median (mean of the two middle values for an even count).
    pub median: Option<f64>,
    /// Oldest.
    pub max: Option<u8>,
    /// Records whose age is unknown.
    pub unknown: u64,
}

/// A data-quality warning kind with its count and the records concerned.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WarningSummary {
    /// Number of occurrences.
    pub count: u64,
    /// Records concerned (sorted, deduplicated).
    pub records: Vec<String>,
    /// What this warning means and how it was handled.
    pub meaning: String,
}

/// A file that could not be ingested.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FileError {
    /// File (or record header) concerned.
    pub file: String,
    /// Why it was skipped.
    pub reason: String,
}

/// Annotation statistics of a source (beat and rhythm annotations, wave annotations).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AnnotationSummary {
    /// Beat annotations (the 19 MIT beat codes).
    pub beats: u64,
    /// Beat annotations per AAMI class (`unmapped` for B, r, n, ?).
    pub beats_by_aami: BTreeMap<String, u64>,
    /// Rhythm changes (`+` annotations) per aux string.
    pub rhythm_changes: BTreeMap<String, u64>,
    /// Per-lead wave annotations (LUDB) parsed.
    pub wave_annotations: u64,
}

/// Per-source summary kept in the manifest.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SourceSummary {
    /// Source id.
    pub id: String,
    /// Detected layout.
    pub layout: String,
    /// Folder as given on the command line (or found below it).
    pub folder: String,
    /// `LICENSE-AND-SOURCE.md` text (attribution), if any.
    pub license: Option<String>,
    /// Records ingested.
    pub records: u64,
    /// Records skipped because of errors (listed in `errors`).
    pub skipped: u64,
    /// Segments stored.
    pub segments: u64,
    /// Raw signal bytes read.
    pub signal_bytes: u64,
    /// Records per normalised label (record-level labels; for annotated records the label of
    /// the longest-lasting rhythm).
    pub records_by_label: BTreeMap<String, u64>,
    /// Records per source label code (CinC 2017 `N`, `A`, `O`, `~`; LUDB text; SNOMED codes).
    pub records_by_raw_label: BTreeMap<String, u64>,
    /// Segments per normalised label.
    pub segments_by_label: BTreeMap<String, u64>,
    /// Segments per origin of their label: `annotation`, `header`, `label_file`, `unknown`
    /// (absent in stores written before it was counted).
    #[serde(default)]
    pub segments_by_label_origin: BTreeMap<String, u64>,
    /// Records per sex (`M`, `F`, `unknown`).
    pub sex: BTreeMap<String, u64>,
    /// Age statistics over records.
    pub age: AgeSummary,
    /// Source codes that no mapping table knows, with the number of records carrying them.
    pub unmapped_codes: BTreeMap<String, u64>,
    /// Annotation statistics, when the source has annotation files.
    pub annotations: Option<AnnotationSummary>,
    /// Data-quality warnings by kind.
    pub warnings: BTreeMap<String, WarningSummary>,
    /// Files that could not be ingested.
    pub errors: Vec<FileError>,
}

/// Ingest settings recorded in the manifest.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IngestSettings {
    /// Segmentation choice.
    pub segmentation: Segmentation,
    /// Common sampling rate, when resampled.
    pub resample_hz: Option<u32>,
    /// Leads kept, when a selection was made.
    pub leads: Option<Vec<String>>,
}

/// `manifest.json` of a store.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Store schema version ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Tool and version that wrote the store.
    pub tool: String,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// Site name.
    pub site: String,
    /// Ingest settings.
    pub settings: IngestSettings,
    /// Parquet files.
    pub files: Vec<StoreFile>,
    /// Per-source summaries.
    pub sources: Vec<SourceSummary>,
    /// Records over all sources.
    pub records: u64,
    /// Segments over all sources.
    pub segments: u64,
    /// Records skipped over all sources.
    pub skipped: u64,
    /// Folders that could not be ingested at all (empty, unreadable, ...).
    pub errors: Vec<FileError>,
}

impl Manifest {
    /// Reads `manifest.json` of the store at `dir` and checks its schema version and files:
    /// every listed file name must be a plain file name of a regular file inside the store
    /// folder ([`crate::paths`]); a name such as `../x.parquet` or `/abs.parquet` is refused.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        let missing = || DatasetError::store(dir, "not a site store: manifest.json is missing");
        let folder = match paths::Folder::new(dir) {
            Ok(f) => f,
            Err(e) if e.is_not_found() => return Err(missing()),
            Err(e) => return Err(e.at(dir)),
        };
        let bytes = match folder.open(MANIFEST) {
            Ok(f) => f
                .read_all(paths::MAX_TEXT_BYTES)
                .map_err(|e| store_file_error(dir, MANIFEST, e))?,
            Err(e) if e.is_not_found() => return Err(missing()),
            Err(e) => return Err(store_file_error(dir, MANIFEST, e)),
        };
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| DatasetError::store(&path, format!("malformed manifest: {e}")))?;
        if m.schema_version != SCHEMA_VERSION {
            return Err(DatasetError::store(
                &path,
                format!(
                    "store schema version {} is not supported (expected {SCHEMA_VERSION}){}",
                    m.schema_version,
                    if m.schema_version < SCHEMA_VERSION {
                        "; its content hashes use an older encoding: ingest the sources again \
                         with `ecgfed datasets ingest` (docs/datasets.md)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        for f in &m.files {
            match folder.open(&f.name) {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {
                    return Err(DatasetError::store(
                        dir,
                        format!("file {} listed in the manifest is missing", f.name),
                    ));
                }
                Err(PathError::Io(e)) => return Err(DatasetError::io(dir.join(&f.name), e)),
                Err(e) => {
                    return Err(DatasetError::store(
                        &path,
                        e.describe("listed file", &f.name, "the store folder"),
                    ));
                }
            }
        }
        Ok(m)
    }
}

/// A store error for the file `name` of the store at `dir` that was refused or not readable.
fn store_file_error(dir: &Path, name: &str, e: PathError) -> DatasetError {
    match e {
        PathError::Io(io) => DatasetError::io(dir.join(name), io),
        refused => DatasetError::store(
            dir,
            refused.describe("store file", name, "the store folder"),
        ),
    }
}

/// Writes a new store: Parquet files into a temporary folder beside `out`, then a rename.
pub struct StoreWriter {
    out: PathBuf,
    tmp: PathBuf,
    force: bool,
    files: Vec<StoreFile>,
    current: Option<(String, String, ArrowWriter<File>, u64)>,
    finished: bool,
}

/// Most rows in one Parquet row group of a store file.
pub const ROW_GROUP_ROWS: usize = 1024;
/// Most (estimated, encoded) bytes in one Parquet row group of a store file, so that a row
/// group stays small when rows are large (whole-record windows).
pub const ROW_GROUP_BYTES: usize = 64 << 20;

fn writer_properties() -> WriterProperties {
    let signal = ColumnPath::from(vec![
        "signal".to_string(),
        "list".to_string(),
        "item".to_string(),
    ]);
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        .set_column_dictionary_enabled(signal.clone(), false)
        .set_column_encoding(signal, Encoding::BYTE_STREAM_SPLIT)
        .build()
}

impl StoreWriter {
    /// Starts a store at `out`. An existing `out` is refused unless `force`, in which case it
    /// is replaced only when [`StoreWriter::finish`] succeeds.
    pub fn create(out: &Path, force: bool) -> Result<StoreWriter> {
        if out.exists() && !force {
            return Err(DatasetError::store(
                out,
                "already exists; choose another --out or pass --force to replace it",
            ));
        }
        let name = out
            .file_name()
            .ok_or_else(|| DatasetError::store(out, "is not a usable folder name"))?;
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| DatasetError::io(&parent, e))?;
        let tmp = parent.join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| DatasetError::io(&tmp, e))?;
        }
        std::fs::create_dir(&tmp).map_err(|e| DatasetError::io(&tmp, e))?;
        Ok(StoreWriter {
            out: out.to_path_buf(),
            tmp,
            force,
            files: Vec::new(),
            current: None,
            finished: false,
        })
    }

    /// Appends segments of `source`; a new source starts a new Parquet file.
    pub fn write(&mut self, source: &str, segments: &[Segment]) -> Result<()> {
        if segments.is_empty() {
            return Ok(());
        }
        if self.current.as_ref().is_some_and(|c| c.1 != source) {
            self.close_current()?;
        }
        if self.current.is_none() {
            let name = format!("segments-{:05}.parquet", self.files.len());
            let path = self.tmp.join(&name);
            let file = File::create(&path).map_err(|e| DatasetError::io(&path, e))?;
            let w = ArrowWriter::try_new(file, schema(), Some(writer_properties()))
                .map_err(|e| DatasetError::store(&path, e))?;
            self.current = Some((name, source.to_string(), w, 0));
        }
        let batch = to_batch(segments)?;
        if let Some((name, _, w, rows)) = self.current.as_mut() {
            w.write(&batch)
                .map_err(|e| DatasetError::store(self.tmp.join(&*name), e))?;
            *rows += segments.len() as u64;
        }
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some((name, source, w, rows)) = self.current.take() {
            let path = self.tmp.join(&name);
            let file = w.into_inner().map_err(|e| DatasetError::store(&path, e))?;
            file.sync_all().map_err(|e| DatasetError::io(&path, e))?;
            let (bytes, sha256) = file_digest(&path)?;
            self.files.push(StoreFile {
                name,
                source,
                rows,
                bytes,
                sha256,
            });
        }
        Ok(())
    }

    /// Writes the manifest (its `files` filled in here) and moves the store into place.
    pub fn finish(mut self, mut manifest: Manifest) -> Result<Manifest> {
        self.close_current()?;
        manifest.files = self.files.clone();
        let mpath = self.tmp.join(MANIFEST);
        let json =
            serde_json::to_vec_pretty(&manifest).map_err(|e| DatasetError::store(&mpath, e))?;
        std::fs::write(&mpath, json).map_err(|e| DatasetError::io(&mpath, e))?;
        File::open(&mpath)
            .and_then(|f| f.sync_all())
            .map_err(|e| DatasetError::io(&mpath, e))?;
        if self.out.exists() {
            if !self.force {
                return Err(DatasetError::store(
                    &self.out,
                    "appeared while ingesting; not replaced",
                ));
            }
            let old = self.tmp.with_extension("old");
            std::fs::rename(&self.out, &old).map_err(|e| DatasetError::io(&self.out, e))?;
            std::fs::rename(&self.tmp, &self.out).map_err(|e| DatasetError::io(&self.out, e))?;
            std::fs::remove_dir_all(&old).map_err(|e| DatasetError::io(&old, e))?;
        } else {
            std::fs::rename(&self.tmp, &self.out).map_err(|e| DatasetError::io(&self.out, e))?;
        }
        if let Some(parent) = self.out.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = File::open(parent).and_then(|f| f.sync_all());
        }
        self.finished = true;
        Ok(manifest)
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

fn file_digest(path: &Path) -> Result<(u64, String)> {
    let mut f = File::open(path).map_err(|e| DatasetError::io(path, e))?;
    digest(&mut f, path)
}

fn digest(f: &mut File, path: &Path) -> Result<(u64, String)> {
    let mut h = Sha256::new();
    let n = std::io::copy(f, &mut h).map_err(|e| DatasetError::io(path, e))?;
    Ok((n, hex::encode(h.finalize())))
}

/// Size and SHA-256 of the store file `name`, opened under the rules of [`crate::paths`].
fn store_file_digest(dir: &Path, name: &str) -> Result<(u64, String)> {
    let mut f = paths::open_in(dir, name)
        .map_err(|e| store_file_error(dir, name, e))?
        .into_file();
    digest(&mut f, &dir.join(name))
}

/// Reads the segments of the store at `dir` whose record id or `<source>/<record>` matches
/// `record`, in store order.
pub fn read_record(dir: &Path, record: &str) -> Result<Vec<StoredSegment>> {
    let m = Manifest::read(dir)?;
    let mut out = Vec::new();
    for f in &m.files {
        let path = dir.join(&f.name);
        for batch in read_file_batches(dir, &f.name, None, None, 1024)? {
            let batch = batch?;
            let rid = batch
                .column_by_name("record_id")
                .and_then(|c| c.as_string_opt::<i32>().cloned());
            let src = batch
                .column_by_name("source")
                .and_then(|c| c.as_string_opt::<i32>().cloned());
            let (Some(rid), Some(src)) = (rid, src) else {
                return Err(DatasetError::store(
                    &path,
                    "columns record_id/source missing",
                ));
            };
            let hit = (0..batch.num_rows()).any(|i| {
                rid.value(i) == record || format!("{}/{}", src.value(i), rid.value(i)) == record
            });
            if hit {
                let rows = from_batch(&batch, &path)?;
                out.extend(rows.into_iter().filter(|s| {
                    s.segment.record_id == record
                        || format!("{}/{}", s.segment.source, s.segment.record_id) == record
                }));
            }
        }
    }
    Ok(out)
}

/// Merges per-record warnings into per-kind summaries.
pub fn summarize_warnings(warnings: &[RecordWarning]) -> BTreeMap<String, WarningSummary> {
    let mut out: BTreeMap<String, WarningSummary> = BTreeMap::new();
    for w in warnings {
        let e = out.entry(w.kind.clone()).or_default();
        e.count += 1;
        e.records.push(w.record.clone());
        e.meaning = warning_meaning(&w.kind).to_string();
    }
    for v in out.values_mut() {
        v.records.sort();
        v.records.dedup();
    }
    out
}

/// What a warning kind means and how it was handled.
pub fn warning_meaning(kind: &str) -> &'static str {
    match kind {
        "initial_value_mismatch" => {
            "the header's initial value differs from the first decoded sample; the samples are kept as decoded because the source is known to write such headers (CinC 2017), the header's checksum over every sample verifies, or the first sample is the invalid value"
        }
        "checksum_not_recorded" => {
            "the header's checksum field is 0 instead of the real checksum (CinC 2017 writes 0 in every header); the checksum could not be used"
        }
        "checksum_mismatch" => {
            "the header's checksum differs from the decoded samples in a source whose headers are known to be unreliable; samples kept as decoded"
        }
        "missing_label" => "the record has no row in the source's label file; labelled `unknown`",
        "wave_annotation_error" => {
            "a per-lead wave annotation file could not be parsed; the record's signal was kept"
        }
        "duplicate_beat_window" => {
            "two beats fell in the same clamped window at a record edge; the first was kept"
        }
        "non_ecg_signals_skipped" => {
            "signals that are not ECG (not a voltage, or named as another signal) were skipped; the record's ECG leads were kept"
        }
        "signal_not_in_layout" => {
            "a segment of a multi-segment record has a signal its layout does not name; that signal was dropped"
        }
        "segment_signal_not_voltage" => {
            "a segment gives a layout's voltage signal in other units; that stretch was left as a gap (NaN)"
        }
        "edf_discontinuous" => {
            "an EDF+D file's data records are not contiguous; each was placed at its onset and the time between them is a gap (NaN)"
        }
        "dicom_group_skipped" => {
            "a DICOM file holds more than one recorded multiplex group; the first was read, the others are named"
        }
        "aecg_sequence_set_skipped" => {
            "an aECG series holds more than one sequence set; the first was read"
        }
        _ => "see docs/datasets.md",
    }
}

/// Batches of the selected rows of one store file, read lazily (one row group at a time).
///
/// Made by [`read_file_batches`]; owns the open file, so it can be moved to another thread and
/// kept as long as needed. Memory is bounded by one batch and the pages being decoded, not by
/// the file. After an error the iterator ends (a damaged file yields one error, not an
/// endless series).
pub struct FileBatches {
    reader: ParquetRecordBatchReader,
    path: PathBuf,
    failed: bool,
}

impl std::fmt::Debug for FileBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBatches")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Iterator for FileBatches {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self.reader.next()?;
        self.failed = item.is_err();
        Some(item.map_err(|e| DatasetError::store(&self.path, e)))
    }
}

/// Reads record batches of the store file `file` of the store at `dir` lazily: only `columns`
/// when given (by name) and only the rows at the sorted, distinct positions `rows` when given
/// (Parquet row selection, so pages of other rows are skipped), `batch_size` rows at most per
/// batch. `file` must be a plain file name of a regular file inside `dir` ([`crate::paths`]);
/// a row position past the file's rows is an error.
pub fn read_file_batches(
    dir: &Path,
    file: &str,
    columns: Option<&[&str]>,
    rows: Option<&[usize]>,
    batch_size: usize,
) -> Result<FileBatches> {
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
    let path = dir.join(file);
    let f = paths::open_in(dir, file)
        .map_err(|e| store_file_error(dir, file, e))?
        .into_file();
    let mut b =
        ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| DatasetError::store(&path, e))?;
    if let Some(cols) = columns {
        let arrow_schema = b.schema().clone();
        let mut idx = Vec::with_capacity(cols.len());
        for c in cols {
            idx.push(
                arrow_schema
                    .index_of(c)
                    .map_err(|_| DatasetError::store(&path, format!("column `{c}` missing")))?,
            );
        }
        let mask = ProjectionMask::roots(b.parquet_schema(), idx);
        b = b.with_projection(mask);
    }
    if let Some(rows) = rows {
        let n_rows = u64::try_from(b.metadata().file_metadata().num_rows()).unwrap_or(0);
        let mut sel = Vec::new();
        let mut at = 0usize;
        for &r in rows {
            if r < at {
                return Err(DatasetError::store(
                    &path,
                    "row positions must be sorted and distinct",
                ));
            }
            if r as u64 >= n_rows {
                return Err(DatasetError::store(
                    &path,
                    format!("row position {r} is past the file's {n_rows} rows"),
                ));
            }
            if r > at {
                sel.push(RowSelector::skip(r - at));
            }
            sel.push(RowSelector::select(1));
            at = r + 1;
        }
        b = b.with_row_selection(RowSelection::from(sel));
    }
    let reader = b
        .with_batch_size(batch_size.max(1))
        .build()
        .map_err(|e| DatasetError::store(&path, e))?;
    Ok(FileBatches {
        reader,
        path,
        failed: false,
    })
}

/// Reads record batches of one store file, all at once: [`read_file_batches`] collected (for
/// small reads; a server streaming a slice should iterate [`read_file_batches`] instead).
pub fn read_file(
    dir: &Path,
    file: &str,
    columns: Option<&[&str]>,
    rows: Option<&[usize]>,
    batch_size: usize,
) -> Result<Vec<RecordBatch>> {
    read_file_batches(dir, file, columns, rows, batch_size)?.collect()
}

/// Stops an erasure at `step` when a test asked for it (feature `fault-injection`); compiled
/// to nothing otherwise.
macro_rules! erasure_step {
    ($step:expr, $path:expr) => {
        #[cfg(feature = "fault-injection")]
        {
            let step = $step;
            if crate::fault::reached(step.clone()) {
                return Err(DatasetError::store(
                    $path,
                    format!("fault injection: erasure stopped at {step:?}"),
                ));
            }
        }
    };
}

/// Name of the temporary file that replaces `name` in a store folder.
fn tmp_name(name: &str) -> String {
    format!(".{name}.tmp-{}", std::process::id())
}

/// Whether `entry` is a temporary file left by an interrupted rewrite of one of `names`.
fn is_leftover_tmp(entry: &str, names: &[&str]) -> bool {
    names.iter().any(|n| {
        entry
            .strip_prefix(&format!(".{n}.tmp-"))
            .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Syncs the folder `dir`, so that renames in it are durable.
fn sync_dir(dir: &Path) -> Result<()> {
    match File::open(dir).and_then(|f| f.sync_all()) {
        // Some file systems cannot sync a folder; nothing more can be done there.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported
            ) =>
        {
            Ok(())
        }
        r => r.map_err(|e| DatasetError::io(dir, e)),
    }
}

/// Deletes from the store at `dir` every row whose (`source`, `patient`) is in `patients`, and
/// returns the number of rows this call removed.
///
/// Idempotent and resumable: temporary files left by an interrupted run are removed first;
/// each file holding such rows is rewritten beside itself (written, synced, renamed over the
/// old file, folder synced); then the manifest's file entries (rows, bytes, SHA-256) and its
/// segment and record counts (per source, per label, in total) are recomputed from the files
/// themselves, never by subtraction, and the manifest is replaced the same way when it
/// differs. Rerunning after a crash at any point therefore leaves exactly the store an
/// uninterrupted run leaves. One erasure at a time per store.
pub fn delete_patients(dir: &Path, patients: &[(String, String)]) -> Result<u64> {
    let manifest = Manifest::read(dir)?;
    let mut names: Vec<&str> = manifest.files.iter().map(|f| f.name.as_str()).collect();
    names.push(MANIFEST);
    for entry in std::fs::read_dir(dir).map_err(|e| DatasetError::io(dir, e))? {
        let entry = entry.map_err(|e| DatasetError::io(dir, e))?;
        let is_file = entry.file_type().is_ok_and(|t| !t.is_dir());
        if is_file
            && entry
                .file_name()
                .to_str()
                .is_some_and(|n| is_leftover_tmp(n, &names))
        {
            std::fs::remove_file(entry.path()).map_err(|e| DatasetError::io(entry.path(), e))?;
        }
    }
    let hit =
        |source: &str, patient: &str| patients.iter().any(|(s, p)| s == source && p == patient);
    let mut removed_total = 0u64;
    for f in &manifest.files {
        let path = dir.join(&f.name);
        let mut removed = 0u64;
        for b in read_file_batches(dir, &f.name, Some(&["source", "patient"]), None, 8192)? {
            let b = b?;
            let [src, pat] = string_columns(&b, ["source", "patient"], &path)?;
            removed += (0..b.num_rows())
                .filter(|&i| hit(src.value(i), pat.value(i)))
                .count() as u64;
        }
        if removed > 0 {
            rewrite_without(dir, &f.name, &hit)?;
            removed_total += removed;
        }
    }
    erasure_step!(crate::fault::ErasureStep::BeforeManifest, dir);
    let fresh = recount(dir, &manifest)?;
    if fresh != manifest {
        let mpath = dir.join(MANIFEST);
        let tmp = dir.join(tmp_name(MANIFEST));
        let json = serde_json::to_vec_pretty(&fresh).map_err(|e| DatasetError::store(&mpath, e))?;
        std::fs::write(&tmp, json).map_err(|e| DatasetError::io(&tmp, e))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| DatasetError::io(&tmp, e))?;
        erasure_step!(crate::fault::ErasureStep::ManifestTmpWritten, &tmp);
        std::fs::rename(&tmp, &mpath).map_err(|e| DatasetError::io(&mpath, e))?;
        erasure_step!(crate::fault::ErasureStep::ManifestRenamed, &mpath);
        sync_dir(dir)?;
    }
    Ok(removed_total)
}

/// The string columns `names` of `batch`, or an error naming the file.
fn string_columns<'a, const N: usize>(
    batch: &'a RecordBatch,
    names: [&str; N],
    path: &Path,
) -> Result<[&'a arrow::array::StringArray; N]> {
    let mut out = Vec::with_capacity(N);
    for n in names {
        out.push(
            batch
                .column_by_name(n)
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| {
                    DatasetError::store(path, format!("column `{n}` missing or not text"))
                })?,
        );
    }
    out.try_into()
        .map_err(|_| DatasetError::store(path, "column count"))
}

/// Rewrites the store file `name` without the rows of the patients `hit` selects: a
/// temporary file beside it, synced, renamed over it, the folder synced. Streams: one batch
/// in memory at a time.
fn rewrite_without(dir: &Path, name: &str, hit: &dyn Fn(&str, &str) -> bool) -> Result<()> {
    use arrow::compute::filter_record_batch;
    let path = dir.join(name);
    let tmp = dir.join(tmp_name(name));
    let write = || -> Result<()> {
        let file = File::create(&tmp).map_err(|e| DatasetError::io(&tmp, e))?;
        let mut w = ArrowWriter::try_new(file, schema(), Some(writer_properties()))
            .map_err(|e| DatasetError::store(&tmp, e))?;
        for b in read_file_batches(dir, name, None, None, 1024)? {
            let b = b?;
            let [src, pat] = string_columns(&b, ["source", "patient"], &path)?;
            let keep: arrow::array::BooleanArray = (0..b.num_rows())
                .map(|i| Some(!hit(src.value(i), pat.value(i))))
                .collect();
            let kept = filter_record_batch(&b, &keep).map_err(|e| DatasetError::store(&path, e))?;
            w.write(&kept).map_err(|e| DatasetError::store(&tmp, e))?;
        }
        let file = w.into_inner().map_err(|e| DatasetError::store(&tmp, e))?;
        file.sync_all().map_err(|e| DatasetError::io(&tmp, e))
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    erasure_step!(
        crate::fault::ErasureStep::FileTmpWritten(name.to_string()),
        &tmp
    );
    std::fs::rename(&tmp, &path).map_err(|e| DatasetError::io(&path, e))?;
    erasure_step!(
        crate::fault::ErasureStep::FileRenamed(name.to_string()),
        &path
    );
    sync_dir(dir)
}

/// `manifest` with its file entries (rows, bytes, SHA-256) and its segment and record counts
/// (per source, per label, in total) recomputed from the store's files.
fn recount(dir: &Path, manifest: &Manifest) -> Result<Manifest> {
    let mut m = manifest.clone();
    let mut segments: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_label: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut records: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    let mut total_rows = 0u64;
    for f in m.files.iter_mut() {
        let path = dir.join(&f.name);
        let mut rows = 0u64;
        let cols = ["source", "record_id", "label"];
        for b in read_file_batches(dir, &f.name, Some(&cols), None, 8192)? {
            let b = b?;
            let [src, rid, label] = string_columns(&b, cols, &path)?;
            rows += b.num_rows() as u64;
            for i in 0..b.num_rows() {
                let s = src.value(i);
                *segments.entry(s.to_string()).or_default() += 1;
                *by_label
                    .entry(s.to_string())
                    .or_default()
                    .entry(label.value(i).to_string())
                    .or_default() += 1;
                records
                    .entry(s.to_string())
                    .or_default()
                    .insert(rid.value(i).to_string());
            }
        }
        total_rows += rows;
        f.rows = rows;
        (f.bytes, f.sha256) = store_file_digest(dir, &f.name)?;
    }
    for s in m.sources.iter_mut() {
        s.segments = segments.get(&s.id).copied().unwrap_or(0);
        s.records = records.get(&s.id).map_or(0, |r| r.len() as u64);
        s.segments_by_label = by_label.remove(&s.id).unwrap_or_default();
    }
    m.segments = total_rows;
    m.records = records.values().map(|r| r.len() as u64).sum();
    Ok(m)
}
