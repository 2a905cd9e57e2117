//! ecgfed-ledger: the trust anchor of ecgfed, an append-only log whose every answer can be
//! checked against a checkpoint seen before.
//!
//! In this crate so far: [`log`], the RFC 6962 Merkle log (hashing, roots of any past size,
//! inclusion and consistency proofs and their verification). Keys, entries, blocks, the
//! RocksDB store, the gRPC service, the verifying client and the offline verifier follow (see
//! docs/ledger.md).

pub mod keys;
pub mod log;
