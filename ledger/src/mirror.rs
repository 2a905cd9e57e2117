//! A mirror: a verified copy of a ledger that follows it live and serves the same read RPCs
//! (docs/ledger.md, "Mirrors"). Hospitals and the regulator run one, so the history outlives
//! its operator: a lost ledger is restored from a mirror's folder.
//!
//! The mirror trusts what a client trusts (the trust file: origin, ledger key, a checkpoint)
//! and checks every block as `audit verify` does before writing it
//! ([`Ledger::append_mirrored`]); witnessed checkpoints are copied once their quorum verifies
//! and their root is the mirror's own at that size.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ecgfed_proto::v1::ledger_service_client::LedgerServiceClient;
use ecgfed_proto::v1::{
    GetBlockRequest, GetCheckpointRequest, GetEntryRequest, LatestCheckpointRequest,
    WatchBlocksRequest,
};
use futures::StreamExt;
use tonic::transport::Channel;

use crate::block::Block;
use crate::checkpoint::Checkpoint;
use crate::entry::{self};
use crate::keys::PublicKey;
use crate::log::{Frontier, leaf_hash};
use crate::protocol::MAX_MESSAGE_BYTES;
use crate::sequencer::{Ledger, LedgerError, MirrorRefusal};
use crate::state::State;
use crate::store::{NewEntry, Store, StoreError};

/// Entries fetched concurrently while copying a block.
const IN_FLIGHT: usize = 32;
/// How often the mirror asks for the newest witnessed checkpoint.
const WITNESS_POLL: Duration = Duration::from_millis(500);

