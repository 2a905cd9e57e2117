//! Ledger state derived from the entries (members and their roles) and the submission rules:
//! who may write which kind, and what a well-formed payload is (docs/ledger.md, "Submission
//! checks"). Signatures and nonces are checked by the sequencer, in batches.

use std::collections::HashMap;

use ecgfed_proto::v1::{EntryBody, Member, Role, entry_body::Payload};
use prost::Message;

use crate::entry::{self, Kind, MAX_ID_BYTES};
use crate::keys::{PublicKey, Signature};

/// Domain-separation prefix of member-admission approvals: hospitals sign
/// `ADMIT_DST ‖ member_bytes`.
pub const ADMIT_DST: &[u8] = b"ecgfed/v1/admit\n";
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

/// Members and settings, replayed from the entries.
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
    let root = crate::log::root(&log, s.row_count).unwrap_or_else(|_| crate::log::empty_root());
    if root.as_slice() != s.slice_root.as_slice() {
        return Err(invalid(format!(
            "slice {}: slice_root is not the root of its commitments",
            s.slice_id
        )));
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
            MemberAdmitted | DatasetRegistered | CohortSliceCommitted | DataServed | RecordsErased
        ),
        Role::Scientist => matches!(kind, CohortCreated | ModelTrained),
        Role::Ledger => matches!(kind, MemberAdmitted),
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
        let st = State {
            origin: g.origin.clone(),
            max_skew_ms: if g.max_clock_skew_ms == 0 {
                DEFAULT_MAX_SKEW_MS
            } else {
                g.max_clock_skew_ms
            },
            ledger_id: ledger.id.clone(),
            members,
            generation: 0,
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

    /// Every check of a submission except its signature and nonce: known signer, freshness
    /// (when `now_ms` is given), role, payload. Returns the signer.
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
            }
        }
        self.check_subjects(body)?;
        Ok(signer)
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
        self.check_new(&info)?;
        let hospitals = self
            .members
            .values()
            .filter(|x| x.role == Role::Hospital)
            .count();
        let mut keys = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for id in &a.approvers {
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
                    "admission of {} is approved by {} of {hospitals} hospitals; a majority ({}) is needed",
                    info.id,
                    keys.len(),
                    hospitals / 2 + 1
                ),
            ));
        }
        let sig = Signature::from_bytes(&a.approval_signature).map_err(|e| {
            Rejection::new(Code::Unauthenticated, format!("approval signature: {e}"))
        })?;
        let agg = PublicKey::aggregate(&keys)
            .ok_or_else(|| Rejection::new(Code::PermissionDenied, "no approvers"))?;
        let mut msg = ADMIT_DST.to_vec();
        msg.extend_from_slice(&a.member_bytes);
        if !agg.verify(&msg, &sig) {
            return Err(Rejection::new(
                Code::Unauthenticated,
                format!(
                    "the aggregate approval signature for {} does not verify against the approvers' keys",
                    info.id
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a new member whose id, or whose site, is taken.
    fn check_new(&self, info: &MemberInfo) -> Result<(), Rejection> {
        if self.members.contains_key(&info.id) {
            return Err(Rejection::new(
                Code::AlreadyExists,
                format!("member {} already exists", info.id),
            ));
        }
        if !info.site.is_empty() && self.members.values().any(|x| x.site == info.site) {
            return Err(Rejection::new(
                Code::AlreadyExists,
                format!("site {} already has a hospital member", info.site),
            ));
        }
        Ok(())
    }

    /// Applies an accepted entry (admissions add members; the admission itself was checked by
    /// [`State::precheck`]). Returns an AlreadyExists rejection if an admission earlier in the
    /// same block already took the id or site.
    pub fn apply(&mut self, body: &EntryBody) -> Result<(), Rejection> {
        if let Some(Payload::MemberAdmitted(a)) = &body.payload {
            let m = a.member.as_ref().ok_or_else(|| invalid("no member"))?;
            let info = member_info(m)?;
            self.check_new(&info)?;
            self.members.insert(info.id.clone(), info);
            self.generation += 1;
        }
        Ok(())
    }
}
