//! Signed requests (docs/flight.md "Request signatures").
//!
//! Every call carries four ASCII metadata headers:
//! `x-ecgfed-member` (member id), `x-ecgfed-timestamp` (ms since the Unix epoch, decimal),
//! `x-ecgfed-nonce` (u64, decimal) and `x-ecgfed-signature` (hex of a 96-byte BLS signature,
//! the ledger's scheme, docs/ledger.md) over
//!
//! `"ecgfed/v1/request\n" ‖ member ‖ "\n" ‖ method ‖ "\n" ‖ SHA-256(request) ‖
//!  timestamp (i64 BE) ‖ nonce (u64 BE)`
//!
//! where method is the gRPC path (`/ecgfed.v1.GatewayService/Strata`,
//! `/arrow.flight.protocol.FlightService/DoGet`, ...) and request the protobuf encoding of the
//! request message (for DoGet: the `Ticket` message, field 1 = ticket bytes).

use std::collections::HashMap;
use std::sync::Mutex as StdMutex;

use ecgfed_ledger::client::LedgerClient;
use ecgfed_ledger::entry::now_ms;
use ecgfed_ledger::keys::{KeyPair, Signature};
use ecgfed_ledger::state::{MemberInfo, check_member};
use ecgfed_proto::v1::SubjectKind;
use ecgfed_proto::v1::entry_body::Payload;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::keystore::KeyStore;

/// Domain-separation tag of request signatures.
pub const REQUEST_DST: &[u8] = b"ecgfed/v1/request\n";
/// Header: member id.
pub const H_MEMBER: &str = "x-ecgfed-member";
/// Header: timestamp (ms).
pub const H_TIMESTAMP: &str = "x-ecgfed-timestamp";
/// Header: nonce.
pub const H_NONCE: &str = "x-ecgfed-nonce";
/// Header: signature (hex).
pub const H_SIGNATURE: &str = "x-ecgfed-signature";

/// The bytes a request signature covers.
pub fn signing_bytes(
    member: &str,
    method: &str,
    request: &[u8],
    ts_ms: i64,
    nonce: u64,
) -> Vec<u8> {
    let mut b = Vec::with_capacity(REQUEST_DST.len() + member.len() + method.len() + 50);
    b.extend_from_slice(REQUEST_DST);
    b.extend_from_slice(member.as_bytes());
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

    /// The four headers for a call of `method` with the encoded `request`, signed now.
    pub fn headers(&self, method: &str, request: &[u8]) -> [(&'static str, String); 4] {
        let nonce = self
            .next_nonce
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.headers_at(method, request, now_ms(), nonce)
    }

    /// The headers with a given timestamp and nonce (tests of freshness and replay use it).
    pub fn headers_at(
        &self,
        method: &str,
        request: &[u8],
        ts_ms: i64,
        nonce: u64,
    ) -> [(&'static str, String); 4] {
        let sig = self
            .key
            .sign(&signing_bytes(&self.member, method, request, ts_ms, nonce));
        [
            (H_MEMBER, self.member.clone()),
            (H_TIMESTAMP, ts_ms.to_string()),
            (H_NONCE, nonce.to_string()),
            (H_SIGNATURE, hex::encode(sig.to_bytes())),
        ]
    }

    /// Wraps `msg` in a request carrying its signature headers.
    pub fn request<T: prost::Message>(&self, method: &str, msg: T) -> tonic::Request<T> {
        let bytes = msg.encode_to_vec();
        let mut r = tonic::Request::new(msg);
        add_headers(r.metadata_mut(), &self.headers(method, &bytes));
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

/// Members as the ledger knows them, looked up on demand and cached (members are never
/// removed from the ledger).
pub struct Members {
    ledger: tokio::sync::Mutex<LedgerClient>,
    cache: StdMutex<HashMap<String, MemberInfo>>,
}

impl Members {
    /// A directory over a verifying ledger client.
    pub fn new(ledger: LedgerClient) -> Self {
        Members {
            ledger: tokio::sync::Mutex::new(ledger),
            cache: StdMutex::new(HashMap::new()),
        }
    }

    /// The ledger client (shared).
    pub fn ledger(&self) -> &tokio::sync::Mutex<LedgerClient> {
        &self.ledger
    }

    /// The member `id`: the first entry defining it (genesis or admission), proven included in
    /// the ledger's signed log. `Ok(None)` when the ledger has no such member.
    pub async fn get(&self, id: &str) -> Result<Option<MemberInfo>, Status> {
        if let Some(m) = self.cache.lock().ok().and_then(|c| c.get(id).cloned()) {
            return Ok(Some(m));
        }
        let mut ledger = self.ledger.lock().await;
        let mut from = 0u64;
        loop {
            let page =
                crate::client::ledger_payloads_page(&mut ledger, SubjectKind::Member, id, from, 64)
                    .await
                    .map_err(|e| Status::unavailable(format!("looking up member {id:?}: {e}")))?;
            let Some(&(last, _)) = page.last() else {
                return Ok(None);
            };
            for (index, payload) in page {
                let defined = match payload {
                    Payload::Genesis(g) => g.members.into_iter().find(|m| m.id == id),
                    Payload::MemberAdmitted(a) => a.member.filter(|m| m.id == id),
                    _ => None,
                };
                if let Some(m) = defined {
                    let info = check_member(&m).map_err(|r| {
                        Status::internal(format!("ledger entry {index}: {}", r.message))
                    })?;
                    if let Ok(mut c) = self.cache.lock() {
                        c.insert(id.to_string(), info.clone());
                    }
                    return Ok(Some(info));
                }
            }
            from = last + 1;
        }
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
/// member, signature valid, nonce not used before (recorded in `keys`). Returns the caller.
pub async fn authenticate(
    md: &MetadataMap,
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
    if !info
        .key
        .verify(&signing_bytes(member, method, request, ts, nonce), &sig)
    {
        return Err(Status::unauthenticated(format!(
            "request signature does not verify under member {member:?}'s key (method {method})"
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
