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
        /// The witnesses that cosign checkpoints (member ids, hospitals or regulators; repeat).
        /// Default: every hospital.
        #[arg(long = "witness")]
        witnesses: Vec<String>,
        /// Cosignatures a checkpoint needs (more than half of the witnesses; default: a
        /// strict majority).
        #[arg(long)]
        witness_quorum: Option<u32>,
        /// An unwitnessed ledger: its own signature is the only one on a checkpoint.
        #[arg(long, conflicts_with_all = ["witnesses", "witness_quorum"])]
        no_witnesses: bool,
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
        /// The certificate (PEM) of the authority that issued the ledger's TLS certificate
        /// (for a self-signed one, that certificate): written into trust.json, so that every
        /// client of that trust file reaches the ledger over TLS only.
        #[arg(long)]
        tls_ca: Option<PathBuf>,
        /// The name the ledger's certificate is issued for, when not its address's host.
        #[arg(long, requires = "tls_ca")]
        tls_domain: Option<String>,
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
        /// A witness to ask for cosignatures: `ID=HOST:PORT` (a gateway's address, or an
        /// `ecgfed witness serve`). Repeat for each witness of the genesis.
        #[arg(long = "witness")]
        witnesses: Vec<ecgfed_ledger::WitnessPeer>,
        /// Serve TLS only, with this certificate chain (PEM); clients find the authority in
        /// their trust file (`ecgfed ledger init --tls-ca`).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The TLS private key (PEM, mode 0600).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Reach the witnesses over TLS, trusting the certificate authorities in this PEM file
        /// (gateways with `[tls]`: their certificates, or the authority that issued them).
        #[arg(long)]
        witness_ca: Option<PathBuf>,
        /// The name the witnesses' certificates are issued for, when not their address's host.
        #[arg(long, requires = "witness_ca")]
        witness_domain: Option<String>,
        /// Entries one member may have in flight at once (a stream waits for room; a single
        /// submission beyond it is refused).
        #[arg(long, default_value_t = ecgfed_ledger::gate::Limits::default().inflight_per_member)]
        max_in_flight: usize,
        /// Streams (subject queries, block watches, waits for a witnessed checkpoint) one
        /// member, or one address without a call token, may have open at once.
        #[arg(long, default_value_t = ecgfed_ledger::gate::Limits::default().streams_per_peer)]
        max_streams: usize,
    },
    /// Revoke a member (MemberRevoked): approved by a majority of the hospitals, whose
    /// signatures are aggregated into one; from then on the ledger, every gateway and every
    /// client refuse the member. Prints the entry's index.
    Revoke {
        /// Address of the ledger.
        #[arg(long)]
        ledger: String,
        /// The ledger's trust file.
        #[arg(long)]
        trust: PathBuf,
        /// The member to revoke.
        #[arg(long)]
        member: String,
        /// Why (recorded on the ledger; no patient data).
        #[arg(long, default_value = "revoked by the hospitals")]
        reason: String,
        /// The hospital (or ledger member) submitting the entry: `ID=KEYFILE`.
        #[arg(long)]
        signer: String,
        /// An approving hospital, `ID=KEYFILE` (signs here) or `ID:HEX` (a signature made with
        /// `ecgfed ledger approve-revocation`). Repeat: a strict majority of the hospitals.
        #[arg(long = "approver", required = true)]
        approvers: Vec<String>,
    },
    /// Sign one hospital's approval of a revocation (hex on standard output), for `ecgfed ledger
    /// revoke --approver ID:HEX` run by someone else.
    ApproveRevocation {
        /// The ledger's trust file (its origin is signed).
        #[arg(long)]
        trust: PathBuf,
        /// The member to revoke.
        #[arg(long)]
        member: String,
        /// The approving hospital's key file.
        #[arg(long)]
        key: PathBuf,
    },
    /// Copy and verify a whole ledger (entries, blocks, witnessed checkpoints), follow it
    /// live, and serve its read RPCs until SIGINT/SIGTERM. Its DIR/db restores a lost ledger
    /// (docs/ledger.md, "Mirrors"). Prints `listening on ADDR` once ready.
    Mirror {
        /// The ledger (or another mirror) to copy.
        #[arg(long)]
        from: String,
        /// The ledger's trust file (origin and key every block is checked against).
        #[arg(long)]
        trust: PathBuf,
        /// The mirror's folder (RocksDB in DIR/db, as a ledger's).
        #[arg(long)]
        data: PathBuf,
        /// Listen address for the read RPCs (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:7401")]
        listen: SocketAddr,
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
            witnesses,
            witness_quorum,
            no_witnesses,
            out,
        } => genesis(
            origin,
            &members,
            Witnesses {
                ids: witnesses,
                quorum: witness_quorum,
                none: no_witnesses,
            },
            &out,
        ),
        LedgerCommand::Init {
            genesis,
            data,
            key,
            tls_ca,
            tls_domain,
            json,
        } => {
            let tls_ca = match &tls_ca {
                Some(p) => {
                    Some(std::fs::read_to_string(p).with_context(|| p.display().to_string())?)
                }
                None => None,
            };
            let g = GenesisFile::read(&genesis)?;
            let kp = KeyPair::read_file(&key_path(&data, key))?;
            std::fs::create_dir_all(&data).with_context(|| format!("{}", data.display()))?;
            let cp = Ledger::init(&db_path(&data), &g, &kp)?;
            let trust = TrustFile {
                origin: cp.origin.clone(),
                ledger_public_key: kp.public().to_hex(),
                checkpoint: cp.sign(&kp),
                distrusted: None,
                tls_ca,
                tls_domain,
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
        LedgerCommand::Serve {
            data,
            listen,
            key,
            witnesses,
            witness_ca,
            witness_domain,
            max_in_flight,
            max_streams,
            tls_cert,
            tls_key,
        } => {
            let server_tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(ecgfed_ledger::service::server_tls(&cert, &key)?),
                _ => None,
            };
            let kp = KeyPair::read_file(&key_path(&data, key))?;
            let tls = match witness_ca {
                Some(p) => Some(ecgfed_ledger::WitnessTls {
                    ca_pem: std::fs::read(&p).with_context(|| p.display().to_string())?,
                    domain: witness_domain,
                }),
                None => None,
            };
            let limits = ecgfed_ledger::gate::Limits {
                inflight_per_member: max_in_flight.max(1),
                streams_per_peer: max_streams.max(1),
                ..Default::default()
            };
            let rt = runtime()?;
            rt.block_on(serve(
                &data, listen, kp, &witnesses, tls, limits, server_tls,
            ))
        }
        LedgerCommand::Revoke {
            ledger,
            trust,
            member,
            reason,
            signer,
            approvers,
        } => runtime()?.block_on(revoke(
            &ledger, &trust, &member, &reason, &signer, &approvers,
        )),
        LedgerCommand::ApproveRevocation { trust, member, key } => {
            let (t, _, _) = TrustFile::read(&trust)?;
            let kp = KeyPair::read_file(&key)?;
            let msg = ecgfed_ledger::state::revocation_message(&t.origin, &member);
            println!("{}", hex::encode(kp.sign(&msg).to_bytes()));
            Ok(())
        }
        LedgerCommand::Mirror {
            from,
            trust,
            data,
            listen,
        } => runtime()?.block_on(mirror(&from, &trust, &data, listen)),
    }
}

