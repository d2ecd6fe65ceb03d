//! Rewriting the store's files so that removed bytes leave the disk.
//!
//! sled is log-structured: a removed or replaced value stays in its old
//! log segment until sled reuses that segment, so a purged key's Fernet
//! tokens would outlive the purge in the files. [`begin`] copies the live
//! entries of every tree into a fresh database in a subdirectory of the
//! data directory (`store.N`) while the store stays in use; [`finish`],
//! with every other user waiting, writes what changed since; [`switch`]
//! makes the copy the store by replacing one small file, `CURRENT`,
//! atomically; [`clear_stale`] then overwrites the old files with zeros and
//! removes them.
//!
//! Layout: a store keyhold never rewrote has sled's files in the data
//! directory itself (`db`, `conf`, `snap.*`, `blobs/`); once rewritten,
//! `CURRENT` names the subdirectory that holds them. Everything stays
//! inside the data directory, the one place a hardened service may write
//! (`ReadWritePaths=` in scripts/keyhold.service).
//!
//! A crash at any step leaves one complete store that `CURRENT` (or its
//! absence) names: the new one is complete and durable before `CURRENT`
//! is replaced. Whatever else is left (a half-made `store.N`, the old
//! files) is removed by the next open, under the store's lock
//! ([`clear_stale`]). A `CURRENT` naming a subdirectory that holds no
//! store is refused rather than opened as a new, empty one.
//!
//! Over 500 lines: the layout (`CURRENT`, `store.N`), the two copying
//! steps, the switch and the clearing of old files are one protocol
//! whose crash and race guarantees depend on each other's order; its
//! tests are in `rewrite/tests.rs`.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sled::Db;

use super::super::{Result, StoreError};

/// The file naming the subdirectory that holds the store, once rewritten.
pub(crate) const CURRENT: &str = "CURRENT";
/// How the subdirectories are named: `store.` and a generation number.
const PREFIX: &str = "store.";
/// sled's files and directory in a store it was never rewritten from.
const LEGACY_FILES: [&str; 2] = ["db", "conf"];
const LEGACY_DIRS: [&str; 1] = ["blobs"];
const LEGACY_PREFIX: &str = "snap.";
/// Entries copied per sled batch.
const BATCH: usize = 1024;
/// The largest generation: 19 digits, so that every name fits a u64.
const MAX_GENERATION: u64 = 9_999_999_999_999_999_999;
/// The most of `CURRENT` read: a name is far shorter (a link planted in
/// its place, to `/dev/zero` say, is not read without end).
const CURRENT_MAX: u64 = 64;

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    move |error| StoreError::Io { what, error }
}

