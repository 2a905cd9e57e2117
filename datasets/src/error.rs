//! Error type of the datasets crate: every variant names the file (and where it applies the
//! line, lead or record) it is about, so a person can act on it.

use std::path::PathBuf;

/// Result alias for the datasets crate.
pub type Result<T, E = DatasetError> = std::result::Result<T, E>;

/// Everything that can go wrong while reading ECG files or writing and reading site stores.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File or folder concerned.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// A WFDB header line could not be parsed.
    #[error("{path}:{line}: {reason}")]
    Header {
        /// Header file.
        path: PathBuf,
        /// 1-based line number (0 when the problem is not tied to one line).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The signal file uses a WFDB storage format this reader does not decode.
    #[error("unsupported format {format} in {path}")]
    UnsupportedFormat {
        /// Format as written in the header (e.g. `310`, `516`).
        format: String,
        /// Header or signal file concerned.
        path: PathBuf,
    },
    /// Signal data is malformed: truncated, wrong container, checksum or initial value mismatch.
    #[error("{path}: lead {lead}: {reason}")]
    Signal {
        /// Signal file.
        path: PathBuf,
        /// Lead (signal description) concerned, or `*` for the whole file.
        lead: String,
        /// What is wrong.
        reason: String,
    },
    /// An annotation file is malformed.
    #[error("{path}: annotation {index}: {reason}")]
    Annotation {
        /// Annotation file.
        path: PathBuf,
        /// 0-based index of the annotation word where the problem was found.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A label file (such as `REFERENCE.csv`) or label statement is malformed.
    #[error("{path}: {reason}")]
    Labels {
        /// Label file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A folder cannot be ingested as it is (empty, unknown layout, ...).
    #[error("{path}: {reason}")]
    Layout {
        /// Folder concerned.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A site store is missing, malformed or cannot be written.
    #[error("{path}: {reason}")]
    Store {
        /// Store folder or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl DatasetError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// A store error on `path`.
    pub fn store(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Self::Store {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    /// A signal error on `path` for `lead`.
    pub fn signal(
        path: impl Into<PathBuf>,
        lead: impl Into<String>,
        reason: impl std::fmt::Display,
    ) -> Self {
        Self::Signal {
            path: path.into(),
            lead: lead.into(),
            reason: reason.to_string(),
        }
    }
}
