//! `ecgfed gateway bench --concurrent N`: memory of a gateway under load (issue 23). A site
//! store of at least `--slice-rows` selectable rows is built from `--input` by repetition
//! (the folder copied under distinct source names, each copy ingested as its own source: real
//! records, real files), a gateway runs as its own `ecgfed gateway serve` process with the
//! default policy (1 GiB cache budget), and a slice of exactly `--slice-rows` rows is pulled
//! with every row verified: once alone, then by N clients at once. Reported: throughput of
//! both, and the gateway process's peak resident memory (VmHWM) after each.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ecgfed_datasets::ingest::{IngestOptions, ingest};
use ecgfed_gateway::auth::RequestSigner;
use ecgfed_gateway::client::GatewayClient;
use ecgfed_ledger::Ledger;
use ecgfed_ledger::client::LedgerClient;
use ecgfed_ledger::entry::EntrySigner;
use ecgfed_ledger::genesis::{GenesisFile, GenesisMember};
use ecgfed_ledger::keys::KeyPair;
use ecgfed_ledger::trust::TrustFile;
use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::{AllocationCell, CohortCreated, ReserveSliceRequest, StrataDimension};

/// The load phase's figures.
pub struct Load {
    /// Rows of the slice.
    pub rows: u64,
    /// Copies of the input in the store, and the store's segments.
    pub copies: usize,
    /// Segments in the store.
    pub segments: u64,
    /// Signal bytes of one pull.
    pub signal_bytes: u64,
    /// One pull alone: seconds.
    pub alone: f64,
    /// Peak resident memory of the gateway after the lone pull, bytes.
    pub peak_alone: u64,
    /// Concurrent pulls.
    pub concurrent: usize,
    /// All concurrent pulls: wall seconds.
    pub together: f64,
    /// Peak resident memory of the gateway after them, bytes.
    pub peak_together: u64,
}

/// The peak resident set (VmHWM) of process `pid`, bytes.
fn peak_rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading the status of process {pid}"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM line")?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmHWM without a value")?
        .parse()?;
    Ok(kb * 1024)
}

/// Copies the regular files of `from` into `to`.
fn copy_folder(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from).with_context(|| from.display().to_string())? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name()))
                .with_context(|| e.path().display().to_string())?;
        }
    }
    Ok(())
}

/// Runs the load phase: `selectable` is how many rows of one copy of `input` are selectable at
/// k = 2 (from the bench's first phase).
pub async fn run(
    input: &Path,
    selectable: u64,
    slice_rows: u64,
    concurrent: usize,
    dir: &Path,
) -> Result<Load> {
    if selectable == 0 {
        bail!("{} has no selectable rows", input.display());
    }
    let copies = slice_rows.div_ceil(selectable) as usize + 1;
    let base = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "input".into());
    let sources = dir.join("copies");
    eprintln!(
        "bench: copying {} {copies} times for a {slice_rows}-row slice ...",
        input.display()
    );
    for i in 0..copies {
        copy_folder(input, &sources.join(format!("{base}-r{i:02}")))?;
    }
    let store = dir.join("load-store");
    let opts = IngestOptions {
        site: "load-site".into(),
        ..Default::default()
    };
    eprintln!("bench: ingesting the copies ...");
    let m = ingest(std::slice::from_ref(&sources), &store, &opts, &|_| {})
        .context("ingesting the copies")?;
    std::fs::remove_dir_all(&sources).ok();

    // Ledger in this process; the gateway as its own process, its memory measured alone.
    let write_key = |name: &str| -> Result<(KeyPair, PathBuf)> {
        let k = KeyPair::generate();
        let p = dir.join(format!("load-{name}.key"));
        k.write_file(&p)?;
        Ok((k, p))
    };
    let (ledger_key, _) = write_key("ledger")?;
    let (hosp, hosp_file) = write_key("hosp")?;
    let (sci, _) = write_key("sci")?;
    let g = GenesisFile {
        origin: "ecgfed.bench/load".into(),
        max_clock_skew_ms: 0,
        members: vec![
            GenesisMember::for_key("ledger", "ledger", "", &ledger_key),
            GenesisMember::for_key("hosp", "hospital", "load-site", &hosp),
            GenesisMember::for_key("sci", "scientist", "", &sci),
        ],
    };
    let ldb = dir.join("load-ledger");
    let cp = Ledger::init(&ldb, &g, &ledger_key)?;
    let trust = dir.join("load-trust.json");
    TrustFile {
        origin: cp.origin.clone(),
        ledger_public_key: ledger_key.public().to_hex(),
        checkpoint: cp.sign(&ledger_key),
    }
    .write(&trust)?;
    let ledger = Ledger::open(&ldb, ledger_key.clone())?;
    let (ll, laddr) = ecgfed_ledger::service::bind("127.0.0.1:0".parse()?).await?;
    tokio::spawn(ecgfed_ledger::service::serve(
        Arc::clone(&ledger),
        ll,
        std::future::pending(),
    ));
    let cfg = dir.join("load-gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            "site = \"load-site\"\nmember = \"hosp\"\nkey_file = {:?}\nstore = {:?}\ndata = {:?}\nlisten = \"127.0.0.1:0\"\nk = 2\n[ledger]\naddress = \"{laddr}\"\ntrust = {:?}\n",
            hosp_file,
            store,
            dir.join("load-gw"),
            trust
        ),
    )?;
    let procs = crate::demo::Procs::default();
    let gaddr = procs.serve(
        &["gateway", "serve", "--config", &cfg.to_string_lossy()],
        &dir.join("load-gateway.log"),
    )?;
    let pid = procs.last_pid().context("no gateway process")?;
    let result = pull_all(
        &gaddr,
        &laddr.to_string(),
        &cp,
        &ledger_key,
        &sci,
        slice_rows,
        concurrent,
        pid,
    )
    .await;
    procs.stop_all();
    let (signal_bytes, alone, peak_alone, together, peak_together) = result?;
    Ok(Load {
        rows: slice_rows,
        copies,
        segments: m.segments,
        signal_bytes,
        alone,
        peak_alone,
        concurrent,
        together,
        peak_together,
    })
}

