//! The Merkle log: an RFC 6962 / RFC 9162 Merkle tree over the ledger's entries.
//!
//! Leaf hash `SHA-256(0x00 ‖ leaf bytes)`, interior node `SHA-256(0x01 ‖ left ‖ right)`, the
//! empty tree's root `SHA-256("")`. Nodes are addressed as (level, index): the node at level
//! `l`, index `i` is the root of the complete subtree over leaves `[i·2^l, (i+1)·2^l)`. Such a
//! node never changes once its last leaf is appended, so a store keeps only those, and the
//! root, inclusion proofs and consistency proofs of **any** earlier tree size are computed from
//! them ([`NodeReader`]). Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 exactly.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// A 32-byte hash that reads and writes as 64 lowercase hex characters (JSON, TOML, logs):
/// for records that keep hashes as text. Parsing refuses anything but 32 bytes of hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash32(pub Hash);

/// Text that is not 64 hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a 32-byte hash in hex")]
pub struct HashHexError {
    /// The text (cut to 80 characters).
    pub text: String,
}

impl Hash32 {
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// From 64 hex characters.
    pub fn from_hex(text: &str) -> Result<Hash32, HashHexError> {
        hex::decode(text)
            .ok()
            .and_then(|b| Hash::try_from(b).ok())
            .map(Hash32)
            .ok_or_else(|| HashHexError {
                text: text.chars().take(80).collect(),
            })
    }
}

impl From<Hash> for Hash32 {
    fn from(h: Hash) -> Hash32 {
        Hash32(h)
    }
}

impl std::fmt::Display for Hash32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::str::FromStr for Hash32 {
    type Err = HashHexError;
    fn from_str(s: &str) -> Result<Hash32, HashHexError> {
        Hash32::from_hex(s)
    }
}

impl serde::Serialize for Hash32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Hash32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Hash32, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Hash32::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

/// Errors of the Merkle log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// A node the computation needs is not in the store.
    #[error("Merkle node (level {level}, index {index}) is missing")]
    MissingNode {
        /// Level of the node.
        level: u32,
        /// Index of the node in its level.
        index: u64,
    },
    /// A request names a leaf or size beyond the tree.
    #[error("{0}")]
    OutOfRange(String),
    /// A proof does not verify.
    #[error("proof does not verify: {0}")]
    BadProof(String),
    /// The node store failed.
    #[error("node store: {0}")]
    Store(String),
}

/// `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Read access to the complete-subtree nodes of a log.
pub trait NodeReader {
    /// The node at (`level`, `index`).
    fn node(&self, level: u32, index: u64) -> Result<Hash, LogError>;
    /// Number of leaves.
    fn size(&self) -> u64;
}

/// Complete nodes of a log's top levels, kept in memory in front of a [`NodeReader`]: every
/// proof and root reads them, and a complete node never changes. Bounded: only the
/// `levels` highest levels of the current tree (at most 2^(levels+1) nodes) are kept; the
/// set is emptied when the tree grows a level. With `levels` = `u32::MAX` every node read
/// is kept: a memo for one batch of proofs.
#[derive(Debug)]
pub struct TopNodes {
    levels: u32,
    cache: std::sync::RwLock<Levels>,
}

/// The lowest cached level and the cached nodes by (level, index).
type Levels = (u32, std::collections::HashMap<(u32, u64), Hash>);

impl TopNodes {
    /// A cache for the `levels` highest levels.
    pub fn new(levels: u32) -> Self {
        TopNodes {
            levels,
            cache: std::sync::RwLock::new((0, std::collections::HashMap::new())),
        }
    }

    /// `inner` seen through the cache, as a log of `size` leaves.
    pub fn reader<'a, R: NodeReader + ?Sized>(&'a self, inner: &'a R, size: u64) -> Cached<'a, R> {
        let height = 64 - size.leading_zeros();
        Cached {
            top: self,
            inner,
            size,
            min_level: height.saturating_sub(self.levels),
        }
    }
}

