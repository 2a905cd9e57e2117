//! The gateway's own RocksDB store: per-patient salts, the pseudonym key, reserved slices,
//! erased commitments and request nonces (docs/flight.md "Key store"). Nothing of it leaves the
//! gateway; destroying a salt makes the patient's commitments unlinkable to any data.

use std::path::{Path, PathBuf};

use rand::RngCore;
use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch, WriteOptions};

use crate::error::{GatewayError, Result};

const CF_SALTS: &str = "salts";
const CF_META: &str = "meta";
const CF_SLICES: &str = "slices";
const CF_ERASED: &str = "erased";
const CF_NONCES: &str = "nonces";
const PSEUDONYM_KEY: &[u8] = b"pseudonym_key";

/// A salt or key: 32 random bytes.
pub type Secret = [u8; 32];

/// The key store of one gateway.
pub struct KeyStore {
    db: DB,
    path: PathBuf,
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
            path: dir.display().to_string(),
            reason: e.to_string(),
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
        let cfs = [CF_SALTS, CF_META, CF_SLICES, CF_ERASED, CF_NONCES]
            .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, &path, cfs).map_err(|e| {
            let msg = e.to_string();
            GatewayError::KeyStore {
                path: path.display().to_string(),
                reason: if msg.contains("lock") {
                    format!("{msg} (is a gateway running on this folder?)")
                } else {
                    msg
                },
            }
        })?;
        let ks = KeyStore { db, path };
        if ks.get(CF_META, PSEUDONYM_KEY)?.is_none() {
            ks.put_synced(CF_META, PSEUDONYM_KEY, &random_secret())?;
        }
        Ok(ks)
    }

    fn err(&self, e: impl std::fmt::Display) -> GatewayError {
        GatewayError::KeyStore {
            path: self.path.display().to_string(),
            reason: e.to_string(),
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
                    .get_cf(erased, tombstone_key(p))
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

    /// Stores a reserved slice (synced).
    pub fn put_slice(&self, slice_id: &str, value: &[u8]) -> Result<()> {
        self.put_synced(CF_SLICES, slice_id.as_bytes(), value)
    }

    /// Erases a patient: destroys the salt, remembers the commitments as erased and leaves a
    /// tombstone so that no new salt is ever made for them; one synced write.
    pub fn erase(&self, patient: &[u8], commitments: &[[u8; 32]]) -> Result<()> {
        let mut b = WriteBatch::default();
        b.delete_cf(self.cf(CF_SALTS)?, patient);
        let erased = self.cf(CF_ERASED)?;
        b.put_cf(erased, tombstone_key(patient), []);
        for c in commitments {
            b.put_cf(erased, c, []);
        }
        self.write(b)
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

    /// Records a request nonce of `member` seen at `ts_ms`; `false` when it was seen before.
    /// Nonces older than `keep_ms` before `now_ms` are forgotten (their timestamps can no
    /// longer pass the freshness check).
    pub fn use_nonce(
        &self,
        member: &str,
        nonce: u64,
        ts_ms: i64,
        now_ms: i64,
        keep_ms: u64,
    ) -> Result<bool> {
        let cf = self.cf(CF_NONCES)?;
        let mut key = Vec::with_capacity(member.len() + 9);
        key.extend_from_slice(member.as_bytes());
        key.push(0);
        key.extend_from_slice(&nonce.to_be_bytes());
        if self.db.get_cf(cf, &key).map_err(|e| self.err(e))?.is_some() {
            return Ok(false);
        }
        let mut b = WriteBatch::default();
        b.put_cf(cf, &key, ts_ms.to_be_bytes());
        // Pruning: a cheap pass now and then (1 in 1024 calls).
        if nonce.is_multiple_of(1024) {
            for kv in self.db.iterator_cf(cf, IteratorMode::Start) {
                let (k, v) = kv.map_err(|e| self.err(e))?;
                let ts = <[u8; 8]>::try_from(&v[..])
                    .map(i64::from_be_bytes)
                    .unwrap_or(0);
                if ts < now_ms - keep_ms as i64 {
                    b.delete_cf(cf, k);
                }
            }
        }
        self.db.write(b).map_err(|e| self.err(e))?;
        Ok(true)
    }
}

fn tombstone_key(patient: &[u8]) -> Vec<u8> {
    let mut k = b"patient:".to_vec();
    k.extend_from_slice(patient);
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
        let e = KeyStore::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("gateway running"), "{e}");
    }
}
