//! ecgfed-audit: what a regulator runs. Lineage queries over the ledger's subject indexes
//! ([`lineage`]), with the erasures hospitals disclose ([`disclosure`]), W3C PROV-JSON and OpenLineage exports ([`export`]), offline proof bundles
//! ([`bundle`]) and self-contained HTML reports ([`report`]), all over one [`source::Source`]
//! abstraction: a ledger store read offline (`store` feature), a running ledger through the verifying client, or
//! a bundle's entries. docs/audit.md documents every format.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod bundle;
pub mod disclosure;
pub mod error;
pub mod export;
pub mod lineage;
pub mod privacy;
pub mod report;
pub mod source;

pub use error::{AuditError, Result};
