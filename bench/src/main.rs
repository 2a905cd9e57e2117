//! `ecgfed-bench`: the load generators and benchmarks of ecgfed (bench/README.md), apart from
//! the product binary. The gateway and audit benches start `ecgfed` servers: the binary beside
//! this one, or `$ECGFED_BIN`.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use clap::{Parser, Subcommand};
use ecgfed_bench::{audit, datasets, gateway, ledger, train, witnesses};

/// ecgfed-bench: benchmarks of the ledger, gateway, audit, trainer and readers.
#[derive(Parser)]
#[command(name = "ecgfed-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The ledger's load generator: durable, signature-verified entries/s through the gRPC
    /// service, with the single-signature baseline.
    Ledger(ledger::LedgerArgs),
    /// What witnessing costs: the ledger load with 0, 3 and 16 witnesses in one run.
    Witnesses(witnesses::WitnessArgs),
    /// Verified cohort pull against a plain Flight server sending the same batches, and
    /// optionally concurrent pulls from a gateway process with its peak memory.
    Gateway(gateway::GatewayArgs),
    /// Lineage query latency over a large ledger filled through the real service.
    Audit(audit::AuditArgs),
    /// Training throughput of the tch loop against the same network in PyTorch.
    Train(train::TrainArgs),
    /// Read throughput and a full ingest, against the Python `wfdb` reader.
    Datasets(datasets::DatasetsArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Ledger(a) => ledger::command(a),
        Command::Gateway(a) => gateway::command(a),
        Command::Audit(a) => audit::command(a),
        Command::Train(a) => train::command(a),
        Command::Datasets(a) => datasets::command(a),
        Command::Witnesses(a) => witnesses::command(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
