//! Witness cosignatures and witnessed checkpoints (docs/ledger.md, "Witnesses").
//!
//! The genesis names the witnesses (member ids, in bitmap order) and a quorum. Each witness
//! signs, with its member key and the basic BLS scheme,
//!
//! ```text
//! "ecgfed/v1/cosign\n" ‖ checkpoint body
//! ```
//!
//! Every witness signs the same message, so the cosignatures add up to one 96-byte aggregate,
//! checked against the sum of the signers' keys (sound: every member's proof of possession was
//! checked when it joined). A witnessed checkpoint is the ledger's signed note with one more
//! signature line:
//!
//! ```text
//! — <origin>/witnesses <base64(key id (4) ‖ signer bitmap (⌈n/8⌉) ‖ aggregate (96))>
//! ```
//!
//! Bit i of the bitmap (byte i / 8, mask 0x80 >> (i mod 8)) is witness i; unused bits are zero.
//! The key id is the first 4 bytes of SHA-256(line name ‖ 0x0A ‖ 0xFE ‖ quorum (u32 BE) ‖ the
//! witnesses' 48-byte keys in order).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use crate::checkpoint::{Checkpoint, CheckpointError, SignedNote};
use crate::keys::{KeyPair, PublicKey, Signature};

/// Message tag (not the BLS DST) of cosignatures: a witness signs `COSIGN_TAG ‖ body`.
pub const COSIGN_TAG: &[u8] = b"ecgfed/v1/cosign\n";

/// One witness: its member id and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessKey {
    /// Member id.
    pub id: String,
    /// Member key (its possession proven at admission).
    pub key: PublicKey,
}

/// The witnesses a genesis names and how many must cosign a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WitnessPolicy {
    /// Witnesses, in bitmap order.
    pub witnesses: Vec<WitnessKey>,
    /// Cosignatures needed (more than half of the witnesses; 0 when there are none).
    pub quorum: usize,
}

/// Why a witnessed checkpoint is not accepted.
#[derive(Debug, thiserror::Error)]
pub enum CosignError {
    /// The note itself (body or the ledger's signature) does not verify.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The note carries no witnesses' line.
    #[error("checkpoint of size {size} carries no cosignatures; {quorum} witnesses must cosign it")]
    NotWitnessed {
        /// Its tree size.
        size: u64,
        /// Cosignatures needed.
        quorum: usize,
    },
    /// The witnesses' line is malformed.
    #[error("witnesses' line: {0}")]
    Malformed(String),
    /// Fewer cosigners than the quorum.
    #[error("checkpoint of size {size} is cosigned by {} ({}) of the {quorum} witnesses it needs", signers.len(), signers.join(", "))]
    TooFew {
        /// Its tree size.
        size: u64,
        /// Who cosigned.
        signers: Vec<String>,
        /// Cosignatures needed.
        quorum: usize,
    },
    /// The aggregate does not verify under the signers' keys.
    #[error("the aggregate cosignature of {} on size {size} does not verify", signers.join(", "))]
    Aggregate {
        /// Its tree size.
        size: u64,
        /// Who the bitmap names.
        signers: Vec<String>,
    },
}

/// A checkpoint whose ledger signature and quorum of cosignatures verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witnessed {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// Member ids of the witnesses that cosigned it, in bitmap order (empty on an
    /// unwitnessed ledger).
    pub cosigners: Vec<String>,
}

/// The message a witness signs for `cp`.
pub fn cosign_message(cp: &Checkpoint) -> Vec<u8> {
    let mut m = COSIGN_TAG.to_vec();
    m.extend_from_slice(cp.body().as_bytes());
    m
}

/// A witness's cosignature of `cp`.
pub fn cosign(key: &KeyPair, cp: &Checkpoint) -> Signature {
    key.sign(&cosign_message(cp))
}

impl WitnessPolicy {
    /// True when checkpoints need cosignatures.
    pub fn is_witnessed(&self) -> bool {
        !self.witnesses.is_empty()
    }

