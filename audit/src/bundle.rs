//! Proof bundles: a model's lineage with every entry it rests on, each entry's inclusion proof
//! in one signed checkpoint, and the member keys; verified offline with no server
//! (docs/audit.md, "Proof bundle", gives the format and the checks in order).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ecgfed_ledger::checkpoint::Checkpoint;
use ecgfed_ledger::entry::{decode_stored, signing_bytes};
use ecgfed_ledger::keys::{PublicKey, Signature};
use ecgfed_ledger::log::{Hash, leaf_hash, verify_inclusion};
use ecgfed_ledger::state::State;
use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::{Member, SubjectKind};
use serde::{Deserialize, Serialize};

use crate::disclosure::Disclosures;
use crate::error::{AuditError, Result};
use crate::lineage::{ModelLineage, model_lineage};
use crate::source::{MemorySource, Source, VerifiedEntry, decode_entry};

/// Value of the bundle's `format` field.
pub const FORMAT: &str = "ecgfed-proof-bundle/v1";

/// A member key as the bundle lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleMember {
    /// Member id.
    pub id: String,
    /// `hospital`, `scientist`, `regulator` or `ledger`.
    pub role: String,
    /// The site a hospital speaks for ("" otherwise).
    pub site: String,
    /// 48-byte compressed BLS12-381 G1 public key, hex.
    pub public_key: String,
    /// Index of the entry that defined the member (0 = genesis, else its MemberAdmitted).
    pub defined_at: u64,
}

/// One entry with its inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleEntry {
    /// Ledger index.
    pub index: u64,
    /// Kind name (informative; checked against the body).
    pub kind: String,
    /// The stored entry bytes, base64 (standard alphabet, padded).
    pub stored: String,
    /// `SHA-256(0x00 ‖ stored)`, hex.
    pub leaf_hash: String,
    /// RFC 6962 audit path from the leaf to the checkpoint's root, hex, leaf side first.
    pub inclusion_proof: Vec<String>,
}

/// A proof bundle (JSON, pretty-printed exactly as [`Bundle::to_bytes`] writes it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Always [`FORMAT`].
    pub format: String,
    /// The model.
    pub model_id: String,
    /// The ledger's origin line.
    pub origin: String,
    /// The ledger's public key, hex.
    pub ledger_public_key: String,
    /// The signed checkpoint every proof is against (C2SP signed note text).
    pub checkpoint: String,
    /// Members that signed an entry of the bundle, with their keys.
    pub members: Vec<BundleMember>,
    /// The entries, ascending by index: genesis, admissions of the signers, the lineage.
    pub entries: Vec<BundleEntry>,
    /// The lineage the entries prove (recomputed by the verifier and compared).
    pub lineage: ModelLineage,
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verified {
    /// The model.
    pub model_id: String,
    /// Checkpoint tree size.
    pub tree_size: u64,
    /// Checkpoint root, hex.
    pub root: String,
    /// Entries proven and signature-checked.
    pub entries: u64,
    /// Members whose keys were used.
    pub members: u64,
    /// Sites, datasets and slices of the lineage.
    pub sites: Vec<String>,
    /// Dataset versions, as `id@version`.
    pub datasets: Vec<String>,
    /// Slice ids.
    pub slices: Vec<String>,
    /// Whether records of the model's slices were erased afterwards (by the bundle's time).
    pub erasures: bool,
    /// The witnesses that cosigned the checkpoint (empty on an unwitnessed ledger).
    pub cosigners: Vec<String>,
    /// Cosignatures the genesis requires (0: an unwitnessed ledger).
    pub witness_quorum: u64,
}

