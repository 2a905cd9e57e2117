//! The sequencer: the ledger's root API (init, open, submit, read) and its group-commit loop.
//!
//! Submissions queue on a channel; one thread takes everything queued (up to
//! [`MAX_BATCH`]), checks it (decoding and role rules in parallel, signatures in one batch
//! verification, nonces against the store and the batch), appends the accepted entries to the
//! Merkle log, and commits them with their block and signed checkpoint as one synced RocksDB
//! write batch. Only then are the submitters answered: an acknowledged entry is durable.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use ecgfed_proto::v1::{EntryBody, SignedEntry};
use prost::Message;
use rayon::prelude::*;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::block::Block;
use crate::checkpoint::Checkpoint;
use crate::cosign::WitnessPolicy;
use crate::entry::{self, EntryError};
use crate::genesis::GenesisFile;
use crate::keys::{KeyPair, Prepared, PublicKey, Signature, verify_prepared};
use crate::log::{self, CreatedNode, Frontier, Hash, leaf_hash};
use crate::state::{Changes, Code, Rejection, State};
use crate::store::{Head, NewEntry, Store, StoreError, nonce_key};

/// Most entries committed in one block.
pub(crate) const MAX_BATCH: usize = 8192;
/// Longest pause between arriving submissions that still extends the block being gathered.
pub(crate) const GROUP_GAP: std::time::Duration = std::time::Duration::from_millis(2);
/// Longest time the sequencer gathers submissions for one block.
pub(crate) const GROUP_DELAY: std::time::Duration = std::time::Duration::from_millis(50);
/// Capacity of the submission queue.
pub(crate) const QUEUE: usize = 65_536;

/// A checkpoint note with its tree size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Latest {
    /// Tree size.
    pub size: u64,
    /// The signed note.
    pub note: String,
}

/// Longest a `LatestCheckpoint` call waits for a witnessed checkpoint of the size it asks.
pub(crate) const WITNESS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where an accepted entry landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// Entry index (leaf index).
    pub index: u64,
    /// Height of its block.
    pub block_height: u64,
    /// Its leaf hash.
    pub leaf_hash: Hash,
}

/// Ledger set-up and storage failures.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The data directory's content is not a valid ledger.
    #[error("ledger {path}: {reason}")]
    Invalid {
        /// The data directory.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

type Reply = oneshot::Sender<Result<Receipt, Rejection>>;

struct Pending {
    checked: Result<Checked, Rejection>,
    reply: Reply,
}

/// Mutable sequencer state, owned by the commit thread.
struct Tip {
    frontier: Frontier,
    blocks: u64,
    last_hash: Hash,
}

/// An open ledger.
pub struct Ledger {
    store: Arc<Store>,
    state: Arc<RwLock<State>>,
    /// The newest checkpoint the ledger signed (one per block).
    signed: watch::Sender<Latest>,
    /// The newest witnessed checkpoint (on a ledger without witnesses: the newest signed).
    witnessed: watch::Sender<Latest>,
    /// Who cosigns checkpoints (from the genesis).
    policy: WitnessPolicy,
    /// Set by [`Ledger::shutdown`]: the witnessing task stops.
    pub(crate) stopping: watch::Sender<bool>,
    head: RwLock<Head>,
    tx: Mutex<Option<mpsc::Sender<Pending>>>,
    blocks_tx: broadcast::Sender<Block>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Threads that check and hash submissions ahead of the sequencer. Separate from the
    /// sequencer's own pool, so a backlog of submissions never starves the commit path.
    prep_pool: rayon::ThreadPool,
    /// The Merkle tree's top levels in memory, for proofs.
    top: log::TopNodes,
    /// A mirror's tip ([`Ledger::open_mirror`]); None on the ledger itself.
    mirror_tip: Mutex<Option<Tip>>,
}

/// Why a mirror refuses a block copied from the ledger.
#[derive(Debug, thiserror::Error)]
pub enum MirrorRefusal {
    /// An entry, block or checkpoint that does not hold: `what` and `at` name it.
    #[error("{what} {at}: {reason}")]
    Invalid {
        /// `entry`, `block` or `checkpoint`.
        what: &'static str,
        /// Its index, height or tree size.
        at: u64,
        /// What is wrong.
        reason: String,
    },
    /// The mirror's store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl MirrorRefusal {
    fn at(what: &'static str, at: u64, reason: impl Into<String>) -> Self {
        MirrorRefusal::Invalid {
            what,
            at,
            reason: reason.into(),
        }
    }
}

/// Merkle levels below the root that [`Ledger`] keeps in memory for proofs (at most 2^15
/// nodes, 32 bytes each).
const TOP_LEVELS: u32 = 14;

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ledger({})", self.store.path().display())
    }
}

fn invalid(dir: &Path, reason: impl std::fmt::Display) -> LedgerError {
    LedgerError::Invalid {
        path: dir.display().to_string(),
        reason: reason.to_string(),
    }
}

