//! Ledger state derived from the entries (members and their roles, cohorts and the slices
//! committed to them) and the submission rules: who may write which kind, what a well-formed
//! payload is, and which entries conflict with earlier ones (docs/ledger.md, "Submission
//! checks"). Signatures and nonces are checked by the sequencer, in batches.
//!
//! The same code runs at the ledger, in the offline verifier and in every client that replays
//! members from proven entries ([`crate::client::LedgerClient::members`]): nobody takes the
//! ledger's word for its own rules.

use std::collections::{BTreeMap, HashMap, HashSet};

use ecgfed_proto::v1::{EntryBody, Member, Role, entry_body::Payload};
use prost::Message;

use crate::cosign::{WitnessKey, WitnessPolicy};
use crate::entry::{self, Kind, MAX_ID_BYTES};
use crate::keys::{PublicKey, Signature};

/// Message tag (not the BLS DST) of member-admission approvals: hospitals sign
/// `ADMIT_TAG ‖ member_bytes`.
pub const ADMIT_TAG: &[u8] = b"ecgfed/v1/admit\n";
/// Message tag (not the BLS DST) of revocation approvals ([`revocation_message`]).
pub const REVOKE_TAG: &[u8] = b"ecgfed/v1/revoke\n";

/// What the approving hospitals sign to revoke `member_id` on the ledger `origin`:
/// `REVOKE_TAG ‖ origin ‖ 0x0A ‖ member_id`.
pub fn revocation_message(origin: &str, member_id: &str) -> Vec<u8> {
    let mut m = REVOKE_TAG.to_vec();
    m.extend_from_slice(origin.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(member_id.as_bytes());
    m
}
/// Default accepted clock skew of submissions (5 minutes).
pub const DEFAULT_MAX_SKEW_MS: u64 = 300_000;

/// Why a submission was refused; maps one-to-one onto gRPC status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Malformed body or payload (gRPC InvalidArgument).
    InvalidArgument,
    /// The signer's role may not write this (gRPC PermissionDenied).
    PermissionDenied,
    /// Replayed nonce or an id that already exists (gRPC AlreadyExists).
    AlreadyExists,
    /// Unknown signer, missing or invalid signature, or a stale timestamp (gRPC
    /// Unauthenticated).
    Unauthenticated,
    /// The entry refers to something the ledger does not have in the state it needs, e.g. a
    /// slice of a cohort that does not exist or allocates nothing to the site (gRPC
    /// FailedPrecondition).
    FailedPrecondition,
    /// The ledger cannot accept it now, e.g. it is shutting down (gRPC Unavailable).
    Unavailable,
}

/// A refused submission: the code and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Rejection {
    /// The status.
    pub code: Code,
    /// What is wrong.
    pub message: String,
}

impl Rejection {
    /// A rejection with `code`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
        }
    }
}

fn invalid(m: impl Into<String>) -> Rejection {
    Rejection::new(Code::InvalidArgument, m)
}

/// A member as the ledger knows it.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    /// Member id.
    pub id: String,
    /// Role.
    pub role: Role,
    /// The site a hospital speaks for ("" otherwise).
    pub site: String,
    /// Public key (possession proven).
    pub key: PublicKey,
}

/// A cohort as the rules know it: who asked for it, its seed, and how many rows its allocation
/// gives each site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CohortInfo {
    /// The scientist the cohort was created for.
    pub requester: String,
    /// The selection seed.
    pub seed: u64,
    /// Rows allocated per site (sites with a positive total only).
    pub rows_by_site: BTreeMap<String, u64>,
    /// True for a federated cohort (`mode = "federated"`): its rows never leave their sites.
    pub federated: bool,
}

/// A committed slice as the rules know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceInfo {
    /// The slice root.
    pub root: Vec<u8>,
    /// Its rows.
    pub rows: u64,
}

/// What the entries of one block add to the state, staged entry by entry (each checked against
/// the state and the entries before it) and applied at once by [`State::commit`].
#[derive(Debug, Default)]
pub struct Changes {
    members: Vec<MemberInfo>,
    revoked: Vec<String>,
    cohorts: Vec<(String, CohortInfo)>,
    slices: HashMap<String, SliceInfo>,
    approvals: HashSet<String>,
    rounds: HashSet<String>,
}

impl Changes {
    /// True when nothing was staged.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
            && self.revoked.is_empty()
            && self.cohorts.is_empty()
            && self.slices.is_empty()
            && self.approvals.is_empty()
            && self.rounds.is_empty()
    }
}

