//! `ecgfed-bench audit`: lineage query latency over a large ledger. Generates a federation's
//! history through the real gRPC service (three hospitals registering datasets; per cohort a
//! CohortCreated, three CohortSliceCommitted with their commitments, three DataServed and a
//! ModelTrained — eight entries), compacts the store, then times `model → sources` lineage
//! queries for random models through the verifying client (every entry proven against a
//! signed checkpoint) against `ecgfed ledger serve` in its own process and, as the same-run
//! baseline, the same queries on the store offline. `--keep DIR` keeps the filled ledger for
//! later runs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};
use ecgfed_audit::lineage::model_lineage;
use ecgfed_audit::source::{RemoteSource, Source, StoreSource};
use ecgfed_ledger::Ledger;
use ecgfed_ledger::client::LedgerClient;
use ecgfed_ledger::entry::EntrySigner;
use ecgfed_ledger::keys::KeyPair;
use ecgfed_ledger::log::MemoryLog;
use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::{
    AllocationCell, CohortCreated, CohortSliceCommitted, DataServed, ModelTrained, SignedEntry,
};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use tokio_stream::StreamExt;

use ecgfed_testkit::local::LocalLedger;
use ecgfed_testkit::members::Members;
use ecgfed_testkit::procs::{Procs, self_exe};

use crate::percentile;

const SITES: [&str; 3] = ["site-a", "site-b", "site-c"];
const ROWS: u64 = 4;
/// Origin of the bench ledger.
const ORIGIN: &str = "ecgfed.bench/lineage";

/// One cohort's entries per signer: (scientist entries, per-site hospital entries).
fn cohort_payloads(c: u64) -> (Vec<Payload>, Vec<Vec<Payload>>) {
    let cohort_id = format!("cohort-{c}");
    let allocation = SITES
        .iter()
        .map(|s| AllocationCell {
            site: s.to_string(),
            label: "426783006".into(),
            sex: "F".into(),
            age_band: "40-59".into(),
            count: ROWS,
        })
        .collect();
    let created = Payload::CohortCreated(CohortCreated {
        cohort_id: cohort_id.clone(),
        spec_sha256: vec![1; 32],
        allocation,
        seed: c,
        purpose: "lineage benchmark".into(),
        requester: "sci".into(),
        ..Default::default()
    });
    let mut per_site = Vec::new();
    for (i, s) in SITES.iter().enumerate() {
        let commitments: Vec<Vec<u8>> = (0..ROWS)
            .map(|r| {
                let mut h = [0u8; 32];
                h[..8].copy_from_slice(&c.to_be_bytes());
                h[8] = i as u8;
                h[9] = r as u8;
                h.to_vec()
            })
            .collect();
        let mut log = MemoryLog::new();
        for x in &commitments {
            log.append(x);
        }
        let root = ecgfed_ledger::log::root(&log, ROWS).unwrap_or_default();
        let slice_id = format!("{cohort_id}/{s}");
        per_site.push(vec![
            Payload::CohortSliceCommitted(CohortSliceCommitted {
                slice_id: slice_id.clone(),
                cohort_id: cohort_id.clone(),
                site: s.to_string(),
                dataset_id: format!("{s}/store"),
                requester: "sci".into(),
                row_count: ROWS,
                slice_root: root.to_vec(),
                seed: c,
                commitments,
            }),
            Payload::DataServed(DataServed {
                slice_id,
                cohort_id: cohort_id.clone(),
                site: s.to_string(),
                requester: "sci".into(),
                rows: ROWS,
                bytes: 40_000,
                slice_root: root.to_vec(),
            }),
        ]);
    }
    let model = Payload::ModelTrained(ModelTrained {
        model_id: format!("model-{c}"),
        cohort_id,
        weights_sha256: vec![2; 32],
        code_version: "bench".into(),
        hyperparameters_json: "{}".into(),
        metrics_json: "{}".into(),
        ..Default::default()
    });
    (vec![created, model], per_site)
}

