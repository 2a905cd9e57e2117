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
pub use ecgfed_ledger::entry::VerifiedEntry;
use ecgfed_ledger::keys::PublicKey;
use ecgfed_ledger::log::Hash;
use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::{ProveInclusionRequest, Subject, SubjectKind};

use crate::error::{AuditError, Result};

/// Decodes stored entry bytes at `index`; the error names the entry.
pub fn decode_entry(index: u64, stored: Vec<u8>) -> Result<VerifiedEntry> {
    VerifiedEntry::decode(index, stored).map_err(|e| AuditError::Entry {
        index,
        reason: e.to_string(),
    })
}

/// An entry's signing time as RFC 3339 (UTC, milliseconds).
pub fn entry_time(e: &VerifiedEntry) -> String {
    rfc3339(e.body.timestamp_ms)
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
    async fn by_subject(&mut self, kind: SubjectKind, id: &str) -> Result<Vec<VerifiedEntry>>;
    /// Entries naming each of `subjects` (one list per subject, in order). Sources that can
    /// ask concurrently do so.
    async fn by_subjects(
        &mut self,
        subjects: &[(SubjectKind, &str)],
    ) -> Result<Vec<Vec<VerifiedEntry>>> {
        let mut out = Vec::with_capacity(subjects.len());
        for (k, id) in subjects {
            out.push(self.by_subject(*k, id).await?);
        }
        Ok(out)
    }
    /// VerifiedEntry `index`.
    async fn entry(&mut self, index: u64) -> Result<VerifiedEntry>;
    /// The newest signed checkpoint (note text, parsed) and the ledger key that signed it.
    async fn checkpoint(&mut self) -> Result<(String, Checkpoint, PublicKey)>;
    /// Inclusion proof of entry `index` in the tree of `size` entries.
    async fn inclusion(&mut self, index: u64, size: u64) -> Result<Vec<Hash>>;
}

/// The ledger key and origin from a genesis entry.
pub fn genesis_key(genesis: &VerifiedEntry) -> Result<(String, PublicKey)> {
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

/// One subject query through a verifying client.
async fn remote_query(
    client: &mut LedgerClient,
    kind: SubjectKind,
    id: &str,
) -> Result<Vec<VerifiedEntry>> {
    let subject = Subject {
        kind: kind as i32,
        id: id.to_string(),
    };
    client
        .query_subject(subject, 0, 0)
        .await?
        .into_iter()
        .map(|e| {
            if e.body.payload.is_none() {
                return Err(AuditError::Entry {
                    index: e.index,
                    reason: "no payload".into(),
                });
            }
            Ok(e)
        })
        .collect()
}

impl Source for RemoteSource {
    async fn by_subject(&mut self, kind: SubjectKind, id: &str) -> Result<Vec<VerifiedEntry>> {
        remote_query(&mut self.client, kind, id).await
    }

    async fn by_subjects(
        &mut self,
        subjects: &[(SubjectKind, &str)],
    ) -> Result<Vec<Vec<VerifiedEntry>>> {
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

    async fn entry(&mut self, index: u64) -> Result<VerifiedEntry> {
        Ok(self.client.entry(index).await?)
    }

    async fn checkpoint(&mut self) -> Result<(String, Checkpoint, PublicKey)> {
        let cp = self.client.update_checkpoint().await?;
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
            .await?
            .into_inner();
        p.hashes
            .iter()
            .map(|h| {
                h.as_slice().try_into().map_err(|_| {
                    AuditError::Ledger(format!("inclusion proof of entry {index}: bad hash"))
                })
            })
            .collect()
    }
}

/// Entries held in memory (a proof bundle's), indexed by their subjects.
#[derive(Debug, Default)]
pub struct MemorySource {
    entries: BTreeMap<u64, VerifiedEntry>,
    index: HashMap<(i32, String), Vec<u64>>,
}

impl MemorySource {
    /// Indexes `entries` by the subjects their bodies list.
    pub fn new(entries: impl IntoIterator<Item = VerifiedEntry>) -> Self {
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
    async fn by_subject(&mut self, kind: SubjectKind, id: &str) -> Result<Vec<VerifiedEntry>> {
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

    async fn entry(&mut self, index: u64) -> Result<VerifiedEntry> {
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
    async fn by_subject(&mut self, kind: SubjectKind, id: &str) -> Result<Vec<VerifiedEntry>> {
        match self {
            #[cfg(feature = "store")]
            LedgerSource::Store(s) => s.by_subject(kind, id).await,
            LedgerSource::Remote(s) => s.by_subject(kind, id).await,
        }
    }

    async fn by_subjects(
        &mut self,
        subjects: &[(SubjectKind, &str)],
    ) -> Result<Vec<Vec<VerifiedEntry>>> {
        match self {
            #[cfg(feature = "store")]
            LedgerSource::Store(s) => s.by_subjects(subjects).await,
            LedgerSource::Remote(s) => s.by_subjects(subjects).await,
        }
    }

    async fn entry(&mut self, index: u64) -> Result<VerifiedEntry> {
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
