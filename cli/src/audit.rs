//! `ecgfed audit ...`: verification of a ledger (offline or against a live server), lineage
//! queries, PROV / OpenLineage exports, proof bundles and their offline check, HTML reports.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ecgfed_audit::disclosure::Disclosures;
use ecgfed_audit::lineage::{self, Target};
use ecgfed_audit::source::{LedgerSource, RemoteSource, StoreSource};
use ecgfed_audit::{bundle, export, report};
use ecgfed_ledger::client::{LedgerClient, Memory};
use ecgfed_ledger::store::Store;
use ecgfed_ledger::verify::{self, Report};
use indicatif::{ProgressBar, ProgressStyle};

use crate::ledger::{TrustFile, db_path, runtime};

/// Who a regulator's commands are, in trust state file names and evidence.
const AUDITOR: &str = "auditor";

/// `ecgfed audit` subcommands.
#[derive(Subcommand)]
pub(crate) enum AuditCommand {
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
    /// Lineage: a model down to its cohort, slices, transfers, dataset versions and sites (with
    /// erasures since), or every cohort and model that used a site, dataset or record, or data
    /// erased afterwards. No depth or node cap; usage answers stream as they are found.
    Lineage {
        #[command(flatten)]
        ledger: LedgerArgs,
        #[command(flatten)]
        target: TargetArgs,
        /// JSON: one object for --model; JSON Lines (one object per cohort) otherwise.
        #[arg(long)]
        json: bool,
    },
    /// Export provenance as W3C PROV-JSON or OpenLineage run events (JSON Lines).
    Export {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// `prov-json` or `openlineage`.
        #[arg(long)]
        format: String,
        /// Only this model's lineage (default: every model on the ledger).
        #[arg(long)]
        model: Option<String>,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write a model's proof bundle: its lineage entries, their inclusion proofs, a signed
    /// checkpoint and the member keys (verify offline with `verify-bundle`).
    Bundle {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// Model id.
        #[arg(long)]
        model: String,
        /// Bundle file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a proof bundle offline (no server). Exit status 1 when it fails.
    VerifyBundle {
        /// The bundle file.
        file: PathBuf,
        /// Trust file whose ledger key the bundle must be signed by.
        #[arg(long)]
        trust: Option<PathBuf>,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the HTML audit report of a model (index.html) and its proof bundle
    /// (bundle.json) into a folder.
    Report {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// Model id.
        #[arg(
            long,
            required_unless_present = "model_from",
            conflicts_with = "model_from"
        )]
        model: Option<String>,
        /// Model folder written by `ecgfed train` (its model-card.json names the model).
        #[arg(long)]
        model_from: Option<PathBuf>,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Show the evidence of a split view: pairs of checkpoints signed by the ledger key that
    /// cannot both be true, as gateways, trainers, auditors and witnesses recorded them. Each
    /// is re-checked against the trust file's ledger key. Exit status 1 when any holds.
    Evidence {
        /// Evidence folder(s) (default: `evidence/` beside the trust file). Repeatable.
        #[arg(long = "dir")]
        dirs: Vec<PathBuf>,
        /// Trust file of the ledger (its key checks the signatures).
        #[arg(long)]
        trust: PathBuf,
        /// Also write every piece of evidence that holds into this JSON file.
        #[arg(long)]
        export: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Where the ledger is: a data directory read offline, or a running ledger.
#[derive(Args, Clone)]
pub(crate) struct LedgerArgs {
    /// Ledger data directory (offline; the ledger must not be running on it).
    #[arg(long, conflicts_with = "remote", required_unless_present = "remote")]
    pub data: Option<PathBuf>,
    /// Address of a running ledger (every entry proven against --checkpoint).
    #[arg(long, requires = "checkpoint")]
    pub remote: Option<String>,
    /// Trust file of the ledger (origin, key, a checkpoint seen before).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Erasure disclosure(s) a hospital handed over (files, or folders of `*.json`, such as
    /// a gateway's `erasures/` folder); each is checked against the ledger. Repeatable.
    #[arg(long = "disclosures")]
    pub disclosures: Vec<PathBuf>,
}

/// What a lineage query is about (exactly one).
#[derive(Args, Clone)]
#[group(required = true, multiple = false)]
pub(crate) struct TargetArgs {
    /// A model: its full lineage.
    #[arg(long)]
    pub model: Option<String>,
    /// A site: every cohort and model that used it.
    #[arg(long)]
    pub site: Option<String>,
    /// A dataset id: every cohort and model that used any version of it.
    #[arg(long)]
    pub dataset: Option<String>,
    /// A record commitment (64 hex digits): every cohort and model that used it.
    #[arg(long)]
    pub record: Option<String>,
    /// Every model trained on records erased afterwards.
    #[arg(long)]
    pub erased: bool,
}

/// Opens the ledger source the arguments name.
pub(crate) async fn open_source(a: &LedgerArgs) -> Result<LedgerSource> {
    if let Some(data) = &a.data {
        let db = db_path(data);
        if !db.exists() {
            bail!(
                "{}: no ledger store (expected {})",
                data.display(),
                db.display()
            );
        }
        return Ok(LedgerSource::Store(StoreSource::open(&db)?));
    }
    let (addr, path) = match (&a.remote, &a.checkpoint) {
        (Some(a), Some(p)) => (a, p),
        _ => bail!("give --data DIR or --remote ADDR --checkpoint FILE"),
    };
    let key = TrustFile::read(path)?.2;
    let mut c = LedgerClient::open(addr, path, Some(Memory::for_trust_file(path, AUDITOR))).await?;
    c.update_checkpoint().await?;
    Ok(LedgerSource::Remote(Box::new(RemoteSource::new(c, key))))
}

/// Runs an audit subcommand.
pub(crate) fn run(cmd: AuditCommand) -> Result<()> {
    match cmd {
        AuditCommand::Verify {
            data,
            remote,
            checkpoint,
            update,
            json,
        } => verify_ledger(data, remote, checkpoint, update, json),
        AuditCommand::Lineage {
            ledger,
            target,
            json,
        } => runtime()?.block_on(lineage_cmd(&ledger, &target, json)),
        AuditCommand::Export {
            ledger,
            format,
            model,
            out,
        } => runtime()?.block_on(export_cmd(
            &ledger,
            &format,
            model.as_deref(),
            out.as_deref(),
        )),
        AuditCommand::Bundle { ledger, model, out } => runtime()?.block_on(async {
            let mut src = open_source(&ledger).await?;
            let b = bundle::build(&mut src, &model).await?;
            write_file(&out, &b.to_bytes())?;
            println!(
                "bundle of model {model}: {} entries with inclusion proofs, {} member keys → {}",
                b.entries.len(),
                b.members.len(),
                out.display()
            );
            Ok(())
        }),
        AuditCommand::Evidence {
            dirs,
            trust,
            export,
            json,
        } => evidence_cmd(&dirs, &trust, export.as_deref(), json),
        AuditCommand::VerifyBundle { file, trust, json } => {
            verify_bundle(&file, trust.as_deref(), json)
        }
        AuditCommand::Report {
            ledger,
            model,
            model_from,
            out,
        } => {
            let model = match (model, model_from) {
                (Some(m), _) => m,
                (None, Some(dir)) => model_id_of(&dir)?,
                (None, None) => bail!("give --model ID or --model-from DIR"),
            };
            let (path, verified) = runtime()?.block_on(write_report(&ledger, &model, &out))?;
            match verified {
                Ok(v) if v.witness_quorum > 0 => println!(
                    "report of model {model}: {} (checkpoint of size {} cosigned by {})",
                    path.display(),
                    v.tree_size,
                    v.cosigners.join(", ")
                ),
                _ => println!("report of model {model}: {}", path.display()),
            }
            Ok(())
        }
    }
}

/// The model id in a model folder's model-card.json.
pub(crate) fn model_id_of(dir: &Path) -> Result<String> {
    let p = dir.join("model-card.json");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", p.display()))?;
    v["model_id"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("{}: no model_id", p.display()))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Writes `DIR/index.html` and `DIR/bundle.json` for `model`; returns the page's path.
pub(crate) async fn write_report(
    ledger: &LedgerArgs,
    model: &str,
    out: &Path,
) -> Result<(PathBuf, std::result::Result<bundle::Verified, String>)> {
    let mut src = open_source(ledger).await?;
    let b = bundle::build(&mut src, model).await?;
    let bytes = b.to_bytes();
    let verified = bundle::verify(&bytes, None).map_err(|e| e.to_string());
    let now = ecgfed_audit::source::rfc3339(ecgfed_ledger::entry::now_ms());
    let html = report::render(&b.lineage, &verified, &b.checkpoint, &now);
    write_file(&out.join("bundle.json"), &bytes)?;
    let page = out.join("index.html");
    write_file(&page, html.as_bytes())?;
    Ok((page, verified))
}

fn verify_bundle(file: &Path, trust: Option<&Path>, json: bool) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let key = match trust {
        Some(t) => Some(TrustFile::read(t)?.2),
        None => None,
    };
    match bundle::verify(&bytes, key.as_ref()) {
        Ok(v) => {
            if json {
                println!("{}", serde_json::json!({"ok": true, "verified": v}));
            } else {
                println!(
                    "bundle {}: OK — model {} — {} entries proven in the signed tree of size {} (root {}){}, signatures checked; sites {}; datasets {}; slices {}{}{}",
                    file.display(),
                    v.model_id,
                    v.entries,
                    v.tree_size,
                    v.root,
                    if v.witness_quorum > 0 {
                        format!(
                            ", cosigned by {} (quorum {})",
                            v.cosigners.join(", "),
                            v.witness_quorum
                        )
                    } else {
                        String::new()
                    },
                    v.sites.join(", "),
                    v.datasets.join(", "),
                    v.slices.join(", "),
                    if v.erasures {
                        "; records erased since"
                    } else {
                        ""
                    },
                    if key.is_none() {
                        " (ledger key taken from the bundle: pin it with --trust)"
                    } else {
                        ""
                    }
                );
            }
            Ok(())
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "error": e.to_string()})
                );
            } else {
                eprintln!("bundle {}: FAILED — {e}", file.display());
            }
            std::process::exit(1);
        }
    }
}

