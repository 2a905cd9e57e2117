//! A verifying ledger client: it trusts only the ledger's public key, its origin and the last
//! checkpoint it verified, and refuses any answer whose proof does not check out.
//!
//! - A new checkpoint must be signed by the ledger key, must not be smaller than the trusted
//!   one (rollback), must equal it at the same size (fork) and must be proven consistent with
//!   it by a consistency proof when larger.
//! - Every entry it returns is proven included in the trusted tree.
//! - Every block it returns has its own hash and a root proven to be a prefix of the trusted
//!   tree.
//! - Members, roles and admissions are replayed by the client itself from proven entries with
//!   the ledger's own rules ([`LedgerClient::sync_members`]); an admission the rules refuse
//!   admits nobody, whatever the ledger signed.

mod subjects;

use ecgfed_proto::v1::ledger_service_client::LedgerServiceClient;
use ecgfed_proto::v1::{
    Block as PbBlock, GetBlockRequest, GetEntryRequest, LatestCheckpointRequest,
    ProveConsistencyRequest, ProveInclusionRequest, QueryBySubjectRequest, SignedEntry, Subject,
    SubmitResponse,
};
use tonic::transport::Channel;

use crate::block::Block;
use crate::checkpoint::Checkpoint;
use crate::entry::{self, Kind};
use crate::keys::{PublicKey, Signature};
use crate::log::{Hash, LogError, leaf_hash, verify_consistency, verify_inclusion};
use crate::protocol::MAX_MESSAGE_BYTES;
use crate::state::{MemberInfo, State};

/// Client failures. Each verification failure carries its evidence, so a caller can tell a
/// fork from a rollback from a broken proof, and show what it saw.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not reach the server.
    #[error("ledger {addr}: {source}")]
    Transport {
        /// Server address.
        addr: String,
        /// What failed.
        #[source]
        source: tonic::transport::Error,
    },
    /// The address is not a URI.
    #[error("ledger address {addr}: {source}")]
    Address {
        /// The address given.
        addr: String,
        /// Why it does not parse.
        #[source]
        source: tonic::codegen::http::uri::InvalidUri,
    },
    /// The server refused the request.
    #[error("ledger refused: {0}")]
    Refused(#[from] tonic::Status),
    /// The presented checkpoint is smaller than the trusted one.
    #[error(
        "ledger answer does not verify: rolled-back checkpoint: size {} after a trusted size {}",
        presented.size,
        trusted.size
    )]
    RolledBack {
        /// The checkpoint trusted before.
        trusted: Box<Checkpoint>,
        /// The smaller one the server presented.
        presented: Box<Checkpoint>,
    },
    /// The presented checkpoint has another root at the trusted size: a fork.
    #[error(
        "ledger answer does not verify: forked checkpoint: two different roots for size {}",
        presented.size
    )]
    Forked {
        /// The checkpoint trusted before.
        trusted: Box<Checkpoint>,
        /// The one the server presented, same size, other root.
        presented: Box<Checkpoint>,
    },
    /// The presented checkpoint is larger but not proven an extension of the trusted one.
    #[error(
        "ledger answer does not verify: checkpoint of size {} is not consistent with the trusted size {}: {source}",
        new.size,
        old.size
    )]
    Inconsistent {
        /// The checkpoint trusted before.
        old: Box<Checkpoint>,
        /// The larger one the server presented.
        new: Box<Checkpoint>,
        /// The consistency proof it sent.
        proof: Vec<Hash>,
        /// Why the proof does not verify.
        #[source]
        source: LogError,
    },
    /// The ledger holds entries that break its own rules (two cohorts with one id, a slice
    /// entry signed by another site's hospital, ...): `subject` names what was asked for,
    /// `entries` the offending entries' indexes.
    #[error("ledger answer does not verify: {reason}")]
    BrokenRules {
        /// The subject asked for (`cohort c1`, `slice c1/site-a`).
        subject: String,
        /// Indexes of the entries at fault.
        entries: Vec<u64>,
        /// What is wrong, for people.
        reason: String,
    },
    /// The ledger has no valid entry of kind `wanted` for `subject`; `refused` lists the
    /// entries that claim to be one but break the rules (index, reason).
    #[error("{subject} has no {}{wanted} entry on the ledger{}", if refused.is_empty() { "" } else { "valid " }, refused_list(refused))]
    NotOnLedger {
        /// The subject asked for (`slice c1/site-a`).
        subject: String,
        /// The entry kind wanted.
        wanted: &'static str,
        /// Entries refused (index, reason).
        refused: Vec<(u64, String)>,
    },
    /// A block the server sent is malformed or carries a hash that is not its own.
    #[error("ledger answer does not verify: block: {0}")]
    Block(#[from] crate::block::BlockError),
    /// The server's answer does not verify: it is lying or broken.
    #[error("ledger answer does not verify: {0}")]
    Verification(String),
}

