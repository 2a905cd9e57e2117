//! `ecgfed demo`: the whole federation on one machine, from nothing — keys, genesis, a ledger,
//! three hospital gateways over the embedded sample (separate processes on loopback), a
//! balanced cohort trained briefly, the ledger verified, the audit report written — then a
//! clean shutdown (also on Ctrl-C). `ecgfed demo setup` prepares the same state for the
//! docker-compose topology (deploy/). Every step runs the same `ecgfed` subcommands a person
//! would; this module only wires them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ecgfed_testkit::procs::{self, Procs, self_exe};
use serde::Deserialize;

use crate::audit::{LedgerArgs, model_id_of, write_report};
use crate::ledger::runtime;

/// The built-in topology (a copy of deploy/topology.toml).
const TOPOLOGY: &str = include_str!("../../deploy/topology.toml");
/// The built-in cohort spec (a copy of deploy/cohort.toml).
const COHORT: &str = include_str!("../../deploy/cohort.toml");

/// `ecgfed demo` options.
#[derive(Args)]
pub(crate) struct DemoArgs {
    /// State folder (keys, ledger, stores, model, report); default: a new temporary folder,
    /// kept afterwards so the report can be read.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Topology folder (topology.toml + cohort spec), e.g. deploy/; default: the built-in copy.
    #[arg(long)]
    topology: Option<PathBuf>,
    /// Root of the hospitals' input folders (default: the topology's `sample`).
    #[arg(long)]
    sample: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// `pull` (default: the scientist pulls verified slices and trains) or `federated` (the
    /// model travels to the gateways in rounds; no row leaves a hospital).
    #[arg(long, default_value = "pull", value_parser = ["pull", "federated"])]
    mode: String,
    #[command(subcommand)]
    command: Option<DemoCommand>,
}

/// `ecgfed demo` subcommands.
#[derive(Subcommand)]
enum DemoCommand {
    /// Only prepare the state (keys, genesis, ledger, stores, configs) with the topology's own
    /// addresses, for docker-compose: `ecgfed demo setup --topology DIR --data DIR`.
    Setup {
        /// Topology folder.
        #[arg(long)]
        topology: PathBuf,
        /// State folder.
        #[arg(long)]
        data: PathBuf,
        /// Root of the hospitals' input folders (default: the topology's `sample`).
        #[arg(long)]
        sample: Option<PathBuf>,
    },
}

/// deploy/topology.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Topology {
    /// The ledger's checkpoint origin.
    pub origin: String,
    /// k-anonymity threshold of every gateway.
    pub k: u64,
    /// Root of the input folders, relative to the topology folder.
    pub sample: PathBuf,
    /// Cohort spec file, relative to the topology folder.
    pub cohort: PathBuf,
    /// The ledger.
    pub ledger: Service,
    /// The hospitals.
    pub hospitals: Vec<Hospital>,
    /// The data scientist.
    pub scientist: Member,
    /// The regulator.
    pub regulator: Member,
}

/// A server of the topology.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Service {
    /// Member id.
    pub member: String,
    /// Listen address.
    pub listen: String,
    /// Address others use.
    pub address: String,
}

/// A hospital and its gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Hospital {
    /// Member id.
    pub member: String,
    /// Site name.
    pub site: String,
    /// Input folder under `sample`.
    pub input: PathBuf,
    /// Listen address.
    pub listen: String,
    /// Address others use.
    pub address: String,
}

/// A member without a server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Member {
    /// Member id.
    pub member: String,
}

impl Topology {
    /// Parses topology text (`what` names it in errors).
    pub(crate) fn parse(text: &str, what: &str) -> Result<Topology> {
        let t: Topology = toml::from_str(text).with_context(|| format!("{what}: bad topology"))?;
        if t.hospitals.is_empty() {
            bail!("{what}: no [[hospitals]]");
        }
        Ok(t)
    }
}

