//! The load client the ledger benches share: pre-signed entries pushed through one
//! SubmitStream with a bounded number unanswered.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use ecgfed_ledger::access::CallIdentity;
use ecgfed_proto::v1::SignedEntry;
use ecgfed_proto::v1::{ModelTrained, entry_body::Payload};
use ecgfed_testkit::members::Members;
use tokio::sync::Semaphore;
use tokio_stream::StreamExt;

/// What one load client saw: submit→ack latencies (ms), rejections, and when each accepted
/// entry (by index) was acknowledged.
pub type ClientRun = (Vec<f64>, u64, Vec<(u64, Instant)>);

/// Pushes `list` through one SubmitStream with at most `window` unanswered, as member `id`
/// (its call token).
pub async fn client(
    url: String,
    id: Arc<CallIdentity>,
    list: Vec<SignedEntry>,
    window: usize,
) -> Result<ClientRun> {
    let mut c = ecgfed_ledger::access::connect(url.clone(), Some(id))
        .await
        .map_err(|e| anyhow::anyhow!("connecting to {url}: {e}"))?;
    let n = list.len();
    let sem = Arc::new(Semaphore::new(window));
    let sent: Arc<std::sync::Mutex<Vec<Instant>>> =
        Arc::new(std::sync::Mutex::new(Vec::with_capacity(n)));
    let (tx, rx) = tokio::sync::mpsc::channel(window);
    let (sem2, sent2) = (Arc::clone(&sem), Arc::clone(&sent));
    tokio::spawn(async move {
        for e in list {
            let Ok(p) = sem2.acquire().await else { return };
            p.forget();
            if let Ok(mut s) = sent2.lock() {
                s.push(Instant::now());
            }
            if tx.send(e).await.is_err() {
                return;
            }
        }
    });
    let mut answers = c
        .submit_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut lat = Vec::with_capacity(n);
    let mut acks = Vec::with_capacity(n);
    let mut rejected = 0;
    let mut i = 0;
    while let Some(r) = answers.next().await {
        let r = r?;
        let t0 = sent
            .lock()
            .ok()
            .and_then(|s| s.get(i).copied())
            .unwrap_or_else(Instant::now);
        if r.code == 0 {
            lat.push(t0.elapsed().as_secs_f64() * 1e3);
            acks.push((r.index, Instant::now()));
        } else {
            rejected += 1;
            if rejected == 1 {
                eprintln!("bench: rejected: {}", r.message);
            }
        }
        sem.add_permits(1);
        i += 1;
        if i == n {
            break;
        }
    }
    Ok((lat, rejected, acks))
}

/// `n` pre-signed `ModelTrained` entries of member `who` (distinct by `tag` and index).
pub fn signed_models(members: &Members, who: &str, n: u64, tag: u64) -> Vec<SignedEntry> {
    let mut s = members.signer(who);
    (0..n)
        .map(|i| {
            let mut w = [0u8; 32];
            w[..8].copy_from_slice(&i.to_be_bytes());
            w[8..16].copy_from_slice(&tag.to_be_bytes());
            s.sign(Payload::ModelTrained(ModelTrained {
                model_id: format!("model-{tag}-{i}"),
                cohort_id: "cohort".into(),
                weights_sha256: w.to_vec(),
                code_version: "bench".into(),
                hyperparameters_json: "{}".into(),
                metrics_json: "{}".into(),
                ..Default::default()
            }))
        })
        .collect()
}
