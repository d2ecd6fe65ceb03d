//! RFC 6962 inclusion and consistency proofs: made from a [`HashReader`],
//! checked with nothing but the proof, the sizes and the root hashes.
//!
//! A proof is a list of subtree hashes; each is the hash of a range of
//! leaves, found by the same walk down the tree that the check retraces.

use super::node_hash;
use super::{
    check_size, read_all, split_point, subtree_hash, subtree_nodes, Hash, HashReader, ProofError,
    RangeError, Taken, TreeError, MAX_PROOF_HASHES,
};

/// The inclusion proof (RFC 6962 "audit path") of leaf `n` in the tree of
/// `t` leaves: the sibling hashes from the leaf up.
pub(crate) fn prove_record(
    t: u64,
    n: u64,
    reader: &dyn HashReader,
) -> Result<Vec<Hash>, TreeError> {
    check_size(t)?;
    if n >= t {
        return Err(RangeError::LeafOutOfRange { index: n, size: t }.into());
    }
    let mut ranges = Vec::new();
    inclusion_ranges(0, t, n, &mut ranges);
    hashes_of_ranges(&ranges, reader)
}

/// The leaf ranges whose hashes prove leaf `n` in [lo, hi), in proof order.
fn inclusion_ranges(lo: u64, hi: u64, n: u64, out: &mut Vec<(u64, u64)>) {
    if lo + 1 >= hi {
        return;
    }
    let k = split_point(hi - lo);
    if n < lo + k {
        inclusion_ranges(lo, lo + k, n, out);
        out.push((lo + k, hi));
    } else {
        inclusion_ranges(lo + k, hi, n, out);
        out.push((lo, lo + k));
    }
}

/// The hashes of leaf ranges, read in one batch.
fn hashes_of_ranges(
    ranges: &[(u64, u64)],
    reader: &dyn HashReader,
) -> Result<Vec<Hash>, TreeError> {
    let mut need = Vec::new();
    for &(lo, hi) in ranges {
        subtree_nodes(lo, hi, &mut need);
    }
    let hashes = read_all(reader, &need)?;
    let mut taken = Taken(&hashes);
    ranges
        .iter()
        .map(|&(lo, hi)| subtree_hash(lo, hi, &mut taken))
        .collect()
}

/// Checks that `proof` proves leaf `n` has hash `leaf` in the tree of `t`
/// leaves whose root is `root`.
pub(crate) fn check_record(
    proof: &[Hash],
    t: u64,
    root: Hash,
    n: u64,
    leaf: Hash,
) -> Result<(), ProofError> {
    if n >= t {
        return Err(RangeError::LeafOutOfRange { index: n, size: t }.into());
    }
    if proof.len() > MAX_PROOF_HASHES {
        return Err(ProofError::WrongLength);
    }
    if run_record_proof(proof, 0, t, n, leaf)? == root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

fn run_record_proof(p: &[Hash], lo: u64, hi: u64, n: u64, leaf: Hash) -> Result<Hash, ProofError> {
    if lo + 1 >= hi {
        return if p.is_empty() {
            Ok(leaf)
        } else {
            Err(ProofError::WrongLength)
        };
    }
    let (last, rest) = p.split_last().ok_or(ProofError::WrongLength)?;
    let k = split_point(hi - lo);
    if n < lo + k {
        Ok(node_hash(
            &run_record_proof(rest, lo, lo + k, n, leaf)?,
            last,
        ))
    } else {
        Ok(node_hash(
            last,
            &run_record_proof(rest, lo + k, hi, n, leaf)?,
        ))
    }
}

/// The consistency proof (RFC 6962 §2.1.2) that the tree of `t` leaves
/// extends the tree of its first `n` leaves (1 ≤ n ≤ t).
pub(crate) fn prove_tree(t: u64, n: u64, reader: &dyn HashReader) -> Result<Vec<Hash>, TreeError> {
    check_size(t)?;
    if n == 0 || n > t {
        return Err(RangeError::BadSizes { old: n, new: t }.into());
    }
    let mut ranges = Vec::new();
    consistency_ranges(0, t, n, &mut ranges);
    hashes_of_ranges(&ranges, reader)
}

/// The leaf ranges whose hashes prove [lo, hi) extends its first n leaves.
fn consistency_ranges(lo: u64, hi: u64, n: u64, out: &mut Vec<(u64, u64)>) {
    if n == hi {
        // The old tree itself needs no hash: the verifier holds it.
        if lo != 0 {
            out.push((lo, hi));
        }
        return;
    }
    let k = split_point(hi - lo);
    if n <= lo + k {
        consistency_ranges(lo, lo + k, n, out);
        out.push((lo + k, hi));
    } else {
        consistency_ranges(lo + k, hi, n, out);
        out.push((lo, lo + k));
    }
}

/// Checks that `proof` proves the tree of `t` leaves with root `root`
/// extends the tree of `n` leaves with root `old_root`.
pub(crate) fn check_tree(
    proof: &[Hash],
    t: u64,
    root: Hash,
    n: u64,
    old_root: Hash,
) -> Result<(), ProofError> {
    if n == 0 || n > t {
        return Err(RangeError::BadSizes { old: n, new: t }.into());
    }
    if proof.len() > 2 * MAX_PROOF_HASHES {
        return Err(ProofError::WrongLength);
    }
    let (old, new) = run_tree_proof(proof, 0, t, n, old_root)?;
    if old == old_root && new == root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// The hashes of leaves [lo, hi) in the old tree (of n leaves) and the new.
fn run_tree_proof(
    p: &[Hash],
    lo: u64,
    hi: u64,
    n: u64,
    old: Hash,
) -> Result<(Hash, Hash), ProofError> {
    if n == hi {
        return match (lo, p) {
            (0, []) => Ok((old, old)),
            (0, _) => Err(ProofError::WrongLength),
            (_, [only]) => Ok((*only, *only)),
            _ => Err(ProofError::WrongLength),
        };
    }
    let (last, rest) = p.split_last().ok_or(ProofError::WrongLength)?;
    let k = split_point(hi - lo);
    if n <= lo + k {
        let (o, t) = run_tree_proof(rest, lo, lo + k, n, old)?;
        Ok((o, node_hash(&t, last)))
    } else {
        let (o, t) = run_tree_proof(rest, lo + k, hi, n, old)?;
        Ok((node_hash(last, &o), node_hash(last, &t)))
    }
}
