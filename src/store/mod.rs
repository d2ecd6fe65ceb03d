//! The sled store: trees, record types, their (de)serialisation and the
//! schema version.
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

pub mod audit_chunks;
mod auth;
mod records;

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use sled::{Db, IVec, Transactional, Tree};
use uuid::Uuid;

pub use auth::{RecordKeys, SEALED_PURPOSE as RECORD_SECRET_PURPOSE};
use records::Auth;
pub use records::{KeyRecord, TokenRecord};

/// Default sled page cache: 8 MiB, the smallest `serve` sizes itself.
/// Reveals of 100,000 keys ran as fast with 8 as with 16 (the OS page
/// cache holds the file); the smaller cache keeps a loaded server under
/// 64 MiB (BENCHMARKS.md).
pub const DEFAULT_CACHE_BYTES: u64 = 8 * 1024 * 1024;
/// Page cache `serve` gives each stored key when it sizes the cache itself.
pub const CACHE_BYTES_PER_KEY: u64 = 64;
/// The largest page cache `serve` sizes itself: 256 MiB.
pub const MAX_AUTO_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// The page cache for a store of `keys` keys: 64 bytes a key, at least
/// 8 MiB and at most 256 MiB. Reveals of random keys pull a whole leaf
/// each; on 1,000,000 keys an 8 MiB cache held too few of them and cost a
/// third of the throughput, while the store's own index already takes
/// ~150 MiB there (BENCHMARKS.md).
pub fn auto_cache_bytes(keys: u64) -> u64 {
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
pub const SCHEMA_VERSION: u32 = 3;

pub(crate) const META_SCHEMA: &[u8] = b"schema_version";
pub const META_CHECK: &[u8] = b"keyring_check";
/// The HMAC key of the audit records written before schema 3, sealed.
pub const META_AUDIT_KEY: &[u8] = b"audit_mac_key";
/// The record secret (see `auth`), sealed.
pub const META_RECORD_SECRET: &[u8] = b"record_secret";
/// The audit signing key's Ed25519 seed, sealed.
pub const META_SIGNING_KEY: &[u8] = b"audit_signing_key";
/// The audit signing key's public key (32 bytes; informative only: trust
/// comes from the sealed seed or from the operator).
pub const META_PUBLIC_KEY: &[u8] = b"audit_public_key";
/// Present while the upgrade to schema 3 is under way (its step 1 done).
pub const META_UPGRADING: &[u8] = b"upgrade_to_3";
pub(crate) const META_AUDIT_HEAD: &[u8] = b"audit_head";
/// The number of stored keys (u64, big-endian), kept by every commit that
/// adds or removes a key, so that counting never walks the store. A store
/// without it (made by an older keyhold, or restored from a backup) gets it
/// counted once when opened.
pub(crate) const META_KEY_COUNT: &[u8] = b"key_count";

/// Errors from the store. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the data directory {0} is not initialised: run `keyhold init --data-dir {0}` first")]
    NotInitialised(String),
    #[error("the data directory {0} is already initialised; nothing was changed")]
    AlreadyInitialised(String),
    #[error(
        "cannot open the store in {path}: {error}. If `keyhold serve` (or another keyhold command) \
         is running on it, stop it or use the HTTP API instead"
    )]
    Open { path: String, error: sled::Error },
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
        "the stored {what} record {id} failed its integrity check: it was written or changed \
         outside keyhold and is refused. Run `keyhold check`, and restore from a backup if needed"
    )]
    Tampered { what: &'static str, id: String },
    #[error(
        "the store's record keys are not unlocked (a keyhold bug: the keyring was not applied)"
    )]
    Locked,
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Sled(e)
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// One change that is committed together with its audit record.
#[derive(Debug, Clone)]
pub enum Write {
    /// Insert a new key (and its provider index entry).
    PutKey(KeyRecord),
    /// Remove a key, its usage and its provider index entry.
    DeleteKey(KeyRecord),
    /// Set a key's last_used.
    TouchKey { id: Uuid, at_us: i64 },
    /// Insert or replace an access token record under its storage key
    /// (the keyed digest: [`Store::token_key`]).
    PutToken { hash: [u8; 32], record: TokenRecord },
    /// Set (or, with `None`, remove) a meta value.
    Meta {
        name: &'static [u8],
        value: Option<Vec<u8>>,
    },
}

/// The open store: one sled database and its trees.
/// The open database and its trees.
struct Trees {
    db: Db,
    /// sled's data file, opened again by keyhold to fsync it: sled's own
    /// flush ends in `sync_file_range` on Linux, which writes the pages but
    /// neither the file's metadata nor the disk's write cache.
    data_file: Option<std::fs::File>,
    keys: Tree,
    key_usage: Tree,
    by_provider: Tree,
    audit: Tree,
    tokens: Tree,
    meta: Tree,
}

impl Trees {
    fn of(db: Db, data_file: Option<std::fs::File>) -> Result<Trees> {
        Ok(Trees {
            data_file,
            keys: db.open_tree("keys")?,
            key_usage: db.open_tree("key_usage")?,
            by_provider: db.open_tree("by_provider")?,
            audit: db.open_tree("audit")?,
            tokens: db.open_tree("tokens")?,
            meta: db.open_tree("meta")?,
            db,
        })
    }
}

/// Where a store lives, so it can be opened again.
#[derive(Clone)]
enum Origin {
    Dir {
        path: std::path::PathBuf,
        cache: u64,
    },
    Temporary,
}