impl ClientError {
    /// Whether the ledger's answer failed verification (the ledger lied or is broken), as
    /// opposed to an unreachable server, a refusal or an entry that is not there.
    pub fn is_verification(&self) -> bool {
        matches!(
            self,
            ClientError::RolledBack { .. }
                | ClientError::Forked { .. }
                | ClientError::Inconsistent { .. }
                | ClientError::BrokenRules { .. }
                | ClientError::Block(_)
                | ClientError::Verification(_)
        )
    }
}

fn refused_list(refused: &[(u64, String)]) -> String {
    if refused.is_empty() {
        return String::new();
    }
    let items: Vec<String> = refused
        .iter()
        .map(|(i, why)| format!("entry {i}: {why}"))
        .collect();
    format!(" ({})", items.join("; "))
}

fn verr(m: impl Into<String>) -> ClientError {
    ClientError::Verification(m.into())
}

fn hashes(v: &[Vec<u8>]) -> Result<Vec<Hash>, ClientError> {
    v.iter()
        .map(|h| {
            h.as_slice()
                .try_into()
                .map_err(|_| verr(format!("proof hash of {} bytes", h.len())))
        })
        .collect()
}

/// Checks that `new` may replace the trusted `old`, given a consistency proof from
/// `old.size` to `new.size`. Refuses rollbacks, forks and unproven growth.
pub fn check_update(old: &Checkpoint, new: &Checkpoint, proof: &[Hash]) -> Result<(), ClientError> {
    if new.size < old.size {
        return Err(ClientError::RolledBack {
            trusted: Box::new(old.clone()),
            presented: Box::new(new.clone()),
        });
    }
    if new.size == old.size {
        if new.root != old.root {
            return Err(ClientError::Forked {
                trusted: Box::new(old.clone()),
                presented: Box::new(new.clone()),
            });
        }
        return Ok(());
    }
    verify_consistency(old.size, new.size, &old.root, &new.root, proof).map_err(|source| {
        ClientError::Inconsistent {
            old: Box::new(old.clone()),
            new: Box::new(new.clone()),
            proof: proof.to_vec(),
            source,
        }
    })
}

pub use crate::entry::VerifiedEntry;

/// Members replayed by a client from proven entries: the genesis entry, then every
/// `MemberAdmitted` entry in log order, each put through the ledger's own rules
/// ([`State::precheck`], the entry signature, [`State::apply`]).
#[derive(Debug, Clone)]
pub struct MemberReplay {
    state: State,
    /// Admissions below this index are replayed.
    next: u64,
    /// Admission entries the rules refuse (index, reason): evidence that the ledger broke them.
    refused: Vec<(u64, String)>,
}

impl MemberReplay {
    /// The replayed state (members, roles, sites; no cohorts or slices).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// A member by id.
    pub fn member(&self, id: &str) -> Option<&MemberInfo> {
        self.state.members.get(id)
    }

    /// The hospital member that speaks for `site`.
    pub fn hospital_of(&self, site: &str) -> Option<&MemberInfo> {
        self.state
            .members
            .values()
            .find(|m| m.role == ecgfed_proto::v1::Role::Hospital && m.site == site)
    }