/// A [`NodeReader`] through a [`TopNodes`] cache (see [`TopNodes::reader`]).
#[derive(Debug)]
pub struct Cached<'a, R: ?Sized> {
    top: &'a TopNodes,
    inner: &'a R,
    size: u64,
    min_level: u32,
}

impl<R: NodeReader + ?Sized> NodeReader for Cached<'_, R> {
    fn node(&self, level: u32, index: u64) -> Result<Hash, LogError> {
        if level < self.min_level {
            return self.inner.node(level, index);
        }
        if let Ok(c) = self.top.cache.read()
            && c.0 == self.min_level
            && let Some(h) = c.1.get(&(level, index))
        {
            return Ok(*h);
        }
        let h = self.inner.node(level, index)?;
        if let Ok(mut c) = self.top.cache.write() {
            if c.0 != self.min_level {
                *c = (self.min_level, std::collections::HashMap::new());
            }
            c.1.insert((level, index), h);
        }
        Ok(h)
    }

    fn size(&self) -> u64 {
        self.size
    }
}

/// Largest power of two strictly below `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// MTH(D[start:end]) for `start < end`.
pub fn subtree_hash<R: NodeReader + ?Sized>(r: &R, start: u64, end: u64) -> Result<Hash, LogError> {
    let n = end - start;
    if n.is_power_of_two() && start.is_multiple_of(n) {
        return r.node(n.trailing_zeros(), start / n);
    }
    let k = split(n);
    Ok(node_hash(
        &subtree_hash(r, start, start + k)?,
        &subtree_hash(r, start + k, end)?,
    ))
}

/// Root of the tree of the first `size` leaves.
pub fn root<R: NodeReader + ?Sized>(r: &R, size: u64) -> Result<Hash, LogError> {
    if size > r.size() {
        return Err(LogError::OutOfRange(format!(
            "tree size {size} is beyond the log's {}",
            r.size()
        )));
    }
    if size == 0 {
        return Ok(empty_root());
    }
    subtree_hash(r, 0, size)
}

