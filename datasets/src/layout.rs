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

use std::path::{Path, PathBuf};

use crate::error::{DatasetError, Result};
use crate::header::read_header;
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

fn headers_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = list_dir(dir)?
        .into_iter()
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "hea"))
        .collect();
    v.sort_by_key(|p| record_sort_key(p));
    Ok(v)
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

fn walk(dir: &Path, inherited_license: Option<&str>, out: &mut Vec<SourceFolder>) -> Result<()> {
    let own = std::fs::read_to_string(dir.join(LICENSE_FILE)).ok();
    let license = own.as_deref().or(inherited_license);
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "records".into());
    let headers = headers_in(dir)?;
    let data = dir.join("data");
    if headers.is_empty() && data.is_dir() && dir.join("ludb.csv").is_file() {
        out.push(SourceFolder {
            id: sanitize(&name),
            layout: Layout::Ludb,
            root: dir.to_path_buf(),
            headers: headers_in(&data)?,
            reference: None,
            license: license.map(str::to_string),
        });
        return Ok(());
    }
    if headers.is_empty() {
        for sub in list_dir(dir)? {
            if sub.is_dir() {
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
