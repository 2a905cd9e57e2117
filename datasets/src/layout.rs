//! Detection of source layouts by content, per folder.
//!
//! A folder holding `.hea` files is one source; its layout is decided from what it contains:
//!
//! | layout | recognised by | label source |
//! | --- | --- | --- |
//! | `cinc2017` | a `REFERENCE.csv` (or `REFERENCE-original.csv`) beside the headers | the CSV |
//! | `ludb` | headers under `data/` or with `#<age>:` comments | `#Rhythm:` text |
//! | `cinc2021` | headers with `#Dx:` comments | SNOMED CT codes |
//! | `mitdb` | `.atr` annotation files beside the headers | rhythm aux strings, beats |
//! | `generic` | any other folder of WFDB records | none (`unknown`) |
//!
//! A folder without headers but with sub-folders is a container: each sub-folder is examined
//! in turn (so `../shared/ecg` yields mitdb, cinc2017, ludb and five cinc2021 sites). The source
//! id is the folder name, lower-cased; CinC 2021 site folders are `cinc2021-<name>`. A folder's
//! `LICENSE-AND-SOURCE.md` (or the nearest one above it, within the ingested folder) is carried
//! into the manifest.
//!
//! A multi-segment record is one record: the headers of its segments (named on its segment
//! lines) are not listed as records of their own. EDF and BDF files (`.edf`, `.bdf`, read by
//! [`crate::edf`]), DICOM files (`.dcm`, or no extension and the `DICM` signature, read by
//! [`crate::dicom`]) and HL7 aECG files (`.xml` with an `AnnotatedECG` element, read by
//! [`crate::aecg`]) are records of their folder too, unless a WFDB header of the same stem
//! describes the same recording.
//!
//! Everything found by listing a folder is opened under the rules of [`crate::paths`]: a
//! header, annotation, label or licence file that is a symbolic link out of its folder, a FIFO
//! or another special file is refused with an error naming it (a header is then a skipped
//! record; a refused licence file or sub-folder fails the folder). Sub-folders reached through
//! a symbolic link are walked only when the link stays inside the folder.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use crate::error::{DatasetError, Result};
use crate::header::{AnyHeader, read_any_header, read_header};
use crate::paths::{self, PathError};
use crate::record::Verification;

/// The layout of a source folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// PhysioNet/CinC 2017: `.mat` records + `REFERENCE.csv`.
    Cinc2017,
    /// Lobachevsky University Database: `data/` with per-lead wave annotations.
    Ludb,
    /// A PhysioNet/CinC 2020/2021 site: `.mat` records with `#Dx:` SNOMED codes.
    Cinc2021,
    /// MIT-BIH style: `.dat` records with `.atr` beat and rhythm annotations.
    Mitdb,
    /// Any other folder of WFDB records.
    Generic,
}

impl Layout {
    /// How header checksums and initial values of this layout are treated: warnings for
    /// CinC 2017 (checksum 0 in every header, 57 initial values off), corruption elsewhere.
    pub fn verification(self) -> Verification {
        match self {
            Layout::Cinc2017 => Verification::Warn,
            _ => Verification::Strict,
        }
    }
}

/// Master header of a multi-segment record → the segment headers of its folder that it names.
pub type SegmentHeaders = BTreeMap<PathBuf, Vec<PathBuf>>;

/// One source folder found under an ingested folder.
#[derive(Debug, Clone)]
pub struct SourceFolder {
    /// Source id used in segment ids and the manifest.
    pub id: String,
    /// Detected layout.
    pub layout: Layout,
    /// Folder the source was found at.
    pub root: PathBuf,
    /// Header files of its records, sorted by record id (numerically where ids are numbers).
    pub headers: Vec<PathBuf>,
    /// The segment headers each multi-segment record of `headers` names (master header →
    /// its segment headers found in the folder): part of that record, not records of their own.
    pub segments: SegmentHeaders,
    /// Label file (CinC 2017), if any.
    pub reference: Option<PathBuf>,
    /// Text of the applicable `LICENSE-AND-SOURCE.md`, if any.
    pub license: Option<String>,
}

/// Name of the attribution file carried into the manifest.
pub const LICENSE_FILE: &str = "LICENSE-AND-SOURCE.md";

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DatasetError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

/// Every `.hea` entry that is not a folder: regular files, and also links and special files,
/// so that reading them reports why they are refused instead of skipping them unseen. The
/// segments of a multi-segment record of the folder are part of that record, not records: they
/// are returned apart, by master header.
fn headers_in(dir: &Path) -> Result<(Vec<PathBuf>, SegmentHeaders)> {
    let listed = list_dir(dir)?;
    let v: Vec<PathBuf> = listed
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "hea") && !p.is_dir())
        .cloned()
        .collect();
    let present: HashSet<&PathBuf> = v.iter().collect();
    // EDF/BDF recordings are records too, unless a WFDB header of the same name describes the
    // same recording.
    let edf: Vec<PathBuf> = listed
        .into_iter()
        .filter(|p| {
            !p.is_dir()
                && (crate::edf::is_edf(p) || crate::dicom::is_dicom(p) || crate::aecg::is_aecg(p))
                && !present.contains(&p.with_extension("hea"))
        })
        .collect();
    let mut segments = SegmentHeaders::new();
    for h in &v {
        if let Ok(AnyHeader::Multi(m)) = read_any_header(h) {
            let named = m
                .segments
                .into_iter()
                .filter_map(|s| s.name.map(|n| dir.join(format!("{n}.hea"))))
                .filter(|s| present.contains(s))
                .collect();
            segments.insert(h.clone(), named);
        }
    }
    // A master header stays a record even when another master names it as a segment (that
    // master is then refused), so that it is read and reported on its own.
    let is_segment: HashSet<&PathBuf> = segments
        .values()
        .flatten()
        .filter(|s| !segments.contains_key(*s))
        .collect();
    let mut records: Vec<PathBuf> = v
        .iter()
        .filter(|h| !is_segment.contains(h))
        .cloned()
        .collect();
    records.extend(edf);
    records.sort_by_key(|p| record_sort_key(p));
    Ok((records, segments))
}

