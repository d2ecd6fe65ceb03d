//! A transparency log over the audit log: the RFC 6962 Merkle tree and
//! the C2SP text formats that publish it (signed notes, checkpoints,
//! cosignatures, tlog-proof bundles).
//!
//! Pure functions and types, no storage and no I/O: the audit writer keeps
//! the tree through [`merkle::HashReader`], the HTTP and CLI layers format
//! and parse with the rest.
//!
//! Not for: deciding what a record's leaf bytes are (the audit export does),
//! or where hashes live (the store does).

pub(crate) mod checkpoint;
pub(crate) mod cosignature;
pub(crate) mod merkle;
pub(crate) mod note;
pub(crate) mod proof;

#[cfg(test)]
mod hostile_tests;