/// The open store: one sled database and its trees. Clones share it, and
/// [`Store::reopen`] replaces it for all of them (sled's IO errors are
/// sticky until the database is opened again).
#[derive(Clone)]
pub struct Store {
    current: Arc<RwLock<Option<Arc<Trees>>>>,
    origin: Origin,
    /// The record keys, once the keyring unsealed them.
    keys: Arc<RwLock<Option<Arc<RecordKeys>>>>,
    /// The schema read at open (raised by the upgrade).
    schema: Arc<AtomicU32>,
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
        let origin = Origin::Dir {
            path: dir.to_path_buf(),
            cache: cache_bytes,
        };
        Self::of_trees(Self::open_trees(&origin)?, origin)
    }

    fn of_trees(trees: Trees, origin: Origin) -> Result<Store> {
        let schema = match trees.meta.get(META_SCHEMA)? {
            Some(v) => postcard::from_bytes::<u32>(&v).map_err(corrupt("schema version"))?,
            None => SCHEMA_VERSION,
        };
        Ok(Store {
            current: Arc::new(RwLock::new(Some(Arc::new(trees)))),
            origin,
            keys: Arc::new(RwLock::new(None)),
            schema: Arc::new(AtomicU32::new(schema)),
        })
    }

    fn open_trees(origin: &Origin) -> Result<Trees> {
        let db = match origin {
            Origin::Dir { path, cache } => open_sled(path, *cache)?,
            Origin::Temporary => sled::Config::new().temporary(true).open()?,
        };
        let data_file = match origin {
            Origin::Dir { path, .. } => Some(std::fs::File::open(path.join("db")).map_err(
                |error| StoreError::Io {
                    what: "open the store's data file to fsync it",
                    error,
                },
            )?),
            Origin::Temporary => None,
        };
        let trees = Trees::of(db, data_file)?;
        if trees.meta.contains_key(META_SCHEMA)? && !trees.meta.contains_key(META_KEY_COUNT)? {
            // Nothing else can write yet: the store is not shared until
            // this returns, and sled locks the directory to one process.
            let n = trees.by_provider.len() as u64;
            trees.meta.insert(META_KEY_COUNT, &n.to_be_bytes())?;
        }
        let schema_1 = postcard::to_stdvec(&1u32).map_err(corrupt("schema version"))?;
        if trees.meta.get(META_SCHEMA)?.as_deref() == Some(schema_1.as_slice()) {
            // Schema 2 reads every schema-1 audit entry as it is; the mark
            // keeps an older keyhold from misreading the chunks to come.
            // Marked 2, not the newest: the upgrade to 3 needs the keyring
            // (`crate::unlock`) and runs when a command opens the store.
            let schema = postcard::to_stdvec(&2u32).map_err(corrupt("schema version"))?;
            trees.meta.insert(META_SCHEMA, schema)?;
        }
        Ok(trees)
    }

    /// Closes this handle. When it was the last handle on a store on disk,
    /// returns once sled has let go of the directory (see
    /// [`wait_until_released`]), so that it can be opened again at once,
    /// by this process or another.
    pub fn close(self) -> Result<()> {
        let last = Arc::strong_count(&self.current) == 1;
        let path = match &self.origin {
            Origin::Dir { path, .. } if last => Some(path.clone()),
            _ => None,
        };
        drop(self);
        match path {
            Some(p) => wait_until_released(&p),
            None => Ok(()),
        }
    }

    /// A temporary store that lives in memory and is gone at exit.
    pub fn temporary() -> Result<Store> {
        Self::of_trees(Self::open_trees(&Origin::Temporary)?, Origin::Temporary)
    }

    /// Applies the record keys (unsealed from meta by the keyring): from
    /// now on records are written authenticated and read only if authentic.
    pub fn set_record_keys(&self, keys: RecordKeys) {
        let mut guard = match self.keys.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *guard = Some(Arc::new(keys));
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
        match self.read_keys()? {
            None => KeyRecord::decode_checked(id, bytes, Auth::Legacy),
            Some(_) if self.schema() < 3 && KeyRecord::is_legacy(bytes) => {
                KeyRecord::decode_checked(id, bytes, Auth::Legacy)
            }
            Some(k) => KeyRecord::decode_checked(id, bytes, Auth::Keys(&k)),
        }
    }

    fn decode_token(&self, at: &[u8; 32], bytes: &[u8]) -> Result<TokenRecord> {
        match self.read_keys()? {
            None => TokenRecord::decode_checked(at, bytes, Auth::Legacy),
            Some(k) => TokenRecord::decode_checked(at, bytes, Auth::Keys(&k)),
        }
    }

    /// Where the record of the token whose SHA-256 is `sha` is stored: its
    /// keyed digest (or, before the upgrade, the SHA-256 itself).
    pub fn token_key(&self, sha: &[u8; 32]) -> Result<[u8; 32]> {
        Ok(match self.read_keys()? {
            Some(k) => k.token_key(sha),
            None => *sha,
        })
    }

    fn t(&self) -> Result<Arc<Trees>> {
        let guard = match self.current.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        guard.clone().ok_or(StoreError::Unavailable)
    }

    /// Opens the database again (after a disk error, which sled keeps
    /// returning until then). Waits up to `wait` for operations in flight
    /// to let go of the old one. A temporary store cannot be reopened.
    pub fn reopen(&self, wait: std::time::Duration) -> Result<()> {
        if matches!(self.origin, Origin::Temporary) {
            return Ok(());
        }
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(old) = guard.take() {
            let deadline = std::time::Instant::now() + wait;
            while Arc::strong_count(&old) > 1 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            if Arc::strong_count(&old) > 1 {
                *guard = Some(old);
                return Err(StoreError::Unavailable);
            }
            drop(old);
            if let Origin::Dir { path, .. } = &self.origin {
                wait_until_released(path)?;
            }
        }
        *guard = Some(Arc::new(Self::open_trees(&self.origin)?));
        Ok(())
    }

    /// A tree by name (for backup and restore).
    pub fn tree(&self, name: &str) -> Result<Tree> {
        Ok(self.t()?.db.open_tree(name)?)
    }

    /// True when `init` has run on this store.
    pub fn is_initialised(&self) -> Result<bool> {
        Ok(self.t()?.meta.contains_key(META_SCHEMA)?)
    }

    /// The stored schema version, refusing a newer one.
    pub fn check_schema(&self) -> Result<()> {
        match self.t()?.meta.get(META_SCHEMA)? {
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
    /// sealed secrets and the audit public key) in one durable transaction.
    pub fn initialise(&self, check_token: &str, meta: &[(&'static [u8], Vec<u8>)]) -> Result<()> {
        let schema = postcard::to_stdvec(&SCHEMA_VERSION).map_err(corrupt("schema version"))?;
        let res: std::result::Result<(), TransactionError<()>> = self.t()?.meta.transaction(|m| {
            if m.get(META_SCHEMA)?.is_some() {
                return Err(ConflictableTransactionError::Abort(()));
            }
            m.insert(META_SCHEMA, schema.as_slice())?;
            m.insert(META_CHECK, check_token.as_bytes())?;
            for (name, value) in meta {
                m.insert(*name, value.as_slice())?;
            }
            m.insert(META_KEY_COUNT, &0u64.to_be_bytes())?;
            Ok(())
        });
        match res {
            Ok(()) => {}
            Err(TransactionError::Abort(())) => {
                return Err(StoreError::AlreadyInitialised(String::from("(this store)")))
            }
            Err(TransactionError::Storage(e)) => return Err(e.into()),
        }
        self.flush()
    }

    /// The keyring check value (a Fernet token of a fixed plaintext).
    pub fn check_value(&self) -> Result<Option<String>> {
        self.meta_string(META_CHECK)
    }

    /// The audit MAC key, as a Fernet token.
    pub fn audit_key_token(&self) -> Result<Option<String>> {
        self.meta_string(META_AUDIT_KEY)
    }

    /// A meta value as text (sealed values are Fernet tokens).
    pub fn meta_string(&self, name: &[u8]) -> Result<Option<String>> {
        match self.t()?.meta.get(name)? {
            None => Ok(None),
            Some(v) => String::from_utf8(v.to_vec())
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    what: "meta",
                    detail: e.to_string(),
                }),
        }
    }

    /// Makes everything written so far durable: sled writes out its
    /// buffers, then keyhold fsyncs the data file (file data, metadata and
    /// the disk's write cache).
    pub fn flush(&self) -> Result<()> {
        let t = self.t()?;
        t.db.flush()?;
        if let Some(f) = &t.data_file {
            f.sync_all().map_err(|error| StoreError::Io {
                what: "fsync the store",
                error,
            })?;
        }
        Ok(())
    }

    /// [`flush`](Self::flush) off the async runtime's threads.
    pub async fn flush_async(&self) -> Result<()> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(|_| StoreError::Unavailable)?
    }

    // ---- keys ----

    /// One key by id.
    pub fn get_key(&self, id: &Uuid) -> Result<Option<KeyRecord>> {
        match self.t()?.keys.get(id.as_bytes())? {
            None => Ok(None),
            Some(v) => Ok(Some(self.decode_key(*id, &v)?)),
        }
    }

    /// One key by id with its stored bytes (for compare-and-swap).
    pub fn get_key_raw(&self, id: &Uuid) -> Result<Option<(KeyRecord, sled::IVec)>> {
        match self.t()?.keys.get(id.as_bytes())? {
            None => Ok(None),
            Some(v) => Ok(Some((self.decode_key(*id, &v)?, v))),
        }
    }

    /// A raw meta value.
    pub fn meta_value(&self, name: &[u8]) -> Result<Option<sled::IVec>> {
        Ok(self.t()?.meta.get(name)?)
    }

    /// A key's last_used, if it was ever revealed.
    pub fn last_used(&self, id: &Uuid) -> Result<Option<i64>> {
        match self.t()?.key_usage.get(id.as_bytes())? {
            None => Ok(None),
            Some(v) => Ok(Some(decode_i64(&v)?)),
        }
    }

    /// Keys, oldest first, optionally for one provider.
    pub fn list_keys(&self, provider: Option<&str>) -> Result<Vec<KeyRecord>> {
        let mut out = Vec::new();
        match provider {
            Some(p) => {
                for item in self.t()?.by_provider.scan_prefix(provider_prefix(p)) {
                    let (k, _) = item?;
                    if let Some(id) = id_from_index(&k) {
                        if let Some(rec) = self.get_key(&id)? {
                            out.push(rec);
                        }
                    }
                }
            }
            None => {
                for item in self.t()?.keys.iter() {
                    let (k, v) = item?;
                    let id = Uuid::from_slice(&k).map_err(corrupt("key id"))?;
                    out.push(self.decode_key(id, &v)?);
                }
                out.sort_by_key(|k| (k.created_at_us, k.id));
            }
        }
        Ok(out)
    }

    /// Keys of a provider, newest first, lazily (for "newest live key").
    pub fn provider_keys_newest_first(
        &self,
        provider: &str,
    ) -> impl Iterator<Item = Result<KeyRecord>> + '_ {
        let prefix = provider_prefix(provider);
        let (iter, err) = split(self.t().map(|t| t.by_provider.scan_prefix(prefix).rev()));
        err.into_iter().chain(
            iter.into_iter()
                .flatten()
                .filter_map(move |item| match item {
                    Err(e) => Some(Err(e.into())),
                    Ok((k, _)) => {
                        let id = id_from_index(&k)?;
                        self.get_key(&id).transpose()
                    }
                }),
        )
    }

    /// The number of stored keys, from the count kept in the meta tree.
    /// Only if that is unreadable are the keys walked (on the provider
    /// index, one small entry a key): a walk pulls every node it visits
    /// into sled's cache, and walking 100,000 keys at start-up left ~40 MiB
    /// resident for the life of the server.
    pub fn key_count(&self) -> usize {
        let Ok(t) = self.t() else { return 0 };
        match t
            .meta
            .get(META_KEY_COUNT)
            .ok()
            .flatten()
            .as_deref()
            .and_then(decode_count)
        {
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => t.by_provider.len(),
        }
    }

    /// Every key with its stored bytes (for compare-and-swap), in id order.
    pub fn iter_keys(&self) -> impl Iterator<Item = Result<(KeyRecord, sled::IVec)>> + '_ {
        let (iter, err) = split(self.t().map(|t| t.keys.iter()));
        err.into_iter()
            .chain(iter.into_iter().flatten().map(|item| {
                let (k, v) = item?;
                let id = Uuid::from_slice(&k).map_err(corrupt("key id"))?;
                Ok((self.decode_key(id, &v)?, v))
            }))
    }

    /// Replaces a key record only if it still holds `current` (atomic; a
    /// crash leaves either the old or the new record). `false` when the
    /// record changed or is gone meanwhile.
    pub fn swap_key(&self, current: &[u8], new: &KeyRecord) -> Result<bool> {
        let keys = self.write_keys()?;
        let value = new.encode(&keys)?;
        let res = self
            .t()?
            .keys
            .compare_and_swap(new.id.as_bytes(), Some(current), Some(value))?;
        Ok(res.is_ok())
    }

    // ---- the upgrade to schema 3 (see `crate::upgrade`) ----

    /// Step 1 of the upgrade, in one transaction: writes the new meta
    /// values (sealed secrets, check value, the in-progress mark) and moves
    /// every pre-schema-3 token record to its keyed digest, authenticated.
    /// The record keys must be applied first.
    pub fn upgrade_meta_and_tokens(&self, meta: &[(&'static [u8], Vec<u8>)]) -> Result<u64> {
        let keys = self.write_keys()?;
        let t = self.t()?;
        let mut moves: Vec<([u8; 32], [u8; 32], Vec<u8>)> = Vec::new();
        for item in t.tokens.iter() {
            let (k, v) = item?;
            if !TokenRecord::is_legacy(&v) {
                continue;
            }
            let sha: [u8; 32] = k.as_ref().try_into().map_err(corrupt("token hash"))?;
            let rec = TokenRecord::decode_checked(&sha, &v, Auth::Legacy)?;
            let at = keys.token_key(&sha);
            moves.push((sha, at, rec.encode(&at, &keys)?));
        }
        let res: std::result::Result<(), TransactionError<()>> =
            (&t.meta, &t.tokens).transaction(|(m, tokens)| {
                for (name, value) in meta {
                    m.insert(*name, value.as_slice())?;
                }
                m.insert(META_UPGRADING, &[1u8])?;
                for (sha, at, value) in &moves {
                    tokens.remove(sha)?;
                    tokens.insert(at, value.as_slice())?;
                }
                Ok(())
            });
        match res {
            Ok(()) => {}
            Err(TransactionError::Abort(())) => {}
            Err(TransactionError::Storage(e)) => return Err(e.into()),
        }
        self.flush()?;
        Ok(moves.len() as u64)
    }

    /// Step 2 of the upgrade: authenticates every pre-schema-3 key record
    /// in place (compare-and-swap each; running it again finishes the job).
    pub fn upgrade_keys(&self) -> Result<u64> {
        let keys = self.write_keys()?;
        let t = self.t()?;
        let mut n = 0;
        for item in t.keys.iter() {
            let (k, v) = item?;
            if !KeyRecord::is_legacy(&v) {
                continue;
            }
            let id = Uuid::from_slice(&k).map_err(corrupt("key id"))?;
            let rec = KeyRecord::decode_checked(id, &v, Auth::Legacy)?;
            let _ = t
                .keys
                .compare_and_swap(&k, Some(&v), Some(rec.encode(&keys)?))?;
            n += 1;
        }
        self.flush()?;
        Ok(n)
    }

    /// Replaces a meta value only if it still holds `current`.
    pub fn swap_meta(&self, name: &[u8], current: &[u8], new: &[u8]) -> Result<bool> {
        let res = self
            .t()?
            .meta
            .compare_and_swap(name, Some(current), Some(new))?;
        Ok(res.is_ok())
    }

    // ---- tokens ----

    /// A token record by the SHA-256 of the token, with its storage key.
    pub fn get_token(&self, sha: &[u8; 32]) -> Result<Option<([u8; 32], TokenRecord)>> {
        let at = self.token_key(sha)?;
        match self.t()?.tokens.get(at)? {
            None => Ok(None),
            Some(v) => Ok(Some((at, self.decode_token(&at, &v)?))),
        }
    }

    /// Every token record with its storage key. A record that fails its
    /// integrity check fails the whole listing.
    pub fn list_tokens(&self) -> Result<Vec<([u8; 32], TokenRecord)>> {
        let mut out = Vec::new();
        for item in self.t()?.tokens.iter() {
            let (k, v) = item?;
            let hash: [u8; 32] = k.as_ref().try_into().map_err(corrupt("token hash"))?;
            out.push((hash, self.decode_token(&hash, &v)?));
        }
        out.sort_by_key(|(_, r)| r.created_at_us);
        Ok(out)
    }

    // ---- the commit used by the audit writer ----

    /// Applies `writes` and audit `records` (already chained and encoded,
    /// ascending seqs) plus the new chain head in one transaction across
    /// every tree. Not durable until [`Store::flush`]. The records go into
    /// the audit tree's newest chunk while it has room (`audit_chunks`):
    /// callers serialise their commits (the audit log's lock), so the tail
    /// read here is still the tail inside the transaction.
    pub(crate) fn commit(
        &self,
        records: &[(u64, Vec<u8>)],
        head: &[u8],
        writes: &[Write],
    ) -> Result<()> {
        let keys = if writes
            .iter()
            .any(|w| matches!(w, Write::PutKey(_) | Write::PutToken { .. }))
        {
            Some(self.write_keys()?)
        } else {
            None
        };
        let encoded: Vec<EncodedWrite> = writes
            .iter()
            .map(|w| EncodedWrite::from_write(w, keys.as_deref()))
            .collect::<Result<_>>()?;
        let t = self.t()?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.commit_once(&t, records, head, &encoded) {
                Err(CommitAbort::TailMoved) if attempts < 3 => continue,
                Err(CommitAbort::TailMoved) => {
                    return Err(StoreError::Corrupt {
                        what: "audit log",
                        detail: "its newest entry kept changing under the writer".into(),
                    })
                }
                Err(CommitAbort::Occupied(seq)) => {
                    return Err(StoreError::Corrupt {
                        what: "audit log",
                        detail: format!(
                            "an entry at seq {seq} already exists where new records were to go \
                             (records were added outside keyhold; nothing was overwritten). \
                             Run `keyhold audit verify`"
                        ),
                    })
                }
                Err(CommitAbort::Store(e)) => return Err(e),
                Ok(()) => return Ok(()),
            }
        }
    }

    /// One attempt of [`Store::commit`]. The tail entry is read before the
    /// transaction and checked again inside it, and a new entry never
    /// replaces one that exists: an append can only extend the newest
    /// entry it read, or add entries after it.
    fn commit_once(
        &self,
        t: &Trees,
        records: &[(u64, Vec<u8>)],
        head: &[u8],
        encoded: &[EncodedWrite],
    ) -> std::result::Result<(), CommitAbort> {
        let last = t.audit.last().map_err(|e| CommitAbort::Store(e.into()))?;
        // A tail whose key is not a seq is never extended (so never
        // rewritten): new entries all have 8-byte keys.
        let tail = last
            .as_ref()
            .and_then(|(k, v)| Some((decode_seq(k).ok()?, v)));
        let chunks: Vec<([u8; 8], Vec<u8>)> = audit_chunks::plan_append(tail, records)
            .into_iter()
            .map(|(key, value)| (key.to_be_bytes(), value))
            .collect();
        let trees = (
            &t.audit,
            &t.meta,
            &t.keys,
            &t.key_usage,
            &t.by_provider,
            &t.tokens,
        );
        let res: std::result::Result<(), TransactionError<CommitAbort>> =
            trees.transaction(|(audit, meta, keys, usage, by_provider, tokens)| {
                for (key, value) in &chunks {
                    let now = audit.get(key)?;
                    // The one entry a commit may rewrite: the tail it read,
                    // extended (its bytes stay a prefix of the new value).
                    let extended = tail
                        .filter(|(seq, read)| seq.to_be_bytes() == *key && value.starts_with(read));
                    if let Some((_, read)) = extended {
                        if now.as_ref() != Some(read) {
                            return Err(ConflictableTransactionError::Abort(
                                CommitAbort::TailMoved,
                            ));
                        }
                    } else if now.is_some() {
                        return Err(ConflictableTransactionError::Abort(CommitAbort::Occupied(
                            u64::from_be_bytes(*key),
                        )));
                    }
                    audit.insert(key, value.as_slice())?;
                }
                meta.insert(META_AUDIT_HEAD, head)?;
                let mut added: i64 = 0;
                for w in encoded {
                    added += w.apply(keys, usage, by_provider, tokens, meta)?;
                }
                if added != 0 {
                    if let Some(n) = meta.get(META_KEY_COUNT)?.as_deref().and_then(decode_count) {
                        let n = n.saturating_add_signed(added);
                        meta.insert(META_KEY_COUNT, &n.to_be_bytes())?;
                    }
                }
                Ok(())
            });
        match res {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(a)) => Err(a),
            Err(TransactionError::Storage(e)) => Err(CommitAbort::Store(e.into())),
        }
    }

    /// The stored chain head, if any record was ever written.
    pub(crate) fn audit_head_bytes(&self) -> Result<Option<sled::IVec>> {
        Ok(self.t()?.meta.get(META_AUDIT_HEAD)?)
    }

    /// The newest audit record's seq and bytes.
    pub(crate) fn last_audit(&self) -> Result<Option<(u64, IVec)>> {
        for item in self.t()?.audit.iter().rev() {
            let (k, v) = item?;
            if let Some(last) = audit_chunks::Entries::new(decode_seq(&k)?, v).last() {
                return Ok(Some(last));
            }
        }
        Ok(None)
    }

    /// Audit records from `from_seq` on, oldest first, lazily, each with
    /// the seq it is stored under. Records appended while the walk runs
    /// are included up to where it ends (see [`audit_chunks::Walk`]).
    pub fn audit_iter(&self, from_seq: u64) -> impl Iterator<Item = Result<(u64, IVec)>> + '_ {
        let from = from_seq.to_be_bytes();
        let (walk, err) = split(self.t().and_then(|t| {
            // The entry holding `from_seq` starts at or before it.
            let start = match t.audit.range(..=from).next_back() {
                Some(item) => item?.0.to_vec(),
                None => from.to_vec(),
            };
            Ok(audit_chunks::Walk::new(t.audit.clone(), start))
        }));
        err.into_iter()
            .chain(walk.into_iter().flatten())
            .skip_while(move |item| item.as_ref().is_ok_and(|(seq, _)| *seq < from_seq))
    }

    /// The newest audit seq (0 when the log is empty); cheap, unlike a
    /// count of the tree.
    pub fn audit_last_seq(&self) -> Result<u64> {
        Ok(self.last_audit()?.map_or(0, |(s, _)| s))
    }
}