    /// Admission entries that the rules refuse (index, reason), in log order.
    pub fn refused(&self) -> &[(u64, String)] {
        &self.refused
    }

    /// Replays one proven admission entry; a refused one is remembered, not applied.
    fn replay(&mut self, e: &VerifiedEntry) -> Result<(), ClientError> {
        if e.index < self.next {
            return Err(verr(format!(
                "admission entries out of order: entry {} after {}",
                e.index,
                self.next - 1
            )));
        }
        self.next = e.index + 1;
        if let Err(reason) = self.check_and_apply(e) {
            tracing::error!(
                entry = e.index,
                "the ledger's log holds an admission its rules refuse: {reason}"
            );
            self.refused.push((e.index, reason));
        }
        Ok(())
    }

    fn check_and_apply(&mut self, e: &VerifiedEntry) -> Result<(), String> {
        let (body_bytes, sig) = entry::decode_stored(&e.stored).map_err(|x| x.to_string())?;
        let body = &e.body;
        if body.payload.as_ref().map(Kind::of) != Some(Kind::MemberAdmitted) {
            return Err("not a MemberAdmitted entry".into());
        }
        let signer = self.state.precheck(body, None).map_err(|r| r.message)?;
        let sig = Signature::from_bytes(sig).map_err(|x| x.to_string())?;
        if !signer.key.verify(&entry::signing_bytes(body_bytes), &sig) {
            return Err(format!(
                "signature does not verify under the key of member {}",
                body.signer
            ));
        }
        self.state.apply(body).map_err(|r| r.message)
    }
}

/// An entry proven included in the trusted log whose signature verifies under its signer's key,
/// the signer being a member the client replayed itself.
#[derive(Debug, Clone)]
pub struct CheckedEntry {
    /// The entry, proven.
    pub entry: VerifiedEntry,
    /// Its signer, as replayed.
    pub signer: MemberInfo,
}

/// Admission entries fetched per query while replaying members.
const ADMISSIONS_PAGE: u64 = 256;

/// A client of one ledger.
#[derive(Debug, Clone)]
pub struct LedgerClient {
    inner: LedgerServiceClient<Channel>,
    addr: String,
    origin: String,
    key: PublicKey,
    trusted: Option<Checkpoint>,
    trusted_note: Option<String>,
    members: Option<MemberReplay>,
}

impl LedgerClient {
    /// Connects to `addr` (`host:port` or `http://host:port`) of the ledger named `origin`
    /// whose key is `key`, trusting `trusted` if given.
    pub async fn connect(
        addr: &str,
        origin: &str,
        key: PublicKey,
        trusted: Option<Checkpoint>,
    ) -> Result<Self, ClientError> {
        let url = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let terr = |source| ClientError::Transport {
            addr: addr.to_string(),
            source,
        };
        let ch = Channel::from_shared(url)
            .map_err(|source| ClientError::Address {
                addr: addr.to_string(),
                source,
            })?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(terr)?;
        Ok(LedgerClient {
            inner: LedgerServiceClient::new(ch)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            addr: addr.to_string(),
            origin: origin.to_string(),
            key,
            trusted,
            trusted_note: None,
            members: None,
        })
    }

    /// Members as replayed so far ([`LedgerClient::sync_members`]), if replayed at all.
    pub fn replayed_members(&self) -> Option<&MemberReplay> {
        self.members.as_ref()
    }