async fn push(
    url: String,
    id: std::sync::Arc<ecgfed_ledger::access::CallIdentity>,
    list: Vec<SignedEntry>,
    bar: indicatif::ProgressBar,
) -> Result<u64> {
    let mut c = ecgfed_ledger::access::connect(url, Some(id))
        .await
        .map_err(|e| anyhow::anyhow!("connecting to the ledger: {e}"))?;
    let n = list.len();
    let mut answers = c
        .submit_stream(tokio_stream::iter(list))
        .await?
        .into_inner();
    let mut rejected = 0;
    let mut i = 0;
    while let Some(r) = answers.next().await {
        let r = r?;
        if r.code != 0 {
            rejected += 1;
            if rejected == 1 {
                eprintln!("bench: rejected: {}", r.message);
            }
        }
        bar.inc(1);
        i += 1;
        if i == n {
            break;
        }
    }
    Ok(rejected)
}

/// What a kept bench folder records about its ledger (`bench.json`).
#[derive(serde::Serialize, serde::Deserialize)]
struct Kept {
    cohorts: u64,
    entries: u64,
    fill_seconds: f64,
    #[serde(default)]
    compact_seconds: f64,
}

/// `ecgfed-bench audit`: lineage query latency over a large ledger filled through the real
/// service (model → sources, through the verifying client; the offline store as baseline).
#[derive(clap::Args)]
pub struct AuditArgs {
    /// Ledger entries to generate (rounded to whole cohorts of 8 entries).
    #[arg(long, default_value_t = 100_000)]
    entries: u64,
    /// Timed queries per source.
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    /// Keep the filled ledger in this folder; a later run with the same folder reuses it
    /// (a settled database) instead of filling again.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `ecgfed-bench audit`.
pub fn command(a: AuditArgs) -> Result<()> {
    crate::runtime()?.block_on(run(a.entries, a.queries.max(1), a.keep, a.json))
}

/// Runs the benchmark: `entries` ledger entries (rounded to whole cohorts), `queries` timed
/// model lineage queries per source. The ledger is filled in `keep` (a temporary folder
/// without it; its key in `ledger.key`, 0600, and `bench.json`); the queries are then timed by
/// a fresh process of this program on that folder against `ecgfed ledger serve` in a process
/// of its own, as a client and a deployed ledger that did not generate a million signed
/// entries would see them. A later run with the same
/// `keep` folder times the queries on the kept ledger again without filling.
async fn run(entries: u64, queries: usize, keep: Option<PathBuf>, json: bool) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = match &keep {
        Some(d) => d.clone(),
        None => tmp.path().join("bench-ledger"),
    };
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("db");
    let meta = dir.join("bench.json");
    if !meta.exists() {
        let (kept, key) = fill(&db, entries, json).await?;
        key.write_file(&dir.join("ledger.key"))?;
        std::fs::write(&meta, serde_json::to_vec_pretty(&kept)?)?;
        eprintln!(
            "bench: {} entries filled through the service in {:.0} s ({:.0} entries/s), compacted in {:.0} s; timing in a fresh process",
            kept.entries,
            kept.fill_seconds,
            kept.entries as f64 / kept.fill_seconds,
            kept.compact_seconds
        );
        let mut child = std::process::Command::new(self_exe()?);
        child
            .args(["audit", "--queries", &queries.to_string(), "--keep"])
            .arg(&dir);
        if json {
            child.arg("--json");
        }
        let status = child.status()?;
        if !status.success() {
            bail!("the timing process failed ({status})");
        }
        return Ok(());
    }
    let kept: Kept = serde_json::from_slice(&std::fs::read(&meta)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", meta.display()))?;
    let ledger_key = KeyPair::read_file(&dir.join("ledger.key"))?;
    eprintln!(
        "bench: timing queries on the ledger of {} entries in {} (--entries ignored)",
        kept.entries,
        dir.display()
    );
    time(&dir, &db, &kept, ledger_key, queries, json).await
}

/// Times the queries on the filled ledger at `db`.
async fn time(
    dir: &Path,
    db: &Path,
    kept: &Kept,
    ledger_key: KeyPair,
    queries: usize,
    json: bool,
) -> Result<()> {
    let cohorts = kept.cohorts;
    // The real ledger service, as deployed: `ecgfed ledger serve` in its own process.
    let procs = Procs::new(crate::ecgfed_exe()?);
    let addr = procs.serve(
        &[
            "ledger",
            "serve",
            "--data",
            &dir.to_string_lossy(),
            "--listen",
            "127.0.0.1:0",
        ],
        &dir.join("serve.log"),
    )?;
    let timed = time_remote(&addr, ledger_key.public(), cohorts, queries).await;
    procs.stop_all();
    let (size, warmup, picks, lat_remote) = timed?;
    let lat_store = time_queries(&mut StoreSource::open(db)?, &warmup, &picks).await?;
    let (r50, r99) = (percentile(&lat_remote, 0.5), percentile(&lat_remote, 0.99));
    let (s50, s99) = (percentile(&lat_store, 0.5), percentile(&lat_store, 0.99));
    let fill_s = kept.fill_seconds;
    if json {
        println!(
            "{}",
            serde_json::json!({"entries": size, "fill_seconds": fill_s,
                "compact_seconds": kept.compact_seconds,
                "warmup": warmup.len(), "queries": queries,
                "remote_p50_ms": r50, "remote_p99_ms": r99, "store_p50_ms": s50, "store_p99_ms": s99})
        );
    } else {
        println!(
            "ledger of {size} entries (filled through the service in {fill_s:.0} s, compacted in {:.0} s)\nmodel → sources lineage, {queries} random models after {} untimed:\n  verifying client over gRPC: p50 {r50:.2} ms, p99 {r99:.2} ms (target p99 ≤ 10 ms)\n  store read offline (baseline): p50 {s50:.2} ms, p99 {s99:.2} ms",
            kept.compact_seconds,
            warmup.len()
        );
    }
    Ok(())
}

/// Model lineage queries through the verifying client against the ledger service at
/// `addr`: the tree size, the untimed and timed models, and the timed latencies (ms, sorted).
async fn time_remote(
    addr: &str,
    key: ecgfed_ledger::keys::PublicKey,
    cohorts: u64,
    queries: usize,
) -> Result<(u64, Vec<u64>, Vec<u64>, Vec<f64>)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let warmup: Vec<u64> = (0..WARMUP.min(queries))
        .map(|_| rng.gen_range(0..cohorts))
        .collect();
    let picks: Vec<u64> = (0..queries).map(|_| rng.gen_range(0..cohorts)).collect();
    // Every entry verified against the ledger's signed checkpoint.
    let mut client = LedgerClient::connect(addr, ORIGIN, key, None).await?;
    let size = client.update_checkpoint().await?.size;
    let lat = time_queries(&mut RemoteSource::new(client, key), &warmup, &picks).await?;
    Ok((size, warmup, picks, lat))
}

