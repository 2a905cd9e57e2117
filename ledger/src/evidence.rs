//! Evidence of a ledger signing two conflicting checkpoints (a split view), as a client or a
//! witness found it: both signed notes and the consistency proof the ledger gave, if any.
//! Anyone holding the ledger's public key can check it (`ecgfed audit evidence`).
//!
//! Files are JSON, `evidence-<detected ms>-<first size>-<second size>.json` in an evidence
//! folder (docs/ledger.md, "Evidence").

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::keys::PublicKey;
use crate::log::{Hash, verify_consistency};

/// Two checkpoints signed by one ledger key that cannot both be true.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// `fork` (two roots for one size) or `inconsistent` (the larger not proven to extend the
    /// smaller).
    pub kind: String,
    /// The log's origin.
    pub origin: String,
    /// Hex of the ledger's public key.
    pub ledger_public_key: String,
    /// Where the second checkpoint came from (a ledger or witness address).
    pub source: String,
    /// Who found it (a member id or a program).
    pub detected_by: String,
    /// When, ms since the Unix epoch.
    pub detected_at_ms: i64,
    /// The checkpoint trusted before (signed note).
    pub first: String,
    /// The conflicting one (signed note).
    pub second: String,
    /// The consistency proof the ledger gave between them (hex hashes; empty for a fork).
    #[serde(default)]
    pub consistency_proof: Vec<String>,
}

/// Why an evidence file does not prove a conflict.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// It cannot be read or parsed.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A note does not verify under the ledger key, or the two do not conflict.
    #[error("evidence does not hold: {0}")]
    DoesNotHold(String),
}

impl Evidence {
    /// Checks both signatures under `key` (and the key against the file's) and that the two
    /// checkpoints conflict: same size with two roots, or a consistency proof that fails.
    pub fn check(&self, key: &PublicKey) -> Result<(Checkpoint, Checkpoint), EvidenceError> {
        let bad = |m: String| EvidenceError::DoesNotHold(m);
        if self.ledger_public_key != key.to_hex() {
            return Err(bad("the file names another ledger key".into()));
        }
        let a = Checkpoint::verify(&self.first, &self.origin, key)
            .map_err(|e| bad(format!("first: {e}")))?;
        let b = Checkpoint::verify(&self.second, &self.origin, key)
            .map_err(|e| bad(format!("second: {e}")))?;
        let (small, large) = if a.size <= b.size { (&a, &b) } else { (&b, &a) };
        if small.size == large.size {
            if small.root == large.root {
                return Err(bad(format!(
                    "both checkpoints have size {} and one root",
                    a.size
                )));
            }
            return Ok((a, b));
        }
        let proof: Vec<Hash> = self
            .consistency_proof
            .iter()
            .map(|h| {
                hex::decode(h)
                    .ok()
                    .and_then(|v| v.try_into().ok())
                    .ok_or_else(|| bad(format!("proof hash {h:?} is not 32 bytes of hex")))
            })
            .collect::<Result<_, _>>()?;
        if small.size > 0
            && verify_consistency(small.size, large.size, &small.root, &large.root, &proof).is_ok()
        {
            return Err(bad(format!(
                "the proof shows size {} extends size {}",
                large.size, small.size
            )));
        }
        Ok((a, b))
    }

    /// Writes the evidence into `dir` (created if needed), durably; returns the file.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, EvidenceError> {
        let ferr = |path: &Path, e: &dyn std::fmt::Display| EvidenceError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| ferr(dir, &e))?;
        let size = |n: &str| {
            crate::checkpoint::SignedNote::parse(n)
                .and_then(|p| p.checkpoint(&self.origin))
                .map_or(0, |c| c.size)
        };
        let path = dir.join(format!(
            "evidence-{}-{}-{}.json",
            self.detected_at_ms,
            size(&self.first),
            size(&self.second)
        ));
        let text = serde_json::to_string_pretty(self).map_err(|e| ferr(&path, &e))? + "\n";
        crate::trust::write_durable(&path, text.as_bytes()).map_err(|e| ferr(&path, &e))?;
        Ok(path)
    }

    /// Reads one evidence file.
    pub fn read(path: &Path) -> Result<Evidence, EvidenceError> {
        let ferr = |e: &dyn std::fmt::Display| EvidenceError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let text = std::fs::read_to_string(path).map_err(|e| ferr(&e))?;
        serde_json::from_str(&text).map_err(|e| ferr(&e))
    }

    /// The evidence files in `dir`, by name (none when it does not exist).
    pub fn list(dir: &Path) -> Result<Vec<PathBuf>, EvidenceError> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(EvidenceError::File {
                    path: dir.to_path_buf(),
                    reason: e.to_string(),
                });
            }
        };
        let mut v: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("evidence-") && n.ends_with(".json"))
            })
            .collect();
        v.sort();
        Ok(v)
    }
}
