//! The benchmarks of ecgfed, out of the product: load generators of the ledger ([`ledger`]),
//! the gateway ([`gateway`], against the plain Flight server `MemoryFlight` of the gateway's
//! `bench-kit` feature, then under load), the audit's lineage queries ([`audit`]), the trainer's training
//! loop ([`train`]) and the readers ([`datasets`], [`read`]). Each prints its figures and,
//! where the issue asked for one, a baseline measured in the same run; bench/README.md keeps
//! the results. The `ecgfed-bench` binary is their command line.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod adversary;
pub mod audit;
pub mod datasets;
pub mod gateway;
mod gateway_load;
pub mod ledger;
pub mod load;
pub mod read;
mod site_ledger;
pub mod train;
pub mod witnesses;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// A multi-threaded tokio runtime for a bench.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The `p` quantile (0..=1) of sorted values, nearest rank; 0 for none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs a Python baseline, `py script ARGS` (ARGS ask it for `--json`), and returns the JSON
/// report it prints; fails with its standard error.
pub fn python_json(
    py: &std::path::Path,
    script: &std::path::Path,
    args: &[String],
) -> Result<serde_json::Value> {
    let out = std::process::Command::new(py)
        .arg(script)
        .args(args)
        .output()
        .with_context(|| format!("running {} {}", py.display(), script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{}: output is not JSON", script.display()))
}

/// The product binary the benches start as servers (`ecgfed ledger serve`, `ecgfed gateway
/// serve`): `$ECGFED_BIN`, else the `ecgfed` beside this program (cargo builds both into the
/// same folder).
pub fn ecgfed_exe() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ECGFED_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe().context("locating this program")?;
    let beside = me.with_file_name("ecgfed");
    if !beside.is_file() {
        bail!(
            "{} not found: build the product binary too (cargo build --release -p ecgfed) or set ECGFED_BIN",
            beside.display()
        );
    }
    Ok(beside)
}
