//! Authentication of signed requests (docs/flight.md "Request signatures"): the four headers,
//! freshness, the one-use nonce, the signature under the key of a member the gateway replayed
//! from the ledger itself ([`Members`]). The signed bytes are [`crate::protocol::signing_bytes`].

use std::collections::HashMap;
use std::sync::{Mutex as StdMutex, RwLock as StdRwLock};
use std::time::{Duration, Instant};

use ecgfed_ledger::client::LedgerClient;
use ecgfed_ledger::entry::now_ms;
use ecgfed_ledger::keys::Signature;
use ecgfed_ledger::state::MemberInfo;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::protocol::{H_MEMBER, H_NONCE, H_SIGNATURE, H_TIMESTAMP, signing_bytes};
use crate::server::keystore::KeyStore;

/// Shortest time between two refreshes of the members that an unknown member id triggers: a
/// flood of requests naming unknown ids costs the ledger one member sync per interval.
pub(super) const MEMBER_REFRESH_INTERVAL: Duration = Duration::from_secs(2);

/// Members as this gateway replayed them from proven ledger entries with the ledger's own
/// rules ([`LedgerClient::sync_members`]): genesis members and every admission whose hospital
/// approvals, proof of possession and entry signature verify. A member the ledger admitted
/// against its rules is unknown here.
pub struct Members {
    ledger: tokio::sync::Mutex<LedgerClient>,
    known: StdRwLock<HashMap<String, MemberInfo>>,
    last_refresh: StdMutex<Option<Instant>>,
    refreshes: std::sync::atomic::AtomicU64,
}

impl Members {
    /// Replays the members over a verifying ledger client (its checkpoint updated first).
    pub async fn new(mut ledger: LedgerClient) -> crate::error::Result<Self> {
        ledger.update_checkpoint().await?;
        let known = ledger.sync_members().await?.state().members.clone();
        Ok(Members {
            ledger: tokio::sync::Mutex::new(ledger),
            known: StdRwLock::new(known),
            last_refresh: StdMutex::new(Some(Instant::now())),
            refreshes: Default::default(),
        })
    }

    /// The ledger client (shared).
    pub fn ledger(&self) -> &tokio::sync::Mutex<LedgerClient> {
        &self.ledger
    }

    /// How many times an unknown id refreshed the members since the gateway started.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lookup(&self, id: &str) -> Option<MemberInfo> {
        self.known.read().ok().and_then(|k| k.get(id).cloned())
    }

    fn refreshed_lately(&self) -> bool {
        self.last_refresh
            .lock()
            .ok()
            .and_then(|t| *t)
            .is_some_and(|t| t.elapsed() < MEMBER_REFRESH_INTERVAL)
    }

    /// The member `id`, or `Ok(None)` when the replayed members do not include it (never
    /// admitted, or revoked). The members are brought up to the ledger's latest checkpoint
    /// first when they were last replayed more than [`MEMBER_REFRESH_INTERVAL`] ago (one
    /// refresh at a time; callers waiting meanwhile see its result), so an admission or a
    /// revocation is honoured within that interval.
    pub async fn get(&self, id: &str) -> Result<Option<MemberInfo>, Status> {
        if self.refreshed_lately() {
            return Ok(self.lookup(id));
        }
        let mut ledger = self.ledger.lock().await;
        if self.refreshed_lately() {
            return Ok(self.lookup(id));
        }
        if let Ok(mut t) = self.last_refresh.lock() {
            *t = Some(Instant::now());
        }
        self.refreshes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fresh = match ledger.update_checkpoint().await {
            Ok(_) => ledger
                .sync_members()
                .await
                .map(|m| m.state().members.clone()),
            Err(e) => Err(e),
        };
        match fresh {
            Ok(fresh) => {
                if let Ok(mut k) = self.known.write() {
                    *k = fresh;
                }
            }
            // A ledger answer that does not verify stops the gateway trusting it; a ledger
            // that cannot be reached leaves the members as last replayed (a revocation is
            // honoured once it answers again).
            Err(e) if e.is_verification() => {
                return Err(Status::unavailable(format!("members: {e}")));
            }
            Err(e) => tracing::warn!("members not refreshed: {e}"),
        }
        Ok(self.lookup(id))
    }
}

fn header<'a>(md: &'a MetadataMap, name: &str) -> Result<&'a str, Status> {
    md.get(name)
        .ok_or_else(|| {
            Status::unauthenticated(format!(
                "request is not signed: header {name} is missing (see docs/flight.md, \"Request signatures\")"
            ))
        })?
        .to_str()
        .map_err(|_| Status::unauthenticated(format!("header {name} is not ASCII")))
}

/// Checks a request's signature headers: present, fresh within `max_age_ms`, by a known
/// member, signature valid for this gateway's `site`, nonce not used before (recorded in
/// `keys`, atomically and durably). Returns the caller.
pub(super) async fn authenticate(
    md: &MetadataMap,
    site: &str,
    method: &str,
    request: &[u8],
    members: &Members,
    keys: &KeyStore,
    max_age_ms: u64,
) -> Result<MemberInfo, Status> {
    let member = header(md, H_MEMBER)?;
    let ts: i64 = header(md, H_TIMESTAMP)?
        .parse()
        .map_err(|_| Status::unauthenticated(format!("{H_TIMESTAMP} is not an integer")))?;
    let nonce: u64 = header(md, H_NONCE)?
        .parse()
        .map_err(|_| Status::unauthenticated(format!("{H_NONCE} is not an unsigned integer")))?;
    let sig_hex = header(md, H_SIGNATURE)?;
    let now = now_ms();
    if now.abs_diff(ts) > max_age_ms {
        return Err(Status::unauthenticated(format!(
            "request timestamp {ts} is {} ms away from the gateway's clock (allowed ±{max_age_ms} ms): expired or clock skew; sign each request just before sending it",
            now.abs_diff(ts)
        )));
    }
    let sig = hex::decode(sig_hex)
        .ok()
        .and_then(|b| Signature::from_bytes(&b).ok())
        .ok_or_else(|| {
            Status::unauthenticated(format!(
                "{H_SIGNATURE} is not a hex BLS signature of 96 bytes"
            ))
        })?;
    let info = members.get(member).await?.ok_or_else(|| {
        Status::unauthenticated(format!("{member:?} is not a member of the ledger"))
    })?;
    if !info.key.verify(
        &signing_bytes(member, site, method, request, ts, nonce),
        &sig,
    ) {
        return Err(Status::unauthenticated(format!(
            "request signature does not verify under member {member:?}'s key for site {site:?} (method {method}); requests are signed for one gateway's site"
        )));
    }
    let fresh = keys
        .use_nonce(member, nonce, ts, now, max_age_ms.saturating_mul(2))
        .map_err(|e| Status::internal(e.to_string()))?;
    if !fresh {
        return Err(Status::new(
            Code::AlreadyExists,
            format!("request nonce {nonce} of member {member:?} was used before: replayed request"),
        ));
    }
    Ok(info)
}