    /// Brings the replayed members up to the trusted checkpoint (fetching one if none is held):
    /// the first time from the genesis entry (proven, signed by the ledger member whose key
    /// and origin this client trusts), then every `MemberAdmitted` entry after the last one
    /// replayed, found through the `EntryKind` index, each proven included and put through the
    /// ledger's rules. An admission the rules refuse is kept as evidence and admits nobody.
    ///
    /// Completeness of the admissions rests on the ledger's index: a ledger that hides an
    /// admission can only make a member unknown (refused) or the hospital count smaller; the
    /// full-log verifier (`ecgfed audit verify`) sees every entry.
    pub async fn sync_members(&mut self) -> Result<&MemberReplay, ClientError> {
        if self.trusted.is_none() {
            self.update_checkpoint().await?;
        }
        if self.members.is_none() {
            let g = self.entry(0).await?;
            let (body_bytes, sig) =
                entry::decode_stored(&g.stored).map_err(|e| verr(format!("entry 0: {e}")))?;
            let state = State::from_genesis(&g.body, sig, body_bytes)
                .map_err(|r| verr(format!("entry 0 (genesis): {}", r.message)))?;
            if state.origin != self.origin {
                return Err(verr(format!(
                    "the genesis names origin {:?}, this client trusts {:?}",
                    state.origin, self.origin
                )));
            }
            if state.ledger_key() != self.key {
                return Err(verr(
                    "the genesis ledger member's key is not the ledger key this client trusts",
                ));
            }
            self.members = Some(MemberReplay {
                state,
                next: 1,
                refused: Vec::new(),
            });
        }
        let subject = Subject {
            kind: ecgfed_proto::v1::SubjectKind::EntryKind as i32,
            id: Kind::MemberAdmitted.name().to_string(),
        };
        loop {
            let from = self.members.as_ref().map_or(1, |m| m.next);
            let page = self
                .query_subject(subject.clone(), from, ADMISSIONS_PAGE)
                .await?;
            let full = page.len() as u64 >= ADMISSIONS_PAGE;
            if let Some(m) = self.members.as_mut() {
                for e in &page {
                    m.replay(e)?;
                }
            }
            if !full {
                break;
            }
        }
        self.members
            .as_ref()
            .ok_or_else(|| verr("members were not replayed"))
    }

    /// The raw gRPC client (no verification).
    pub fn raw(&self) -> LedgerServiceClient<Channel> {
        self.inner.clone()
    }

    /// The server address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The last verified checkpoint.
    pub fn trusted(&self) -> Option<&Checkpoint> {
        self.trusted.as_ref()
    }

    /// The signed note of the last checkpoint this client verified itself (None until
    /// [`LedgerClient::update_checkpoint`] succeeded).
    pub fn trusted_note(&self) -> Option<&str> {
        self.trusted_note.as_deref()
    }

    /// Fetches the latest checkpoint, verifies its signature and its consistency with the
    /// trusted one, and trusts it.
    pub async fn update_checkpoint(&mut self) -> Result<Checkpoint, ClientError> {
        let note = self
            .inner
            .latest_checkpoint(LatestCheckpointRequest {})
            .await?
            .into_inner()
            .note;
        let new =
            Checkpoint::verify(&note, &self.origin, &self.key).map_err(|e| verr(e.to_string()))?;
        if let Some(old) = &self.trusted {
            let proof = if new.size > old.size && old.size > 0 {
                let p = self
                    .inner
                    .prove_consistency(ProveConsistencyRequest {
                        from_size: old.size,
                        to_size: new.size,
                    })
                    .await?
                    .into_inner();
                hashes(&p.hashes)?
            } else {
                Vec::new()
            };
            check_update(old, &new, &proof)?;
        }
        self.trusted = Some(new.clone());
        self.trusted_note = Some(note);
        Ok(new)
    }

    async fn trusted_covering(&mut self, index: u64) -> Result<Checkpoint, ClientError> {
        match &self.trusted {
            Some(c) if c.size > index => Ok(c.clone()),
            _ => {
                let c = self.update_checkpoint().await?;
                if c.size <= index {
                    return Err(verr(format!(
                        "entry {index} is beyond the ledger's signed size {}",
                        c.size
                    )));
                }
                Ok(c)
            }
        }
    }

    /// Proves that `stored` is leaf `index` of the trusted tree.
    pub async fn prove(&mut self, index: u64, stored: &[u8]) -> Result<(), ClientError> {
        let cp = self.trusted_covering(index).await?;
        let p = self
            .inner
            .prove_inclusion(ProveInclusionRequest {
                index,
                tree_size: cp.size,
            })
            .await?
            .into_inner();
        check_inclusion(index, stored, &p.hashes, &cp)
    }

