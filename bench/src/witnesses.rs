//! `ecgfed-bench witnesses`: what witnessing costs. The same load (pre-signed entries through
//! SubmitStream, as `ecgfed-bench ledger`) against a fresh ledger with 0, 3 and 16 witnesses
//! (served in this process on loopback, each with its durable state file), in one run.
//! Reports entries/s, submit→ack latency, the delay from an entry's acknowledgement (it is
//! durable) to the first witnessed checkpoint covering it, and the submit latency at low load
//! (one client, one entry in flight).

use std::time::Instant;

use anyhow::{Result, bail};
use ecgfed_ledger::Ledger;
use ecgfed_testkit::local::{LocalLedger, LocalWitness};
use ecgfed_testkit::members::Members;

/// `ecgfed-bench witnesses`.
#[derive(clap::Args)]
pub struct WitnessArgs {
    /// Entries per run under load.
    #[arg(long, default_value_t = 20_000)]
    entries: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Unanswered submissions per client.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Sequential submissions of the low-load run.
    #[arg(long, default_value_t = 200)]
    low_load: usize,
    /// Witness counts, one run each (quorum: a strict majority).
    #[arg(long, value_delimiter = ',', default_value = "0,3,16")]
    counts: Vec<usize>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `ecgfed-bench witnesses`.
pub fn command(a: WitnessArgs) -> Result<()> {
    crate::runtime()?.block_on(async {
        let mut rows = Vec::new();
        for &n in &a.counts {
            eprintln!("bench: {n} witnesses ...");
            rows.push(one(n, &a).await?);
        }
        let base = rows.first().map_or(1.0, |r| r["entries_per_second"].as_f64().unwrap_or(1.0));
        if a.json {
            println!("{}", serde_json::json!({"runs": rows, "entries": a.entries, "clients": a.clients, "window": a.window}));
        } else {
            println!("witness bench: {} entries, {} clients × window {} per run; low load: {} sequential submits", a.entries, a.clients, a.window, a.low_load);
            for r in &rows {
                let f = |k: &str, q: &str| r[k][q].as_f64().unwrap_or(f64::NAN);
                println!(
                    "  {:>2} witnesses: {:>6.0} entries/s ({:.2}× the unwitnessed run), submit p50 {:.1} / p99 {:.1} ms, durable→witnessed p50 {:.1} / p99 {:.1} ms, low-load submit p50 {:.2} / p99 {:.2} ms",
                    r["witnesses"], r["entries_per_second"].as_f64().unwrap_or(0.0),
                    r["entries_per_second"].as_f64().unwrap_or(0.0) / base,
                    f("submit_latency_ms", "p50"), f("submit_latency_ms", "p99"),
                    f("witness_delay_ms", "p50"), f("witness_delay_ms", "p99"),
                    f("low_load_submit_ms", "p50"), f("low_load_submit_ms", "p99"),
                );
            }
        }
        Ok(())
    })
}

async fn one(n: usize, a: &WitnessArgs) -> Result<serde_json::Value> {
    let tmp = tempfile::tempdir()?;
    let hospitals: Vec<String> = (0..n).map(|i| format!("h{i}")).collect();
    let ids: Vec<&str> = hospitals.iter().map(String::as_str).collect();
    let mut members = Members::new("ecgfed.bench/witnesses");
    for (i, h) in ids.iter().enumerate() {
        members = members.hospital(h, &format!("s{i}"));
    }
    for c in 0..a.clients.max(1) {
        members = members.scientist(&format!("sci-{c}"));
    }
    if n > 0 {
        members = members.witnessed_by(&ids, ecgfed_ledger::genesis::majority(n));
    }
    let db = tmp.path().join("db");
    let genesis = Ledger::init(&db, &members.genesis(), members.ledger_key())?;
    let note = genesis.sign(members.ledger_key());
    let mut witnesses = Vec::new();
    for h in &ids {
        witnesses.push(LocalWitness::start(&tmp.path().join("w"), &members, h, &note).await?);
    }
    let ledger = Ledger::open(&db, members.ledger_key().clone())?;
    ledger.start_witnessing(&witnesses.iter().map(LocalWitness::peer).collect::<Vec<_>>())?;
    let server = LocalLedger::start(&ledger).await?;
    let url = format!("http://{}", server.addr);
    // Record when each witnessed size appears.
    let mut rx = ledger.watch_witnessed();
    let seen = tokio::spawn(async move {
        let mut v: Vec<(u64, Instant)> = Vec::new();
        loop {
            v.push((rx.borrow_and_update().size, Instant::now()));
            if rx.changed().await.is_err() {
                return v;
            }
        }
    });
    // Low load first: one client, one entry in flight.
    let low = crate::load::signed_models(&members, "sci-0", a.low_load as u64, 1);
    let (mut low_lat, low_rej, _) =
        crate::load::client(url.clone(), members.call_identity("sci-0"), low, 1).await?;
    // Then the load.
    let per = a.entries / a.clients.max(1) as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..a.clients.max(1) {
        let list = crate::load::signed_models(&members, &format!("sci-{c}"), per, 2);
        let url = url.clone();
        let window = a.window;
        let id = members.call_identity(&format!("sci-{c}"));
        tasks.push(tokio::spawn(async move {
            crate::load::client(url, id, list, window).await
        }));
    }
    let (mut lat, mut acks, mut rejected) = (Vec::new(), Vec::new(), low_rej);
    for t in tasks {
        let (l, r, k) = t.await??;
        lat.extend(l);
        acks.extend(k);
        rejected += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Wait until the last entry is witnessed (or 10 s).
    let last = ledger.head().tree_size;
    let _ = ledger.witnessed_at_least(last).await;
    server.stop().await?;
    ledger.shutdown();
    drop(ledger);
    let seen = seen.await?;
    for w in witnesses {
        w.stop().await?;
    }
    if rejected > 0 {
        bail!("{rejected} submissions were rejected");
    }
    let mut delays: Vec<f64> = acks
        .iter()
        .filter_map(|(i, t)| {
            seen.iter()
                .find(|(s, _)| s > i)
                .map(|(_, w)| w.saturating_duration_since(*t).as_secs_f64() * 1e3)
        })
        .collect();
    let unwitnessed = acks.len() - delays.len();
    lat.sort_by(f64::total_cmp);
    low_lat.sort_by(f64::total_cmp);
    delays.sort_by(f64::total_cmp);
    let p = |v: &[f64], q| crate::percentile(v, q);
    Ok(serde_json::json!({
        "witnesses": n,
        "quorum": if n == 0 { 0 } else { ecgfed_ledger::genesis::majority(n) },
        "accepted": lat.len(),
        "seconds": elapsed,
        "entries_per_second": lat.len() as f64 / elapsed,
        "submit_latency_ms": {"p50": p(&lat, 0.5), "p99": p(&lat, 0.99)},
        "witness_delay_ms": {"p50": p(&delays, 0.5), "p99": p(&delays, 0.99)},
        "never_witnessed": unwitnessed,
        "low_load_submit_ms": {"p50": p(&low_lat, 0.5), "p99": p(&low_lat, 0.99)},
    }))
}
