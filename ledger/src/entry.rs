//! Entries: the signed bytes, the stored (leaf) encoding, entry kinds and the subjects each
//! kind must name.
//!
//! A client encodes an [`EntryBody`] once and signs `ENTRY_TAG ‖ body`; the server stores
//! `u32 big-endian body length ‖ body ‖ 96-byte signature` and that byte string is the Merkle
//! leaf. Nothing is ever re-encoded, so signatures and leaf hashes are over bytes, not
//! structures (docs/ledger.md, "Entries").

use std::time::{SystemTime, UNIX_EPOCH};

use ecgfed_proto::v1::{EntryBody, SignedEntry, Subject, SubjectKind, entry_body::Payload};
use prost::Message;

use crate::keys::{KeyPair, Signature};

/// Message tag (not the BLS DST) of entry signatures: the signed message is `ENTRY_TAG ‖ body`.
pub const ENTRY_TAG: &[u8] = b"ecgfed/v1/entry\n";
/// Longest accepted encoded body (4 MiB: a slice entry lists every row commitment).
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// Longest subject id, member id or site name, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// A malformed stored entry or body.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EntryError {
    /// Fewer bytes than the 4-byte length prefix.
    #[error("{len} bytes, shorter than the length prefix")]
    Short {
        /// Bytes stored.
        len: usize,
    },
    /// The length prefix does not match what follows.
    #[error(
        "length prefix says a {body_len}-byte body, but {following} bytes follow it (expected body + 96-byte signature)"
    )]
    Length {
        /// Body length the prefix announces.
        body_len: usize,
        /// Bytes after the prefix.
        following: usize,
    },
    /// The body exceeds [`MAX_BODY_BYTES`].
    #[error("body of {len} bytes exceeds the {MAX_BODY_BYTES}-byte limit")]
    TooLarge {
        /// Body length.
        len: usize,
    },
    /// The body is not an `EntryBody` message.
    #[error("body is not an EntryBody: {0}")]
    Body(#[source] prost::DecodeError),
    /// The body has no payload.
    #[error("no payload")]
    NoPayload,
}

/// A decoded log entry: its index in the log, its body, and its stored bytes (the Merkle leaf,
/// `u32 BE body length ‖ body ‖ 96-byte signature`). The one entry type of the workspace: the
/// ledger client hands it out once proven in the signed tree
/// ([`crate::client::LedgerClient::entry`]); audit sources once proven against a checkpoint
/// or read from a store the auditor verifies.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedEntry {
    /// Index in the log.
    pub index: u64,
    /// The decoded body (its payload is present).
    pub body: EntryBody,
    /// Stored bytes.
    pub stored: Vec<u8>,
}

impl VerifiedEntry {
    /// Decodes stored entry bytes at `index`; a body without a payload is refused.
    pub fn decode(index: u64, stored: Vec<u8>) -> Result<VerifiedEntry, EntryError> {
        let (body, _) = decode_stored(&stored)?;
        let body = decode_body(body)?;
        if body.payload.is_none() {
            return Err(EntryError::NoPayload);
        }
        Ok(VerifiedEntry {
            index,
            body,
            stored,
        })
    }

    /// The payload.
    pub fn payload(&self) -> Option<&Payload> {
        self.body.payload.as_ref()
    }

    /// The entry's kind name (`CohortCreated`, ...).
    pub fn kind(&self) -> &'static str {
        self.payload().map(|p| Kind::of(p).name()).unwrap_or("?")
    }

    /// Whether the body lists `(kind, id)` among its subjects.
    pub fn names(&self, kind: SubjectKind, id: &str) -> bool {
        self.body
            .subjects
            .iter()
            .any(|s| s.kind == kind as i32 && s.id == id)
    }
}

/// The kind of an entry, from its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Entry 0: the founding members.
    Genesis,
    /// A member admitted by a majority of hospitals.
    MemberAdmitted,
    /// A dataset version registered by its hospital.
    DatasetRegistered,
    /// A cohort planned by a data scientist.
    CohortCreated,
    /// A site's share of a cohort committed by its hospital.
    CohortSliceCommitted,
    /// A slice transfer completed by a hospital.
    DataServed,
    /// A model trained by a data scientist.
    ModelTrained,
    /// Records erased at a hospital.
    RecordsErased,
    /// A member revoked by a majority of hospitals.
    MemberRevoked,
    /// A cohort approved by a hospital for its site.
    CohortApproved,
    /// A federated round trained by a hospital's gateway on its slice.
    LocalRoundTrained,
}

