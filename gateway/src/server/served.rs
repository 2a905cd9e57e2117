//! What leaves with a served row (docs/flight.md "Served columns"): under keys of the slice
//! alone, a pseudonymous record id and patient pseudonym, a salt and the leaf commitment over
//! the row as served, with the age top-coded or banded as the gateway's policy says.

use hmac::{Hmac, Mac};

use crate::commitment::commitment;
use crate::server::catalog::Row;
use crate::server::config::{AgePolicy, Policy, RecordIds};
use crate::server::rows::SliceRecord;

/// Tag of a slice's key, derived from the gateway's pseudonym key and the slice id.
const SLICE_KEY_TAG: &[u8] = b"ecgfed/v1/slice-key\n";
/// Tag of the site-wide identifier key used instead when cohorts may be linked.
const SITE_IDS_TAG: &[u8] = b"ecgfed/v1/site-ids\n";

/// HMAC-SHA256 of the concatenated `parts` under `key`.
fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// One row as it leaves: the values that differ from the store's.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServedRow {
    /// `<source>/<record_id as served>@<start_sample>`.
    pub segment_id: String,
    /// The record id as served.
    pub record_id: String,
    /// The patient's pseudonym in this slice.
    pub pseudonym: String,
    /// The age as served.
    pub age: Option<u8>,
    /// Content hash of the row as served.
    pub content_hash: [u8; 32],
    /// The leaf's salt.
    pub salt: [u8; 32],
    /// The leaf commitment: SHA-256(salt ‖ content_hash ‖ segment_id).
    pub commitment: [u8; 32],
}

/// The keys and policy a slice's rows are served under.
#[derive(Clone)]
pub(crate) struct SliceKeys {
    ids: [u8; 32],
    salts: [u8; 32],
    record_ids: RecordIds,
    ages: AgePolicy,
    edges: Vec<u8>,
    legacy: bool,
}

impl std::fmt::Debug for SliceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SliceKeys").finish_non_exhaustive()
    }
}

impl SliceKeys {
    /// The keys of `slice_id` under the gateway's pseudonym key `pkey`: the salt key is the
    /// slice's own, HMAC(pkey, SLICE_KEY_TAG ‖ slice_id); identifiers use it too unless the
    /// policy links cohorts (then HMAC(pkey, SITE_IDS_TAG)).
    pub(crate) fn new(pkey: &[u8; 32], slice_id: &str, policy: &Policy, edges: &[u8]) -> Self {
        let salts = hmac(pkey, &[SLICE_KEY_TAG, slice_id.as_bytes()]);
        let ids = if policy.link_cohorts {
            hmac(pkey, &[SITE_IDS_TAG])
        } else {
            salts
        };
        SliceKeys {
            ids,
            salts,
            record_ids: policy.record_ids,
            ages: policy.ages,
            edges: edges.to_vec(),
            legacy: false,
        }
    }

    /// The keys `rec` is served under: a slice reserved before leaves were made per slice
    /// ([`SliceRecord::legacy`]) is served as stored, its leaves being dataset commitments.
    pub(crate) fn of(pkey: &[u8; 32], rec: &SliceRecord, policy: &Policy, edges: &[u8]) -> Self {
        let mut k = SliceKeys::new(pkey, &rec.slice_id, policy, edges);
        k.legacy = rec.legacy();
        k
    }

    /// The salt of the leaf made from the store row `segment_id`.
    pub(crate) fn salt(&self, segment_id: &str) -> [u8; 32] {
        hmac(&self.salts, &[b"salt\n", segment_id.as_bytes()])
    }

    /// How `r` leaves in this slice.
    pub(crate) fn row(&self, r: &Row) -> ServedRow {
        if self.legacy {
            return ServedRow {
                segment_id: r.segment_id.clone(),
                record_id: r.record_id.clone(),
                pseudonym: r.pseudonym.clone(),
                age: r.age,
                content_hash: r.content_hash,
                salt: r.salt,
                commitment: r.commitment,
            };
        }
        let record_id = match self.record_ids {
            RecordIds::Original => r.record_id.clone(),
            RecordIds::Pseudonymous => hex::encode(
                &hmac(
                    &self.ids,
                    &[
                        b"record\n",
                        r.source.as_bytes(),
                        &[0],
                        r.record_id.as_bytes(),
                    ],
                )[..16],
            ),
        };
        let segment_id = format!("{}/{}@{}", r.source, record_id, r.start_sample);
        let pseudonym = hex::encode(hmac(&self.ids, &[b"patient\n", &r.patient_key]));
        let age = self.ages.served(r.age, &self.edges);
        let content_hash = r.hash_as(&record_id, age);
        let salt = self.salt(&r.segment_id);
        let commitment = commitment(&salt, &content_hash, &segment_id);
        ServedRow {
            segment_id,
            record_id,
            pseudonym,
            age,
            content_hash,
            salt,
            commitment,
        }
    }
}