    /// The position of a witness in the bitmap.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.witnesses.iter().position(|w| w.id == id)
    }

    /// The name of the witnesses' signature line.
    pub fn line_name(origin: &str) -> String {
        format!("{origin}/witnesses")
    }

    /// The key id of the witnesses' line: it names this witness set and quorum.
    pub fn key_id(&self, origin: &str) -> [u8; 4] {
        let mut d = Sha256::new();
        d.update(Self::line_name(origin).as_bytes());
        d.update([0x0A, 0xFE]);
        d.update((self.quorum as u32).to_be_bytes());
        for w in &self.witnesses {
            d.update(w.key.to_bytes());
        }
        let h = d.finalize();
        [h[0], h[1], h[2], h[3]]
    }

    /// Appends the witnesses' line to a note signed by the ledger: the bitmap of `cosigs`'
    /// positions and their aggregate. The cosignatures must have been checked by the caller.
    pub fn witness_note(
        &self,
        note: &str,
        origin: &str,
        cosigs: &[(usize, Signature)],
    ) -> Result<String, CosignError> {
        let n = self.witnesses.len();
        let mut bitmap = vec![0u8; n.div_ceil(8)];
        for (i, _) in cosigs {
            if *i >= n {
                return Err(CosignError::Malformed(format!(
                    "witness position {i} beyond {n}"
                )));
            }
            bitmap[i / 8] |= 0x80 >> (i % 8);
        }
        let sigs: Vec<Signature> = cosigs.iter().map(|(_, s)| *s).collect();
        let agg = Signature::aggregate(&sigs).map_err(|e| CosignError::Malformed(e.to_string()))?;
        let mut raw = self.key_id(origin).to_vec();
        raw.extend_from_slice(&bitmap);
        raw.extend_from_slice(&agg.to_bytes());
        // Keep the ledger's own lines; drop any earlier witnesses' line.
        let parsed = SignedNote::parse(note)?;
        let name = Self::line_name(origin);
        let mut out = format!("{}\n", parsed.body);
        for (who, sig) in &parsed.signatures {
            if *who != name {
                out.push_str(&format!("\u{2014} {who} {}\n", B64.encode(sig)));
            }
        }
        out.push_str(&format!("\u{2014} {name} {}\n", B64.encode(raw)));
        Ok(out)
    }

    /// Verifies a note: the ledger's signature, then (when this ledger has witnesses) a quorum
    /// of cosignatures in its witnesses' line.
    pub fn verify(
        &self,
        note: &str,
        origin: &str,
        ledger_key: &PublicKey,
    ) -> Result<Witnessed, CosignError> {
        let checkpoint = Checkpoint::verify(note, origin, ledger_key)?;
        if !self.is_witnessed() {
            return Ok(Witnessed {
                checkpoint,
                cosigners: Vec::new(),
            });
        }
        let size = checkpoint.size;
        let parsed = SignedNote::parse(note)?;
        let name = Self::line_name(origin);
        let id = self.key_id(origin);
        let Some((_, raw)) = parsed
            .signatures
            .iter()
            .find(|(who, raw)| *who == name && raw.len() >= 4 && raw[..4] == id)
        else {
            return Err(CosignError::NotWitnessed {
                size,
                quorum: self.quorum,
            });
        };
        let n = self.witnesses.len();
        let bl = n.div_ceil(8);
        if raw.len() != 4 + bl + 96 {
            return Err(CosignError::Malformed(format!(
                "{} bytes, expected {} for {n} witnesses",
                raw.len(),
                4 + bl + 96
            )));
        }
        let bitmap = &raw[4..4 + bl];
        let mut keys = Vec::new();
        let mut signers = Vec::new();
        for (byte, bits) in bitmap.iter().enumerate() {
            for bit in 0..8 {
                if bits & (0x80 >> bit) == 0 {
                    continue;
                }
                let i = byte * 8 + bit;
                let w = self.witnesses.get(i).ok_or_else(|| {
                    CosignError::Malformed(format!("bit {i} set beyond the {n} witnesses"))
                })?;
                keys.push(w.key);
                signers.push(w.id.clone());
            }
        }
        if signers.len() < self.quorum {
            return Err(CosignError::TooFew {
                size,
                signers,
                quorum: self.quorum,
            });
        }
        let agg = Signature::from_bytes(&raw[4 + bl..])
            .map_err(|e| CosignError::Malformed(e.to_string()))?;
        let ok = PublicKey::aggregate(&keys)
            .is_some_and(|k| k.verify(&cosign_message(&checkpoint), &agg));
        if !ok {
            return Err(CosignError::Aggregate { size, signers });
        }
        Ok(Witnessed {
            checkpoint,
            cosigners: signers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(keys: &[KeyPair], quorum: usize) -> WitnessPolicy {
        WitnessPolicy {
            witnesses: keys
                .iter()
                .enumerate()
                .map(|(i, k)| WitnessKey {
                    id: format!("w{i}"),
                    key: k.public(),
                })
                .collect(),
            quorum,
        }
    }

    #[test]
    fn a_quorum_verifies_and_fewer_or_forged_cosignatures_do_not() {
        let ledger = KeyPair::generate();
        let ws: Vec<KeyPair> = (0..9).map(|_| KeyPair::generate()).collect();
        let p = policy(&ws, 5);
        let cp = Checkpoint {
            origin: "o".into(),
            size: 7,
            root: [3; 32],
            timestamp_ms: 5,
        };
        let note = cp.sign(&ledger);
        let sigs = |who: &[usize]| -> Vec<(usize, Signature)> {
            who.iter().map(|&i| (i, cosign(&ws[i], &cp))).collect()
        };
        let good = p.witness_note(&note, "o", &sigs(&[0, 2, 4, 6, 8])).unwrap();
        let w = p.verify(&good, "o", &ledger.public()).unwrap();
        assert_eq!(w.cosigners, ["w0", "w2", "w4", "w6", "w8"]);
        assert_eq!(w.checkpoint, cp);
        // The ledger's signature alone verifies as before.
        assert_eq!(
            Checkpoint::verify(&good, "o", &ledger.public()).unwrap(),
            cp
        );
        // Four of nine is not a quorum.
        let few = p.witness_note(&note, "o", &sigs(&[0, 2, 4, 6])).unwrap();
        assert!(matches!(
            p.verify(&few, "o", &ledger.public()),
            Err(CosignError::TooFew { .. })
        ));
        // A bitmap naming a witness that did not sign.
        let mut lying = sigs(&[0, 2, 4, 6]);
        lying.push((7, cosign(&ws[8], &cp)));
        let lie = p.witness_note(&note, "o", &lying).unwrap();
        assert!(matches!(
            p.verify(&lie, "o", &ledger.public()),
            Err(CosignError::Aggregate { .. })
        ));
        // No line at all.
        assert!(matches!(
            p.verify(&note, "o", &ledger.public()),
            Err(CosignError::NotWitnessed { .. })
        ));
        // Cosignatures of another checkpoint.
        let other = Checkpoint {
            size: 8,
            ..cp.clone()
        };
        let moved: Vec<(usize, Signature)> = [0, 1, 2, 3, 4]
            .iter()
            .map(|&i| (i, cosign(&ws[i], &other)))
            .collect();
        let wrong = p.witness_note(&note, "o", &moved).unwrap();
        assert!(p.verify(&wrong, "o", &ledger.public()).is_err());
        // Another witness set (key id differs).
        let p2 = policy(&ws[..8], 5);
        assert!(matches!(
            p2.verify(&good, "o", &ledger.public()),
            Err(CosignError::NotWitnessed { .. })
        ));
    }

    #[test]
    fn padding_bits_are_refused() {
        let ledger = KeyPair::generate();
        let ws: Vec<KeyPair> = (0..3).map(|_| KeyPair::generate()).collect();
        let p = policy(&ws, 2);
        let cp = Checkpoint {
            origin: "o".into(),
            size: 1,
            root: [0; 32],
            timestamp_ms: 0,
        };
        let note = p
            .witness_note(
                &cp.sign(&ledger),
                "o",
                &[(0, cosign(&ws[0], &cp)), (1, cosign(&ws[1], &cp))],
            )
            .unwrap();
        let line = note.lines().last().unwrap();
        let b64 = line.rsplit(' ').next().unwrap();
        let mut raw = B64.decode(b64).unwrap();
        raw[4] |= 0x01;
        let forged = note.replace(b64, &B64.encode(raw));
        assert!(matches!(
            p.verify(&forged, "o", &ledger.public()),
            Err(CosignError::Malformed(_))
        ));
    }
}
