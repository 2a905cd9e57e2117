//! Gateway errors and their gRPC statuses.

use std::path::PathBuf;

use tonic::{Code, Status};

/// A boxed error kept as the source of another.
pub type Source = Box<dyn std::error::Error + Send + Sync>;

/// What can go wrong in a gateway or its client.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration cannot be used.
    #[error("configuration: {0}")]
    Config(String),
    /// The site store cannot be read or written.
    #[error("site store: {0}")]
    Store(#[from] ecgfed_datasets::error::DatasetError),
    /// The gateway's key store (RocksDB) failed, or holds what it never writes.
    #[error("key store {}: {source}", path.display())]
    KeyStore {
        /// Folder of the key store.
        path: PathBuf,
        /// What failed: the RocksDB or I/O error, or what is wrong with a stored value.
        #[source]
        source: Source,
    },
    /// Another process (a running gateway) holds the key store.
    #[error("key store {}: {source} (is a gateway running on this folder?)", path.display())]
    KeyStoreInUse {
        /// Folder of the key store.
        path: PathBuf,
        /// RocksDB's lock error.
        #[source]
        source: Source,
    },
    /// The ledger refused, failed or gave an answer that does not verify.
    #[error("{0}")]
    Ledger(#[from] ecgfed_ledger::client::ClientError),
    /// A key file cannot be used.
    #[error("key: {0}")]
    Key(#[from] ecgfed_ledger::keys::KeyError),
    /// A request is refused (status code and a message a person can act on).
    #[error("{code:?}: {message}")]
    Refused {
        /// gRPC status code.
        code: Code,
        /// Why.
        message: String,
    },
    /// Data received from a gateway does not verify (names the row or record).
    #[error("verification failed: {0}")]
    Verification(String),
    /// A connection or transfer failed.
    #[error("{peer}: {source}")]
    Transport {
        /// The gateway or ledger address.
        peer: String,
        /// What failed.
        #[source]
        source: Source,
    },
    /// Building or reading Arrow data failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

impl GatewayError {
    /// A refusal with `code`.
    pub fn refused(code: Code, message: impl Into<String>) -> Self {
        GatewayError::Refused {
            code,
            message: message.into(),
        }
    }
}

impl From<GatewayError> for Status {
    fn from(e: GatewayError) -> Status {
        match e {
            GatewayError::Refused { code, message } => Status::new(code, message),
            GatewayError::Ledger(ecgfed_ledger::client::ClientError::Refused(s)) => {
                Status::new(s.code(), format!("ledger refused: {}", s.message()))
            }
            GatewayError::Ledger(e) => Status::unavailable(e.to_string()),
            GatewayError::Config(m) => Status::failed_precondition(m),
            other => Status::internal(other.to_string()),
        }
    }
}

/// Shorthand result.
pub type Result<T, E = GatewayError> = std::result::Result<T, E>;
