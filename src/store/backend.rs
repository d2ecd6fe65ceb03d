//! The storage seam: what keyhold needs from a database, in its own words.
//!
//! A backend stores bytes under names keyhold chooses; it knows nothing of
//! record formats, authentication or the keyring (the [`Store`] facade in
//! `mod.rs` encodes, authenticates and decodes). Writes that must land
//! together with their audit records are expressed as a list of [`Op`]s
//! handed to [`Backend::commit`], not as closures over the backend's own
//! transaction type, so a network database can apply them in one SQL
//! transaction.
//!
//! Two methods exist for several nodes sharing one database and are
//! no-ops or plain defaults on sled: [`Backend::commit_at_head`] (chain a
//! batch on the head read under the append lock) and the shared reveal
//! limit ([`Backend::take_reveal_cells`]).
//!
//! The methods are blocking. keyhold calls them from the audit writer's
//! thread, from `spawn_blocking`, from offline commands, and for short
//! point reads from request handlers; a backend over a network database
//! runs its client on its own runtime and bounds each call by a timeout.
//!
//! The tables (trees) a backend keeps, and what a backup holds of them:
//!
//! | name | key | value |
//! | --- | --- | --- |
//! | `meta` | name | schema, sealed secrets, check value, chain head, key count |
//! | `tokens` | keyed digest of the token (32 bytes) | authenticated token record |
//! | `keys` | key id (16 bytes) | authenticated key record |
//! | `by_provider` | provider, created_at, id | (empty): newest key per provider |
//! | `key_usage` | key id | last_used (i64 µs, big-endian) |
//! | `audit` | seq (u64 big-endian) | audit records (see the backend) |
//! | `token_usage` | token id (16 bytes) | last_used (i64 µs, big-endian) |
//!
//! [`Store`]: super::Store

use std::path::PathBuf;

use uuid::Uuid;

use super::Result;

/// The tables a backup holds, in the order it writes them. Only ever
/// appended (a backup names a table by its index).
pub const TABLES: [&str; 7] = [
    "meta",
    "tokens",
    "keys",
    "by_provider",
    "key_usage",
    "audit",
    "token_usage",
];

/// Bytes a backend hands out: shared with its cache where it has one.
#[derive(Clone, PartialEq, Eq)]
pub struct Bytes(Inner);

#[derive(Clone, PartialEq, Eq)]
enum Inner {
    Shared(sled::IVec),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Inner::Shared(v) => v,
            Inner::Owned(v) => v,
        }
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes({} bytes)", self.len())
    }
}

impl From<sled::IVec> for Bytes {
    fn from(v: sled::IVec) -> Bytes {
        Bytes(Inner::Shared(v))
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Bytes {
        Bytes(Inner::Owned(v))
    }
}

/// One change, already encoded, applied in the same transaction as a
/// batch of audit records.
#[derive(Debug, Clone)]
pub enum Op {
    /// Insert or replace a key record; with `indexed` its provider index
    /// entry is put, without it removed (a soft-deleted key).
    PutKey {
        id: Uuid,
        provider: String,
        created_at_us: i64,
        value: Vec<u8>,
        indexed: bool,
    },
    /// Remove a key record, its usage and its provider index entry.
    DeleteKey {
        id: Uuid,
        provider: String,
        created_at_us: i64,
    },
    /// Set a key's last_used.
    TouchKey { id: Uuid, at_us: i64 },
    /// Insert or replace a token record under its storage key.
    PutToken { at: [u8; 32], value: Vec<u8> },
    /// Remove the token record under a storage key (a rotation moving it
    /// to its new one).
    DeleteToken { at: [u8; 32] },
    /// Set a token's last_used (by token id), in the commit of the audit
    /// record of what the token did.
    TouchToken { id: Uuid, at_us: i64 },
    /// Set (or, with `None`, remove) a meta value.
    Meta {
        name: &'static [u8],
        value: Option<Vec<u8>>,
    },
    /// What the commit of audit records `first..=last` changed, sealed
    /// (`Store::sealed_changes`), for the other nodes' check at use (a
    /// store several nodes share; ignored where one process holds it).
    Changes {
        first: u64,
        last: u64,
        value: Vec<u8>,
    },
}

/// One cell of the reveal limit shared by every node, as the database
/// decided it (its clock: `now_us`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedCell {
    pub allowed: bool,
    /// The client's theoretical arrival time after this attempt.
    pub tat_us: i64,
    pub now_us: i64,
}

