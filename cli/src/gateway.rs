//! `ecgfed gateway ...`: run a hospital's gateway, erase a patient, and the scientist's side
//! (strata, reserve, verified pull, signature headers for plain Flight clients).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use ecgfed_gateway::client::RequestSigner;
use ecgfed_gateway::client::{GatewayClient, do_get_headers};
use ecgfed_gateway::{Gateway, GatewayConfig, GatewayError};
use ecgfed_ledger::client::{LedgerClient, Memory};
use ecgfed_ledger::keys::KeyPair;
use ecgfed_proto::v1::{ReserveSliceRequest, StrataDimension};

use crate::ledger::{runtime, shutdown_signal};

/// File in the gateway's data folder holding the address it listens on while it runs.
const ADDR_FILE: &str = "listening";

/// Gateway subcommands.
#[derive(Subcommand)]
pub(crate) enum GatewayCommand {
    /// Run a gateway (GatewayService + Arrow Flight on one port) over a site store.
    Serve {
        /// Configuration file (TOML, docs/flight.md).
        #[arg(long)]
        config: PathBuf,
        /// Where federated rounds train at this site: `cpu` or `cuda`.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Approve a cohort at this hospital's site (CohortApproved on the ledger), for a gateway
    /// whose policy sets `require_approval`. Signs with the gateway's member key.
    Approve {
        /// Configuration file of the gateway.
        #[arg(long)]
        config: PathBuf,
        /// The cohort to approve.
        #[arg(long)]
        cohort: String,
        /// Why, or under which agreement (recorded on the ledger; no patient data).
        #[arg(long, default_value = "approved by the hospital")]
        note: String,
    },
    /// Erase a patient: RecordsErased on the ledger, salt destroyed, rows deleted. Talks to the
    /// running gateway when there is one, else works on its folders directly.
    Erase {
        /// Configuration file of the gateway.
        #[arg(long)]
        config: PathBuf,
        /// Patient id as known at the site (`source/patient` when ambiguous).
        #[arg(long)]
        patient: String,
        /// Reason recorded on the ledger.
        #[arg(long, default_value = "erasure requested")]
        reason: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// k-anonymous strata of a gateway's dataset.
    Strata {
        #[command(flatten)]
        who: Caller,
        /// Dimensions: label, sex, age_band, source (default all four).
        #[arg(long, value_delimiter = ',')]
        by: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reserve this site's slice of a cohort on the ledger; prints the slice id and ticket.
    Reserve {
        #[command(flatten)]
        who: Caller,
        /// Cohort id (a CohortCreated entry on the ledger).
        #[arg(long)]
        cohort: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Pull a granted slice, verifying every row against the slice root on the ledger.
    Pull {
        #[command(flatten)]
        who: Caller,
        /// Slice id.
        #[arg(long)]
        slice: String,
        /// Ledger address.
        #[arg(long)]
        ledger: String,
        /// The ledger's trust file.
        #[arg(long)]
        trust: PathBuf,
        /// Write the verified rows to this Arrow IPC file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the signature headers of one DoGet for a plain Arrow Flight client (JSON).
    SignDoGet {
        /// Member id.
        #[arg(long)]
        member: String,
        /// Member key file.
        #[arg(long)]
        key: PathBuf,
        /// Site of the gateway the request is for (requests are signed for one gateway).
        #[arg(long)]
        site: String,
        /// Slice id.
        #[arg(long)]
        slice: String,
    },
}

/// Who calls a gateway, and where it is.
#[derive(clap::Args)]
pub(crate) struct Caller {
    /// Gateway address.
    #[arg(long)]
    gateway: String,
    /// Site of that gateway: requests are signed for it (a request signed for one gateway is
    /// refused by every other).
    #[arg(long)]
    site: String,
    /// Member id of the caller.
    #[arg(long)]
    member: String,
    /// The caller's key file.
    #[arg(long)]
    key: PathBuf,
    /// PEM certificate authority of a gateway that uses TLS (omit for plain HTTP/2).
    #[arg(long)]
    ca: Option<PathBuf>,
}

impl Caller {
    async fn client(&self) -> Result<GatewayClient> {
        let kp = KeyPair::read_file(&self.key)?;
        let signer = Arc::new(RequestSigner::new(&self.member, kp));
        Ok(match &self.ca {
            Some(ca) => {
                let pem = std::fs::read(ca).with_context(|| ca.display().to_string())?;
                GatewayClient::connect_tls(&self.gateway, &self.site, signer, &pem, None).await?
            }
            None => GatewayClient::connect(&self.gateway, &self.site, signer).await?,
        })
    }
}

fn dimension(s: &str) -> Result<StrataDimension> {
    Ok(match s {
        "label" => StrataDimension::Label,
        "sex" => StrataDimension::Sex,
        "age_band" | "age" => StrataDimension::AgeBand,
        "source" => StrataDimension::Source,
        "site" => StrataDimension::Site,
        other => bail!("unknown strata dimension {other:?} (label, sex, age_band, source, site)"),
    })
}

/// Runs a gateway subcommand.
pub(crate) fn run(cmd: GatewayCommand) -> Result<()> {
    let rt = runtime()?;
    rt.block_on(async move {
        match cmd {
            GatewayCommand::Serve { config, device } => serve(config, &device).await,
            GatewayCommand::Erase {
                config,
                patient,
                reason,
                json,
            } => erase(config, &patient, &reason, json).await,
            GatewayCommand::Approve {
                config,
                cohort,
                note,
            } => approve(config, &cohort, &note).await,
            GatewayCommand::Strata { who, by, json } => {
                let dims = by.iter().map(|d| dimension(d)).collect::<Result<Vec<_>>>()?;
                let t = who.client().await?.strata("", &dims).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&strata_json(&t))?);
                } else {
                    println!("{} (k = {}, {} finest cells suppressed)", t.dimensions.join(" × "), t.k, t.suppressed_cells);
                    for c in &t.cells {
                        println!("  {:<50} segments {:>7}  records {:>6}  patients {:>6}", c.key.join(" | "), c.segments, c.records, c.patients);
                    }
                }
                Ok(())
            }
            GatewayCommand::Reserve { who, cohort, json } => {
                let r = who
                    .client()
                    .await?
                    .reserve(ReserveSliceRequest {
                        cohort_id: cohort,
                        ..Default::default()
                    })
                    .await?;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"slice_id": r.slice_id, "ticket": String::from_utf8_lossy(&r.ticket), "rows": r.rows, "slice_root": hex::encode(&r.slice_root), "ledger_index": r.ledger_index})
                    );
                } else {
                    println!(
                        "slice {} reserved: {} rows, root {}, CohortSliceCommitted at ledger entry {}\nticket: {}",
                        r.slice_id,
                        r.rows,
                        hex::encode(&r.slice_root),
                        r.ledger_index,
                        String::from_utf8_lossy(&r.ticket)
                    );
                }
                Ok(())
            }
            GatewayCommand::Pull {
                who,
                slice,
                ledger,
                trust,
                out,
                json,
            } => pull(who, &slice, &ledger, &trust, out, json).await,
            GatewayCommand::SignDoGet {
                member,
                key,
                site,
                slice,
            } => {
                let signer = RequestSigner::new(&member, KeyPair::read_file(&key)?);
                let h = do_get_headers(&signer, &site, &slice);
                let map: serde_json::Map<String, serde_json::Value> = h
                    .iter()
                    .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"ticket": format!("{}{slice}", ecgfed_gateway::protocol::TICKET_PREFIX), "headers": map})
                );
                Ok(())
            }
        }
    })
}