/// A checked batch laid out as the next leaves of the log.
struct LaidOut {
    /// The tree after the batch's accepted entries.
    frontier: Frontier,
    /// Index of the first of them.
    first_index: u64,
    /// The accepted entries, as stored.
    entries: Vec<NewEntry>,
    /// The Merkle nodes they create.
    nodes: Vec<CreatedNode>,
    /// One answer per submission, in batch order.
    receipts: Vec<Result<Receipt, Rejection>>,
}

impl LaidOut {
    /// The block holding the laid-out entries, on top of `tip`.
    fn block(&self, tip: &Tip, now: i64) -> Block {
        Block {
            height: tip.blocks,
            previous_hash: tip.last_hash,
            timestamp_ms: now,
            first_index: self.first_index,
            entry_count: self.entries.len() as u64,
            tree_size: self.frontier.size(),
            root: self.frontier.root(),
        }
    }
}

/// Appends the accepted entries of `checked` to a copy of the tip's tree.
fn lay_out(checked: &[Result<Checked, Rejection>], tip: &Tip) -> LaidOut {
    let mut frontier = tip.frontier.clone();
    let first_index = frontier.size();
    let mut entries = Vec::new();
    let mut nodes = Vec::new();
    let mut receipts = Vec::with_capacity(checked.len());
    for c in checked {
        match c {
            Ok(ok) => {
                let index = frontier.size();
                let stored = entry::encode_stored(&ok.body_bytes, &ok.sig_bytes);
                let lh = leaf_hash(&stored);
                nodes.extend(frontier.append_hash(lh));
                receipts.push(Ok(Receipt {
                    index,
                    block_height: tip.blocks,
                    leaf_hash: lh,
                }));
                entries.push(NewEntry {
                    index,
                    stored,
                    subject_keys: ok
                        .body
                        .subjects
                        .iter()
                        .map(|s| entry::subject_key(s.kind, &s.id))
                        .collect(),
                    signer: ok.body.signer.clone(),
                    nonce: ok.body.nonce,
                });
            }
            Err(r) => receipts.push(Err(r.clone())),
        }
    }
    LaidOut {
        frontier,
        first_index,
        entries,
        nodes,
        receipts,
    }
}

fn checkpoint_for(state: &State, block: &Block, key: &KeyPair) -> String {
    Checkpoint {
        origin: state.origin.clone(),
        size: block.tree_size,
        root: block.root,
        timestamp_ms: block.timestamp_ms,
    }
    .sign(key)
}

/// Replays the state (members, cohorts, committed slices) from the stored entries.
pub(crate) fn replay_state(store: &Store, head: Head) -> Result<State, LedgerError> {
    let dir = store.path();
    let g = store
        .entry(0)?
        .ok_or_else(|| invalid(dir, "entry 0 (genesis) is missing"))?;
    let (body_bytes, sig) =
        entry::decode_stored(&g).map_err(|e| invalid(dir, format!("entry 0: {e}")))?;
    let body = entry::decode_body(body_bytes).map_err(|e| invalid(dir, format!("entry 0: {e}")))?;
    let mut state = State::from_genesis(&body, sig, body_bytes)
        .map_err(|e| invalid(dir, format!("entry 0: {}", e.message)))?;
    // Admissions, cohorts and slices change the state; scan in chunks (this runs once at start).
    let mut from = 1;
    while from < head.tree_size {
        let to = (from + 65_536).min(head.tree_size);
        for (i, stored) in store.entries(from, to)? {
            let (b, _) = entry::decode_stored(&stored)
                .map_err(|e| invalid(dir, format!("entry {i}: {e}")))?;
            let body =
                entry::decode_body(b).map_err(|e| invalid(dir, format!("entry {i}: {e}")))?;
            use ecgfed_proto::v1::entry_body::Payload as P;
            match &body.payload {
                Some(P::MemberAdmitted(_) | P::MemberRevoked(_)) => state
                    .apply(&body)
                    .map_err(|e| invalid(dir, format!("entry {i}: {}", e.message)))?,
                // A log written before the cohort and slice rules may break them: the first
                // entry of an id counts, and the ledger still starts.
                Some(P::CohortCreated(_) | P::CohortSliceCommitted(_) | P::CohortApproved(_)) => {
                    if let Err(e) = state.apply(&body) {
                        tracing::warn!(entry = i, "entry breaks today's rules: {}", e.message);
                    }
                }
                _ => {}
            }
        }
        from = to;
    }
    Ok(state)
}

