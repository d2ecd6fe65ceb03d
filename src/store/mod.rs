//! The store: what keyhold keeps, behind one seam.
//!
//! [`Store`] is the facade every other module uses. It owns what does not
//! depend on the database: the schema version, record encodings and their
//! authentication (`records`, `auth`), the key count. The database itself
//! sits behind the [`backend::Backend`] trait, which names what keyhold
//! needs (meta values, keys, tokens, the audit append and walk, the
//! entries of a backup) in bytes; sled is its first implementation
//! (`sled_store/`), PostgreSQL its second (`postgres/`, several nodes on
//! one database), and nothing outside this folder names either.
//!
//! Records are postcard-encoded inside enums whose variants are only ever
//! appended, so old records stay readable. Times are integer microseconds.
//! The store knows bytes and records; it knows nothing of HTTP, and it
//! never holds a secret in clear (API keys are Fernet tokens, access tokens
//! are keyed digests, keyhold's own secrets are sealed under the keyring's
//! derived sealing key). From schema 3 on, every key and token record is
//! authenticated (`auth`): one planted, edited or moved outside keyhold is
//! refused as [`StoreError::Tampered`].
//!
//! Not for: deciding who may do what (see `access`) or chaining audit
//! records (see `audit`), though the audit writer commits through
//! [`Store::commit`] so that a change and its audit record land together.
//!
//! This file holds the facade itself (opening, record keys, schema, meta,
//! the commit, the audit walk); `queries.rs` holds its key and token
//! queries and the upgrade's steps, `commitment.rs` its side of the state
//! commitment.
//!
//! Over 500 lines: the facade's opening, record keys, schema, meta, commit
//! and audit walk are thin documented wrappers around the backend, kept
//! together so the rules of authentication read in one place.

mod auth;
pub(crate) mod backend;
mod changes;
mod commitment;

use commitment::KeysMark;
pub(crate) use commitment::Stamped;
pub(crate) mod postgres;
mod queries;
mod records;
mod sled_store;
mod state;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use uuid::Uuid;

pub use backend::TABLES;
use backend::{Backend, Op};
pub(crate) use backend::{Bytes, SharedCell};
pub use postgres::DatabaseUrl;
pub use postgres::PgOptions;
pub(crate) use postgres::{DatabaseUrlArg, DatabaseUrlError};
pub(crate) use sled_store::audit_chunks;
pub use sled_store::{holds_store, sled_dir, wait_until_released};

pub use auth::SEALED_PURPOSE as RECORD_SECRET_PURPOSE;
pub(crate) use auth::{AuditTagKeys, RecordKeys, META_AUDIT_TAG_EPOCHS};
use records::Auth;
pub(crate) use records::DroppedVersion;
pub use records::KeyRecord;
pub(crate) use records::KeyVersion;
pub use records::TokenRecord;
pub(crate) use state::{SealedState, StateDigest};

/// Default sled page cache: 8 MiB, the smallest `serve` sizes itself.
/// Reveals of 100,000 keys ran as fast with 8 as with 16 (the OS page
/// cache holds the file); the smaller cache keeps a loaded server under
/// 64 MiB (BENCHMARKS.md).
pub(crate) const DEFAULT_CACHE_BYTES: u64 = 8 * 1024 * 1024;
/// Page cache `serve` gives each stored key when it sizes the cache itself.
pub(crate) const CACHE_BYTES_PER_KEY: u64 = 64;
/// The largest page cache `serve` sizes itself: 256 MiB.
pub(crate) const MAX_AUTO_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// The page cache for a store of `keys` keys: 64 bytes a key, at least
/// 8 MiB and at most 256 MiB. Reveals of random keys pull a whole leaf
/// each; on 1,000,000 keys an 8 MiB cache held too few of them and cost a
/// third of the throughput, while the store's own index already takes
/// ~150 MiB there (BENCHMARKS.md).
pub(crate) fn auto_cache_bytes(keys: u64) -> u64 {
    keys.saturating_mul(CACHE_BYTES_PER_KEY)
        .clamp(DEFAULT_CACHE_BYTES, MAX_AUTO_CACHE_BYTES)
}

