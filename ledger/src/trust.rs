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

    /// Writes the trust file atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> Result<(), TrustError> {
        let err = |reason: String| TrustError {
            path: path.to_path_buf(),
            reason,
        };
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| err(e.to_string()))? + "\n";
        std::fs::write(&tmp, text).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
    }
}