/// Runs `ecgfed demo`.
pub(crate) fn run(a: DemoArgs) -> Result<()> {
    if let Some(DemoCommand::Setup {
        topology,
        data,
        sample,
    }) = a.command
    {
        let (topo, cohort, sample_root) = load(Some(&topology), sample.as_deref())?;
        // Compose runs the one-shot again on every `up`: existing state is kept, never remade.
        if data.join("ledger/genesis.toml").exists() {
            println!(
                "state already present in {} (kept; remove the volumes to start over)",
                data.display()
            );
            return Ok(());
        }
        setup(&topo, &cohort, &sample_root, &data, &mut |m| {
            eprintln!("{m}")
        })?;
        println!("state for the topology written to {}", data.display());
        return Ok(());
    }
    let started = Instant::now();
    let (mut topo, mut cohort, sample_root) = load(a.topology.as_deref(), a.sample.as_deref())?;
    // A topology's own cohort may be federated already (`mode = "federated"`).
    let spec_mode = toml::from_str::<toml::Value>(&cohort)
        .ok()
        .and_then(|v| v.get("mode").and_then(|m| m.as_str()).map(str::to_string));
    let federated = a.mode == "federated" || spec_mode.as_deref() == Some("federated");
    if federated && spec_mode.as_deref() != Some("federated") {
        cohort = federated_cohort(&cohort);
    }
    let mode = if federated { "federated" } else { "pull" };
    let data = match a.data {
        Some(d) => d,
        None => tempfile::Builder::new()
            .prefix("ecgfed-demo-")
            .tempdir()
            .context("creating a temporary folder")?
            .keep(),
    };
    if data.join("ledger").exists() {
        bail!(
            "{}: already holds a demo federation; give an empty or new --data folder",
            data.display()
        );
    }
    loopback(&mut topo)?;
    let json = a.json;
    let say = |m: &str| {
        if !json {
            eprintln!("demo: {m}");
        }
    };
    say(&format!("state in {}", data.display()));
    setup(&topo, &cohort, &sample_root, &data, &mut |m| say(m))?;
    let procs = Procs::new(self_exe()?);
    stop_on_interrupt(&procs)?;
    let outcome = run_federation(&topo, &data, &procs, &say, federated);
    procs.stop_all();
    if procs.interrupted() {
        // Interrupted: the step that failed was stopped on purpose; everything is down.
        std::process::exit(130);
    }
    let s = outcome?;
    let secs = started.elapsed().as_secs_f64();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "data": data.display().to_string(),
                "mode": mode,
                "model_id": s.model_id,
                "model_dir": s.model_dir.display().to_string(),
                "report": s.report.display().to_string(),
                "bundle": s.report.with_file_name("bundle.json").display().to_string(),
                "ledger_entries": s.entries,
                "witnessed_checkpoint": {"size": s.witnessed.0, "cosigners": s.witnessed.1},
                "ledger_addr": s.ledger_addr,
                "gateways": topo.hospitals.iter().map(|h| serde_json::json!({"site": h.site, "address": h.address})).collect::<Vec<_>>(),
                "seconds": secs,
            })
        );
    } else {
        println!(
            "ecgfed demo finished in {secs:.0} s: ledger + {} gateways, model {} trained and recorded, ledger verified ({} entries).\n  witnessed checkpoint of the report: size {}, cosigned by {}\n  model:   {}\n  report:  {}\n  bundle:  {}\n  state:   {} (keys, ledger, stores; delete when done)\nRe-check offline: ecgfed audit verify --data {}   ·   ecgfed audit verify-bundle {}",
            topo.hospitals.len(),
            s.model_id,
            s.entries,
            s.witnessed.0,
            s.witnessed.1.join(", "),
            s.model_dir.display(),
            s.report.display(),
            s.report.with_file_name("bundle.json").display(),
            data.display(),
            data.join("ledger").display(),
            s.report.with_file_name("bundle.json").display(),
        );
    }
    Ok(())
}

