//! `ecgfed gateway bench --concurrent N`: memory of a gateway under load (issue 23). A site
//! store of at least `--slice-rows` selectable rows is built from `--input` by repetition
//! (the folder copied under distinct source names, each copy ingested as its own source: real
//! records, real files), a gateway runs as its own `ecgfed gateway serve` process with the
//! default policy (1 GiB cache budget), and a slice of exactly `--slice-rows` rows is pulled
//! with every row verified: once alone, then by N clients at once. Reported: throughput of
//! both, and the gateway process's peak resident memory (VmHWM) after each.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ecgfed_datasets::ingest::{IngestOptions, ingest};
use ecgfed_gateway::client::GatewayClient;

use crate::site_ledger::BenchLedger;

/// The load phase's figures.
pub(crate) struct Load {
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
pub(crate) async fn run(
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
    let fed = BenchLedger::start(&dir.join("load"), "ecgfed.bench/load", "load-site").await?;
    let cfg = dir.join("load-gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            "site = \"load-site\"\nmember = \"hosp\"\nkey_file = {:?}\nstore = {:?}\ndata = {:?}\nlisten = \"127.0.0.1:0\"\nk = 2\n[ledger]\naddress = \"{}\"\ntrust = {:?}\n",
            fed.hosp_file,
            store,
            dir.join("load-gw"),
            fed.addr,
            fed.trust
        ),
    )?;
    let procs = ecgfed_testkit::procs::Procs::new(crate::ecgfed_exe()?);
    let gaddr = procs.serve(
        &["gateway", "serve", "--config", &cfg.to_string_lossy()],
        &dir.join("load-gateway.log"),
    )?;
    let pid = procs.last_pid().context("no gateway process")?;
    let result = pull_all(&fed, &gaddr, slice_rows, concurrent, pid).await;
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

async fn pull_all(
    fed: &BenchLedger,
    gaddr: &str,
    slice_rows: u64,
    concurrent: usize,
    pid: u32,
) -> Result<Figures> {
    let signer = fed.members.request_signer("sci");
    let mut client = GatewayClient::connect(gaddr, "load-site", Arc::clone(&signer)).await?;
    let mut lc = fed.client().await?;
    let r = fed.cohort(&mut client, &mut lc, "load", slice_rows).await?;
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
            let mut l = fed.client().await?;
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