/// Members, settings, cohorts and committed slices, replayed from the entries.
#[derive(Debug, Clone)]
pub struct State {
    /// The log's name (checkpoint origin).
    pub origin: String,
    /// Accepted clock skew of submissions, ms.
    pub max_skew_ms: u64,
    /// Members by id.
    pub members: HashMap<String, MemberInfo>,
    /// Id of the ledger member (signs genesis and checkpoints).
    pub ledger_id: String,
    /// Bumped by every change of the members, so that checks made against an older state can
    /// be told apart.
    pub generation: u64,
    /// Cohorts by id (`CohortCreated`; an id is created once).
    pub cohorts: HashMap<String, CohortInfo>,
    /// The slices committed, by id (`CohortSliceCommitted`; an id is committed once).
    pub slices: HashMap<String, SliceInfo>,
    /// Revoked members by id (`MemberRevoked`): they sign nothing more; their ids and sites
    /// stay taken.
    pub revoked: HashMap<String, MemberInfo>,
    /// Cohort approvals, as `<cohort>/<site>` (`CohortApproved`; one per cohort and site).
    pub approvals: HashSet<String>,
    /// Federated rounds served, as [`round_key`] (`LocalRoundTrained`; one per slice, round
    /// and attempt).
    pub rounds: HashSet<String>,
    /// Who cosigns checkpoints and how many must (from the genesis).
    pub witnesses: WitnessPolicy,
}

/// The witnesses a genesis names, checked: distinct founding members, each a hospital or a
/// regulator, and a quorum of more than half of them (two quorums then share a witness, so two
/// conflicting checkpoints cannot both be witnessed unless a witness signs both).
fn witness_policy(
    g: &ecgfed_proto::v1::Genesis,
    members: &HashMap<String, MemberInfo>,
) -> Result<WitnessPolicy, Rejection> {
    let mut list = Vec::with_capacity(g.witnesses.len());
    let mut seen = HashSet::new();
    for id in &g.witnesses {
        let m = members
            .get(id)
            .ok_or_else(|| invalid(format!("witness {id:?} is not a founding member")))?;
        if !matches!(m.role, Role::Hospital | Role::Regulator) {
            return Err(invalid(format!(
                "witness {id} has role {}; witnesses are hospitals or regulators",
                role_name(m.role)
            )));
        }
        if !seen.insert(id.as_str()) {
            return Err(invalid(format!("witness {id} is listed twice")));
        }
        list.push(WitnessKey {
            id: id.clone(),
            key: m.key,
        });
    }
    let n = list.len();
    let q = g.witness_quorum as usize;
    if n == 0 && q != 0 {
        return Err(invalid(format!("witness_quorum {q} without any witness")));
    }
    if n > 0 && (q * 2 <= n || q > n) {
        return Err(invalid(format!(
            "witness_quorum {q} of {n} witnesses: it must be more than half of them and at most all"
        )));
    }
    Ok(WitnessPolicy {
        witnesses: list,
        quorum: q,
    })
}

/// The id of a site's slice of a cohort: `<cohort_id>/<site>`.
pub fn slice_id(cohort_id: &str, site: &str) -> String {
    format!("{cohort_id}/{site}")
}

/// Checks an id: non-empty, at most [`MAX_ID_BYTES`] bytes, no control characters.
pub fn check_id(what: &str, id: &str) -> Result<(), Rejection> {
    if id.is_empty() {
        return Err(invalid(format!("{what} is empty")));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(invalid(format!(
            "{what} is {} bytes, longer than {MAX_ID_BYTES}",
            id.len()
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{what} {id:?} contains control characters"
        )));
    }
    Ok(())
}

fn check_hash(what: &str, h: &[u8]) -> Result<(), Rejection> {
    if h.len() != 32 {
        return Err(invalid(format!("{what} is {} bytes, expected 32", h.len())));
    }
    Ok(())
}

/// A slice entry lists exactly `row_count` 32-byte commitments whose RFC 6962 root is
/// `slice_root`.
fn check_slice_commitments(s: &ecgfed_proto::v1::CohortSliceCommitted) -> Result<(), Rejection> {
    if s.commitments.len() as u64 != s.row_count {
        return Err(invalid(format!(
            "slice {} lists {} commitments for {} rows",
            s.slice_id,
            s.commitments.len(),
            s.row_count
        )));
    }
    let mut log = crate::log::MemoryLog::new();
    for (i, c) in s.commitments.iter().enumerate() {
        check_hash(&format!("slice {} commitment {i}", s.slice_id), c)?;
        log.append(c);
    }
    if let Some(i) = s.commitments.windows(2).position(|w| w[0] >= w[1]) {
        return Err(invalid(format!(
            "slice {}: commitment {} is not above commitment {i} (leaves are in strictly ascending byte order, which reveals no allocation cell)",
            s.slice_id,
            i + 1
        )));
    }
    let root = crate::log::root(&log, s.row_count).unwrap_or_else(|_| crate::log::empty_root());
    if root.as_slice() != s.slice_root.as_slice() {
        return Err(invalid(format!(
            "slice {}: slice_root is not the root of its commitments",
            s.slice_id
        )));
    }
    Ok(())
}

