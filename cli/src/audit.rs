//! `ecgfed audit ...`: verification of a ledger, offline or against a live server.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use ecgfed_ledger::client::LedgerClient;
use ecgfed_ledger::store::Store;
use ecgfed_ledger::verify::{self, Report};
use indicatif::{ProgressBar, ProgressStyle};

use crate::ledger::{TrustFile, db_path, runtime};

/// `ecgfed audit` subcommands.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Verify a whole ledger: every entry signature and rule, every block link, the Merkle log
    /// against every checkpoint, the indexes. Exit status 1 and the first bad entry or block
    /// named when anything fails.
    Verify {
        /// Ledger data directory (offline check of its RocksDB store).
        #[arg(long, conflicts_with = "remote", required_unless_present = "remote")]
        data: Option<PathBuf>,
        /// Address of a running ledger (checked against --checkpoint).
        #[arg(long, requires = "checkpoint")]
        remote: Option<String>,
        /// Trust file (origin, ledger key, a checkpoint seen before), e.g. DIR/trust.json.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// After a successful remote check, save the new checkpoint into the trust file.
        #[arg(long, requires = "remote")]
        update: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs an audit subcommand.
pub fn run(cmd: AuditCommand) -> Result<()> {
    let AuditCommand::Verify {
        data,
        remote,
        checkpoint,
        update,
        json,
    } = cmd;
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} verified {pos} entries ({per_sec})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        )
    };
    let (report, what) = match (data, remote) {
        (Some(data), _) => {
            let db = db_path(&data);
            if !db.exists() {
                bail!(
                    "{}: no ledger store (expected {})",
                    data.display(),
                    db.display()
                );
            }
            let store = Store::open(&db)?;
            let r = verify::verify_store_with(&store, |n| bar.set_position(n))?;
            (r, data.display().to_string())
        }
        (None, Some(addr)) => {
            let path = checkpoint.context("--remote needs --checkpoint")?;
            let (trust, cp, key) = TrustFile::read(&path)?;
            let rt = runtime()?;
            let (r, new_note) = rt.block_on(async {
                let mut c = LedgerClient::connect(&addr, &trust.origin, key, Some(cp)).await?;
                let r = verify::verify_remote(&mut c, |n| bar.set_position(n)).await?;
                anyhow::Ok((r, c.trusted_note().map(str::to_string)))
            })?;
            if update
                && r.ok
                && let Some(note) = new_note
            {
                TrustFile {
                    checkpoint: note,
                    ..trust
                }
                .write(&path)?;
            }
            (r, addr)
        }
        (None, None) => bail!("give --data DIR or --remote ADDR --checkpoint FILE"),
    };
    bar.finish_and_clear();
    print_report(&report, &what, json)?;
    if !report.ok {
        std::process::exit(1);
    }
    Ok(())
}

fn print_report(r: &Report, what: &str, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    if r.ok {
        println!(
            "ledger {what}: OK — {} entries, {} blocks, {} checkpoints, {} members verified; root {} ({:.0} entries/s)",
            r.entries, r.blocks, r.checkpoints, r.members, r.root, r.entries_per_second
        );
    } else {
        println!("ledger {what}: FAILED — {} problems", r.problem_count);
        for p in &r.problems {
            println!("  {} {}: {}", p.what, p.at, p.reason);
        }
    }
    Ok(())
}