/// Inclusion proof (RFC 6962 PATH) of leaf `index` in the tree of size `size`.
pub fn inclusion_proof<R: NodeReader + ?Sized>(
    r: &R,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, LogError> {
    if size > r.size() || index >= size {
        return Err(LogError::OutOfRange(format!(
            "leaf {index} is not in a tree of size {size} (log size {})",
            r.size()
        )));
    }
    let mut proof = Vec::new();
    path(r, index, 0, size, &mut proof)?;
    Ok(proof)
}

fn path<R: NodeReader + ?Sized>(
    r: &R,
    m: u64,
    start: u64,
    end: u64,
    out: &mut Vec<Hash>,
) -> Result<(), LogError> {
    let n = end - start;
    if n == 1 {
        return Ok(());
    }
    let k = split(n);
    if m - start < k {
        path(r, m, start, start + k, out)?;
        out.push(subtree_hash(r, start + k, end)?);
    } else {
        path(r, m, start + k, end, out)?;
        out.push(subtree_hash(r, start, start + k)?);
    }
    Ok(())
}

/// Consistency proof (RFC 6962 PROOF) between tree sizes `first ≤ second`; empty when
/// `first` is 0 or equals `second`.
pub fn consistency_proof<R: NodeReader + ?Sized>(
    r: &R,
    first: u64,
    second: u64,
) -> Result<Vec<Hash>, LogError> {
    if second > r.size() || first > second {
        return Err(LogError::OutOfRange(format!(
            "no consistency proof from size {first} to {second} (log size {})",
            r.size()
        )));
    }
    let mut proof = Vec::new();
    if first > 0 && first < second {
        subproof(r, first, 0, second, true, &mut proof)?;
    }
    Ok(proof)
}

fn subproof<R: NodeReader + ?Sized>(
    r: &R,
    m: u64,
    start: u64,
    end: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) -> Result<(), LogError> {
    let n = end - start;
    if m == n {
        if !complete {
            out.push(subtree_hash(r, start, end)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(r, m, start, start + k, complete, out)?;
        out.push(subtree_hash(r, start + k, end)?);
    } else {
        subproof(r, m - k, start + k, end, false, out)?;
        out.push(subtree_hash(r, start, start + k)?);
    }
    Ok(())
}

/// The proof walk shared by RFC 9162 inclusion and consistency verification: `f` and `s` are
/// the node indexes of the proven node and of the tree's last node; `step(c, left)` folds each
/// proof hash `c` in, as a left sibling when `left`. Fails when the proof is too long or short.
fn walk(
    mut f: u64,
    mut s: u64,
    proof: &[Hash],
    mut step: impl FnMut(&Hash, bool, (u64, u64)),
) -> Result<(), &'static str> {
    // The leaf range of the node that each step yields: [f·2^level, (f+1)·2^level) ∩ tree.
    let size = s + 1;
    let mut level = 0u32;
    let range = |f: u64, level: u32| {
        let at = |i: u64| i.checked_shl(level).unwrap_or(u64::MAX).min(size);
        (at(f), at(f + 1))
    };
    for c in proof {
        if s == 0 {
            return Err("proof is too long");
        }
        let left = f & 1 == 1 || f == s;
        if left {
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
                level += 1;
            }
        }
        f >>= 1;
        s >>= 1;
        level += 1;
        step(c, left, range(f, level));
    }
    if s == 0 {
        Ok(())
    } else {
        Err("proof is too short")
    }
}

/// The error of an inclusion check of leaf `index` in the tree of `size`.
fn inclusion_error(index: u64, size: u64, why: &str) -> LogError {
    LogError::BadProof(format!(
        "inclusion of leaf {index} in tree size {size}: {why}"
    ))
}

/// A climb's early end: the leaf is proven (`Ok`) or the proof fails for the reason given.
type Verdict = Option<Result<(), &'static str>>;

/// Hashes from `leaf` (leaf `index` of the tree of `size`) up along `proof`, showing each
/// computed node and the leaf range it covers to `at`, which may end the climb with a verdict
/// (hashing stops; the walk still checks the proof's length). Returns the last computed node
/// and the verdict, if any.
fn climb(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    mut at: impl FnMut((u64, u64), &Hash) -> Verdict,
) -> Result<(Hash, Verdict), LogError> {
    if index >= size {
        return Err(inclusion_error(
            index,
            size,
            "leaf index is not below the tree size",
        ));
    }
    let mut r = *leaf;
    let mut verdict = None;
    walk(index, size - 1, proof, |c, left, range| {
        if verdict.is_some() {
            return;
        }
        r = if left {
            node_hash(c, &r)
        } else {
            node_hash(&r, c)
        };
        verdict = at(range, &r);
    })
    .map_err(|why| inclusion_error(index, size, why))?;
    Ok((r, verdict))
}

/// Verifies that `leaf` (a leaf hash) is leaf `index` of the tree of `size` with `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), LogError> {
    let (r, _) = climb(index, size, leaf, proof, |_, _| None)?;
    if r != *root {
        return Err(inclusion_error(index, size, "computed root differs"));
    }
    Ok(())
}

/// Verifies many leaves of one tree against its root, remembering every node it has verified
/// (by the leaf range it covers), so that a path stops at the first node already known:
/// leaves checked in order cost about two node hashes each instead of `log2(size)`.
///
/// Sound because a node's value is fixed by the root: a path that reaches a verified node
/// with the same value proves its leaf as a full walk to the root would, and a different
/// value is an error at once. Every proof must still have the length RFC 9162 requires.
#[derive(Debug, Clone)]
pub struct InclusionVerifier {
    size: u64,
    known: std::collections::HashMap<(u64, u64), Hash>,
}

impl InclusionVerifier {
    /// A verifier for the tree of `size` leaves with `root`.
    pub fn new(size: u64, root: Hash) -> Self {
        let mut known = std::collections::HashMap::new();
        known.insert((0, size), root);
        InclusionVerifier { size, known }
    }

