//! The gateway's own RocksDB store: per-patient salts, the pseudonym key, reserved slices,
//! erased commitments, pending erasures and request nonces (docs/flight.md "Key store").
//! Nothing of it leaves the gateway; destroying a salt makes the patient's commitments
//! unlinkable to any data, and an erasure flushes and compacts the store so that the salt's
//! bytes are gone from its files, not only hidden.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use rand::RngCore;
use rocksdb::{
    BottommostLevelCompaction, ColumnFamilyDescriptor, CompactOptions, DB, IteratorMode, Options,
    WriteBatch, WriteOptions,
};
use sha2::Sha256;

use crate::error::{GatewayError, Result};

const CF_SALTS: &str = "salts";
const CF_META: &str = "meta";
const CF_SLICES: &str = "slices";
const CF_ERASED: &str = "erased";
/// Request nonces, keyed `timestamp (u64 BE) ‖ member ‖ 0x00 ‖ nonce (u64 BE)` so that the
/// expired ones are one range deletion.
const CF_NONCES: &str = "request_nonces";
/// The family of the earlier format (member ‖ 0 ‖ nonce → timestamp); dropped at open:
/// requests signed in that format no longer verify.
const CF_NONCES_V1: &str = "nonces";
const PSEUDONYM_KEY: &[u8] = b"pseudonym_key";
/// How often expired request nonces are pruned, at most (ms).
const NONCE_PRUNE_EVERY_MS: i64 = 10_000;
const FAMILIES: [&str; 5] = [CF_SALTS, CF_META, CF_SLICES, CF_ERASED, CF_NONCES];

/// A salt or key: 32 random bytes.
pub(super) type Secret = [u8; 32];

/// The key store of one gateway.
pub struct KeyStore {
    db: DB,
    path: PathBuf,
    /// Request nonces within the freshness window (the keys of [`CF_NONCES`]): checked and
    /// inserted under this lock, so that one nonce is accepted once however many copies of a
    /// request arrive together; the time of the last pruning beside them.
    nonces: Mutex<(HashSet<Vec<u8>>, i64)>,
}

/// A patient as the key store names it: `source ‖ 0x00 ‖ patient id`.
pub fn patient_key(source: &str, patient: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(source.len() + patient.len() + 1);
    k.extend_from_slice(source.as_bytes());
    k.push(0);
    k.extend_from_slice(patient.as_bytes());
    k
}

fn random_secret() -> Secret {
    let mut s = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s
}

