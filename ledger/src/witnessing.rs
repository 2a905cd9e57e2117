//! The ledger's side of witnessing: behind the write path (submitters are answered when their
//! entry is durable, not when it is witnessed), a task takes the newest signed checkpoint,
//! asks every witness to cosign it with a consistency proof from the size that witness
//! cosigned last, and once a quorum answered stores and serves the checkpoint with the signer
//! bitmap and one aggregate signature (docs/ledger.md, "Witnesses").

use std::sync::{Arc, Weak};
use std::time::Duration;

use ecgfed_proto::v1::AddCheckpointRequest;
use ecgfed_proto::v1::witness_service_client::WitnessServiceClient;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tonic::transport::{Channel, Endpoint};

use crate::checkpoint::Checkpoint;
use crate::cosign::{WitnessPolicy, cosign_message};
use crate::keys::{PublicKey, Signature};
use crate::protocol::MAX_MESSAGE_BYTES;
use crate::sequencer::{Latest, Ledger, LedgerError};

/// Longest wait for one witness's answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// Once a quorum answered, how long the others still get to be named on the checkpoint.
const GRACE: Duration = Duration::from_millis(20);
/// Shortest time from the start of one round to the next: under load, one round covers every
/// block committed meanwhile, and the witnesses' work (a pairing check, a signature, a synced
/// write each) stays bounded at 20 rounds a second.
const ROUND_INTERVAL: Duration = Duration::from_millis(50);
/// Most cosignatures asked for a second, all witnesses together: with many witnesses, rounds
/// are spaced further apart (16 witnesses: one round every 250 ms), so that what the
/// federation spends on witnessing stays about that of 3 witnesses at 20 rounds a second,
/// while a checkpoint is still witnessed well within a second.
const COSIGNATURES_PER_SECOND: u64 = 64;

/// The time from one round's start to the next for `witnesses` witnesses.
fn round_interval(witnesses: usize) -> Duration {
    ROUND_INTERVAL.max(Duration::from_millis(
        1000 * witnesses as u64 / COSIGNATURES_PER_SECOND,
    ))
}
/// Pause after a round without a quorum (doubling up to [`MAX_BACKOFF`]).
const BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A witness the ledger asks: its member id (as the genesis names it) and gRPC address, or
/// `@FILE`: a file that will hold the address (a gateway writes `listening` in its data folder
/// once it serves), read until it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessPeer {
    /// Member id.
    pub id: String,
    /// `host:port` or a URI.
    pub address: String,
}

impl std::str::FromStr for WitnessPeer {
    type Err = String;

    /// Parses `ID=ADDRESS`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (id, address) = s
            .split_once('=')
            .filter(|(i, a)| !i.is_empty() && !a.is_empty())
            .ok_or_else(|| format!("{s:?}: expected WITNESS_ID=HOST:PORT"))?;
        Ok(WitnessPeer {
            id: id.into(),
            address: address.into(),
        })
    }
}

/// How the ledger reaches witnesses over TLS: the certificate authorities it trusts for their
/// certificates (PEM, one or more certificates) and, optionally, the name to check in them
/// instead of each address's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessTls {
    /// Trusted certificate authorities, PEM.
    pub ca_pem: Vec<u8>,
    /// The name the witnesses' certificates are issued for, when not their address's host.
    pub domain: Option<String>,
}

struct Peer {
    position: usize,
    id: String,
    address: String,
    tls: Option<WitnessTls>,
    client: Option<WitnessServiceClient<Channel>>,
    /// The size this witness cosigned last, as far as the ledger knows.
    known: u64,
}

impl Ledger {
    /// Starts the witnessing task for this ledger's witnesses at `peers` (on the current tokio
    /// runtime). Every peer must be a witness of the genesis; witnesses left out are warned
    /// about (a quorum may still be reachable without them).
    pub fn start_witnessing(self: &Arc<Self>, peers: &[WitnessPeer]) -> Result<(), LedgerError> {
        self.start_witnessing_with(peers, None)
    }