    /// Verifies that `leaf` (a leaf hash) is leaf `index`, as [`verify_inclusion`] does.
    pub fn verify(&mut self, index: u64, leaf: &Hash, proof: &[Hash]) -> Result<(), LogError> {
        let size = self.size;
        let mut computed: Vec<((u64, u64), Hash)> = Vec::new();
        let known = &self.known;
        let (r, verdict) = climb(index, size, leaf, proof, |range, r| {
            match known.get(&range) {
                Some(k) if k == r => Some(Ok(())),
                Some(_) if range == (0, size) => Some(Err("computed root differs")),
                Some(_) => Some(Err("a computed node differs from the one already verified")),
                None => {
                    computed.push((range, *r));
                    None
                }
            }
        })?;
        match verdict {
            Some(Err(why)) => return Err(inclusion_error(index, size, why)),
            None if self.known.get(&(0, size)) != Some(&r) => {
                return Err(inclusion_error(index, size, "computed root differs"));
            }
            _ => {}
        }
        self.known.extend(computed);
        Ok(())
    }
}

/// Verifies that the tree of size `first` with root `first_root` is a prefix of the tree of
/// size `second` with root `second_root`.
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), LogError> {
    let bad = |why: &str| {
        Err(LogError::BadProof(format!(
            "consistency from size {first} to {second}: {why}"
        )))
    };
    if first > second {
        return bad("first size is larger than the second");
    }
    if first == second {
        return if !proof.is_empty() {
            bad("proof must be empty for equal sizes")
        } else if first_root != second_root {
            bad("roots of equal sizes differ")
        } else {
            Ok(())
        };
    }
    if first == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            bad("proof must be empty from the empty tree")
        };
    }
    let mut nodes: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        nodes.push(*first_root);
    }
    nodes.extend_from_slice(proof);
    let Some((head, rest)) = nodes.split_first() else {
        return bad("proof is empty");
    };
    let (mut f, mut s) = (first - 1, second - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*head, *head);
    walk(f, s, rest, |c, left, _| {
        if left {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
        } else {
            sr = node_hash(&sr, c);
        }
    })
    .or_else(&bad)?;
    if fr != *first_root {
        return bad("first root differs");
    }
    if sr != *second_root {
        return bad("second root differs");
    }
    Ok(())
}

/// A node created by an append: ((level, index), hash).
pub type CreatedNode = ((u32, u64), Hash);

/// An in-memory log: the complete-subtree nodes of every level. Also the reference for what a
/// persistent store must keep ([`MemoryLog::append`] returns the nodes an append creates).
#[derive(Debug, Clone, Default)]
pub struct MemoryLog {
    levels: Vec<Vec<Hash>>,
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a leaf (by its data) and returns its index and the nodes created, as
    /// ((level, index), hash), leaf first.
    pub fn append(&mut self, data: &[u8]) -> (u64, Vec<CreatedNode>) {
        self.append_hash(leaf_hash(data))
    }

    /// Appends a leaf given its leaf hash; see [`MemoryLog::append`].
    pub fn append_hash(&mut self, leaf: Hash) -> (u64, Vec<CreatedNode>) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        let index = self.levels[0].len() as u64;
        self.levels[0].push(leaf);
        let mut created = vec![((0, index), leaf)];
        let mut level = 0usize;
        while self.levels[level].len().is_multiple_of(2) {
            let n = self.levels[level].len();
            let h = node_hash(&self.levels[level][n - 2], &self.levels[level][n - 1]);
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[level + 1].push(h);
            created.push((
                (
                    (level + 1) as u32,
                    (self.levels[level + 1].len() - 1) as u64,
                ),
                h,
            ));
            level += 1;
        }
        (index, created)
    }
}

