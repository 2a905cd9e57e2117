//! Verification of a whole ledger (what `ecgfed audit verify` runs): offline over a RocksDB
//! store, or remotely against a server with a trusted checkpoint.
//!
//! Offline, it re-checks every entry (encoding, signer, role and payload rules, signature in
//! batches, nonce uniqueness), recomputes the Merkle log from the leaves and compares every
//! stored node, checks every block (height, link to the previous block hash, entry range, tree
//! size and root), every stored checkpoint (signature by the ledger key, root at its size), and
//! the subject and nonce indexes. It names the first bad entry, block, node, checkpoint or index
//! row; it never stops at the first problem silently.

use std::collections::HashMap;
use std::time::Instant;

use ecgfed_proto::v1::EntryBody;
use rayon::prelude::*;
use serde::Serialize;

use crate::block::Block;
use crate::checkpoint::Checkpoint;
use crate::entry;
use crate::entry::nonce_key;
use crate::keys::{Prepared, PublicKey, Signature, verify_prepared};
use crate::log::{CreatedNode, Frontier, Hash, leaf_hash};
use crate::state::State;
#[cfg(feature = "server")]
use crate::store::{self, Store, StoreError};

/// Entries checked per batch.
pub const CHUNK: u64 = 8192;
/// Problems listed at most (the count is always complete).
pub const MAX_LISTED: usize = 100;

/// One thing that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `entry`, `block`, `merkle_node`, `checkpoint`, `subject_index`, `nonce_index` or `head`.
    pub what: String,
    /// Entry index, block height, tree size or node (level, index) as text.
    pub at: String,
    /// What is wrong.
    pub reason: String,
}

/// The verifier's findings.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when nothing failed.
    pub ok: bool,
    /// Entries checked.
    pub entries: u64,
    /// Blocks checked.
    pub blocks: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// Members at the end.
    pub members: usize,
    /// Tree size.
    pub tree_size: u64,
    /// Recomputed root (hex).
    pub root: String,
    /// Number of problems.
    pub problem_count: usize,
    /// The first [`MAX_LISTED`] problems, in the order found (entries first, in index order).
    pub problems: Vec<Problem>,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Entries per second.
    pub entries_per_second: f64,
}

/// Incremental verification state, fed entries in index order.
#[derive(Debug, Default)]
pub struct Verifier {
    state: Option<State>,
    frontier: Frontier,
    /// Roots wanted at these sizes (block and checkpoint sizes) → recomputed root.
    roots: HashMap<u64, Option<Hash>>,
    /// Signed checkpoint times by tree size (blocks must carry the same time).
    checkpoint_times: HashMap<u64, i64>,
    nonces: HashMap<Vec<u8>, u64>,
    /// Expected subject index rows (offline only).
    subject_rows: Option<Vec<Vec<u8>>>,
    problems: Vec<Problem>,
    problem_count: usize,
}

fn problem(what: &str, at: impl ToString, reason: impl Into<String>) -> Problem {
    Problem {
        what: what.to_string(),
        at: at.to_string(),
        reason: reason.into(),
    }
}

struct Decoded {
    index: u64,
    stored: Vec<u8>,
    body: Result<(EntryBody, Vec<u8>, Signature), String>,
}

impl Verifier {
    /// A verifier that also collects the expected subject index rows when `with_index`.
    pub fn new(with_index: bool) -> Self {
        Verifier {
            subject_rows: with_index.then(Vec::new),
            ..Default::default()
        }
    }

    /// Records a problem.
    pub fn report(&mut self, p: Problem) {
        self.problem_count += 1;
        if self.problems.len() < MAX_LISTED {
            self.problems.push(p);
        }
    }

    /// Asks for the recomputed root at `size` (call before feeding entries).
    pub fn want_root(&mut self, size: u64) {
        self.roots.entry(size).or_insert(None);
    }

    /// The recomputed root at `size`, if asked for and reached.
    pub fn root_at(&self, size: u64) -> Option<Hash> {
        self.roots.get(&size).copied().flatten()
    }

    /// The ledger state so far (after genesis).
    pub fn state(&self) -> Option<&State> {
        self.state.as_ref()
    }