fn strata_json(t: &ecgfed_proto::v1::StrataTable) -> serde_json::Value {
    serde_json::json!({
        "dimensions": t.dimensions,
        "k": t.k,
        "age_edges": t.age_edges,
        "suppressed_cells": t.suppressed_cells,
        "cells": t.cells.iter().map(|c| serde_json::json!({"key": c.key, "segments": c.segments, "records": c.records, "patients": c.patients})).collect::<Vec<_>>(),
    })
}

async fn serve(config: PathBuf, device: &str) -> Result<()> {
    let cfg = GatewayConfig::read(&config)?;
    let listen = cfg.listen;
    // The device is checked before anything starts: a gateway asked to train on CUDA without
    // one stops here.
    let trainer = ecgfed_trainer::federated::SiteTrainer::new(device)?;
    let gw = Gateway::start(cfg).await?;
    if gw.cfg.policy.allow_federated {
        gw.set_trainer(std::sync::Arc::new(trainer));
    }
    let (listener, addr) = ecgfed_ledger::service::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let c = gw.catalog();
    let reg = gw.registration();
    let addr_file = gw.cfg.data.join(ADDR_FILE);
    std::fs::write(&addr_file, addr.to_string())
        .with_context(|| format!("{}", addr_file.display()))?;
    println!("listening on {addr}");
    eprintln!(
        "gateway {}: dataset {} version {} ({} segments, {} records, root {})",
        gw.cfg.site,
        c.dataset_id,
        reg.as_ref().map(|r| r.version).unwrap_or(0),
        c.rows.len(),
        c.records,
        hex::encode(c.root)
    );
    ecgfed_gateway::server::serve(gw, listener, shutdown_signal("gateway")).await?;
    let _ = std::fs::remove_file(&addr_file);
    eprintln!("gateway: stopped");
    Ok(())
}

async fn approve(config: PathBuf, cohort: &str, note: &str) -> Result<()> {
    use ecgfed_proto::v1::{CohortApproved, entry_body::Payload};
    let cfg = GatewayConfig::read(&config)?;
    let key = KeyPair::read_file(&cfg.key_file)?;
    let memory = Memory::beside(
        cfg.data.join(ecgfed_gateway::server::LEDGER_TRUST_FILE),
        &cfg.member,
    );
    let mut ledger =
        LedgerClient::open(&cfg.ledger.address, &cfg.ledger.trust, Some(memory)).await?;
    ledger.act_as(&cfg.member, key.clone());
    let mut signer = ecgfed_ledger::entry::EntrySigner::new(&cfg.member, key);
    let r = ledger
        .submit(signer.sign(Payload::CohortApproved(CohortApproved {
            cohort_id: cohort.to_string(),
            site: cfg.site.clone(),
            note: note.to_string(),
        })))
        .await?;
    println!(
        "cohort {cohort} approved at {} by {}: CohortApproved at ledger entry {}",
        cfg.site, cfg.member, r.index
    );
    Ok(())
}

