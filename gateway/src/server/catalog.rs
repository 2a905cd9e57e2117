//! The gateway's view of its site store: one entry per row (no signals), with the row's
//! commitment, its patient's pseudonym and its finest strata cell; the dataset commitment tree;
//! which rows are visible under k-anonymity (docs/flight.md "Strata").

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::UInt8Type;
use ecgfed_datasets::store::{self, Manifest};
use ecgfed_datasets::strata::{age_band, age_band_names};
use sha2::{Digest, Sha256};

use crate::commitment::{CommitmentTree, commitment, pseudonym};
use crate::error::{GatewayError, Result};
use crate::server::keystore::{KeyStore, Secret, patient_key};

/// Columns read to build the catalog (all but the signal).
const META_COLUMNS: &[&str] = &[
    "segment_id",
    "record_id",
    "patient",
    "source",
    "label",
    "age",
    "sex",
    "content_hash",
];

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
    /// Age band name or `unknown`.
    pub age_band: String,
    /// Stored content hash.
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
        for (fi, name) in files.iter().enumerate() {
            let mut pos = 0usize;
            for b in store::read_file(dir, name, Some(META_COLUMNS), None, 8192)? {
                let bad = |c: &str| {
                    GatewayError::Store(ecgfed_datasets::error::DatasetError::store(
                        dir.join(name),
                        format!("column `{c}` missing or of the wrong type"),
                    ))
                };
                let s = |c: &str| {
                    b.column_by_name(c)
                        .and_then(|a| a.as_string_opt::<i32>())
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
                let age = b
                    .column_by_name("age")
                    .and_then(|a| a.as_primitive_opt::<UInt8Type>())
                    .ok_or_else(|| bad("age"))?;
                let hash = b
                    .column_by_name("content_hash")
                    .and_then(|a| a.as_fixed_size_binary_opt())
                    .ok_or_else(|| bad("content_hash"))?;
                for i in 0..b.num_rows() {
                    let mut h = [0u8; 32];
                    h.copy_from_slice(hash.value(i));
                    raw.push(Row {
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
                        age_band: age_band(age.is_valid(i).then(|| age.value(i)), age_edges),
                        content_hash: h,
                        salt: [0; 32],
                        commitment: [0; 32],
                        visible: false,
                    });
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