/// Why mirroring stopped.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The source cannot be reached or refused a call.
    #[error("source {addr}: {reason}")]
    Source {
        /// Its address.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The source sent something that does not verify: the mirror keeps its verified copy and
    /// stops following.
    #[error("the source's answer does not verify: {0}")]
    Refused(#[from] MirrorRefusal),
    /// The source's genesis is not the ledger of the trust file.
    #[error("the source's genesis: {0}")]
    Genesis(String),
    /// Local storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The mirror's folder.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

fn source_err(addr: &str, e: impl std::fmt::Display) -> MirrorError {
    MirrorError::Source {
        addr: addr.to_string(),
        reason: e.to_string(),
    }
}

/// Connects to the source ledger (or another mirror), over TLS when `tls` is given (the trust
/// file's).
pub async fn connect(
    addr: &str,
    tls: Option<&crate::trust::LedgerTls>,
) -> Result<LedgerServiceClient<Channel>, MirrorError> {
    let ch = crate::trust::endpoint(addr, tls)
        .map_err(|e| source_err(addr, e))?
        .connect()
        .await
        .map_err(|e| source_err(addr, e))?;
    Ok(LedgerServiceClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Opens the mirror in `dir`, creating it from the source's genesis block when it is new: the
/// genesis entry must be signed by `key` under `origin`, and block 0 and its checkpoint must be
/// exactly the genesis's.
pub async fn open(
    dir: &Path,
    src: &mut LedgerServiceClient<Channel>,
    addr: &str,
    origin: &str,
    key: &PublicKey,
) -> Result<Arc<Ledger>, MirrorError> {
    let store = Store::open(dir)?;
    if store.head()?.is_none() {
        let g = src
            .get_entry(GetEntryRequest { index: 0 })
            .await
            .map_err(|e| source_err(addr, e.message()))?
            .into_inner()
            .stored;
        let (body_bytes, sig) =
            entry::decode_stored(&g).map_err(|e| MirrorError::Genesis(e.to_string()))?;
        let body =
            entry::decode_body(body_bytes).map_err(|e| MirrorError::Genesis(e.to_string()))?;
        let state = State::from_genesis(&body, sig, body_bytes)
            .map_err(|r| MirrorError::Genesis(r.message))?;
        if state.origin != origin || state.ledger_key() != *key {
            return Err(MirrorError::Genesis(
                "its origin or ledger key is not the trust file's".into(),
            ));
        }
        let pb = src
            .get_block(GetBlockRequest { height: 0 })
            .await
            .map_err(|e| source_err(addr, e.message()))?
            .into_inner();
        let block = Block::from_proto(&pb).map_err(|e| MirrorRefusal::Invalid {
            what: "block",
            at: 0,
            reason: e.to_string(),
        })?;
        let mut f = Frontier::default();
        let nodes = f.append_hash(leaf_hash(&g));
        if block.height != 0
            || block.previous_hash != [0; 32]
            || block.first_index != 0
            || block.entry_count != 1
            || block.tree_size != 1
            || block.root != f.root()
        {
            return Err(MirrorRefusal::Invalid {
                what: "block",
                at: 0,
                reason: "block 0 is not the genesis entry's block".into(),
            }
            .into());
        }
        let note = src
            .get_checkpoint(GetCheckpointRequest { size: 1 })
            .await
            .map_err(|e| source_err(addr, e.message()))?
            .into_inner()
            .note;
        let cp = Checkpoint::verify(&note, origin, key).map_err(|e| MirrorRefusal::Invalid {
            what: "checkpoint",
            at: 1,
            reason: e.to_string(),
        })?;
        if cp.root != block.root || cp.timestamp_ms != block.timestamp_ms {
            return Err(MirrorRefusal::Invalid {
                what: "checkpoint",
                at: 1,
                reason: "it does not sign block 0".into(),
            }
            .into());
        }
        store.commit(
            &[NewEntry {
                index: 0,
                subject_keys: body
                    .subjects
                    .iter()
                    .map(|s| entry::subject_key(s.kind, &s.id))
                    .collect(),
                signer: body.signer.clone(),
                nonce: body.nonce,
                stored: g,
            }],
            &nodes,
            &block,
            &note,
        )?;
    }
    drop(store);
    let ledger = Ledger::open_mirror(dir)?;
    let (o, k) = ledger.identity();
    if o != origin || k != *key {
        return Err(MirrorError::Genesis(
            "the mirror's folder holds another ledger than the trust file's".into(),
        ));
    }
    Ok(ledger)
}

/// Copies every block the mirror lacks, then follows the source live until it fails (a
/// refused block stops it: the mirror's copy stays as verified). Witnessed checkpoints are
/// copied alongside.
pub async fn follow(
    ledger: Arc<Ledger>,
    mut src: LedgerServiceClient<Channel>,
    addr: String,
) -> Result<(), MirrorError> {
    let witnessed = tokio::spawn(copy_witnessed(Arc::clone(&ledger), src.clone()));
    let out = copy_blocks(&ledger, &mut src, &addr).await;
    witnessed.abort();
    out
}

async fn copy_blocks(
    ledger: &Arc<Ledger>,
    src: &mut LedgerServiceClient<Channel>,
    addr: &str,
) -> Result<(), MirrorError> {
    let mut blocks = src
        .watch_blocks(WatchBlocksRequest {
            from_height: ledger.head().blocks,
        })
        .await
        .map_err(|e| source_err(addr, e.message()))?
        .into_inner();
    while let Some(pb) = blocks
        .message()
        .await
        .map_err(|e| source_err(addr, e.message()))?
    {
        let block = Block::from_proto(&pb).map_err(|e| MirrorRefusal::Invalid {
            what: "block",
            at: pb.height,
            reason: e.to_string(),
        })?;
        if block.height < ledger.head().blocks {
            continue;
        }
        ledger.check_next_block(&block)?;
        let entries: Vec<Vec<u8>> = futures::stream::iter(
            (block.first_index..block.first_index.saturating_add(block.entry_count)).map(|index| {
                let mut c = src.clone();
                async move {
                    c.get_entry(GetEntryRequest { index })
                        .await
                        .map(|r| r.into_inner().stored)
                }
            }),
        )
        .buffered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| source_err(addr, e.message()))?;
        let note = src
            .get_checkpoint(GetCheckpointRequest {
                size: block.tree_size,
            })
            .await
            .map_err(|e| source_err(addr, e.message()))?
            .into_inner()
            .note;
        let l = Arc::clone(ledger);
        tokio::task::spawn_blocking(move || l.append_mirrored(entries, block, note))
            .await
            .map_err(|e| source_err(addr, e))??;
    }
    Err(source_err(addr, "the block stream ended"))
}

/// Copies the source's newest witnessed checkpoint whenever it changes and the mirror holds
/// its size: its quorum must verify and it must sign the mirror's own root at that size.
async fn copy_witnessed(ledger: Arc<Ledger>, mut src: LedgerServiceClient<Channel>) {
    let mut last = 0;
    loop {
        tokio::time::sleep(WITNESS_POLL).await;
        let Ok(r) = src
            .latest_checkpoint(LatestCheckpointRequest { at_least: 0 })
            .await
        else {
            continue;
        };
        let note = r.into_inner().note;
        let (origin, key) = ledger.identity();
        let Ok(w) = ledger.witness_policy().verify(&note, &origin, &key) else {
            continue;
        };
        let size = w.checkpoint.size;
        if !ledger.witness_policy().is_witnessed() || size <= last || size > ledger.head().tree_size
        {
            continue;
        }
        let ours = ledger
            .checkpoint_at(size)
            .ok()
            .flatten()
            .and_then(|n| Checkpoint::verify(&n, &origin, &key).ok());
        if ours.as_ref() != Some(&w.checkpoint) {
            tracing::error!(
                size,
                "the source's witnessed checkpoint is not the mirror's own at that size"
            );
            continue;
        }
        match ledger.publish_witnessed(size, note) {
            Ok(()) => last = size,
            Err(e) => tracing::error!("{e}"),
        }
    }
}
