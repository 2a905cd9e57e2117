//! ecgfed-gateway: a hospital's gateway over its site store (docs/flight.md).
//!
//! Raw ECG leaves only as a granted, ledger-recorded slice; the ledger sees commitments,
//! counts and signatures, never identities. Modules: [`config`], [`keystore`] (salts, slices,
//! nonces in RocksDB), [`commitment`] (commitments, pseudonyms, Merkle trees), [`catalog`]
//! (the store as the gateway indexes it), [`strata`] (k-anonymous counts), [`select`] (seeded
//! slice selection), [`auth`] (signed requests, members), [`gateway`] (registration,
//! reservation, erasure), [`slice`] (served rows and their verification), [`service`]
//! (GatewayService), [`flight`] (Arrow Flight), [`server`] (one port for both) and
//! [`client`] (signed calls and verified pulls).

pub mod auth;
pub mod catalog;
pub mod client;
pub mod commitment;
pub mod config;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub mod flight;
pub mod gateway;
pub mod keystore;
pub mod route;
pub mod select;
pub mod server;
pub mod service;
pub mod slice;
pub mod strata;
pub mod wire;

/// Stops with an error at the fault point `$name` when a test armed it (`fault-injection`
/// builds only; elsewhere it expands to nothing).
macro_rules! fault {
    ($name:literal) => {
        #[cfg(feature = "fault-injection")]
        if crate::faults::hit($name) {
            return Err(crate::faults::crashed($name));
        }
    };
}
pub(crate) use fault;

pub use config::GatewayConfig;
pub use error::GatewayError;
pub use gateway::Gateway;