    /// Entries fed so far.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The recomputed root of everything fed.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// Checks a chunk of consecutive entries (index, stored bytes) and appends them to the
    /// recomputed tree; returns the Merkle nodes they create.
    pub fn feed(&mut self, chunk: Vec<(u64, Vec<u8>)>) -> Vec<CreatedNode> {
        let decoded: Vec<Decoded> = chunk
            .into_par_iter()
            .map(|(index, stored)| {
                let body = entry::decode_stored(&stored)
                    .map_err(|e| e.to_string())
                    .and_then(|(b, s)| {
                        let body = entry::decode_body(b).map_err(|e| e.to_string())?;
                        let sig = Signature::from_bytes(s).map_err(|e| e.to_string())?;
                        Ok((body, entry::signing_bytes(b), sig))
                    });
                Decoded {
                    index,
                    stored,
                    body,
                }
            })
            .collect();
        // The rules run sequentially (admissions change the members) while the other cores
        // hash the messages to G2.
        let (keys, prepared): (Vec<Option<PublicKey>>, Vec<Option<Prepared>>) = rayon::join(
            || {
                let mut keys = Vec::with_capacity(decoded.len());
                for d in &decoded {
                    keys.push(match &d.body {
                        Err(e) => {
                            self.report(problem("entry", d.index, e.clone()));
                            None
                        }
                        Ok((body, msg, sig)) => self.rules(d.index, body, msg, sig),
                    });
                }
                keys
            },
            || {
                decoded
                    .par_iter()
                    .map(|d| {
                        d.body
                            .as_ref()
                            .ok()
                            .map(|(_, msg, sig)| Prepared::new(msg, sig))
                    })
                    .collect()
            },
        );
        // Signatures, in one batch; on failure find the culprits.
        let items: Vec<(usize, &PublicKey, &Prepared)> = keys
            .iter()
            .zip(&prepared)
            .enumerate()
            .filter_map(|(i, (k, p))| Some((i, k.as_ref()?, p.as_ref()?)))
            .collect();
        let batch: Vec<(&PublicKey, &Prepared)> = items.iter().map(|(_, k, p)| (*k, *p)).collect();
        if !verify_prepared(&batch) {
            let bad: Vec<usize> = items
                .par_iter()
                .filter(|(_, k, p)| !p.verify(k))
                .map(|(i, _, _)| *i)
                .collect();
            for i in bad {
                let d = &decoded[i];
                let signer = d
                    .body
                    .as_ref()
                    .map(|b| b.0.signer.clone())
                    .unwrap_or_default();
                self.report(problem(
                    "entry",
                    d.index,
                    format!("signature does not verify under the key of member {signer}"),
                ));
            }
        }
        // The tree.
        let mut created = Vec::new();
        for d in &decoded {
            if d.index != self.frontier.size() {
                let expected = self.frontier.size();
                self.report(problem(
                    "entry",
                    expected,
                    format!("missing (next stored entry is {})", d.index),
                ));
                return created;
            }
            created.extend(self.frontier.append_hash(leaf_hash(&d.stored)));
            let size = self.frontier.size();
            if let Some(slot) = self.roots.get_mut(&size) {
                *slot = Some(self.frontier.root());
            }
        }
        created
    }

    fn rules(
        &mut self,
        index: u64,
        body: &EntryBody,
        msg: &[u8],
        sig: &Signature,
    ) -> Option<PublicKey> {
        if index == 0 {
            // The genesis signature is checked by from_genesis itself.
            match State::from_genesis(body, &sig.to_bytes(), &msg[entry::ENTRY_TAG.len()..]) {
                Ok(s) => self.state = Some(s),
                Err(r) => {
                    self.report(problem("entry", index, format!("genesis: {}", r.message)));
                    return None;
                }
            }
            self.index_rows(index, body);
            self.nonce(index, body);
            return None;
        }
        let Some(state) = self.state.as_mut() else {
            self.report(problem("entry", index, "no valid genesis before it"));
            return None;
        };
        let key = match state.precheck(body, None) {
            Ok(m) => m.key,
            Err(r) => {
                self.report(problem("entry", index, r.message));
                return None;
            }
        };
        if let Err(r) = state.apply(body) {
            self.report(problem("entry", index, r.message));
            return None;
        }
        self.index_rows(index, body);
        self.nonce(index, body);
        Some(key)
    }

