//! Errors of the audit crate.

/// An audit failure, naming the entry, subject or file it is about.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The ledger (store or server) could not answer.
    #[error("ledger: {0}")]
    Ledger(String),
    /// An entry could not be decoded.
    #[error("entry {index}: {reason}")]
    Entry {
        /// Entry index.
        index: u64,
        /// What is wrong.
        reason: String,
    },
    /// Something the query asks for is not on the ledger.
    #[error("{0}")]
    NotFound(String),
    /// A proof bundle failed verification.
    #[error("bundle: {0}")]
    Bundle(String),
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// The reason.
        reason: String,
    },
}

impl AuditError {
    /// An I/O error on `path`.
    pub fn io(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        AuditError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }
}

/// Result of the audit crate.
pub type Result<T> = std::result::Result<T, AuditError>;