/// `N` of a subdirectory named `store.N`.
fn generation(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?;
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The directory sled's files are in, for the store in `dir`: `dir`
/// itself, or the subdirectory `CURRENT` names. A `CURRENT` naming
/// anything but a `store.N` is refused (it could point outside `dir`).
pub fn sled_dir(dir: &Path) -> Result<PathBuf> {
    let mut bytes = Vec::new();
    match std::fs::File::open(dir.join(CURRENT)) {
        Ok(f) => {
            f.take(CURRENT_MAX)
                .read_to_end(&mut bytes)
                .map_err(io("read the store's CURRENT file"))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(dir.to_path_buf()),
        Err(error) => {
            return Err(StoreError::Io {
                what: "read the store's CURRENT file",
                error,
            })
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let name = text.trim_end_matches('\n');
    match generation(name) {
        Some(_) => Ok(dir.join(name)),
        None => Err(StoreError::BadCurrent {
            found: name.chars().take(40).collect(),
        }),
    }
}

/// Whether `dir` holds a store (of either layout).
pub fn holds_store(dir: &Path) -> bool {
    dir.join(CURRENT).exists() || LEGACY_FILES.iter().any(|f| dir.join(f).exists())
}

/// The subdirectory the next rewrite of the store in `dir`, now in
/// `live`, writes to.
fn next_dir(dir: &Path, live: &Path) -> PathBuf {
    let now = match live.file_name().and_then(|n| n.to_str()) {
        Some(name) if live != dir => generation(name).unwrap_or(0),
        _ => 0,
    };
    // Past the largest name (only a planted CURRENT gets there), start
    // again at 1: the live store is not store.1 then.
    let next = now
        .checked_add(1)
        .filter(|n| *n <= MAX_GENERATION)
        .unwrap_or(1);
    dir.join(format!("{PREFIX}{next}"))
}

/// The audit tree's name: the one tree whose entries, once written, only
/// ever grow at its end, so most of it can be copied while the store
/// stays in use.
const AUDIT: &[u8] = b"audit";
/// sled's default tree (keyhold keeps nothing in it; copied all the same).
const DEFAULT_TREE: &[u8] = b"__sled__default";

/// A copy under way: the fresh database, its directory, and the first
/// audit entry key still to copy.
pub(super) struct Copy {
    db: Db,
    next: PathBuf,
    audit_from: Vec<u8>,
}

/// First step of a rewrite, while the store stays in use: makes a fresh
/// database in the next `store.N` of `dir` (the store's files being in
/// `live`) and copies into it every audit entry before the newest one,
/// then every other tree as it is now. Audit entries are only appended,
/// and only the newest one grows (a commit fills it up before it starts
/// the next: `audit_chunks`), so those are final; the other trees may
/// change meanwhile, and [`finish`] brings them up to date. On an error
/// the partial copy is removed.
pub(super) fn begin(old: &Db, dir: &Path, live: &Path, cache: u64) -> Result<Copy> {
    let next = next_dir(dir, live);
    remove_dir(&next)?;
    let db = super::open_sled(&next, cache)?;
    let copied = (|| {
        let from = old.open_tree(AUDIT)?;
        let to = db.open_tree(AUDIT)?;
        let newest = from.last()?.map(|(k, _)| k.to_vec());
        let audit_from = match newest {
            Some(k) => {
                copy_entries(from.range(..k.as_slice()), &to)?;
                k
            }
            None => Vec::new(),
        };
        for name in old.tree_names() {
            if name.as_ref() != AUDIT && name.as_ref() != DEFAULT_TREE {
                copy_entries(old.open_tree(&name)?.iter(), &db.open_tree(&name)?)?;
            }
        }
        Ok(audit_from)
    })();
    match copied {
        Ok(audit_from) => Ok(Copy {
            db,
            next,
            audit_from,
        }),
        Err(e) => Err(abandon(db, &next, e)),
    }
}

/// A copy given up: its error, and the directory to remove once sled has
/// let go of it ([`Abandoned::cleanup`], called without holding others up).
pub(super) struct Abandoned {
    error: StoreError,
    next: PathBuf,
}

impl Abandoned {
    /// Removes the copy (a failed removal is retried by the next rewrite
    /// or open) and returns the error.
    pub(super) fn cleanup(self) -> StoreError {
        super::wait_for_lock(&self.next);
        let _ = remove_dir(&self.next);
        self.error
    }
}

/// Second step, with every other use of the store waiting: copies the
/// audit entries from where [`begin`] stopped and brings every other tree
/// up to date with the changes made since (reading both is much faster
/// than writing all again), then makes the copy durable: every file and
/// directory of it synced (sled syncs neither `conf` nor `blobs/`).
pub(super) fn finish(old: &Db, copy: Copy) -> std::result::Result<(Db, PathBuf), Abandoned> {
    let Copy {
        db,
        next,
        audit_from,
    } = copy;
    let done = (|| {
        sync_entries(old, &db)?;
        for name in old.tree_names() {
            if name.as_ref() == DEFAULT_TREE {
                continue;
            }
            let from = old.open_tree(&name)?;
            let to = db.open_tree(&name)?;
            if name.as_ref() == AUDIT {
                copy_entries(from.range(audit_from.as_slice()..), &to)?;
            } else {
                sync_entries(&from, &to)?;
            }
        }
        db.flush()?;
        sync_tree(&next)
    })();
    match done {
        Ok(()) => Ok((db, next)),
        Err(error) => {
            drop(db);
            Err(Abandoned { error, next })
        }
    }
}

impl Copy {
    /// Gives the copy up (the store could not be had to itself): closes
    /// and removes it, returning `e`.
    pub(super) fn abandon(self, e: StoreError) -> StoreError {
        abandon(self.db, &self.next, e)
    }
}

/// Closes and removes a copy that failed, returning its error (a failed
/// removal is retried by the next open).
fn abandon(db: Db, next: &Path, e: StoreError) -> StoreError {
    drop(db);
    super::wait_for_lock(next);
    let _ = remove_dir(next);
    e
}

/// Makes `to` hold exactly what `from` holds, writing only the
/// differences (both walked in key order). Writes land behind the walk of
/// `to`, so it never sees its own changes.
fn sync_entries(from: &sled::Tree, to: &sled::Tree) -> Result<()> {
    let mut a = from.iter();
    let mut b = to.iter();
    let mut x = a.next().transpose()?;
    let mut y = b.next().transpose()?;
    let mut batch = sled::Batch::default();
    let mut n = 0;
    loop {
        let step = match (&x, &y) {
            (None, None) => break,
            (Some((ka, va)), None) => {
                batch.insert(ka.clone(), va.clone());
                (true, false)
            }
            (None, Some((kb, _))) => {
                batch.remove(kb.clone());
                (false, true)
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    batch.insert(ka.clone(), va.clone());
                    (true, false)
                }
                std::cmp::Ordering::Greater => {
                    batch.remove(kb.clone());
                    (false, true)
                }
                std::cmp::Ordering::Equal => {
                    if va != vb {
                        batch.insert(ka.clone(), va.clone());
                    }
                    (true, true)
                }
            },
        };
        n += 1;
        if n == BATCH {
            to.apply_batch(std::mem::take(&mut batch))?;
            n = 0;
        }
        if step.0 {
            x = a.next().transpose()?;
        }
        if step.1 {
            y = b.next().transpose()?;
        }
    }
    to.apply_batch(batch)?;
    Ok(())
}

fn copy_entries(from: sled::Iter, to: &sled::Tree) -> Result<()> {
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for item in from {
        let (k, v) = item?;
        batch.insert(k, v);
        n += 1;
        if n == BATCH {
            to.apply_batch(std::mem::take(&mut batch))?;
            n = 0;
        }
    }
    to.apply_batch(batch)?;
    Ok(())
}

/// Makes `next` the store in `dir`: syncs `dir` (so that `next` itself is
/// durable before anything names it), writes `CURRENT` anew and renames it
/// into place (atomic). An error means nothing changed; once this returns
/// `Ok`, `next` is the store, and [`sync`] of `dir` makes that durable.
pub(super) fn switch(dir: &Path, next: &Path) -> Result<()> {
    let name = next
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| generation(n).is_some())
        .ok_or(StoreError::Corrupt {
            what: "the rewritten store's directory name",
            detail: next.display().to_string().chars().take(40).collect(),
        })?;
    sync(dir)?;
    // Made anew, never opened through a link planted in its place.
    let tmp = dir.join(format!("{CURRENT}.tmp"));
    remove_file(&tmp)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io("write the store's CURRENT file"))?;
    f.write_all(format!("{name}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io("write the store's CURRENT file"))?;
    drop(f);
    std::fs::rename(&tmp, dir.join(CURRENT)).map_err(io("replace the store's CURRENT file"))
}

/// Opens the store in `dir`: the database `CURRENT` names, checked again
/// once its lock is held (a rewrite by another process may have replaced
/// it just before), then clears what an interrupted rewrite left. A
/// `CURRENT` naming a subdirectory that holds no store is refused: sled
/// would make an empty store there.
pub(super) fn open_current(dir: &Path, cache: u64) -> Result<(Db, PathBuf)> {
    for _ in 0..5 {
        let live = sled_dir(dir)?;
        if live != dir && !live.join("db").is_file() {
            return Err(StoreError::CurrentMissing {
                name: live
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            });
        }
        let db = super::open_sled(&live, cache)?;
        if sled_dir(dir)? == live {
            // Leftovers never stop the store from opening: the next
            // rewrite clears them again.
            if let Err(e) = clear_stale(dir, &live, Duration::ZERO) {
                tracing::warn!(error = %e, "could not clear what an interrupted rewrite of the store left");
            }
            return Ok((db, live));
        }
        drop(db);
        super::wait_for_lock(&live);
    }
    Err(StoreError::Unavailable)
}

/// Overwrites with zeros and removes every store in `dir` but the live
/// one: other `store.N` subdirectories and, once `CURRENT` exists, sled's
/// files in `dir` itself; and a `CURRENT.tmp` left behind. A store still
/// open (sled's lock on it held, by a reader of this process that outlived
/// a rewrite) after `wait` is left in place. Returns whether every old
/// store is gone. Only called with the live store's lock held, so no other
/// process is rewriting it.
pub(super) fn clear_stale(dir: &Path, live: &Path, wait: Duration) -> Result<bool> {
    let mut all = true;
    let entries = std::fs::read_dir(dir).map_err(io("list the data directory"))?;
    for entry in entries {
        let entry = entry.map_err(io("list the data directory"))?;
        let path = entry.path();
        let name = entry.file_name();
        if generation(&name.to_string_lossy()).is_none() || path == live {
            continue;
        }
        let real_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !real_dir {
            // Not a store keyhold made (a file, a link): removed, not followed.
            remove_file(&path)?;
        } else if super::try_lock_for(&path, wait).unwrap_or(false) {
            zero_tree(&path)?;
            remove_dir(&path)?;
        } else {
            all = false;
        }
    }
    if live != dir {
        if super::try_lock_for(dir, wait).unwrap_or(false) {
            remove_legacy(dir)?;
        } else {
            all = false;
        }
    }
    remove_file(&dir.join(format!("{CURRENT}.tmp")))?;
    sync(dir)?;
    Ok(all)
}

fn remove_file(path: &Path) -> Result<()> {
    removed(std::fs::remove_file(path))
}

/// Overwrites and removes sled's files of a store never rewritten, in
/// `dir` itself.
fn remove_legacy(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(io("list the data directory"))?;
    for entry in entries {
        let entry = entry.map_err(io("list the data directory"))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        if LEGACY_FILES.contains(&name.as_ref()) || name.starts_with(LEGACY_PREFIX) {
            zero_file(&path)?;
            remove_file(&path)?;
        } else if LEGACY_DIRS.contains(&name.as_ref()) {
            zero_tree(&path)?;
            remove_dir(&path)?;
        }
    }
    Ok(())
}

/// Removes `path` and all under it; a link is removed, not followed.
fn remove_dir(path: &Path) -> Result<()> {
    removed(std::fs::remove_dir_all(path))
}

/// A removal's outcome: what was already gone counts as removed.
fn removed(outcome: std::io::Result<()>) -> Result<()> {
    match outcome {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::Io {
            what: "remove the old store's files",
            error: e,
        }),
        _ => Ok(()),
    }
}

/// Overwrites every regular file under `dir` with zeros. A symlink (put
/// in place of `dir` or of anything under it) is never followed: its
/// target is not keyhold's to overwrite.
fn zero_tree(dir: &Path) -> Result<()> {
    if !std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_dir()) {
        return Ok(());
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(StoreError::Io {
                what: "list the old store's files",
                error,
            })
        }
    };
    for entry in entries {
        let entry = entry.map_err(io("list the old store's files"))?;
        let kind = entry
            .file_type()
            .map_err(io("list the old store's files"))?;
        if kind.is_dir() {
            zero_tree(&entry.path())?;
        } else if kind.is_file() {
            zero_file(&entry.path())?;
        }
    }
    Ok(())
}