impl Ledger {
    /// Creates a new ledger in `dir` from a genesis file: entry 0 is the genesis entry signed
    /// by `key`, which must be the genesis file's ledger member. Refuses a directory that
    /// already holds a ledger.
    pub fn init(
        dir: &Path,
        genesis: &GenesisFile,
        key: &KeyPair,
    ) -> Result<Checkpoint, LedgerError> {
        let store = Store::open(dir)?;
        if store.head()?.is_some() {
            return Err(invalid(
                dir,
                "already holds a ledger; refusing to overwrite it",
            ));
        }
        let body = genesis.body().map_err(|e| invalid(dir, e))?;
        let bytes = body.encode_to_vec();
        let sig = key.sign(&entry::signing_bytes(&bytes)).to_bytes();
        let state = State::from_genesis(&body, &sig, &bytes)
            .map_err(|e| invalid(dir, format!("genesis: {}", e.message)))?;
        if state.ledger_key() != key.public() {
            return Err(invalid(
                dir,
                "the key given is not the genesis file's ledger member key",
            ));
        }
        let stored = entry::encode_stored(&bytes, &sig);
        let mut f = Frontier::default();
        let nodes = f.append_hash(leaf_hash(&stored));
        let block = Block {
            height: 0,
            previous_hash: [0; 32],
            timestamp_ms: entry::now_ms(),
            first_index: 0,
            entry_count: 1,
            tree_size: 1,
            root: f.root(),
        };
        let note = checkpoint_for(&state, &block, key);
        let subject_keys = body
            .subjects
            .iter()
            .map(|s| entry::subject_key(s.kind, &s.id))
            .collect();
        store.commit(
            &[NewEntry {
                index: 0,
                stored,
                subject_keys,
                signer: body.signer.clone(),
                nonce: 0,
            }],
            &nodes,
            &block,
            &note,
        )?;
        Checkpoint::verify(&note, &state.origin, &key.public()).map_err(|e| invalid(dir, e))
    }

    /// Opens the ledger in `dir` (recovering its state from the store) and starts the commit
    /// thread. `key` must be the ledger member's key.
    pub fn open(dir: &Path, key: KeyPair) -> Result<Arc<Ledger>, LedgerError> {
        let (ledger, tip, rx) = Self::load(dir, true)?;
        if ledger.identity().1 != key.public() {
            return Err(invalid(dir, "the key given is not this ledger's key"));
        }
        let l2 = Arc::clone(&ledger);
        let handle = std::thread::Builder::new()
            .name("ledger-sequencer".into())
            .spawn(move || l2.run(rx, tip, key))
            .map_err(|e| invalid(dir, format!("cannot start the sequencer thread: {e}")))?;
        if let Ok(mut t) = ledger.thread.lock() {
            *t = Some(handle);
        }
        Ok(ledger)
    }

    /// Opens a mirror's copy of a ledger in `dir`: the same store and read API, no key, no
    /// submissions (they are refused as Unavailable); blocks are added only by
    /// [`Ledger::append_mirrored`], each checked as the ledger checked it.
    pub fn open_mirror(dir: &Path) -> Result<Arc<Ledger>, LedgerError> {
        let (ledger, tip, _) = Self::load(dir, false)?;
        if let Ok(mut t) = ledger.mirror_tip.lock() {
            *t = Some(tip);
        }
        Ok(ledger)
    }