async fn erase(config: PathBuf, patient: &str, reason: &str, json: bool) -> Result<()> {
    let cfg = GatewayConfig::read(&config)?;
    let local = ecgfed_gateway::server::KeyStore::open(&cfg.data);
    let disclosures = cfg.data.join(ecgfed_gateway::server::ERASURES_DIR);
    let (segments, commitments, index) = match local {
        Ok(ks) => {
            drop(ks);
            let gw = Gateway::start(cfg).await?;
            let e = gw.erase(patient, reason).await?;
            (
                e.segments,
                e.commitments.iter().map(hex::encode).collect::<Vec<_>>(),
                e.ledger_index,
            )
        }
        Err(GatewayError::KeyStoreInUse { .. }) => {
            let kp = KeyPair::read_file(&cfg.key_file)?;
            let signer = Arc::new(RequestSigner::new(&cfg.member, kp));
            let addr = std::fs::read_to_string(cfg.data.join(ADDR_FILE))
                .unwrap_or_else(|_| cfg.listen.to_string());
            let addr = addr.trim();
            // A gateway with TLS is reached over TLS, its certificate checked against the
            // configured authority (default: its own certificate).
            let connected = match &cfg.tls {
                Some(tls) => {
                    let ca_path = tls.ca.as_ref().unwrap_or(&tls.cert);
                    let pem =
                        std::fs::read(ca_path).with_context(|| ca_path.display().to_string())?;
                    GatewayClient::connect_tls(addr, &cfg.site, signer, &pem, tls.domain.as_deref())
                        .await
                }
                None => GatewayClient::connect(addr, &cfg.site, signer).await,
            };
            let mut c =
                connected.context("the key store is in use but the gateway does not answer")?;
            let r = c.erase(patient, reason).await?;
            (
                r.segments,
                r.commitments.iter().map(hex::encode).collect(),
                r.ledger_index,
            )
        }
        Err(e) => return Err(e.into()),
    };
    // The running gateway wrote the disclosure into its own data folder, as the offline
    // erasure does.
    let disclosure = disclosures.join(format!("{index}.json"));
    if json {
        println!(
            "{}",
            serde_json::json!({"segments": segments, "commitments": commitments, "ledger_index": index, "disclosure": disclosure})
        );
    } else {
        println!(
            "erased {segments} segments; RecordsErased at ledger entry {index}; disclosure for the auditor: {}",
            disclosure.display()
        );
    }
    Ok(())
}

async fn pull(
    who: Caller,
    slice: &str,
    ledger_addr: &str,
    trust: &std::path::Path,
    out: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    let memory = Memory::for_trust_file(trust, &who.member);
    let mut ledger = LedgerClient::open(ledger_addr, trust, Some(memory)).await?;
    ledger.update_checkpoint().await?;
    let mut client = who.client().await?;
    let mut writer: Option<arrow::ipc::writer::FileWriter<std::fs::File>> = None;
    let mut werr: Option<anyhow::Error> = None;
    let pb = indicatif::ProgressBar::new_spinner();
    let report = client
        .pull(slice, &mut ledger, |b| {
            pb.set_message(format!(
                "{} rows verified",
                pb.position() + b.num_rows() as u64
            ));
            pb.inc(b.num_rows() as u64);
            if let Some(path) = &out {
                if writer.is_none() {
                    match std::fs::File::create(path)
                        .map_err(anyhow::Error::from)
                        .and_then(|f| Ok(arrow::ipc::writer::FileWriter::try_new(f, &b.schema())?))
                    {
                        Ok(w) => writer = Some(w),
                        Err(e) => werr = Some(e.context(path.display().to_string())),
                    }
                }
                if let Some(w) = writer.as_mut()
                    && let Err(e) = w.write(b)
                {
                    werr = Some(anyhow::Error::from(e));
                }
            }
        })
        .await;
    pb.finish_and_clear();
    let report = report?;
    if let Some(e) = werr {
        return Err(e);
    }
    if let Some(mut w) = writer {
        w.finish()?;
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"slice_id": report.slice_id, "rows": report.rows, "signal_bytes": report.signal_bytes, "batches": report.batches, "erased": report.erased, "slice_root": hex::encode(report.root)})
        );
    } else {
        println!(
            "slice {}: {} rows verified against root {} ({} signal bytes, {} erased since reservation)",
            report.slice_id,
            report.rows,
            hex::encode(report.root),
            report.signal_bytes,
            report.erased
        );
    }
    Ok(())
}
