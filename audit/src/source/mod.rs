//! Where lineage reads entries from: a ledger store on disk (offline), a running ledger through
//! the verifying client (every entry proven against a signed checkpoint), or the entries of a
//! proof bundle. All three answer the same subject-index lookups.

#[cfg(feature = "store")]
mod offline;
#[cfg(feature = "store")]
pub use offline::StoreSource;

use std::collections::{BTreeMap, HashMap};

use ecgfed_ledger::checkpoint::Checkpoint;
use ecgfed_ledger::client::LedgerClient;
use ecgfed_ledger::entry::{Kind, decode_body, decode_stored};
use ecgfed_ledger::keys::PublicKey;
use ecgfed_ledger::log::Hash;
use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::{EntryBody, ProveInclusionRequest, Subject, SubjectKind};

use crate::error::{AuditError, Result};

/// One ledger entry: its index, stored bytes (the Merkle leaf) and decoded body.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Index in the log.
    pub index: u64,
    /// Stored bytes: `u32 BE body length ‖ body ‖ 96-byte signature`.
    pub stored: Vec<u8>,
    /// The decoded body.
    pub body: EntryBody,
}

impl Entry {
    /// Decodes stored entry bytes.
    pub fn decode(index: u64, stored: Vec<u8>) -> Result<Entry> {
        let bad = |reason: String| AuditError::Entry { index, reason };
        let (body, _) = decode_stored(&stored).map_err(|e| bad(e.to_string()))?;
        let body = decode_body(body).map_err(|e| bad(e.to_string()))?;
        if body.payload.is_none() {
            return Err(bad("no payload".into()));
        }
        Ok(Entry {
            index,
            stored,
            body,
        })
    }

    /// The payload (always present after [`Entry::decode`]).
    pub fn payload(&self) -> Option<&Payload> {
        self.body.payload.as_ref()
    }

    /// The entry's kind name.
    pub fn kind(&self) -> &'static str {
        self.payload().map(|p| Kind::of(p).name()).unwrap_or("?")
    }

    /// Signing time as RFC 3339 (UTC, milliseconds).
    pub fn time(&self) -> String {
        rfc3339(self.body.timestamp_ms)
    }

    /// Whether the body lists `(kind, id)` among its subjects.
    pub fn names(&self, kind: SubjectKind, id: &str) -> bool {
        self.body
            .subjects
            .iter()
            .any(|s| s.kind == kind as i32 && s.id == id)
    }
}

/// Milliseconds since the Unix epoch as RFC 3339 in UTC with milliseconds
/// (`2026-11-26T08:00:00.000Z`).
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).unwrap_or_default()
}

/// A source of ledger entries answering subject-index lookups.
#[allow(async_fn_in_trait)] // used with concrete types on one runtime; no Send bound needed
pub trait Source {
    /// Entries naming `(kind, id)`, in index order.
    async fn by_subject(&mut self, kind: SubjectKind, id: &str) -> Result<Vec<Entry>>;
    /// Entries naming each of `subjects` (one list per subject, in order). Sources that can
    /// ask concurrently do so.
    async fn by_subjects(&mut self, subjects: &[(SubjectKind, &str)]) -> Result<Vec<Vec<Entry>>> {
        let mut out = Vec::with_capacity(subjects.len());
        for (k, id) in subjects {
            out.push(self.by_subject(*k, id).await?);
        }
        Ok(out)
    }
    /// Entry `index`.
    async fn entry(&mut self, index: u64) -> Result<Entry>;
    /// The newest signed checkpoint (note text, parsed) and the ledger key that signed it.
    async fn checkpoint(&mut self) -> Result<(String, Checkpoint, PublicKey)>;
    /// Inclusion proof of entry `index` in the tree of `size` entries.
    async fn inclusion(&mut self, index: u64, size: u64) -> Result<Vec<Hash>>;
}

/// The ledger key and origin from a genesis entry.
pub fn genesis_key(genesis: &Entry) -> Result<(String, PublicKey)> {
    let Some(Payload::Genesis(g)) = genesis.payload() else {
        return Err(AuditError::Entry {
            index: genesis.index,
            reason: "not a Genesis entry".into(),
        });
    };
    let m = g
        .members
        .iter()
        .find(|m| m.id == genesis.body.signer)
        .ok_or_else(|| AuditError::Entry {
            index: genesis.index,
            reason: "genesis signer is not among its members".into(),
        })?;
    let key = PublicKey::from_bytes(&m.public_key).map_err(|e| AuditError::Entry {
        index: genesis.index,
        reason: format!("ledger key: {e}"),
    })?;
    Ok((g.origin.clone(), key))
}

/// A running ledger through the verifying client: every entry is proven to be in a signed
/// tree consistent with the client's trusted checkpoint.
pub struct RemoteSource {
    client: LedgerClient,
    key: PublicKey,
}

impl RemoteSource {
    /// Wraps a connected client that trusts `key` (the ledger key of its trust file).
    pub fn new(client: LedgerClient, key: PublicKey) -> Self {
        RemoteSource { client, key }
    }

    /// The client (to save its newer checkpoint).
    pub fn client(&self) -> &LedgerClient {
        &self.client
    }
}

fn remote(e: impl std::fmt::Display) -> AuditError {
    AuditError::Ledger(e.to_string())
}