/// What [`Backend::commit_at_head`] calls with the stored chain head and
/// the newest record: returns the records, the new head and the ops.
pub(crate) type ChainAtHead<'a> =
    dyn FnMut(Option<Bytes>, Option<(u64, Bytes)>) -> Result<Chained> + 'a;

/// A chained batch: its encoded records, the new head, the ops.
pub(crate) type Chained = (Vec<(u64, Vec<u8>)>, Vec<u8>, Vec<Op>);

/// A lock held in a database shared by nodes (released when dropped).
pub(crate) type SharedLock = Box<dyn std::any::Any + Send + Sync>;

/// A lazy walk over stored items.
pub(crate) type Items<'a, T> = Box<dyn Iterator<Item = Result<T>> + 'a>;

/// What keyhold needs from a database.
pub(crate) trait Backend: Send + Sync {
    /// Where the store lives on this host, if it is a directory.
    fn dir(&self) -> Option<PathBuf>;
    /// Makes everything written so far durable.
    fn flush(&self) -> Result<()>;
    /// Opens the database again after an error it keeps returning; waits
    /// up to `wait` for operations in flight. A no-op where not needed.
    fn reopen(&self, wait: std::time::Duration) -> Result<()>;
    /// Rewrites the database's files so that the bytes of removed records
    /// (a purged key's Fernet tokens) are in none of them, waiting up to
    /// `wait` for operations in flight. Returns how long the store's other
    /// users were held up, or `None` where there are no files of keyhold's
    /// to rewrite (a temporary store). What it reaches on each backend:
    /// docs/security.md, "What a purge destroys".
    fn scrub(&self, wait: std::time::Duration) -> Result<Option<std::time::Duration>>;
    /// Whether the database answers (a network round trip where there is
    /// one; sled: a flush).
    fn ping(&self) -> Result<()> {
        self.flush()
    }
    /// The name this node writes into its audit records, where several
    /// nodes share the store (none on sled: one process holds it).
    fn node(&self) -> Option<&str> {
        None
    }

    /// Takes the lock named `id` in the database every node shares, held
    /// until the returned value is dropped, so that a change that reads a
    /// record and writes it back is serialised with the other nodes'
    /// (`None` where one process holds the store: its own mutex is
    /// enough). Waits at most the backend's timeout.
    fn lock_shared(&self, _id: i64) -> Result<Option<SharedLock>> {
        Ok(None)
    }

    /// Takes the lock under which every node appends to the audit log,
    /// held until the returned value is dropped: while it is held, no
    /// record covered by the state digest changes, so a walk of the whole
    /// store (the check at open, a backup) sees one state. `None` where one
    /// process holds the store (its own audit log's lock is enough).
    fn lock_appends(&self) -> Result<Option<SharedLock>> {
        Ok(None)
    }

    // ---- the reveal limit shared by nodes (none on sled) ----
    /// Takes `cells` reveal cells (all or none) for `client` from state
    /// every node shares (GCRA: one cell costs `emission_us`, `burst`
    /// cells at most; `cells` is at most `burst`), or `None` when this
    /// backend keeps no shared state (the node's own limiter then decides).
    fn take_reveal_cells(
        &self,
        _client: &str,
        _emission_us: i64,
        _burst: u32,
        _cells: u32,
    ) -> Result<Option<SharedCell>> {
        Ok(None)
    }
    /// Forgets shared limit state that is back to full.
    fn prune_reveal_cells(&self) -> Result<()> {
        Ok(())
    }

    // ---- what each commit changed (shared databases only) ----
    /// The sealed change rows of the commits that end after `after`, as
    /// `(first, last, sealed)`, oldest first, at most `limit` (none where
    /// one process holds the store).
    fn changes_after(&self, _after: u64, _limit: i64) -> Result<Vec<(u64, u64, Bytes)>> {
        Ok(Vec::new())
    }
    /// Forgets the change rows of commits that end before `before`.
    fn prune_changes(&self, _before: u64) -> Result<()> {
        Ok(())
    }
    /// A key record and the newest audit seq, read together (one snapshot
    /// of a shared database; elsewhere the seq is 0).
    fn key_get_seen(&self, id: &Uuid) -> Result<Option<(Bytes, u64)>> {
        Ok(self.key_get(id)?.map(|v| (v, 0)))
    }
    /// A token record and the newest audit seq, read together.
    fn token_get_seen(&self, at: &[u8; 32]) -> Result<Option<(Bytes, u64)>> {
        Ok(self.token_get(at)?.map(|v| (v, 0)))
    }