impl KeyStore {
    /// Opens (or creates) the key store in `dir`. Fails with a clear message when another
    /// process (a running gateway) holds it.
    pub fn open(dir: &Path) -> Result<KeyStore> {
        std::fs::create_dir_all(dir).map_err(|e| GatewayError::KeyStore {
            path: dir.to_path_buf(),
            source: e.into(),
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let path = dir.join("keystore");
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let old_nonces = DB::list_cf(&opts, &path)
            .map(|v| v.iter().any(|n| n == CF_NONCES_V1))
            .unwrap_or(false);
        let mut names = FAMILIES.to_vec();
        if old_nonces {
            names.push(CF_NONCES_V1);
        }
        let cfs = names
            .into_iter()
            .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let mut db = DB::open_cf_descriptors(&opts, &path, cfs).map_err(|e| {
            let held = e.kind() == rocksdb::ErrorKind::IOError && lock_held(e.as_ref());
            let (path, source) = (path.clone(), e.into());
            if held {
                GatewayError::KeyStoreInUse { path, source }
            } else {
                GatewayError::KeyStore { path, source }
            }
        })?;
        if old_nonces {
            db.drop_cf(CF_NONCES_V1)
                .map_err(|e| GatewayError::KeyStore {
                    path: path.clone(),
                    source: format!("dropping the old nonce family: {e}").into(),
                })?;
        }
        let ks = KeyStore {
            db,
            path,
            nonces: Mutex::new((HashSet::new(), 0)),
        };
        if ks.get(CF_META, PSEUDONYM_KEY)?.is_none() {
            ks.put_synced(CF_META, PSEUDONYM_KEY, &random_secret())?;
        }
        let mut seen = HashSet::new();
        for kv in ks.db.iterator_cf(ks.cf(CF_NONCES)?, IteratorMode::Start) {
            seen.insert(kv.map_err(|e| ks.err(e))?.0.to_vec());
        }
        if let Ok(mut n) = ks.nonces.lock() {
            n.0 = seen;
        }
        ks.migrate_tombstones()?;
        Ok(ks)
    }

    /// An error of this key store: `e` (a RocksDB error, or what is wrong with a value).
    pub(crate) fn err(&self, e: impl Into<crate::error::Source>) -> GatewayError {
        GatewayError::KeyStore {
            path: self.path.clone(),
            source: e.into(),
        }
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| self.err(format!("column family {name} missing")))
    }

    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(cf)?, key).map_err(|e| self.err(e))
    }

    fn synced() -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(true);
        w
    }

    fn put_synced(&self, cf: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(cf)?, key, value);
        self.write(b)
    }

    fn write(&self, b: WriteBatch) -> Result<()> {
        self.db
            .write_opt(b, &Self::synced())
            .map_err(|e| self.err(e))
    }

    /// The key of the keyed hash that pseudonymises patient ids.
    pub fn pseudonym_key(&self) -> Result<Secret> {
        let v = self
            .get(CF_META, PSEUDONYM_KEY)?
            .ok_or_else(|| self.err("pseudonym key missing"))?;
        v.as_slice()
            .try_into()
            .map_err(|_| self.err("pseudonym key is not 32 bytes"))
    }

    /// The salts of `patients` (keys from [`patient_key`]), creating the missing ones in one
    /// synced write. `None` for a patient whose salt was destroyed by erasure.
    pub fn salts(&self, patients: &[Vec<u8>]) -> Result<Vec<Option<Secret>>> {
        let cf = self.cf(CF_SALTS)?;
        let erased = self.cf(CF_ERASED)?;
        let tomb_key = self.pseudonym_key()?;
        let mut out = Vec::with_capacity(patients.len());
        let mut batch = WriteBatch::default();
        let mut created = std::collections::HashMap::new();
        for p in patients {
            if let Some(s) = created.get(p) {
                out.push(Some(*s));
                continue;
            }
            match self.db.get_cf(cf, p).map_err(|e| self.err(e))? {
                Some(v) => out.push(Some(
                    v.as_slice()
                        .try_into()
                        .map_err(|_| self.err("salt is not 32 bytes"))?,
                )),
                None if self
                    .db
                    .get_cf(erased, tombstone_key(&tomb_key, p))
                    .map_err(|e| self.err(e))?
                    .is_some() =>
                {
                    out.push(None)
                }
                None => {
                    let s = random_secret();
                    batch.put_cf(cf, p, s);
                    created.insert(p.clone(), s);
                    out.push(Some(s));
                }
            }
        }
        if !batch.is_empty() {
            self.write(batch)?;
        }
        Ok(out)
    }

    /// A stored value of the meta family (e.g. the last registration).
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.get(CF_META, key.as_bytes())
    }

    /// Stores a value in the meta family (synced).
    pub fn set_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.put_synced(CF_META, key.as_bytes(), value)
    }

    /// Removes a value of the meta family (synced).
    pub fn delete_meta(&self, key: &str) -> Result<()> {
        let mut b = WriteBatch::default();
        b.delete_cf(self.cf(CF_META)?, key.as_bytes());
        self.write(b)
    }

    /// A reserved slice (JSON as written by [`KeyStore::put_slice`]).
    pub fn slice(&self, slice_id: &str) -> Result<Option<Vec<u8>>> {
        self.get(CF_SLICES, slice_id.as_bytes())
    }

    /// Every reserved slice (JSON), in slice id order.
    pub fn slices(&self) -> Result<Vec<Vec<u8>>> {
        let mut v = Vec::new();
        for kv in self
            .db
            .iterator_cf(self.cf(CF_SLICES)?, IteratorMode::Start)
        {
            let (_, value) = kv.map_err(|e| self.err(e))?;
            v.push(value.to_vec());
        }
        Ok(v)
    }

    /// Stores a reserved slice (synced).
    pub fn put_slice(&self, slice_id: &str, value: &[u8]) -> Result<()> {
        self.put_synced(CF_SLICES, slice_id.as_bytes(), value)
    }

    /// Erases a patient: destroys the salt, remembers the commitments as erased and leaves a
    /// tombstone (a keyed hash of the patient, not the id) so that no new salt is ever made for
    /// them; one synced write. Then every family is flushed and compacted, so that the salt's
    /// bytes are in no file of the store (the write-ahead log that held them is retired by the
    /// flush, the table files by the compaction).
    pub fn erase(&self, patient: &[u8], commitments: &[[u8; 32]]) -> Result<()> {
        let mut b = WriteBatch::default();
        b.delete_cf(self.cf(CF_SALTS)?, patient);
        let erased = self.cf(CF_ERASED)?;
        b.put_cf(erased, tombstone_key(&self.pseudonym_key()?, patient), []);
        for c in commitments {
            b.put_cf(erased, c, []);
        }
        self.write(b)?;
        self.purge()
    }

    /// Flushes every family and compacts it to the last level: deleted keys and their values
    /// leave the write-ahead log and the table files.
    pub fn purge(&self) -> Result<()> {
        let cfs = FAMILIES
            .iter()
            .map(|n| self.cf(n))
            .collect::<Result<Vec<_>>>()?;
        self.db
            .flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())
            .map_err(|e| self.err(e))?;
        let mut opts = CompactOptions::default();
        opts.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
        for cf in cfs {
            self.db
                .compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &opts);
        }
        self.db.flush_wal(true).map_err(|e| self.err(e))
    }

    /// Rewrites tombstones of the earlier format (`patient:` ‖ patient key, the id in clear)
    /// as keyed hashes, then purges the store.
    fn migrate_tombstones(&self) -> Result<()> {
        let erased = self.cf(CF_ERASED)?;
        let key = self.pseudonym_key()?;
        let mut b = WriteBatch::default();
        for kv in self.db.prefix_iterator_cf(erased, OLD_TOMBSTONE) {
            let (k, _) = kv.map_err(|e| self.err(e))?;
            let Some(patient) = k.strip_prefix(OLD_TOMBSTONE) else {
                break;
            };
            b.put_cf(erased, tombstone_key(&key, patient), []);
            b.delete_cf(erased, &k);
        }
        if b.is_empty() {
            return Ok(());
        }
        self.write(b)?;
        self.purge()
    }

    /// Queues an erasure record under `erasing/<seq>` (synced); returns its key. Erasures are
    /// kept in order until [`KeyStore::delete_meta`] removes each one done.
    pub fn queue_erasure(&self, record: &[u8]) -> Result<String> {
        let next = self
            .meta_with_prefix(ERASING_PREFIX)?
            .last()
            .and_then(|(k, _)| k.strip_prefix(ERASING_PREFIX)?.parse::<u64>().ok())
            .map_or(0, |n| n + 1);
        let key = format!("{ERASING_PREFIX}{next:020}");
        self.set_meta(&key, record)?;
        Ok(key)
    }

    /// Queued erasure records, oldest first (key, record).
    pub fn queued_erasures(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.meta_with_prefix(ERASING_PREFIX)
    }

    fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for kv in self
            .db
            .prefix_iterator_cf(self.cf(CF_META)?, prefix.as_bytes())
        {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            out.push((String::from_utf8_lossy(&k).into_owned(), v.to_vec()));
        }
        Ok(out)
    }

    /// Every erased commitment.
    pub fn erased_commitments(&self) -> Result<std::collections::HashSet<[u8; 32]>> {
        let mut out = std::collections::HashSet::new();
        for kv in self
            .db
            .iterator_cf(self.cf(CF_ERASED)?, IteratorMode::Start)
        {
            let (k, _) = kv.map_err(|e| self.err(e))?;
            if let Ok(c) = <[u8; 32]>::try_from(&k[..]) {
                out.insert(c);
            }
        }
        Ok(out)
    }

    /// Records the request nonce `nonce` of `member` signed at `ts_ms`; `false` when that
    /// request was seen before. Check and insertion are one step under a lock (concurrent
    /// copies of one request: exactly one `true`), and the nonce is on disk (synced) before
    /// `true` is returned, so a restart does not reopen the window. Nonces older than
    /// `keep_ms` before `now_ms` are pruned (their timestamps no longer pass the freshness
    /// check), one range deletion at most every ten seconds, whatever the callers send.
    pub fn use_nonce(
        &self,
        member: &str,
        nonce: u64,
        ts_ms: i64,
        now_ms: i64,
        keep_ms: u64,
    ) -> Result<bool> {
        let cf = self.cf(CF_NONCES)?;
        let key = nonce_key(ts_ms, member, nonce);
        let cutoff = now_ms.saturating_sub(keep_ms.min(i64::MAX as u64) as i64);
        let prune = {
            let mut n = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
            if !n.0.insert(key.clone()) {
                return Ok(false);
            }
            if now_ms - n.1 >= NONCE_PRUNE_EVERY_MS {
                n.1 = now_ms;
                let limit = nonce_key(cutoff, "", 0);
                n.0.retain(|k| k[..8] >= limit[..8]);
                true
            } else {
                false
            }
        };
        let mut b = WriteBatch::default();
        b.put_cf(cf, &key, []);
        if prune {
            b.delete_range_cf(cf, vec![0u8; 8], nonce_key(cutoff, "", 0));
        }
        // Not recorded durably: the request is refused (the nonce stays used in memory).
        self.write(b)?;
        Ok(true)
    }
}

