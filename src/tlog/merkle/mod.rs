//! The RFC 6962 / RFC 9162 Merkle tree over the audit log, kept
//! incrementally: small pure functions over hashes read by tree
//! coordinates, after Go's `golang.org/x/mod/sumdb/tlog`.
//!
//! Leaf hash = SHA-256(0x00 ‖ leaf bytes); node hash = SHA-256(0x01 ‖ left ‖
//! right); the tree of n leaves splits at the largest power of two below n
//! (RFC 6962 §2.1). A [`Node`] `(level, index)` is the complete subtree of
//! 2^level leaves starting at leaf `index << level`; those are the only
//! hashes a store keeps, and the only ones [`HashReader`] is asked for.
//! Appending leaf n completes one node per trailing one bit of n, so an
//! append adds 1 + that many nodes (2 on average) and reads at most
//! log₂ n ([`stored_hashes`]), or none when the writer keeps the tree's
//! right edge in memory ([`Frontier`]). Tree hashes and proofs read at most
//! 2·log₂ n nodes in one batch.
//!
//! # Storage cost per record (issue 28: ≤ 250 bytes per record, all in)
//!
//! A tree of n leaves has [`stored_hash_count`]`(n)` = 2n − popcount(n)
//! complete-subtree nodes of 32 bytes: two per record on average. Leaf n's
//! append completes the nodes at levels 1..=trailing_ones(n), so the nodes
//! of a record can live in the record's own entry (sled chunk, PostgreSQL
//! row) with no key of their own.
//! - **Every node** (Go's stored hashes): 64 bytes per record (32 for the
//!   leaf, 32 on average above), inline. Simplest; a proof at 10M records
//!   reads ≤ 2·24 nodes, none recomputed. A quarter of the 250-byte budget.
//! - **Leaf hashes plus nodes at levels ≥ h**: 32 + 64/2^h bytes (h = 3:
//!   40 bytes). Nodes below h are hashed from ≤ 2^h leaf hashes.
//! - **Nodes at levels ≥ h only** (Go's tiles idea; leaf hashes recomputed
//!   from the records, as a leaf's bytes are its export line): 64/2^h bytes
//!   per record — h = 3: 8 bytes, h = 4: 4 bytes, h = 8: 0.25 bytes. A node
//!   below h is recomputed from the records of its aligned block of 2^h
//!   leaves. An inclusion proof touches at most two blocks (the leaf's and
//!   the tree's partial last one), a consistency proof at most two (each
//!   size's last), as the tests check: with h = 3, the size of a sled chunk
//!   (8 records), that is ≤ 16 records re-serialized and hashed per proof,
//!   O(1) in n. Appends need no reads: the writer keeps the right edge in a
//!   [`Frontier`] (≤ 62 hashes) and rebuilds it at start, where its nodes
//!   below h come from the last partial block's records.
//! - **The frontier only** (nothing per record): every commit's checkpoint,
//!   but no proof against an older size; not enough for issue 27.
//!
//! The reader takes any `(level, index)` so that every option above is a
//! [`HashReader`]: one that looks nodes up, or one that computes low
//! levels from leaf hashes ([`root_of_leaves`]).
//!
//! Not for: storage, checkpoints or signatures (see the sibling modules).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha2::{Digest, Sha256};

pub(crate) mod proofs;

/// A SHA-256 hash of a leaf, a node or a tree.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Hash(pub(crate) [u8; 32]);

impl Hash {
    /// Standard base64 with padding, as in checkpoints and proofs.
    pub(crate) fn to_base64(self) -> String {
        BASE64.encode(self.0)
    }

    /// Parses [`to_base64`](Self::to_base64): exactly 32 bytes, canonical.
    pub(crate) fn from_base64(text: &str) -> Option<Hash> {
        if text.len() != 44 {
            return None;
        }
        let bytes = BASE64.decode(text).ok()?;
        bytes.try_into().ok().map(Hash)
    }
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hash({})", self.to_base64())
    }
}

/// The hash of the empty tree: SHA-256 of the empty string (RFC 6962 §2.1).
pub(crate) const EMPTY_TREE_HASH: Hash = Hash([
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
]);

/// The largest tree kept or proved (stored indexes stay below 2^63).
pub(crate) const MAX_TREE_SIZE: u64 = 1 << 62;

/// A proof never holds more hashes than a tree of `u64` leaves has levels.
const MAX_PROOF_HASHES: usize = 64;

/// SHA-256(0x00 ‖ data): the hash of a leaf.
pub(crate) fn record_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    Hash(h.finalize().into())
}

/// SHA-256(0x01 ‖ left ‖ right): the hash of an interior node.
pub(crate) fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

/// A complete subtree: 2^level leaves starting at leaf `index << level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Node {
    pub(crate) level: u8,
    pub(crate) index: u64,
}

impl Node {
    /// Where a dense store keeps this node: [`stored_hash_index`].
    pub(crate) fn stored_index(self) -> u64 {
        stored_hash_index(self.level, self.index)
    }
}