    // ---- meta ----
    fn meta_get(&self, name: &[u8]) -> Result<Option<Bytes>>;
    /// Writes the first meta values in one durable step, unless `guard`
    /// (the schema's name) is already set: then `false`, nothing written.
    fn meta_init(&self, guard: &[u8], values: &[(&[u8], &[u8])]) -> Result<bool>;

    // ---- keys ----
    fn key_get(&self, id: &Uuid) -> Result<Option<Bytes>>;
    /// Replaces a key record only if it still holds `current`.
    fn key_swap(&self, id: &Uuid, current: &[u8], new: &[u8]) -> Result<bool>;
    /// Every key record, in id order.
    fn keys(&self) -> Items<'_, (Uuid, Bytes)>;
    /// A provider's keys as the index holds them, `(created_at, id)`,
    /// oldest first. The index is not authenticated: the facade checks each
    /// entry against the authenticated record it names.
    fn provider_ids(&self, provider: &str) -> Items<'_, (i64, Uuid)>;
    /// The same, newest first, lazily.
    fn provider_ids_newest_first(&self, provider: &str) -> Items<'_, (i64, Uuid)>;
    /// The number of provider index entries (a slow count of keys).
    fn count_index(&self) -> Result<u64>;
    fn usage_get(&self, id: &Uuid) -> Result<Option<Bytes>>;

    // ---- tokens ----
    fn token_get(&self, at: &[u8; 32]) -> Result<Option<Bytes>>;
    fn tokens(&self) -> Items<'_, ([u8; 32], Bytes)>;
    /// In one transaction: sets `meta` values and moves each token record
    /// from its old storage key to its new one with a new value.
    fn tokens_move(
        &self,
        meta: &[(&'static [u8], Vec<u8>)],
        moves: &[([u8; 32], [u8; 32], Vec<u8>)],
    ) -> Result<()>;

    // ---- the audit log ----
    /// Appends encoded audit `records` (ascending seqs, chained), stores
    /// the chain `head`, and applies `ops`, all in one transaction. Not
    /// durable until [`flush`](Self::flush). Callers in one process
    /// serialise commits; where several nodes share the store, a backend
    /// refuses a batch whose first seq is not after the stored newest one
    /// with [`StoreError::HeadMoved`](super::StoreError::HeadMoved),
    /// writing nothing (the audit log chains again and retries).
    fn commit(&self, records: &[(u64, Vec<u8>)], head: &[u8], ops: &[Op]) -> Result<()>;
    /// As [`commit`](Self::commit), for a store several nodes append to:
    /// under the lock that serialises appends, hands `chain` the stored
    /// chain head (meta) and the newest audit record, and commits the
    /// records, head and ops it returns in the same transaction, so a
    /// batch is always chained on the head it lands after. The default
    /// (one process: the caller already serialises) reads both, then
    /// commits.
    /// With `long`, the transaction is not held to one call's timeout
    /// (its chaining walks the whole store).
    fn commit_at_head(&self, _long: bool, chain: &mut ChainAtHead<'_>) -> Result<()> {
        let head = self.meta_get(super::META_AUDIT_HEAD)?;
        let last = self.audit_last()?;
        let (records, head, ops) = chain(head, last)?;
        self.commit(&records, &head, &ops)
    }
    /// The newest audit record's seq and bytes.
    fn audit_last(&self) -> Result<Option<(u64, Bytes)>>;
    /// Audit records from `from_seq` on, oldest first, lazily; records
    /// appended while the walk runs are included up to where it ends.
    fn audit_from(&self, from_seq: u64) -> Items<'_, (u64, Bytes)>;

    // ---- backup ----
    /// Every entry of table `table` (one of [`TABLES`]), in key order.
    fn entries(&self, table: &str) -> Items<'_, (Bytes, Bytes)>;
    /// Writes one entry as it is (restore; tests that play an editor).
    fn put_entry(&self, table: &str, key: &[u8], value: &[u8]) -> Result<()>;
}