/// How long opening waits for sled's lock on the data directory, in case
/// whoever holds it is about to let go. A lock still held after this
/// belongs to another process, such as a running `serve`.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long [`wait_until_released`] waits for a store this process closed.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits until nothing holds sled's lock on the store in `dir`: call it
/// after dropping this process's last handle on a store, before opening it
/// again or moving it. sled lets go of its lock (a `flock` on `dir/db`)
/// only when the last of its background threads drops the database, which
/// can be well after the handle was dropped on a loaded machine. Gives up
/// after [`RELEASE_WAIT`] and leaves the error to the open that follows.
pub fn wait_until_released(dir: &Path) -> Result<()> {
    let file = match std::fs::File::open(dir.join("db")) {
        Ok(f) => f,
        // Nothing to wait for: opening will say what is wrong.
        Err(_) => return Ok(()),
    };
    let deadline = std::time::Instant::now() + RELEASE_WAIT;
    loop {
        match file.try_lock() {
            // Closing `file` lets go of the probe's own lock.
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Ok(()),
            Err(std::fs::TryLockError::Error(error)) => {
                return Err(StoreError::Io {
                    what: "wait for the store's lock",
                    error,
                })
            }
        }
    }
}

fn open_sled(path: &Path, cache: u64) -> Result<Db> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let res = sled::Config::new()
            .path(path)
            .cache_capacity(cache)
            .mode(sled::Mode::HighThroughput)
            .open();
        match res {
            // sled =0.34.7 reports a held lock only by this message.
            Err(sled::Error::Io(e))
                if e.to_string().starts_with("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            res => {
                return res.map_err(|error| StoreError::Open {
                    path: path.display().to_string(),
                    error,
                })
            }
        }
    }
}