async fn lineage_cmd(ledger: &LedgerArgs, t: &TargetArgs, json: bool) -> Result<()> {
    let mut src = open_source(ledger).await?;
    let disclosures = Disclosures::load(&mut src, &ledger.disclosures).await?;
    let mut out = std::io::stdout().lock();
    if let Some(model) = &t.model {
        let l = lineage::model_lineage(&mut src, model, &disclosures).await?;
        if json {
            writeln!(out, "{}", serde_json::to_string_pretty(&l)?)?;
        } else {
            print_tree(&l, &mut out)?;
        }
        return Ok(());
    }
    let n = if t.erased {
        lineage::erased(&mut src, &disclosures, |u| {
            if json {
                writeln!(out, "{}", serde_json::to_string(&u).unwrap_or_default())
            } else {
                writeln!(
                    out,
                    "erasure at entry {} ({}): {} record(s) of {} erased, {} of them in cohort {}",
                    u.erasure.entry.index,
                    u.erasure.entry.time,
                    u.erasure.erased,
                    u.erasure.site,
                    u.erasure.in_slice,
                    u.usage.cohort_id
                )
                .and_then(|_| print_usage_models(&u.usage, &mut out))
            }
            .map_err(|e| ecgfed_audit::AuditError::io(Path::new("standard output"), e))
        })
        .await?
    } else {
        let target = if let Some(s) = &t.site {
            Target::Site(s.clone())
        } else if let Some(d) = &t.dataset {
            Target::Dataset(d.clone())
        } else if let Some(r) = &t.record {
            Target::Record(r.to_ascii_lowercase())
        } else {
            bail!("give --model, --site, --dataset, --record or --erased");
        };
        lineage::usage(&mut src, &target, |u| {
            if json {
                writeln!(out, "{}", serde_json::to_string(&u).unwrap_or_default())
            } else {
                writeln!(
                    out,
                    "cohort {} (entry {}, requester {}): {}",
                    u.cohort_id,
                    u.created
                        .as_ref()
                        .map(|c| c.index.to_string())
                        .unwrap_or("?".into()),
                    u.requester,
                    u.purpose
                )
                .and_then(|_| {
                    for s in &u.slices {
                        writeln!(
                            out,
                            "  slice {} (entry {}): {} rows from {} at {}",
                            s.slice_id, s.entry.index, s.rows, s.dataset_id, s.site
                        )?;
                    }
                    print_usage_models(&u, &mut out)
                })
            }
            .map_err(|e| ecgfed_audit::AuditError::io(Path::new("standard output"), e))
        })
        .await?
    };
    if !json {
        writeln!(out, "{n} cohort(s) found")?;
    }
    Ok(())
}