    /// [`Ledger::start_witnessing`], reaching every witness over TLS when `tls` is given.
    pub fn start_witnessing_with(
        self: &Arc<Self>,
        peers: &[WitnessPeer],
        tls: Option<WitnessTls>,
    ) -> Result<(), LedgerError> {
        let policy = self.witness_policy().clone();
        let bad = |reason: String| LedgerError::Invalid {
            path: self.store().path().display().to_string(),
            reason,
        };
        if !policy.is_witnessed() {
            if peers.is_empty() {
                return Ok(());
            }
            return Err(bad(
                "witnesses were given, but the genesis names none".into()
            ));
        }
        let mut list = Vec::new();
        for p in peers {
            let position = policy
                .position(&p.id)
                .ok_or_else(|| bad(format!("{} is not a witness of the genesis", p.id)))?;
            let mut peer = Peer {
                position,
                id: p.id.clone(),
                address: p.address.clone(),
                tls: tls.clone(),
                client: None,
                known: 0,
            };
            if !p.address.starts_with('@') {
                peer.connect(&p.address).map_err(bad)?;
            }
            list.push(peer);
        }
        if list.len() < policy.quorum {
            tracing::warn!(
                "{} witness addresses given; the genesis needs {} cosignatures per checkpoint: nothing new will be witnessed",
                list.len(),
                policy.quorum
            );
        }
        for w in &policy.witnesses {
            if !peers.iter().any(|p| p.id == w.id) {
                tracing::warn!(witness = %w.id, "no address given for this witness");
            }
        }
        let done = self.store().witnessed_size().map_err(LedgerError::Store)?;
        let weak = Arc::downgrade(self);
        let signed = self.watch_signed();
        let stopping = self.stopping.subscribe();
        tokio::spawn(run(weak, policy, list, done, signed, stopping));
        Ok(())
    }
}

async fn run(
    ledger: Weak<Ledger>,
    policy: WitnessPolicy,
    mut peers: Vec<Peer>,
    mut done: u64,
    mut signed: tokio::sync::watch::Receiver<Latest>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF;
    let interval = round_interval(peers.len());
    loop {
        if *stopping.borrow() {
            return;
        }
        let target = signed.borrow_and_update().clone();
        if target.size <= done {
            tokio::select! {
                r = signed.changed() => if r.is_err() { return },
                _ = stopping.changed() => return,
            }
            continue;
        }
        let Some(l) = ledger.upgrade() else { return };
        let (origin, key) = l.identity();
        let Ok(cp) = Checkpoint::verify(&target.note, &origin, &key) else {
            tracing::error!(
                size = target.size,
                "the ledger's own checkpoint does not verify"
            );
            return;
        };
        let started = tokio::time::Instant::now();
        let sigs = round(&l, &mut peers, &policy, &target, &cp).await;
        if sigs.len() >= policy.quorum {
            match policy
                .witness_note(&target.note, &origin, &sigs)
                .map_err(|e| e.to_string())
                .and_then(|note| {
                    l.publish_witnessed(target.size, note)
                        .map_err(|e| e.to_string())
                }) {
                Ok(()) => {
                    done = target.size;
                    backoff = BACKOFF;
                    drop(l);
                    tokio::time::sleep_until(started + interval).await;
                }
                Err(e) => tracing::error!(
                    size = target.size,
                    "cannot store the witnessed checkpoint: {e}"
                ),
            }
        } else {
            tracing::warn!(
                size = target.size,
                "{} of the {} cosignatures needed; retrying in {:?}",
                sigs.len(),
                policy.quorum,
                backoff
            );
            drop(l);
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stopping.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Asks every peer to cosign `target`; returns the cosignatures that verify, once every peer
/// answered or a quorum did and [`GRACE`] passed. The answers are checked together (one
/// aggregate verification); only when that fails is each checked alone, and the bad ones
/// dropped.
async fn round(
    ledger: &Ledger,
    peers: &mut [Peer],
    policy: &WitnessPolicy,
    target: &Latest,
    cp: &Checkpoint,
) -> Vec<(usize, Signature)> {
    let msg = cosign_message(cp);
    let mut pending: FuturesUnordered<_> =
        peers.iter_mut().map(|p| ask(ledger, p, target)).collect();
    let mut got: Vec<(usize, Signature)> = Vec::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, pending.next()).await {
                Ok(n) => n,
                Err(_) => break,
            },
            None => pending.next().await,
        };
        let Some(answer) = next else { break };
        if let Some(s) = answer {
            got.push(s);
            if got.len() >= policy.quorum && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + GRACE);
            }
        }
    }
    drop(pending);
    let keys: Vec<PublicKey> = got.iter().map(|(i, _)| policy.witnesses[*i].key).collect();
    let sigs: Vec<Signature> = got.iter().map(|(_, s)| *s).collect();
    let all_good = match (PublicKey::aggregate(&keys), Signature::aggregate(&sigs)) {
        (Some(k), Ok(s)) => k.verify(&msg, &s),
        _ => got.is_empty(),
    };
    if !all_good {
        got.retain(|(i, s)| {
            let ok = policy.witnesses[*i].key.verify(&msg, s);
            if !ok {
                tracing::warn!(witness = %policy.witnesses[*i].id, "cosignature does not verify under its key");
            }
            ok
        });
    }
    got
}