/// A `RecordsErased` entry's erased-leaf tokens: none (entries written before tokens
/// existed), or 32-byte tokens in strictly ascending order whose number is a power of two of
/// at least [`crate::erasure::MIN_TOKENS`] (the padding hides how many leaves were erased).
fn check_erased_leaves(tokens: &[Vec<u8>]) -> Result<(), Rejection> {
    if tokens.is_empty() {
        return Ok(());
    }
    for t in tokens {
        check_hash("erased-leaf token", t)?;
    }
    if tokens.len() != crate::erasure::padded_len(tokens.len()) {
        return Err(invalid(format!(
            "RecordsErased lists {} erased-leaf tokens: must be a power of two, at least {}",
            tokens.len(),
            crate::erasure::MIN_TOKENS
        )));
    }
    if tokens.windows(2).any(|w| w[0] >= w[1]) {
        return Err(invalid(
            "RecordsErased: erased-leaf tokens are not in strictly ascending byte order",
        ));
    }
    Ok(())
}

/// Checks a member record's ids, role, site and key encoding and returns its info (no proof of
/// possession check: see [`check_member`]).
fn member_info(m: &Member) -> Result<MemberInfo, Rejection> {
    check_id("member id", &m.id)?;
    let role = Role::try_from(m.role)
        .ok()
        .filter(|r| *r != Role::Unspecified)
        .ok_or_else(|| invalid(format!("member {}: role {} is not a role", m.id, m.role)))?;
    if role == Role::Hospital {
        check_id(&format!("member {}: site", m.id), &m.site)?;
        if m.site.contains('/') {
            return Err(invalid(format!(
                "member {}: site {:?} contains '/' (slice ids are <cohort>/<site>)",
                m.id, m.site
            )));
        }
    } else if !m.site.is_empty() {
        return Err(invalid(format!(
            "member {}: only hospitals have a site",
            m.id
        )));
    }
    let key = PublicKey::from_bytes(&m.public_key)
        .map_err(|e| invalid(format!("member {}: {e}", m.id)))?;
    Ok(MemberInfo {
        id: m.id.clone(),
        role,
        site: m.site.clone(),
        key,
    })
}

/// Checks a member record (ids, role, site, key, proof of possession) and returns its info.
pub fn check_member(m: &Member) -> Result<MemberInfo, Rejection> {
    let info = member_info(m)?;
    let pop = Signature::from_bytes(&m.proof_of_possession)
        .map_err(|e| invalid(format!("member {}: proof of possession: {e}", m.id)))?;
    if !info.key.verify_possession(&pop) {
        return Err(invalid(format!(
            "member {}: proof of possession does not verify",
            m.id
        )));
    }
    Ok(info)
}

/// Whether `role` may write entries of `kind`.
pub fn role_may_write(role: Role, kind: Kind) -> bool {
    use Kind::*;
    match role {
        Role::Hospital => matches!(
            kind,
            MemberAdmitted
                | MemberRevoked
                | CohortApproved
                | DatasetRegistered
                | CohortSliceCommitted
                | DataServed
                | RecordsErased
                | LocalRoundTrained
        ),
        Role::Scientist => matches!(kind, CohortCreated | ModelTrained),
        Role::Ledger => matches!(kind, MemberAdmitted | MemberRevoked),
        Role::Regulator | Role::Unspecified => false,
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Hospital => "hospital",
        Role::Scientist => "scientist",
        Role::Regulator => "regulator",
        Role::Ledger => "ledger",
        Role::Unspecified => "unspecified",
    }
}

impl State {
    /// The state defined by a genesis body, checking it (members, exactly one ledger member,
    /// unique ids and sites) and its signature by that ledger member.
    pub fn from_genesis(
        body: &EntryBody,
        signature: &[u8],
        body_bytes: &[u8],
    ) -> Result<State, Rejection> {
        let Some(Payload::Genesis(g)) = &body.payload else {
            return Err(invalid("entry 0 is not a Genesis entry"));
        };
        check_id("origin", &g.origin)?;
        let mut members = HashMap::new();
        let mut sites = std::collections::HashSet::new();
        for m in &g.members {
            let info = check_member(m)?;
            if !info.site.is_empty() && !sites.insert(info.site.clone()) {
                return Err(invalid(format!(
                    "site {} has two hospital members",
                    info.site
                )));
            }
            if members.insert(info.id.clone(), info).is_some() {
                return Err(invalid(format!("member id {} appears twice", m.id)));
            }
        }
        let ledgers: Vec<&MemberInfo> = members
            .values()
            .filter(|m| m.role == Role::Ledger)
            .collect();
        if ledgers.len() != 1 {
            return Err(invalid(format!(
                "genesis must have exactly one ledger member, has {}",
                ledgers.len()
            )));
        }
        let ledger = ledgers[0];
        if body.signer != ledger.id {
            return Err(invalid(format!(
                "genesis is signed by {:?}, not by the ledger member {}",
                body.signer, ledger.id
            )));
        }
        let sig = Signature::from_bytes(signature)
            .map_err(|e| Rejection::new(Code::Unauthenticated, format!("genesis: {e}")))?;
        if !ledger.key.verify(&entry::signing_bytes(body_bytes), &sig) {
            return Err(Rejection::new(
                Code::Unauthenticated,
                "genesis signature does not verify under the ledger member's key",
            ));
        }
        let witnesses = witness_policy(g, &members)?;
        let st = State {
            witnesses,
            origin: g.origin.clone(),
            max_skew_ms: if g.max_clock_skew_ms == 0 {
                DEFAULT_MAX_SKEW_MS
            } else {
                g.max_clock_skew_ms
            },
            ledger_id: ledger.id.clone(),
            members,
            generation: 0,
            cohorts: HashMap::new(),
            slices: HashMap::new(),
            revoked: HashMap::new(),
            approvals: HashSet::new(),
            rounds: HashSet::new(),
        };
        st.check_subjects(body)?;
        Ok(st)
    }

