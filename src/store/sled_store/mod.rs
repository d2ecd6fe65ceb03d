//! The embedded backend: sled (`=0.34.7`), one database in the data
//! directory, one tree per table of the seam (`backend.rs`).
//!
//! sled's facts that shape this file: writes are durable only after a
//! flush, and its flush ends in `sync_file_range` (so keyhold fsyncs the
//! data file itself); its IO errors are sticky until the database is
//! opened again ([`SledStore::reopen`]); one process holds its lock, which
//! it lets go of only when its last background thread drops the database
//! ([`wait_until_released`]). The audit tree packs several records to an
//! entry (`audit_chunks`); the cross-tree commit is in `commit.rs`.
//!
//! Over 500 lines: one concept (the sled backend's implementation of the
//! seam), most of it the trait's methods, one short function each.

pub(crate) mod audit_chunks;
mod commit;
mod rewrite;

pub use rewrite::holds_store;

pub use rewrite::sled_dir;

pub(crate) use commit::{decode_count, entry_of_index, provider_index_key, provider_prefix};

/// An audit entry's key as its first seq.
pub(crate) fn commit_decode_seq(k: &[u8]) -> Result<u64> {
    commit::decode_seq(k)
}

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Db, Transactional, Tree};
use uuid::Uuid;

use super::backend::{Backend, Bytes, Items, Op};
use super::{corrupt, Result, StoreError, META_KEY_COUNT, META_SCHEMA};

/// The open database and its trees.
pub(crate) struct Trees {
    db: Db,
    /// sled's data file, opened again by keyhold to fsync it: sled's own
    /// flush ends in `sync_file_range` on Linux, which writes the pages but
    /// neither the file's metadata nor the disk's write cache.
    data_file: Option<std::fs::File>,
    /// The directory sled's files are in (see `rewrite`), if on disk.
    live: Option<PathBuf>,
    pub(crate) keys: Tree,
    pub(crate) key_usage: Tree,
    pub(crate) by_provider: Tree,
    pub(crate) audit: Tree,
    pub(crate) tokens: Tree,
    pub(crate) meta: Tree,
    /// Tokens' last use (made by the first open of a store from before it).
    pub(crate) token_usage: Tree,
}

impl Trees {
    fn of(db: Db, live: Option<PathBuf>) -> Result<Trees> {
        let data_file = match &live {
            Some(dir) => {
                Some(
                    std::fs::File::open(dir.join("db")).map_err(|error| StoreError::Io {
                        what: "open the store's data file to fsync it",
                        error,
                    })?,
                )
            }
            None => None,
        };
        Ok(Trees {
            data_file,
            live,
            keys: db.open_tree("keys")?,
            key_usage: db.open_tree("key_usage")?,
            by_provider: db.open_tree("by_provider")?,
            audit: db.open_tree("audit")?,
            tokens: db.open_tree("tokens")?,
            meta: db.open_tree("meta")?,
            token_usage: db.open_tree("token_usage")?,
            db,
        })
    }

    fn table(&self, name: &str) -> Result<&Tree> {
        Ok(match name {
            "meta" => &self.meta,
            "tokens" => &self.tokens,
            "keys" => &self.keys,
            "by_provider" => &self.by_provider,
            "key_usage" => &self.key_usage,
            "audit" => &self.audit,
            "token_usage" => &self.token_usage,
            _ => {
                return Err(StoreError::Corrupt {
                    what: "table name",
                    detail: name.chars().take(40).collect(),
                })
            }
        })
    }
}

/// Where a store lives, so it can be opened again.
#[derive(Clone)]
enum Origin {
    Dir { path: PathBuf, cache: u64 },
    Temporary,
}

/// The sled database. [`SledStore::reopen`] replaces it for every user
/// (sled's IO errors are sticky until the database is opened again).
pub(crate) struct SledStore {
    current: RwLock<Option<Arc<Trees>>>,
    origin: Origin,
    /// Held through a scrub: two at once would write the same `store.N`.
    scrubbing: std::sync::Mutex<()>,
}

impl SledStore {
    /// Opens (creating if needed) the database in `dir`.
    pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<SledStore> {
        let origin = Origin::Dir {
            path: dir.to_path_buf(),
            cache: cache_bytes,
        };
        Ok(SledStore {
            current: RwLock::new(Some(Arc::new(Self::open_trees(&origin)?))),
            origin,
            scrubbing: std::sync::Mutex::new(()),
        })
    }

