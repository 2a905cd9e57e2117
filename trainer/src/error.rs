//! Trainer errors; each names the file, site, cohort or record it is about.

use std::path::Path;

/// What can go wrong while planning, pulling, training or recording.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    /// A spec, federation or model file cannot be used.
    #[error("{path}: {reason}")]
    Spec {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// A gateway refused, failed or sent data that does not verify.
    #[error("gateway {site}: {source}")]
    Gateway {
        /// The site.
        site: String,
        /// The gateway's error.
        source: ecgfed_gateway::GatewayError,
    },
    /// The ledger refused or failed.
    #[error("ledger: {0}")]
    Ledger(#[from] ecgfed_ledger::client::ClientError),
    /// A key file cannot be used.
    #[error("key: {0}")]
    Key(#[from] ecgfed_ledger::keys::KeyError),
    /// The plan cannot be made (names the cell, class or site).
    #[error("plan: {0}")]
    Plan(String),
    /// The allocation has no solution.
    #[error("plan: {0}")]
    Solve(#[from] PlanError),
    /// A pulled row cannot be turned into a window (names the segment).
    #[error("data: {0}")]
    Data(String),
    /// A record given to `predict` cannot be read.
    #[error("record {path}: {reason}")]
    Record {
        /// The record's header file.
        path: String,
        /// Why.
        reason: String,
    },
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl TrainerError {
    /// A problem with a spec or federation file.
    pub fn spec(path: &Path, reason: impl Into<String>) -> Self {
        TrainerError::Spec {
            path: path.display().to_string(),
            reason: reason.into(),
        }
    }

    /// An I/O failure on a file.
    pub fn io(path: &Path, e: impl std::fmt::Display) -> Self {
        TrainerError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }

    /// A gateway failure at `site`.
    pub fn gateway(site: &str, source: ecgfed_gateway::GatewayError) -> Self {
        TrainerError::Gateway {
            site: site.to_string(),
            source,
        }
    }
}

/// Shorthand result.
pub type Result<T, E = TrainerError> = std::result::Result<T, E>;

/// Why no plan can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A site the spec names has no visible strata.
    #[error(
        "site {site:?} has no visible strata (not in the federation, or nothing at or above k)"
    )]
    SiteWithoutStrata {
        /// The site.
        site: String,
    },
    /// No training site has a cell at or above k for the task's labels.
    #[error("no training site has selectable strata for the task's labels")]
    NoTrainingStrata,
}
