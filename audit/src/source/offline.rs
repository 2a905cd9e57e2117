//! A ledger's RocksDB store read offline, as a [`Source`] (`store` feature: it builds the
//! ledger's server half and RocksDB).

use ecgfed_ledger::checkpoint::Checkpoint;
use ecgfed_ledger::entry::subject_key;
use ecgfed_ledger::keys::PublicKey;
use ecgfed_ledger::log::{self, Hash};
use ecgfed_ledger::store::Store;
use ecgfed_proto::v1::SubjectKind;

use super::{Source, VerifiedEntry, decode_entry, genesis_key};
use crate::error::{AuditError, Result};

/// A ledger's RocksDB store, read offline (the ledger must not be running on it).
pub struct StoreSource {
    store: Store,
}

impl StoreSource {
    /// Opens the store at `db` (the `db` folder of a ledger data directory).
    pub fn open(db: &std::path::Path) -> Result<Self> {
        let store = Store::open(db).map_err(|e| AuditError::Store(Box::new(e)))?;
        Ok(StoreSource { store })
    }

    fn get(&self, index: u64) -> Result<VerifiedEntry> {
        let stored = self
            .store
            .entry(index)
            .map_err(|e| AuditError::Store(Box::new(e)))?
            .ok_or_else(|| AuditError::NotFound(format!("entry {index} is not in the store")))?;
        decode_entry(index, stored)
    }
}

impl Source for StoreSource {
    async fn by_subject(&mut self, kind: SubjectKind, id: &str) -> Result<Vec<VerifiedEntry>> {
        let idx = self
            .store
            .subject_entries(&subject_key(kind as i32, id), 0, 0)
            .map_err(|e| AuditError::Store(Box::new(e)))?;
        idx.into_iter().map(|i| self.get(i)).collect()
    }

    async fn entry(&mut self, index: u64) -> Result<VerifiedEntry> {
        self.get(index)
    }

    async fn checkpoint(&mut self) -> Result<(String, Checkpoint, PublicKey)> {
        let (origin, key) = genesis_key(&self.get(0)?)?;
        // The newest witnessed checkpoint where the ledger has witnesses, else the newest.
        let store_err = |e| AuditError::Store(Box::new(e));
        let witnessed = self.store.witnessed_size().map_err(store_err)?;
        let note = if witnessed > 0 {
            self.store
                .checkpoint(witnessed)
                .map_err(store_err)?
                .map(String::into_bytes)
        } else {
            self.store
                .checkpoints()
                .map_err(store_err)?
                .pop()
                .map(|(_, n)| n)
        }
        .ok_or_else(|| AuditError::NotFound("the store has no checkpoint".into()))?;
        let note = String::from_utf8(note)
            .map_err(|_| AuditError::Ledger("stored checkpoint is not UTF-8".into()))?;
        let cp = Checkpoint::verify(&note, &origin, &key)
            .map_err(|e| AuditError::Ledger(format!("stored checkpoint: {e}")))?;
        Ok((note, cp, key))
    }

    async fn inclusion(&mut self, index: u64, size: u64) -> Result<Vec<Hash>> {
        log::inclusion_proof(&self.store, index, size)
            .map_err(|source| AuditError::Proof { index, source })
    }
}
