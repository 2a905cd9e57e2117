//! `ecgfed-bench ledger`: the ledger's load generator ("hammer").
//!
//! Creates a ledger with one scientist member per client, serves it on a loopback port, and
//! has every client push pre-signed `ModelTrained` entries through its own SubmitStream with
//! at most `--window` unanswered. Reports acknowledged (durable, signature-verified)
//! entries/s, p50/p99 submit→ack latency, inclusion-proof build/verify times, and the offline
//! `audit verify` rate over the resulting store. Server and clients share this machine.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ecgfed_ledger::entry;
use ecgfed_ledger::genesis::GenesisFile;
use ecgfed_ledger::keys::{PublicKey, Signature};
use ecgfed_ledger::log::{leaf_hash, verify_inclusion};
use ecgfed_ledger::store::Store;
use ecgfed_ledger::{Ledger, verify};
use ecgfed_proto::v1::{ModelTrained, SignedEntry, entry_body::Payload};
use ecgfed_testkit::local::LocalLedger;
use ecgfed_testkit::members::Members;
use rayon::prelude::*;

/// `ecgfed-bench ledger`: durable, signature-verified entries/s through the gRPC service.
#[derive(clap::Args)]
pub struct LedgerArgs {
    /// Entries to submit.
    #[arg(long, default_value_t = 50_000)]
    entries: u64,
    /// Concurrent clients (each a scientist member with its own SubmitStream).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Unanswered submissions per client (at saturation, latency ≈ clients × window /
    /// throughput; lower it to see latency under light load).
    #[arg(long, default_value_t = 512)]
    window: usize,
    /// Data directory for the benchmark ledger (default: a temporary directory).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Instead: the honest load alone, then beside a client keeping one forged entry in every
    /// block and 1,000 unread QueryBySubject streams (both phases in this run).
    #[arg(long)]
    adversary: bool,
}

/// Runs `ecgfed-bench ledger`.
pub fn command(a: LedgerArgs) -> Result<()> {
    if a.adversary {
        return crate::runtime()?.block_on(crate::adversary::run(
            a.entries,
            a.clients.max(1),
            a.window.max(1),
            a.json,
        ));
    }
    crate::runtime()?.block_on(run(
        a.entries,
        a.clients.max(1),
        a.window.max(1),
        a.data,
        a.json,
    ))
}

