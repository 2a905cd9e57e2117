//! Blocks: the group-commit units of the ledger, chained by hash (docs/ledger.md, "Blocks").
//!
//! Canonical encoding (104 bytes, integers big-endian): height u64 ‖ previous block hash (32)
//! ‖ timestamp ms i64 ‖ first entry index u64 ‖ entry count u64 ‖ tree size after the block u64
//! ‖ Merkle root after the block (32). Block hash = SHA-256(`BLOCK_TAG` ‖ encoding). The
//! previous hash of block 0 is 32 zero bytes.

use sha2::{Digest, Sha256};

use crate::log::Hash;

/// Tag hashed before a block encoding.
pub(crate) const BLOCK_TAG: &[u8] = b"ecgfed/v1/block\n";
/// Length of the canonical encoding.
pub(crate) const BLOCK_BYTES: usize = 104;

/// A committed block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Height (0 for the genesis block).
    pub height: u64,
    /// Hash of the previous block (zeros for height 0).
    pub previous_hash: Hash,
    /// Commit time, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Index of the block's first entry.
    pub first_index: u64,
    /// Number of entries in the block.
    pub entry_count: u64,
    /// Tree size after the block (= first_index + entry_count).
    pub tree_size: u64,
    /// Merkle root after the block.
    pub root: Hash,
}

impl Block {
    /// The canonical 104-byte encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(BLOCK_BYTES);
        v.extend_from_slice(&self.height.to_be_bytes());
        v.extend_from_slice(&self.previous_hash);
        v.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        v.extend_from_slice(&self.first_index.to_be_bytes());
        v.extend_from_slice(&self.entry_count.to_be_bytes());
        v.extend_from_slice(&self.tree_size.to_be_bytes());
        v.extend_from_slice(&self.root);
        v
    }

    /// Decodes the canonical encoding.
    pub fn decode(b: &[u8]) -> Result<Block, BlockError> {
        if b.len() != BLOCK_BYTES {
            return Err(BlockError::Length { len: b.len() });
        }
        let u = |o: usize| u64::from_be_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
        let h = |o: usize| -> Hash { b[o..o + 32].try_into().unwrap_or([0; 32]) };
        Ok(Block {
            height: u(0),
            previous_hash: h(8),
            timestamp_ms: u(40) as i64,
            first_index: u(48),
            entry_count: u(56),
            tree_size: u(64),
            root: h(72),
        })
    }

    /// SHA-256(`BLOCK_TAG` ‖ encoding).
    pub fn hash(&self) -> Hash {
        let mut d = Sha256::new();
        d.update(BLOCK_TAG);
        d.update(self.encode());
        d.finalize().into()
    }

    /// The wire form.
    #[cfg(feature = "server")]
    pub(crate) fn to_proto(self) -> ecgfed_proto::v1::Block {
        ecgfed_proto::v1::Block {
            height: self.height,
            previous_hash: self.previous_hash.to_vec(),
            timestamp_ms: self.timestamp_ms,
            first_index: self.first_index,
            entry_count: self.entry_count,
            tree_size: self.tree_size,
            root: self.root.to_vec(),
            hash: self.hash().to_vec(),
        }
    }

    /// From the wire form, checking hash lengths and the carried hash.
    pub fn from_proto(p: &ecgfed_proto::v1::Block) -> Result<Block, BlockError> {
        let h = |v: &[u8], field: &'static str| -> Result<Hash, BlockError> {
            v.try_into().map_err(|_| BlockError::HashLength {
                field,
                len: v.len(),
            })
        };
        let b = Block {
            height: p.height,
            previous_hash: h(&p.previous_hash, "previous_hash")?,
            timestamp_ms: p.timestamp_ms,
            first_index: p.first_index,
            entry_count: p.entry_count,
            tree_size: p.tree_size,
            root: h(&p.root, "root")?,
        };
        if b.hash().as_slice() != p.hash.as_slice() {
            return Err(BlockError::NotItsHash { height: p.height });
        }
        Ok(b)
    }
}

/// Why bytes are not a block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The encoding has the wrong length.
    #[error("{len} bytes, expected {BLOCK_BYTES}")]
    Length {
        /// Its length.
        len: usize,
    },
    /// A hash field of the wire form is not 32 bytes.
    #[error("{field} is {len} bytes, expected 32")]
    HashLength {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// The wire form carries a hash that is not the block's.
    #[error("block {height} carries a hash that is not its own")]
    NotItsHash {
        /// The block's height.
        height: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_hash_covers_every_byte() {
        let b = Block {
            height: 3,
            previous_hash: [1; 32],
            timestamp_ms: 1_700_000_000_000,
            first_index: 10,
            entry_count: 5,
            tree_size: 15,
            root: [2; 32],
        };
        let e = b.encode();
        assert_eq!(e.len(), BLOCK_BYTES);
        assert_eq!(Block::decode(&e).unwrap(), b);
        assert_eq!(Block::from_proto(&b.to_proto()).unwrap(), b);
        for i in 0..e.len() {
            let mut t = e.clone();
            t[i] ^= 1;
            assert_ne!(Block::decode(&t).unwrap().hash(), b.hash(), "byte {i}");
        }
        assert!(Block::decode(&e[1..]).is_err());
    }
}