    /// The ledger member's key (signs checkpoints).
    pub fn ledger_key(&self) -> PublicKey {
        self.members[&self.ledger_id].key
    }

    fn check_subjects(&self, body: &EntryBody) -> Result<(), Rejection> {
        let Some(p) = &body.payload else {
            return Err(invalid("entry has no payload"));
        };
        let want = entry::derived_subjects(&body.signer, p);
        let key = |v: &[ecgfed_proto::v1::Subject]| {
            let mut k: Vec<(i32, String)> = v.iter().map(|s| (s.kind, s.id.clone())).collect();
            k.sort();
            k
        };
        if key(&body.subjects) != key(&want) {
            return Err(invalid(format!(
                "subjects do not match the payload: expected {:?}",
                want.iter()
                    .map(|s| (s.kind, s.id.as_str()))
                    .collect::<Vec<_>>()
            )));
        }
        Ok(())
    }

    /// Every check of a submission except its signature, its nonce and the checks against
    /// earlier entries ([`State::stage`], made in log order when its block is committed, so
    /// that a slice may follow its cohort in one stream of submissions): known signer,
    /// freshness (when `now_ms` is given), role, payload. Returns the signer.
    pub fn precheck(
        &self,
        body: &EntryBody,
        now_ms: Option<i64>,
    ) -> Result<&MemberInfo, Rejection> {
        let signer = self.members.get(&body.signer).ok_or_else(|| {
            Rejection::new(
                Code::Unauthenticated,
                format!("signer {:?} is not a member of this ledger", body.signer),
            )
        })?;
        if let Some(now) = now_ms {
            let skew = now.abs_diff(body.timestamp_ms);
            if skew > self.max_skew_ms {
                return Err(Rejection::new(
                    Code::Unauthenticated,
                    format!(
                        "timestamp {} is {skew} ms from the ledger's clock ({now}); the window is ±{} ms",
                        body.timestamp_ms, self.max_skew_ms
                    ),
                ));
            }
        }
        let p = body
            .payload
            .as_ref()
            .ok_or_else(|| invalid("entry has no payload"))?;
        let kind = Kind::of(p);
        if kind == Kind::Genesis {
            return Err(invalid(
                "a Genesis entry is only written by `ecgfed ledger init`",
            ));
        }
        if !role_may_write(signer.role, kind) {
            return Err(Rejection::new(
                Code::PermissionDenied,
                format!(
                    "member {} has role {}, which may not write {} entries",
                    signer.id,
                    role_name(signer.role),
                    kind.name()
                ),
            ));
        }
        let own_site = |site: &str| -> Result<(), Rejection> {
            check_id("site", site)?;
            if site != signer.site {
                return Err(Rejection::new(
                    Code::PermissionDenied,
                    format!(
                        "hospital {} speaks for site {}, not for {site}",
                        signer.id, signer.site
                    ),
                ));
            }
            Ok(())
        };
        match p {
            Payload::Genesis(_) => {}
            Payload::MemberAdmitted(a) => self.check_admission(a)?,
            Payload::MemberRevoked(r) => self.check_revocation(r)?,
            Payload::DatasetRegistered(d) => {
                own_site(&d.site)?;
                check_id("dataset_id", &d.dataset_id)?;
                check_hash("commitment_root", &d.commitment_root)?;
                check_hash("manifest_sha256", &d.manifest_sha256)?;
            }
            Payload::CohortCreated(c) => {
                check_id("cohort_id", &c.cohort_id)?;
                check_hash("spec_sha256", &c.spec_sha256)?;
                if c.requester != signer.id {
                    return Err(Rejection::new(
                        Code::PermissionDenied,
                        format!(
                            "{} may not create a cohort for {:?}",
                            signer.id, c.requester
                        ),
                    ));
                }
                for a in &c.allocation {
                    check_id("allocation site", &a.site)?;
                }
                if !matches!(c.mode.as_str(), "" | MODE_PULL | MODE_FEDERATED) {
                    return Err(invalid(format!(
                        "cohort {}: mode {:?} is neither {MODE_PULL:?} nor {MODE_FEDERATED:?}",
                        c.cohort_id, c.mode
                    )));
                }
            }
            Payload::CohortSliceCommitted(s) => {
                own_site(&s.site)?;
                check_id("slice_id", &s.slice_id)?;
                check_id("cohort_id", &s.cohort_id)?;
                check_id("dataset_id", &s.dataset_id)?;
                check_id("requester", &s.requester)?;
                check_hash("slice_root", &s.slice_root)?;
                check_slice_commitments(s)?;
            }
            Payload::CohortApproved(a) => {
                own_site(&a.site)?;
                check_id("cohort_id", &a.cohort_id)?;
            }
            Payload::DataServed(d) => {
                own_site(&d.site)?;
                check_id("slice_id", &d.slice_id)?;
                check_id("cohort_id", &d.cohort_id)?;
                check_id("requester", &d.requester)?;
                check_hash("slice_root", &d.slice_root)?;
            }
            Payload::ModelTrained(m) => {
                check_id("model_id", &m.model_id)?;
                check_id("cohort_id", &m.cohort_id)?;
                check_hash("weights_sha256", &m.weights_sha256)?;
                if !matches!(m.mode.as_str(), "" | MODE_PULL | MODE_FEDERATED) {
                    return Err(invalid(format!("model {}: mode {:?}", m.model_id, m.mode)));
                }
                if !m.round_entries.windows(2).all(|w| w[0] < w[1]) {
                    return Err(invalid(format!(
                        "model {}: round_entries are not strictly ascending",
                        m.model_id
                    )));
                }
            }
            Payload::LocalRoundTrained(r) => {
                own_site(&r.site)?;
                check_round(r)?;
            }
            Payload::RecordsErased(r) => {
                own_site(&r.site)?;
                check_id("dataset_id", &r.dataset_id)?;
                if r.commitments.is_empty() {
                    return Err(invalid("RecordsErased names no commitments"));
                }
                for c in &r.commitments {
                    check_hash("commitment", c)?;
                }
                check_erased_leaves(&r.erased_leaves)?;
            }
        }
        self.check_subjects(body)?;
        Ok(signer)
    }