/// Overwrites a file with zeros, in place, and syncs it. Anything but a
/// regular file (a symlink planted in the data directory) is left alone:
/// it is removed, never followed.
fn zero_file(path: &Path) -> Result<()> {
    let seen = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => m,
        _ => return Ok(()),
    };
    let mut f = match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(StoreError::Io {
                what: "overwrite the old store's files",
                error,
            })
        }
    };
    let opened = f
        .metadata()
        .map_err(io("overwrite the old store's files"))?;
    // Swapped for a link between the look and the open: not this file.
    if (opened.dev(), opened.ino()) != (seen.dev(), seen.ino()) || !opened.is_file() {
        return Ok(());
    }
    let len = opened.len();
    let zeros = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])
            .map_err(io("overwrite the old store's files"))?;
        left -= n as u64;
    }
    f.sync_all().map_err(io("overwrite the old store's files"))
}

/// fsync of every file and directory under `dir`, and of `dir`.
fn sync_tree(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(io("sync the rewritten store"))?;
    for entry in entries {
        let entry = entry.map_err(io("sync the rewritten store"))?;
        let kind = entry.file_type().map_err(io("sync the rewritten store"))?;
        if kind.is_dir() {
            sync_tree(&entry.path())?;
        } else if kind.is_file() {
            sync(&entry.path())?;
        }
    }
    sync(dir)
}

/// fsync of a file or a directory.
pub(super) fn sync(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io("sync the rewritten store"))
}

#[cfg(test)]
mod tests;