/// A multi-threaded tokio runtime.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The witnesses asked for on the command line.
struct Witnesses {
    ids: Vec<String>,
    quorum: Option<u32>,
    none: bool,
}

fn genesis(origin: String, members: &[String], w: Witnesses, out: &Path) -> Result<()> {
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
    let witnesses = if w.none {
        Vec::new()
    } else if w.ids.is_empty() {
        list.iter()
            .filter(|m| m.role == "hospital")
            .map(|m| m.id.clone())
            .collect()
    } else {
        w.ids
    };
    let witness_quorum = match (witnesses.len(), w.quorum) {
        (0, _) => 0,
        (_, Some(q)) => q,
        (n, None) => ecgfed_ledger::genesis::majority(n),
    };
    let g = GenesisFile {
        origin,
        max_clock_skew_ms: 0,
        witnesses,
        witness_quorum,
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
        "genesis with {} members written to {}; witnesses: {}",
        g.members.len(),
        out.display(),
        if g.witnesses.is_empty() {
            "none".to_string()
        } else {
            format!("{} (quorum {})", g.witnesses.join(", "), g.witness_quorum)
        }
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

async fn serve(
    data: &Path,
    listen: SocketAddr,
    kp: KeyPair,
    witnesses: &[ecgfed_ledger::WitnessPeer],
    tls: Option<ecgfed_ledger::WitnessTls>,
    limits: ecgfed_ledger::gate::Limits,
    server_tls: Option<ecgfed_ledger::service::ServerTls>,
) -> Result<()> {
    let ledger: Arc<Ledger> = Ledger::open(&db_path(data), kp)?;
    ledger.start_witnessing_with(witnesses, tls)?;
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
    ecgfed_ledger::service::serve_tls(Arc::clone(&ledger), listener, limits, server_tls, shutdown)
        .await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let head = ledger.head();
    eprintln!(
        "ledger: stopped cleanly at {} entries, {} blocks",
        head.tree_size, head.blocks
    );
    Ok(())
}

async fn mirror(from: &str, trust: &Path, data: &Path, listen: SocketAddr) -> Result<()> {
    use ecgfed_ledger::mirror::{self, MirrorError};
    let (t, _, key) = TrustFile::read(trust)?;
    std::fs::create_dir_all(data).with_context(|| format!("{}", data.display()))?;
    let tls = t.tls();
    let mut src = mirror::connect(from, tls.as_ref()).await?;
    let ledger = mirror::open(&db_path(data), &mut src, from, &t.origin, &key).await?;
    let (listener, addr) = ecgfed_ledger::service::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!("listening on {addr}");
    eprintln!(
        "mirror of {} from {from}: holds {} entries",
        t.origin,
        ledger.head().tree_size
    );
    let (l, from) = (Arc::clone(&ledger), from.to_string());
    let follower = tokio::spawn(async move {
        let mut src = Some(src);
        loop {
            let client = match src.take() {
                Some(c) => c,
                None => match mirror::connect(&from, tls.as_ref()).await {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("mirror: {e}; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                },
            };
            match mirror::follow(Arc::clone(&l), client, from.clone()).await {
                Err(MirrorError::Source { reason, .. }) => {
                    eprintln!("mirror: source {from}: {reason}; reconnecting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return e,
                Ok(()) => {}
            }
        }
    });
    let served = ecgfed_ledger::service::serve(
        Arc::clone(&ledger),
        listener,
        async {
            tokio::select! {
                _ = shutdown_signal("mirror") => {}
                _ = async { while !follower.is_finished() { tokio::time::sleep(Duration::from_millis(200)).await; } } => {}
            }
        },
    )
    .await;
    ledger.shutdown();
    served?;
    if follower.is_finished() {
        let e = follower.await?;
        return Err(anyhow::Error::new(e).context("the mirror stopped following"));
    }
    follower.abort();
    eprintln!(
        "mirror: stopped at {} entries, {} blocks",
        ledger.head().tree_size,
        ledger.head().blocks
    );
    Ok(())
}

/// `ID=KEYFILE` → (id, key pair).
fn member_key(spec: &str) -> Result<(String, KeyPair)> {
    let (id, file) = spec
        .split_once('=')
        .ok_or_else(|| anyhow!("{spec:?}: expected ID=KEYFILE"))?;
    Ok((id.to_string(), KeyPair::read_file(Path::new(file))?))
}

async fn revoke(
    addr: &str,
    trust: &Path,
    member: &str,
    reason: &str,
    signer: &str,
    approvers: &[String],
) -> Result<()> {
    use ecgfed_ledger::keys::Signature;
    use ecgfed_proto::v1::{MemberRevoked, entry_body::Payload};
    let (t, _, _) = TrustFile::read(trust)?;
    let msg = ecgfed_ledger::state::revocation_message(&t.origin, member);
    let mut ids = Vec::new();
    let mut sigs = Vec::new();
    for a in approvers {
        if let Some((id, hexsig)) = a.split_once(':').filter(|_| !a.contains('=')) {
            let sig = Signature::from_bytes(
                &hex::decode(hexsig).with_context(|| format!("--approver {id}: not hex"))?,
            )
            .with_context(|| format!("--approver {id}"))?;
            ids.push(id.to_string());
            sigs.push(sig);
        } else {
            let (id, kp) = member_key(a)?;
            ids.push(id);
            sigs.push(kp.sign(&msg));
        }
    }
    let aggregate = Signature::aggregate(&sigs)?;
    let (signer_id, signer_key) = member_key(signer)?;
    let mut es = ecgfed_ledger::entry::EntrySigner::new(&signer_id, signer_key.clone());
    let entry = es.sign(Payload::MemberRevoked(MemberRevoked {
        member_id: member.to_string(),
        approvers: ids.clone(),
        approval_signature: aggregate.to_bytes(),
        reason: reason.to_string(),
    }));
    let memory = ecgfed_ledger::client::Memory::for_trust_file(trust, &signer_id);
    let mut c = ecgfed_ledger::client::LedgerClient::open(addr, trust, Some(memory)).await?;
    c.act_as(&signer_id, signer_key);
    let r = c.submit(entry).await?;
    println!(
        "member {member} revoked (approved by {}): MemberRevoked at ledger entry {}",
        ids.join(", "),
        r.index
    );
    Ok(())
}