    fn nonce(&mut self, index: u64, body: &EntryBody) {
        let k = nonce_key(&body.signer, body.nonce);
        if let Some(prev) = self.nonces.insert(k, index) {
            self.report(problem(
                "entry",
                index,
                format!(
                    "nonce {} of member {} was already used by entry {prev} (replay)",
                    body.nonce, body.signer
                ),
            ));
        }
    }

    fn index_rows(&mut self, index: u64, body: &EntryBody) {
        if let Some(rows) = self.subject_rows.as_mut() {
            for s in &body.subjects {
                let mut k = entry::subject_key(s.kind, &s.id);
                k.extend_from_slice(&index.to_be_bytes());
                rows.push(k);
            }
        }
    }

    /// Checks the chain of blocks against the recomputed roots (ask for the roots with
    /// [`Verifier::want_root`] before feeding entries).
    pub fn check_blocks(&mut self, blocks: &[(u64, Vec<u8>)], tree_size: u64) {
        let mut prev_hash = [0u8; 32];
        let mut next_first = 0u64;
        let mut prev_time = i64::MIN;
        for (i, (height, raw)) in blocks.iter().enumerate() {
            let at = *height;
            if *height != i as u64 {
                self.report(problem(
                    "block",
                    i,
                    format!("missing (next stored block is {height})"),
                ));
                return;
            }
            let b = match Block::decode(raw) {
                Ok(b) => b,
                Err(e) => {
                    self.report(problem("block", at, e.to_string()));
                    return;
                }
            };
            let mut bad = Vec::new();
            if b.height != at {
                bad.push(format!("says height {}", b.height));
            }
            if b.previous_hash != prev_hash {
                bad.push("previous-block hash does not match the block before it".to_string());
            }
            if b.first_index != next_first {
                bad.push(format!(
                    "first entry {} but the block before it ended at {next_first}",
                    b.first_index
                ));
            }
            if b.entry_count == 0 || b.first_index.checked_add(b.entry_count) != Some(b.tree_size) {
                bad.push(format!(
                    "entry range {}+{} does not end at its tree size {}",
                    b.first_index, b.entry_count, b.tree_size
                ));
            }
            if b.timestamp_ms < prev_time {
                bad.push("timestamp is earlier than the block before it".to_string());
            }
            if let Some(t) = self.checkpoint_times.get(&b.tree_size)
                && *t != b.timestamp_ms
            {
                bad.push(
                    "timestamp differs from the signed checkpoint of its tree size".to_string(),
                );
            }
            match self.root_at(b.tree_size) {
                Some(r) if r == b.root => {}
                Some(_) => bad.push(format!(
                    "root differs from the Merkle root recomputed at size {}",
                    b.tree_size
                )),
                None => bad.push(format!("tree size {} is beyond the entries", b.tree_size)),
            }
            for reason in bad {
                self.report(problem("block", at, reason));
            }
            prev_hash = b.hash();
            next_first = b.tree_size;
            prev_time = b.timestamp_ms;
        }
        if next_first != tree_size {
            self.report(problem(
                "head",
                tree_size,
                format!("the blocks cover {next_first} entries, the head says {tree_size}"),
            ));
        }
    }

    /// Checks signed checkpoint notes (tree size, note) against the recomputed roots.
    pub fn check_checkpoints(&mut self, notes: &[(u64, Vec<u8>)]) -> u64 {
        let Some(state) = self.state.clone() else {
            return 0;
        };
        let key = state.ledger_key();
        let mut n = 0;
        for (size, raw) in notes {
            n += 1;
            let note = String::from_utf8_lossy(raw);
            match Checkpoint::verify(&note, &state.origin, &key) {
                Err(e) => self.report(problem("checkpoint", size, e.to_string())),
                Ok(c) if c.size != *size => self.report(problem(
                    "checkpoint",
                    size,
                    format!("stored under size {size} but says {}", c.size),
                )),
                Ok(c) => match self.root_at(c.size) {
                    Some(r) if r == c.root => {
                        self.checkpoint_times.insert(c.size, c.timestamp_ms);
                        // A witnessed note's cosignatures must hold a quorum.
                        let line = format!(
                            "\n\u{2014} {} ",
                            crate::cosign::WitnessPolicy::line_name(&state.origin)
                        );
                        if state.witnesses.is_witnessed()
                            && note.contains(&line)
                            && let Err(e) = state.witnesses.verify(&note, &state.origin, &key)
                        {
                            self.report(problem("checkpoint", size, e.to_string()));
                        }
                    }
                    _ => self.report(problem(
                        "checkpoint",
                        size,
                        "signed root differs from the Merkle root recomputed at its size",
                    )),
                },
            }
        }
        n
    }