/// The key of a request nonce: timestamp (clamped at 0, u64 BE) ‖ member ‖ 0x00 ‖ nonce (BE).
fn nonce_key(ts_ms: i64, member: &str, nonce: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(member.len() + 17);
    key.extend_from_slice(&(ts_ms.max(0) as u64).to_be_bytes());
    key.extend_from_slice(member.as_bytes());
    key.push(0);
    key.extend_from_slice(&nonce.to_be_bytes());
    key
}

/// Whether a RocksDB I/O error says its LOCK file is held: by another process ("While lock
/// file: ...") or by this one ("lock hold by current process"). RocksDB has no error code for
/// it, so its two messages are matched, never a bare "lock": a folder named `blocks` must not
/// pass for a running gateway.
fn lock_held(message: &str) -> bool {
    message.contains("While lock file") || message.contains("lock hold by current process")
}

/// Meta keys of queued erasures: `erasing/` ‖ 20-digit sequence number.
const ERASING_PREFIX: &str = "erasing/";
/// Prefix of the earlier tombstone format (patient id in clear).
const OLD_TOMBSTONE: &[u8] = b"patient:";

/// The tombstone of an erased patient: `tomb:` ‖ HMAC-SHA256(pseudonym key, patient key).
fn tombstone_key(key: &Secret, patient: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(patient);
    let mut k = b"tomb:".to_vec();
    k.extend_from_slice(&m.finalize().into_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salts_persist_erasure_destroys_them_and_nonces_are_single_use() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (patient_key("mitdb", "100"), patient_key("mitdb", "101"));
        let first = {
            let ks = KeyStore::open(dir.path()).unwrap();
            let s = ks.salts(&[a.clone(), b.clone(), a.clone()]).unwrap();
            assert_eq!(s[0], s[2]);
            assert_ne!(s[0], s[1]);
            assert!(ks.use_nonce("sci", 7, 1000, 1000, 60_000).unwrap());
            assert!(!ks.use_nonce("sci", 7, 1000, 1000, 60_000).unwrap());
            assert!(ks.use_nonce("other", 7, 1000, 1000, 60_000).unwrap());
            (s, ks.pseudonym_key().unwrap())
        };
        let ks = KeyStore::open(dir.path()).unwrap();
        assert_eq!(
            ks.salts(&[a.clone(), b.clone()]).unwrap(),
            first.0[..2].to_vec()
        );
        assert_eq!(ks.pseudonym_key().unwrap(), first.1);
        assert!(!ks.use_nonce("sci", 7, 1000, 1000, 60_000).unwrap());
        ks.erase(&a, &[[9u8; 32]]).unwrap();
        assert_eq!(ks.salts(std::slice::from_ref(&a)).unwrap(), vec![None]);
        assert!(ks.erased_commitments().unwrap().contains(&[9u8; 32]));
        // A second open of a folder in use is refused with a clear message.
        let e = KeyStore::open(dir.path()).err().unwrap();
        assert!(matches!(e, GatewayError::KeyStoreInUse { .. }), "{e:?}");
        assert!(e.to_string().contains("gateway running"), "{e}");
    }

    /// A key store that cannot be opened for another reason is not "in use", even when its
    /// path says "lock" (`gateway erase` would otherwise look for a running gateway).
    #[test]
    fn a_broken_key_store_is_not_taken_for_one_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let blocks = dir.path().join("blocks");
        std::fs::create_dir_all(&blocks).unwrap();
        // RocksDB's CURRENT file is a folder: an I/O error naming the path, not the lock.
        std::fs::create_dir_all(blocks.join("keystore").join("CURRENT")).unwrap();
        let e = KeyStore::open(&blocks).err().unwrap();
        assert!(matches!(e, GatewayError::KeyStore { .. }), "{e:?}");
        assert!(!e.to_string().contains("gateway running"), "{e}");
    }

    /// Issue 23, item 7: expired request nonces are pruned by time (at most every ten
    /// seconds), never because of the value a caller picks; a recorded nonce survives a
    /// restart.
    #[test]
    fn request_nonces_are_pruned_by_time_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let count = |ks: &KeyStore| {
            ks.db
                .iterator_cf(ks.cf(CF_NONCES).unwrap(), IteratorMode::Start)
                .count()
        };
        let (t0, keep) = (1_000_000_000i64, 60_000u64);
        {
            let ks = KeyStore::open(dir.path()).unwrap();
            assert!(ks.use_nonce("sci", 1, t0, t0, keep).unwrap());
            // 100 s later (past the window): an ordinary nonce prunes the expired one.
            let t1 = t0 + 100_000;
            assert!(ks.use_nonce("sci", 3, t1, t1, keep).unwrap());
            assert_eq!(count(&ks), 1, "expired nonce pruned by time");
            // Half a second later, a nonce that is a multiple of 1024 prunes nothing, and
            // nothing scans: the caller does not choose when pruning runs.
            let t2 = t1 + 500;
            assert!(ks.use_nonce("sci", 1024, t1 - 30_000, t2, keep).unwrap());
            assert!(ks.use_nonce("sci", 2048, t2, t2, keep).unwrap());
            assert_eq!(count(&ks), 3);
        }
        let ks = KeyStore::open(dir.path()).unwrap();
        assert!(
            !ks.use_nonce("sci", 3, t0 + 100_000, t0 + 100_001, keep)
                .unwrap()
        );
    }
}