    /// The store, state and tip of the ledger in `dir`; a submission queue when `writable`.
    #[allow(clippy::type_complexity)]
    fn load(
        dir: &Path,
        writable: bool,
    ) -> Result<(Arc<Ledger>, Tip, mpsc::Receiver<Pending>), LedgerError> {
        let store = Store::open(dir)?;
        let head = store
            .head()?
            .ok_or_else(|| invalid(dir, "holds no ledger; run `ecgfed ledger init` first"))?;
        let state = replay_state(&store, head)?;
        let frontier = Frontier::load(&store, head.tree_size).map_err(|e| invalid(dir, e))?;
        let last = store
            .block(head.blocks - 1)?
            .ok_or_else(|| invalid(dir, format!("block {} is missing", head.blocks - 1)))?;
        if last.tree_size != head.tree_size || last.root != frontier.root() {
            return Err(invalid(
                dir,
                format!(
                    "the last block ({}) does not match the stored Merkle log; run `ecgfed audit verify`",
                    last.height
                ),
            ));
        }
        let note = store
            .checkpoint(head.tree_size)?
            .ok_or_else(|| invalid(dir, format!("no checkpoint for size {}", head.tree_size)))?;
        let policy = state.witnesses.clone();
        let witnessed = if policy.is_witnessed() {
            // The newest witnessed checkpoint; before the first, the genesis checkpoint (which
            // clients take only from their trust file).
            let size = store.witnessed_size()?.max(1);
            let wnote = store
                .checkpoint(size)?
                .ok_or_else(|| invalid(dir, format!("no checkpoint for size {size}")))?;
            Latest { size, note: wnote }
        } else {
            Latest {
                size: head.tree_size,
                note: note.clone(),
            }
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let (blocks_tx, _) = broadcast::channel(1024);
        let ledger = Arc::new(Ledger {
            store: Arc::new(store),
            state: Arc::new(RwLock::new(state)),
            signed: watch::Sender::new(Latest {
                size: head.tree_size,
                note,
            }),
            witnessed: watch::Sender::new(witnessed),
            policy,
            stopping: watch::Sender::new(false),
            head: RwLock::new(head),
            tx: Mutex::new(writable.then_some(tx)),
            blocks_tx,
            thread: Mutex::new(None),
            mirror_tip: Mutex::new(None),
            prep_pool: pool("ledger-prepare")?,
            top: log::TopNodes::new(TOP_LEVELS),
        });
        let tip = Tip {
            frontier,
            blocks: head.blocks,
            last_hash: last.hash(),
        };
        Ok((ledger, tip, rx))
    }

    /// Whether this is a mirror's read-only copy ([`Ledger::open_mirror`]).
    pub fn is_mirror(&self) -> bool {
        self.mirror_tip.lock().is_ok_and(|t| t.is_some())
    }

    /// Adds one block copied from the ledger to a mirror, after checking it as the ledger and
    /// `audit verify` do: height, link and entry range; every entry's encoding, rules (without
    /// the clock), signature and nonce; the recomputed root against the block's; the signed
    /// checkpoint of its size (the ledger's signature, size, root and time). Nothing is written
    /// unless all of it holds.
    pub fn append_mirrored(
        &self,
        entries: Vec<Vec<u8>>,
        block: Block,
        note: String,
    ) -> Result<(), MirrorRefusal> {
        let mut guard = self.mirror_tip.lock().map_err(|_| {
            MirrorRefusal::at("block", block.height, "the mirror's tip is poisoned")
        })?;
        let tip = guard
            .as_mut()
            .ok_or_else(|| MirrorRefusal::at("block", block.height, "not a mirror"))?;
        check_next(tip, &block)?;
        if block.entry_count != entries.len() as u64 {
            return Err(MirrorRefusal::at(
                "block",
                block.height,
                format!(
                    "it holds {} entries, {} were sent",
                    block.entry_count,
                    entries.len()
                ),
            ));
        }
        let first = tip.frontier.size();
        let state_guard = self.state.read().unwrap_or_else(|e| e.into_inner());
        let state: &State = &state_guard;
        let mut changes = Changes::default();
        let mut prepared = Vec::with_capacity(entries.len());
        let mut laid = Vec::with_capacity(entries.len());
        let mut frontier = tip.frontier.clone();
        let mut nodes = Vec::new();
        let mut in_block = HashSet::new();
        for (k, stored) in entries.into_iter().enumerate() {
            let index = first + k as u64;
            let at = |r: String| MirrorRefusal::at("entry", index, r);
            let (b, sig) = entry::decode_stored(&stored).map_err(|e| at(e.to_string()))?;
            let body = entry::decode_body(b).map_err(|e| at(e.to_string()))?;
            let key = state.precheck(&body, None).map_err(|r| at(r.message))?.key;
            state
                .stage(&body, &mut changes)
                .map_err(|r| at(r.message))?;
            let sig = Signature::from_bytes(sig).map_err(|e| at(e.to_string()))?;
            prepared.push((key, Prepared::new(&entry::signing_bytes(b), &sig)));
            let nk = nonce_key(&body.signer, body.nonce);
            if !in_block.insert(nk) {
                return Err(at(format!(
                    "nonce {} of {} used twice",
                    body.nonce, body.signer
                )));
            }
            nodes.extend(frontier.append_hash(leaf_hash(&stored)));
            laid.push(NewEntry {
                index,
                subject_keys: body
                    .subjects
                    .iter()
                    .map(|s| entry::subject_key(s.kind, &s.id))
                    .collect(),
                signer: body.signer.clone(),
                nonce: body.nonce,
                stored,
            });
        }
        let items: Vec<(&PublicKey, &Prepared)> = prepared.iter().map(|(k, p)| (k, p)).collect();
        if !verify_prepared(&items) {
            let i = failing(&items).first().copied().unwrap_or(0);
            return Err(MirrorRefusal::at(
                "entry",
                first + i as u64,
                "signature does not verify under its signer's key",
            ));
        }
        let keys: Vec<Vec<u8>> = laid.iter().map(|e| nonce_key(&e.signer, e.nonce)).collect();
        if let Some(i) = self
            .store
            .nonces_used(&keys)
            .map_err(MirrorRefusal::Store)?
            .iter()
            .position(|u| *u)
        {
            return Err(MirrorRefusal::at(
                "entry",
                first + i as u64,
                "its nonce was used before (replay)",
            ));
        }
        if frontier.root() != block.root {
            return Err(MirrorRefusal::at(
                "block",
                block.height,
                "its root is not the root of the entries sent",
            ));
        }
        let cp = Checkpoint::verify(&note, &state.origin, &state.ledger_key())
            .map_err(|e| MirrorRefusal::at("checkpoint", block.tree_size, e.to_string()))?;
        if cp.size != block.tree_size
            || cp.root != block.root
            || cp.timestamp_ms != block.timestamp_ms
        {
            return Err(MirrorRefusal::at(
                "checkpoint",
                block.tree_size,
                "its size, root or time differs from the block's",
            ));
        }
        drop(state_guard);
        self.store
            .commit(&laid, &nodes, &block, &note)
            .map_err(MirrorRefusal::Store)?;
        self.publish_block(tip, frontier, block, note, changes);
        Ok(())
    }

    /// After a block's synced write: the tip, the state, the head, the checkpoint watches and
    /// the block watchers see it (the sequencer and a mirror alike).
    fn publish_block(
        &self,
        tip: &mut Tip,
        frontier: Frontier,
        block: Block,
        note: String,
        changes: Changes,
    ) {
        tip.frontier = frontier;
        tip.blocks += 1;
        tip.last_hash = block.hash();
        if !changes.is_empty()
            && let Ok(mut g) = self.state.write()
        {
            g.commit(changes);
        }
        if let Ok(mut h) = self.head.write() {
            *h = Head {
                tree_size: block.tree_size,
                blocks: tip.blocks,
            };
        }
        let latest = Latest {
            size: block.tree_size,
            note,
        };
        if !self.policy.is_witnessed() {
            self.witnessed.send_replace(latest.clone());
        }
        self.signed.send_replace(latest);
        let _ = self.blocks_tx.send(block);
    }

    /// Checks, before anything of it is fetched, that `block` can be a mirror's next block:
    /// the next height, linked to the block before, its entries starting at the mirror's size,
    /// at least one and at most a block's worth ([`MAX_BATCH`]) of them. A source claiming a
    /// block of 2^60 entries is refused here, not fetched entry by entry.
    pub fn check_next_block(&self, block: &Block) -> Result<(), MirrorRefusal> {
        let guard = self.mirror_tip.lock().map_err(|_| {
            MirrorRefusal::at("block", block.height, "the mirror's tip is poisoned")
        })?;
        let tip = guard
            .as_ref()
            .ok_or_else(|| MirrorRefusal::at("block", block.height, "not a mirror"))?;
        check_next(tip, block)
    }

    /// Submits an entry; resolves once it is durable (or refused).
    pub async fn submit(&self, entry: SignedEntry) -> Result<Receipt, Rejection> {
        self.enqueue(entry)
            .await?
            .await
            .unwrap_or_else(|_| Err(unavailable()))
    }

    /// The queue into the commit thread (Unavailable once the ledger stops).
    fn sender(&self) -> Result<mpsc::Sender<Pending>, Rejection> {
        if self.is_mirror() {
            return Err(Rejection::new(
                Code::Unavailable,
                "this is a read-only mirror of the ledger: submit to the ledger itself",
            ));
        }
        self.tx
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .ok_or_else(unavailable)
    }

    /// Checks an entry ahead of the sequencer (decoding, member, freshness, role and payload
    /// rules, signature decoding and hashing its message to G2, on the rayon pool), queues it,
    /// and returns the receiver of its answer (for pipelined streams).
    pub async fn enqueue(
        &self,
        entry: SignedEntry,
    ) -> Result<oneshot::Receiver<Result<Receipt, Rejection>>, Rejection> {
        let tx = self.sender()?;
        let (ptx, prx) = oneshot::channel();
        let state = Arc::clone(&self.state);
        self.prep_pool.spawn(move || {
            let s = state.read().unwrap_or_else(|e| e.into_inner());
            let _ = ptx.send(check(&s, &entry, entry::now_ms()));
        });
        let checked = prx.await.map_err(|_| unavailable())?;
        let (reply, rx) = oneshot::channel();
        tx.send(Pending { checked, reply })
            .await
            .map_err(|_| unavailable())?;
        Ok(rx)
    }

    /// Appends a signed entry with no rule, signature or nonce check at all, as a compromised
    /// ledger host could: the tests of clients that must not take the ledger's word for its
    /// rules use it. Compiled with the `test-kit` feature only.
    #[cfg(feature = "test-kit")]
    pub async fn append_unchecked(&self, entry: SignedEntry) -> Result<Receipt, Rejection> {
        let tx = self.sender()?;
        let body = entry::decode_body(&entry.body)
            .map_err(|e: EntryError| Rejection::new(Code::InvalidArgument, e.to_string()))?;
        let sig = Signature::from_bytes(&entry.signature)
            .map_err(|e| Rejection::new(Code::InvalidArgument, e.to_string()))?;
        let checked = Checked {
            key: self.identity().1,
            unchecked: true,
            generation: 0,
            prepared: Prepared::new(&entry::signing_bytes(&entry.body), &sig),
            body_bytes: entry.body.clone(),
            sig_bytes: entry.signature.clone(),
            body,
        };
        let (reply, rx) = oneshot::channel();
        tx.send(Pending {
            checked: Ok(checked),
            reply,
        })
        .await
        .map_err(|_| unavailable())?;
        rx.await.unwrap_or_else(|_| Err(unavailable()))
    }

    /// Tells the tasks that serve endless answers (block streams, waits for a witnessed
    /// checkpoint) and the witnessing task to end; [`Ledger::shutdown`] does it too.
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    /// Stops accepting submissions, commits what is queued and stops the commit thread.
    pub fn shutdown(&self) {
        self.stopping.send_replace(true);
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
        let h = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = h {
            let _ = h.join();
        }
    }

    /// The store (read access for the service and the verifier).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The committed head.
    pub fn head(&self) -> Head {
        self.head.read().map(|h| *h).unwrap_or_default()
    }

    /// The newest checkpoint note the ledger signed (not necessarily witnessed yet).
    pub fn checkpoint(&self) -> String {
        self.signed.borrow().note.clone()
    }

    /// Follows the newest signed checkpoint.
    pub fn watch_signed(&self) -> watch::Receiver<Latest> {
        self.signed.subscribe()
    }

    /// Follows the newest witnessed checkpoint.
    pub fn watch_witnessed(&self) -> watch::Receiver<Latest> {
        self.witnessed.subscribe()
    }

    /// The newest witnessed checkpoint (on a ledger without witnesses: the newest signed).
    pub fn witnessed(&self) -> Latest {
        self.witnessed.borrow().clone()
    }

    /// The newest witnessed checkpoint once its size is at least `at_least`, waiting up to
    /// [`WITNESS_WAIT`] (then the newest there is). Sizes beyond the committed head are not
    /// waited for.
    pub async fn witnessed_at_least(&self, at_least: u64) -> Latest {
        if at_least > self.head().tree_size {
            return self.witnessed();
        }
        let mut rx = self.witnessed.subscribe();
        let mut stop = self.stopping.subscribe();
        let wait = async {
            tokio::select! {
                l = rx.wait_for(|l| l.size >= at_least) => l.map(|l| l.clone()).ok(),
                _ = stop.wait_for(|s| *s) => None,
            }
        };
        match tokio::time::timeout(WITNESS_WAIT, wait).await {
            Ok(Some(l)) => l,
            _ => self.witnessed(),
        }
    }

    /// Who cosigns this ledger's checkpoints.
    pub fn witness_policy(&self) -> &WitnessPolicy {
        &self.policy
    }

    /// Stores a witnessed checkpoint (replacing the ledger-signed note of its size) and serves
    /// it from now on; an older one than the newest is ignored.
    pub fn publish_witnessed(&self, size: u64, note: String) -> Result<(), StoreError> {
        if size < self.witnessed.borrow().size {
            return Ok(());
        }
        self.store.put_witnessed(size, &note)?;
        self.witnessed.send_replace(Latest { size, note });
        Ok(())
    }

    /// The stored checkpoint of one tree size (witnessed where it was).
    pub fn checkpoint_at(&self, size: u64) -> Result<Option<String>, StoreError> {
        if size > self.head().tree_size {
            return Ok(None);
        }
        self.store.checkpoint(size)
    }

    /// The key of `id` when it is a member now (admitted, not revoked).
    pub fn member_key(&self, id: &str) -> Option<PublicKey> {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        if s.revoked.contains_key(id) {
            return None;
        }
        s.members.get(id).map(|m| m.key)
    }

    /// The origin and the ledger key (to verify checkpoints).
    pub fn identity(&self) -> (String, PublicKey) {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        (s.origin.clone(), s.ledger_key())
    }

    /// Subscribes to newly committed blocks.
    pub fn watch(&self) -> broadcast::Receiver<Block> {
        self.blocks_tx.subscribe()
    }

    fn run(&self, mut rx: mpsc::Receiver<Pending>, mut tip: Tip, key: KeyPair) {
        let seq_pool = match pool("ledger-commit") {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("{e}");
                return;
            }
        };
        while let Some(first) = rx.blocking_recv() {
            // Group commit: keep gathering while submissions keep arriving (no gap longer
            // than GROUP_GAP), for at most GROUP_DELAY or MAX_BATCH entries, so that per-block
            // costs (a synced write, the pairings of the batch verification, the checkpoint
            // signature) are shared under load while a lone submission waits only GROUP_GAP.
            let mut batch = vec![first];
            let opened = std::time::Instant::now();
            let mut last = opened;
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(p) => {
                        batch.push(p);
                        last = std::time::Instant::now();
                    }
                    Err(mpsc::error::TryRecvError::Empty)
                        if last.elapsed() < GROUP_GAP && opened.elapsed() < GROUP_DELAY =>
                    {
                        std::thread::sleep(std::time::Duration::from_micros(200));
                    }
                    Err(_) => break,
                }
            }
            if let Err(e) = seq_pool.install(|| self.commit_batch(batch, &mut tip, &key)) {
                tracing::error!("ledger commit failed, refusing further submissions: {e}");
                if let Ok(mut g) = self.tx.lock() {
                    g.take();
                }
                rx.close();
                while let Ok(p) = rx.try_recv() {
                    let _ = p.reply.send(Err(unavailable()));
                }
                return;
            }
        }
    }

    fn commit_batch(
        &self,
        mut batch: Vec<Pending>,
        tip: &mut Tip,
        key: &KeyPair,
    ) -> Result<(), StoreError> {
        let now = entry::now_ms();
        let (checked, changes) = self.check_batch(&mut batch, now)?;
        let laid = lay_out(&checked, tip);
        if !laid.entries.is_empty()
            && let Err(e) = self.seal_block(laid.block(tip, now), &laid, changes, tip, key)
        {
            for p in batch {
                let _ = p.reply.send(Err(unavailable()));
            }
            return Err(e);
        }
        for (p, r) in batch.into_iter().zip(laid.receipts) {
            let _ = p.reply.send(r);
        }
        Ok(())
    }

    /// The rules, signatures and nonces of a batch, each entry against the state and the
    /// batch's earlier entries, in order; the state changes the accepted ones make.
    fn check_batch(
        &self,
        batch: &mut [Pending],
        now: i64,
    ) -> Result<(Vec<Result<Checked, Rejection>>, Changes), StoreError> {
        let state_guard = self.state.read().unwrap_or_else(|e| e.into_inner());
        let state: &State = &state_guard;
        // The rules were checked and the message hashed in `enqueue`; check the rules again
        // only for entries prepared before the members last changed.
        let mut checked: Vec<Result<Checked, Rejection>> = batch
            .par_iter_mut()
            .map(|p| {
                let mut c = std::mem::replace(&mut p.checked, Err(unavailable()))?;
                if c.generation != state.generation && !c.unchecked {
                    c.key = state.precheck(&c.body, Some(now))?.key;
                    c.generation = state.generation;
                }
                Ok(c)
            })
            .collect();
        let items: Vec<(&PublicKey, &Prepared)> = checked
            .iter()
            .filter_map(|c| c.as_ref().ok().filter(|c| !c.unchecked))
            .map(|c| (&c.key, &c.prepared))
            .collect();
        let bad = if verify_prepared(&items) {
            Vec::new()
        } else {
            failing(&items)
        };
        drop(items);
        if !bad.is_empty() {
            // `bad` indexes the verified items: map back to the batch's positions.
            let positions: Vec<usize> = checked
                .iter()
                .enumerate()
                .filter(|(_, c)| c.as_ref().is_ok_and(|c| !c.unchecked))
                .map(|(i, _)| i)
                .collect();
            for b in bad {
                let i = positions[b];
                if let Ok(ok) = &checked[i] {
                    let signer = ok.body.signer.clone();
                    checked[i] = Err(Rejection::new(
                        Code::Unauthenticated,
                        format!("signature does not verify under the key of member {signer}"),
                    ));
                }
            }
        }
        // Nonces: against the store, then within the batch.
        let keys: Vec<Vec<u8>> = checked
            .iter()
            .filter_map(|c| c.as_ref().ok().filter(|c| !c.unchecked))
            .map(|c| nonce_key(&c.body.signer, c.body.nonce))
            .collect();
        let used = self.store.nonces_used(&keys)?;
        let mut nonces = keys.into_iter().zip(used);
        let mut in_batch = HashSet::new();
        // Entries that add to the state are checked against it and the block's earlier
        // entries, in order.
        let mut changes = Changes::default();
        for c in checked.iter_mut() {
            let Ok(ok) = c else { continue };
            if ok.unchecked {
                continue;
            }
            let Some((k, used)) = nonces.next() else {
                break;
            };
            if used || !in_batch.insert(k) {
                let (s, n) = (ok.body.signer.clone(), ok.body.nonce);
                *c = Err(Rejection::new(
                    Code::AlreadyExists,
                    format!("nonce {n} of member {s} was already used (replay)"),
                ));
                continue;
            }
            if let Err(r) = state.stage(&ok.body, &mut changes) {
                *c = Err(r);
            }
        }
        Ok((checked, changes))
    }

    /// Writes the block and its entries, then makes them visible: the tip, the state, the
    /// checkpoint, the head, the block watchers.
    fn seal_block(
        &self,
        block: Block,
        laid: &LaidOut,
        changes: Changes,
        tip: &mut Tip,
        key: &KeyPair,
    ) -> Result<(), StoreError> {
        let note = {
            let s = self.state.read().unwrap_or_else(|e| e.into_inner());
            checkpoint_for(&s, &block, key)
        };
        self.store
            .commit(&laid.entries, &laid.nodes, &block, &note)?;
        self.publish_block(tip, laid.frontier.clone(), block, note, changes);
        Ok(())
    }

    /// Builds an inclusion proof of `index` in the tree of `size` (≤ the committed size).
    pub fn prove_inclusion(&self, index: u64, size: u64) -> Result<Vec<Hash>, Rejection> {
        Ok(self
            .prove_inclusions(&[index], size)?
            .pop()
            .unwrap_or_default())
    }

    /// Inclusion proofs of several leaves in the tree of `size` (≤ the committed size), in
    /// the order asked; nodes the proofs share are read once.
    pub fn prove_inclusions(
        &self,
        indices: &[u64],
        size: u64,
    ) -> Result<Vec<Vec<Hash>>, Rejection> {
        let committed = self.check_size(size)?;
        let memo = log::TopNodes::new(u32::MAX);
        let top = self.top.reader(self.store.as_ref(), committed);
        let r = memo.reader(&top, committed);
        indices
            .iter()
            .map(|&i| {
                log::inclusion_proof(&r, i, size)
                    .map_err(|e| Rejection::new(Code::InvalidArgument, e.to_string()))
            })
            .collect()
    }

    /// Builds a consistency proof between two sizes (≤ the committed size).
    pub fn prove_consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>, Rejection> {
        let committed = self.check_size(to)?;
        log::consistency_proof(&self.top.reader(self.store.as_ref(), committed), from, to)
            .map_err(|e| Rejection::new(Code::InvalidArgument, e.to_string()))
    }

    /// The committed size, when `size` is within it (InvalidArgument otherwise).
    pub fn check_size(&self, size: u64) -> Result<u64, Rejection> {
        let committed = self.head().tree_size;
        if size > committed {
            return Err(Rejection::new(
                Code::InvalidArgument,
                format!("tree size {size} is beyond the committed size {committed}"),
            ));
        }
        Ok(committed)
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
    }
}

