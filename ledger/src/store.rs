//! RocksDB storage of a ledger: one column family per kind of data, every block committed as
//! one synced write batch (docs/ledger.md, "Storage").
//!
//! | column family | key | value |
//! |---|---|---|
//! | `entries` | index u64 BE | stored entry bytes (the Merkle leaf) |
//! | `blocks` | height u64 BE | canonical block encoding (104 bytes) |
//! | `nodes` | level u8 ‖ index u64 BE | 32-byte Merkle node |
//! | `subjects` | kind u8 ‖ id ‖ 0x00 ‖ entry index u64 BE | empty |
//! | `nonces` | signer ‖ 0x00 ‖ nonce u64 BE | entry index u64 BE |
//! | `checkpoints` | tree size u64 BE | signed checkpoint note |
//! | `meta` | `head` | tree size u64 BE ‖ block count u64 BE |

pub use crate::entry::nonce_key;
use std::path::{Path, PathBuf};

use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions,
};

use crate::block::Block;
use crate::log::{CreatedNode, Hash, LogError, NodeReader};

/// Column family names.
pub const CF_ENTRIES: &str = "entries";
/// Blocks by height.
pub const CF_BLOCKS: &str = "blocks";
/// Merkle nodes.
pub const CF_NODES: &str = "nodes";
/// Subject index.
pub const CF_SUBJECTS: &str = "subjects";
/// Used nonces.
pub const CF_NONCES: &str = "nonces";
/// Signed checkpoints by tree size.
pub const CF_CHECKPOINTS: &str = "checkpoints";
/// Metadata.
pub const CF_META: &str = "meta";
/// All column families.
pub const COLUMN_FAMILIES: [&str; 7] = [
    CF_ENTRIES,
    CF_BLOCKS,
    CF_NODES,
    CF_SUBJECTS,
    CF_NONCES,
    CF_CHECKPOINTS,
    CF_META,
];

/// A storage failure, naming the ledger directory.
#[derive(Debug, thiserror::Error)]
#[error("ledger store {path}: {reason}")]
pub struct StoreError {
    /// The ledger data directory.
    pub path: String,
    /// What went wrong.
    pub reason: String,
}

/// Committed extent of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    /// Number of entries.
    pub tree_size: u64,
    /// Number of blocks.
    pub blocks: u64,
}

/// One entry of a block being committed.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// Its index.
    pub index: u64,
    /// Stored bytes.
    pub stored: Vec<u8>,
    /// Subject index key prefixes ([`crate::entry::subject_key`]).
    pub subject_keys: Vec<Vec<u8>>,
    /// Signer id.
    pub signer: String,
    /// Nonce.
    pub nonce: u64,
}

/// Key/value rows of a column family.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// A ledger's RocksDB database.
pub struct Store {
    db: DB,
    path: PathBuf,
    /// First entry index of every block read so far, by height (blocks never change): the
    /// block of an entry is found in memory.
    block_starts: std::sync::RwLock<Vec<u64>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.path.display())
    }
}

