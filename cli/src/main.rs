//! `ecgfed`: command line of the federated ECG data-sharing gateway. Parses arguments and
//! calls the library crates; no logic of its own beyond wiring and printing.

mod audit;
mod datasets;
mod gateway;
mod gateway_bench;
mod keys;
mod ledger;
mod ledger_bench;

use clap::{Parser, Subcommand};

/// ecgfed: federated ECG data sharing with ledger provenance.
#[derive(Parser)]
#[command(name = "ecgfed", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Site stores: ingest ECG files, summarise, inspect, count strata, benchmark readers.
    #[command(subcommand)]
    Datasets(datasets::DatasetsCommand),
    /// Member keys: BLS12-381 key pairs for ledger identities.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// The ledger: genesis, init, serve, bench.
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
    /// Gateways: serve a hospital's site store, erase a patient, strata, reserve, verified pulls.
    #[command(subcommand)]
    Gateway(gateway::GatewayCommand),
    /// Audit: verify a ledger offline or against a live server.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Datasets(c) => datasets::run(c),
        Command::Keys(c) => keys::run(c),
        Command::Ledger(c) => ledger::run(c),
        Command::Gateway(c) => gateway::run(c),
        Command::Audit(c) => audit::run(c),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
