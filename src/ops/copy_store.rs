//! Moving a whole store from one backend to another (sled ⇄ PostgreSQL):
//! every entry of every table, as stored, so records keep their
//! authentication and the audit chain its hashes and signatures.
//!
//! The target must hold no store (and, on PostgreSQL, no audit records).
//! The schema mark is written last, so a copy that stops half-way leaves a
//! target that no command takes for a store. The caller verifies the
//! chain in the target afterwards (`vault::Migration`).
//!
//! Not for: changing records (nothing is decrypted or re-encrypted).

use crate::store::{Store, StoreError, TABLES};

/// Why a store could not be moved.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The target already holds a store (or audit records); nothing was
    /// changed. The edge says where to migrate instead.
    #[error("the target is not empty: it already holds a store (or audit records)")]
    TargetNotEmpty,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How many entries of each table were copied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Copied {
    pub per_table: Vec<(&'static str, u64)>,
    pub audit_records: u64,
}

/// The meta name whose presence makes a store initialised (written last).
const SCHEMA: &[u8] = b"schema_version";

/// Refuses a target that holds a store or audit records.
pub(crate) fn check_empty(to: &Store) -> Result<(), MigrateError> {
    if to.is_initialised()? || to.audit_last_seq()? != 0 {
        return Err(MigrateError::TargetNotEmpty);
    }
    // Rows of what commits changed are derived data: any left from an
    // earlier life of the database would clash with the new log's.
    to.forget_changes()?;
    Ok(())
}

/// Copies every entry of `from` into the empty store `to`.
pub fn copy_store(from: &Store, to: &Store) -> Result<Copied, MigrateError> {
    check_empty(to)?;
    let mut copied = Copied::default();
    let mut schema = None;
    for table in TABLES {
        let mut n = 0u64;
        for item in from.entries(table) {
            let (k, v) = item?;
            if table == "meta" && k.as_ref() == SCHEMA {
                schema = Some(v.to_vec());
                continue;
            }
            to.put_entry(table, &k, &v)?;
            n += 1;
        }
        copied.per_table.push((table, n));
    }
    copied.audit_records = to.audit_iter(0).count() as u64;
    if let Some(v) = schema {
        to.put_entry("meta", SCHEMA, &v)?;
    }
    to.flush()?;
    Ok(copied)
}