/// The schema this binary writes. A store with a newer one is refused.
/// 2: audit records are packed several to a sled entry (`audit_chunks`).
/// A schema-1 store is marked 2 when this keyhold opens it (any command,
/// before it writes a chunk); its records stay as they are.
/// 3: token records under keyed digests, key and token records
/// authenticated, secrets sealed under derived keys, audit records
/// hash-chained and signed (the upgrade from 2 is `crate::upgrade`).
/// 4: key records keep versions, their authors and soft deletion (a new
/// record variant; older records read as version 1, never deleted). The
/// upgrade from 3 writes nothing but an audited mark (`crate::unlock`).
/// 5: the state commitment (`state`): key and token records carry the
/// stamp of the commit that wrote them under their MAC, and the chain head
/// holds the sealed digest of every key, token and meta record. The
/// upgrade from 4 rewrites nothing: its audited commit writes the first
/// such head (older records read with stamp 0).
pub const SCHEMA_VERSION: u32 = 5;

pub(crate) const META_SCHEMA: &[u8] = b"schema_version";
pub(crate) const META_CHECK: &[u8] = b"keyring_check";
/// The HMAC key of the audit records written before schema 3, sealed.
pub(crate) const META_AUDIT_KEY: &[u8] = b"audit_mac_key";
/// The record secret (see `auth`), sealed.
pub const META_RECORD_SECRET: &[u8] = b"record_secret";
/// The record MAC secret (see `auth`), sealed; absent until the first
/// rotation (the record secret serves until then).
pub(crate) const META_RECORD_MAC_SECRET: &[u8] = b"record_mac_secret";
/// The next record MAC secret, sealed, while a rotation moves every key
/// and token record over to it.
pub(crate) const META_RECORD_MAC_NEXT: &[u8] = b"record_mac_secret_next";
/// The purpose both record MAC secrets are sealed under.
pub(crate) const RECORD_MAC_PURPOSE: &str = "record-mac-secret";
/// The audit signing key's Ed25519 seed, sealed.
pub const META_SIGNING_KEY: &[u8] = b"audit_signing_key";
/// The audit signing key's public key (32 bytes; informative only: trust
/// comes from the sealed seed or from the operator).
pub(crate) const META_PUBLIC_KEY: &[u8] = b"audit_public_key";
/// Present while the upgrade to schema 3 is under way (its step 1 done).
pub(crate) const META_UPGRADING: &[u8] = b"upgrade_to_3";
pub(crate) const META_AUDIT_HEAD: &[u8] = b"audit_head";
/// The number of stored keys (u64, big-endian), kept by every commit that
/// adds or removes a key, so that counting never walks the store. A store
/// without it (made by an older keyhold, or restored from a backup) gets it
/// counted once when opened.
pub(crate) const META_KEY_COUNT: &[u8] = b"key_count";

/// Errors from the store. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// (The command line names the `init` to run.)
    #[error("the data directory {0} is not initialised")]
    NotInitialised(String),
    /// (The command line names the `init` to run.)
    #[error("the database {0} holds no store")]
    DatabaseNotInitialised(String),
    #[error("the data directory {0} is already initialised; nothing was changed")]
    AlreadyInitialised(String),
    #[error("cannot open the store in {path}: {}", sled_store::open_reason(error))]
    Open { path: String, error: sled::Error },
    /// Another process holds the data directory's lock (a running server,
    /// or another command); the command line names the `--remote` forms.
    #[error(
        "cannot open the store in {path}: another process holds its lock: stop it, or go \
         through the running server"
    )]
    Held { path: String },
    #[error("storage is being reopened after a disk error; retry shortly")]
    Unavailable,
    #[error("cannot {what}: {error}; check the disk (space, permissions) and retry")]
    Io {
        what: &'static str,
        error: std::io::Error,
    },
    #[error("storage error: {0}; check the disk (space, permissions) and retry")]
    Sled(sled::Error),
    #[error(
        "the store was written by a newer keyhold (schema {found}, this binary knows {SCHEMA_VERSION}): \
         upgrade keyhold"
    )]
    NewerSchema { found: u32 },
    #[error("a stored {what} record is corrupt ({detail}); run `keyhold check` and restore from a backup if needed")]
    Corrupt { what: &'static str, detail: String },
    #[error(
        "the data directory's CURRENT file names {found:?}, not a store.N subdirectory of it: it \
         was written outside keyhold. Write the name of the newest store.N subdirectory into it \
         (or restore from a backup)"
    )]
    BadCurrent { found: String },
    #[error(
        "the data directory's CURRENT file names {name}, which holds no store (it was removed or \
         left out of a copy of the directory): restore the data directory from a backup"
    )]
    CurrentMissing { name: String },
    #[error(
        "the store was rewritten, but the old files are still open (an export or verify was \
         reading them) and were not overwritten yet; retried at the next housekeeping pass"
    )]
    OldFilesInUse,
    #[error(
        "the stored {what} record {id} failed its integrity check: it was written or changed \
         outside keyhold and is refused. Run `keyhold check`, and restore from a backup if needed"
    )]
    Tampered { what: &'static str, id: String },
    #[error(
        "the store's record keys are not unlocked (a keyhold bug: the keyring was not applied)"
    )]
    Locked,
    #[error("the database could not {what}: {detail}; check that it is reachable, then retry")]
    Database { what: &'static str, detail: String },
    #[error(
        "the database's keyhold tables are at migration {found}, newer than this binary's \
         {known}: upgrade keyhold"
    )]
    NewerDatabase { found: i32, known: i32 },
    #[error(
        "another node appended to the audit log since this batch was chained (it is chained \
         again from the stored head)"
    )]
    HeadMoved,
    #[error(
        "another node rotated the store's record keys (a new record MAC secret), so this node \
         can no longer read the records it moved: restart this node with the keyring the \
         rotation used"
    )]
    KeysReplaced,
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Sled(e)
    }
}