/// `block` as the next block on top of `tip` (see [`Ledger::check_next_block`]).
fn check_next(tip: &Tip, block: &Block) -> Result<(), MirrorRefusal> {
    let bad = |r: String| MirrorRefusal::at("block", block.height, r);
    if block.height != tip.blocks {
        return Err(bad(format!("expected block {}", tip.blocks)));
    }
    if block.previous_hash != tip.last_hash {
        return Err(bad(
            "its previous-block hash is not the hash of the block before".into(),
        ));
    }
    let first = tip.frontier.size();
    if block.first_index != first
        || block.entry_count == 0
        || block.entry_count > MAX_BATCH as u64
        || first.checked_add(block.entry_count) != Some(block.tree_size)
    {
        return Err(bad(format!(
            "entry range {}+{} (tree size {}) is not 1 to {MAX_BATCH} entries following size {first}",
            block.first_index, block.entry_count, block.tree_size
        )));
    }
    Ok(())
}

/// Sub-batches this small are checked one signature at a time.
const BISECT_LEAF: usize = 4;

/// The positions of the signatures of a batch that failed its batch verification, found by
/// bisection: each half is batch-verified again (in parallel), and only halves that fail are
/// split further. One forged signature among n costs about 2·log2(n) small batch
/// verifications instead of n single ones, so a client that slips one forged entry into every
/// block cannot make the sequencer verify the whole block one by one.
fn failing(items: &[(&PublicKey, &Prepared)]) -> Vec<usize> {
    fn go(items: &[(&PublicKey, &Prepared)], offset: usize, known_bad: bool) -> Vec<usize> {
        if items.len() <= BISECT_LEAF {
            return items
                .iter()
                .enumerate()
                .filter(|(_, (k, p))| !p.verify(k))
                .map(|(i, _)| offset + i)
                .collect();
        }
        if !known_bad && verify_prepared(items) {
            return Vec::new();
        }
        let mid = items.len() / 2;
        let (mut l, r) = rayon::join(
            || go(&items[..mid], offset, false),
            || go(&items[mid..], offset + mid, false),
        );
        l.extend(r);
        l
    }
    go(items, 0, true)
}