/// `level ‖ index BE`.
pub fn node_key(level: u32, index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = level as u8;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Size of the block cache shared by the column families.
pub const BLOCK_CACHE_BYTES: usize = 128 << 20;

fn be(v: &[u8]) -> Option<u64> {
    v.try_into().ok().map(u64::from_be_bytes)
}

impl Store {
    /// Options of the database and of every column family: LZ4 blocks; a bloom filter per
    /// table (a point read skips the tables that lack its key); one block cache of
    /// [`BLOCK_CACHE_BYTES`] shared by all column families for data blocks, so that the
    /// Merkle nodes and entries that proofs and lineage queries read stay in memory. Index
    /// and filter blocks are held by the open tables, outside that cache (about 2 MB per
    /// million entries): in the cache, the index and filter of a large table were evicted
    /// by data blocks and read back whole on later point reads.
    fn options(cache: &rocksdb::Cache) -> Options {
        let mut t = rocksdb::BlockBasedOptions::default();
        t.set_block_cache(cache);
        t.set_bloom_filter(10.0, false);
        t.set_cache_index_and_filter_blocks(false);
        let mut o = Options::default();
        o.create_if_missing(true);
        o.create_missing_column_families(true);
        o.set_compression_type(rocksdb::DBCompressionType::Lz4);
        o.set_max_background_jobs(2);
        o.set_block_based_table_factory(&t);
        o
    }

    fn err(&self, reason: impl std::fmt::Display) -> StoreError {
        StoreError {
            path: self.path.display().to_string(),
            reason: reason.to_string(),
        }
    }

    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let cfs = COLUMN_FAMILIES
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(*n, Self::options(&cache)));
        let db =
            DB::open_cf_descriptors(&Self::options(&cache), dir, cfs).map_err(|e| StoreError {
                path: dir.display().to_string(),
                reason: e.to_string(),
            })?;
        Ok(Store {
            db,
            path: dir.to_path_buf(),
            block_starts: std::sync::RwLock::new(Vec::new()),
        })
    }

    /// Compacts every column family completely, as background compaction eventually would:
    /// afterwards a point read meets one table per level, each with its bloom filter.
    pub fn compact(&self) -> Result<(), StoreError> {
        for name in COLUMN_FAMILIES {
            self.db
                .compact_range_cf(self.cf(name)?, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| self.err(format!("column family {name} is missing")))
    }

    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.cf(cf)?, key).map_err(|e| self.err(e))
    }

    /// The committed head; `None` for a database never initialised.
    pub fn head(&self) -> Result<Option<Head>, StoreError> {
        Ok(match self.get(CF_META, b"head")? {
            None => None,
            Some(v) if v.len() == 16 => Some(Head {
                tree_size: be(&v[..8]).unwrap_or(0),
                blocks: be(&v[8..]).unwrap_or(0),
            }),
            Some(v) => return Err(self.err(format!("meta/head is {} bytes, expected 16", v.len()))),
        })
    }

    /// Stored bytes of entry `index`.
    pub fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(CF_ENTRIES, &index.to_be_bytes())
    }

    /// Raw bytes of block `height`.
    pub fn block_bytes(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(CF_BLOCKS, &height.to_be_bytes())
    }

    /// Block `height`, decoded.
    pub fn block(&self, height: u64) -> Result<Option<Block>, StoreError> {
        match self.block_bytes(height)? {
            None => Ok(None),
            Some(b) => Block::decode(&b)
                .map(Some)
                .map_err(|e| self.err(format!("block {height}: {e}"))),
        }
    }

    /// The signed checkpoint at `tree_size`, if one was stored.
    pub fn checkpoint(&self, tree_size: u64) -> Result<Option<String>, StoreError> {
        self.get(CF_CHECKPOINTS, &tree_size.to_be_bytes())?
            .map(|v| {
                String::from_utf8(v)
                    .map_err(|_| self.err(format!("checkpoint {tree_size} is not UTF-8")))
            })
            .transpose()
    }

    /// Calls `f` with every (key, value) of column family `cf` from key `from` on (all keys
    /// when `from` is empty), in key order, until `f` returns false.
    fn walk(
        &self,
        cf: &str,
        from: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let mode = if from.is_empty() {
            IteratorMode::Start
        } else {
            IteratorMode::From(from, Direction::Forward)
        };
        for kv in self.db.iterator_cf(self.cf(cf)?, mode) {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    /// Replaces the checkpoint of `size` by its witnessed note and records `size` as the newest
    /// witnessed one (meta `witnessed`), in one synced write.
    pub fn put_witnessed(&self, size: u64, note: &str) -> Result<(), StoreError> {
        let mut wb = WriteBatch::default();
        wb.put_cf(
            self.cf(CF_CHECKPOINTS)?,
            size.to_be_bytes(),
            note.as_bytes(),
        );
        wb.put_cf(self.cf(CF_META)?, b"witnessed", size.to_be_bytes());
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(wb, &wo).map_err(|e| self.err(e))
    }

    /// The size of the newest witnessed checkpoint (0: none yet).
    pub fn witnessed_size(&self) -> Result<u64, StoreError> {
        Ok(self
            .get(CF_META, b"witnessed")?
            .and_then(|v| be(&v))
            .unwrap_or(0))
    }

    /// All stored checkpoints, by tree size.
    pub fn checkpoints(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut v = Vec::new();
        self.walk(CF_CHECKPOINTS, &[], |k, val| {
            v.push((be(k).unwrap_or(u64::MAX), val.to_vec()));
            true
        })?;
        Ok(v)
    }

    /// Which of `keys` ([`nonce_key`]) are already used.
    pub fn nonces_used(&self, keys: &[Vec<u8>]) -> Result<Vec<bool>, StoreError> {
        let cf = self.cf(CF_NONCES)?;
        self.db
            .multi_get_cf(keys.iter().map(|k| (cf, k.as_slice())))
            .into_iter()
            .map(|r| r.map(|v| v.is_some()).map_err(|e| self.err(e)))
            .collect()
    }

    /// Entry indexes naming the subject with key prefix `prefix` ([`crate::entry::subject_key`]),
    /// from `from` on, at most `limit` (0 = all).
    pub fn subject_entries(
        &self,
        prefix: &[u8],
        from: u64,
        limit: u64,
    ) -> Result<Vec<u64>, StoreError> {
        let mut start = prefix.to_vec();
        start.extend_from_slice(&from.to_be_bytes());
        let mut out = Vec::new();
        self.walk(CF_SUBJECTS, &start, |k, _| {
            if !k.starts_with(prefix) || k.len() != prefix.len() + 8 {
                return false;
            }
            out.push(be(&k[prefix.len()..]).unwrap_or(0));
            limit == 0 || (out.len() as u64) < limit
        })?;
        Ok(out)
    }

    /// Every (key, value) of a column family, in key order (for the verifier and tests).
    pub fn scan(&self, cf: &str) -> Result<Rows, StoreError> {
        let mut v = Vec::new();
        self.walk(cf, &[], |k, val| {
            v.push((k.to_vec(), val.to_vec()));
            true
        })?;
        Ok(v)
    }

    /// Every key of a column family, in key order.
    pub fn scan_keys(&self, cf: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut v = Vec::new();
        self.walk(cf, &[], |k, _| {
            v.push(k.to_vec());
            true
        })?;
        Ok(v)
    }

    /// Number of keys in a column family.
    pub fn count(&self, cf: &str) -> Result<u64, StoreError> {
        let mut n = 0;
        self.walk(cf, &[], |_, _| {
            n += 1;
            true
        })?;
        Ok(n)
    }

    /// The stored Merkle nodes at the positions of `nodes`.
    pub fn multi_nodes(&self, nodes: &[CreatedNode]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let cf = self.cf(CF_NODES)?;
        let keys: Vec<[u8; 9]> = nodes.iter().map(|((l, i), _)| node_key(*l, *i)).collect();
        self.db
            .multi_get_cf(keys.iter().map(|k| (cf, k.as_slice())))
            .into_iter()
            .map(|r| r.map_err(|e| self.err(e)))
            .collect()
    }

    /// Entries `from..to` in index order.
    pub fn entries(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut v = Vec::new();
        let mut bad_key = false;
        self.walk(CF_ENTRIES, &from.to_be_bytes(), |k, val| match be(k) {
            None => {
                bad_key = true;
                false
            }
            Some(i) if i >= to => false,
            Some(i) => {
                v.push((i, val.to_vec()));
                true
            }
        })?;
        if bad_key {
            return Err(self.err("an entry key is not 8 bytes"));
        }
        Ok(v)
    }

    /// The height of the block holding entry `index` (binary search over block first indexes).
    pub fn block_of_entry(&self, index: u64, head: Head) -> Result<Option<u64>, StoreError> {
        if index >= head.tree_size || head.blocks == 0 {
            return Ok(None);
        }
        let find = |starts: &[u64]| {
            let n = head.blocks as usize;
            // The last block of the first `n` whose first index is ≤ `index` (block 0 starts
            // at 0).
            starts[..n]
                .partition_point(|&f| f <= index)
                .saturating_sub(1) as u64
        };
        if let Ok(starts) = self.block_starts.read()
            && starts.len() as u64 >= head.blocks
        {
            return Ok(Some(find(&starts)));
        }
        let mut starts = self
            .block_starts
            .write()
            .map_err(|_| self.err("block index lock poisoned"))?;
        let from = starts.len() as u64;
        if from < head.blocks {
            // Blocks are keyed by height (big-endian), so one forward scan reads the rest.
            let mut bad = None;
            self.walk(CF_BLOCKS, &from.to_be_bytes(), |k, v| {
                let height = be(k).unwrap_or(u64::MAX);
                if height != starts.len() as u64 || height >= head.blocks {
                    if height < head.blocks {
                        bad = Some(format!("block {height} out of sequence"));
                    }
                    return false;
                }
                match Block::decode(v) {
                    Ok(b) => {
                        starts.push(b.first_index);
                        true
                    }
                    Err(e) => {
                        bad = Some(format!("block {height}: {e}"));
                        false
                    }
                }
            })?;
            if let Some(e) = bad {
                return Err(self.err(e));
            }
            if (starts.len() as u64) < head.blocks {
                return Err(self.err(format!("block {} is missing", starts.len())));
            }
        }
        Ok(Some(find(&starts)))
    }

    /// Commits one block: entries, their subject and nonce index rows, the created Merkle
    /// nodes, the block, its checkpoint and the new head, as one synced write batch.
    pub fn commit(
        &self,
        entries: &[NewEntry],
        nodes: &[CreatedNode],
        block: &Block,
        checkpoint: &str,
    ) -> Result<(), StoreError> {
        let mut wb = WriteBatch::default();
        let (ce, cs, cn, cnodes) = (
            self.cf(CF_ENTRIES)?,
            self.cf(CF_SUBJECTS)?,
            self.cf(CF_NONCES)?,
            self.cf(CF_NODES)?,
        );
        for e in entries {
            let idx = e.index.to_be_bytes();
            wb.put_cf(ce, idx, &e.stored);
            for s in &e.subject_keys {
                let mut k = s.clone();
                k.extend_from_slice(&idx);
                wb.put_cf(cs, k, []);
            }
            wb.put_cf(cn, nonce_key(&e.signer, e.nonce), idx);
        }
        for ((level, index), h) in nodes {
            wb.put_cf(cnodes, node_key(*level, *index), h);
        }
        wb.put_cf(
            self.cf(CF_BLOCKS)?,
            block.height.to_be_bytes(),
            block.encode(),
        );
        wb.put_cf(
            self.cf(CF_CHECKPOINTS)?,
            block.tree_size.to_be_bytes(),
            checkpoint.as_bytes(),
        );
        let mut head = block.tree_size.to_be_bytes().to_vec();
        head.extend_from_slice(&(block.height + 1).to_be_bytes());
        wb.put_cf(self.cf(CF_META)?, b"head", head);
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(wb, &wo).map_err(|e| self.err(e))
    }

    /// Writes raw bytes into a column family: the tamper tests' fault injection, compiled only
    /// with the `test-kit` feature (never in a shipped binary).
    #[cfg(feature = "test-kit")]
    pub fn put_raw(&self, cf: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db
            .put_cf_opt(self.cf(cf)?, key, value, &wo)
            .map_err(|e| self.err(e))
    }
}

impl NodeReader for Store {
    fn node(&self, level: u32, index: u64) -> Result<Hash, LogError> {
        match self.get(CF_NODES, &node_key(level, index)) {
            Ok(Some(v)) => v
                .try_into()
                .map_err(|_| LogError::MissingNode { level, index }),
            _ => Err(LogError::MissingNode { level, index }),
        }
    }

    fn size(&self) -> u64 {
        self.head().ok().flatten().map_or(0, |h| h.tree_size)
    }
}