/// Maps (level, n) to the dense order in which appends produce nodes
/// (Crosby and Wallach §3.3, as Go's `StoredHashIndex`): leaf n is
/// followed by the nodes it completes. Defined for nodes of trees up to
/// [`MAX_TREE_SIZE`] leaves.
pub(crate) fn stored_hash_index(level: u8, n: u64) -> u64 {
    // Level L's n'th hash is written right after level L+1's 2n+1'th hash.
    let mut n = n;
    for _ in 0..level {
        n = n.saturating_mul(2).saturating_add(1);
    }
    // Level 0's n'th hash is written at n + n/2 + n/4 + ...
    let mut i: u64 = 0;
    while n > 0 {
        i = i.saturating_add(n);
        n >>= 1;
    }
    i.saturating_add(u64::from(level))
}

/// The inverse of [`stored_hash_index`].
pub(crate) fn split_stored_hash_index(index: u64) -> (u8, u64) {
    // stored_hash_index(0, n) < 2n, so the leaf before `index` is in
    // [index/2, index/2 + log₂ index].
    let mut n = index / 2;
    let mut index_n = stored_hash_index(0, n);
    loop {
        // Leaf n adds 1 + trailing_zeros(n + 1) hashes.
        let next = index_n + 1 + u64::from((n + 1).trailing_zeros());
        if next > index {
            break;
        }
        n += 1;
        index_n = next;
    }
    let level = (index - index_n) as u8;
    (level, n >> level)
}

/// How many nodes a dense store holds for a tree of n leaves.
pub(crate) fn stored_hash_count(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let mut count = stored_hash_index(0, n - 1) + 1;
    let mut i = n - 1;
    while i & 1 != 0 {
        count += 1;
        i >>= 1;
    }
    count
}

/// Reads node hashes for the tree functions. An implementation may look
/// nodes up, or compute them (for example low levels from leaf hashes).
pub(crate) trait HashReader {
    /// The hashes of `nodes`, in the same order and as many.
    fn read_hashes(&self, nodes: &[Node]) -> Result<Vec<Hash>, TreeError>;
}

/// Why a tree hash or a proof could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TreeError {
    #[error(transparent)]
    Range(#[from] RangeError),
    #[error("a tree of {size} leaves is beyond the largest supported ({MAX_TREE_SIZE})")]
    TooLarge { size: u64 },
    #[error("the hash of node (level {}, index {}) is not stored: the tree store is incomplete; restore it from a backup", .0.level, .0.index)]
    MissingNode(Node),
    #[error("the hash store answered {got} hashes for {asked} nodes: its reader is wrong")]
    ShortRead { asked: usize, got: usize },
    #[error("reading the tree's hashes failed: {0}")]
    Read(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A leaf or a pair of sizes no proof covers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RangeError {
    #[error("leaf {index} is not in a tree of {size} leaves; ask for a leaf below the tree size")]
    LeafOutOfRange { index: u64, size: u64 },
    #[error("a consistency proof goes from a size of at least 1 to one no smaller; {old} to {new} is not that")]
    BadSizes { old: u64, new: u64 },
}

/// Why a proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProofError {
    #[error(transparent)]
    Range(#[from] RangeError),
    #[error("the proof has the wrong number of hashes for these sizes")]
    WrongLength,
    #[error("the proof does not lead to the expected root hash: the log is not the one the checkpoint describes")]
    RootMismatch,
}

/// `(k, log₂ k)` for the largest power of two k ≤ n (n ≥ 1).
fn pow2_at_most(n: u64) -> (u64, u8) {
    let l = 63 - n.max(1).leading_zeros();
    (1 << l, l as u8)
}

/// `k` for the largest power of two k < n (n ≥ 2): where RFC 6962 splits.
fn split_point(n: u64) -> u64 {
    pow2_at_most(n.saturating_sub(1)).0
}

/// Hashes handed out in the order their nodes were asked for.
struct Taken<'a>(&'a [Hash]);

impl Taken<'_> {
    fn take(&mut self, count: usize) -> Result<&[Hash], TreeError> {
        if count > self.0.len() {
            return Err(TreeError::ShortRead {
                asked: count,
                got: self.0.len(),
            });
        }
        let (head, rest) = self.0.split_at(count);
        self.0 = rest;
        Ok(head)
    }
}

fn read_all(reader: &dyn HashReader, nodes: &[Node]) -> Result<Vec<Hash>, TreeError> {
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    let hashes = reader.read_hashes(nodes)?;
    if hashes.len() != nodes.len() {
        return Err(TreeError::ShortRead {
            asked: nodes.len(),
            got: hashes.len(),
        });
    }
    Ok(hashes)
}

fn check_size(size: u64) -> Result<(), TreeError> {
    if size > MAX_TREE_SIZE {
        return Err(TreeError::TooLarge { size });
    }
    Ok(())
}

