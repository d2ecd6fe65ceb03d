//! Tests of `merkle` and its proofs: the RFC 6962 vectors, then every proof of every tree
//! up to 100 leaves, through a dense store and through a reader that keeps
//! only the upper levels.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use super::proofs::{check_record, check_tree, prove_record, prove_tree};
use super::*;

fn hx(s: &str) -> Hash {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte =
            u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or_else(|_| panic!("bad hex {s}"));
    }
    Hash(out)
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| {
            u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or_else(|_| panic!("bad hex {s}"))
        })
        .collect()
}

// The RFC 6962 test vectors of Certificate Transparency, as kept by
// github.com/transparency-dev/merkle: leaf inputs, root hashes and
// complete-subtree hashes from testonly/constants.go; inclusion and
// consistency proofs from cmd/proofgen/main.go (leaf numbers there are
// 1-based; here they are leaf indexes).
const LEAF_INPUTS: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

const NODE_HASHES: [&[&str]; 4] = [
    &[
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    &[
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    &[
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    &["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
];

/// (leaf index, tree size, proof).
const INCLUSION_PROOFS: [(u64, u64, &[&str]); 5] = [
    (0, 1, &[]),
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// (old size, new size, proof).
const CONSISTENCY_PROOFS: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn vector_tree(size: usize) -> MemoryTree {
    let mut tree = MemoryTree::default();
    for input in &LEAF_INPUTS[..size] {
        tree.append(&unhex(input)).unwrap();
    }
    tree
}

fn hashes(list: &[&str]) -> Vec<Hash> {
    list.iter().map(|h| hx(h)).collect()
}

#[test]
fn leaf_and_empty_hashes_match_rfc6962_vectors() {
    // transparency-dev/merkle rfc6962/rfc6962_test.go.
    assert_eq!(EMPTY_TREE_HASH, hx(ROOTS[0]));
    assert_eq!(
        record_hash(b""),
        hx("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    );
    assert_eq!(
        record_hash(b"L123456"),
        hx("395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56")
    );
}

#[test]
fn roots_of_every_size_match_the_vectors_by_each_method() {
    let mut frontier = Frontier::default();
    let mut leaves = Vec::new();
    for (size, root) in ROOTS.iter().enumerate() {
        let tree = vector_tree(size);
        assert_eq!(
            tree_hash(size as u64, &tree).unwrap(),
            hx(root),
            "tree_hash({size})"
        );
        assert_eq!(root_of_leaves(&leaves), hx(root), "root_of_leaves({size})");
        assert_eq!(frontier.root(), hx(root), "frontier at {size}");
        assert_eq!(Frontier::restore(size as u64, &tree).unwrap(), frontier);
        if let Some(input) = LEAF_INPUTS.get(size) {
            let leaf = record_hash(&unhex(input));
            assert_eq!(
                frontier.append(leaf).unwrap(),
                stored_hashes(size as u64, leaf, &tree).unwrap()
            );
            leaves.push(leaf);
        }
    }
}

#[test]
fn stored_nodes_match_the_vectors_complete_subtree_hashes() {
    let tree = vector_tree(8);
    for (level, row) in NODE_HASHES.iter().enumerate() {
        for (index, want) in row.iter().enumerate() {
            let node = Node {
                level: level as u8,
                index: index as u64,
            };
            assert_eq!(
                tree.read_hashes(&[node]).unwrap(),
                vec![hx(want)],
                "{node:?}"
            );
        }
    }
    assert_eq!(stored_hash_count(8), 15);
}

#[test]
fn inclusion_proofs_match_the_vectors() {
    let tree = vector_tree(8);
    for (index, size, want) in INCLUSION_PROOFS {
        let want = hashes(want);
        assert_eq!(
            prove_record(size, index, &tree).unwrap(),
            want,
            "leaf {index} of {size}"
        );
        let leaf = record_hash(&unhex(LEAF_INPUTS[index as usize]));
        check_record(&want, size, hx(ROOTS[size as usize]), index, leaf).unwrap();
    }
}

#[test]
fn consistency_proofs_match_the_vectors() {
    let tree = vector_tree(8);
    for (old, new, want) in CONSISTENCY_PROOFS {
        let want = hashes(want);
        assert_eq!(prove_tree(new, old, &tree).unwrap(), want, "{old} to {new}");
        check_tree(
            &want,
            new,
            hx(ROOTS[new as usize]),
            old,
            hx(ROOTS[old as usize]),
        )
        .unwrap();
    }
}

#[test]
fn stored_hash_index_splits_back() {
    for level in 0..10u8 {
        for n in 0..100u64 {
            assert_eq!(
                split_stored_hash_index(stored_hash_index(level, n)),
                (level, n)
            );
        }
    }
    assert_eq!(stored_hash_count(0), 0);
    for n in 0..2000u64 {
        assert_eq!(
            stored_hash_count(n),
            2 * n - u64::from(n.count_ones()),
            "{n}"
        );
    }
}

#[test]
fn sizes_and_indexes_out_of_range_are_refused() {
    let tree = vector_tree(8);
    assert!(matches!(
        prove_record(8, 8, &tree),
        Err(TreeError::Range(RangeError::LeafOutOfRange { .. }))
    ));
    assert!(matches!(
        prove_record(9, 0, &tree),
        Err(TreeError::MissingNode(_))
    ));
    assert!(matches!(
        prove_tree(8, 0, &tree),
        Err(TreeError::Range(RangeError::BadSizes { .. }))
    ));
    assert!(matches!(
        prove_tree(4, 5, &tree),
        Err(TreeError::Range(RangeError::BadSizes { .. }))
    ));
    assert!(matches!(
        tree_hash(u64::MAX, &tree),
        Err(TreeError::TooLarge { .. })
    ));
    let root = hx(ROOTS[8]);
    assert_eq!(
        check_record(&[], 0, root, 0, root),
        Err(RangeError::LeafOutOfRange { index: 0, size: 0 }.into())
    );
    assert_eq!(
        check_tree(&[], 8, root, 0, EMPTY_TREE_HASH),
        Err(RangeError::BadSizes { old: 0, new: 8 }.into())
    );
    assert_eq!(
        check_tree(&[], 1, root, 2, root),
        Err(RangeError::BadSizes { old: 2, new: 1 }.into())
    );
    // Huge sizes and long proofs are refused without panicking.
    let long = vec![root; 200];
    assert!(check_record(&long, u64::MAX, root, u64::MAX - 1, root).is_err());
    assert!(check_tree(&long, u64::MAX, root, u64::MAX - 1, root).is_err());
    assert!(check_tree(&long[..64], u64::MAX, root, 1, root).is_err());
}

/// A reader that keeps only nodes at levels ≥ `height` and computes lower
/// ones from the leaf hashes: the storage option of the module doc. It
/// notes which aligned blocks of 2^height leaves it hashed.
struct UpperLevelsOnly {
    height: u8,
    leaves: Vec<Hash>,
    upper: HashMap<Node, Hash>,
    blocks: RefCell<BTreeSet<u64>>,
}

impl UpperLevelsOnly {
    /// How many blocks were hashed since the last call.
    fn blocks_hashed(&self) -> usize {
        std::mem::take(&mut *self.blocks.borrow_mut()).len()
    }
}

impl HashReader for UpperLevelsOnly {
    fn read_hashes(&self, nodes: &[Node]) -> Result<Vec<Hash>, TreeError> {
        nodes
            .iter()
            .map(|node| {
                if node.level >= self.height {
                    return self
                        .upper
                        .get(node)
                        .copied()
                        .ok_or(TreeError::MissingNode(*node));
                }
                let start = (node.index << node.level) as usize;
                self.blocks.borrow_mut().insert(start as u64 >> self.height);
                let block = self.leaves.get(start..start + (1 << node.level));
                block
                    .map(root_of_leaves)
                    .ok_or(TreeError::MissingNode(*node))
            })
            .collect()
    }
}

fn flip_each(proof: &[Hash], mut check: impl FnMut(&[Hash]) -> Result<(), ProofError>) {
    let mut bad = proof.to_vec();
    for i in 0..bad.len() {
        bad[i].0[i % 32] ^= 1;
        assert!(check(&bad).is_err(), "a flipped hash {i} verified");
        bad[i].0[i % 32] ^= 1;
    }
    let mut longer = proof.to_vec();
    longer.push(Hash([7; 32]));
    assert!(
        check(&longer).is_err(),
        "a proof with an extra hash verified"
    );
    if let Some((_, shorter)) = proof.split_first() {
        assert!(
            check(shorter).is_err(),
            "a proof missing its first hash verified"
        );
    }
}

#[test]
fn every_proof_of_every_tree_up_to_100_verifies_and_no_altered_one_does() {
    let mut dense = MemoryTree::default();
    let mut upper = UpperLevelsOnly {
        height: 2,
        leaves: Vec::new(),
        upper: HashMap::new(),
        blocks: RefCell::default(),
    };
    let mut frontier = Frontier::default();
    let mut roots = vec![EMPTY_TREE_HASH];
    for i in 0..100u64 {
        let data = format!("leaf {i}");
        let leaf = record_hash(data.as_bytes());
        dense.append(data.as_bytes()).unwrap();
        for (node, hash) in frontier.append(leaf).unwrap() {
            if node.level >= upper.height {
                upper.upper.insert(node, hash);
            }
        }
        upper.leaves.push(leaf);
        let t = i + 1;
        let root = tree_hash(t, &dense).unwrap();
        assert_eq!(root, root_of_leaves(&upper.leaves));
        assert_eq!(root, frontier.root());
        assert_eq!(root, tree_hash(t, &upper).unwrap());
        roots.push(root);

        for n in 0..t {
            let proof = prove_record(t, n, &dense).unwrap();
            upper.blocks_hashed();
            assert_eq!(proof, prove_record(t, n, &upper).unwrap());
            assert!(upper.blocks_hashed() <= 2, "inclusion of {n} in {t}");
            let leaf_n = upper.leaves[n as usize];
            check_record(&proof, t, root, n, leaf_n).unwrap();
            flip_each(&proof, |p| check_record(p, t, root, n, leaf_n));
            assert!(check_record(&proof, t, root, n, Hash([0; 32])).is_err());
            if n + 1 < t {
                assert!(check_record(&proof, t, root, n + 1, leaf_n).is_err());
            }
        }
        for m in 1..=t {
            let proof = prove_tree(t, m, &dense).unwrap();
            upper.blocks_hashed();
            assert_eq!(proof, prove_tree(t, m, &upper).unwrap());
            assert!(upper.blocks_hashed() <= 2, "consistency of {m} with {t}");
            let old = roots[m as usize];
            check_tree(&proof, t, root, m, old).unwrap();
            flip_each(&proof, |p| check_tree(p, t, root, m, old));
            assert!(check_tree(&proof, t, root, m, Hash([0; 32])).is_err());
            if m < t {
                assert!(check_tree(&proof, t, root, m, roots[m as usize + 1]).is_err());
                assert!(check_tree(&proof, t, root, m + 1, roots[m as usize + 1]).is_err());
            }
        }
    }
    assert_eq!(stored_hash_count(100), dense.hashes.len() as u64);
}