fn print_usage_models(u: &lineage::Usage, out: &mut impl std::io::Write) -> std::io::Result<()> {
    if u.models.is_empty() {
        return writeln!(out, "  no model trained on it");
    }
    for m in &u.models {
        writeln!(
            out,
            "  model {} (entry {}, {})",
            m.model_id, m.entry.index, m.entry.time
        )?;
    }
    Ok(())
}

fn print_tree(l: &lineage::ModelLineage, out: &mut impl std::io::Write) -> std::io::Result<()> {
    writeln!(
        out,
        "model {} (entry {}, {}, by {}; weights {}; code {})",
        l.model.model_id,
        l.model.entry.index,
        l.model.entry.time,
        l.model.entry.signer,
        l.model.weights_sha256,
        l.model.code_version
    )?;
    let c = &l.cohort;
    writeln!(
        out,
        "└─ cohort {} (entry {}, {}, requester {}, seed {}): {}",
        c.cohort_id, c.entry.index, c.entry.time, c.requester, c.seed, c.purpose
    )?;
    for (i, s) in l.slices.iter().enumerate() {
        let last = i + 1 == l.slices.len();
        let (branch, pipe) = if last {
            ("└─", "   ")
        } else {
            ("├─", "│  ")
        };
        writeln!(
            out,
            "   {branch} slice {} (entry {}, {}): {} rows, root {}",
            s.slice_id, s.entry.index, s.entry.time, s.rows, s.slice_root
        )?;
        writeln!(
            out,
            "   {pipe}  ├─ dataset {} v{} at site {} (hospital {})",
            s.dataset_id, s.dataset_version, s.site, s.entry.signer
        )?;
        for d in &s.served {
            writeln!(
                out,
                "   {pipe}  ├─ served to {} (entry {}, {}): {} rows, {} bytes",
                d.requester, d.entry.index, d.entry.time, d.rows, d.bytes
            )?;
        }
        if s.erased_since.is_empty() {
            writeln!(out, "   {pipe}  └─ no erasure since")?;
        }
        for e in &s.erased_since {
            writeln!(
                out,
                "   {pipe}  └─ ERASED since: entry {} ({}): {} of the slice's records ({})",
                e.entry.index, e.entry.time, e.in_slice, e.reason
            )?;
        }
    }
    writeln!(
        out,
        "sites: {}",
        l.sites
            .iter()
            .map(|s| format!("{} ({} rows)", s.site, s.rows))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    print_rounds(l, out)
}

/// A federated model's rounds: per round, the sites, their rows and entries.
fn print_rounds(l: &lineage::ModelLineage, out: &mut impl std::io::Write) -> std::io::Result<()> {
    if l.model.mode != "federated" {
        return Ok(());
    }
    writeln!(
        out,
        "federated: {} round entries; no row left a site (rounds trained at the gateways)",
        l.rounds.len()
    )?;
    let mut by_round: std::collections::BTreeMap<u32, Vec<&lineage::RoundNode>> =
        std::collections::BTreeMap::new();
    for r in &l.rounds {
        by_round.entry(r.round).or_default().push(r);
    }
    for p in &l.privacy {
        writeln!(
            out,
            "  differential privacy at {}: (ε = {}, δ = {:e}) over {} rounds, {} DP-SGD steps (clip {}, σ {})",
            p.site,
            p.epsilon
                .map_or("unbounded".to_string(), |e| format!("{e:.3}")),
            p.delta,
            p.rounds,
            p.steps,
            p.clip_norm,
            p.noise_multiplier
        )?;
    }
    for (round, rs) in by_round {
        let rows: u64 = rs.iter().map(|r| r.rows).sum();
        writeln!(
            out,
            "  round {round} (attempt {}): {rows} rows; {}",
            rs.first().map_or(0, |r| r.attempt),
            rs.iter()
                .map(|r| format!(
                    "{} {} rows (entry {}, update {})",
                    r.site,
                    r.rows,
                    r.entry.index,
                    &r.update_sha256[..16.min(r.update_sha256.len())]
                ))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    Ok(())
}

async fn export_cmd(
    ledger: &LedgerArgs,
    format: &str,
    model: Option<&str>,
    out: Option<&Path>,
) -> Result<()> {
    let mut src = open_source(ledger).await?;
    let models = match model {
        Some(m) => vec![m.to_string()],
        None => export::model_ids(&mut src).await?,
    };
    let disclosures = Disclosures::load(&mut src, &ledger.disclosures).await?;
    let mut lineages = Vec::with_capacity(models.len());
    for m in &models {
        lineages.push(lineage::model_lineage(&mut src, m, &disclosures).await?);
    }
    let text = match format {
        "prov-json" => serde_json::to_string_pretty(&export::prov_json(&lineages))? + "\n",
        "openlineage" => export::openlineage(&lineages)
            .iter()
            .map(|e| serde_json::to_string(e).map(|s| s + "\n"))
            .collect::<Result<String, _>>()?,
        other => bail!("unknown export format {other:?} (prov-json or openlineage)"),
    };
    match out {
        Some(p) => {
            write_file(p, text.as_bytes())?;
            eprintln!(
                "{} model lineage(s) exported as {format} → {}",
                lineages.len(),
                p.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}

fn verify_ledger(
    data: Option<PathBuf>,
    remote: Option<String>,
    checkpoint: Option<PathBuf>,
    update: bool,
    json: bool,
) -> Result<()> {
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
            let (trust, _, _) = TrustFile::read(&path)?;
            let rt = runtime()?;
            let (r, new_note) = rt.block_on(async {
                let mut c =
                    LedgerClient::open(&addr, &path, Some(Memory::for_trust_file(&path, AUDITOR)))
                        .await?;
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

fn evidence_cmd(dirs: &[PathBuf], trust: &Path, export: Option<&Path>, json: bool) -> Result<()> {
    use ecgfed_ledger::evidence::Evidence;
    let (_, _, key) = TrustFile::read(trust)?;
    let dirs = if dirs.is_empty() {
        vec![trust.parent().unwrap_or(Path::new(".")).join("evidence")]
    } else {
        dirs.to_vec()
    };
    let mut held = Vec::new();
    let mut lines = Vec::new();
    for dir in &dirs {
        for path in Evidence::list(dir)? {
            let e = match Evidence::read(&path) {
                Ok(e) => e,
                Err(err) => {
                    eprintln!("{err}");
                    continue;
                }
            };
            match e.check(&key) {
                Ok((a, b)) => {
                    let show = |c: &ecgfed_ledger::checkpoint::Checkpoint| serde_json::json!({"size": c.size, "root": hex::encode(c.root), "timestamp_ms": c.timestamp_ms});
                    lines.push(serde_json::json!({
                        "file": path.display().to_string(),
                        "kind": e.kind,
                        "detected_by": e.detected_by,
                        "source": e.source,
                        "detected_at_ms": e.detected_at_ms,
                        "first": show(&a),
                        "second": show(&b),
                    }));
                    if !json {
                        println!(
                            "{}: {} found by {} (from {}): size {} root {} vs size {} root {}, both signed by the ledger key\n--- first\n{}--- second\n{}",
                            path.display(),
                            e.kind,
                            e.detected_by,
                            e.source,
                            a.size,
                            hex::encode(a.root),
                            b.size,
                            hex::encode(b.root),
                            e.first,
                            e.second
                        );
                    }
                    held.push(e);
                }
                Err(err) => {
                    eprintln!("{}: {err}", path.display());
                }
            }
        }
    }
    if json {
        println!("{}", serde_json::json!({"evidence": lines}));
    } else if held.is_empty() {
        println!(
            "no evidence of conflicting checkpoints in {}",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(out) = export {
        write_file(
            out,
            (serde_json::to_string_pretty(&held)? + "\n").as_bytes(),
        )?;
    }
    if !held.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
