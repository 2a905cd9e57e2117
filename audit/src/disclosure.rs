//! Erasure disclosures (docs/audit.md "Erasures"): a `RecordsErased` entry lists erased-leaf
//! tokens that tell a public reader nothing about which slices held the patient; the hospital
//! hands its auditor the disclosure its gateway wrote, and this module checks it against the
//! ledger: the entry it belongs to, every disclosed leaf's token in that entry, and every other
//! token a padding token of the disclosed pad key, so that no slice is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ecgfed_ledger::erasure::{DISCLOSURE_FORMAT, Disclosure, leaf_token, pad_token};
use ecgfed_proto::v1::SubjectKind;
use ecgfed_proto::v1::entry_body::Payload;

use crate::error::{AuditError, Result};
use crate::source::Source;

/// Verified disclosures: for each `RecordsErased` entry disclosed, the erased leaves per slice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disclosures {
    by_entry: BTreeMap<u64, BTreeMap<String, u64>>,
}

fn hex32(path: &Path, what: &str, s: &str) -> Result<[u8; 32]> {
    hex::decode(s)
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| bad(path, format!("{what} {s:?} is not 32 bytes of hex")))
}

fn bad(path: &Path, reason: impl Into<String>) -> AuditError {
    AuditError::Disclosure {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

impl Disclosures {
    /// Reads and verifies disclosure files (or every `*.json` in a folder given) against the
    /// ledger. Any that does not verify is an error naming the file and why.
    pub async fn load<S: Source>(src: &mut S, paths: &[std::path::PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        for p in paths {
            if p.is_dir() {
                let mut v: Vec<_> = std::fs::read_dir(p)
                    .map_err(|e| AuditError::io(p, e))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| f.extension().is_some_and(|x| x == "json"))
                    .collect();
                v.sort();
                files.extend(v);
            } else {
                files.push(p.clone());
            }
        }
        let mut out = Disclosures::default();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| AuditError::io(&f, e))?;
            let d: Disclosure = serde_json::from_str(&text)
                .map_err(|e| bad(&f, format!("not a disclosure: {e}")))?;
            let (index, slices) = verify(src, &f, &d).await?;
            out.by_entry.insert(index, slices);
        }
        Ok(out)
    }

    /// Whether any disclosure was given.
    pub fn is_empty(&self) -> bool {
        self.by_entry.is_empty()
    }

    /// Whether the erasure at entry `index` was disclosed.
    pub fn covers(&self, index: u64) -> bool {
        self.by_entry.contains_key(&index)
    }

    /// Leaves of `slice_id` the erasure at entry `index` erased, by its disclosure.
    pub fn in_slice(&self, index: u64, slice_id: &str) -> u64 {
        self.by_entry
            .get(&index)
            .and_then(|m| m.get(slice_id))
            .copied()
            .unwrap_or(0)
    }

    /// The slices the erasure at entry `index` erased leaves of, with how many.
    pub fn slices(&self, index: u64) -> Vec<(String, u64)> {
        self.by_entry
            .get(&index)
            .map(|m| m.iter().map(|(s, n)| (s.clone(), *n)).collect())
            .unwrap_or_default()
    }
}

/// Checks one disclosure; returns its entry's index and the erased leaves per slice.
async fn verify<S: Source>(
    src: &mut S,
    f: &Path,
    d: &Disclosure,
) -> Result<(u64, BTreeMap<String, u64>)> {
    if d.format != DISCLOSURE_FORMAT {
        return Err(bad(
            f,
            format!("format {:?} is not {DISCLOSURE_FORMAT}", d.format),
        ));
    }
    let first = d
        .commitments
        .first()
        .ok_or_else(|| bad(f, "names no commitments"))?;
    let want: BTreeSet<[u8; 32]> = d
        .commitments
        .iter()
        .map(|c| hex32(f, "commitment", c))
        .collect::<Result<_>>()?;
    // The entry: a RecordsErased of the site and dataset listing exactly these commitments.
    let (index, erased) = src
        .by_subject(SubjectKind::Commitment, first)
        .await?
        .into_iter()
        .find_map(|e| match e.payload() {
            Some(Payload::RecordsErased(r))
                if r.site == d.site
                    && r.dataset_id == d.dataset_id
                    && r.commitments.len() == want.len()
                    && r.commitments.iter().all(|c| {
                        <[u8; 32]>::try_from(c.as_slice()).is_ok_and(|c| want.contains(&c))
                    }) =>
            {
                Some((e.index, r.clone()))
            }
            _ => None,
        })
        .ok_or_else(|| {
            bad(
                f,
                format!(
                    "no RecordsErased entry of site {} and dataset {} lists its commitments",
                    d.site, d.dataset_id
                ),
            )
        })?;
    let tokens: BTreeSet<Vec<u8>> = erased.erased_leaves.iter().cloned().collect();
    let mut accounted: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut slices = BTreeMap::new();
    for s in &d.slices {
        // A slice or a leaf named twice would count its rows twice.
        if slices.contains_key(&s.slice_id) {
            return Err(bad(f, format!("slice {} is listed twice", s.slice_id)));
        }
        let mut indexes: Vec<u64> = s.leaves.iter().map(|l| l.index).collect();
        indexes.sort_unstable();
        if let Some(w) = indexes.windows(2).find(|w| w[0] == w[1]) {
            return Err(bad(
                f,
                format!("leaf {} of slice {} is listed twice", w[0], s.slice_id),
            ));
        }
        let entry = src
            .by_subject(SubjectKind::Slice, &s.slice_id)
            .await?
            .into_iter()
            .find_map(|e| match e.payload() {
                Some(Payload::CohortSliceCommitted(c))
                    if e.index < index && c.site == d.site && c.dataset_id == d.dataset_id =>
                {
                    Some(c.clone())
                }
                _ => None,
            })
            .ok_or_else(|| {
                bad(
                    f,
                    format!(
                        "slice {} of site {} and dataset {} was not committed before entry {index}",
                        s.slice_id, d.site, d.dataset_id
                    ),
                )
            })?;
        for l in &s.leaves {
            let leaf = entry
                .commitments
                .get(l.index as usize)
                .and_then(|c| <[u8; 32]>::try_from(c.as_slice()).ok())
                .ok_or_else(|| bad(f, format!("slice {} has no leaf {}", s.slice_id, l.index)))?;
            let t = leaf_token(&hex32(f, "salt", &l.salt)?, &leaf);
            if !tokens.contains(t.as_slice()) {
                return Err(bad(
                    f,
                    format!(
                        "leaf {} of slice {}: its token is not in entry {index}",
                        l.index, s.slice_id
                    ),
                ));
            }
            accounted.insert(t.to_vec());
        }
        slices.insert(s.slice_id.clone(), s.leaves.len() as u64);
    }
    // Completeness: every other token is padding made with the disclosed pad key.
    let pad_key = hex32(f, "pad_key", &d.pad_key)?;
    let n = tokens.len() as u32;
    accounted.extend((0..n).map(|i| pad_token(&pad_key, i).to_vec()));
    let missing = tokens.difference(&accounted).count();
    if missing > 0 {
        return Err(bad(
            f,
            format!(
                "leaves out {missing} erased leaves that entry {index} lists (a slice is missing)"
            ),
        ));
    }
    Ok((index, slices))
}