/// An iterator, or the error that kept it from being made (as the first
/// and only item).
fn split<I, T>(r: Result<I>) -> (Option<I>, Option<Result<T>>) {
    match r {
        Ok(i) => (Some(i), None),
        Err(e) => (None, Some(Err(e))),
    }
}

/// Why one attempt of [`Store::commit`] did not apply.
enum CommitAbort {
    /// The newest audit entry changed between reading it and the
    /// transaction (only a second writer could do that): plan again.
    TailMoved,
    /// A new entry's key is taken: the log holds entries keyhold did not
    /// write there. Nothing is overwritten.
    Occupied(u64),
    Store(StoreError),
}

/// A write with its values already encoded, so the transaction closure
/// (which sled may run more than once) only inserts bytes.
enum EncodedWrite {
    PutKey {
        id: [u8; 16],
        value: Vec<u8>,
        index: Vec<u8>,
    },
    DeleteKey {
        id: [u8; 16],
        index: Vec<u8>,
    },
    TouchKey {
        id: [u8; 16],
        at: [u8; 8],
    },
    PutToken {
        hash: [u8; 32],
        value: Vec<u8>,
    },
    Meta {
        name: &'static [u8],
        value: Option<Vec<u8>>,
    },
}

impl EncodedWrite {
    fn from_write(w: &Write, keys: Option<&RecordKeys>) -> Result<EncodedWrite> {
        let keys = || keys.ok_or(StoreError::Locked);
        Ok(match w {
            Write::PutKey(rec) => EncodedWrite::PutKey {
                id: *rec.id.as_bytes(),
                value: rec.encode(keys()?)?,
                index: provider_index_key(rec),
            },
            Write::DeleteKey(rec) => EncodedWrite::DeleteKey {
                id: *rec.id.as_bytes(),
                index: provider_index_key(rec),
            },
            Write::TouchKey { id, at_us } => EncodedWrite::TouchKey {
                id: *id.as_bytes(),
                at: at_us.to_be_bytes(),
            },
            Write::PutToken { hash, record } => EncodedWrite::PutToken {
                hash: *hash,
                value: record.encode(hash, keys()?)?,
            },
            Write::Meta { name, value } => EncodedWrite::Meta {
                name,
                value: value.clone(),
            },
        })
    }

