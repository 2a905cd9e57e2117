//! `ecgfed-bench ledger --adversary`: the honest load of `ecgfed-bench ledger`, twice in one
//! run on fresh ledgers: alone, then beside a hostile client that keeps one forged entry (a
//! member's id, a signature that does not verify) in every block and 1,000 QueryBySubject
//! streams opened and never read. Reports both honest rates and their ratio (issue 25's target:
//! at least one half).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ecgfed_ledger::Ledger;
use ecgfed_ledger::keys::KeyPair;
use ecgfed_proto::v1::{ModelTrained, entry_body::Payload};
use ecgfed_testkit::local::LocalLedger;
use ecgfed_testkit::members::Members;

/// Streams the hostile client opens and never reads.
pub const UNREAD_STREAMS: usize = 1000;

/// Honest entries/s through `clients` streams of `window`, with or without the adversary.
async fn phase(entries_n: u64, clients: usize, window: usize, hostile: bool) -> Result<Phase> {
    let tmp = tempfile::tempdir()?;
    let mut members = Members::new("ecgfed.bench/adversary").scientist("mallory");
    for c in 0..clients {
        members = members.scientist(&format!("sci-{c}"));
    }
    let db = tmp.path().join("db");
    Ledger::init(&db, &members.genesis(), members.ledger_key())?;
    let ledger = Ledger::open(&db, members.ledger_key().clone())?;
    let server = LocalLedger::start(&ledger).await?;
    let url = format!("http://{}", server.addr);
    // A few thousand entries for the unread streams to name.
    let seed = crate::load::signed_models(&members, "mallory", 4096, 9);
    let (_, seed_rejected, _) =
        crate::load::client(url.clone(), members.call_identity("mallory"), seed, 512).await?;
    if seed_rejected > 0 {
        bail!("{seed_rejected} seed entries were rejected");
    }
    let stop = tokio::sync::watch::Sender::new(false);
    let mut hostile_tasks = Vec::new();
    let forged_sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut streams_held = 0u64;
    if hostile {
        // 1,000 streams that are never read.
        let mut held = Vec::new();
        let mut c = ecgfed_ledger::access::connect(url.clone(), None)
            .await
            .map_err(|e| anyhow::anyhow!("connecting to {url}: {e}"))?;
        for _ in 0..UNREAD_STREAMS {
            let asked = c
                .query_by_subject(ecgfed_testkit::payloads::all_models())
                .await;
            match asked {
                Ok(s) => held.push(s.into_inner()),
                // The ledger's per-peer stream limit: the rest are refused at once.
                Err(s) if s.code() == tonic::Code::ResourceExhausted => {}
                Err(e) => return Err(e.into()),
            }
        }
        streams_held = held.len() as u64;
        // One forged entry at a time, as soon as the last was refused: one in every block.
        let forger_key = KeyPair::generate();
        let mut rx_stop = stop.subscribe();
        let sent = std::sync::Arc::clone(&forged_sent);
        let mut mallory = members.signer("mallory");
        let forged_url = url.clone();
        let mallory_id = members.call_identity("mallory");
        hostile_tasks.push(tokio::spawn(async move {
            let _held = held;
            let Ok(mut c) = ecgfed_ledger::access::connect(forged_url, Some(mallory_id)).await
            else {
                return;
            };
            loop {
                let body = mallory.body(Payload::ModelTrained(ModelTrained {
                    model_id: "forged".into(),
                    cohort_id: "cohort".into(),
                    weights_sha256: vec![0; 32],
                    code_version: "forged".into(),
                    hyperparameters_json: "{}".into(),
                    metrics_json: "{}".into(),
                    ..Default::default()
                }));
                let mut e = mallory.sign_body(&body);
                // Signed with a key that is not mallory's: a valid point, a false signature.
                e.signature = forger_key
                    .sign(&ecgfed_ledger::entry::signing_bytes(&e.body))
                    .to_bytes();
                tokio::select! {
                    r = c.submit(e) => {
                        if r.is_ok() {
                            return; // a forged entry accepted: reported below as a failure
                        }
                        sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    _ = rx_stop.changed() => return,
                }
            }
        }));
    }
    let per = entries_n / clients.max(1) as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients.max(1) {
        let list = crate::load::signed_models(&members, &format!("sci-{c}"), per, 2);
        let url = url.clone();
        let id = members.call_identity(&format!("sci-{c}"));
        tasks.push(tokio::spawn(async move {
            crate::load::client(url, id, list, window).await
        }));
    }
    let (mut accepted, mut rejected) = (0u64, 0u64);
    for t in tasks {
        let (l, r, _) = t.await??;
        accepted += l.len() as u64;
        rejected += r;
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    for t in hostile_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let forged = forged_sent.load(std::sync::atomic::Ordering::Relaxed);
    // Not one forged entry may be in the log.
    let store = ledger.store();
    let head = ledger.head();
    for (i, stored) in store.entries(1, head.tree_size)? {
        let (body, _) = ecgfed_ledger::entry::decode_stored(&stored)?;
        let b = ecgfed_ledger::entry::decode_body(body)?;
        if let Some(Payload::ModelTrained(m)) = &b.payload
            && m.model_id == "forged"
        {
            bail!("a forged entry was accepted at index {i}");
        }
    }
    server.stop().await?;
    if rejected > 0 {
        bail!("{rejected} honest submissions were rejected");
    }
    Ok(Phase {
        rate: accepted as f64 / secs,
        accepted,
        forged,
        streams_held,
    })
}

/// What one phase measured.
struct Phase {
    /// Honest entries/s.
    rate: f64,
    /// Honest entries accepted.
    accepted: u64,
    /// Forged entries sent (all refused).
    forged: u64,
    /// Unread streams the ledger kept open (the others were refused at once).
    streams_held: u64,
}

/// Runs both phases; prints the figures.
pub async fn run(entries: u64, clients: usize, window: usize, json: bool) -> Result<()> {
    eprintln!("bench: honest load alone ...");
    let a = phase(entries, clients, window, false).await?;
    eprintln!("bench: honest load beside forged entries and {UNREAD_STREAMS} unread streams ...");
    let h = phase(entries, clients, window, true).await?;
    let (alone, n_alone, hostile, n_hostile, forged, held) = (
        a.rate,
        a.accepted,
        h.rate,
        h.accepted,
        h.forged,
        h.streams_held,
    );
    let ratio = hostile / alone;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "entries": entries, "clients": clients, "window": window,
                "alone": {"accepted": n_alone, "entries_per_second": alone},
                "with_adversary": {"accepted": n_hostile, "entries_per_second": hostile, "forged_refused": forged, "unread_streams": UNREAD_STREAMS, "unread_streams_held": held},
                "ratio": ratio,
            })
        );
    } else {
        println!(
            "adversary bench: honest {alone:.0} entries/s alone, {hostile:.0} entries/s beside {forged} forged entries (all refused) and {UNREAD_STREAMS} unread streams ({held} held, the rest refused by the per-peer limit): {ratio:.2}× (target ≥ 0.5)"
        );
    }
    Ok(())
}