impl Peer {
    fn connect(&mut self, address: &str) -> Result<(), String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let url = if address.contains("://") {
            address.to_string()
        } else {
            format!("{scheme}://{address}")
        };
        let bad = |e: &dyn std::fmt::Display| format!("witness {} address {address}: {e}", self.id);
        let mut ep = Endpoint::from_shared(url)
            .map_err(|e| bad(&e))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true);
        if let Some(t) = &self.tls {
            let mut cfg = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&t.ca_pem));
            if let Some(d) = &t.domain {
                cfg = cfg.domain_name(d.clone());
            }
            ep = ep.tls_config(cfg).map_err(|e| bad(&e))?;
        }
        let ch = ep.connect_lazy();
        self.client = Some(
            WitnessServiceClient::new(ch)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        );
        Ok(())
    }

    /// Drops the client of an address read from a file (the witness may have restarted on
    /// another port): the file is read again next time.
    fn forget_address(&mut self) {
        if self.address.starts_with('@') {
            self.client = None;
        }
    }

    /// The client, connecting first when the address comes from a file that now exists.
    fn client(&mut self) -> Option<WitnessServiceClient<Channel>> {
        if self.client.is_none()
            && let Some(file) = self.address.strip_prefix('@')
            && let Ok(text) = std::fs::read_to_string(file)
            && let Err(e) = self.connect(text.trim())
        {
            tracing::warn!("{e}");
        }
        self.client.clone()
    }
}

/// One peer's cosignature of `target` (retrying once from the size it says it holds), not yet
/// checked ([`round`] checks them together).
async fn ask(ledger: &Ledger, p: &mut Peer, target: &Latest) -> Option<(usize, Signature)> {
    let mut client = p.client()?;
    for _ in 0..2 {
        if p.known > target.size {
            return None;
        }
        let consistency = if p.known > 0 && p.known < target.size {
            match ledger.prove_consistency(p.known, target.size) {
                Ok(h) => h.into_iter().map(|h| h.to_vec()).collect(),
                Err(e) => {
                    tracing::warn!(witness = %p.id, "consistency proof from {}: {}", p.known, e.message);
                    return None;
                }
            }
        } else {
            Vec::new()
        };
        let req = AddCheckpointRequest {
            old_size: p.known,
            note: target.note.clone(),
            consistency,
        };
        let r = match tokio::time::timeout(PEER_TIMEOUT, client.add_checkpoint(req)).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(s)) => {
                tracing::warn!(witness = %p.id, size = target.size, "refused to cosign: {}", s.message());
                p.forget_address();
                return None;
            }
            Err(_) => {
                tracing::debug!(witness = %p.id, "no answer within {PEER_TIMEOUT:?}");
                p.forget_address();
                return None;
            }
        };
        if r.cosignature.is_empty() {
            p.known = r.known_size;
            continue;
        }
        let sig = Signature::from_bytes(&r.cosignature).ok()?;
        p.known = target.size;
        return Some((p.position, sig));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_space_out_with_many_witnesses() {
        assert_eq!(round_interval(0), ROUND_INTERVAL);
        assert_eq!(round_interval(3), Duration::from_millis(50));
        assert_eq!(round_interval(16), Duration::from_millis(250));
        assert_eq!(round_interval(64), Duration::from_secs(1));
    }
}
