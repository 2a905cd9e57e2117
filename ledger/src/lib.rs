//! ecgfed-ledger: the trust anchor of ecgfed, an append-only log whose every answer can be
//! checked against a checkpoint seen before (docs/ledger.md).
//!
//! Modules follow the shape of a transparency log: [`log`] (RFC 6962 Merkle log and proofs),
//! [`keys`] (BLS12-381 identities), [`entry`] (signed entries), [`state`] (members and
//! submission rules), [`genesis`], [`block`], [`checkpoint`] (signed tree heads), [`store`]
//! (RocksDB), [`sequencer`] (the root API with group commit), [`service`] (gRPC),
//! [`client`] (verifying client), [`access`] (member call tokens), `gate` (per-peer limits,
//! `server` feature), [`trust`] (trust files), [`verify`] (offline and remote
//! audit), [`erasure`] (erased-leaf tokens); witnessing (issue 25): [`cosign`] (cosignatures, quorums), [`evidence`] (split-view
//! evidence), `witness` (a witness) and `witnessing` (the ledger's side), `mirror` (a verified
//! live copy) with the `server` feature.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod access;
pub mod block;
pub mod checkpoint;
pub mod client;
pub mod cosign;
pub mod entry;
pub mod erasure;
pub mod evidence;
#[cfg(feature = "server")]
pub mod gate;
pub mod genesis;
pub mod keys;
pub mod log;
#[cfg(feature = "server")]
pub mod mirror;
pub mod protocol;
#[cfg(feature = "server")]
mod sequencer;
#[cfg(feature = "server")]
pub mod service;
pub mod state;
#[cfg(feature = "server")]
pub mod store;
pub mod trust;
pub mod verify;
#[cfg(feature = "server")]
pub mod witness;
#[cfg(feature = "server")]
mod witnessing;

#[cfg(feature = "server")]
pub use sequencer::{Latest, Ledger, LedgerError, MirrorRefusal, Receipt};
#[cfg(feature = "server")]
pub use witnessing::{WitnessPeer, WitnessTls};