    fn apply(
        &self,
        keys: &TransactionalTree,
        usage: &TransactionalTree,
        by_provider: &TransactionalTree,
        tokens: &TransactionalTree,
        meta: &TransactionalTree,
    ) -> std::result::Result<i64, UnabortableTransactionError> {
        let mut added = 0;
        match self {
            EncodedWrite::PutKey { id, value, index } => {
                if keys.insert(id, value.as_slice())?.is_none() {
                    added = 1;
                    // A usage entry left by a reveal that raced the key's
                    // deletion must not show on a key imported again
                    // under the same id.
                    usage.remove(id)?;
                }
                by_provider.insert(index.as_slice(), &[])?;
            }
            EncodedWrite::DeleteKey { id, index } => {
                if keys.remove(id)?.is_some() {
                    added = -1;
                }
                usage.remove(id)?;
                by_provider.remove(index.as_slice())?;
            }
            EncodedWrite::TouchKey { id, at } => {
                // Not checked against `keys`: that read cost the single
                // audit writer a node load per reveal on a large store. A
                // reveal that races a deletion leaves a 24-byte entry that
                // nothing reads (usage is only read through a key).
                usage.insert(id, at)?;
            }
            EncodedWrite::PutToken { hash, value } => {
                tokens.insert(hash, value.as_slice())?;
            }
            EncodedWrite::Meta { name, value } => match value {
                Some(v) => {
                    meta.insert(*name, v.as_slice())?;
                }
                None => {
                    meta.remove(*name)?;
                }
            },
        }
        Ok(added)
    }
}