/// The nodes an append of leaf `n` with hash `leaf` must persist: the leaf
/// and every node it completes, lowest level first (in
/// [`stored_hash_index`] order). Reads the left siblings it needs.
pub(crate) fn stored_hashes(
    n: u64,
    leaf: Hash,
    reader: &dyn HashReader,
) -> Result<Vec<(Node, Hash)>, TreeError> {
    check_size(n.saturating_add(1))?;
    let completed = (n + 1).trailing_zeros() as u8;
    // Left siblings, highest level first (so in increasing stored order).
    let siblings: Vec<Node> = (0..completed)
        .rev()
        .map(|level| Node {
            level,
            index: (n >> level) - 1,
        })
        .collect();
    let old = read_all(reader, &siblings)?;
    let mut out = vec![(Node { level: 0, index: n }, leaf)];
    let mut h = leaf;
    for (level, left) in (1..=completed).zip(old.iter().rev()) {
        h = node_hash(left, &h);
        out.push((
            Node {
                level,
                index: n >> level,
            },
            h,
        ));
    }
    Ok(out)
}

/// The nodes whose hashes make up leaves [lo, hi), largest first.
fn subtree_nodes(mut lo: u64, hi: u64, need: &mut Vec<Node>) {
    while lo < hi {
        let (k, level) = pow2_at_most(hi - lo);
        need.push(Node {
            level,
            index: lo >> level,
        });
        lo += k;
    }
}

/// The hash of leaves [lo, hi) from the hashes of [`subtree_nodes`].
fn subtree_hash(lo: u64, hi: u64, hashes: &mut Taken<'_>) -> Result<Hash, TreeError> {
    let parts = hashes.take((hi - lo).count_ones() as usize)?;
    let (last, rest) = parts
        .split_last()
        .ok_or(TreeError::ShortRead { asked: 1, got: 0 })?;
    Ok(rest.iter().rev().fold(*last, |h, left| node_hash(left, &h)))
}

/// The root hash of the tree of the first `n` leaves.
pub(crate) fn tree_hash(n: u64, reader: &dyn HashReader) -> Result<Hash, TreeError> {
    check_size(n)?;
    if n == 0 {
        return Ok(EMPTY_TREE_HASH);
    }
    let mut need = Vec::new();
    subtree_nodes(0, n, &mut need);
    let hashes = read_all(reader, &need)?;
    subtree_hash(0, n, &mut Taken(&hashes))
}

/// The RFC 6962 root of a list of leaf hashes (the whole tree, computed in
/// O(n)): for a reader's low levels. For a stream of leaves too long to
/// hold (a whole export), append them to a [`Frontier`] instead.
pub(crate) fn root_of_leaves(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => EMPTY_TREE_HASH,
        [one] => *one,
        _ => {
            let k = split_point(leaves.len() as u64) as usize;
            let (left, right) = leaves.split_at(k);
            node_hash(&root_of_leaves(left), &root_of_leaves(right))
        }
    }
}

/// The right edge of the tree: the roots of its complete subtrees, one per
/// set bit of the size, largest first. Enough to append and to hash the
/// current tree without reading; kept in memory by the writer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Frontier {
    size: u64,
    edge: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the tree of `size` leaves, read from the store.
    pub(crate) fn restore(size: u64, reader: &dyn HashReader) -> Result<Frontier, TreeError> {
        check_size(size)?;
        let mut need = Vec::new();
        subtree_nodes(0, size, &mut need);
        let edge = read_all(reader, &need)?;
        Ok(Frontier { size, edge })
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf; returns the nodes to persist (as [`stored_hashes`]).
    pub(crate) fn append(&mut self, leaf: Hash) -> Result<Vec<(Node, Hash)>, TreeError> {
        let n = self.size;
        check_size(n.saturating_add(1))?;
        let mut out = vec![(Node { level: 0, index: n }, leaf)];
        let mut h = leaf;
        for level in 1..=(n + 1).trailing_zeros() as u8 {
            let left = self
                .edge
                .pop()
                .ok_or(TreeError::ShortRead { asked: 1, got: 0 })?;
            h = node_hash(&left, &h);
            out.push((
                Node {
                    level,
                    index: n >> level,
                },
                h,
            ));
        }
        self.edge.push(h);
        self.size = n + 1;
        Ok(out)
    }

    /// The root hash of the current tree.
    pub(crate) fn root(&self) -> Hash {
        match self.edge.split_last() {
            None => EMPTY_TREE_HASH,
            Some((last, rest)) => rest.iter().rev().fold(*last, |h, left| node_hash(left, &h)),
        }
    }
}

/// Every node of a tree, kept in memory in [`stored_hash_index`] order:
/// for tests, and for checking an export's leaves.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemoryTree {
    hashes: Vec<Hash>,
    size: u64,
}

impl MemoryTree {
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf by its bytes.
    pub(crate) fn append(&mut self, data: &[u8]) -> Result<(), TreeError> {
        let nodes = stored_hashes(self.size, record_hash(data), self)?;
        self.hashes.extend(nodes.into_iter().map(|(_, h)| h));
        self.size += 1;
        Ok(())
    }
}

impl HashReader for MemoryTree {
    fn read_hashes(&self, nodes: &[Node]) -> Result<Vec<Hash>, TreeError> {
        nodes
            .iter()
            .map(|node| {
                usize::try_from(node.stored_index())
                    .ok()
                    .and_then(|i| self.hashes.get(i).copied())
                    .ok_or(TreeError::MissingNode(*node))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
