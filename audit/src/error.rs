//! Errors of the audit crate.

/// An audit failure, naming the entry, subject or file it is about.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The ledger server refused or failed, or its answer does not verify (the client's
    /// typed error: a fork, a rollback, an inconsistent tree, a broken rule).
    #[error("ledger: {0}")]
    Client(#[from] ecgfed_ledger::client::ClientError),
    /// The ledger server refused or failed a raw call.
    #[error("ledger: {0}")]
    Status(#[from] tonic::Status),
    /// The ledger's store could not be read (offline audit).
    #[error("ledger store: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// An inclusion proof cannot be had for an entry.
    #[error("inclusion proof of entry {index}: {source}")]
    Proof {
        /// The entry.
        index: u64,
        /// Why.
        #[source]
        source: ecgfed_ledger::log::LogError,
    },
    /// The ledger's answer or store is not what the formats allow (names what).
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
    /// An erasure disclosure does not match the ledger (names the file and what).
    #[error("erasure disclosure {path}: {reason}")]
    Disclosure {
        /// The disclosure file.
        path: String,
        /// What does not match.
        reason: String,
    },
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