/// `provider 0x00 created_at(u64 BE, offset) id(16)`: sorted by time
/// within a provider, so the newest is the last.
fn provider_index_key(rec: &KeyRecord) -> Vec<u8> {
    let mut k = provider_prefix(&rec.provider);
    // Offset so negative times still sort correctly as unsigned bytes.
    let t = (rec.created_at_us as u64) ^ (1u64 << 63);
    k.extend_from_slice(&t.to_be_bytes());
    k.extend_from_slice(rec.id.as_bytes());
    k
}

fn provider_prefix(provider: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(provider.len() + 25);
    k.extend_from_slice(provider.as_bytes());
    k.push(0);
    k
}

fn id_from_index(k: &[u8]) -> Option<Uuid> {
    if k.len() < 16 {
        return None;
    }
    Uuid::from_slice(&k[k.len() - 16..]).ok()
}

fn decode_seq(k: &[u8]) -> Result<u64> {
    let b: [u8; 8] = k.try_into().map_err(corrupt("audit seq"))?;
    Ok(u64::from_be_bytes(b))
}

fn decode_count(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

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
mod tests {
    use super::*;

    /// A temporary store with record keys applied, as after `init`.
    fn temp() -> Store {
        keyed(Store::temporary().unwrap())
    }

    fn keyed(s: Store) -> Store {
        s.set_record_keys(RecordKeys::from_secret(&[5u8; 32]));
        s
    }

    fn key(provider: &str, at: i64) -> KeyRecord {
        KeyRecord {
            id: Uuid::new_v4(),
            provider: provider.into(),
            key_name: "k".into(),
            token: "gAAAA-not-a-real-token".into(),
            created_at_us: at,
            expires_at_us: None,
        }
    }

    #[test]
    fn newest_per_provider_is_by_created_at() {
        let s = temp();
        let a = key("claude", 10);
        let b = key("claude", 30);
        let c = key("claude", 20);
        let other = key("claudex", 40);
        s.commit(
            &[],
            b"head",
            &[
                Write::PutKey(a.clone()),
                Write::PutKey(b.clone()),
                Write::PutKey(c.clone()),
                Write::PutKey(other),
            ],
        )
        .unwrap();
        let ids: Vec<Uuid> = s
            .provider_keys_newest_first("claude")
            .map(|r| r.unwrap().id)
            .collect();
        assert_eq!(ids, vec![b.id, c.id, a.id]);
        assert_eq!(s.list_keys(Some("claude")).unwrap().len(), 3);
        s.commit(&[], b"head", &[Write::DeleteKey(b.clone())])
            .unwrap();
        assert!(s.get_key(&b.id).unwrap().is_none());
        assert_eq!(
            s.provider_keys_newest_first("claude")
                .next()
                .unwrap()
                .unwrap()
                .id,
            c.id
        );
    }

    fn audit_seqs(s: &Store, from: u64) -> Vec<(u64, Vec<u8>)> {
        s.audit_iter(from)
            .map(|r| r.map(|(seq, b)| (seq, b.to_vec())).unwrap())
            .collect()
    }

    #[test]
    fn audit_records_commit_in_chunks_and_read_back_from_any_seq() {
        let s = temp();
        // Schema-1 entries (one record each) from an older keyhold come first.
        let t = s.tree("audit").unwrap();
        for seq in 1..=3u64 {
            t.insert(seq.to_be_bytes(), vec![0, seq as u8]).unwrap();
        }
        let all: Vec<(u64, Vec<u8>)> = (1..=40u64).map(|q| (q, vec![0, q as u8, 7])).collect();
        let mut expected: Vec<(u64, Vec<u8>)> = (1..=3u64).map(|q| (q, vec![0, q as u8])).collect();
        // Commits of 1, 2, 5 and 29 records, as group commit makes them.
        let mut at = 3;
        for n in [1, 2, 5, 29] {
            s.commit(&all[at..at + n], b"h", &[]).unwrap();
            expected.extend_from_slice(&all[at..at + n]);
            at += n;
        }
        assert_eq!(audit_seqs(&s, 0), expected);
        assert_eq!(audit_seqs(&s, 13), expected[12..].to_vec());
        assert_eq!(audit_seqs(&s, 2), expected[1..].to_vec());
        assert!(audit_seqs(&s, 41).is_empty());
        let (last, bytes) = s.last_audit().unwrap().unwrap();
        assert_eq!((last, bytes.to_vec()), all[39].clone());
        // 37 records in 5 chunks (4..=11 filled across three commits, then
        // 12..=19, 20..=27, 28..=35, 36..=40), after the 3 old entries.
        assert_eq!(t.len(), 3 + 5);
    }

    /// Records `seqs`, each two bytes, as the audit writer hands them over.
    fn records(seqs: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
        seqs.map(|q| (q, vec![0, q as u8])).collect()
    }

    /// A store holding audit records 1..=3 in one entry.
    fn store_with_three_records() -> Store {
        let s = temp();
        s.commit(&records(1..=3), b"h", &[]).unwrap();
        s
    }

    #[test]
    fn a_walk_leaving_an_entry_as_the_writer_fills_it_skips_nothing() {
        let s = store_with_three_records();
        let mut walk = audit_chunks::Walk::new(s.tree("audit").unwrap(), vec![0; 8]);
        let writer = s.clone();
        let mut calls = 0;
        // After the walk read records 1..=3 and found no entry after
        // theirs, the writer fills that entry and starts the next one.
        walk.between = Some(Box::new(move || {
            calls += 1;
            if calls == 2 {
                writer.commit(&records(4..=12), b"h", &[]).unwrap();
            }
        }));
        let seen: Vec<u64> = walk.map(|r| r.unwrap().0).collect();
        assert_eq!(seen, (1..=12).collect::<Vec<_>>());
    }

    #[test]
    fn a_commit_never_writes_over_an_entry_it_did_not_write() {
        let s = temp();
        s.commit(&[(1, vec![0, 1])], b"h", &[]).unwrap();
        // Entries added outside keyhold: one where record 2 would go, and
        // a newer one that is not a chunk.
        let t = s.tree("audit").unwrap();
        t.insert(2u64.to_be_bytes(), vec![0, 42]).unwrap();
        t.insert(9u64.to_be_bytes(), vec![0, 9]).unwrap();
        let err = s.commit(&[(2, vec![0, 2])], b"h", &[]).unwrap_err();
        assert!(err.to_string().contains("seq 2 already exists"), "{err}");
        assert_eq!(t.get(2u64.to_be_bytes()).unwrap().unwrap(), vec![0, 42]);
        // Nor over the tail itself when it cannot be extended (here a
        // single record stored where the next record would go).
        let err = s.commit(&[(9, vec![0, 99])], b"h", &[]).unwrap_err();
        assert!(err.to_string().contains("seq 9 already exists"), "{err}");
        assert_eq!(t.get(9u64.to_be_bytes()).unwrap().unwrap(), vec![0, 9]);
    }

    #[test]
    fn a_walk_includes_records_appended_to_an_entry_it_already_read() {
        let s = store_with_three_records();
        let mut walk = s.audit_iter(0);
        let mut seen: Vec<u64> = (&mut walk).take(3).map(|r| r.unwrap().0).collect();
        // The writer fills the entry just read and starts the next one.
        s.commit(&records(4..=12), b"h", &[]).unwrap();
        seen.extend(walk.map(|r| r.unwrap().0));
        assert_eq!(seen, (1..=12).collect::<Vec<_>>());
    }

    #[test]
    fn a_store_this_process_closed_opens_again_and_a_held_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for seq in 1..=20u64 {
            let s = Store::open(dir.path()).unwrap();
            s.commit(&[(seq, vec![0, seq as u8])], b"h", &[]).unwrap();
            s.flush().unwrap();
            s.close().unwrap();
            // Closed means free, for this process or another.
            let db = std::fs::File::open(dir.path().join("db")).unwrap();
            assert!(db.try_lock().is_ok(), "still locked after close");
        }
        let held = Store::open(dir.path()).unwrap();
        assert_eq!(held.audit_last_seq().unwrap(), 20);
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err}");
        assert!(
            err.to_string().contains("stop it or use the HTTP API"),
            "{err}"
        );
    }

    #[test]
    fn waiting_for_release_returns_once_the_lock_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let held = Store::open(dir.path()).unwrap();
        let copy = held.clone();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            // Not the last handle: nothing to wait for yet.
            copy.close().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(100));
            drop(held);
        });
        wait_until_released(dir.path()).unwrap();
        // Free now, not merely at some point during the wait.
        let db = std::fs::File::open(dir.path().join("db")).unwrap();
        assert!(db.try_lock().is_ok(), "still locked after the wait");
        drop(db);
        closer.join().unwrap();
        Store::open(dir.path()).unwrap();
        // A directory with no store has nothing to wait for.
        wait_until_released(&dir.path().join("none")).unwrap();
    }

    #[test]
    fn a_reveal_racing_a_delete_leaves_no_last_used_on_a_key_made_again() {
        let s = temp();
        let k = key("claude", 1);
        s.commit(&[], b"h", &[Write::PutKey(k.clone())]).unwrap();
        s.commit(&[], b"h", &[Write::DeleteKey(k.clone())]).unwrap();
        // The reveal loaded the key before the delete; its record lands after.
        s.commit(&[], b"h", &[Write::TouchKey { id: k.id, at_us: 7 }])
            .unwrap();
        s.commit(&[], b"h", &[Write::PutKey(k.clone())]).unwrap();
        assert_eq!(s.last_used(&k.id).unwrap(), None);
        s.commit(&[], b"h", &[Write::TouchKey { id: k.id, at_us: 9 }])
            .unwrap();
        assert_eq!(s.last_used(&k.id).unwrap(), Some(9));
    }

    #[test]
    fn the_cache_is_sized_to_the_store() {
        assert_eq!(auto_cache_bytes(0), DEFAULT_CACHE_BYTES);
        assert_eq!(auto_cache_bytes(100_000), DEFAULT_CACHE_BYTES);
        assert_eq!(auto_cache_bytes(1_000_000), 64_000_000);
        assert_eq!(auto_cache_bytes(u64::MAX), MAX_AUTO_CACHE_BYTES);
        let dir = tempfile::tempdir().unwrap();
        let (s, bytes) = Store::open_auto_cache(dir.path()).unwrap();
        let s = keyed(s);
        assert_eq!(bytes, DEFAULT_CACHE_BYTES);
        s.initialise("check", &[]).unwrap();
        let keys: Vec<Write> = (0..10).map(|i| Write::PutKey(key("p", i))).collect();
        s.commit(&[], b"h", &keys).unwrap();
        s.flush().unwrap();
        s.close().unwrap();
        // A store that needs more than the default is opened again with it
        // (1 MiB a key here, so that 10 keys are enough to need more).
        let (s, bytes) = Store::open_cache_sized_by(dir.path(), |n| n << 20).unwrap();
        let s = keyed(s);
        assert_eq!((bytes, s.key_count()), (10 << 20, 10));
        assert!(s
            .get_key(&s.list_keys(None).unwrap()[0].id)
            .unwrap()
            .is_some());
    }

    fn stored_count(s: &Store) -> Option<u64> {
        s.t()
            .unwrap()
            .meta
            .get(META_KEY_COUNT)
            .unwrap()
            .as_deref()
            .and_then(decode_count)
    }

    #[test]
    fn key_count_is_kept_by_commits_and_counted_once_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let s = keyed(Store::open(dir.path()).unwrap());
        s.initialise("check", &[]).unwrap();
        assert_eq!(stored_count(&s), Some(0));
        let (a, b) = (key("claude", 1), key("gemini", 2));
        s.commit(
            &[],
            b"h",
            &[Write::PutKey(a.clone()), Write::PutKey(b.clone())],
        )
        .unwrap();
        // Writing a key again (an idempotent import) is not a new key.
        s.commit(&[], b"h", &[Write::PutKey(a.clone())]).unwrap();
        assert_eq!(s.key_count(), 2);
        s.commit(&[], b"h", &[Write::DeleteKey(a.clone())]).unwrap();
        // Deleting a key that is gone changes nothing.
        s.commit(&[], b"h", &[Write::DeleteKey(a.clone())]).unwrap();
        assert_eq!((s.key_count(), stored_count(&s)), (1, Some(1)));

        // A store from before the count (or restored): counted at open.
        s.t().unwrap().meta.remove(META_KEY_COUNT).unwrap();
        s.flush().unwrap();
        s.close().unwrap();
        let s = keyed(Store::open(dir.path()).unwrap());
        assert_eq!(stored_count(&s), Some(1));
        s.commit(&[], b"h", &[Write::PutKey(key("claude", 3))])
            .unwrap();
        assert_eq!(s.key_count(), 2);

        // An unreadable count is not trusted: the keys are walked.
        s.t()
            .unwrap()
            .meta
            .insert(META_KEY_COUNT, b"bad".as_slice())
            .unwrap();
        assert_eq!(s.key_count(), 2);
    }
}

