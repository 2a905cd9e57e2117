//! `ecgfed ledger ...`: genesis, init, serve.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use ecgfed_ledger::Ledger;
use ecgfed_ledger::genesis::{GenesisFile, GenesisMember, parse_role};
use ecgfed_ledger::keys::KeyPair;

/// `ecgfed ledger` subcommands.
#[derive(Subcommand)]
pub(crate) enum LedgerCommand {
    /// Write a genesis TOML file from member key files.
    Genesis {
        /// The log's name (first line of every checkpoint).
        #[arg(long)]
        origin: String,
        /// A founding member: `ID:ROLE[:SITE]=KEYFILE` (ROLE is hospital, scientist,
        /// regulator or ledger; SITE for hospitals). Repeat for each member.
        #[arg(long = "member", required = true)]
        members: Vec<String>,
        /// Output file (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
    },
    /// Create a ledger from a genesis file: entry 0 signed by the ledger key, block 0, and the
    /// first checkpoint; writes DIR/trust.json for auditors.
    Init {
        /// Genesis TOML file.
        #[arg(long)]
        genesis: PathBuf,
        /// Data directory (RocksDB in DIR/db).
        #[arg(long)]
        data: PathBuf,
        /// The ledger member's key file (default DIR/ledger.key).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve the ledger over gRPC until SIGINT/SIGTERM (then finish running calls and commit
    /// what is queued). Prints `listening on ADDR` once ready.
    Serve {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Listen address (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:7400")]
        listen: SocketAddr,
        /// The ledger member's key file (default DIR/ledger.key).
        #[arg(long)]
        key: Option<PathBuf>,
    },
}

pub(crate) use ecgfed_ledger::trust::TrustFile;

fn key_path(data: &Path, key: Option<PathBuf>) -> PathBuf {
    key.unwrap_or_else(|| data.join("ledger.key"))
}

/// The RocksDB directory of a ledger data directory.
pub(crate) fn db_path(data: &Path) -> PathBuf {
    data.join("db")
}

/// Runs a ledger subcommand.
pub(crate) fn run(cmd: LedgerCommand) -> Result<()> {
    match cmd {
        LedgerCommand::Genesis {
            origin,
            members,
            out,
        } => genesis(origin, &members, &out),
        LedgerCommand::Init {
            genesis,
            data,
            key,
            json,
        } => {
            let g = GenesisFile::read(&genesis)?;
            let kp = KeyPair::read_file(&key_path(&data, key))?;
            std::fs::create_dir_all(&data).with_context(|| format!("{}", data.display()))?;
            let cp = Ledger::init(&db_path(&data), &g, &kp)?;
            let trust = TrustFile {
                origin: cp.origin.clone(),
                ledger_public_key: kp.public().to_hex(),
                checkpoint: cp.sign(&kp),
            };
            let tpath = data.join("trust.json");
            trust.write(&tpath)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"origin": cp.origin, "tree_size": cp.size, "root": hex::encode(cp.root), "members": g.members.len(), "trust_file": tpath.display().to_string()})
                );
            } else {
                println!(
                    "ledger {} created in {}: {} founding members, tree size {}, root {}\ntrust file for auditors: {}",
                    cp.origin,
                    data.display(),
                    g.members.len(),
                    cp.size,
                    hex::encode(cp.root),
                    tpath.display()
                );
            }
            Ok(())
        }
        LedgerCommand::Serve { data, listen, key } => {
            let kp = KeyPair::read_file(&key_path(&data, key))?;
            let rt = runtime()?;
            rt.block_on(serve(&data, listen, kp))
        }
    }
}

/// A multi-threaded tokio runtime.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn genesis(origin: String, members: &[String], out: &Path) -> Result<()> {
    let mut list = Vec::new();
    for m in members {
        let (spec, file) = m
            .split_once('=')
            .ok_or_else(|| anyhow!("--member {m:?}: expected ID:ROLE[:SITE]=KEYFILE"))?;
        let parts: Vec<&str> = spec.split(':').collect();
        let (id, role, site) = match parts.as_slice() {
            [id, role] => (*id, *role, ""),
            [id, role, site] => (*id, *role, *site),
            _ => bail!("--member {m:?}: expected ID:ROLE[:SITE]=KEYFILE"),
        };
        if parse_role(role).is_none() {
            bail!("--member {m:?}: role {role:?} is not hospital, scientist, regulator or ledger");
        }
        let kp = KeyPair::read_file(Path::new(file))?;
        list.push(GenesisMember::for_key(id, role, site, &kp));
    }
    let g = GenesisFile {
        origin,
        max_clock_skew_ms: 0,
        members: list,
    };
    let text = toml::to_string(&g)?;
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .with_context(|| format!("{}: cannot create (it must not exist)", out.display()))?;
    f.write_all(text.as_bytes())?;
    println!(
        "genesis with {} members written to {}",
        g.members.len(),
        out.display()
    );
    Ok(())
}

/// Resolves on SIGINT or SIGTERM, saying so on standard error.
pub(crate) async fn shutdown_signal(what: &'static str) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
    eprintln!("{what}: shutting down");
}

async fn serve(data: &Path, listen: SocketAddr, kp: KeyPair) -> Result<()> {
    let ledger: Arc<Ledger> = Ledger::open(&db_path(data), kp)?;
    let (listener, addr) = ecgfed_ledger::service::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let head = ledger.head();
    println!("listening on {addr}");
    eprintln!(
        "ledger {} serving {} entries in {} blocks",
        data.display(),
        head.tree_size,
        head.blocks
    );
    let shutdown = shutdown_signal("ledger");
    ecgfed_ledger::service::serve(Arc::clone(&ledger), listener, shutdown).await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let head = ledger.head();
    eprintln!(
        "ledger: stopped cleanly at {} entries, {} blocks",
        head.tree_size, head.blocks
    );
    Ok(())
}
