//! The test kit of ecgfed: what the tests, the benches and the demo need to stand up a
//! federation, kept out of the product's crates. [`members`] makes member keys and a genesis,
//! [`payloads`] builds entry payloads, [`local`] serves a ledger in this process (feature `server`), [`procs`] starts and stops
//! `ecgfed` child processes, [`federation`] runs a ledger and two gateways as child processes,
//! [`shared`] finds the shared ECG folders and the embedded sample, and [`files`] copies a
//! closed store's folder.
//!
//! Fault injection stays with the code it breaks, behind each crate's own feature
//! (`ecgfed-ledger/test-kit`, `ecgfed-gateway/fault-injection`,
//! `ecgfed-datasets/fault-injection`), which only tests and benches turn on.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod federation;
pub mod files;
#[cfg(feature = "server")]
pub mod local;
pub mod members;
pub mod payloads;
pub mod procs;
pub mod shared;
