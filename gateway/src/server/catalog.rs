//! The gateway's view of its site store: one entry per row (no signals), with the row's
//! commitment, its patient's pseudonym and its finest strata cell; the dataset commitment tree;
//! which rows are visible under k-anonymity (docs/flight.md "Strata").

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use arrow::array::{Array, AsArray, ListArray};
use arrow::datatypes::{Float32Type, UInt8Type, UInt32Type, UInt64Type};
use ecgfed_datasets::segment::{SegmentView, signal_digest};
use ecgfed_datasets::store::{self, Manifest};
use ecgfed_datasets::strata::{age_band, age_band_names};
use sha2::{Digest, Sha256};

use crate::commitment::{CommitmentTree, commitment, pseudonym};
use crate::error::{GatewayError, Result};
use crate::server::keystore::{KeyStore, Secret, patient_key};

/// Rows per batch when the catalog reads the store (samples included: a batch of 12-lead
/// 10 s rows at 500 Hz is about 60 MB).
const LOAD_BATCH_ROWS: usize = 256;

/// Lists of strings shared between rows (lead names and label codes repeat).
#[derive(Default)]
struct Interned(HashMap<Vec<String>, Arc<[String]>>);

impl Interned {
    fn get(&mut self, v: Vec<String>) -> Arc<[String]> {
        if let Some(a) = self.0.get(&v) {
            return Arc::clone(a);
        }
        let a: Arc<[String]> = v.clone().into();
        self.0.insert(v, Arc::clone(&a));
        a
    }
}

/// One store row as the gateway indexes it.
#[derive(Debug, Clone)]
pub struct Row {
    /// Index of the store file in [`Catalog::files`].
    pub file: usize,
    /// Row position inside that file.
    pub pos: usize,
    /// `<source>/<record>@<start>`.
    pub segment_id: String,
    /// Source database id.
    pub source: String,
    /// Record id.
    pub record_id: String,
    /// Patient as the key store names it (`source ‖ 0 ‖ patient`); never leaves the gateway.
    pub patient_key: Vec<u8>,
    /// Keyed-hash pseudonym of the patient (what is served).
    pub pseudonym: String,
    /// Normalised label.
    pub label: String,
    /// `M`, `F` or `unknown`.
    pub sex: String,
    /// Age in years as stored.
    pub age: Option<u8>,
    /// Age band name or `unknown`.
    pub age_band: String,
    /// First sample of the window in the record.
    pub start_sample: u64,
    /// Window length in samples of the original record.
    pub n_samples: u32,
    /// Sampling rate, Hz.
    pub fs: f32,
    /// Lead names (one shared list for rows with the same leads).
    pub leads: Arc<[String]>,
    /// The label's source codes (shared likewise).
    pub label_raw: Arc<[String]>,
    /// Number of samples, all leads.
    pub samples: u64,
    /// BLAKE3 of the samples (docs/datasets.md "Content hash", field 8).
    pub signal_digest: [u8; 32],
    /// Stored content hash, checked against the row's values when the catalog is loaded.
    pub content_hash: [u8; 32],
    /// The patient's salt.
    pub salt: Secret,
    /// The row's commitment.
    pub commitment: [u8; 32],
    /// Whether the row's finest cell (label, sex, age band, source) has at least k patients.
    pub visible: bool,
}

/// The catalog of one site store.
#[derive(Debug)]
pub struct Catalog {
    /// Store folder.
    pub dir: PathBuf,
    /// Dataset id on the ledger.
    pub dataset_id: String,
    /// Site.
    pub site: String,
    /// Store files, in manifest order.
    pub files: Vec<String>,
    /// Rows in segment_id order (the order of the dataset tree's leaves).
    pub rows: Vec<Row>,
    /// SHA-256 of manifest.json as read.
    pub manifest_sha256: [u8; 32],
    /// Dataset commitment root over all rows.
    pub root: [u8; 32],
    /// Distinct records.
    pub records: u64,
    /// Sources in the store.
    pub sources: Vec<String>,
    /// Age band edges and k used for visibility.
    pub age_edges: Vec<u8>,
    /// Suppression threshold.
    pub k: u64,
    /// Number of finest cells withheld.
    pub suppressed_cells: u64,
    by_segment: HashMap<String, usize>,
}

impl Row {
    /// The content hash of this row with `record_id` and `age` in place of its own (the
    /// hash of the row as served; with its own values, the stored content hash).
    pub fn hash_as(&self, record_id: &str, age: Option<u8>) -> [u8; 32] {
        let leads: Vec<&str> = self.leads.iter().map(String::as_str).collect();
        let raw: Vec<&str> = self.label_raw.iter().map(String::as_str).collect();
        SegmentView {
            source: &self.source,
            record_id,
            start_sample: self.start_sample,
            n_samples: self.n_samples,
            fs: self.fs,
            leads: &leads,
            signal: &[],
            label: &self.label,
            label_raw: &raw,
            age,
            sex: (self.sex != "unknown").then_some(self.sex.as_str()),
        }
        .content_hash_digested(self.samples, &self.signal_digest)
    }
}