#[cfg(test)]
mod auth_tests {
    use super::*;

    fn key(provider: &str) -> KeyRecord {
        KeyRecord {
            id: Uuid::new_v4(),
            provider: provider.into(),
            key_name: "k".into(),
            token: "gAAAA-not-a-real-token".into(),
            created_at_us: 1,
            expires_at_us: None,
        }
    }

    #[test]
    fn swapped_key_ciphertexts_and_planted_records_are_refused_as_tampered() {
        let s = Store::temporary().unwrap();
        s.set_record_keys(RecordKeys::from_secret(&[1u8; 32]));
        let (mut a, mut b) = (key("claude"), key("gemini"));
        a.token = "token-a".into();
        b.token = "token-b".into();
        s.commit(
            &[],
            b"h",
            &[Write::PutKey(a.clone()), Write::PutKey(b.clone())],
        )
        .unwrap();
        assert_eq!(s.get_key(&a.id).unwrap().unwrap().token, "token-a");
        // Swap the stored values of a and b, as an editor of the files can.
        let t = s.t().unwrap();
        let va = t.keys.get(a.id.as_bytes()).unwrap().unwrap();
        let vb = t.keys.get(b.id.as_bytes()).unwrap().unwrap();
        t.keys.insert(a.id.as_bytes(), vb).unwrap();
        t.keys.insert(b.id.as_bytes(), va).unwrap();
        for id in [a.id, b.id] {
            let err = s.get_key(&id).unwrap_err();
            assert!(
                matches!(err, StoreError::Tampered { what: "key", .. }),
                "{err}"
            );
        }
        // A record made with another secret (or none) is refused too.
        let other = RecordKeys::from_secret(&[2u8; 32]);
        let c = key("claude");
        t.keys
            .insert(c.id.as_bytes(), c.encode(&other).unwrap())
            .unwrap();
        assert!(matches!(s.get_key(&c.id), Err(StoreError::Tampered { .. })));
    }