    /// Submits an entry (answer after it is durable), then proves it is in the log.
    pub async fn submit(&mut self, e: SignedEntry) -> Result<SubmitResponse, ClientError> {
        let (r, stored) = self.submit_acknowledged(e).await?;
        self.prove(r.index, &stored).await?;
        Ok(r)
    }

    /// Submits a signed entry and returns the ledger's receipt as soon as the ledger has
    /// acknowledged it (durable, if the ledger is honest), with the entry's stored bytes;
    /// only the receipt's leaf hash is checked. [`LedgerClient::prove`] with those bytes
    /// proves the entry in the signed log afterwards.
    pub async fn submit_acknowledged(
        &mut self,
        e: SignedEntry,
    ) -> Result<(SubmitResponse, Vec<u8>), ClientError> {
        let stored = entry::encode_stored(&e.body, &e.signature);
        let r = self.inner.submit(e).await?.into_inner();
        if r.leaf_hash != leaf_hash(&stored) {
            return Err(verr(format!(
                "receipt for entry {} has a different leaf hash",
                r.index
            )));
        }
        Ok((r, stored))
    }

    /// Fetches entry `index` and proves it.
    pub async fn entry(&mut self, index: u64) -> Result<VerifiedEntry, ClientError> {
        Ok(self.entry_with_block(index).await?.0)
    }

    /// [`LedgerClient::entry`], with the height of the block the server says holds it (as
    /// reported: [`LedgerClient::block`] proves a block's entry range).
    pub async fn entry_with_block(
        &mut self,
        index: u64,
    ) -> Result<(VerifiedEntry, u64), ClientError> {
        let r = self
            .inner
            .get_entry(GetEntryRequest { index })
            .await?
            .into_inner();
        if r.index != index {
            return Err(verr(format!("asked for entry {index}, got {}", r.index)));
        }
        self.prove(index, &r.stored).await?;
        let e = VerifiedEntry::decode(index, r.stored)
            .map_err(|e| verr(format!("entry {index}: {e}")))?;
        Ok((e, r.block_height))
    }

    /// Fetches block `height`; checks its hash and proves its root is the root of the trusted
    /// tree's first `tree_size` leaves.
    pub async fn block(&mut self, height: u64) -> Result<Block, ClientError> {
        let pb: PbBlock = self
            .inner
            .get_block(GetBlockRequest { height })
            .await?
            .into_inner();
        let b = Block::from_proto(&pb)?;
        if b.height != height {
            return Err(verr(format!("asked for block {height}, got {}", b.height)));
        }
        let cp = self.trusted_covering(b.tree_size.saturating_sub(1)).await?;
        if b.tree_size == cp.size {
            if b.root != cp.root {
                return Err(verr(format!(
                    "block {height}'s root differs from the signed root"
                )));
            }
            return Ok(b);
        }
        let p = self
            .inner
            .prove_consistency(ProveConsistencyRequest {
                from_size: b.tree_size,
                to_size: cp.size,
            })
            .await?
            .into_inner();
        verify_consistency(b.tree_size, cp.size, &b.root, &cp.root, &hashes(&p.hashes)?).map_err(
            |e| {
                verr(format!(
                    "block {height}'s root is not a prefix of the signed tree: {e}"
                ))
            },
        )?;
        Ok(b)
    }