    /// The checks of `p` that depend on earlier entries (the state and `pending`): a new
    /// member's id and site are free, a cohort id is new, a slice is the one its signer's site
    /// may commit for an existing cohort that allocates rows to that site, and its id is new.
    fn check_against(&self, p: &Payload, pending: &Changes) -> Result<(), Rejection> {
        match p {
            Payload::MemberAdmitted(a) => {
                let m = a.member.as_ref().ok_or_else(|| invalid("no member"))?;
                let info = member_info(m)?;
                self.check_new(&info)?;
                let taken = pending
                    .members
                    .iter()
                    .any(|x| x.id == info.id || (!info.site.is_empty() && x.site == info.site));
                if taken {
                    return Err(Rejection::new(
                        Code::AlreadyExists,
                        format!(
                            "member {} or its site is admitted earlier in the same block",
                            info.id
                        ),
                    ));
                }
            }
            Payload::CohortApproved(a) => {
                if !self.cohorts.contains_key(&a.cohort_id)
                    && !pending.cohorts.iter().any(|(id, _)| *id == a.cohort_id)
                {
                    return Err(Rejection::new(
                        Code::FailedPrecondition,
                        format!("cohort {} has no CohortCreated entry", a.cohort_id),
                    ));
                }
                let key = slice_id(&a.cohort_id, &a.site);
                if self.approvals.contains(&key) || pending.approvals.contains(&key) {
                    return Err(Rejection::new(
                        Code::AlreadyExists,
                        format!(
                            "cohort {} is already approved at site {}",
                            a.cohort_id, a.site
                        ),
                    ));
                }
            }
            Payload::MemberRevoked(r) if pending.revoked.contains(&r.member_id) => {
                return Err(Rejection::new(
                    Code::AlreadyExists,
                    format!(
                        "member {} is revoked earlier in the same block",
                        r.member_id
                    ),
                ));
            }
            Payload::CohortCreated(c)
                if self.cohorts.contains_key(&c.cohort_id)
                    || pending.cohorts.iter().any(|(id, _)| *id == c.cohort_id) =>
            {
                return Err(Rejection::new(
                    Code::AlreadyExists,
                    format!("cohort {} already exists", c.cohort_id),
                ));
            }
            Payload::CohortSliceCommitted(s) => {
                let want = slice_id(&s.cohort_id, &s.site);
                if s.slice_id != want {
                    return Err(invalid(format!(
                        "slice id {:?} is not <cohort>/<site> = {want:?}",
                        s.slice_id
                    )));
                }
                let cohort = self
                    .cohorts
                    .get(&s.cohort_id)
                    .or_else(|| {
                        pending
                            .cohorts
                            .iter()
                            .find(|(id, _)| *id == s.cohort_id)
                            .map(|(_, c)| c)
                    })
                    .ok_or_else(|| {
                        Rejection::new(
                            Code::FailedPrecondition,
                            format!(
                                "slice {}: cohort {} has no CohortCreated entry",
                                s.slice_id, s.cohort_id
                            ),
                        )
                    })?;
                check_slice_of(s, cohort)?;
                if self.slices.contains_key(&s.slice_id) || pending.slices.contains_key(&s.slice_id)
                {
                    return Err(Rejection::new(
                        Code::AlreadyExists,
                        format!("slice {} is already committed", s.slice_id),
                    ));
                }
            }
            Payload::LocalRoundTrained(r) => self.check_round_against(r, pending)?,
            _ => {}
        }
        Ok(())
    }