/// The right edge of a log: for every set bit `l` of the size, the complete-subtree node
/// (l, size/2^l − 1). Enough to append leaves (returning the nodes each append creates) and to
/// compute the current root, without holding the tree in memory.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the first `size` leaves of `r`.
    pub fn load<R: NodeReader + ?Sized>(r: &R, size: u64) -> Result<Self, LogError> {
        let mut nodes = vec![[0u8; 32]; 64 - size.leading_zeros() as usize];
        for (l, slot) in nodes.iter_mut().enumerate() {
            if size >> l & 1 == 1 {
                *slot = r.node(l as u32, (size >> l) - 1)?;
            }
        }
        Ok(Frontier { size, nodes })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash; returns the nodes created, leaf first (as [`MemoryLog::append`]).
    pub fn append_hash(&mut self, leaf: Hash) -> Vec<CreatedNode> {
        let index = self.size;
        let mut created = vec![((0, index), leaf)];
        let mut h = leaf;
        let mut l = 0usize;
        while index >> l & 1 == 1 {
            h = node_hash(&self.nodes[l], &h);
            created.push((((l + 1) as u32, index >> (l + 1)), h));
            l += 1;
        }
        if self.nodes.len() <= l {
            self.nodes.resize(l + 1, [0u8; 32]);
        }
        self.nodes[l] = h;
        self.size += 1;
        created
    }

    /// The root of the current tree.
    pub fn root(&self) -> Hash {
        let mut acc: Option<Hash> = None;
        for (l, n) in self.nodes.iter().enumerate() {
            if self.size >> l & 1 == 1 {
                acc = Some(match acc {
                    None => *n,
                    Some(a) => node_hash(n, &a),
                });
            }
        }
        acc.unwrap_or_else(empty_root)
    }
}

impl NodeReader for MemoryLog {
    fn node(&self, level: u32, index: u64) -> Result<Hash, LogError> {
        self.levels
            .get(level as usize)
            .and_then(|l| l.get(index as usize))
            .copied()
            .ok_or(LogError::MissingNode { level, index })
    }

    fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash32_is_hex_in_json_and_refuses_other_lengths() {
        let h = Hash32([0xab; 32]);
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<Hash32>(&json).unwrap(), h);
        for bad in ["\"abcd\"", "\"zz\"", &format!("\"{}\"", "ab".repeat(33))] {
            assert!(serde_json::from_str::<Hash32>(bad).is_err(), "{bad}");
        }
        assert_eq!("ab".repeat(32).parse::<Hash32>().unwrap(), h);
    }

    #[test]
    fn inclusion_verifier_agrees_with_the_full_walk() {
        for size in [1u64, 2, 3, 5, 7, 8, 13, 64, 100] {
            let mut log = MemoryLog::new();
            for i in 0..size {
                log.append(&i.to_le_bytes());
            }
            let r = root(&log, size).unwrap();
            // In order, in reverse, and each leaf twice: all verify.
            let mut v = InclusionVerifier::new(size, r);
            let order: Vec<u64> = (0..size).chain((0..size).rev()).collect();
            for &i in &order {
                let p = inclusion_proof(&log, i, size).unwrap();
                v.verify(i, &leaf_hash(&i.to_le_bytes()), &p).unwrap();
            }
            // After every node is known, a wrong leaf, a wrong index, a changed sibling or a
            // truncated proof still fails, exactly where the full walk fails.
            for i in 0..size {
                let p = inclusion_proof(&log, i, size).unwrap();
                let wrong = leaf_hash(b"other");
                assert!(v.verify(i, &wrong, &p).is_err(), "size {size} leaf {i}");
                assert!(verify_inclusion(i, size, &wrong, &p, &r).is_err());
                if size > 1 {
                    let other = (i + 1) % size;
                    let leaf = leaf_hash(&i.to_le_bytes());
                    assert_eq!(
                        v.verify(other, &leaf, &p).is_ok(),
                        verify_inclusion(other, size, &leaf, &p, &r).is_ok(),
                        "size {size} leaf {i} at {other}"
                    );
                    let mut changed = p.clone();
                    changed[0][0] ^= 1;
                    assert!(v.verify(i, &leaf, &changed).is_err());
                    assert!(v.verify(i, &leaf, &p[..p.len() - 1]).is_err());
                }
            }
            // A fresh verifier with a wrong root accepts nothing.
            let mut w = InclusionVerifier::new(size, leaf_hash(b"not the root"));
            for i in 0..size {
                let p = inclusion_proof(&log, i, size).unwrap();
                assert!(w.verify(i, &leaf_hash(&i.to_le_bytes()), &p).is_err());
            }
        }
    }
    use proptest::prelude::*;

    #[test]
    fn frontier_matches_the_memory_log_at_every_size() {
        let mut m = MemoryLog::new();
        let mut f = Frontier::default();
        for i in 0..300u32 {
            let leaf = leaf_hash(&i.to_be_bytes());
            let (_, created_m) = m.append_hash(leaf);
            assert_eq!(f.append_hash(leaf), created_m, "created nodes at leaf {i}");
            assert_eq!(
                f.root(),
                root(&m, m.size()).unwrap(),
                "root at size {}",
                i + 1
            );
            let reloaded = Frontier::load(&m, m.size()).unwrap();
            assert_eq!(reloaded.root(), f.root());
        }
    }

    /// Naive RFC 6962 MTH over a list of leaf data.
    fn mth(d: &[Vec<u8>]) -> Hash {
        match d.len() {
            0 => empty_root(),
            1 => leaf_hash(&d[0]),
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    fn naive_path(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
        if d.len() <= 1 {
            return vec![];
        }
        let k = split(d.len() as u64) as usize;
        if m < k {
            let mut p = naive_path(m, &d[..k]);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = naive_path(m - k, &d[k..]);
            p.push(mth(&d[..k]));
            p
        }
    }

    fn naive_subproof(m: usize, d: &[Vec<u8>], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![mth(d)] };
        }
        let k = split(n as u64) as usize;
        if m <= k {
            let mut p = naive_subproof(m, &d[..k], b);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = naive_subproof(m - k, &d[k..], false);
            p.push(mth(&d[..k]));
            p
        }
    }

    fn data(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("entry {i}").into_bytes()).collect()
    }

    fn log_of(d: &[Vec<u8>]) -> MemoryLog {
        let mut l = MemoryLog::new();
        for x in d {
            l.append(x);
        }
        l
    }

    #[test]
    fn rfc6962_known_roots() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // Leaf hash of the empty leaf, as in the RFC 6962 test vectors of certificate-transparency.
        assert_eq!(
            hex::encode(leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    #[test]
    fn all_sizes_up_to_300_match_the_reference() {
        let d = data(300);
        let log = log_of(&d);
        for n in 0..=300usize {
            assert_eq!(
                root(&log, n as u64).unwrap(),
                mth(&d[..n]),
                "root of size {n}"
            );
        }
        for n in (1..=300usize)
            .step_by(7)
            .chain([1, 2, 3, 4, 5, 8, 255, 256, 257, 300])
        {
            let rt = mth(&d[..n]);
            for m in 0..n {
                let p = inclusion_proof(&log, m as u64, n as u64).unwrap();
                assert_eq!(p, naive_path(m, &d[..n]), "path {m} of {n}");
                verify_inclusion(m as u64, n as u64, &leaf_hash(&d[m]), &p, &rt).unwrap();
            }
            for m in 1..=n {
                let p = consistency_proof(&log, m as u64, n as u64).unwrap();
                if m < n {
                    assert_eq!(p, naive_subproof(m, &d[..n], true), "proof {m}→{n}");
                }
                verify_consistency(m as u64, n as u64, &mth(&d[..m]), &rt, &p).unwrap();
            }
        }
    }

    #[test]
    fn top_node_cache_gives_the_same_proofs_and_stays_bounded() {
        let d = data(300);
        let mut log = MemoryLog::new();
        let top = TopNodes::new(3);
        for (n, x) in d.iter().enumerate() {
            log.append(x);
            let size = n as u64 + 1;
            let cached = top.reader(&log, size);
            for s in [1, size / 2 + 1, size] {
                assert_eq!(root(&cached, s).unwrap(), root(&log, s).unwrap());
                for m in [0, s / 3, s - 1] {
                    assert_eq!(
                        inclusion_proof(&cached, m, s).unwrap(),
                        inclusion_proof(&log, m, s).unwrap(),
                        "leaf {m} of {s} (log {size})"
                    );
                }
                assert_eq!(
                    consistency_proof(&cached, s / 2, s).unwrap(),
                    consistency_proof(&log, s / 2, s).unwrap()
                );
            }
            // Only the 3 levels under the height of the tree are kept.
            let c = top.cache.read().unwrap();
            let height = 64 - size.leading_zeros();
            assert_eq!(c.0, height.saturating_sub(3));
            assert!(c.1.keys().all(|(l, _)| *l >= c.0));
            assert!(c.1.len() < 1 << 4, "{} nodes cached", c.1.len());
        }
    }

    #[test]
    fn append_reports_created_nodes() {
        let mut l = MemoryLog::new();
        l.append(b"a");
        l.append(b"b");
        l.append(b"c");
        let (i, created) = l.append(b"d");
        assert_eq!(i, 3);
        assert_eq!(
            created.iter().map(|c| c.0).collect::<Vec<_>>(),
            vec![(0, 3), (1, 1), (2, 0)]
        );
        assert_eq!(created[2].1, root(&l, 4).unwrap());
    }

    #[test]
    fn out_of_range_requests_are_errors() {
        let l = log_of(&data(5));
        assert!(root(&l, 6).is_err());
        assert!(inclusion_proof(&l, 5, 5).is_err());
        assert!(consistency_proof(&l, 3, 6).is_err());
        assert!(consistency_proof(&l, 4, 3).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn tampered_inclusion_proofs_fail(n in 1u64..300, m_frac in 0.0f64..1.0, which in 0usize..64, bit in 0u8..8) {
            let d = data(n as usize);
            let log = log_of(&d);
            let m = ((n as f64) * m_frac) as u64 % n;
            let rt = root(&log, n).unwrap();
            let mut p = inclusion_proof(&log, m, n).unwrap();
            let leaf = leaf_hash(&d[m as usize]);
            prop_assert!(verify_inclusion(m, n, &leaf, &p, &rt).is_ok());
            // Wrong index, wrong leaf, truncated, extended, flipped bit: all fail.
            if n > 1 {
                prop_assert!(verify_inclusion((m + 1) % n, n, &leaf, &p, &rt).is_err());
            }
            // (A wrong size claim is not always detectable from the proof alone: for leaf 0
            // of sizes 13 and 14 the path has the same shape. The signed checkpoint binds size
            // and root together, which is why clients verify against checkpoints.)
            prop_assert!(verify_inclusion(m, n, &leaf_hash(b"forged"), &p, &rt).is_err());
            let mut longer = p.clone();
            longer.push([7; 32]);
            prop_assert!(verify_inclusion(m, n, &leaf, &longer, &rt).is_err());
            if !p.is_empty() {
                let mut shorter = p.clone();
                shorter.pop();
                prop_assert!(verify_inclusion(m, n, &leaf, &shorter, &rt).is_err());
                let i = which % p.len();
                p[i][(which / 2) % 32] ^= 1 << bit;
                prop_assert!(verify_inclusion(m, n, &leaf, &p, &rt).is_err());
            }
        }

        #[test]
        fn tampered_consistency_proofs_fail(n in 2u64..300, m_frac in 0.0f64..1.0, which in 0usize..64, bit in 0u8..8) {
            let d = data(n as usize);
            let log = log_of(&d);
            let m = 1 + ((n as f64 - 1.0) * m_frac) as u64 % (n - 1);
            let (r1, r2) = (root(&log, m).unwrap(), root(&log, n).unwrap());
            let mut p = consistency_proof(&log, m, n).unwrap();
            prop_assert!(verify_consistency(m, n, &r1, &r2, &p).is_ok());
            // A forked history (different first root) and a wrong second root fail.
            prop_assert!(verify_consistency(m, n, &leaf_hash(b"fork"), &r2, &p).is_err());
            prop_assert!(verify_consistency(m, n, &r1, &leaf_hash(b"fork"), &p).is_err());
            if !p.is_empty() {
                let i = which % p.len();
                p[i][(which / 2) % 32] ^= 1 << bit;
                prop_assert!(verify_consistency(m, n, &r1, &r2, &p).is_err());
            }
        }
    }
}
