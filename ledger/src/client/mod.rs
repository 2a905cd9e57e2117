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

use std::path::{Path, PathBuf};

use ecgfed_proto::v1::witness_service_client::WitnessServiceClient;
use ecgfed_proto::v1::{
    Block as PbBlock, GetBlockRequest, GetCheckpointRequest, GetEntryRequest,
    GetLatestCosignedRequest, LatestCheckpointRequest, ProveConsistencyRequest,
    ProveInclusionRequest, QueryBySubjectRequest, SignedEntry, Subject, SubmitResponse,
};
use tonic::transport::Channel;

use crate::block::Block;
use crate::checkpoint::Checkpoint;
use crate::cosign::{CosignError, WitnessPolicy, cosign_message};
use crate::entry::{self, Kind};
use crate::evidence::Evidence;
use crate::keys::{KeyPair, PublicKey, Signature};
use crate::log::{Hash, LogError, leaf_hash, verify_consistency, verify_inclusion};
use crate::protocol::MAX_MESSAGE_BYTES;
use crate::state::{MemberInfo, State};
use crate::trust::{TrustError, TrustFile};

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
    /// The address, or the TLS settings of the trust file, make no endpoint.
    #[error("ledger address {addr}: {source}")]
    Endpoint {
        /// The address given.
        addr: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
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
    /// The checkpoint is not cosigned by a quorum of the genesis's witnesses.
    #[error("ledger answer does not verify: {source}")]
    Unwitnessed {
        /// Its tree size.
        size: u64,
        /// What is missing or wrong.
        #[source]
        source: CosignError,
    },
    /// This client found the ledger signing two conflicting checkpoints before and keeps
    /// refusing it (the trust state names the evidence; `ecgfed audit evidence` shows it).
    #[error("the ledger is distrusted ({}): {reason}", path.display())]
    Distrusted {
        /// The trust state file that says so.
        path: PathBuf,
        /// Why, and where the evidence is.
        reason: String,
    },
    /// A trust file or trust state cannot be used.
    #[error(transparent)]
    Trust(#[from] TrustError),
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
                | ClientError::Unwitnessed { .. }
                | ClientError::Distrusted { .. }
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
        if !matches!(
            body.payload.as_ref().map(Kind::of),
            Some(Kind::MemberAdmitted | Kind::MemberRevoked)
        ) {
            return Err("not a MemberAdmitted or MemberRevoked entry".into());
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

/// Admission (and revocation) entries fetched per query while replaying members.
const ADMISSIONS_PAGE: u64 = 256;

/// Where a client remembers what it trusted, across restarts.
#[derive(Debug, Clone)]
pub struct Memory {
    /// Its trust state: a trust file holding the newest checkpoint it accepted (and, once it
    /// found a split view, why it distrusts the ledger), replaced durably on every change.
    pub state: PathBuf,
    /// Where evidence of conflicting checkpoints is written.
    pub evidence: PathBuf,
    /// Who this client is, for the evidence (a member id or a program).
    pub who: String,
}

impl Memory {
    /// The trust state of client `who` beside a trust file: `<who>.ledger-trust.json` in its
    /// folder, evidence in `evidence/` there.
    pub fn for_trust_file(trust: &Path, who: &str) -> Memory {
        let dir = trust.parent().unwrap_or(Path::new("."));
        Memory::beside(dir.join(state_file_name(who)), who)
    }

    /// A trust state `STATE` with its evidence in an `evidence` folder beside it.
    pub fn beside(state: PathBuf, who: &str) -> Memory {
        let evidence = state
            .parent()
            .map_or_else(|| PathBuf::from("evidence"), |d| d.join("evidence"));
        Memory {
            state,
            evidence,
            who: who.to_string(),
        }
    }
}

/// The trust state file name of client `who`: `<who>.ledger-trust.json`, every character
/// outside `A-Z a-z 0-9 . _ -` replaced by `_` and a leading `.` too, so that a member id such
/// as `../x` names a file inside the folder, never a path out of it.
pub fn state_file_name(who: &str) -> String {
    let mut name: String = who
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with('.') {
        name.insert(0, '_');
    }
    format!("{name}.ledger-trust.json")
}

/// A client of one ledger.
#[derive(Debug, Clone)]
pub struct LedgerClient {
    inner: crate::access::Client,
    channel: Channel,
    addr: String,
    origin: String,
    key: PublicKey,
    trusted: Option<Checkpoint>,
    trusted_note: Option<String>,
    /// Cosigners of the trusted checkpoint (when it came from the ledger).
    cosigners: Vec<String>,
    members: Option<MemberReplay>,
    /// Witnesses and quorum, from the proven genesis entry.
    policy: Option<WitnessPolicy>,
    memory: Option<Memory>,
    /// Set once this client found a split view: every later update is refused.
    distrusted: Option<String>,
    /// The newest note the ledger presented whose signature verified but which this client
    /// refused for want of cosignatures: what [`LedgerClient::cross_check`] also compares.
    presented: Option<String>,
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
        LedgerClient::connect_with(addr, origin, key, trusted, None).await
    }

    /// [`LedgerClient::connect`] over TLS when `tls` is given (a trust file's `tls_ca`).
    pub async fn connect_with(
        addr: &str,
        origin: &str,
        key: PublicKey,
        trusted: Option<Checkpoint>,
        tls: Option<&crate::trust::LedgerTls>,
    ) -> Result<Self, ClientError> {
        let terr = |source| ClientError::Transport {
            addr: addr.to_string(),
            source,
        };
        let ch = crate::trust::endpoint(addr, tls)
            .map_err(|source| ClientError::Endpoint {
                addr: addr.to_string(),
                source,
            })?
            .connect()
            .await
            .map_err(terr)?;
        Ok(LedgerClient {
            inner: crate::access::client(ch.clone(), None),
            channel: ch,
            addr: addr.to_string(),
            origin: origin.to_string(),
            key,
            trusted,
            trusted_note: None,
            cosigners: Vec::new(),
            members: None,
            policy: None,
            memory: None,
            distrusted: None,
            presented: None,
        })
    }

    /// Connects to the ledger a trust file describes, trusting its checkpoint; with `memory`,
    /// also the newest checkpoint this client accepted before (its trust state), refusing
    /// a ledger it distrusts and writing evidence when the two conflict.
    pub async fn open(
        addr: &str,
        trust: &Path,
        memory: Option<Memory>,
    ) -> Result<LedgerClient, ClientError> {
        let (t, cp, key) = TrustFile::read(trust)?;
        if let Some(reason) = t.distrusted.clone() {
            return Err(ClientError::Distrusted {
                path: trust.to_path_buf(),
                reason,
            });
        }
        let mut c =
            LedgerClient::connect_with(addr, &t.origin, key, Some(cp), t.tls().as_ref()).await?;
        c.trusted_note = Some(t.checkpoint.clone());
        let Some(m) = memory else { return Ok(c) };
        c.memory = Some(m.clone());
        if !m.state.exists() {
            c.remember()?;
            return Ok(c);
        }
        let (s, _, skey) = TrustFile::read(&m.state)?;
        let mismatch = |what: &str| TrustError {
            path: m.state.clone(),
            reason: format!("it names another ledger {what} than {}", trust.display()),
        };
        if s.origin != t.origin {
            return Err(mismatch("origin").into());
        }
        if skey != key {
            return Err(mismatch("key").into());
        }
        if let Some(reason) = s.distrusted {
            return Err(ClientError::Distrusted {
                path: m.state.clone(),
                reason,
            });
        }
        // The remembered checkpoint was accepted before; the trust file's must agree with it
        // (the smaller proven a prefix of the larger by the ledger).
        let (_, scp, _) = TrustFile::read(&m.state)?;
        if let Some(t0) = c.trusted.clone()
            && t0.size == scp.size
            && t0.root != scp.root
        {
            c.record_conflict(
                "fork",
                &t.checkpoint,
                &s.checkpoint,
                &[],
                &m.state.display().to_string(),
            );
            return Err(ClientError::Forked {
                trusted: Box::new(scp),
                presented: Box::new(t0),
            });
        }
        // Accepted (and proven) before: trusted as it is, without asking the ledger; a newer
        // trust file must then be proven to extend it.
        let file_size = cp_size(&c);
        let newer_file = file_size > scp.size;
        c.trusted = Some(scp);
        c.trusted_note = Some(s.checkpoint.clone());
        if newer_file {
            c.accept(&t.checkpoint, &trust.display().to_string(), false)
                .await?;
        }
        Ok(c)
    }

    /// The witnesses that cosigned the trusted checkpoint (empty on an unwitnessed ledger or
    /// for a checkpoint taken from a trust file).
    pub fn cosigners(&self) -> &[String] {
        &self.cosigners
    }

    /// Writes the trust state (when this client remembers).
    fn remember(&self) -> Result<(), ClientError> {
        let (Some(m), Some(note)) = (&self.memory, &self.trusted_note) else {
            return Ok(());
        };
        if let Some(dir) = m.state.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| TrustError {
                path: m.state.clone(),
                reason: e.to_string(),
            })?;
        }
        TrustFile {
            origin: self.origin.clone(),
            ledger_public_key: self.key.to_hex(),
            checkpoint: note.clone(),
            distrusted: self.distrusted.clone(),
            tls_ca: None,
            tls_domain: None,
        }
        .write(&m.state)?;
        Ok(())
    }

    /// Records a conflict between the trusted note and `presented`: evidence file, trust
    /// state marked distrusted, this client refusing the ledger from now on.
    fn record_conflict(
        &mut self,
        kind: &str,
        first: &str,
        presented: &str,
        proof: &[Hash],
        source: &str,
    ) {
        let first = first.to_string();
        let mut reason = format!("{kind} between checkpoints from {source}");
        if let Some(m) = &self.memory {
            let e = Evidence {
                kind: kind.into(),
                origin: self.origin.clone(),
                ledger_public_key: self.key.to_hex(),
                source: source.into(),
                detected_by: m.who.clone(),
                detected_at_ms: entry::now_ms(),
                first,
                second: presented.to_string(),
                consistency_proof: proof.iter().map(hex::encode).collect(),
            };
            match e.write(&m.evidence) {
                Ok(p) => reason = format!("{reason}; evidence in {}", p.display()),
                Err(err) => tracing::error!("{err}"),
            }
        }
        tracing::error!("the ledger signed conflicting checkpoints: {reason}");
        // A client with a trust state stops trusting the ledger, now and after restarts; an
        // ephemeral one (no memory) reports each conflict as it finds it.
        if self.memory.is_some() {
            self.distrusted = Some(reason);
            if let Err(e) = self.remember() {
                tracing::error!("cannot mark the ledger distrusted: {e}");
            }
        }
    }

    /// Witnesses and quorum from the genesis entry, proven in `anchor` (loaded once).
    async fn policy(&mut self, anchor: &Checkpoint) -> Result<WitnessPolicy, ClientError> {
        if let Some(p) = &self.policy {
            return Ok(p.clone());
        }
        let r = self
            .inner
            .get_entry(GetEntryRequest { index: 0 })
            .await?
            .into_inner();
        let p = self
            .inner
            .prove_inclusion(ProveInclusionRequest {
                index: 0,
                tree_size: anchor.size,
            })
            .await?
            .into_inner();
        check_inclusion(0, &r.stored, &p.hashes, anchor)?;
        let state = self.genesis_state(&r.stored)?;
        self.policy = Some(state.witnesses.clone());
        Ok(state.witnesses)
    }

    /// The state a proven genesis entry defines, checked to be the ledger this client trusts.
    fn genesis_state(&self, stored: &[u8]) -> Result<State, ClientError> {
        let (body_bytes, sig) =
            entry::decode_stored(stored).map_err(|e| verr(format!("entry 0: {e}")))?;
        let body = entry::decode_body(body_bytes).map_err(|e| verr(format!("entry 0: {e}")))?;
        let state = State::from_genesis(&body, sig, body_bytes)
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
        Ok(state)
    }

    /// Checks a signed note against the trusted checkpoint (rollback, fork, consistency: a
    /// fork or an unproven extension is recorded as evidence) and, when `witnessed`, against
    /// the witnesses' quorum; then trusts and remembers it. `source` names where it came from.
    pub async fn accept(
        &mut self,
        note: &str,
        source: &str,
        witnessed: bool,
    ) -> Result<Checkpoint, ClientError> {
        if let Some(reason) = &self.distrusted {
            return Err(ClientError::Distrusted {
                path: self
                    .memory
                    .as_ref()
                    .map_or_else(PathBuf::new, |m| m.state.clone()),
                reason: reason.clone(),
            });
        }
        let new =
            Checkpoint::verify(note, &self.origin, &self.key).map_err(|e| verr(e.to_string()))?;
        let same = self.trusted.as_ref() == Some(&new);
        if let Some(old) = self.trusted.clone() {
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
            if let Err(e) = check_update(&old, &new, &proof) {
                let first = self.trusted_note.clone().unwrap_or_default();
                match &e {
                    ClientError::Forked { .. } => {
                        self.record_conflict("fork", &first, note, &proof, source)
                    }
                    ClientError::Inconsistent { .. } => {
                        self.record_conflict("inconsistent", &first, note, &proof, source)
                    }
                    _ => {}
                }
                return Err(e);
            }
        }
        if witnessed {
            let anchor = self.trusted.clone().unwrap_or_else(|| new.clone());
            let policy = self.policy(&anchor).await?;
            match policy.verify(note, &self.origin, &self.key) {
                Ok(w) => self.cosigners = w.cosigners,
                // The checkpoint already trusted, as the trust file had it: nothing new.
                Err(_) if same => return Ok(new),
                Err(source) => {
                    self.presented = Some(note.to_string());
                    return Err(ClientError::Unwitnessed {
                        size: new.size,
                        source,
                    });
                }
            }
        } else if !same {
            self.cosigners.clear();
        }
        if same && !witnessed {
            return Ok(new);
        }
        self.trusted = Some(new.clone());
        self.trusted_note = Some(note.to_string());
        self.remember()?;
        Ok(new)
    }

    /// Compares the trusted checkpoint with the last one the witness at `addr` cosigned:
    /// a conflict is recorded as evidence (a split view: the ledger showed that witness
    /// another history). Returns the witness's checkpoint.
    pub async fn cross_check(&mut self, addr: &str) -> Result<Checkpoint, ClientError> {
        let url = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let ch = Channel::from_shared(url)
            .map_err(|source| ClientError::Address {
                addr: addr.to_string(),
                source,
            })?
            .connect()
            .await
            .map_err(|source| ClientError::Transport {
                addr: addr.to_string(),
                source,
            })?;
        let r = WitnessServiceClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .get_latest_cosigned(GetLatestCosignedRequest {})
            .await?
            .into_inner();
        let theirs = Checkpoint::verify(&r.note, &self.origin, &self.key)
            .map_err(|e| verr(format!("witness {}: {e}", r.witness)))?;
        let sig = Signature::from_bytes(&r.cosignature)
            .map_err(|e| verr(format!("witness {}: {e}", r.witness)))?;
        let policy = match self.trusted.clone() {
            Some(t) => self.policy(&t).await?,
            None => return Err(verr("no trusted checkpoint to compare with")),
        };
        let wkey = policy
            .witnesses
            .iter()
            .find(|w| w.id == r.witness)
            .ok_or_else(|| verr(format!("{} is not a witness of this ledger", r.witness)))?
            .key;
        if !wkey.verify(&cosign_message(&theirs), &sig) {
            return Err(verr(format!(
                "witness {}: its cosignature does not verify",
                r.witness
            )));
        }
        let source = format!("witness {} at {addr}", r.witness);
        // Compare with what this client trusts and with what the ledger last showed it.
        // What the ledger last showed comes first: two notes of one size are a fork, evidence
        // that needs no proof from anyone.
        let mut ours: Vec<(Checkpoint, String)> = Vec::new();
        if let Some(n) = self.presented.clone()
            && let Ok(p) = Checkpoint::verify(&n, &self.origin, &self.key)
        {
            ours.push((p, n));
        }
        if let (Some(t), Some(n)) = (self.trusted.clone(), self.trusted_note.clone()) {
            ours.push((t, n));
        }
        for (mine, my_note) in ours {
            if theirs.size == mine.size {
                if theirs.root != mine.root {
                    self.record_conflict("fork", &my_note, &r.note, &[], &source);
                    return Err(ClientError::Forked {
                        trusted: Box::new(mine),
                        presented: Box::new(theirs),
                    });
                }
                continue;
            }
            let (small, large) = if theirs.size < mine.size {
                (&theirs, &mine)
            } else {
                (&mine, &theirs)
            };
            let proof = match self
                .inner
                .prove_consistency(ProveConsistencyRequest {
                    from_size: small.size,
                    to_size: large.size,
                })
                .await
            {
                Ok(p) => hashes(&p.into_inner().hashes)?,
                Err(_) => Vec::new(),
            };
            if small.size > 0
                && let Err(source_err) =
                    verify_consistency(small.size, large.size, &small.root, &large.root, &proof)
            {
                self.record_conflict("inconsistent", &my_note, &r.note, &proof, &source);
                return Err(ClientError::Inconsistent {
                    old: Box::new(small.clone()),
                    new: Box::new(large.clone()),
                    proof,
                    source: source_err,
                });
            }
        }
        Ok(theirs)
    }

    /// The stored checkpoint of a past tree size (as the ledger has it, with the cosignatures
    /// it gathered), verified against the witnesses' quorum and proven consistent with the
    /// trusted checkpoint. It does not replace the trusted checkpoint.
    pub async fn checkpoint_at(
        &mut self,
        size: u64,
    ) -> Result<(Checkpoint, Vec<String>), ClientError> {
        let note = self
            .inner
            .get_checkpoint(GetCheckpointRequest { size })
            .await?
            .into_inner()
            .note;
        let trusted = self.trusted_covering(size.saturating_sub(1)).await?;
        let policy = self.policy(&trusted).await?;
        let w = policy
            .verify(&note, &self.origin, &self.key)
            .map_err(|source| ClientError::Unwitnessed { size, source })?;
        let cp = w.checkpoint;
        if cp.size != size {
            return Err(verr(format!(
                "asked for checkpoint {size}, got {}",
                cp.size
            )));
        }
        if cp.size == trusted.size {
            if cp.root != trusted.root {
                return Err(ClientError::Forked {
                    trusted: Box::new(trusted),
                    presented: Box::new(cp),
                });
            }
        } else if cp.size > 0 {
            let p = self
                .inner
                .prove_consistency(ProveConsistencyRequest {
                    from_size: cp.size,
                    to_size: trusted.size,
                })
                .await?
                .into_inner();
            let proof = hashes(&p.hashes)?;
            verify_consistency(cp.size, trusted.size, &cp.root, &trusted.root, &proof).map_err(
                |source| ClientError::Inconsistent {
                    old: Box::new(cp.clone()),
                    new: Box::new(trusted.clone()),
                    proof,
                    source,
                },
            )?;
        }
        Ok((cp, w.cosigners))
    }

    /// Members as replayed so far ([`LedgerClient::sync_members`]), if replayed at all.
    pub fn replayed_members(&self) -> Option<&MemberReplay> {
        self.members.as_ref()
    }

    /// Brings the replayed members up to the trusted checkpoint (fetching one if none is held):
    /// the first time from the genesis entry (proven, signed by the ledger member whose key
    /// and origin this client trusts), then every `MemberAdmitted` and `MemberRevoked` entry
    /// after the last one replayed, in log order, found through the `EntryKind` index, each
    /// proven included and put through the ledger's rules. An entry the rules refuse is kept as
    /// evidence and changes nobody.
    ///
    /// Completeness rests on the ledger's index: a ledger that hides an admission can only
    /// make a member unknown (refused) or the hospital count smaller; one that hides a
    /// revocation keeps a revoked member alive for this client (the ledger itself still refuses
    /// the member's entries, and the full-log verifier, `ecgfed audit verify`, sees every
    /// entry).
    pub async fn sync_members(&mut self) -> Result<&MemberReplay, ClientError> {
        if self.trusted.is_none() {
            self.update_checkpoint().await?;
        }
        if self.members.is_none() {
            let g = self.entry(0).await?;
            let state = self.genesis_state(&g.stored)?;
            self.policy.get_or_insert_with(|| state.witnesses.clone());
            self.members = Some(MemberReplay {
                state,
                next: 1,
                refused: Vec::new(),
            });
        }
        let kind = |k: Kind| Subject {
            kind: ecgfed_proto::v1::SubjectKind::EntryKind as i32,
            id: k.name().to_string(),
        };
        // Admissions and revocations, merged in log order. A full page of one kind bounds
        // what can be replayed this round: the other kind's later entries wait for the next.
        loop {
            let from = self.members.as_ref().map_or(1, |m| m.next);
            let admitted = self
                .query_subject(kind(Kind::MemberAdmitted), from, ADMISSIONS_PAGE)
                .await?;
            let revoked = self
                .query_subject(kind(Kind::MemberRevoked), from, ADMISSIONS_PAGE)
                .await?;
            let bound = |page: &[VerifiedEntry]| {
                if page.len() as u64 >= ADMISSIONS_PAGE {
                    page.last().map_or(u64::MAX, |e| e.index)
                } else {
                    u64::MAX
                }
            };
            let upto = bound(&admitted).min(bound(&revoked));
            let mut merged: Vec<&VerifiedEntry> = admitted
                .iter()
                .chain(revoked.iter())
                .filter(|e| e.index <= upto)
                .collect();
            merged.sort_by_key(|e| e.index);
            if let Some(m) = self.members.as_mut() {
                for e in merged {
                    m.replay(e)?;
                }
                if upto != u64::MAX {
                    m.next = m.next.max(upto + 1);
                }
            }
            if upto == u64::MAX {
                break;
            }
        }
        self.members
            .as_ref()
            .ok_or_else(|| verr("members were not replayed"))
    }

    /// The raw gRPC client (no verification), sending this client's call tokens.
    pub fn raw(&self) -> crate::access::Client {
        self.inner.clone()
    }

    /// Sends `identity`'s call token with every call from now on: what the ledger requires of
    /// writes (docs/ledger.md "Connections"), and what makes reads count against the member.
    pub fn set_identity(&mut self, identity: std::sync::Arc<crate::access::CallIdentity>) {
        self.inner = crate::access::client(self.channel.clone(), Some(identity));
    }

    /// [`LedgerClient::set_identity`] for `member` with `key`, at this client's ledger.
    pub fn act_as(&mut self, member: &str, key: KeyPair) {
        let id = crate::access::CallIdentity::new(&self.origin, member, key);
        self.set_identity(std::sync::Arc::new(id));
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

    /// Fetches the latest witnessed checkpoint, verifies the ledger's signature, the
    /// witnesses' quorum and its consistency with the trusted one, and trusts it.
    pub async fn update_checkpoint(&mut self) -> Result<Checkpoint, ClientError> {
        self.update_to(0).await
    }

    /// [`LedgerClient::update_checkpoint`], asking the ledger to wait (a few seconds at most)
    /// for a witnessed checkpoint of at least `at_least` entries.
    pub async fn update_to(&mut self, at_least: u64) -> Result<Checkpoint, ClientError> {
        let note = self
            .inner
            .latest_checkpoint(LatestCheckpointRequest { at_least })
            .await?
            .into_inner()
            .note;
        let source = self.addr.clone();
        self.accept(&note, &source, true).await
    }

    async fn trusted_covering(&mut self, index: u64) -> Result<Checkpoint, ClientError> {
        match &self.trusted {
            Some(c) if c.size > index => Ok(c.clone()),
            _ => {
                let c = self.update_to(index + 1).await?;
                if c.size <= index {
                    let witnessed = self.policy.as_ref().is_some_and(|p| p.is_witnessed());
                    return Err(verr(if witnessed {
                        format!(
                            "entry {index} is not yet in a witnessed checkpoint (the newest has size {}): are a quorum of the ledger's witnesses running and given to `ecgfed ledger serve --witness`?",
                            c.size
                        )
                    } else {
                        format!(
                            "entry {index} is beyond the ledger's signed size {}",
                            c.size
                        )
                    }));
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

fn cp_size(c: &LedgerClient) -> u64 {
    c.trusted.as_ref().map_or(0, |t| t.size)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_id_names_a_trust_state_inside_the_trust_files_folder() {
        for who in ["../../etc/x", "/abs", "..", "a/b", "", "sci"] {
            let m = Memory::for_trust_file(Path::new("fed/trust.json"), who);
            assert_eq!(m.state.parent(), Some(Path::new("fed")), "{who:?}");
            let name = m.state.file_name().unwrap().to_str().unwrap();
            assert!(
                !name.starts_with('.') && !name.contains('/'),
                "{who:?} → {name}"
            );
        }
        assert_eq!(state_file_name("hosp-a"), "hosp-a.ledger-trust.json");
    }
}