    /// A database in memory, gone at exit.
    pub(crate) fn temporary() -> Result<SledStore> {
        let origin = Origin::Temporary;
        Ok(SledStore {
            current: RwLock::new(Some(Arc::new(Self::open_trees(&origin)?))),
            origin,
            scrubbing: std::sync::Mutex::new(()),
        })
    }

    fn open_trees(origin: &Origin) -> Result<Trees> {
        let (db, live) = match origin {
            Origin::Dir { path, cache } => {
                let (db, live) = rewrite::open_current(path, *cache)?;
                (db, Some(live))
            }
            Origin::Temporary => (sled::Config::new().temporary(true).open()?, None),
        };
        let trees = Trees::of(db, live)?;
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

    pub(crate) fn t(&self) -> Result<Arc<Trees>> {
        let guard = match self.current.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        guard.clone().ok_or(StoreError::Unavailable)
    }
}

impl Backend for SledStore {
    fn dir(&self) -> Option<PathBuf> {
        match &self.origin {
            Origin::Dir { path, .. } => Some(path.clone()),
            Origin::Temporary => None,
        }
    }

    /// sled writes out its buffers, then keyhold fsyncs the data file (file
    /// data, metadata and the disk's write cache).
    fn flush(&self) -> Result<()> {
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

    fn reopen(&self, wait: std::time::Duration) -> Result<()> {
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

    /// Copies every live entry into a fresh database inside the data
    /// directory, makes it the store, and overwrites and removes the old
    /// files (`rewrite`). Every other use of the store waits while the copy
    /// made meanwhile is brought up to date (the pause returned).
    fn scrub(&self, wait: std::time::Duration) -> Result<Option<std::time::Duration>> {
        let Origin::Dir { path, cache } = &self.origin else {
            return Ok(None);
        };
        let _one = match self.scrubbing.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // Most of the audit log first, with the store in use.
        let copy = {
            let t = self.t()?;
            let live = t.live.clone().ok_or(StoreError::Unavailable)?;
            rewrite::begin(&t.db, path, &live, *cache)?
        };
        // New users wait from the moment this asks for the lock.
        let paused = std::time::Instant::now();
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let Some(old) = guard.take() else {
            drop(guard);
            return Err(copy.abandon(StoreError::Unavailable));
        };
        let deadline = std::time::Instant::now() + wait;
        while Arc::strong_count(&old) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if old.live.is_none() || Arc::strong_count(&old) > 1 {
            *guard = Some(old);
            drop(guard);
            return Err(copy.abandon(StoreError::Unavailable));
        }
        let (db, next) = match rewrite::finish(&old.db, copy) {
            Ok(made) => made,
            Err(gave_up) => {
                *guard = Some(old);
                drop(guard);
                return Err(gave_up.cleanup());
            }
        };
        if let Err(e) = rewrite::switch(path, &next) {
            // The copy is left for the next rewrite or open to remove.
            drop(db);
            *guard = Some(old);
            return Err(e);
        }
        // From here on the copy is the store, whatever happens next. If
        // the rename cannot be made durable, the old files stay (a crash
        // could bring the old name back) and the error is returned once
        // the copy serves.
        let durable = rewrite::sync(path);
        drop(old);
        let trees = Trees::of(db, Some(next.clone()));
        let opened = match trees {
            Ok(t) => Ok(t),
            Err(_) => Self::open_trees(&self.origin),
        };
        match opened {
            Ok(t) => *guard = Some(Arc::new(t)),
            Err(e) => {
                *guard = None;
                return Err(e);
            }
        }
        drop(guard);
        let paused = paused.elapsed();
        durable?;
        // The old files, overwritten and removed once sled lets go of them
        // (a reader of this process may still hold them for a while).
        if !rewrite::clear_stale(path, &next, RELEASE_WAIT)? {
            return Err(StoreError::OldFilesInUse);
        }
        Ok(Some(paused))
    }

    fn meta_get(&self, name: &[u8]) -> Result<Option<Bytes>> {
        Ok(self.t()?.meta.get(name)?.map(Bytes::from))
    }

    fn meta_init(&self, guard: &[u8], values: &[(&[u8], &[u8])]) -> Result<bool> {
        let res: std::result::Result<(), TransactionError<()>> = self.t()?.meta.transaction(|m| {
            if m.get(guard)?.is_some() {
                return Err(ConflictableTransactionError::Abort(()));
            }
            for (name, value) in values {
                m.insert(*name, *value)?;
            }
            Ok(())
        });
        match res {
            Ok(()) => Ok(true),
            Err(TransactionError::Abort(())) => Ok(false),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    fn key_get(&self, id: &Uuid) -> Result<Option<Bytes>> {
        Ok(self.t()?.keys.get(id.as_bytes())?.map(Bytes::from))
    }

    fn key_swap(&self, id: &Uuid, current: &[u8], new: &[u8]) -> Result<bool> {
        let res = self
            .t()?
            .keys
            .compare_and_swap(id.as_bytes(), Some(current), Some(new))?;
        Ok(res.is_ok())
    }

    fn keys(&self) -> Items<'_, (Uuid, Bytes)> {
        walk(self.t().map(|t| t.keys.iter()), |(k, v)| {
            let id = Uuid::from_slice(&k).map_err(corrupt("key id"))?;
            Ok((id, Bytes::from(v)))
        })
    }

    fn provider_ids(&self, provider: &str) -> Items<'_, (i64, Uuid)> {
        let prefix = commit::provider_prefix(provider);
        ids_of(self.t().map(|t| t.by_provider.scan_prefix(prefix)))
    }

    fn provider_ids_newest_first(&self, provider: &str) -> Items<'_, (i64, Uuid)> {
        let prefix = commit::provider_prefix(provider);
        ids_of(self.t().map(|t| t.by_provider.scan_prefix(prefix).rev()))
    }

    fn count_index(&self) -> Result<u64> {
        Ok(self.t()?.by_provider.len() as u64)
    }

    fn usage_get(&self, id: &Uuid) -> Result<Option<Bytes>> {
        Ok(self.t()?.key_usage.get(id.as_bytes())?.map(Bytes::from))
    }

    fn token_get(&self, at: &[u8; 32]) -> Result<Option<Bytes>> {
        Ok(self.t()?.tokens.get(at)?.map(Bytes::from))
    }

    fn tokens(&self) -> Items<'_, ([u8; 32], Bytes)> {
        walk(self.t().map(|t| t.tokens.iter()), |(k, v)| {
            let at: [u8; 32] = k.as_ref().try_into().map_err(corrupt("token hash"))?;
            Ok((at, Bytes::from(v)))
        })
    }

