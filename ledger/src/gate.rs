//! Who may call the ledger service, and how much (docs/ledger.md "Connections"): writes only
//! from members with a valid call token ([`crate::access`]); a bounded number of entries in
//! flight per member, so that no member's flood queues without end; a bounded number of open
//! streams per member (per network address for callers without a token); and failed token
//! checks limited per network address, so that forged tokens cost the ledger little.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Request, Status};

use crate::access::{CallToken, MEMBER_HEADER, TOKEN_HEADER, TOKEN_LIFETIME_MS, TokenError};
use crate::sequencer::Ledger;

/// The service's per-peer limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries one member may have in flight (being checked, queued or committing) at once:
    /// a stream waits for room, a single submission beyond it is refused.
    pub inflight_per_member: usize,
    /// Streaming calls (QueryBySubject, WatchBlocks, waits for a witnessed checkpoint) one
    /// member, or one network address without a token, may have open at once.
    pub streams_per_peer: usize,
    /// Call tokens that fail their check, per network address and second, before further
    /// ones are refused without being checked.
    pub failed_tokens_per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            inflight_per_member: 4096,
            streams_per_peer: 64,
            failed_tokens_per_second: 20,
        }
    }
}

/// Whom a stream counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A member (its call token verified).
    Member(String),
    /// A caller without a token, by network address.
    Address(IpAddr),
}

/// Most verified tokens remembered (the cache is emptied when it is full).
const TOKEN_CACHE: usize = 16_384;

/// The service's gatekeeper.
#[derive(Debug)]
pub struct Gate {
    ledger: Arc<Ledger>,
    limits: Limits,
    /// Verified tokens: `member \n header value` → the token's time.
    verified: Mutex<HashMap<String, i64>>,
    /// Failed token checks per address: (second, count in it).
    failures: Mutex<HashMap<IpAddr, (i64, u32)>>,
    inflight: Mutex<HashMap<String, Arc<Semaphore>>>,
    streams: Mutex<HashMap<Peer, usize>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Gate {
    /// The gatekeeper of `ledger`'s service.
    pub fn new(ledger: Arc<Ledger>, limits: Limits) -> Self {
        Gate {
            ledger,
            limits,
            verified: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The member a call comes from: `None` for a call without a token, an error for a token
    /// that does not verify (or for too many failed ones from the caller's address).
    pub fn caller<T>(&self, req: &Request<T>) -> Result<Option<String>, Status> {
        let md = req.metadata();
        let member = md.get(MEMBER_HEADER).and_then(|v| v.to_str().ok());
        let token = md.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
        if member.is_none() && token.is_none() {
            return Ok(None);
        }
        let ip = req
            .remote_addr()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let now = crate::entry::now_ms();
        let fresh = |t: i64| (now - t).abs() <= TOKEN_LIFETIME_MS;
        let id = member.unwrap_or_default();
        let key = format!("{id}\n{}", token.unwrap_or_default());
        let cached = lock(&self.verified).get(&key).copied();
        if let Some(t) = cached
            && fresh(t)
            && self.ledger.member_key(id).is_some()
        {
            return Ok(Some(id.to_string()));
        }
        {
            let sec = now / 1000;
            let f = lock(&self.failures);
            if let Some(&(s, n)) = f.get(&ip)
                && s == sec
                && n >= self.limits.failed_tokens_per_second
            {
                return Err(Status::resource_exhausted(format!(
                    "too many call tokens from {ip} failed their check this second; try again later"
                )));
            }
        }
        let checked = self.check(member, token, now);
        match checked {
            Ok((member, time)) => {
                let mut v = lock(&self.verified);
                if v.len() >= TOKEN_CACHE {
                    v.clear();
                }
                v.insert(key, time);
                Ok(Some(member))
            }
            Err(e) => {
                let sec = now / 1000;
                let mut f = lock(&self.failures);
                if f.len() >= TOKEN_CACHE {
                    f.clear();
                }
                let slot = f.entry(ip).or_insert((sec, 0));
                if slot.0 != sec {
                    *slot = (sec, 0);
                }
                slot.1 += 1;
                Err(e)
            }
        }
    }

    fn check(
        &self,
        member: Option<&str>,
        token: Option<&str>,
        now: i64,
    ) -> Result<(String, i64), Status> {
        let t = CallToken::parse(member, token)
            .map_err(|e: TokenError| Status::unauthenticated(e.to_string()))?;
        if (now - t.time_ms).abs() > TOKEN_LIFETIME_MS {
            return Err(Status::unauthenticated(format!(
                "the call token of {} was signed at {} ms, more than {} s from the ledger's clock ({now} ms)",
                t.member,
                t.time_ms,
                TOKEN_LIFETIME_MS / 1000
            )));
        }
        let key = self.ledger.member_key(&t.member).ok_or_else(|| {
            Status::unauthenticated(format!(
                "{:?} is not a member of this ledger (or was revoked)",
                t.member
            ))
        })?;
        if !t.verify(&self.ledger.identity().0, &key) {
            return Err(Status::unauthenticated(format!(
                "the call token of {} does not verify with its key",
                t.member
            )));
        }
        Ok((t.member, t.time_ms))
    }

    /// The member a write call comes from; calls without a token are refused.
    pub fn writer<T>(&self, req: &Request<T>) -> Result<String, Status> {
        self.caller(req)?
            .ok_or_else(|| Status::unauthenticated(TokenError::Missing.to_string()))
    }

    /// Whom a stream of this call counts against.
    pub fn peer<T>(&self, req: &Request<T>) -> Result<Peer, Status> {
        Ok(match self.caller(req)? {
            Some(m) => Peer::Member(m),
            None => Peer::Address(
                req.remote_addr()
                    .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip()),
            ),
        })
    }

    /// Takes one of `peer`'s stream slots until the slot is dropped; refused when all are
    /// taken.
    pub fn open_stream(self: &Arc<Self>, peer: Peer) -> Result<StreamSlot, Status> {
        let mut s = lock(&self.streams);
        let n = s.entry(peer.clone()).or_insert(0);
        if *n >= self.limits.streams_per_peer {
            return Err(Status::resource_exhausted(format!(
                "{} has {} streams open at the ledger, the most it may; close one first",
                describe(&peer),
                *n
            )));
        }
        *n += 1;
        Ok(StreamSlot {
            gate: Arc::clone(self),
            peer,
        })
    }

    fn semaphore(&self, member: &str) -> Arc<Semaphore> {
        Arc::clone(
            lock(&self.inflight)
                .entry(member.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.limits.inflight_per_member))),
        )
    }

    /// Room for one more entry of `member` in flight, waiting for it.
    pub async fn inflight(&self, member: &str) -> Result<OwnedSemaphorePermit, Status> {
        self.semaphore(member)
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("the ledger is stopping"))
    }

    /// Room for one more entry of `member` in flight, or a refusal when it has none.
    pub fn try_inflight(&self, member: &str) -> Result<OwnedSemaphorePermit, Status> {
        self.semaphore(member).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "member {member} has {} entries in flight at the ledger, the most it may; wait for answers",
                self.limits.inflight_per_member
            ))
        })
    }
}

fn describe(p: &Peer) -> String {
    match p {
        Peer::Member(m) => format!("member {m}"),
        Peer::Address(a) => format!("address {a} (no call token)"),
    }
}

/// An open stream's slot ([`Gate::open_stream`]); given back when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    gate: Arc<Gate>,
    peer: Peer,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut s = lock(&self.gate.streams);
        if let Some(n) = s.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.remove(&self.peer);
            }
        }
    }
}