/// The demo's cohort in federated mode: its own id, `mode = "federated"` and a few short
/// rounds (docs/training.md "Federated mode").
fn federated_cohort(cohort: &str) -> String {
    let mut out = String::new();
    for line in cohort.lines() {
        if line.trim_start().starts_with("cohort_id") {
            out.push_str("cohort_id = \"demo-rhythm-federated\"\n");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    // Top-level keys must precede every table: the mode goes first.
    format!(
        "mode = \"federated\"\n{out}\n[federated]\nrounds = 3\nlocal_epochs = 1\naggregation = \"fedavg\"\n"
    )
}

/// Topology, cohort spec text and sample root, from a folder or built in.
fn load(dir: Option<&Path>, sample: Option<&Path>) -> Result<(Topology, String, PathBuf)> {
    let (topo, cohort, base) = match dir {
        Some(d) => {
            let p = d.join("topology.toml");
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            let t = Topology::parse(&text, &p.display().to_string())?;
            let cp = d.join(&t.cohort);
            let c = std::fs::read_to_string(&cp)
                .with_context(|| format!("reading {}", cp.display()))?;
            (t, c, d.to_path_buf())
        }
        None => (
            Topology::parse(TOPOLOGY, "built-in topology")?,
            COHORT.to_string(),
            default_deploy_dir(),
        ),
    };
    let root = match sample {
        Some(s) => s.to_path_buf(),
        None => base.join(&topo.sample),
    };
    for h in &topo.hospitals {
        let p = root.join(&h.input);
        if !p.is_dir() {
            bail!(
                "hospital {}: input folder {} is missing (give --sample DIR)",
                h.member,
                p.display()
            );
        }
    }
    Ok((topo, cohort, root))
}

/// Where deploy/ is for the built-in topology: `./deploy` when run from the repository, else
/// the source tree the binary was built from.
fn default_deploy_dir() -> PathBuf {
    let here = PathBuf::from("deploy");
    if here.join("../datasets/sample").is_dir() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Stem of the ledger's TLS certificate and key in its folder (`tls-cert.pem`, `tls-key.pem`).
const LEDGER_TLS: &str = "tls";

/// The file in the ledger's folder holding the gateways' certificates (what the ledger trusts
/// when it asks them, as witnesses, over TLS).
const WITNESS_CA: &str = "witness-ca.pem";

/// Makes `dir/<stem>-cert.pem` and `dir/<stem>-key.pem` (0600): a self-signed P-256
/// certificate valid for a year for `localhost`, 127.0.0.1 and the host of `address`, with the
/// `openssl` command (scripts/setup.sh and the Docker image install it). Returns the
/// certificate's path.
fn self_signed(dir: &Path, stem: &str, who: &str, address: &str) -> Result<PathBuf> {
    let (cert, key) = (
        dir.join(format!("{stem}-cert.pem")),
        dir.join(format!("{stem}-key.pem")),
    );
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let mut names = vec!["DNS:localhost".to_string(), "IP:127.0.0.1".to_string()];
    if host.parse::<std::net::IpAddr>().is_ok() {
        if host != "127.0.0.1" {
            names.push(format!("IP:{host}"));
        }
    } else if host != "localhost" {
        names.push(format!("DNS:{host}"));
    }
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "365",
            "-subj",
            &format!("/CN=ecgfed {who}"),
            "-addext",
            &format!("subjectAltName={}", names.join(",")),
            // An end-entity certificate: TLS clients refuse a CA certificate as a server's.
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
            s(&key),
            "-out",
            s(&cert),
        ])
        .output()
        .context("running openssl to make a TLS certificate (install openssl)")?;
    if !out.status.success() {
        bail!(
            "openssl could not make {}: {}",
            cert.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private", key.display()))?;
    Ok(cert)
}

/// Replaces every listen/address by 127.0.0.1 and a free port.
fn loopback(t: &mut Topology) -> Result<()> {
    // Hold every listener until all are chosen so no two services get the same port.
    let mut held = Vec::new();
    let mut pick = || -> Result<String> {
        let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
        let a = l.local_addr()?.to_string();
        held.push(l);
        Ok(a)
    };
    let a = pick()?;
    t.ledger.listen = a.clone();
    t.ledger.address = a;
    for h in &mut t.hospitals {
        let a = pick()?;
        h.listen = a.clone();
        h.address = a;
    }
    drop(held);
    Ok(())
}

/// Runs `ecgfed ARGS` to completion, capturing its output; fails with its standard error.
fn ecgfed(args: &[&str]) -> Result<String> {
    procs::output(&self_exe()?, args, &[])
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

fn write(p: &Path, text: &str) -> Result<()> {
    std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .map(|_| ())
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

/// Writes the state of the topology into `data` (layout in deploy/README.md).
fn setup(
    t: &Topology,
    cohort: &str,
    sample: &Path,
    data: &Path,
    say: &mut dyn FnMut(&str),
) -> Result<()> {
    let ldir = data.join("ledger");
    let tdir = data.join("trainer");
    let rdir = data.join("regulator");
    for d in [&ldir, &tdir, &rdir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    say("generating member keys and the genesis");
    let lkey = ldir.join(format!("{}.key", t.ledger.member));
    ecgfed(&["keys", "generate", "--out", s(&lkey)])?;
    let mut members = vec![format!("{}:ledger={}", t.ledger.member, s(&lkey))];
    for h in &t.hospitals {
        let dir = data.join(&h.site);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let key = dir.join(format!("{}.key", h.member));
        ecgfed(&["keys", "generate", "--out", s(&key)])?;
        members.push(format!("{}:hospital:{}={}", h.member, h.site, s(&key)));
    }
    let skey = tdir.join(format!("{}.key", t.scientist.member));
    ecgfed(&["keys", "generate", "--out", s(&skey)])?;
    members.push(format!("{}:scientist={}", t.scientist.member, s(&skey)));
    let rkey = rdir.join(format!("{}.key", t.regulator.member));
    ecgfed(&["keys", "generate", "--out", s(&rkey)])?;
    members.push(format!("{}:regulator={}", t.regulator.member, s(&rkey)));
    let genesis = ldir.join("genesis.toml");
    let mut args = vec![
        "ledger",
        "genesis",
        "--origin",
        &t.origin,
        "--out",
        s(&genesis),
    ];
    for m in &members {
        args.push("--member");
        args.push(m);
    }
    ecgfed(&args)?;
    // TLS on the ledger's port too: its certificate goes into the trust file every party gets,
    // so that every client reaches the ledger over TLS.
    say("making the ledger's TLS certificate");
    let lcert = self_signed(&ldir, LEDGER_TLS, "ledger", &t.ledger.address)?;
    ecgfed(&[
        "ledger",
        "init",
        "--genesis",
        s(&genesis),
        "--data",
        s(&ldir),
        "--key",
        s(&lkey),
        "--tls-ca",
        s(&lcert),
    ])?;
    let trust = ldir.join("trust.json");
    let mut witness_ca = String::new();
    for h in &t.hospitals {
        let dir = data.join(&h.site);
        let input = sample.join(&h.input);
        say(&format!("{}: ingesting {}", h.site, input.display()));
        ecgfed(&[
            "datasets",
            "ingest",
            s(&input),
            "--site",
            &h.site,
            "--out",
            s(&dir.join("store")),
        ])?;
        copy(&trust, &dir.join("trust.json"))?;
        // TLS on the gateway's port: a self-signed certificate for its address, which the
        // ledger (as the witnesses' client), the scientist and the hospital's own tools trust.
        say(&format!("{}: making the gateway's TLS certificate", h.site));
        let cert = self_signed(&dir, "gw", &format!("gateway {}", h.site), &h.address)?;
        witness_ca.push_str(&std::fs::read_to_string(&cert).with_context(|| s(&cert).to_string())?);
        copy(&cert, &tdir.join(format!("{}-cert.pem", h.site)))?;
        write(
            &dir.join("gateway.toml"),
            &format!(
                "# Gateway of {site} (written by `ecgfed demo`; docs/flight.md explains every key).\nsite = \"{site}\"\nmember = \"{member}\"\nkey_file = \"{member}.key\"\nstore = \"store\"\ndata = \"gw\"\nlisten = \"{listen}\"\nk = {k}\n\n[ledger]\naddress = \"{ledger}\"\ntrust = \"trust.json\"\n\n[tls]\ncert = \"gw-cert.pem\"\nkey = \"gw-key.pem\"\n",
                site = h.site,
                member = h.member,
                listen = h.listen,
                k = t.k,
                ledger = t.ledger.address
            ),
        )?;
    }
    write(&ldir.join(WITNESS_CA), &witness_ca)?;
    copy(&trust, &tdir.join("trust.json"))?;
    copy(&trust, &rdir.join("trust.json"))?;
    let mut fed = format!(
        "# Federation of the demo's data scientist (docs/cohorts.md).\nledger = \"{}\"\ntrust = \"trust.json\"\nmember = \"{}\"\nkey_file = \"{}.key\"\n",
        t.ledger.address, t.scientist.member, t.scientist.member
    );
    for h in &t.hospitals {
        fed.push_str(&format!(
            "\n[[gateways]]\nsite = \"{}\"\naddress = \"{}\"\nca = \"{}-cert.pem\"\n",
            h.site, h.address, h.site
        ));
    }
    write(&tdir.join("federation.toml"), &fed)?;
    write(&tdir.join("cohort.toml"), cohort)?;
    Ok(())
}

/// On SIGINT/SIGTERM: stop every child of `procs`, then exit with status 130.
fn stop_on_interrupt(procs: &Procs) -> Result<()> {
    let procs = procs.clone();
    let rt = runtime()?;
    std::thread::spawn(move || {
        rt.block_on(crate::ledger::shutdown_signal("demo"));
        eprintln!("demo: interrupted, stopping the federation");
        procs.interrupt();
        std::process::exit(130);
    });
    Ok(())
}

struct Summary {
    model_id: String,
    model_dir: PathBuf,
    report: PathBuf,
    /// The checkpoint the regulator's report verified and who cosigned it.
    witnessed: (u64, Vec<String>),
    entries: u64,
    ledger_addr: String,
}

fn run_federation(
    t: &Topology,
    data: &Path,
    procs: &Procs,
    say: &dyn Fn(&str),
    federated: bool,
) -> Result<Summary> {
    let ldir = data.join("ledger");
    say("starting the ledger");
    let logs = data.join("logs");
    // Every hospital's gateway is a witness (the genesis names them, quorum 2 of 3): the
    // ledger asks each for its cosignature of every new checkpoint.
    let witness_args: Vec<String> = t
        .hospitals
        .iter()
        .map(|h| format!("{}={}", h.member, h.address))
        .collect();
    let mut args = vec![
        "ledger",
        "serve",
        "--data",
        s(&ldir),
        "--listen",
        &t.ledger.listen,
    ];
    for w in &witness_args {
        args.push("--witness");
        args.push(w);
    }
    // The gateways serve TLS: the ledger reaches them as witnesses over it.
    let ca = ldir.join(WITNESS_CA);
    if ca.exists() {
        args.push("--witness-ca");
        args.push(s(&ca));
    }
    // And the ledger serves TLS (its trust file names the certificate).
    let (lcert, lkey) = (
        ldir.join(format!("{LEDGER_TLS}-cert.pem")),
        ldir.join(format!("{LEDGER_TLS}-key.pem")),
    );
    if lcert.exists() {
        args.extend(["--tls-cert", s(&lcert), "--tls-key", s(&lkey)]);
    }
    let ledger_addr = procs.serve(&args, &logs.join("ledger.log"))?;
    for h in &t.hospitals {
        say(&format!(
            "starting the gateway of {} ({}, log in logs/{}.log)",
            h.site, h.member, h.site
        ));
        procs.serve(
            &[
                "gateway",
                "serve",
                "--config",
                s(&data.join(&h.site).join("gateway.toml")),
            ],
            &logs.join(format!("{}.log", h.site)),
        )?;
    }
    let tdir = data.join("trainer");
    let model_dir = tdir.join("model");
    say(if federated {
        "planning the balanced cohort, training it in rounds at the gateways with secure aggregation (ecgfed train, federated mode)"
    } else {
        "planning the balanced cohort, pulling verified slices, training (ecgfed train)"
    });
    let status = procs.run(&[
        "train",
        "--spec",
        s(&tdir.join("cohort.toml")),
        "--out",
        s(&model_dir),
    ])?;
    if !status.success() {
        bail!("ecgfed train failed ({status})");
    }
    let model_id = model_id_of(&model_dir)?;
    let rdir = data.join("regulator");
    let trust = rdir.join("trust.json");
    say("verifying the whole ledger against the regulator's checkpoint (ecgfed audit verify)");
    let v = ecgfed(&[
        "audit",
        "verify",
        "--remote",
        &ledger_addr,
        "--checkpoint",
        s(&trust),
        "--update",
        "--json",
    ])?;
    let report: serde_json::Value = serde_json::from_str(&v).context("audit verify output")?;
    if report["ok"] != true {
        bail!("the ledger did not verify: {v}");
    }
    say("writing the audit report (ecgfed audit report)");
    let (page, verified) = runtime()?.block_on(write_report(
        &LedgerArgs {
            data: None,
            remote: Some(ledger_addr.clone()),
            checkpoint: Some(trust),
            disclosures: Vec::new(),
        },
        &model_id,
        &rdir.join("report"),
    ))?;
    let verified = verified.map_err(|e| anyhow::anyhow!("the audit report's bundle: {e}"))?;
    Ok(Summary {
        witnessed: (verified.tree_size, verified.cosigners),
        model_id,
        model_dir,
        report: page,
        entries: report["entries"].as_u64().unwrap_or(0),
        ledger_addr,
    })
}
