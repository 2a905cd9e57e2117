//! Trainer errors; each names the file, site, cohort or record it is about.

use std::path::Path;

use ecgfed_ledger::log::Hash32;

use ecgfed_datasets::resample::ResampleError;

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
    /// A site the cohort or the caller names is not in the federation file.
    #[error("site {site:?} is not in the federation file{}", cohort.as_ref().map(|c| format!(" (cohort {c} allocates to it)")).unwrap_or_default())]
    NotInFederation {
        /// The site.
        site: String,
        /// The cohort that allocates to it, if any.
        cohort: Option<String>,
    },
    /// A gateway's answer contradicts the federation file or the protocol.
    #[error("gateway of site {site}: {problem}")]
    GatewayAnswer {
        /// The site in the federation file.
        site: String,
        /// What is wrong.
        problem: GatewayProblem,
    },
    /// The cohort id is on the ledger already with another spec or requester.
    #[error(transparent)]
    CohortTaken(Box<CohortTaken>),
    /// Looking the cohort up on the ledger failed.
    #[error("ledger lookup of cohort {cohort}: {source}")]
    CohortLookup {
        /// The cohort id.
        cohort: String,
        /// The ledger client's error.
        #[source]
        source: ecgfed_ledger::client::ClientError,
    },
    /// No cell could be allocated; the shortfalls say why, cell by cell.
    #[error("nothing to allocate: {}", shortfalls.join("; "))]
    NothingToAllocate {
        /// One line per cell or class short of its target.
        shortfalls: Vec<String>,
    },
    /// The cohort has no training rows.
    #[error("plan: the cohort has no training rows")]
    NoTrainingRows,
    /// The network's scalar features differ from the data's.
    #[error(
        "plan: the network takes {network} scalar features per row, the cohort data has {data}"
    )]
    Features {
        /// Features the network takes.
        network: usize,
        /// Features per row of the data.
        data: usize,
    },
    /// The requested device cannot be used.
    #[error("--device {requested:?}: {}", if requested == "cuda" { "libtorch sees no CUDA device on this machine" } else { "expected cpu or cuda" })]
    Device {
        /// The device asked for.
        requested: String,
    },
    /// A federated round cannot go on: fewer sites answered than a round needs.
    #[error(
        "round {round}: {} site(s) left ({}), a round needs {min}; failures: {}",
        sites.len(), sites.join(", "), failures.join("; ")
    )]
    TooFewSites {
        /// The round.
        round: usize,
        /// The sites still answering.
        sites: Vec<String>,
        /// Fewest sites of a round (the spec's `min_sites`).
        min: usize,
        /// Each failure, naming its site.
        failures: Vec<String>,
    },
    /// A site failed in a federated round (with `on_failure = "stop"`, or past the attempts).
    #[error("round {round} attempt {attempt}: {}", failures.join("; "))]
    RoundFailed {
        /// The round.
        round: usize,
        /// The attempt.
        attempt: u32,
        /// Each failure, naming its site.
        failures: Vec<String>,
    },
    /// A site's answer in a federated round contradicts the protocol or the ledger.
    #[error("round {round}, site {site}: {problem}")]
    RoundAnswer {
        /// The round.
        round: usize,
        /// The site.
        site: String,
        /// What is wrong.
        problem: String,
    },
    /// A model's flat parameters do not fit the spec's network.
    #[error("model: {got} parameter values for a network of {expected}")]
    ModelSize {
        /// Values the network has.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// A planned cohort has no ledger entry (the planner's outcome is inconsistent).
    #[error("plan: the plan has no ledger entry")]
    NoLedgerEntry,
    /// The allocation has no solution.
    #[error("plan: {0}")]
    Solve(#[from] PlanError),
    /// A served batch lacks a column the trainer reads, or has it with another type.
    #[error("data: served batch lacks column {column}")]
    Column {
        /// The column.
        column: String,
    },
    /// A row has no lead the spec asks for.
    #[error("data: segment {segment}: no lead {lead} among {leads:?}")]
    NoLead {
        /// The row's segment id.
        segment: String,
        /// The lead the spec asks for.
        lead: String,
        /// The row's leads.
        leads: Vec<String>,
    },
    /// A row's signal cannot be brought to the spec's rate.
    #[error("data: segment {segment}: {source}")]
    Resample {
        /// The row's segment id.
        segment: String,
        /// Why.
        #[source]
        source: ResampleError,
    },
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

/// A cohort id on the ledger already, with another spec or requester than this one's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cohort {cohort} is already on the ledger (entry {index}) with spec {ledger_spec} by {ledger_requester}; this spec is {spec} by {requester}: choose another cohort_id"
)]
pub struct CohortTaken {
    /// The cohort id.
    pub cohort: String,
    /// Its CohortCreated entry.
    pub index: u64,
    /// The spec hash on the ledger.
    pub ledger_spec: Hash32,
    /// The requester on the ledger.
    pub ledger_requester: String,
    /// This spec's hash.
    pub spec: Hash32,
    /// This requester.
    pub requester: String,
}

/// How a gateway's answer contradicts the federation file or the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayProblem {
    /// It serves no dataset.
    #[error("serves no dataset")]
    NoDataset,
    /// It serves another site than the federation file says.
    #[error("the gateway at {address} serves site {served:?}")]
    OtherSite {
        /// Its address.
        address: String,
        /// The site it serves.
        served: String,
    },
    /// A strata cell has other keys than label, sex and age band.
    #[error("a strata cell has {keys} keys, expected 3")]
    StrataKeys {
        /// The cell's number of keys.
        keys: usize,
    },
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
