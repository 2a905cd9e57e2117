//! ecgfed-gateway: a hospital's gateway over its site store, and the client that pulls
//! verified slices from it (docs/flight.md).
//!
//! Raw ECG leaves a hospital only as a granted, ledger-recorded slice, every row of which the
//! client proves against the slice root on the ledger. [`protocol`] is what both halves agree
//! on; [`client`] (signed calls, verified pulls) and [`server`] (the gateway: catalog, key
//! store, selection, services; `server` feature, with RocksDB) never import each other;
//! [`transport`] is the zero-copy Arrow Flight transport both ride; [`commitment`] holds the
//! hashes both compute.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod client;
mod commitment;
pub mod error;
pub mod federated;
pub mod protocol;
#[cfg(feature = "server")]
pub mod server;
pub mod transport;

pub use client::GatewayClient;
pub use client::RequestSigner;
pub use error::GatewayError;
#[cfg(feature = "server")]
pub use server::{Gateway, GatewayConfig};