    /// A round is of a federated cohort's committed slice at the signer's site, asked for by
    /// the cohort's requester, over no more rows than the slice holds, with the slice's root,
    /// and the first of its slice, round and attempt.
    fn check_round_against(
        &self,
        r: &ecgfed_proto::v1::LocalRoundTrained,
        pending: &Changes,
    ) -> Result<(), Rejection> {
        let pre = |m: String| Rejection::new(Code::FailedPrecondition, m);
        let cohort = self
            .cohorts
            .get(&r.cohort_id)
            .or_else(|| {
                pending
                    .cohorts
                    .iter()
                    .find(|(id, _)| *id == r.cohort_id)
                    .map(|(_, c)| c)
            })
            .ok_or_else(|| {
                pre(format!(
                    "round: cohort {} has no CohortCreated entry",
                    r.cohort_id
                ))
            })?;
        if !cohort.federated {
            return Err(pre(format!(
                "cohort {} is not federated: it has no rounds",
                r.cohort_id
            )));
        }
        if r.requester != cohort.requester {
            return Err(invalid(format!(
                "round of cohort {} names requester {:?}; the cohort's is {:?}",
                r.cohort_id, r.requester, cohort.requester
            )));
        }
        if let Some(p) = r
            .participants
            .iter()
            .find(|p| !cohort.rows_by_site.contains_key(p.as_str()))
        {
            return Err(invalid(format!(
                "round of cohort {}: participant {p} is not a site of the cohort",
                r.cohort_id
            )));
        }
        let slice = self
            .slices
            .get(&r.slice_id)
            .or_else(|| pending.slices.get(&r.slice_id))
            .ok_or_else(|| pre(format!("round: slice {} is not committed", r.slice_id)))?;
        if slice.root != r.slice_root {
            return Err(invalid(format!(
                "round of slice {}: slice_root {} is not the committed root {}",
                r.slice_id,
                hex::encode(&r.slice_root),
                hex::encode(&slice.root)
            )));
        }
        if r.rows_used > slice.rows {
            return Err(invalid(format!(
                "round of slice {}: {} rows used; the slice holds {}",
                r.slice_id, r.rows_used, slice.rows
            )));
        }
        let key = round_key(&r.slice_id, r.round, r.attempt);
        if self.rounds.contains(&key) || pending.rounds.contains(&key) {
            return Err(Rejection::new(
                Code::AlreadyExists,
                format!(
                    "slice {} already trained round {} attempt {}",
                    r.slice_id, r.round, r.attempt
                ),
            ));
        }
        Ok(())
    }

