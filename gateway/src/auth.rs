//! Signed requests (docs/flight.md "Request signatures").
//!
//! Every call carries four ASCII metadata headers:
//! `x-ecgfed-member` (member id), `x-ecgfed-timestamp` (ms since the Unix epoch, decimal),
//! `x-ecgfed-nonce` (u64, decimal) and `x-ecgfed-signature` (hex of a 96-byte BLS signature,
//! the ledger's scheme, docs/ledger.md) over
//!
//! `"ecgfed/v2/request\n" ‖ member ‖ "\n" ‖ site ‖ "\n" ‖ method ‖ "\n" ‖ SHA-256(request) ‖
//!  timestamp (i64 BE) ‖ nonce (u64 BE)`
//!
//! where site is the site of the gateway the request is meant for (a request signed for one
//! gateway does not verify at another), method is the gRPC path
//! (`/ecgfed.v1.GatewayService/Strata`, `/arrow.flight.protocol.FlightService/DoGet`, ...) and
//! request the protobuf encoding of the request message (for DoGet: the `Ticket` message,
//! field 1 = ticket bytes).

use std::collections::HashMap;
use std::sync::{Mutex as StdMutex, RwLock as StdRwLock};
use std::time::{Duration, Instant};

use ecgfed_ledger::client::LedgerClient;
use ecgfed_ledger::entry::now_ms;
use ecgfed_ledger::keys::{KeyPair, Signature};
use ecgfed_ledger::state::MemberInfo;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::keystore::KeyStore;

/// Domain-separation tag of request signatures (v2: the gateway's site is signed).
pub const REQUEST_DST: &[u8] = b"ecgfed/v2/request\n";
/// Header: member id.
pub const H_MEMBER: &str = "x-ecgfed-member";
/// Header: timestamp (ms).
pub const H_TIMESTAMP: &str = "x-ecgfed-timestamp";
/// Header: nonce.
pub const H_NONCE: &str = "x-ecgfed-nonce";
/// Header: signature (hex).
pub const H_SIGNATURE: &str = "x-ecgfed-signature";

/// The bytes a request signature covers; `site` is the site of the gateway addressed.
pub fn signing_bytes(
    member: &str,
    site: &str,
    method: &str,
    request: &[u8],
    ts_ms: i64,
    nonce: u64,
) -> Vec<u8> {
    let mut b =
        Vec::with_capacity(REQUEST_DST.len() + member.len() + site.len() + method.len() + 51);
    b.extend_from_slice(REQUEST_DST);
    b.extend_from_slice(member.as_bytes());
    b.push(b'\n');
    b.extend_from_slice(site.as_bytes());
    b.push(b'\n');
    b.extend_from_slice(method.as_bytes());
    b.push(b'\n');
    b.extend_from_slice(&Sha256::digest(request));
    b.extend_from_slice(&ts_ms.to_be_bytes());
    b.extend_from_slice(&nonce.to_be_bytes());
    b
}

/// Signs requests for one member.
#[derive(Debug)]
pub struct RequestSigner {
    member: String,
    key: KeyPair,
    next_nonce: std::sync::atomic::AtomicU64,
}

impl RequestSigner {
    /// A signer for `member`; nonces start at the current time in nanoseconds.
    pub fn new(member: &str, key: KeyPair) -> Self {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        RequestSigner {
            member: member.to_string(),
            key,
            next_nonce: start.into(),
        }
    }

    /// The member id.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// The key pair.
    pub fn key(&self) -> &KeyPair {
        &self.key
    }

    /// The four headers for a call of `method` at the gateway of `site` with the encoded
    /// `request`, signed now.
    pub fn headers(&self, site: &str, method: &str, request: &[u8]) -> [(&'static str, String); 4] {
        let nonce = self
            .next_nonce
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.headers_at(site, method, request, now_ms(), nonce)
    }

    /// The headers with a given timestamp and nonce (tests of freshness and replay use it).
    pub fn headers_at(
        &self,
        site: &str,
        method: &str,
        request: &[u8],
        ts_ms: i64,
        nonce: u64,
    ) -> [(&'static str, String); 4] {
        let sig = self.key.sign(&signing_bytes(
            &self.member,
            site,
            method,
            request,
            ts_ms,
            nonce,
        ));
        [
            (H_MEMBER, self.member.clone()),
            (H_TIMESTAMP, ts_ms.to_string()),
            (H_NONCE, nonce.to_string()),
            (H_SIGNATURE, hex::encode(sig.to_bytes())),
        ]
    }

    /// Wraps `msg` in a request to the gateway of `site` carrying its signature headers.
    pub fn request<T: prost::Message>(
        &self,
        site: &str,
        method: &str,
        msg: T,
    ) -> tonic::Request<T> {
        let bytes = msg.encode_to_vec();
        let mut r = tonic::Request::new(msg);
        add_headers(r.metadata_mut(), &self.headers(site, method, &bytes));
        r
    }
}

/// Inserts signature headers into gRPC metadata.
pub fn add_headers(md: &mut MetadataMap, headers: &[(&'static str, String)]) {
    for (k, v) in headers {
        if let Ok(v) = v.parse() {
            md.insert(*k, v);
        }
    }
}

/// Shortest time between two refreshes of the members that an unknown member id triggers: a
/// flood of requests naming unknown ids costs the ledger one member sync per interval.
pub const MEMBER_REFRESH_INTERVAL: Duration = Duration::from_secs(2);

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

    /// The member `id`, or `Ok(None)` when the replayed members do not include it. An unknown
    /// id brings the members up to the ledger's latest checkpoint, at most once per
    /// [`MEMBER_REFRESH_INTERVAL`] and one refresh at a time (callers waiting meanwhile see its
    /// result).
    pub async fn get(&self, id: &str) -> Result<Option<MemberInfo>, Status> {
        if let Some(m) = self.lookup(id) {
            return Ok(Some(m));
        }
        if self.refreshed_lately() {
            return Ok(None);
        }
        let mut ledger = self.ledger.lock().await;
        if let Some(m) = self.lookup(id) {
            return Ok(Some(m));
        }
        if self.refreshed_lately() {
            return Ok(None);
        }
        if let Ok(mut t) = self.last_refresh.lock() {
            *t = Some(Instant::now());
        }
        self.refreshes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let unavailable =
            |e: ecgfed_ledger::client::ClientError| Status::unavailable(format!("members: {e}"));
        ledger.update_checkpoint().await.map_err(unavailable)?;
        let fresh = ledger
            .sync_members()
            .await
            .map_err(unavailable)?
            .state()
            .members
            .clone();
        if let Ok(mut k) = self.known.write() {
            *k = fresh;
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
pub async fn authenticate(
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
