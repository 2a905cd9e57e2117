//! Trust files: what an auditor or a gateway needs to check a ledger it does not run — the
//! log's origin, the ledger's public key and a signed checkpoint seen before (JSON,
//! docs/ledger.md "Trust file").

use std::path::{Path, PathBuf};

use crate::checkpoint::Checkpoint;
use crate::keys::PublicKey;

/// A trust file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("trust file {path}: {reason}")]
pub struct TrustError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

/// `trust.json`: origin, ledger key (hex) and a signed checkpoint note.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrustFile {
    /// Checkpoint origin.
    pub origin: String,
    /// Hex of the ledger's 48-byte public key.
    pub ledger_public_key: String,
    /// A signed checkpoint note.
    pub checkpoint: String,
    /// Set once a client holding this file found the ledger signing two conflicting
    /// checkpoints: why, and where the evidence is. A client refuses to use the ledger then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distrusted: Option<String>,
    /// The certificate (PEM) of the authority that issued the ledger's TLS certificate: when
    /// present, clients reach the ledger over TLS only, checking its certificate against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<String>,
    /// The name the ledger's TLS certificate is issued for, when not its address's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_domain: Option<String>,
}

/// How a client reaches a ledger over TLS (from its trust file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerTls {
    /// The authority's certificate, PEM.
    pub ca_pem: String,
    /// The name to check in the ledger's certificate, when not the address's host.
    pub domain: Option<String>,
}

impl TrustFile {
    /// The TLS settings of the ledger, when it serves TLS.
    pub fn tls(&self) -> Option<LedgerTls> {
        self.tls_ca.as_ref().map(|ca| LedgerTls {
            ca_pem: ca.clone(),
            domain: self.tls_domain.clone(),
        })
    }
}

/// The gRPC endpoint of a ledger at `addr` (`host:port` or a URI): `https` checked against
/// `tls` when given, plain HTTP/2 otherwise.
pub fn endpoint(
    addr: &str,
    tls: Option<&LedgerTls>,
) -> Result<tonic::transport::Endpoint, Box<dyn std::error::Error + Send + Sync>> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("{scheme}://{addr}")
    };
    let mut ep = tonic::transport::Endpoint::from_shared(url)?.tcp_nodelay(true);
    if let Some(t) = tls {
        let mut cfg = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&t.ca_pem));
        if let Some(d) = &t.domain {
            cfg = cfg.domain_name(d.clone());
        }
        ep = ep.tls_config(cfg)?;
    }
    Ok(ep)
}

impl TrustFile {
    /// Reads a trust file and verifies its checkpoint under its key.
    pub fn read(path: &Path) -> Result<(TrustFile, Checkpoint, PublicKey), TrustError> {
        let err = |reason: String| TrustError {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let t: TrustFile =
            serde_json::from_str(&text).map_err(|e| err(format!("not a trust file: {e}")))?;
        let raw = hex::decode(&t.ledger_public_key)
            .map_err(|e| err(format!("ledger_public_key: {e}")))?;
        let key =
            PublicKey::from_bytes(&raw).map_err(|e| err(format!("ledger_public_key: {e}")))?;
        let cp = Checkpoint::verify(&t.checkpoint, &t.origin, &key)
            .map_err(|e| err(format!("checkpoint: {e}")))?;
        Ok((t, cp, key))
    }

    /// Writes the trust file durably and atomically ([`write_durable`]).
    pub fn write(&self, path: &Path) -> Result<(), TrustError> {
        let err = |reason: String| TrustError {
            path: path.to_path_buf(),
            reason,
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| err(e.to_string()))? + "\n";
        write_durable(path, text.as_bytes()).map_err(|e| err(e.to_string()))
    }
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new content whole, and the
/// new content on disk when this returns: a temporary file of its own in the same folder,
/// synced, renamed over `path`, then the folder synced.
pub fn write_durable(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_durable_mode(path, bytes, 0o666)
}

/// [`write_durable`] for a file only its owner may read (mode 0600 from its creation).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_durable_mode(path, bytes, 0o600)
}

/// [`write_durable`] with the temporary file created with `mode` (less the umask).
fn write_durable_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    let done = f
        .write_all(bytes)
        .and_then(|_| f.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}
