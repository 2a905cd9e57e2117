//! ecgfed trainer: a data scientist's path through the federation (docs/cohorts.md,
//! docs/training.md). A cohort spec (`spec`) is planned over the gateways' visible strata
//! (`plan`, `cohort`) and written as `CohortCreated`; each site's slice is reserved and pulled
//! with every row verified, then turned into fixed windows at a common rate (`data`); a
//! residual 1-D CNN (`model`) is trained with libtorch (`train`), evaluated overall and per
//! subgroup (`metrics`, `evaluation`, `plots`) and recorded as `ModelTrained` (`run`);
//! `predict` classifies records from disk with a saved model. `federated` trains a federated
//! cohort in rounds at the gateways instead (the rows stay home).

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod cohort;
pub mod data;
mod datasheet;
pub mod error;
pub mod evaluation;
pub mod federated;
mod metrics;
mod model;
mod plan;
mod plots;
pub mod predict;
pub mod run;
pub mod spec;
pub mod train;

pub use error::TrainerError;
pub use spec::{CohortSpec, Federation, LoadedSpec};