    /// Checks `body` against the state and the entries staged before it in `pending`, then
    /// stages what it adds. The payload rules ([`State::precheck`]) must have passed.
    pub fn stage(&self, body: &EntryBody, pending: &mut Changes) -> Result<(), Rejection> {
        let p = body
            .payload
            .as_ref()
            .ok_or_else(|| invalid("entry has no payload"))?;
        if pending.revoked.contains(&body.signer) {
            return Err(Rejection::new(
                Code::Unauthenticated,
                format!(
                    "signer {} is revoked earlier in the same block",
                    body.signer
                ),
            ));
        }
        self.check_against(p, pending)?;
        match p {
            Payload::MemberAdmitted(a) => {
                let m = a.member.as_ref().ok_or_else(|| invalid("no member"))?;
                pending.members.push(member_info(m)?);
            }
            Payload::MemberRevoked(r) => pending.revoked.push(r.member_id.clone()),
            Payload::CohortApproved(a) => {
                pending.approvals.insert(slice_id(&a.cohort_id, &a.site));
            }
            Payload::CohortCreated(c) => {
                pending.cohorts.push((c.cohort_id.clone(), cohort_info(c)?))
            }
            Payload::CohortSliceCommitted(s) => {
                pending.slices.insert(
                    s.slice_id.clone(),
                    SliceInfo {
                        root: s.slice_root.clone(),
                        rows: s.row_count,
                    },
                );
            }
            Payload::LocalRoundTrained(r) => {
                pending
                    .rounds
                    .insert(round_key(&r.slice_id, r.round, r.attempt));
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies staged changes (members bump [`State::generation`]).
    pub fn commit(&mut self, changes: Changes) {
        if !changes.members.is_empty() || !changes.revoked.is_empty() {
            self.generation += 1;
        }
        for m in changes.members {
            self.members.insert(m.id.clone(), m);
        }
        for id in changes.revoked {
            if let Some(m) = self.members.remove(&id) {
                self.revoked.insert(id, m);
            }
        }
        self.cohorts.extend(changes.cohorts);
        self.slices.extend(changes.slices);
        self.approvals.extend(changes.approvals);
        self.rounds.extend(changes.rounds);
    }

    fn check_admission(&self, a: &ecgfed_proto::v1::MemberAdmitted) -> Result<(), Rejection> {
        let m = a
            .member
            .as_ref()
            .ok_or_else(|| invalid("MemberAdmitted has no member"))?;
        let decoded = Member::decode(a.member_bytes.as_slice())
            .map_err(|e| invalid(format!("member_bytes is not a Member: {e}")))?;
        if &decoded != m {
            return Err(invalid("member_bytes does not encode the member"));
        }
        let info = check_member(m)?;
        if info.role == Role::Ledger {
            return Err(Rejection::new(
                Code::PermissionDenied,
                "a second ledger member cannot be admitted",
            ));
        }
        let mut msg = ADMIT_TAG.to_vec();
        msg.extend_from_slice(&a.member_bytes);
        self.check_approvals(
            &format!("admission of {}", info.id),
            &a.approvers,
            &a.approval_signature,
            &msg,
        )
    }

    /// A revocation: a member (not the ledger's) approved for removal by a majority of the
    /// hospitals, their aggregate signature over [`revocation_message`].
    fn check_revocation(&self, r: &ecgfed_proto::v1::MemberRevoked) -> Result<(), Rejection> {
        check_id("member_id", &r.member_id)?;
        let Some(target) = self.members.get(&r.member_id) else {
            if self.revoked.contains_key(&r.member_id) {
                return Err(Rejection::new(
                    Code::AlreadyExists,
                    format!("member {} is already revoked", r.member_id),
                ));
            }
            return Err(Rejection::new(
                Code::FailedPrecondition,
                format!("member {} does not exist", r.member_id),
            ));
        };
        if target.role == Role::Ledger {
            return Err(Rejection::new(
                Code::PermissionDenied,
                "the ledger member cannot be revoked",
            ));
        }
        self.check_approvals(
            &format!("revocation of {}", r.member_id),
            &r.approvers,
            &r.approval_signature,
            &revocation_message(&self.origin, &r.member_id),
        )
    }

    /// Approvals by a strict majority of the hospital members: distinct hospitals whose
    /// aggregate signature over `msg` verifies (sound: their possession was proven).
    fn check_approvals(
        &self,
        what: &str,
        approvers: &[String],
        signature: &[u8],
        msg: &[u8],
    ) -> Result<(), Rejection> {
        let hospitals = self
            .members
            .values()
            .filter(|x| x.role == Role::Hospital)
            .count();
        let mut keys = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for id in approvers {
            let h = self
                .members
                .get(id)
                .filter(|x| x.role == Role::Hospital)
                .ok_or_else(|| {
                    Rejection::new(
                        Code::PermissionDenied,
                        format!("approver {id:?} is not a hospital member"),
                    )
                })?;
            if !seen.insert(id.as_str()) {
                return Err(invalid(format!("approver {id} is listed twice")));
            }
            keys.push(h.key);
        }
        if keys.len() * 2 <= hospitals {
            return Err(Rejection::new(
                Code::PermissionDenied,
                format!(
                    "{what} is approved by {} of {hospitals} hospitals; a majority ({}) is needed",
                    keys.len(),
                    hospitals / 2 + 1
                ),
            ));
        }
        let sig = Signature::from_bytes(signature).map_err(|e| {
            Rejection::new(Code::Unauthenticated, format!("approval signature: {e}"))
        })?;
        let agg = PublicKey::aggregate(&keys)
            .ok_or_else(|| Rejection::new(Code::PermissionDenied, "no approvers"))?;
        if !agg.verify(msg, &sig) {
            return Err(Rejection::new(
                Code::Unauthenticated,
                format!(
                    "the aggregate approval signature for the {what} does not verify against the approvers' keys"
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a new member whose id, or whose site, is taken.
    fn check_new(&self, info: &MemberInfo) -> Result<(), Rejection> {
        if self.members.contains_key(&info.id) || self.revoked.contains_key(&info.id) {
            return Err(Rejection::new(
                Code::AlreadyExists,
                format!("member {} already exists", info.id),
            ));
        }
        if !info.site.is_empty()
            && self
                .members
                .values()
                .chain(self.revoked.values())
                .any(|x| x.site == info.site)
        {
            return Err(Rejection::new(
                Code::AlreadyExists,
                format!("site {} already has a hospital member", info.site),
            ));
        }
        Ok(())
    }

    /// Applies an accepted entry: [`State::stage`] then [`State::commit`]. Returns the
    /// rejection when the entry conflicts with the state (an id or site taken, a slice of a
    /// cohort that does not allocate to the site, a slice id committed before).
    pub fn apply(&mut self, body: &EntryBody) -> Result<(), Rejection> {
        let mut c = Changes::default();
        self.stage(body, &mut c)?;
        self.commit(c);
        Ok(())
    }
}

/// `CohortCreated.mode` of a pulled cohort (the empty string means the same).
pub const MODE_PULL: &str = "pull";
/// `CohortCreated.mode` of a federated cohort.
pub const MODE_FEDERATED: &str = "federated";

/// The key of a round in [`State::rounds`]: `<slice>#<round>.<attempt>`.
pub fn round_key(slice_id: &str, round: u32, attempt: u32) -> String {
    format!("{slice_id}#{round}.{attempt}")
}

/// A round's own fields: ids, hashes, round and attempt from 1, the slice is the cohort's at
/// the site, at least two participants in strictly ascending order with the site among them,
/// a 48-byte key and JSON training settings.
fn check_round(r: &ecgfed_proto::v1::LocalRoundTrained) -> Result<(), Rejection> {
    check_id("cohort_id", &r.cohort_id)?;
    check_id("requester", &r.requester)?;
    check_hash("slice_root", &r.slice_root)?;
    check_hash("model_sha256", &r.model_sha256)?;
    check_hash("update_sha256", &r.update_sha256)?;
    let want = slice_id(&r.cohort_id, &r.site);
    if r.slice_id != want {
        return Err(invalid(format!(
            "round slice id {:?} is not <cohort>/<site> = {want:?}",
            r.slice_id
        )));
    }
    if r.round == 0 || r.attempt == 0 {
        return Err(invalid("round and attempt count from 1"));
    }
    if r.participants.len() < 2 {
        return Err(invalid(format!(
            "round {} of {}: {} participant(s); secure aggregation needs at least two",
            r.round,
            r.cohort_id,
            r.participants.len()
        )));
    }
    for p in &r.participants {
        check_id("participant", p)?;
    }
    if !r.participants.windows(2).all(|w| w[0] < w[1]) {
        return Err(invalid("participants are not strictly ascending"));
    }
    if !r.participants.contains(&r.site) {
        return Err(invalid(format!(
            "site {} is not among the round's participants",
            r.site
        )));
    }
    if r.round_key.len() != 48 {
        return Err(invalid(format!(
            "round_key is {} bytes; a compressed G1 point is 48",
            r.round_key.len()
        )));
    }
    if !crate::keys::is_agreement_key(&r.round_key) {
        return Err(invalid(
            "round_key is not a compressed G1 point of the prime-order subgroup",
        ));
    }
    check_hash("self_mask_sha256", &r.self_mask_sha256)?;
    if serde_json::from_str::<serde_json::Value>(&r.training_json).is_err() {
        return Err(invalid("training_json is not JSON"));
    }
    Ok(())
}

/// A cohort's info from its entry: rows per site, checked not to overflow.
pub fn cohort_info(c: &ecgfed_proto::v1::CohortCreated) -> Result<CohortInfo, Rejection> {
    let mut rows_by_site = BTreeMap::<String, u64>::new();
    for a in &c.allocation {
        let n = rows_by_site.entry(a.site.clone()).or_default();
        *n = n.checked_add(a.count).ok_or_else(|| {
            invalid(format!(
                "cohort {}: allocation of site {} overflows",
                c.cohort_id, a.site
            ))
        })?;
    }
    rows_by_site.retain(|_, n| *n > 0);
    Ok(CohortInfo {
        requester: c.requester.clone(),
        seed: c.seed,
        rows_by_site,
        federated: c.mode == MODE_FEDERATED,
    })
}

/// A slice is its cohort's: the cohort allocates rows to the slice's site, exactly as many as
/// the slice commits, and the slice carries the cohort's requester and seed. (The slice id and
/// its uniqueness are checked by [`State::stage`].)
pub fn check_slice_of(
    s: &ecgfed_proto::v1::CohortSliceCommitted,
    cohort: &CohortInfo,
) -> Result<(), Rejection> {
    let pre = |m: String| Rejection::new(Code::FailedPrecondition, m);
    let Some(&rows) = cohort.rows_by_site.get(&s.site) else {
        return Err(pre(format!(
            "slice {}: cohort {} allocates nothing to site {}",
            s.slice_id, s.cohort_id, s.site
        )));
    };
    if s.row_count != rows {
        return Err(invalid(format!(
            "slice {} commits {} rows; cohort {} allocates {rows} to site {}",
            s.slice_id, s.row_count, s.cohort_id, s.site
        )));
    }
    if s.requester != cohort.requester || s.seed != cohort.seed {
        return Err(invalid(format!(
            "slice {} names requester {:?} and seed {}; cohort {} has {:?} and {}",
            s.slice_id, s.requester, s.seed, s.cohort_id, cohort.requester, cohort.seed
        )));
    }
    Ok(())
}