    fn tokens_move(
        &self,
        meta: &[(&'static [u8], Vec<u8>)],
        moves: &[([u8; 32], [u8; 32], Vec<u8>)],
    ) -> Result<()> {
        let t = self.t()?;
        let res: std::result::Result<(), TransactionError<()>> =
            (&t.meta, &t.tokens).transaction(|(m, tokens)| {
                for (name, value) in meta {
                    m.insert(*name, value.as_slice())?;
                }
                for (from, to, value) in moves {
                    tokens.remove(from)?;
                    tokens.insert(to, value.as_slice())?;
                }
                Ok(())
            });
        match res {
            Ok(()) | Err(TransactionError::Abort(())) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    fn commit(&self, records: &[(u64, Vec<u8>)], head: &[u8], ops: &[Op]) -> Result<()> {
        commit::commit(&*self.t()?, records, head, ops)
    }

    fn audit_last(&self) -> Result<Option<(u64, Bytes)>> {
        for item in self.t()?.audit.iter().rev() {
            let (k, v) = item?;
            if let Some(last) = audit_chunks::Entries::new(commit::decode_seq(&k)?, v).last() {
                return Ok(Some((last.0, Bytes::from(last.1))));
            }
        }
        Ok(None)
    }

    fn audit_from(&self, from_seq: u64) -> Items<'_, (u64, Bytes)> {
        let from = from_seq.to_be_bytes();
        let walk = self.t().and_then(|t| {
            // The entry holding `from_seq` starts at or before it.
            let start = match t.audit.range(..=from).next_back() {
                Some(item) => item?.0.to_vec(),
                None => from.to_vec(),
            };
            Ok(audit_chunks::Walk::new(t.audit.clone(), start))
        });
        match walk {
            Err(e) => Box::new(std::iter::once(Err(e))),
            Ok(w) => Box::new(
                w.map(|r| r.map(|(seq, v)| (seq, Bytes::from(v))))
                    .skip_while(move |item| item.as_ref().is_ok_and(|(seq, _)| *seq < from_seq)),
            ),
        }
    }

    fn entries(&self, table: &str) -> Items<'_, (Bytes, Bytes)> {
        let tree = self.t().and_then(|t| Ok(t.table(table)?.clone()));
        walk(tree.map(|t| t.iter()), |(k, v)| {
            Ok((Bytes::from(k), Bytes::from(v)))
        })
    }

    fn put_entry(&self, table: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.t()?.table(table)?.insert(key, value)?;
        Ok(())
    }
}

/// A sled iterator as the seam's items, or the error that kept it from
/// being made (as the first and only item).
fn walk<'a, T: 'a>(
    iter: Result<sled::Iter>,
    f: impl Fn((sled::IVec, sled::IVec)) -> Result<T> + 'a,
) -> Items<'a, T> {
    match iter {
        Err(e) => Box::new(std::iter::once(Err(e))),
        Ok(i) => Box::new(i.map(move |item| f(item?))),
    }
}

fn ids_of<'a, I>(iter: Result<I>) -> Items<'a, (i64, Uuid)>
where
    I: Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + 'a,
{
    match iter {
        Err(e) => Box::new(std::iter::once(Err(e))),
        Ok(i) => Box::new(i.filter_map(|item| match item {
            Err(e) => Some(Err(e.into())),
            Ok((k, _)) => commit::entry_of_index(&k).map(Ok),
        })),
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
/// again or moving it. sled lets go of its lock (a `flock` on its `db`
/// file) only when the last of its background threads drops the database,
/// which can be well after the handle was dropped on a loaded machine.
/// Gives up after [`RELEASE_WAIT`] and leaves the error to the open that
/// follows.
pub fn wait_until_released(dir: &Path) -> Result<()> {
    let live = sled_dir(dir).unwrap_or_else(|_| dir.to_path_buf());
    match try_lock_for(&live, RELEASE_WAIT) {
        Err(error) => Err(StoreError::Io {
            what: "wait for the store's lock",
            error,
        }),
        Ok(_) => Ok(()),
    }
}

/// Whether sled's lock on the database in `live` is free (or its file
/// gone), after waiting up to [`RELEASE_WAIT`] for it.
fn wait_for_lock(live: &Path) -> bool {
    try_lock_for(live, RELEASE_WAIT).unwrap_or(false)
}

fn try_lock_for(live: &Path, wait: std::time::Duration) -> std::io::Result<bool> {
    let file = match std::fs::File::open(live.join("db")) {
        Ok(f) => f,
        // Nothing holds it: whoever opens it next says what is wrong.
        Err(_) => return Ok(true),
    };
    let deadline = std::time::Instant::now() + wait;
    loop {
        match file.try_lock() {
            // Closing `file` lets go of the probe's own lock.
            Ok(()) => return Ok(true),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
            Err(std::fs::TryLockError::Error(error)) => return Err(error),
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
            // Past the wait: said as held (the edge names what to run
            // instead), not as sled's IO error.
            Err(sled::Error::Io(e)) if e.to_string().starts_with("could not acquire lock") => {
                return Err(StoreError::Held {
                    path: path.display().to_string(),
                })
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

/// Why sled did not open a store, said for people (a held lock is
/// [`StoreError::Held`]).
pub(super) fn open_reason(error: &sled::Error) -> String {
    format!("{error}; check the directory's permissions and the disk")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records `seqs`, each two bytes, as the audit writer hands them over.
    fn records(seqs: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
        seqs.map(|q| (q, vec![0, q as u8])).collect()
    }

    #[test]
    fn a_walk_leaving_an_entry_as_the_writer_fills_it_skips_nothing() {
        let s = Arc::new(SledStore::temporary().unwrap());
        s.commit(&records(1..=3), b"h", &[]).unwrap();
        let mut walk = audit_chunks::Walk::new(s.t().unwrap().audit.clone(), vec![0; 8]);
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
}
