//! Gateway errors and their gRPC statuses.

use std::path::PathBuf;

use ecgfed_ledger::log::{Hash32, LogError};
use tonic::{Code, Status};

/// A boxed error kept as the source of another.
pub type Source = Box<dyn std::error::Error + Send + Sync>;

/// What can go wrong in a gateway or its client.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration file cannot be parsed, or one of its values cannot be used (the
    /// message names the file and the key).
    #[error("configuration: {0}")]
    Config(String),
    /// A file the configuration names cannot be read.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The trust file (the ledger's key and a checkpoint) cannot be used.
    #[error("trust file {}: {source}", path.display())]
    Trust {
        /// The trust file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ecgfed_ledger::trust::TrustError,
    },
    /// The gateway's witness state cannot be used.
    #[cfg(feature = "server")]
    #[error(transparent)]
    Witness(Box<ecgfed_ledger::witness::WitnessError>),
    /// The gateway's member on the ledger is not the hospital its configuration names.
    #[error("member {member}: {problem}")]
    Identity {
        /// The configured member id.
        member: String,
        /// What differs.
        problem: IdentityProblem,
    },
    /// The TLS configuration cannot be used.
    #[error("tls: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// The site store holds a segment twice.
    #[error("{}: segment {segment} appears twice in the store", store.display())]
    DuplicateSegment {
        /// The store.
        store: PathBuf,
        /// The segment id.
        segment: String,
    },
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
    /// Data received from a gateway does not verify (names the slice, segment or leaf).
    #[error("verification failed: {0}")]
    Verification(#[source] Box<VerificationError>),
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

impl From<VerificationError> for GatewayError {
    fn from(e: VerificationError) -> Self {
        GatewayError::Verification(Box::new(e))
    }
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

impl GatewayError {
    /// Whether the error names the gateway's own files or storage (key store, site store,
    /// configured files): what a remote caller must not learn.
    fn is_local(&self) -> bool {
        #[cfg(feature = "server")]
        if matches!(self, GatewayError::Witness(_)) {
            return true;
        }
        matches!(
            self,
            GatewayError::KeyStore { .. }
                | GatewayError::KeyStoreInUse { .. }
                | GatewayError::File { .. }
                | GatewayError::Trust { .. }
                | GatewayError::Store(_)
                | GatewayError::Tls(_)
                | GatewayError::DuplicateSegment { .. }
                | GatewayError::Identity { .. }
        )
    }
}

/// The status a remote caller receives. An error that names the gateway's own files or
/// storage is logged here and reaches the caller as a bare `Internal`: a hospital's folder
/// layout, key store paths and storage errors are not the caller's to see.
impl From<GatewayError> for Status {
    fn from(e: GatewayError) -> Status {
        if e.is_local() {
            tracing::error!("{e}");
            return Status::internal("internal error of the gateway (its log has the details)");
        }
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

/// How the gateway's member on the ledger differs from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum IdentityProblem {
    /// No member has the id.
    #[error("not on the ledger")]
    NotOnLedger,
    /// The member is not a hospital.
    #[error("is a {0:?} on the ledger, not a hospital")]
    NotAHospital(ecgfed_proto::v1::Role),
    /// The member speaks for another site.
    #[error("speaks for site {ledger:?} on the ledger, not {configured:?}")]
    OtherSite {
        /// The site on the ledger.
        ledger: String,
        /// The configured site.
        configured: String,
    },
    /// The configured key is not the member's key.
    #[error("{} is not its key on the ledger", key_file.display())]
    OtherKey {
        /// The configured key file.
        key_file: PathBuf,
    },
}

/// Why data received from a gateway, or a ledger entry it rests on, does not verify: each
/// variant names the slice, segment or leaf, and carries what was found against what was
/// expected, so that a caller can tell an altered row from an incomplete transfer or a
/// gateway that answers for another site.
#[derive(Debug, thiserror::Error)]
pub enum VerificationError {
    /// A served batch lacks a column, or has it with another type.
    #[error("served batch: column {column} is missing or not {expected}")]
    Column {
        /// The column.
        column: &'static str,
        /// The type the schema documents.
        expected: &'static str,
    },
    /// A row's list offsets point outside the column's values.
    #[error("segment {segment}: {column} offsets out of range")]
    Offsets {
        /// The row's segment id.
        segment: String,
        /// The column.
        column: &'static str,
    },
    /// A row's values do not hash to its content hash: the data was altered.
    #[error("segment {segment}: its values do not hash to its content hash (data altered)")]
    ContentHash {
        /// The row's segment id.
        segment: String,
        /// The content hash the row carries.
        served: Hash32,
        /// The hash of the row's values.
        computed: Hash32,
    },
    /// A row's commitment is not `SHA-256(salt ‖ content hash ‖ segment id)`.
    #[error("segment {segment}: commitment does not match salt, content hash and segment id")]
    Commitment {
        /// The row's segment id.
        segment: String,
    },
    /// A row's commitment is not leaf `leaf` of the slice root recorded on the ledger.
    #[error(
        "segment {segment}: commitment is not in the slice root recorded on the ledger: {source}"
    )]
    NotInSlice {
        /// The row's segment id.
        segment: String,
        /// The leaf index the row claims.
        leaf: u64,
        /// Why the inclusion proof fails.
        #[source]
        source: LogError,
    },
    /// A row claims a leaf beyond the slice.
    #[error("segment {segment}: leaf index {leaf} beyond the slice's {size} rows")]
    LeafOutOfRange {
        /// The row's segment id.
        segment: String,
        /// The leaf index the row claims.
        leaf: u64,
        /// The slice's size on the ledger.
        size: u64,
    },
    /// Two rows claim the same leaf.
    #[error("segment {segment}: leaf {leaf} served twice")]
    ServedTwice {
        /// The second row's segment id.
        segment: String,
        /// The leaf.
        leaf: u64,
    },
    /// The gateway reserved a slice other than the cohort's slice of its site.
    #[error(
        "the gateway reserved slice {reserved:?}; the cohort's slice of this site is {expected:?}"
    )]
    WrongSlice {
        /// The slice id the gateway returned.
        reserved: String,
        /// The slice id of the cohort at the site.
        expected: String,
    },
    /// The slice's ledger entry is another site's.
    #[error(
        "slice {slice} is site {ledger_site}'s on the ledger; this gateway is site {gateway_site}'s"
    )]
    OtherSite {
        /// The slice id.
        slice: String,
        /// The site the ledger entry names.
        ledger_site: String,
        /// The site of the gateway that served it.
        gateway_site: String,
    },
    /// The stream's schema metadata announces a value it cannot (a key of docs/flight.md).
    #[error("slice {slice}: the stream announces {key} {value:?}")]
    Announcement {
        /// The slice id.
        slice: String,
        /// The metadata key.
        key: &'static str,
        /// The value announced.
        value: String,
    },
    /// The stream announces a root or size other than the ledger's.
    #[error(
        "slice {slice}: the stream announces root {announced_root} size {announced_size}, the ledger records root {ledger_root} size {ledger_size}"
    )]
    NotTheLedgers {
        /// The slice id.
        slice: String,
        /// The root the stream announces.
        announced_root: Hash32,
        /// The size the stream announces.
        announced_size: u64,
        /// The root on the ledger.
        ledger_root: Hash32,
        /// The size on the ledger.
        ledger_size: u64,
    },
    /// The stream ended before its schema, for a slice with rows.
    #[error("slice {slice}: stream ended without a schema")]
    NoSchema {
        /// The slice id.
        slice: String,
    },
    /// A leaf of the slice was neither served nor announced erased.
    #[error("slice {slice}: leaf {leaf} of {size} was never served (incomplete transfer)")]
    Incomplete {
        /// The slice id.
        slice: String,
        /// The first leaf missing.
        leaf: u64,
        /// The slice's size.
        size: u64,
    },
    /// A leaf announced erased was also served, or is beyond the slice.
    #[error("slice {slice}: leaf {leaf} announced erased but served or out of range")]
    ErasedButServed {
        /// The slice id.
        slice: String,
        /// The leaf.
        leaf: u64,
    },
    /// A leaf announced erased is not in the slice root.
    #[error("slice {slice}: erased leaf {leaf}: {source}")]
    ErasedNotInSlice {
        /// The slice id.
        slice: String,
        /// The leaf.
        leaf: u64,
        /// Why its inclusion proof fails.
        #[source]
        source: LogError,
    },
    /// A commitment announced erased has no `RecordsErased` entry of the site's hospital.
    #[error(
        "commitment {commitment} is announced erased but no RecordsErased entry of site {site}'s hospital names it"
    )]
    ErasureNotOnLedger {
        /// The commitment.
        commitment: Hash32,
        /// The site.
        site: String,
    },
    /// The stream's list of erased leaves cannot be read.
    #[error("{key}: {reason}")]
    ErasedList {
        /// The metadata key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A hash in a ledger entry the check rests on is not 32 bytes.
    #[error("ledger entry {index}: {what} is {len} bytes, not 32")]
    LedgerHash {
        /// The entry's index.
        index: u64,
        /// Which hash.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// The verifier task ended abnormally.
    #[error("verifier stopped: {0}")]
    Stopped(#[source] tokio::task::JoinError),
}

/// Shorthand result.
pub type Result<T, E = GatewayError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A remote caller learns no path of the hospital's machine from a failed call.
    #[test]
    fn statuses_name_no_local_path() {
        let path = PathBuf::from("/srv/hospital-a/gateway/keys");
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        for e in [
            GatewayError::KeyStore {
                path: path.clone(),
                source: "stored slice c1/site-a: expected value at line 1".into(),
            },
            GatewayError::File {
                path: path.clone(),
                source: io(),
            },
            GatewayError::Store(ecgfed_datasets::error::DatasetError::Io {
                path: path.clone(),
                source: io(),
            }),
        ] {
            assert!(e.to_string().contains("/srv/hospital-a"), "{e}");
            let s = Status::from(e);
            assert_eq!(s.code(), Code::Internal);
            assert!(!s.message().contains("hospital-a"), "{}", s.message());
        }
        // Refusals still say why.
        let s = Status::from(GatewayError::refused(Code::PermissionDenied, "not granted"));
        assert_eq!(
            (s.code(), s.message()),
            (Code::PermissionDenied, "not granted")
        );
    }
}