    /// The report.
    pub fn finish(self, blocks: u64, checkpoints: u64, started: Instant) -> Report {
        let secs = started.elapsed().as_secs_f64();
        let entries = self.frontier.size();
        Report {
            ok: self.problem_count == 0,
            entries,
            blocks,
            checkpoints,
            members: self.state.as_ref().map_or(0, |s| s.members.len()),
            tree_size: entries,
            root: hex::encode(self.frontier.root()),
            problem_count: self.problem_count,
            problems: self.problems,
            seconds: secs,
            entries_per_second: if secs > 0.0 {
                entries as f64 / secs
            } else {
                0.0
            },
        }
    }
}

/// Verifies a whole store offline.
#[cfg(feature = "server")]
pub fn verify_store(store: &Store) -> Result<Report, StoreError> {
    verify_store_with(store, |_| {})
}

/// [`verify_store`] with a progress callback (entries checked so far).
#[cfg(feature = "server")]
pub fn verify_store_with(
    store: &Store,
    mut progress: impl FnMut(u64),
) -> Result<Report, StoreError> {
    let started = Instant::now();
    let mut v = Verifier::new(true);
    let Some(head) = store.head()? else {
        v.report(problem(
            "head",
            0,
            "the store holds no ledger (no head record)",
        ));
        return Ok(v.finish(0, 0, started));
    };
    let blocks: Vec<(u64, Vec<u8>)> = store
        .scan(store::CF_BLOCKS)?
        .into_iter()
        .map(|(k, val)| {
            (
                k.try_into().map(u64::from_be_bytes).unwrap_or(u64::MAX),
                val,
            )
        })
        .collect();
    for (_, raw) in &blocks {
        if let Ok(b) = Block::decode(raw) {
            v.want_root(b.tree_size);
        }
    }
    let checkpoints = store.checkpoints()?;
    for (size, _) in &checkpoints {
        v.want_root(*size);
    }
    check_entries_and_nodes(store, &mut v, head.tree_size, &mut progress)?;
    // Blocks and checkpoints.
    let n_cp = v.check_checkpoints(&checkpoints);
    v.check_blocks(&blocks, head.tree_size);
    if blocks.len() as u64 != head.blocks {
        v.report(problem(
            "head",
            head.blocks,
            format!(
                "{} blocks stored, the head says {}",
                blocks.len(),
                head.blocks
            ),
        ));
    }
    check_subject_index(store, &mut v)?;
    check_nonce_index(store, &mut v)?;
    Ok(v.finish(blocks.len() as u64, n_cp, started))
}

/// Feeds every entry below `tree_size` to `v` in chunks, compares each Merkle node it
/// recomputes with the stored one, and checks that nothing is stored beyond the head and no
/// node is stored that the entries do not make.
#[cfg(feature = "server")]
fn check_entries_and_nodes(
    store: &Store,
    v: &mut Verifier,
    tree_size: u64,
    progress: &mut impl FnMut(u64),
) -> Result<(), StoreError> {
    let mut from = 0;
    let mut node_count = 0u64;
    while from < tree_size {
        let to = (from + CHUNK).min(tree_size);
        let chunk = store.entries(from, to)?;
        if chunk.is_empty() {
            v.report(problem("entry", from, "missing"));
            break;
        }
        let created = v.feed(chunk);
        node_count += created.len() as u64;
        let stored = store.multi_nodes(&created)?;
        for (((level, index), h), s) in created.iter().zip(stored) {
            match s {
                Some(s) if s.as_slice() == h.as_slice() => {}
                Some(_) => v.report(problem(
                    "merkle_node",
                    format!("level {level} index {index}"),
                    "stored node differs from the node recomputed from the entries",
                )),
                None => v.report(problem(
                    "merkle_node",
                    format!("level {level} index {index}"),
                    "missing",
                )),
            }
        }
        if v.size() < to {
            break;
        }
        from = to;
        progress(from);
    }
    if let Some((k, _)) = store.entries(tree_size, u64::MAX)?.first() {
        v.report(problem(
            "entry",
            k,
            format!("stored beyond the head's tree size {tree_size}"),
        ));
    }
    let stored_nodes = store.count(store::CF_NODES)?;
    if stored_nodes != node_count {
        v.report(problem(
            "merkle_node",
            "-",
            format!("{stored_nodes} nodes stored, {node_count} expected for {tree_size} entries"),
        ));
    }
    Ok(())
}