pub(crate) type Result<T> = std::result::Result<T, StoreError>;

/// One change that is committed together with its audit record.
#[derive(Debug, Clone)]
pub enum Write {
    /// Insert or replace a key: its provider index entry is kept while the
    /// key is live and removed while it is soft-deleted.
    PutKey(KeyRecord),
    /// Remove a key, its usage and its provider index entry.
    DeleteKey(KeyRecord),
    /// Set a key's last_used.
    TouchKey { id: Uuid, at_us: i64 },
    /// Insert or replace an access token record under its storage key
    /// (the keyed digest: [`Store::token_key`]).
    PutToken { hash: [u8; 32], record: TokenRecord },
    /// Remove the token record under a storage key (a rotation moving it
    /// to where the new record MAC secret puts it).
    DeleteToken { hash: [u8; 32] },
    /// Set a token's last_used (by its id). The audit log adds one for
    /// each token that acted in a batch it commits.
    TouchToken { id: Uuid, at_us: i64 },
    /// Set (or, with `None`, remove) a meta value.
    Meta {
        name: &'static [u8],
        value: Option<Vec<u8>>,
    },
}

/// Which records a change reads, changes and writes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarded {
    /// Key records (a new version, a delete, a restore, a purge, the
    /// re-encryption of a rotation).
    Keys,
    /// Token records (create, revoke, rotate).
    Tokens,
}

static KEY_WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static TOKEN_WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Guarded {
    fn local(self) -> &'static tokio::sync::Mutex<()> {
        match self {
            Guarded::Keys => &KEY_WRITES,
            Guarded::Tokens => &TOKEN_WRITES,
        }
    }

    /// The advisory lock's number on a shared database ("keyh" + 1 or 2).
    fn shared_id(self) -> i64 {
        match self {
            Guarded::Keys => 0x6b65_7968_0000_0001,
            Guarded::Tokens => 0x6b65_7968_0000_0002,
        }
    }
}

/// Held while a change reads records and writes them back with its audit
/// record: serialises such changes within this process and, on a database
/// several nodes share, with the other nodes (so a new version cannot
/// undo a delete made meanwhile, nor a rotation a revoke).
pub struct WriteLock {
    _local: tokio::sync::MutexGuard<'static, ()>,
    _shared: Option<backend::SharedLock>,
}

impl std::fmt::Debug for WriteLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteLock").finish_non_exhaustive()
    }
}