/// Runs the benchmark.
async fn run(
    entries: u64,
    clients: usize,
    window: usize,
    data: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = data.unwrap_or_else(|| tmp.path().join("bench-ledger"));
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("db");
    let members = (0..clients).fold(Members::new("ecgfed.bench/ledger"), |m, i| {
        m.scientist(&format!("scientist-{i}"))
    });
    let g = members.genesis();
    let ledger_key = members.ledger_key().clone();
    Ledger::init(&db, &g, &ledger_key)?;

    eprintln!("bench: signing {entries} entries for {clients} clients ...");
    let per_client: Vec<Vec<SignedEntry>> = (0..clients)
        .into_par_iter()
        .map(|c| {
            let n = entries / clients as u64 + u64::from((c as u64) < entries % clients as u64);
            let mut s = members.signer(&format!("scientist-{c}"));
            (0..n)
                .map(|i| {
                    let mut w = [0u8; 32];
                    w[..8].copy_from_slice(&i.to_be_bytes());
                    w[8] = c as u8;
                    s.sign(Payload::ModelTrained(ModelTrained {
                        model_id: format!("model-{c}-{i}"),
                        cohort_id: format!("cohort-{c}"),
                        weights_sha256: w.to_vec(),
                        code_version: "bench".into(),
                        hyperparameters_json: "{}".into(),
                        metrics_json: "{}".into(),
                        ..Default::default()
                    }))
                })
                .collect()
        })
        .collect();

    // Baseline in the same invocation: one-by-one verification of single signatures on one
    // core (hash-to-curve and two pairings each), the cost the batching is meant to beat.
    let sample: Vec<&SignedEntry> = per_client.iter().flatten().take(200).collect();
    let verifier = sample_keys_verify(&sample, &g)?;
    let t = Instant::now();
    for (key, msg, sig) in &verifier {
        if !key.verify(msg, sig) {
            bail!("a benchmark signature does not verify");
        }
    }
    let single_us = t.elapsed().as_secs_f64() * 1e6 / verifier.len().max(1) as f64;
    let ledger = Ledger::open(&db, ledger_key)?;
    let server = LocalLedger::start(&ledger).await?;
    let addr = server.addr;
    eprintln!("bench: submitting through the gRPC service at {addr} ...");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, list) in per_client.into_iter().enumerate() {
        let url = format!("http://{addr}");
        let id = members.call_identity(&format!("scientist-{c}"));
        tasks.push(tokio::spawn(async move {
            crate::load::client(url, id, list, window).await
        }));
    }
    let mut latencies = Vec::new();
    let mut rejected = 0u64;
    for t in tasks {
        let (lat, rej, _) = t.await??;
        latencies.extend(lat);
        rejected += rej;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let accepted = latencies.len() as u64;
    latencies.sort_by(f64::total_cmp);
    let head = ledger.head();

    // Inclusion proofs over the store.
    let size = head.tree_size;
    let probes: Vec<u64> = (0..1000u64).map(|i| (i * 7919 + 13) % size).collect();
    let t = Instant::now();
    let proofs: Vec<_> = probes
        .iter()
        .map(|&i| ledger.prove_inclusion(i, size))
        .collect::<Result<_, _>>()
        .map_err(|r| anyhow::anyhow!(r.message))?;
    let build_us = t.elapsed().as_secs_f64() * 1e6 / probes.len() as f64;
    let leaves: Vec<_> = probes
        .iter()
        .map(|&i| {
            ledger
                .store()
                .entry(i)
                .ok()
                .flatten()
                .map(|e| leaf_hash(&e))
                .unwrap_or([0; 32])
        })
        .collect();
    let root = ecgfed_ledger::log::root(ledger.store(), size)?;
    let t = Instant::now();
    let mut ok = 0;
    for ((&i, p), l) in probes.iter().zip(&proofs).zip(&leaves) {
        ok += usize::from(verify_inclusion(i, size, l, p, &root).is_ok());
    }
    let verify_us = t.elapsed().as_secs_f64() * 1e6 / probes.len() as f64;
    if ok != probes.len() {
        bail!(
            "{} of {} inclusion proofs failed to verify",
            probes.len() - ok,
            probes.len()
        );
    }

    server.stop().await?;
    drop(ledger);
    tokio::time::sleep(Duration::from_millis(50)).await;
    eprintln!("bench: audit verify over {size} entries ...");
    let store = Store::open(&db)?;
    let report = tokio::task::spawn_blocking(move || verify::verify_store(&store)).await??;
    if !report.ok {
        bail!(
            "audit verify failed on the bench ledger: {:?}",
            report.problems.first()
        );
    }
    let rate = accepted as f64 / elapsed;
    let baseline = 1e6 / single_us;
    let (p50, p99) = (
        crate::percentile(&latencies, 0.5),
        crate::percentile(&latencies, 0.99),
    );
    if json {
        println!(
            "{}",
            serde_json::json!({
                "entries": entries, "clients": clients, "window": window, "accepted": accepted, "rejected": rejected,
                "seconds": elapsed, "entries_per_second": rate,
                "submit_latency_ms": {"p50": p50, "p99": p99},
                "blocks": head.blocks, "mean_block_entries": accepted as f64 / (head.blocks.max(2) - 1) as f64,
                "inclusion_proof_us": {"build": build_us, "verify": verify_us},
                "audit": {"entries": report.entries, "seconds": report.seconds, "entries_per_second": report.entries_per_second},
                "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
                "baseline": {"single_verify_us": single_us, "one_core_verifications_per_second": baseline},
                "throughput_vs_baseline": rate / baseline,
                "audit_vs_baseline": report.entries_per_second / baseline,
            })
        );
    } else {
        println!(
            "ledger bench: {accepted} entries accepted ({rejected} rejected) from {clients} clients in {elapsed:.2} s"
        );
        println!("  throughput      {rate:.0} durable, signature-verified entries/s through gRPC");
        println!(
            "  baseline        one-by-one signature verification on one core: {single_us:.0} µs = {baseline:.0}/s; throughput is {:.2}× that, audit {:.2}×",
            rate / baseline,
            report.entries_per_second / baseline
        );
        println!("  submit latency  p50 {p50:.1} ms, p99 {p99:.1} ms (window {window} per client)");
        println!(
            "  blocks          {} (mean {:.0} entries per block)",
            head.blocks,
            accepted as f64 / (head.blocks.max(2) - 1) as f64
        );
        println!(
            "  inclusion proof build {build_us:.1} µs, verify {verify_us:.1} µs (tree size {size})"
        );
        println!(
            "  audit verify    {} entries in {:.2} s = {:.0} entries/s",
            report.entries, report.seconds, report.entries_per_second
        );
    }
    if rejected > 0 {
        bail!("{rejected} submissions were rejected");
    }
    Ok(())
}

/// (key, signed message, signature) of sample entries, for the single-verification baseline.
fn sample_keys_verify(
    sample: &[&SignedEntry],
    g: &GenesisFile,
) -> Result<Vec<(PublicKey, Vec<u8>, Signature)>> {
    sample
        .iter()
        .map(|e| {
            let body = entry::decode_body(&e.body)?;
            let m = g
                .members
                .iter()
                .find(|m| m.id == body.signer)
                .context("signer missing from the bench genesis")?;
            let key = PublicKey::from_bytes(&hex::decode(&m.public_key)?)?;
            Ok((
                key,
                entry::signing_bytes(&e.body),
                Signature::from_bytes(&e.signature)?,
            ))
        })
        .collect()
}
