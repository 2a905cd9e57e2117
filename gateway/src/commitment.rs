//! Record commitments, patient pseudonyms and Merkle trees over commitments
//! (docs/flight.md "Commitments").
//!
//! - commitment = SHA-256(salt (32 bytes) ‖ content_hash (32 bytes) ‖ segment_id (UTF-8)),
//!   where salt is the patient's random salt, content_hash the store's SHA-256 of the
//!   canonical segment encoding (docs/datasets.md) and segment_id `<source>/<record>@<start>`,
//!   the row's record id in the store.
//! - pseudonym = lowercase hex of HMAC-SHA256(pseudonym key, source ‖ 0x00 ‖ patient id).
//! - dataset and slice roots: RFC 6962 Merkle trees whose leaves are the 32 commitment bytes
//!   (leaf hash SHA-256(0x00 ‖ commitment)), built with the ledger's Merkle code.

#[cfg(feature = "server")]
use ecgfed_ledger::log::MemoryLog;
use ecgfed_ledger::log::{self, Hash};
#[cfg(feature = "server")]
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The commitment of one store row.
pub(crate) fn commitment(salt: &[u8; 32], content_hash: &[u8; 32], segment_id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(content_hash);
    h.update(segment_id.as_bytes());
    h.finalize().into()
}

/// The pseudonym of a patient under the gateway's pseudonym key.
#[cfg(feature = "server")]
pub(crate) fn pseudonym(key: &[u8; 32], source: &str, patient: &str) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(source.as_bytes());
    m.update(&[0]);
    m.update(patient.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// Decodes a 32-byte hash from hex.
pub(crate) fn hash32(hex_str: &str) -> Option<[u8; 32]> {
    hex::decode(hex_str).ok()?.try_into().ok()
}

/// A Merkle tree over commitments, in the order given (the server's dataset and slice roots).
#[cfg(feature = "server")]
#[derive(Debug, Clone, Default)]
pub(crate) struct CommitmentTree {
    log: MemoryLog,
    size: u64,
}

#[cfg(feature = "server")]
impl CommitmentTree {
    /// The tree of `commitments`.
    pub(crate) fn new<'a>(commitments: impl IntoIterator<Item = &'a [u8; 32]>) -> Self {
        let mut log = MemoryLog::new();
        let mut size = 0;
        for c in commitments {
            log.append(c);
            size += 1;
        }
        CommitmentTree { log, size }
    }

    /// The RFC 6962 root (SHA-256 of the empty string for no leaves).
    pub(crate) fn root(&self) -> Hash {
        log::root(&self.log, self.size).unwrap_or_else(|_| log::empty_root())
    }

    /// Inclusion proof of leaf `index`.
    pub(crate) fn proof(&self, index: u64) -> Vec<Hash> {
        log::inclusion_proof(&self.log, index, self.size).unwrap_or_default()
    }
}

/// Checks that `commitment` is leaf `index` of the tree of `size` leaves with `root`.
pub(crate) fn verify_leaf(
    index: u64,
    size: u64,
    commitment: &[u8; 32],
    proof: &[Hash],
    root: &Hash,
) -> Result<(), log::LogError> {
    log::verify_inclusion(index, size, &log::leaf_hash(commitment), proof, root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commitment_bytes_are_as_documented() {
        let (salt, hash) = ([1u8; 32], [2u8; 32]);
        let mut manual = Vec::new();
        manual.extend_from_slice(&salt);
        manual.extend_from_slice(&hash);
        manual.extend_from_slice(b"mitdb/100@0");
        let want: [u8; 32] = Sha256::digest(&manual).into();
        assert_eq!(commitment(&salt, &hash, "mitdb/100@0"), want);
        assert_ne!(commitment(&[3u8; 32], &hash, "mitdb/100@0"), want);
        // Expected value from Python: hmac.new(b"\x0b" * 32, b"mitdb\x00100", sha256).
        let p = pseudonym(&[0x0b; 32], "mitdb", "100");
        assert_eq!(
            p,
            "9e8cdfc602062bdd06e67a3cfa77de179b4d0a61e9abf1953e393b95597098cd"
        );
        assert_ne!(p, pseudonym(&[0x0b; 32], "mitdb", "101"));
    }

    #[test]
    fn proofs_of_every_leaf_verify_and_a_changed_leaf_does_not() {
        let cs: Vec<[u8; 32]> = (0..37u8).map(|i| [i; 32]).collect();
        let t = CommitmentTree::new(&cs);
        let root = t.root();
        for (i, c) in cs.iter().enumerate() {
            verify_leaf(i as u64, 37, c, &t.proof(i as u64), &root).unwrap();
        }
        assert!(verify_leaf(3, 37, &[99u8; 32], &t.proof(3), &root).is_err());
        assert_eq!(CommitmentTree::new(&[]).root(), log::empty_root());
    }
}