/// The open store. Clones share it (and the record keys once applied);
/// a disk error that the backend keeps returning is cleared for all of
/// them by [`Store::reopen`].
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    /// The record keys, once the keyring unsealed them.
    keys: Arc<RwLock<Option<Arc<RecordKeys>>>>,
    /// The schema read at open (raised by the upgrade).
    schema: Arc<AtomicU32>,
    /// Set when a change removed ciphertexts (a purge, versions beyond the
    /// cap) whose bytes the files may still hold; cleared by [`Store::scrub_if_due`].
    scrub_due: Arc<AtomicBool>,
    /// Held through [`Store::scrub_if_due`]: purges waiting at once share
    /// the rewrite that starts after the last of them committed.
    scrubbing: Arc<std::sync::Mutex<()>>,
    /// Each record's expected stamp, where the database can be written
    /// while this process runs (PostgreSQL); `None` on sled.
    fresh: Option<Arc<state::Fresh>>,
    /// The sealed record MAC secrets (current, next) as they were when the
    /// record keys were applied: where several nodes share the store, a
    /// record this node cannot find or authenticate is first checked
    /// against them (another node's rotation, not tampering).
    keys_mark: Arc<RwLock<KeysMark>>,
    /// When [`Store::keys_replaced`] last found nothing changed: it asks
    /// the database at most once a second (a flood of unknown tokens must
    /// not become a flood of queries).
    keys_checked: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// Set once another node's rotation was seen.
    keys_replaced_seen: Arc<AtomicBool>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir` with the default
    /// page cache.
    pub fn open(dir: &Path) -> Result<Store> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens the store with the page cache [`auto_cache_bytes`] gives its
    /// key count (opened once with the default to read the count, and
    /// again if the store needs more). Returns the store and the size.
    pub fn open_auto_cache(dir: &Path) -> Result<(Store, u64)> {
        Self::open_cache_sized_by(dir, auto_cache_bytes)
    }

    fn open_cache_sized_by(dir: &Path, size: impl Fn(u64) -> u64) -> Result<(Store, u64)> {
        let store = Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)?;
        let want = size(store.key_count() as u64);
        if want <= DEFAULT_CACHE_BYTES {
            return Ok((store, DEFAULT_CACHE_BYTES));
        }
        store.close()?;
        Ok((Self::open_with_cache(dir, want)?, want))
    }

    /// Opens the store with a page cache of at most `cache_bytes` (sled's
    /// own default is 1 GiB, far more than keyhold needs).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Store> {
        Self::of_backend(Arc::new(sled_store::SledStore::open(dir, cache_bytes)?))
    }

    /// Connects to the PostgreSQL database of `opts` (nothing of the URL's
    /// password is ever shown). With `create`, applies the schema's
    /// migrations first (`init`); otherwise a database without keyhold's
    /// tables is refused as not initialised.
    pub fn connect(opts: &PgOptions, create: bool) -> Result<Store> {
        Self::of_backend(Arc::new(postgres::PgStore::connect(opts, create)?))
    }

    /// A temporary store that lives in memory and is gone at exit.
    pub fn temporary() -> Result<Store> {
        Self::of_backend(Arc::new(sled_store::SledStore::temporary()?))
    }

    fn of_backend(backend: Arc<dyn Backend>) -> Result<Store> {
        let schema = match backend.meta_get(META_SCHEMA)? {
            Some(v) => postcard::from_bytes::<u32>(&v).map_err(corrupt("schema version"))?,
            None => SCHEMA_VERSION,
        };
        let fresh = backend.node().map(|_| Arc::new(state::Fresh::default()));
        Ok(Store {
            backend,
            keys: Arc::new(RwLock::new(None)),
            schema: Arc::new(AtomicU32::new(schema)),
            scrub_due: Arc::new(AtomicBool::new(false)),
            scrubbing: Arc::new(std::sync::Mutex::new(())),
            fresh,
            keys_mark: Arc::new(RwLock::new([None, None])),
            keys_checked: Arc::new(std::sync::Mutex::new(None)),
            keys_replaced_seen: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Closes this handle. When it was the last handle on a store on disk,
    /// returns once the database has let go of the directory (see
    /// [`wait_until_released`]), so that it can be opened again at once,
    /// by this process or another.
    pub fn close(self) -> Result<()> {
        let last = Arc::strong_count(&self.backend) == 1;
        let path = self.backend.dir().filter(|_| last);
        drop(self);
        match path {
            Some(p) => wait_until_released(&p),
            None => Ok(()),
        }
    }

    /// Opens the database again (after a disk error, which sled keeps
    /// returning until then). Waits up to `wait` for operations in flight
    /// to let go of the old one. A temporary store is left as it is.
    pub fn reopen(&self, wait: std::time::Duration) -> Result<()> {
        self.backend.reopen(wait)
    }

    /// Notes that a committed change removed ciphertexts whose bytes the
    /// files may still hold, for the next [`Store::scrub_if_due`].
    pub fn mark_scrub_due(&self) {
        self.scrub_due.store(true, Ordering::SeqCst);
    }

    /// If a removal awaits it ([`Store::mark_scrub_due`]), rewrites the
    /// store's files so that the bytes of removed records (purged keys,
    /// versions beyond the cap) are in none of them; `Ok(None)` if none
    /// does. On sled the live entries are copied into a fresh database
    /// (while the store stays in use, then brought up to date with every
    /// other use waiting, after up to `wait` for those in flight) and the
    /// old files overwritten and removed; on PostgreSQL the keys table is
    /// rewritten (`VACUUM FULL`). Returns how long the store's other users
    /// were held up (`None` for a temporary store, which has no files).
    ///
    /// Callers that arrive while a rewrite runs wait for it, and then find
    /// nothing due unless a removal committed after it began, so concurrent
    /// purges share rewrites. The flag is cleared before the rewrite: a
    /// removal committed while it runs marks it due again rather than being
    /// lost, and a failed rewrite stays due.
    pub fn scrub_if_due(&self, wait: std::time::Duration) -> Result<Option<std::time::Duration>> {
        let _one = match self.scrubbing.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if !self.scrub_due.swap(false, Ordering::SeqCst) {
            return Ok(None);
        }
        let res = self.backend.scrub(wait);
        if res.is_err() {
            self.scrub_due.store(true, Ordering::SeqCst);
        }
        res
    }

    /// Holds every node's audit appends back until the returned value is
    /// dropped (a shared database; `None` on sled, where the process that
    /// holds the store holds back its own writes): for walks that must see
    /// one state. Call it from a thread that may block.
    pub fn lock_appends(&self) -> Result<Option<backend::SharedLock>> {
        self.backend.lock_appends()
    }

    /// Takes the lock of changes to `what` (see [`WriteLock`]).
    pub async fn write_lock(&self, what: Guarded) -> Result<WriteLock> {
        let local = what.local().lock().await;
        let shared = if self.backend.node().is_some() {
            let backend = self.backend.clone();
            crate::blocking::run(move || backend.lock_shared(what.shared_id()))
                .await
                .map_err(|_| StoreError::Unavailable)??
        } else {
            None
        };
        Ok(WriteLock {
            _local: local,
            _shared: shared,
        })
    }

    /// [`Store::write_lock`] from a thread that may block (never from an
    /// async task).
    pub fn write_lock_blocking(&self, what: Guarded) -> Result<WriteLock> {
        let local = what.local().blocking_lock();
        let shared = self.backend.lock_shared(what.shared_id())?;
        Ok(WriteLock {
            _local: local,
            _shared: shared,
        })
    }

    /// Whether the database answers.
    pub fn ping(&self) -> Result<()> {
        self.backend.ping()
    }

    /// This node's name where several nodes share the store.
    pub fn node(&self) -> Option<&str> {
        self.backend.node()
    }

    /// Takes `cells` reveal cells (all or none) from the limit every node
    /// shares, or `None` where the store keeps no shared limit (sled).
    pub fn take_reveal_cells(
        &self,
        client: &str,
        emission_us: i64,
        burst: u32,
        cells: u32,
    ) -> Result<Option<SharedCell>> {
        self.backend
            .take_reveal_cells(client, emission_us, burst, cells)
    }

    /// Forgets shared limit state that is back to full.
    pub fn prune_reveal_cells(&self) -> Result<()> {
        self.backend.prune_reveal_cells()
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<()> {
        self.backend.flush()
    }

    /// [`flush`](Self::flush) off the async runtime's threads.
    pub async fn flush_async(&self) -> Result<()> {
        let store = self.clone();
        crate::blocking::run(move || store.flush())
            .await
            .map_err(|_| StoreError::Unavailable)?
    }

    /// Applies the record keys (unsealed from meta by the keyring): from
    /// now on records are written authenticated and read only if authentic.
    pub fn set_record_keys(&self, keys: RecordKeys) {
        let mut guard = match self.keys.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *guard = Some(Arc::new(keys));
        drop(guard);
        self.note_keys_mark();
    }

    /// The record keys, if applied.
    pub fn record_keys(&self) -> Option<Arc<RecordKeys>> {
        match self.keys.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The schema this store is at (as opened, or raised by the upgrade).
    pub fn schema(&self) -> u32 {
        self.schema.load(Ordering::Acquire)
    }

    /// Notes that the upgrade raised the schema (after its commit).
    pub(crate) fn set_schema(&self, v: u32) {
        self.schema.store(v, Ordering::Release);
    }

    /// The stored schema value for `v`.
    pub fn schema_bytes(v: u32) -> Result<Vec<u8>> {
        postcard::to_stdvec(&v).map_err(corrupt("schema version"))
    }

    fn read_keys(&self) -> Result<Option<Arc<RecordKeys>>> {
        let keys = self.record_keys();
        if keys.is_none() && self.schema() >= 3 {
            return Err(StoreError::Locked);
        }
        Ok(keys)
    }

    fn write_keys(&self) -> Result<Arc<RecordKeys>> {
        self.record_keys().ok_or(StoreError::Locked)
    }

    /// Decodes a key record as the store's state requires: authenticated
    /// from schema 3 on, either form while the upgrade is under way.
    fn decode_key(&self, id: Uuid, bytes: &[u8]) -> Result<KeyRecord> {
        let rec = match self.read_keys()? {
            None => KeyRecord::decode_checked(id, bytes, Auth::Legacy),
            Some(_) if self.schema() < 3 && KeyRecord::is_legacy(bytes) => {
                KeyRecord::decode_checked(id, bytes, Auth::Legacy)
            }
            Some(k) => KeyRecord::decode_checked(id, bytes, Auth::Keys(&k)),
        }?;
        if let Some(f) = &self.fresh {
            f.check_key(&id, rec.stamp, bytes)?;
        }
        Ok(rec)
    }

    fn decode_token(&self, at: &[u8; 32], bytes: &[u8]) -> Result<TokenRecord> {
        let rec = match self.read_keys()? {
            None => TokenRecord::decode_checked(at, bytes, Auth::Legacy),
            Some(k) => TokenRecord::decode_checked(at, bytes, Auth::Keys(&k)),
        }?;
        if let Some(f) = &self.fresh {
            f.check_token(at, rec.stamp, bytes)?;
        }
        Ok(rec)
    }

    /// Where the record of the token whose SHA-256 is `sha` is stored: its
    /// keyed digest (or, before the upgrade, the SHA-256 itself).
    pub fn token_key(&self, sha: &[u8; 32]) -> Result<[u8; 32]> {
        Ok(match self.read_keys()? {
            Some(k) => k.token_key(sha),
            None => *sha,
        })
    }

    // ---- meta ----

    /// True when `init` has run on this store.
    pub fn is_initialised(&self) -> Result<bool> {
        Ok(self.backend.meta_get(META_SCHEMA)?.is_some())
    }

    /// The stored schema version, refusing a newer one.
    pub fn check_schema(&self) -> Result<()> {
        match self.backend.meta_get(META_SCHEMA)? {
            None => Ok(()),
            Some(v) => {
                let found: u32 = postcard::from_bytes(&v).map_err(|e| StoreError::Corrupt {
                    what: "schema version",
                    detail: e.to_string(),
                })?;
                if found > SCHEMA_VERSION {
                    Err(StoreError::NewerSchema { found })
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Writes the initial meta values (schema, keyring check value, the
    /// sealed secrets and the audit public key) in one durable step.
    pub fn initialise(&self, check_token: &str, meta: &[(&'static [u8], Vec<u8>)]) -> Result<()> {
        let schema = Self::schema_bytes(SCHEMA_VERSION)?;
        let count = 0u64.to_be_bytes();
        let mut values: Vec<(&[u8], &[u8])> = vec![
            (META_SCHEMA, schema.as_slice()),
            (META_CHECK, check_token.as_bytes()),
            (META_KEY_COUNT, &count),
        ];
        values.extend(meta.iter().map(|(n, v)| (*n, v.as_slice())));
        if !self.backend.meta_init(META_SCHEMA, &values)? {
            return Err(StoreError::AlreadyInitialised(String::from("(this store)")));
        }
        self.flush()
    }

    /// The keyring check value (a Fernet token of a fixed plaintext).
    pub fn check_value(&self) -> Result<Option<String>> {
        self.meta_string(META_CHECK)
    }

    /// The audit MAC key of records from before schema 3, sealed.
    pub fn audit_key_token(&self) -> Result<Option<String>> {
        self.meta_string(META_AUDIT_KEY)
    }

    /// A meta value as text (sealed values are Fernet tokens).
    pub fn meta_string(&self, name: &[u8]) -> Result<Option<String>> {
        match self.backend.meta_get(name)? {
            None => Ok(None),
            Some(v) => String::from_utf8(v.to_vec())
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    what: "meta",
                    detail: e.to_string(),
                }),
        }
    }

    /// A raw meta value.
    pub fn meta_value(&self, name: &[u8]) -> Result<Option<Bytes>> {
        self.backend.meta_get(name)
    }

    // ---- the commit used by the audit writer ----

    /// Applies `ops` (from [`Store::stamp_ops`]) and audit `records`
    /// (already chained and encoded, ascending seqs) plus the new chain
    /// head in one transaction. Not durable until [`Store::flush`].
    /// Callers serialise their commits (the audit log's lock).
    pub(crate) fn commit(&self, records: &[(u64, Vec<u8>)], head: &[u8], ops: &[Op]) -> Result<()> {
        self.backend.commit(records, head, ops)
    }

    /// As [`Store::commit`], chaining under the backend's append lock:
    /// `chain` gets the stored chain head and the newest record and
    /// returns the encoded records, the new head and the ops (see
    /// [`Backend::commit_at_head`]).
    /// With `long`, the commit may take as long as it needs (it walks
    /// the store: see `AuditLog`), not one call's database timeout.
    pub(crate) fn commit_at_head(
        &self,
        long: bool,
        mut chain: impl FnMut(
            Option<Bytes>,
            Option<(u64, Bytes)>,
        ) -> Result<(Vec<(u64, Vec<u8>)>, Vec<u8>, Vec<Op>)>,
    ) -> Result<()> {
        self.backend.commit_at_head(long, &mut chain)
    }

    // ---- the audit log ----

    /// The stored chain head, if any record was ever written.
    pub(crate) fn audit_head_bytes(&self) -> Result<Option<Bytes>> {
        self.backend.meta_get(META_AUDIT_HEAD)
    }

    /// The newest audit record's seq and bytes.
    pub(crate) fn last_audit(&self) -> Result<Option<(u64, Bytes)>> {
        self.backend.audit_last()
    }

    /// Audit records from `from_seq` on, oldest first, lazily, each with
    /// the seq it is stored under. Records appended while the walk runs
    /// are included up to where it ends.
    pub fn audit_iter(&self, from_seq: u64) -> impl Iterator<Item = Result<(u64, Bytes)>> + '_ {
        self.backend.audit_from(from_seq)
    }

    /// The newest audit seq (0 when the log is empty); cheap, unlike a
    /// count of the log.
    pub fn audit_last_seq(&self) -> Result<u64> {
        Ok(self.last_audit()?.map_or(0, |(s, _)| s))
    }

    // ---- backup ----

    /// Every entry of `table` (one of [`TABLES`]), as stored.
    pub fn entries(&self, table: &str) -> impl Iterator<Item = Result<(Bytes, Bytes)>> + '_ {
        self.backend.entries(table)
    }

    /// Writes one entry as it is (restore of a checked backup).
    pub fn put_entry(&self, table: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.backend.put_entry(table, key, value)
    }
}

/// A write as the backend's op, its record encoded and authenticated.
fn op_of(w: &Write, keys: Option<&RecordKeys>) -> Result<Op> {
    let keys = || keys.ok_or(StoreError::Locked);
    Ok(match w {
        Write::PutKey(rec) => Op::PutKey {
            id: rec.id,
            provider: rec.provider.clone(),
            created_at_us: rec.created_at_us,
            value: rec.encode(keys()?)?,
            indexed: rec.deleted_at_us.is_none(),
        },
        Write::DeleteKey(rec) => Op::DeleteKey {
            id: rec.id,
            provider: rec.provider.clone(),
            created_at_us: rec.created_at_us,
        },
        Write::TouchKey { id, at_us } => Op::TouchKey {
            id: *id,
            at_us: *at_us,
        },
        Write::PutToken { hash, record } => Op::PutToken {
            at: *hash,
            value: record.encode(hash, keys()?)?,
        },
        Write::DeleteToken { hash } => Op::DeleteToken { at: *hash },
        Write::TouchToken { id, at_us } => Op::TouchToken {
            id: *id,
            at_us: *at_us,
        },
        Write::Meta { name, value } => Op::Meta {
            name,
            value: value.clone(),
        },
    })
}

pub(crate) use sled_store::decode_count;

fn decode_i64(v: &[u8]) -> Result<i64> {
    let b: [u8; 8] = v.try_into().map_err(corrupt("last_used"))?;
    Ok(i64::from_be_bytes(b))
}

pub(crate) fn corrupt<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> StoreError {
    move |e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    }
}
#[cfg(test)]
mod tests;