fn record_sort_key(p: &Path) -> (u64, String) {
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    (stem.parse::<u64>().unwrap_or(u64::MAX), stem)
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// Finds every source folder under `folder` (the folder itself, or its sub-folders).
pub fn discover(folder: &Path) -> Result<Vec<SourceFolder>> {
    if !folder.is_dir() {
        return Err(DatasetError::Layout {
            path: folder.to_path_buf(),
            reason: "is not a folder".into(),
        });
    }
    let mut out = Vec::new();
    walk(folder, None, &mut out)?;
    if out.is_empty() {
        return Err(DatasetError::Layout {
            path: folder.to_path_buf(),
            reason: "no WFDB records (.hea files) found in this folder or below".into(),
        });
    }
    Ok(out)
}

/// A layout error about `path` for a refused file or folder.
fn refused(path: PathBuf, what: &str, e: PathError) -> DatasetError {
    let name = path.file_name().unwrap_or_default().to_owned();
    DatasetError::Layout {
        reason: e.describe(what, &name, "its folder"),
        path,
    }
}

/// The licence file of `dir`: `None` when absent or unreadable, an error when refused.
fn read_license(dir: &Path) -> Result<Option<String>> {
    let path = dir.join(LICENSE_FILE);
    let read = paths::open_listed_if_present(&path)
        .and_then(|f| f.map(|f| f.read_all(paths::MAX_TEXT_BYTES)).transpose());
    match read {
        Ok(bytes) => Ok(bytes.and_then(|b| String::from_utf8(b).ok())),
        Err(PathError::Io(_)) => Ok(None),
        Err(e) => Err(refused(path, "licence file", e)),
    }
}

/// The sub-folder `name` of `dir` if it exists and is a folder; an error when it is reached
/// through a link that leaves `dir`.
fn sub_folder(dir: &Path, name: &std::ffi::OsStr) -> Result<Option<PathBuf>> {
    let path = dir.join(name);
    if std::fs::symlink_metadata(&path).is_err() || !path.is_dir() {
        return Ok(None);
    }
    paths::Folder::new(dir)
        .and_then(|f| f.sub_folder(name))
        .map_err(|e| refused(path.clone(), "sub-folder", e))?;
    Ok(Some(path))
}

fn walk(dir: &Path, inherited_license: Option<&str>, out: &mut Vec<SourceFolder>) -> Result<()> {
    let own = read_license(dir)?;
    let license = own.as_deref().or(inherited_license);
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "records".into());
    let (headers, segments) = headers_in(dir)?;
    let data = if headers.is_empty() && dir.join("ludb.csv").is_file() {
        sub_folder(dir, "data".as_ref())?
    } else {
        None
    };
    if let Some(data) = data {
        let (headers, segments) = headers_in(&data)?;
        out.push(SourceFolder {
            id: sanitize(&name),
            layout: Layout::Ludb,
            root: dir.to_path_buf(),
            headers,
            segments,
            reference: None,
            license: license.map(str::to_string),
        });
        return Ok(());
    }
    if headers.is_empty() {
        for entry in list_dir(dir)? {
            let Some(name) = entry.file_name() else {
                continue;
            };
            if let Some(sub) = sub_folder(dir, name)? {
                walk(&sub, license, out)?;
            }
        }
        return Ok(());
    }
    let reference = ["REFERENCE-original.csv", "REFERENCE.csv"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file());
    let has_atr = headers.iter().any(|h| h.with_extension("atr").is_file());
    // Look at the first readable header's comments for the dialect.
    let comments = headers
        .iter()
        .take(8)
        .filter(|h| h.extension().is_some_and(|e| e == "hea"))
        .find_map(|h| read_header(h).ok())
        .map(|h| h.comments)
        .unwrap_or_default();
    let has = |key: &str| {
        comments
            .iter()
            .any(|c| c.trim_start().to_ascii_lowercase().starts_with(key))
    };
    let (layout, id) = if reference.is_some() {
        (Layout::Cinc2017, sanitize(&name))
    } else if has("<age>") || has("<sex>") {
        (Layout::Ludb, sanitize(&name))
    } else if has("dx:") {
        (Layout::Cinc2021, format!("cinc2021-{}", sanitize(&name)))
    } else if has_atr {
        (Layout::Mitdb, sanitize(&name))
    } else {
        (Layout::Generic, sanitize(&name))
    };
    out.push(SourceFolder {
        id,
        layout,
        root: dir.to_path_buf(),
        headers,
        segments,
        reference,
        license: license.map(str::to_string),
    });
    Ok(())
}

/// The patient a record belongs to, where the source documents it (MIT-BIH records 201 and
/// 202 are the same man); otherwise the record id.
pub fn patient_of(source_id: &str, layout: Layout, record: &str) -> String {
    if layout == Layout::Mitdb && source_id == "mitdb" && record == "202" {
        return "201".into();
    }
    record.to_string()
}