impl Kind {
    /// The name used in docs, JSON and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Genesis => "Genesis",
            Kind::MemberAdmitted => "MemberAdmitted",
            Kind::DatasetRegistered => "DatasetRegistered",
            Kind::CohortCreated => "CohortCreated",
            Kind::CohortSliceCommitted => "CohortSliceCommitted",
            Kind::DataServed => "DataServed",
            Kind::ModelTrained => "ModelTrained",
            Kind::RecordsErased => "RecordsErased",
            Kind::MemberRevoked => "MemberRevoked",
            Kind::CohortApproved => "CohortApproved",
            Kind::LocalRoundTrained => "LocalRoundTrained",
        }
    }

    /// The kind of a payload.
    pub fn of(p: &Payload) -> Kind {
        match p {
            Payload::Genesis(_) => Kind::Genesis,
            Payload::MemberAdmitted(_) => Kind::MemberAdmitted,
            Payload::DatasetRegistered(_) => Kind::DatasetRegistered,
            Payload::CohortCreated(_) => Kind::CohortCreated,
            Payload::CohortSliceCommitted(_) => Kind::CohortSliceCommitted,
            Payload::DataServed(_) => Kind::DataServed,
            Payload::ModelTrained(_) => Kind::ModelTrained,
            Payload::RecordsErased(_) => Kind::RecordsErased,
            Payload::MemberRevoked(_) => Kind::MemberRevoked,
            Payload::CohortApproved(_) => Kind::CohortApproved,
            Payload::LocalRoundTrained(_) => Kind::LocalRoundTrained,
        }
    }
}

/// The message a signer signs for `body`: `ENTRY_TAG ‖ body`.
pub fn signing_bytes(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(ENTRY_TAG.len() + body.len());
    m.extend_from_slice(ENTRY_TAG);
    m.extend_from_slice(body);
    m
}

/// The stored entry (the Merkle leaf): `u32 BE body length ‖ body ‖ signature (96 bytes)`.
pub fn encode_stored(body: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + body.len() + signature.len());
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(body);
    v.extend_from_slice(signature);
    v
}

/// Splits a stored entry into (body, signature bytes), checking the lengths.
pub fn decode_stored(stored: &[u8]) -> Result<(&[u8], &[u8]), EntryError> {
    let len = stored
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or(EntryError::Short { len: stored.len() })?;
    if stored.len() != 4 + len + 96 {
        return Err(EntryError::Length {
            body_len: len,
            following: stored.len() - 4,
        });
    }
    Ok((&stored[4..4 + len], &stored[4 + len..]))
}

/// Decodes body bytes as an [`EntryBody`].
pub fn decode_body(body: &[u8]) -> Result<EntryBody, EntryError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(EntryError::TooLarge { len: body.len() });
    }
    EntryBody::decode(body).map_err(EntryError::Body)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn subject(kind: SubjectKind, id: &str) -> Subject {
    Subject {
        kind: kind as i32,
        id: id.to_string(),
    }
}

/// A member's subjects: its id and, for a hospital, its site.
fn member(v: &mut Vec<Subject>, m: &ecgfed_proto::v1::Member) {
    v.push(subject(SubjectKind::Member, &m.id));
    if !m.site.is_empty() {
        v.push(subject(SubjectKind::Site, &m.site));
    }
}

/// The subjects an entry must carry, in this order: the signer (member), then per kind
/// (docs/ledger.md, "Subjects"). Duplicates are dropped, keeping the first.
pub fn derived_subjects(signer: &str, payload: &Payload) -> Vec<Subject> {
    use SubjectKind as S;
    let mut v = vec![subject(S::Member, signer)];
    match payload {
        Payload::Genesis(g) => g.members.iter().for_each(|m| member(&mut v, m)),
        Payload::MemberAdmitted(a) => a.member.iter().for_each(|m| member(&mut v, m)),
        Payload::DatasetRegistered(d) => {
            v.push(subject(S::Site, &d.site));
            v.push(subject(S::Dataset, &d.dataset_id));
            v.push(subject(S::DatasetHistory, &d.dataset_id));
        }
        Payload::CohortCreated(c) => {
            v.push(subject(S::Cohort, &c.cohort_id));
            v.push(subject(S::Member, &c.requester));
            for a in &c.allocation {
                v.push(subject(S::Site, &a.site));
            }
        }
        Payload::CohortSliceCommitted(s) => {
            v.push(subject(S::Slice, &s.slice_id));
            v.push(subject(S::Cohort, &s.cohort_id));
            v.push(subject(S::Site, &s.site));
            v.push(subject(S::Dataset, &s.dataset_id));
            v.push(subject(S::Member, &s.requester));
        }
        Payload::DataServed(d) => {
            v.push(subject(S::Slice, &d.slice_id));
            v.push(subject(S::Cohort, &d.cohort_id));
            v.push(subject(S::Site, &d.site));
            v.push(subject(S::Member, &d.requester));
        }
        Payload::ModelTrained(m) => {
            v.push(subject(S::Model, &m.model_id));
            v.push(subject(S::Cohort, &m.cohort_id));
        }
        Payload::LocalRoundTrained(r) => {
            v.push(subject(S::Slice, &r.slice_id));
            v.push(subject(S::Cohort, &r.cohort_id));
            v.push(subject(S::Site, &r.site));
            v.push(subject(S::Member, &r.requester));
        }
        Payload::MemberRevoked(r) => v.push(subject(S::Member, &r.member_id)),
        Payload::CohortApproved(a) => {
            v.push(subject(S::Cohort, &a.cohort_id));
            v.push(subject(S::Site, &a.site));
        }
        Payload::RecordsErased(r) => {
            v.push(subject(S::Site, &r.site));
            v.push(subject(S::Dataset, &r.dataset_id));
            v.push(subject(S::DatasetHistory, &r.dataset_id));
            for c in r.commitments.iter().chain(&r.erased_leaves) {
                v.push(subject(S::Commitment, &hex::encode(c)));
            }
        }
    }
    v.push(subject(S::EntryKind, Kind::of(payload).name()));
    let mut seen = std::collections::HashSet::new();
    v.retain(|s| seen.insert((s.kind, s.id.clone())));
    v
}

