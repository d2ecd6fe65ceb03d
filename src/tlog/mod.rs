//! A transparency log over the audit log (issue 27): the RFC 6962 Merkle
//! tree and the C2SP text formats that publish it. Pure functions and
//! types, no storage and no I/O.
//!
//! The interface is:
//! - [`merkle`]: leaf and node hashes, tree coordinates ([`merkle::Node`],
//!   stored indexes), the nodes an append persists ([`merkle::stored_hashes`],
//!   [`merkle::Frontier`]), [`merkle::tree_hash`] over a
//!   [`merkle::HashReader`], and in [`merkle::proofs`] inclusion and
//!   consistency proofs with their checks. The module doc weighs what the
//!   store keeps per record.
//! - [`note`]: C2SP signed notes, vkeys, [`note::NoteSigner`],
//!   [`note::NoteVerifier`], [`note::open`].
//! - [`checkpoint`]: C2SP tlog-checkpoint text, signed and opened.
//! - [`cosignature`]: C2SP tlog-cosignature (Ed25519, `cosignature/v1`).
//! - [`proof`]: C2SP tlog-proof bundles, verified offline.
//!
//! Every parser takes hostile input: sizes and counts are bounded, and
//! none panics (`hostile_tests.rs`).
//!
//! Not for: what a record's leaf bytes are (the audit export decides: its
//! unfiltered JSON line), where hashes live (the store), or HTTP.

pub(crate) mod checkpoint;
pub(crate) mod cosignature;
pub(crate) mod merkle;
pub(crate) mod note;
pub(crate) mod proof;

#[cfg(test)]
mod hostile_tests;