/// The lineage of `model-C` for each C of `warmup` (untimed) and then of `picks`, each checked
/// to name every site's slice and dataset; the latencies of `picks` in ms, sorted.
async fn time_queries<S: Source>(src: &mut S, warmup: &[u64], picks: &[u64]) -> Result<Vec<f64>> {
    let mut lat = Vec::with_capacity(picks.len());
    for (i, &c) in warmup.iter().chain(picks).enumerate() {
        let t = Instant::now();
        let l = model_lineage(
            src,
            &format!("model-{c}"),
            &ecgfed_audit::disclosure::Disclosures::default(),
        )
        .await?;
        if i >= warmup.len() {
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        if l.slices.len() != SITES.len() || l.datasets.len() != SITES.len() {
            bail!(
                "model-{c}: lineage has {} slices, {} datasets",
                l.slices.len(),
                l.datasets.len()
            );
        }
    }
    lat.sort_by(f64::total_cmp);
    Ok(lat)
}

/// Untimed queries before the timed ones (connection, caches).
const WARMUP: usize = 50;

/// Fills a new ledger at `db` with about `entries` entries through the real service; returns
/// what was filled and the ledger's key.
async fn fill(db: &Path, entries: u64, json: bool) -> Result<(Kept, KeyPair)> {
    // Entries are signed up front (minutes for a million), so the bench ledger accepts a day
    // of clock skew instead of the default five minutes.
    let members = SITES
        .iter()
        .enumerate()
        .fold(Members::new(ORIGIN).scientist("sci"), |m, (i, site)| {
            m.hospital(&format!("hosp-{i}"), site)
        })
        .max_clock_skew_ms(86_400_000);
    let ledger_key = members.ledger_key().clone();
    Ledger::init(db, &members.genesis(), &ledger_key)?;
    let cohorts = (entries.saturating_sub(4) / 8).max(1);
    eprintln!(
        "bench: signing {} entries ({cohorts} cohorts) ...",
        4 + cohorts * 8
    );
    // Scientist stream and one stream per hospital; each signer's nonces in order. Each
    // cohort's payloads are built once and dealt out to their signers.
    let mut sci_payloads = Vec::with_capacity(cohorts as usize * 2);
    let mut site_payloads: Vec<Vec<Payload>> = SITES
        .iter()
        .map(|site| {
            vec![ecgfed_testkit::payloads::dataset(
                site,
                &format!("{site}/store"),
            )]
        })
        .collect();
    let built: Vec<_> = (0..cohorts).into_par_iter().map(cohort_payloads).collect();
    for (sci_part, per_site) in built {
        sci_payloads.extend(sci_part);
        for (all, part) in site_payloads.iter_mut().zip(per_site) {
            all.extend(part);
        }
    }
    let sign_all = |member: &str, payloads: Vec<Payload>| -> Vec<SignedEntry> {
        let mut s: EntrySigner = members.signer(member);
        let bodies: Vec<_> = payloads.into_iter().map(|p| s.body(p)).collect();
        bodies.par_iter().map(|b| s.sign_body(b)).collect()
    };
    // The scientist's CohortCreated entries go first (a slice is refused before its cohort);
    // the ModelTrained entries follow once every slice is on the ledger, as in a real run.
    let (created, models): (Vec<_>, Vec<_>) = sign_all("sci", sci_payloads)
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let sci_list: Vec<SignedEntry> = created.into_iter().map(|x| x.1).collect();
    let model_list: Vec<SignedEntry> = models.into_iter().map(|x| x.1).collect();
    let hosp_lists: Vec<Vec<SignedEntry>> = site_payloads
        .into_iter()
        .enumerate()
        .map(|(i, payloads)| sign_all(&format!("hosp-{i}"), payloads))
        .collect();
    let ledger = Ledger::open(db, ledger_key.clone())?;
    let server = LocalLedger::start(&ledger).await?;
    let addr = server.addr;
    let total =
        (sci_list.len() + model_list.len() + hosp_lists.iter().map(Vec::len).sum::<usize>()) as u64;
    let bar = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total).with_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} entries through the service ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        )
    };
    let started = Instant::now();
    let url = format!("http://{addr}");
    // The cohorts, then three streams at once: the hospitals' slices and transfers.
    let sci = members.call_identity("sci");
    let mut rejected = push(url.clone(), sci.clone(), sci_list, bar.clone()).await?;
    let mut tasks = Vec::new();
    for (i, list) in hosp_lists.into_iter().enumerate() {
        let id = members.call_identity(&format!("hosp-{i}"));
        tasks.push(tokio::spawn(push(url.clone(), id, list, bar.clone())));
    }
    for t in tasks {
        rejected += t.await??;
    }
    rejected += push(url.clone(), sci, model_list, bar.clone()).await?;
    bar.finish_and_clear();
    let fill_s = started.elapsed().as_secs_f64();
    if rejected > 0 {
        bail!("{rejected} entries were rejected");
    }
    server.stop().await?;
    // The bulk fill leaves level-0 tables behind that background compaction would merge
    // over time on a live ledger; compact now so that the queries meet a settled database.
    let started = Instant::now();
    ledger.store().compact()?;
    let compact_seconds = started.elapsed().as_secs_f64();
    let entries = ledger.head().tree_size;
    Ok((
        Kept {
            cohorts,
            entries,
            fill_seconds: fill_s,
            compact_seconds,
        },
        ledger_key,
    ))
}