/// One subject query through a verifying client.
async fn remote_query(
    client: &mut LedgerClient,
    kind: SubjectKind,
    id: &str,
) -> Result<Vec<Entry>> {
    let subject = Subject {
        kind: kind as i32,
        id: id.to_string(),
    };
    client
        .query_subject(subject, 0, 0)
        .await
        .map_err(remote)?
        .into_iter()
        .map(|e| Entry::decode(e.index, e.stored))
        .collect()
}

impl Source for RemoteSource {
    async fn by_subject(&mut self, kind: SubjectKind, id: &str) -> Result<Vec<Entry>> {
        remote_query(&mut self.client, kind, id).await
    }

    async fn by_subjects(&mut self, subjects: &[(SubjectKind, &str)]) -> Result<Vec<Vec<Entry>>> {
        // The clones share the connection and the trusted checkpoint (already covering every
        // entry asked for, or each updates its own copy and checks consistency).
        futures::future::join_all(subjects.iter().map(|(k, id)| {
            let mut c = self.client.clone();
            async move { remote_query(&mut c, *k, id).await }
        }))
        .await
        .into_iter()
        .collect()
    }

    async fn entry(&mut self, index: u64) -> Result<Entry> {
        let e = self.client.entry(index).await.map_err(remote)?;
        Entry::decode(index, e.stored)
    }

    async fn checkpoint(&mut self) -> Result<(String, Checkpoint, PublicKey)> {
        let cp = self.client.update_checkpoint().await.map_err(remote)?;
        let note = self.client.trusted_note().unwrap_or_default().to_string();
        Ok((note, cp, self.key))
    }

    async fn inclusion(&mut self, index: u64, size: u64) -> Result<Vec<Hash>> {
        let p = self
            .client
            .raw()
            .prove_inclusion(ProveInclusionRequest {
                index,
                tree_size: size,
            })
            .await
            .map_err(remote)?
            .into_inner();
        p.hashes
            .iter()
            .map(|h| {
                h.as_slice()
                    .try_into()
                    .map_err(|_| remote(format!("inclusion proof of entry {index}: bad hash")))
            })
            .collect()
    }
}

/// Entries held in memory (a proof bundle's), indexed by their subjects.
#[derive(Debug, Default)]
pub struct MemorySource {
    entries: BTreeMap<u64, Entry>,
    index: HashMap<(i32, String), Vec<u64>>,
}

impl MemorySource {
    /// Indexes `entries` by the subjects their bodies list.
    pub fn new(entries: impl IntoIterator<Item = Entry>) -> Self {
        let mut m = MemorySource::default();
        for e in entries {
            for s in &e.body.subjects {
                m.index
                    .entry((s.kind, s.id.clone()))
                    .or_default()
                    .push(e.index);
            }
            m.entries.insert(e.index, e);
        }
        for v in m.index.values_mut() {
            v.sort_unstable();
            v.dedup();
        }
        m
    }
}

impl Source for MemorySource {
    async fn by_subject(&mut self, kind: SubjectKind, id: &str) -> Result<Vec<Entry>> {
        Ok(self
            .index
            .get(&(kind as i32, id.to_string()))
            .map(|v| {
                v.iter()
                    .filter_map(|i| self.entries.get(i).cloned())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn entry(&mut self, index: u64) -> Result<Entry> {
        self.entries
            .get(&index)
            .cloned()
            .ok_or_else(|| AuditError::NotFound(format!("entry {index} is not in the bundle")))
    }

    async fn checkpoint(&mut self) -> Result<(String, Checkpoint, PublicKey)> {
        Err(AuditError::NotFound(
            "entries in memory carry no checkpoint".into(),
        ))
    }

    async fn inclusion(&mut self, index: u64, _size: u64) -> Result<Vec<Hash>> {
        Err(AuditError::NotFound(format!(
            "no inclusion proof of entry {index} in memory"
        )))
    }
}

/// Either ledger source, chosen at run time (the CLI's `--data` or `--remote`).
pub enum LedgerSource {
    /// Offline store.
    #[cfg(feature = "store")]
    Store(StoreSource),
    /// Running ledger.
    Remote(Box<RemoteSource>),
}

impl Source for LedgerSource {
    async fn by_subject(&mut self, kind: SubjectKind, id: &str) -> Result<Vec<Entry>> {
        match self {
            #[cfg(feature = "store")]
            LedgerSource::Store(s) => s.by_subject(kind, id).await,
            LedgerSource::Remote(s) => s.by_subject(kind, id).await,
        }
    }

    async fn by_subjects(&mut self, subjects: &[(SubjectKind, &str)]) -> Result<Vec<Vec<Entry>>> {
        match self {
            #[cfg(feature = "store")]
            LedgerSource::Store(s) => s.by_subjects(subjects).await,
            LedgerSource::Remote(s) => s.by_subjects(subjects).await,
        }
    }

    async fn entry(&mut self, index: u64) -> Result<Entry> {
        match self {
            #[cfg(feature = "store")]
            LedgerSource::Store(s) => s.entry(index).await,
            LedgerSource::Remote(s) => s.entry(index).await,
        }
    }

    async fn checkpoint(&mut self) -> Result<(String, Checkpoint, PublicKey)> {
        match self {
            #[cfg(feature = "store")]
            LedgerSource::Store(s) => s.checkpoint().await,
            LedgerSource::Remote(s) => s.checkpoint().await,
        }
    }

    async fn inclusion(&mut self, index: u64, size: u64) -> Result<Vec<Hash>> {
        match self {
            #[cfg(feature = "store")]
            LedgerSource::Store(s) => s.inclusion(index, size).await,
            LedgerSource::Remote(s) => s.inclusion(index, size).await,
        }
    }
}
