//! Helpers shared by the datasets crate's tests: where the committed data lies, folders made of
//! copies of it, ingest options, and damaged copies of a file for the never-panic properties.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use ecgfed_datasets::{IngestOptions, Segmentation};

/// `rel` under the crate's folder (`sample`, `testdata/pyedflib`, ...).
pub(crate) fn crate_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The embedded sample (`datasets/sample`).
pub(crate) fn sample() -> PathBuf {
    crate_path("sample")
}

/// Ingest options of the site `test-site`, every other option at its default.
pub(crate) fn opts() -> IngestOptions {
    site("test-site")
}

/// Ingest options of the site `name`, every other option at its default.
pub(crate) fn site(name: &str) -> IngestOptions {
    IngestOptions {
        site: name.into(),
        ..Default::default()
    }
}

/// Ingest options of the site `name` cut in windows of `secs` seconds (0: a whole record is
/// one segment).
pub(crate) fn windows(name: &str, secs: f64) -> IngestOptions {
    IngestOptions {
        segmentation: Segmentation::Windows { secs },
        ..site(name)
    }
}

/// A new folder `name` in `parent` holding a copy of each `(source file, name in the folder)`.
pub(crate) fn folder_of(parent: &Path, name: &str, files: &[(PathBuf, &str)]) -> PathBuf {
    let dir = parent.join(name);
    fs::create_dir(&dir).unwrap();
    for (from, to) in files {
        fs::copy(from, dir.join(to)).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
    dir
}

/// Copies the files `names` of the folder `from` into the folder `to`, under the same names.
pub(crate) fn copy_files(from: &Path, names: &[&str], to: &Path) {
    for n in names {
        fs::copy(from.join(n), to.join(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
    }
}

/// `bytes` cut to `cut` bytes (when given and shorter) with each `(position, value)` of `at`
/// written over it, positions taken modulo the file's length (those past the cut are dropped).
pub(crate) fn damaged(bytes: &[u8], at: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    let mut b = bytes[..cut.unwrap_or(bytes.len()).min(bytes.len())].to_vec();
    for &(i, v) in at {
        if let Some(x) = b.get_mut(i % bytes.len().max(1)) {
            *x = v;
        }
    }
    b
}