/// Index key prefix of a subject: `kind (1 byte) ‖ id ‖ 0x00`.
pub fn subject_key(kind: i32, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 2);
    k.push(kind as u8);
    k.extend_from_slice(id.as_bytes());
    k.push(0);
    k
}

/// Builds signed entries for one member: fills signer, nonce, time and subjects.
#[derive(Debug)]
pub struct EntrySigner {
    member_id: String,
    key: KeyPair,
    next_nonce: u64,
}

impl EntrySigner {
    /// A signer for `member_id` with `key`; nonces start from the current time in nanoseconds so
    /// that restarted clients do not reuse them.
    pub fn new(member_id: &str, key: KeyPair) -> Self {
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        EntrySigner {
            member_id: member_id.to_string(),
            key,
            next_nonce: start,
        }
    }

    /// The member id.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The key pair.
    pub fn key(&self) -> &KeyPair {
        &self.key
    }

    /// The body for `payload` with the next nonce and the current time.
    pub fn body(&mut self, payload: Payload) -> EntryBody {
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        EntryBody {
            signer: self.member_id.clone(),
            nonce,
            timestamp_ms: now_ms(),
            subjects: derived_subjects(&self.member_id, &payload),
            payload: Some(payload),
        }
    }

    /// Encodes and signs a body.
    pub fn sign_body(&self, body: &EntryBody) -> SignedEntry {
        let bytes = body.encode_to_vec();
        let sig: Signature = self.key.sign(&signing_bytes(&bytes));
        SignedEntry {
            body: bytes,
            signature: sig.to_bytes(),
        }
    }

    /// [`EntrySigner::body`] then [`EntrySigner::sign_body`].
    pub fn sign(&mut self, payload: Payload) -> SignedEntry {
        let body = self.body(payload);
        self.sign_body(&body)
    }
}

/// The replay key of an entry: `signer ‖ 0x00 ‖ nonce BE` (a member's nonce is used once).
pub fn nonce_key(signer: &str, nonce: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(signer.len() + 9);
    k.extend_from_slice(signer.as_bytes());
    k.push(0);
    k.extend_from_slice(&nonce.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecgfed_proto::v1::ModelTrained;

    #[test]
    fn stored_encoding_round_trips_and_rejects_bad_lengths() {
        let s = encode_stored(b"body", &[7u8; 96]);
        assert_eq!(s.len(), 4 + 4 + 96);
        assert_eq!(&s[..4], &[0, 0, 0, 4]);
        let (b, sig) = decode_stored(&s).unwrap();
        assert_eq!((b, sig.len()), (&b"body"[..], 96));
        assert!(decode_stored(&s[..s.len() - 1]).is_err());
        assert!(decode_stored(&[0, 0]).is_err());
        let mut longer = s.clone();
        longer.push(0);
        assert!(decode_stored(&longer).is_err());
    }

    #[test]
    fn signer_fills_subjects_and_signs_the_domain_separated_body() {
        let mut s = EntrySigner::new("alice", KeyPair::generate());
        let e = s.sign(Payload::ModelTrained(ModelTrained {
            model_id: "m1".into(),
            cohort_id: "c1".into(),
            ..Default::default()
        }));
        let body = decode_body(&e.body).unwrap();
        let ids: Vec<(i32, &str)> = body
            .subjects
            .iter()
            .map(|s| (s.kind, s.id.as_str()))
            .collect();
        assert_eq!(
            ids,
            vec![
                (SubjectKind::Member as i32, "alice"),
                (SubjectKind::Model as i32, "m1"),
                (SubjectKind::Cohort as i32, "c1"),
                (SubjectKind::EntryKind as i32, "ModelTrained")
            ]
        );
        let sig = Signature::from_bytes(&e.signature).unwrap();
        assert!(s.key().public().verify(&signing_bytes(&e.body), &sig));
        assert!(
            !s.key().public().verify(&e.body, &sig),
            "the DST is part of the message"
        );
        let second = s.body(Payload::ModelTrained(ModelTrained::default()));
        assert_eq!(second.nonce, body.nonce + 1);
    }
}