fn role_name(role: i32) -> String {
    ecgfed_proto::v1::Role::try_from(role)
        .map(|r| {
            r.as_str_name()
                .trim_start_matches("ROLE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| format!("role-{role}"))
}

fn member_of(m: &Member, at: u64) -> BundleMember {
    BundleMember {
        id: m.id.clone(),
        role: role_name(m.role),
        site: m.site.clone(),
        public_key: hex::encode(&m.public_key),
        defined_at: at,
    }
}

/// Members defined by the genesis and admission entries among `entries`, keeping those that
/// signed one of them.
fn members_of(entries: &[VerifiedEntry]) -> Vec<BundleMember> {
    let mut all = Vec::new();
    for e in entries {
        match e.payload() {
            Some(Payload::Genesis(g)) => {
                all.extend(g.members.iter().map(|m| member_of(m, e.index)))
            }
            Some(Payload::MemberAdmitted(a)) => {
                all.extend(a.member.iter().map(|m| member_of(m, e.index)))
            }
            _ => {}
        }
    }
    let signers: std::collections::BTreeSet<&str> =
        entries.iter().map(|e| e.body.signer.as_str()).collect();
    all.retain(|m| signers.contains(m.id.as_str()));
    all.sort_by(|a, b| a.id.cmp(&b.id));
    all
}

impl Bundle {
    /// The canonical bytes: pretty-printed JSON and a final newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// Builds the proof bundle of `model_id` from `src`, against its newest checkpoint.
pub async fn build<S: Source>(src: &mut S, model_id: &str) -> Result<Bundle> {
    let lineage = model_lineage(src, model_id, &Disclosures::default()).await?;
    let (note, cp, key) = src.checkpoint().await?;
    // Every entry is fetched once: genesis and the lineage's, then the admissions of signers
    // who are not founding members.
    let mut picked = std::collections::BTreeMap::new();
    for i in std::iter::once(0).chain(lineage.entry_indexes()) {
        if let std::collections::btree_map::Entry::Vacant(v) = picked.entry(i) {
            v.insert(src.entry(i).await?);
        }
    }
    let genesis_ids: Vec<String> = match picked.get(&0).and_then(|e| e.payload()) {
        Some(Payload::Genesis(g)) => g.members.iter().map(|m| m.id.clone()).collect(),
        _ => return Err(AuditError::Ledger("entry 0 is not a Genesis entry".into())),
    };
    let signers: std::collections::BTreeSet<String> =
        picked.values().map(|e| e.body.signer.clone()).collect();
    for s in signers.iter().filter(|s| !genesis_ids.contains(s)) {
        let admitted = src.by_subject(SubjectKind::Member, s).await?.into_iter().find(|e| {
            matches!(e.payload(), Some(Payload::MemberAdmitted(a)) if a.member.as_ref().is_some_and(|m| m.id == *s))
        });
        if let Some(e) = admitted {
            picked.insert(e.index, e);
        }
    }
    let mut entries = Vec::with_capacity(picked.len());
    for (&i, e) in &picked {
        if i >= cp.size {
            return Err(AuditError::Ledger(format!(
                "entry {i} is newer than the latest checkpoint (size {}); retry when it is signed",
                cp.size
            )));
        }
        let proof = src.inclusion(i, cp.size).await?;
        entries.push(BundleEntry {
            index: i,
            kind: e.kind().to_string(),
            stored: B64.encode(&e.stored),
            leaf_hash: hex::encode(leaf_hash(&e.stored)),
            inclusion_proof: proof.iter().map(hex::encode).collect(),
        });
    }
    let decoded: Vec<VerifiedEntry> = picked.into_values().collect();
    Ok(Bundle {
        format: FORMAT.into(),
        model_id: model_id.to_string(),
        origin: cp.origin.clone(),
        ledger_public_key: key.to_hex(),
        checkpoint: note,
        members: members_of(&decoded),
        entries,
        lineage,
    })
}

fn bad(m: impl Into<String>) -> AuditError {
    AuditError::Bundle(m.into())
}

fn hash_hex(what: &str, h: &str) -> Result<Hash> {
    let v = hex::decode(h).map_err(|_| bad(format!("{what}: not hex")))?;
    if hex::encode(&v) != h {
        return Err(bad(format!("{what}: not lower-case hex")));
    }
    v.try_into()
        .map_err(|_| bad(format!("{what}: not 32 bytes")))
}

/// Verifies a bundle's bytes offline; `trusted_key` (e.g. from a trust file) pins the ledger
/// key, otherwise the bundle's own key is used and must be the genesis ledger member's.
/// Checks, in order: canonical form, format, checkpoint signature, each entry's leaf hash and
/// inclusion proof, genesis, each entry's rules and BLS signature under its signer's key, the
/// member list, then the lineage recomputed from the entries alone.
pub fn verify(bytes: &[u8], trusted_key: Option<&PublicKey>) -> Result<Verified> {
    let b: Bundle =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not a proof bundle: {e}")))?;
    let canonical = b.to_bytes();
    if canonical != bytes {
        let at = canonical
            .iter()
            .zip(bytes)
            .position(|(a, b)| a != b)
            .unwrap_or(canonical.len().min(bytes.len()));
        return Err(bad(format!(
            "not in canonical form (differs from its re-serialisation at byte {at})"
        )));
    }
    if b.format != FORMAT {
        return Err(bad(format!("format {:?}, expected {FORMAT:?}", b.format)));
    }
    let key_bytes =
        hex::decode(&b.ledger_public_key).map_err(|_| bad("ledger_public_key: not hex"))?;
    let key =
        PublicKey::from_bytes(&key_bytes).map_err(|e| bad(format!("ledger_public_key: {e}")))?;
    if let Some(t) = trusted_key
        && *t != key
    {
        return Err(bad("ledger_public_key is not the trusted ledger key"));
    }
    let cp = Checkpoint::verify(&b.checkpoint, &b.origin, &key)
        .map_err(|e| bad(format!("checkpoint: {e}")))?;
    // Proofs (cheap) before signatures.
    let mut entries = Vec::with_capacity(b.entries.len());
    let mut last: Option<u64> = None;
    for be in &b.entries {
        let at = |m: String| bad(format!("entry {}: {m}", be.index));
        if last.is_some_and(|l| be.index <= l) {
            return Err(at("entries are not in strictly ascending order".into()));
        }
        last = Some(be.index);
        let stored = B64
            .decode(&be.stored)
            .map_err(|e| at(format!("stored: {e}")))?;
        if B64.encode(&stored) != be.stored {
            return Err(at("stored: not canonical base64".into()));
        }
        let leaf = leaf_hash(&stored);
        if hash_hex("leaf_hash", &be.leaf_hash).map_err(|e| at(e.to_string()))? != leaf {
            return Err(at("leaf_hash is not SHA-256(0x00 ‖ stored)".into()));
        }
        let proof = be
            .inclusion_proof
            .iter()
            .map(|h| hash_hex("inclusion_proof", h))
            .collect::<Result<Vec<Hash>>>()
            .map_err(|e| at(e.to_string()))?;
        verify_inclusion(be.index, cp.size, &leaf, &proof, &cp.root).map_err(|e| {
            at(format!(
                "not in the checkpoint's tree of size {}: {e}",
                cp.size
            ))
        })?;
        let e = decode_entry(be.index, stored).map_err(|e| bad(e.to_string()))?;
        if e.kind() != be.kind {
            return Err(at(format!(
                "kind {:?} but the body is a {}",
                be.kind,
                e.kind()
            )));
        }
        entries.push(e);
    }
    // Rules and signatures, replaying the members from genesis.
    let genesis = entries
        .first()
        .filter(|e| e.index == 0)
        .ok_or_else(|| bad("the first entry must be the genesis entry 0"))?;
    let (body, sig) = decode_stored(&genesis.stored).map_err(|e| bad(e.to_string()))?;
    let mut state = State::from_genesis(&genesis.body, sig, body)
        .map_err(|r| bad(format!("entry 0: {}", r.message)))?;
    if state.ledger_key() != key {
        return Err(bad(
            "the genesis ledger member's key is not ledger_public_key",
        ));
    }
    // On a witnessed ledger the checkpoint must carry a quorum of cosignatures.
    let witnessed = state
        .witnesses
        .verify(&b.checkpoint, &b.origin, &key)
        .map_err(|e| bad(format!("checkpoint: {e}")))?;
    for e in &entries[1..] {
        let at = |m: String| bad(format!("entry {} ({}): {m}", e.index, e.kind()));
        let (body, sig) = decode_stored(&e.stored).map_err(|x| at(x.to_string()))?;
        let member = state.precheck(&e.body, None).map_err(|r| at(r.message))?;
        let sig = Signature::from_bytes(sig).map_err(|x| at(x.to_string()))?;
        if !member.key.verify(&signing_bytes(body), &sig) {
            return Err(at(format!(
                "signature does not verify under the key of member {}",
                e.body.signer
            )));
        }
        state.apply(&e.body).map_err(|r| at(r.message))?;
    }
    if members_of(&entries) != b.members {
        return Err(bad(
            "members differ from those the genesis and admission entries define",
        ));
    }
    // The lineage, recomputed from the proven entries alone.
    let mut mem = MemorySource::new(entries.iter().cloned());
    let lineage = block_on(model_lineage(
        &mut mem,
        &b.model_id,
        &Disclosures::default(),
    ))?;
    if lineage != b.lineage {
        return Err(bad("lineage differs from the one the entries prove"));
    }
    // Completeness against the cohort's own allocation: every allocated site has its slice
    // with the allocated number of rows.
    let mut per_site = std::collections::BTreeMap::<&str, u64>::new();
    for c in &lineage.cohort.cells {
        *per_site.entry(c.site.as_str()).or_default() += c.count;
    }
    for (site, rows) in per_site {
        if rows == 0 {
            continue;
        }
        let got: u64 = lineage
            .slices
            .iter()
            .filter(|s| s.site == site)
            .map(|s| s.rows)
            .sum();
        if got != rows {
            return Err(bad(format!(
                "cohort {} allocates {rows} rows to site {site}, the bundle's slices hold {got}",
                lineage.cohort.cohort_id
            )));
        }
    }
    Ok(Verified {
        model_id: b.model_id.clone(),
        tree_size: cp.size,
        root: hex::encode(cp.root),
        entries: entries.len() as u64,
        members: b.members.len() as u64,
        sites: lineage.sites.iter().map(|s| s.site.clone()).collect(),
        datasets: lineage
            .datasets
            .iter()
            .map(|d| format!("{}@{}", d.dataset_id, d.version))
            .collect(),
        slices: lineage.slices.iter().map(|s| s.slice_id.clone()).collect(),
        erasures: lineage.has_erasures(),
        cosigners: witnessed.cosigners,
        witness_quorum: state.witnesses.quorum as u64,
    })
}

/// Runs a future that never waits on I/O (the in-memory source) to completion.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}