impl Catalog {
    /// Reads the store's metadata columns, makes or reads salts, and computes commitments,
    /// pseudonyms, the dataset root and visibility. Rows of erased patients (salt destroyed)
    /// are left out.
    pub fn load(
        dir: &Path,
        dataset_id: &str,
        keys: &KeyStore,
        age_edges: &[u8],
        k: u64,
    ) -> Result<Catalog> {
        let manifest = Manifest::read(dir)?;
        let manifest_sha256: [u8; 32] =
            Sha256::digest(std::fs::read(dir.join(store::MANIFEST)).map_err(|source| {
                GatewayError::File {
                    path: dir.join(store::MANIFEST),
                    source,
                }
            })?)
            .into();
        let pkey = keys.pseudonym_key()?;
        let mut raw = Vec::new();
        let files: Vec<String> = manifest.files.iter().map(|f| f.name.clone()).collect();
        let mut lists = Interned::default();
        for (fi, name) in files.iter().enumerate() {
            let mut pos = 0usize;
            // Every column, the samples included, a few hundred rows at a time: each row's
            // content hash is checked here, and the samples' digest kept for hashing the row
            // as it will be served (`served`).
            for b in store::read_file_batches(dir, name, None, None, LOAD_BATCH_ROWS)? {
                let b = b?;
                let path = dir.join(name);
                let bad = |c: &str| {
                    GatewayError::Store(ecgfed_datasets::error::DatasetError::store(
                        path.clone(),
                        format!("column `{c}` missing or of the wrong type"),
                    ))
                };
                let s = |c: &str| {
                    b.column_by_name(c)
                        .and_then(|a| a.as_string_opt::<i32>())
                        .ok_or_else(|| bad(c))
                };
                let l = |c: &str| {
                    b.column_by_name(c)
                        .and_then(|a| a.as_list_opt::<i32>())
                        .ok_or_else(|| bad(c))
                };
                let (sid, rid, pat, src, lab, sex) = (
                    s("segment_id")?,
                    s("record_id")?,
                    s("patient")?,
                    s("source")?,
                    s("label")?,
                    s("sex")?,
                );
                let (leads, raw_labels, signal) = (l("leads")?, l("label_raw")?, l("signal")?);
                let prim = |c: &str| b.column_by_name(c).ok_or_else(|| bad(c));
                let age = prim("age")?
                    .as_primitive_opt::<UInt8Type>()
                    .ok_or_else(|| bad("age"))?;
                let fs = prim("fs")?
                    .as_primitive_opt::<Float32Type>()
                    .ok_or_else(|| bad("fs"))?;
                let start = prim("start_sample")?
                    .as_primitive_opt::<UInt64Type>()
                    .ok_or_else(|| bad("start_sample"))?;
                let n = prim("n_samples")?
                    .as_primitive_opt::<UInt32Type>()
                    .ok_or_else(|| bad("n_samples"))?;
                let samples = signal
                    .values()
                    .as_primitive_opt::<Float32Type>()
                    .ok_or_else(|| bad("signal"))?
                    .values();
                let hash = b
                    .column_by_name("content_hash")
                    .and_then(|a| a.as_fixed_size_binary_opt())
                    .filter(|a| a.value_length() == 32)
                    .ok_or_else(|| bad("content_hash"))?;
                let strs = |a: &ListArray, i: usize, c: &str| -> Result<Vec<String>> {
                    let v = a.value(i);
                    let v = v.as_string_opt::<i32>().ok_or_else(|| bad(c))?;
                    Ok(v.iter()
                        .map(|x| x.unwrap_or_default().to_string())
                        .collect())
                };
                let offsets = signal.value_offsets();
                for i in 0..b.num_rows() {
                    let (a, z) = (offsets[i] as usize, offsets[i + 1] as usize);
                    let sig = samples.get(a..z).ok_or_else(|| bad("signal"))?;
                    let lead_names = lists.get(strs(leads, i, "leads")?);
                    let label_raw = lists.get(strs(raw_labels, i, "label_raw")?);
                    let mut row = Row {
                        file: fi,
                        pos,
                        segment_id: sid.value(i).to_string(),
                        source: src.value(i).to_string(),
                        record_id: rid.value(i).to_string(),
                        patient_key: patient_key(src.value(i), pat.value(i)),
                        pseudonym: pseudonym(&pkey, src.value(i), pat.value(i)),
                        label: lab.value(i).to_string(),
                        sex: if sex.is_valid(i) {
                            sex.value(i).to_string()
                        } else {
                            "unknown".into()
                        },
                        age: age.is_valid(i).then(|| age.value(i)),
                        age_band: age_band(age.is_valid(i).then(|| age.value(i)), age_edges),
                        start_sample: start.value(i),
                        n_samples: n.value(i),
                        fs: fs.value(i),
                        leads: lead_names,
                        label_raw,
                        samples: sig.len() as u64,
                        signal_digest: signal_digest(sig),
                        content_hash: [0; 32],
                        salt: [0; 32],
                        commitment: [0; 32],
                        visible: false,
                    };
                    row.content_hash = row.hash_as(&row.record_id, row.age);
                    if row.content_hash[..] != *hash.value(i) {
                        return Err(GatewayError::Store(
                            ecgfed_datasets::error::DatasetError::store(
                                path.clone(),
                                format!(
                                    "row {}: its values do not hash to its content hash (the store was changed after ingest; ingest it again)",
                                    row.segment_id
                                ),
                            ),
                        ));
                    }
                    raw.push(row);
                    pos += 1;
                }
            }
        }
        let patients: Vec<Vec<u8>> = raw.iter().map(|r| r.patient_key.clone()).collect();
        let salts = keys.salts(&patients)?;
        let mut rows: Vec<Row> = raw
            .into_iter()
            .zip(salts)
            .filter_map(|(mut r, s)| {
                r.salt = s?;
                r.commitment = commitment(&r.salt, &r.content_hash, &r.segment_id);
                Some(r)
            })
            .collect();
        rows.sort_by(|a, b| a.segment_id.cmp(&b.segment_id));
        if let Some(w) = rows.windows(2).find(|w| w[0].segment_id == w[1].segment_id) {
            return Err(GatewayError::DuplicateSegment {
                store: dir.to_path_buf(),
                segment: w[0].segment_id.clone(),
            });
        }
        // Visibility: finest cell (label, sex, age band, source) with ≥ k distinct patients.
        let mut cells: HashMap<(&str, &str, &str, &str), HashSet<&[u8]>> = HashMap::new();
        for r in &rows {
            cells
                .entry((&r.label, &r.sex, &r.age_band, &r.source))
                .or_default()
                .insert(&r.patient_key);
        }
        let visible_cells: HashSet<(String, String, String, String)> = cells
            .iter()
            .filter(|(_, p)| p.len() as u64 >= k)
            .map(|(c, _)| {
                (
                    c.0.to_string(),
                    c.1.to_string(),
                    c.2.to_string(),
                    c.3.to_string(),
                )
            })
            .collect();
        let suppressed_cells = (cells.len() - visible_cells.len()) as u64;
        for r in rows.iter_mut() {
            r.visible = visible_cells.contains(&(
                r.label.clone(),
                r.sex.clone(),
                r.age_band.clone(),
                r.source.clone(),
            ));
        }
        let root = CommitmentTree::new(rows.iter().map(|r| &r.commitment)).root();
        let records = rows
            .iter()
            .map(|r| (r.source.as_str(), r.record_id.as_str()))
            .collect::<HashSet<_>>()
            .len() as u64;
        let mut sources: Vec<String> = rows.iter().map(|r| r.source.clone()).collect();
        sources.sort();
        sources.dedup();
        let by_segment = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.segment_id.clone(), i))
            .collect();
        Ok(Catalog {
            dir: dir.to_path_buf(),
            dataset_id: dataset_id.to_string(),
            site: manifest.site.clone(),
            files,
            rows,
            manifest_sha256,
            root,
            records,
            sources,
            age_edges: age_edges.to_vec(),
            k,
            suppressed_cells,
            by_segment,
        })
    }

    /// The row of a segment id.
    pub fn row(&self, segment_id: &str) -> Option<&Row> {
        self.by_segment.get(segment_id).map(|&i| &self.rows[i])
    }

    /// The gateway's age band names.
    pub fn age_bands(&self) -> Vec<String> {
        let mut v = age_band_names(&self.age_edges);
        v.push("unknown".into());
        v
    }

    /// Rows of one patient, found by `source/patient` or by a patient id unique across sources.
    pub fn patient_rows(&self, patient: &str) -> Result<(Vec<u8>, Vec<&Row>)> {
        let wanted: Vec<Vec<u8>> = self
            .sources
            .iter()
            .filter_map(|s| {
                patient
                    .strip_prefix(&format!("{s}/"))
                    .map(|p| patient_key(s, p))
            })
            .chain(self.sources.iter().map(|s| patient_key(s, patient)))
            .collect();
        let mut found: Vec<Vec<u8>> = wanted
            .into_iter()
            .filter(|k| self.rows.iter().any(|r| &r.patient_key == k))
            .collect();
        found.sort();
        found.dedup();
        match found.len() {
            0 => Err(GatewayError::refused(
                tonic::Code::NotFound,
                format!(
                    "patient {patient:?} has no records in dataset {} (unknown or already erased)",
                    self.dataset_id
                ),
            )),
            1 => {
                let k = found.remove(0);
                let rows = self.rows.iter().filter(|r| r.patient_key == k).collect();
                Ok((k, rows))
            }
            n => Err(GatewayError::refused(
                tonic::Code::InvalidArgument,
                format!("patient id {patient:?} exists in {n} sources; name it as source/patient"),
            )),
        }
    }
}
