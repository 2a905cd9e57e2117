//! `ecgfed`: command line of the federated ECG data-sharing gateway. Parses arguments and
//! calls the library crates; no logic of its own beyond wiring and printing.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod audit;
mod datasets;
mod demo;
mod gateway;
mod keys;
mod ledger;
mod trainer;
mod witness;

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// ecgfed: federated ECG data sharing with ledger provenance.
#[derive(Parser)]
#[command(name = "ecgfed", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole federation on this machine in one command: ledger + three hospital gateways
    /// on loopback over the embedded sample, a balanced cohort trained briefly, the ledger
    /// verified, the audit report written; then everything is shut down.
    Demo(demo::DemoArgs),
    /// Site stores: ingest ECG files, summarise, inspect, count strata.
    #[command(subcommand)]
    Datasets(datasets::DatasetsCommand),
    /// Member keys: BLS12-381 key pairs for ledger identities.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// The ledger: genesis, init, serve.
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
    /// Witnesses: cosign the ledger's checkpoints (a regulator's; gateways witness too).
    #[command(subcommand)]
    Witness(witness::WitnessCommand),
    /// Gateways: serve a hospital's site store, erase a patient, strata, reserve, verified pulls.
    #[command(subcommand)]
    Gateway(gateway::GatewayCommand),
    /// Audit: verify a ledger offline or against a live server.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Cohorts: plan a cohort over the gateways' strata and record it (CohortCreated).
    #[command(subcommand)]
    Cohort(trainer::CohortCommand),
    /// Plan → verified pull → train → evaluate → ModelTrained, for a cohort spec.
    Train {
        /// Cohort spec (TOML, docs/cohorts.md).
        #[arg(long)]
        spec: PathBuf,
        /// Output folder (weights, model card, metrics, datasheet, plots).
        #[arg(long)]
        out: PathBuf,
        /// `cpu` or `cuda`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Federation file; default: the spec's `federation`.
        #[arg(long)]
        federation: Option<PathBuf>,
        /// Print the outcome as JSON (no progress bars).
        #[arg(long)]
        json: bool,
        /// Pull mode: also write the verified windows and their parts to this folder
        /// (`windows.f32`, `rows.jsonl`; docs/training.md "Exported windows"), e.g. to train
        /// the same rows with another framework.
        #[arg(long)]
        export_windows: Option<PathBuf>,
    },
    /// Classify WFDB/.mat records from disk with a saved model.
    Predict {
        /// Model folder written by `ecgfed train`.
        #[arg(long)]
        model: PathBuf,
        /// Records: WFDB `.hea` files (or their data files), EDF/BDF, DICOM or HL7 aECG files.
        #[arg(required = true)]
        records: Vec<PathBuf>,
        /// Print the predictions as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The version line: the package version, and the test machinery compiled in, if any (a
/// shipped build has none: scripts/check-release.sh).
fn version() -> &'static str {
    let kit = ecgfed_gateway::server::TEST_KIT;
    if kit.is_empty() {
        env!("CARGO_PKG_VERSION")
    } else {
        // Built once per process, for clap, which keeps `&'static str`s.
        format!(
            "{} (test build: {}; not for deployment)",
            env!("CARGO_PKG_VERSION"),
            kit.join(", ")
        )
        .leak()
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::command()
        .version(version())
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Datasets(c) => datasets::run(c),
        Command::Keys(c) => keys::run(c),
        Command::Ledger(c) => ledger::run(c),
        Command::Gateway(c) => gateway::run(c),
        Command::Witness(c) => witness::run(c),
        Command::Audit(c) => audit::run(c),
        Command::Demo(a) => demo::run(a),
        Command::Cohort(c) => trainer::run_cohort(c),
        Command::Train {
            spec,
            out,
            device,
            federation,
            json,
            export_windows,
        } => trainer::run_train_cmd(spec, out, device, federation, json, export_windows),
        Command::Predict {
            model,
            records,
            json,
        } => trainer::run_predict(model, records, json),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