fn pool(name: &'static str) -> Result<rayon::ThreadPool, LedgerError> {
    rayon::ThreadPoolBuilder::new()
        .thread_name(move |i| format!("{name}-{i}"))
        .build()
        .map_err(|e| LedgerError::Invalid {
            path: name.to_string(),
            reason: format!("cannot start a thread pool: {e}"),
        })
}

fn unavailable() -> Rejection {
    Rejection::new(
        Code::Unavailable,
        "the ledger is shutting down or cannot write; retry against a running ledger",
    )
}

/// A submission that passed every check but the signature and nonce, with its message
/// hashed to G2.
struct Checked {
    body: EntryBody,
    body_bytes: Vec<u8>,
    sig_bytes: Vec<u8>,
    prepared: Prepared,
    /// The signer's key, and the member-state generation the rules were checked against.
    key: PublicKey,
    generation: u64,
    /// Appended without any check ([`Ledger::append_unchecked`], `test-kit` builds only).
    unchecked: bool,
}

fn check(state: &State, e: &SignedEntry, now: i64) -> Result<Checked, Rejection> {
    let body = entry::decode_body(&e.body)
        .map_err(|e: EntryError| Rejection::new(Code::InvalidArgument, e.to_string()))?;
    if e.signature.is_empty() {
        return Err(Rejection::new(
            Code::Unauthenticated,
            format!("entry by {:?} is not signed", body.signer),
        ));
    }
    let sig = Signature::from_bytes(&e.signature).map_err(|err| {
        Rejection::new(
            Code::Unauthenticated,
            format!("entry by {:?}: {err}", body.signer),
        )
    })?;
    let key = state.precheck(&body, Some(now))?.key;
    Ok(Checked {
        key,
        unchecked: false,
        generation: state.generation,
        prepared: Prepared::new(&entry::signing_bytes(&e.body), &sig),
        body_bytes: e.body.clone(),
        sig_bytes: e.signature.clone(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bisection_names_exactly_the_forged_signatures() {
        let keys: Vec<KeyPair> = (0..3).map(|_| KeyPair::generate()).collect();
        let msgs: Vec<Vec<u8>> = (0..40).map(|i| format!("m{i}").into_bytes()).collect();
        for bad in [vec![0usize, 17, 39], vec![5], (0..40).collect::<Vec<_>>()] {
            let prepared: Vec<(PublicKey, Prepared)> = msgs
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let signer = if bad.contains(&i) { (i + 1) % 3 } else { i % 3 };
                    (
                        keys[i % 3].public(),
                        Prepared::new(m, &keys[signer].sign(m)),
                    )
                })
                .collect();
            let items: Vec<(&PublicKey, &Prepared)> =
                prepared.iter().map(|(k, p)| (k, p)).collect();
            assert!(!verify_prepared(&items));
            let mut got = failing(&items);
            got.sort();
            assert_eq!(got, bad);
        }
    }
}