    /// Entries naming `subject` (from `from_index`, at most `limit`; 0: all), each proven
    /// included, checked to carry the subject and signed by a replayed member: a signer the
    /// replay does not know (after one sync) or a signature that does not verify is a
    /// verification error, not an entry.
    pub async fn query_checked(
        &mut self,
        subject: Subject,
        from_index: u64,
        limit: u64,
    ) -> Result<Vec<CheckedEntry>, ClientError> {
        let entries = self.query_subject(subject, from_index, limit).await?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let (body_bytes, sig) = entry::decode_stored(&e.stored)
                .map_err(|x| verr(format!("entry {}: {x}", e.index)))?;
            let body = &e.body;
            let known = match self.members.as_ref() {
                Some(m) => m.member(&body.signer).cloned(),
                None => None,
            };
            let signer = match known {
                Some(m) => m,
                None => self
                    .sync_members()
                    .await?
                    .member(&body.signer)
                    .cloned()
                    .ok_or_else(|| {
                        verr(format!(
                            "entry {} is signed by {:?}, whom the replayed members do not include",
                            e.index, body.signer
                        ))
                    })?,
            };
            let sig =
                Signature::from_bytes(sig).map_err(|x| verr(format!("entry {}: {x}", e.index)))?;
            if !signer.key.verify(&entry::signing_bytes(body_bytes), &sig) {
                return Err(verr(format!(
                    "entry {}: signature does not verify under the key of member {}",
                    e.index, body.signer
                )));
            }
            out.push(CheckedEntry { entry: e, signer });
        }
        Ok(out)
    }

    /// Entries naming `subject`, each proven included and checked to carry the subject.
    ///
    /// With a trusted checkpoint held, the query asks the ledger to attach every answer's
    /// inclusion proof in that checkpoint's tree (one round trip for the whole answer); answers
    /// beyond it (or without an attached proof) are proven against an updated checkpoint, the
    /// proofs asked for at once.
    pub async fn query_subject(
        &mut self,
        subject: Subject,
        from_index: u64,
        limit: u64,
    ) -> Result<Vec<VerifiedEntry>, ClientError> {
        let held = self.trusted.clone();
        let mut stream = self
            .inner
            .query_by_subject(QueryBySubjectRequest {
                subject: Some(subject.clone()),
                from_index,
                limit,
                prove_at_size: held.as_ref().map_or(0, |c| c.size),
            })
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(r) = stream.message().await? {
            out.push(r);
        }
        let mut verified = Vec::with_capacity(out.len());
        let mut unproven = Vec::new();
        for r in out {
            let (body, _) = entry::decode_stored(&r.stored)
                .map_err(|e| verr(format!("entry {}: {e}", r.index)))?;
            let body =
                entry::decode_body(body).map_err(|e| verr(format!("entry {}: {e}", r.index)))?;
            if !body
                .subjects
                .iter()
                .any(|s| s.kind == subject.kind && s.id == subject.id)
            {
                return Err(verr(format!(
                    "entry {} does not name the subject asked for",
                    r.index
                )));
            }
            match &held {
                Some(cp) if r.index < cp.size && !r.inclusion.is_empty() => {
                    check_inclusion(r.index, &r.stored, &r.inclusion, cp)?;
                }
                _ => unproven.push(verified.len()),
            }
            verified.push(VerifiedEntry {
                index: r.index,
                body,
                stored: r.stored,
            });
        }
        // The rest proven against one trusted checkpoint covering them, the proofs asked for
        // at once.
        let Some(last) = unproven.iter().map(|&i| verified[i].index).max() else {
            return Ok(verified);
        };
        let cp = self.trusted_covering(last).await?;
        let proofs = futures::future::join_all(unproven.iter().map(|&i| {
            let mut raw = self.inner.clone();
            let index = verified[i].index;
            async move {
                raw.prove_inclusion(ProveInclusionRequest {
                    index,
                    tree_size: cp.size,
                })
                .await
            }
        }))
        .await;
        for (&i, p) in unproven.iter().zip(proofs) {
            let e = &verified[i];
            check_inclusion(e.index, &e.stored, &p?.into_inner().hashes, &cp)?;
        }
        Ok(verified)
    }
}

/// Checks that `stored` is leaf `index` of the signed tree `cp`, given its audit path.
fn check_inclusion(
    index: u64,
    stored: &[u8],
    path: &[Vec<u8>],
    cp: &Checkpoint,
) -> Result<(), ClientError> {
    verify_inclusion(index, cp.size, &leaf_hash(stored), &hashes(path)?, &cp.root).map_err(|e| {
        verr(format!(
            "entry {index} is not in the signed tree of size {}: {e}",
            cp.size
        ))
    })
}
