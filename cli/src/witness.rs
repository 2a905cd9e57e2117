//! `ecgfed witness serve`: a standalone witness (a regulator's; every gateway is one too).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Subcommand;
use ecgfed_ledger::keys::KeyPair;
use ecgfed_ledger::trust::TrustFile;
use ecgfed_ledger::witness::Cosigner;

use crate::ledger::{runtime, shutdown_signal};

/// `ecgfed witness` subcommands.
#[derive(Subcommand)]
pub(crate) enum WitnessCommand {
    /// Cosign the ledger's checkpoints until SIGINT/SIGTERM: each only after checking the
    /// ledger's signature and a consistency proof from the last one cosigned, kept in
    /// DIR/witness.json. Prints `listening on ADDR` once ready.
    Serve {
        /// This witness's member id (a witness of the genesis).
        #[arg(long)]
        member: String,
        /// Its member key file.
        #[arg(long)]
        key: PathBuf,
        /// The ledger's trust file: origin, key, and the checkpoint a new witness starts from.
        #[arg(long)]
        trust: PathBuf,
        /// State folder (witness.json, evidence/).
        #[arg(long)]
        data: PathBuf,
        /// Listen address (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:7500")]
        listen: SocketAddr,
    },
}

/// Runs a witness subcommand.
pub(crate) fn run(cmd: WitnessCommand) -> Result<()> {
    match cmd {
        WitnessCommand::Serve {
            member,
            key,
            trust,
            data,
            listen,
        } => {
            let kp = KeyPair::read_file(&key)?;
            let (t, _, ledger_key) = TrustFile::read(&trust)?;
            std::fs::create_dir_all(&data).with_context(|| format!("{}", data.display()))?;
            let cosigner = Cosigner::open(
                &data.join("witness.json"),
                &member,
                kp,
                &t.origin,
                ledger_key,
                &t.checkpoint,
            )?;
            let held = cosigner.held_size();
            runtime()?.block_on(async move {
                let (listener, addr) = ecgfed_ledger::service::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                println!("listening on {addr}");
                eprintln!("witness {member} of {}: holds size {held}", t.origin);
                ecgfed_ledger::witness::serve(
                    Arc::new(cosigner),
                    listener,
                    shutdown_signal("witness"),
                )
                .await?;
                anyhow::Ok(())
            })
        }
    }
}