/// Compares the stored subject index with the rows the entries name.
#[cfg(feature = "server")]
fn check_subject_index(store: &Store, v: &mut Verifier) -> Result<(), StoreError> {
    let Some(mut rows) = v.subject_rows.take() else {
        return Ok(());
    };
    rows.sort_unstable();
    let stored = store.scan_keys(store::CF_SUBJECTS)?;
    if let Some((i, _)) = rows
        .iter()
        .zip(&stored)
        .enumerate()
        .find(|(_, (a, b))| a != b)
    {
        v.report(problem(
            "subject_index",
            hex::encode(&stored[i]),
            format!(
                "row differs from the rows the entries name (expected {})",
                hex::encode(&rows[i])
            ),
        ));
    } else if rows.len() != stored.len() {
        v.report(problem(
            "subject_index",
            "-",
            format!("{} rows stored, {} expected", stored.len(), rows.len()),
        ));
    }
    Ok(())
}

/// Compares the stored nonce index with the nonces the entries used.
#[cfg(feature = "server")]
fn check_nonce_index(store: &Store, v: &mut Verifier) -> Result<(), StoreError> {
    let stored_nonces = store.scan(store::CF_NONCES)?;
    let mismatched = stored_nonces
        .iter()
        .find(|(k, val)| v.nonces.get(k).map(|i| i.to_be_bytes().to_vec()) != Some(val.clone()));
    if let Some((k, _)) = mismatched {
        v.report(problem(
            "nonce_index",
            hex::encode(k),
            "row does not match the entry that used the nonce",
        ));
    } else if stored_nonces.len() != v.nonces.len() {
        v.report(problem(
            "nonce_index",
            "-",
            format!(
                "{} rows stored, {} expected",
                stored_nonces.len(),
                v.nonces.len()
            ),
        ));
    }
    Ok(())
}

/// Verifies a live ledger against the client's trusted checkpoint: updates the checkpoint
/// (signature, consistency with the trusted one), fetches every entry and block, re-checks
/// them as offline, and requires the recomputed root to equal the signed root.
pub async fn verify_remote(
    client: &mut crate::client::LedgerClient,
    mut progress: impl FnMut(u64),
) -> Result<Report, crate::client::ClientError> {
    use ecgfed_proto::v1::{GetBlockRequest, GetEntryRequest};
    use futures::StreamExt;

    let started = Instant::now();
    let cp = client.update_checkpoint().await?;
    let mut v = Verifier::new(false);
    let raw = client.raw();
    // Blocks up to the checkpoint's size.
    let mut blocks = Vec::new();
    let mut next_size = 0;
    while next_size < cp.size {
        let b = raw
            .clone()
            .get_block(GetBlockRequest {
                height: blocks.len() as u64,
            })
            .await?
            .into_inner();
        let block = Block::from_proto(&b)?;
        next_size = block.tree_size;
        v.want_root(block.tree_size);
        blocks.push((b.height, block.encode()));
    }
    v.want_root(cp.size);
    let mut from = 0;
    while from < cp.size {
        let to = (from + CHUNK).min(cp.size);
        let chunk: Vec<Result<(u64, Vec<u8>), tonic::Status>> = futures::stream::iter(from..to)
            .map(|index| {
                let mut c = raw.clone();
                async move {
                    c.get_entry(GetEntryRequest { index })
                        .await
                        .map(|r| (index, r.into_inner().stored))
                }
            })
            .buffered(32)
            .collect()
            .await;
        let chunk = chunk.into_iter().collect::<Result<Vec<_>, _>>()?;
        v.feed(chunk);
        from = to;
        progress(from);
    }
    match v.root_at(cp.size) {
        Some(r) if r == cp.root => {}
        _ => v.report(problem(
            "checkpoint",
            cp.size,
            "the entries served do not hash to the signed root",
        )),
    }
    v.check_blocks(&blocks, cp.size);
    let n = blocks.len() as u64;
    Ok(v.finish(n, 1, started))
}
