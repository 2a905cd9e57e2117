//! Checkpoints: signed tree heads in the C2SP signed-note / checkpoint text form
//! (docs/ledger.md, "Checkpoints").
//!
//! ```text
//! <origin>\n<tree size>\n<base64 root>\ntimestamp <ms>\n\n— <origin> <base64(key id ‖ signature)>\n
//! ```
//! The note body is the first four lines (with their newlines). The signature is a BLS
//! signature by the ledger key over `CHECKPOINT_TAG ‖ body`; the key id is the first 4 bytes
//! of SHA-256(origin ‖ 0x0A ‖ 0xFF ‖ 48-byte public key) (0xFF: a signature type outside the
//! C2SP registry).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use crate::keys::{KeyPair, PublicKey, Signature};
use crate::log::Hash;

/// Message tag (not the BLS DST) of checkpoint signatures: the ledger signs `CHECKPOINT_TAG ‖ body`.
pub const CHECKPOINT_TAG: &[u8] = b"ecgfed/v1/checkpoint\n";

/// A checkpoint that does not parse or verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checkpoint: {0}")]
pub struct CheckpointError(pub String);

/// A verified signed tree head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name.
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Merkle root at that size.
    pub root: Hash,
    /// Signing time, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// Key id of the ledger key under `origin`.
pub fn key_id(origin: &str, key: &PublicKey) -> [u8; 4] {
    let mut d = Sha256::new();
    d.update(origin.as_bytes());
    d.update([0x0A, 0xFF]);
    d.update(key.to_bytes());
    let h = d.finalize();
    [h[0], h[1], h[2], h[3]]
}

impl Checkpoint {
    /// The note body (the signed text).
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\ntimestamp {}\n",
            self.origin,
            self.size,
            B64.encode(self.root),
            self.timestamp_ms
        )
    }

    /// The signed note text.
    pub fn sign(&self, key: &KeyPair) -> String {
        let body = self.body();
        let mut msg = CHECKPOINT_TAG.to_vec();
        msg.extend_from_slice(body.as_bytes());
        let mut sig = key_id(&self.origin, &key.public()).to_vec();
        sig.extend_from_slice(&key.sign(&msg).to_bytes());
        format!("{body}\n\u{2014} {} {}\n", self.origin, B64.encode(sig))
    }

    /// Parses a signed note and verifies its signature by `key` under `origin`. Other
    /// signature lines (the witnesses', docs/ledger.md "Witnesses") are ignored here.
    pub fn verify(
        note: &str,
        origin: &str,
        key: &PublicKey,
    ) -> Result<Checkpoint, CheckpointError> {
        let bad = |m: String| CheckpointError(m);
        let parsed = SignedNote::parse(note)?;
        let cp = parsed.checkpoint(origin)?;
        let want_id = key_id(origin, key);
        let mut msg = CHECKPOINT_TAG.to_vec();
        msg.extend_from_slice(parsed.body.as_bytes());
        for (name, raw) in &parsed.signatures {
            if name != origin || raw.len() != 100 || raw[..4] != want_id {
                continue;
            }
            let sig = Signature::from_bytes(&raw[4..]).map_err(|e| bad(e.to_string()))?;
            if !key.verify(&msg, &sig) {
                return Err(bad(format!("signature by {origin} does not verify")));
            }
            return Ok(cp);
        }
        Err(bad(format!("no signature by the ledger key of {origin}")))
    }
}

/// A signed note split into its body and its signature lines (`— <name> <base64>`), each
/// decoded from base64; nothing verified yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    /// The body: every line before the blank line, each with its `\n`.
    pub body: String,
    /// (name, decoded signature bytes) of every signature line, in order.
    pub signatures: Vec<(String, Vec<u8>)>,
}

impl SignedNote {
    /// Splits a note; errors say which line is malformed.
    pub fn parse(note: &str) -> Result<SignedNote, CheckpointError> {
        let bad = |m: String| CheckpointError(m);
        let (body, sigs) = note
            .split_once("\n\n")
            .ok_or_else(|| bad("no blank line between body and signatures".into()))?;
        let mut signatures = Vec::new();
        for line in sigs.lines() {
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                return Err(bad(format!(
                    "signature line {line:?} does not start with an em dash"
                )));
            };
            let Some((name, b64)) = rest.split_once(' ') else {
                return Err(bad(format!("signature line {line:?} has no signature")));
            };
            let raw = B64
                .decode(b64)
                .map_err(|e| bad(format!("signature of {name}: {e}")))?;
            signatures.push((name.to_string(), raw));
        }
        Ok(SignedNote {
            body: format!("{body}\n"),
            signatures,
        })
    }

    /// The checkpoint the body states (origin, size, root, timestamp), unverified.
    pub fn checkpoint(&self, origin: &str) -> Result<Checkpoint, CheckpointError> {
        let bad = |m: String| CheckpointError(m);
        let lines: Vec<&str> = self.body.lines().collect();
        if lines.len() != 4 {
            return Err(bad(format!("body has {} lines, expected 4", lines.len())));
        }
        if lines[0] != origin {
            return Err(bad(format!("origin {:?}, expected {origin:?}", lines[0])));
        }
        let size: u64 = lines[1]
            .parse()
            .map_err(|_| bad(format!("tree size {:?} is not a number", lines[1])))?;
        let root: Hash = B64
            .decode(lines[2])
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad("root is not 32 bytes of base64".into()))?;
        let timestamp_ms: i64 = lines[3]
            .strip_prefix("timestamp ")
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| {
                bad(format!(
                    "fourth line {:?} is not `timestamp <ms>`",
                    lines[3]
                ))
            })?;
        let cp = Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            timestamp_ms,
        };
        if cp.body() != self.body {
            return Err(bad("body is not in canonical form".into()));
        }
        Ok(cp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_note_verifies_and_any_change_is_refused() {
        let k = KeyPair::generate();
        let c = Checkpoint {
            origin: "ecgfed.test/log".into(),
            size: 42,
            root: [9; 32],
            timestamp_ms: 1_700_000_000_123,
        };
        let note = c.sign(&k);
        assert!(note.starts_with("ecgfed.test/log\n42\nCQkJ"));
        assert_eq!(
            Checkpoint::verify(&note, &c.origin, &k.public()).unwrap(),
            c
        );
        assert!(Checkpoint::verify(&note, "other", &k.public()).is_err());
        assert!(Checkpoint::verify(&note, &c.origin, &KeyPair::generate().public()).is_err());
        let forged = note.replacen("\n42\n", "\n43\n", 1);
        assert!(Checkpoint::verify(&forged, &c.origin, &k.public()).is_err());
    }
}