type Figures = (u64, f64, u64, f64, u64);

#[allow(clippy::too_many_arguments)]
async fn pull_all(
    gaddr: &str,
    laddr: &str,
    cp: &ecgfed_ledger::checkpoint::Checkpoint,
    ledger_key: &KeyPair,
    sci: &KeyPair,
    slice_rows: u64,
    concurrent: usize,
    pid: u32,
) -> Result<Figures> {
    let signer = Arc::new(RequestSigner::new("sci", sci.clone()));
    let mut client = GatewayClient::connect(gaddr, "load-site", Arc::clone(&signer)).await?;
    let t = client
        .strata(
            "",
            &[
                StrataDimension::Label,
                StrataDimension::Sex,
                StrataDimension::AgeBand,
            ],
        )
        .await?;
    let mut allocation = Vec::new();
    let mut left = slice_rows;
    for c in &t.cells {
        if left == 0 {
            break;
        }
        let n = c.segments.min(left);
        left -= n;
        allocation.push(AllocationCell {
            site: "load-site".into(),
            label: c.key[0].clone(),
            sex: c.key[1].clone(),
            age_band: c.key[2].clone(),
            count: n,
        });
    }
    if left > 0 {
        bail!(
            "the store has {} selectable rows, fewer than {slice_rows}",
            slice_rows - left
        );
    }
    let ledger_client = || async {
        LedgerClient::connect(
            laddr,
            &cp.origin.clone(),
            ledger_key.public(),
            Some(cp.clone()),
        )
        .await
    };
    let mut lc = ledger_client().await?;
    lc.submit(
        EntrySigner::new("sci", sci.clone()).sign(Payload::CohortCreated(CohortCreated {
            cohort_id: "load".into(),
            spec_sha256: vec![0; 32],
            allocation,
            seed: 1,
            purpose: "gateway load bench".into(),
            requester: "sci".into(),
        })),
    )
    .await?;
    let r = client
        .reserve(ReserveSliceRequest {
            cohort_id: "load".into(),
            ..Default::default()
        })
        .await?;
    eprintln!(
        "bench: slice of {} rows reserved; one pull alone ...",
        r.rows
    );
    let t = Instant::now();
    let rep = client.pull(&r.slice_id, &mut lc, |_| {}).await?;
    let alone = t.elapsed().as_secs_f64();
    let peak_alone = peak_rss(pid)?;
    eprintln!("bench: {concurrent} pulls at once ...");
    let t = Instant::now();
    let pulls = (0..concurrent).map(|_| {
        let (signer, id) = (Arc::clone(&signer), r.slice_id.clone());
        async move {
            let mut c = GatewayClient::connect(gaddr, "load-site", signer).await?;
            let mut l = ledger_client().await?;
            let rep = c.pull(&id, &mut l, |_| {}).await?;
            anyhow::Ok(rep.rows)
        }
    });
    for rows in futures::future::join_all(pulls).await {
        let rows = rows?;
        if rows != r.rows {
            bail!("a concurrent pull verified {rows} rows of {}", r.rows);
        }
    }
    let together = t.elapsed().as_secs_f64();
    let peak_together = peak_rss(pid)?;
    Ok((rep.signal_bytes, alone, peak_alone, together, peak_together))
}