    #[test]
    fn a_token_record_is_found_only_under_its_keyed_digest_and_only_if_authentic() {
        let s = Store::temporary().unwrap();
        s.set_record_keys(RecordKeys::from_secret(&[3u8; 32]));
        let sha = [9u8; 32];
        let at = s.token_key(&sha).unwrap();
        assert_ne!(at, sha);
        let rec = TokenRecord {
            id: Uuid::new_v4(),
            name: "reader".into(),
            role: "reader".into(),
            scopes: vec![crate::access::Scope::KeysReveal],
            providers: None,
            created_at_us: 1,
            revoked_at_us: None,
        };
        s.commit(
            &[],
            b"h",
            &[Write::PutToken {
                hash: at,
                record: rec.clone(),
            }],
        )
        .unwrap();
        assert_eq!(s.get_token(&sha).unwrap().unwrap().1, rec);
        // The same authentic value moved under another token's key, or
        // with its scopes raised, is refused.
        let t = s.t().unwrap();
        let v = t.tokens.get(at).unwrap().unwrap();
        let other = s.token_key(&[8u8; 32]).unwrap();
        t.tokens.insert(other, v).unwrap();
        assert!(matches!(
            s.get_token(&[8u8; 32]),
            Err(StoreError::Tampered { .. })
        ));
        let mut raised = rec.clone();
        raised.scopes = crate::access::Scope::ALL.to_vec();
        let body = postcard::to_stdvec(&raised).unwrap();
        let mut forged = vec![1u8]; // StoredToken::V2
        forged.extend_from_slice(&body);
        forged.extend_from_slice(&[0u8; 32]);
        t.tokens.insert(at, forged).unwrap();
        assert!(matches!(
            s.get_token(&sha),
            Err(StoreError::Tampered { .. })
        ));
    }
}
