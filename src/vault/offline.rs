//! The vault an offline command opens: [`Offline`] owns the store (opened
//! with the keyring checked against it), the keyring and the audit log
//! (opened at the first record), and runs each offline command's work:
//! check, rotation, import, backup, the reveal-rate setting, the audit
//! log's export and public key, and a [`Vault`] view for the token
//! commands. Making a store (`init`), restoring and migrating one are in
//! `offline_store.rs`; verifying an exported log in `offline_audit.rs`.
//!
//! Every failure is one [`OfflineError`] (`offline_error.rs`).
//!
//! Not for: flags, the terminal, file ownership checks, exit codes.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) use super::offline_error::OfflineError;

pub(crate) use super::offline_error::RetiredKey;
use super::{Opened, Origin, Rotated, Sink, Vault};
use crate::audit::{AuditEvent, AuditKeys, AuditLog, ExportFilter, ExportFormat};
use crate::keyring::{KeySource, Keyring};
use crate::limiter::RevealRate;
use crate::ops::import::{ImportFormat, ImportOptions, ImportReport, Plan};
use crate::store::{PgOptions, Store};
use crate::unlock::UnlockError;

/// Where a store is: a data directory (with its page cache: `None` sizes
/// it to the store), or a PostgreSQL database.
#[derive(Debug, Clone)]
pub(crate) enum Location {
    Dir {
        path: PathBuf,
        cache_bytes: Option<u64>,
    },
    Database(Box<PgOptions>),
}

impl Location {
    /// A data directory with the default page cache.
    pub(crate) fn dir(path: &Path) -> Location {
        Location::Dir {
            path: path.to_path_buf(),
            cache_bytes: Some(crate::store::DEFAULT_CACHE_BYTES),
        }
    }
}

impl std::fmt::Display for Location {
    /// As said in messages: the directory, or the database's URL without
    /// its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Dir { path, .. } => write!(f, "{}", path.display()),
            Location::Database(opts) => write!(f, "{}", opts.url),
        }
    }
}

/// Runs one of the vault's async calls to its end (offline, records are
/// appended synchronously; the runtime only drives the call).
fn run<F: std::future::Future>(f: F) -> Result<F::Output, OfflineError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|source| OfflineError::File {
            what: "start the async runtime".into(),
            source,
        })?;
    Ok(rt.block_on(f))
}

/// Whether `dir` holds a store (sled's files), initialised or not.
pub(crate) fn holds_store(dir: &Path) -> bool {
    crate::store::holds_store(dir)
}

/// Opens the initialised store at `at` (never creating one: only `init`
/// does, and sled writes files on open).
pub(super) fn open_initialised(at: &Location) -> Result<Store, OfflineError> {
    let store = match at {
        Location::Database(opts) => {
            let store = Store::connect(opts, false)?;
            if !store.is_initialised()? {
                return Err(OfflineError::DatabaseNotInitialised {
                    url: opts.url.to_string(),
                });
            }
            store
        }
        Location::Dir { path, cache_bytes } => {
            if !crate::store::holds_store(path) {
                return Err(OfflineError::NotInitialised {
                    dir: path.display().to_string(),
                });
            }
            let store = match cache_bytes {
                Some(bytes) => Store::open_with_cache(path, *bytes)?,
                None => {
                    let (store, bytes) = Store::open_auto_cache(path)?;
                    tracing::debug!(cache_mib = bytes >> 20, "page cache sized to the store");
                    store
                }
            };
            if !store.is_initialised()? {
                return Err(OfflineError::NotInitialised {
                    dir: path.display().to_string(),
                });
            }
            store
        }
    };
    store.check_schema()?;
    Ok(store)
}

/// Unlocks `store` at `at` with `keyring` (applying the record keys,
/// upgrading a store from an older keyhold, audited); a keyring none of
/// whose active keys opens the check value is refused, naming a retired
/// key that would.
pub(super) fn unlock(store: &Store, keyring: &Keyring, at: String) -> Result<(), OfflineError> {
    crate::unlock::unlock(store, keyring)
        .map(|_| ())
        .map_err(|source| OfflineError::Locked {
            at: Some(at),
            retired: match source {
                UnlockError::WrongKey { .. } => retired_key(store),
                _ => None,
            },
            source: Box::new(source),
        })
}

/// When no active key opens `store` but a retired key of the key file (or
/// key command) does: which.
fn retired_key(store: &Store) -> Option<Box<RetiredKey>> {
    let ring = Keyring::from_env_with_retired().ok()?;
    let check = store.check_value().ok()??;
    let i = ring.opens_check(&check)?;
    if !ring.is_retired(i) {
        return None;
    }
    Some(Box::new(RetiredKey {
        fingerprint: ring.fingerprints().get(i)?.clone(),
        file: match ring.source() {
            KeySource::File(path) => Some(path.clone()),
            _ => None,
        },
    }))
}

/// An initialised store opened by an offline command, with its keyring
/// checked: see the module's documentation.
pub(crate) struct Offline {
    store: Store,
    keyring: Keyring,
    /// Opened at the first record (verifying or reading needs none, and a
    /// damaged log is reported, not refused).
    log: OnceCell<AuditLog>,
}

impl std::fmt::Debug for Offline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offline").finish_non_exhaustive()
    }
}

/// The store's keys and tokens, checked without a store opened for work:
/// see [`Offline::check`].
pub(crate) use crate::ops::check::CheckReport;

impl Offline {
    /// Opens the initialised store at `at` and checks that `keyring` opens
    /// it (a wrong key fails here, not at the first reveal).
    pub(crate) fn open(at: &Location, keyring: Keyring) -> Result<Offline, OfflineError> {
        let store = open_initialised(at)?;
        unlock(&store, &keyring, at.to_string())?;
        Ok(Offline::over(store, keyring))
    }

    pub(super) fn over(store: Store, keyring: Keyring) -> Offline {
        Offline {
            store,
            keyring,
            log: OnceCell::new(),
        }
    }

    /// `keyhold check`: what is wrong with the store at `at`, said as a
    /// report (damage is the report, not an error). A keyring that opens
    /// nothing is the error: every line would be empty.
    pub(crate) fn check(at: &Location, keyring: &Keyring) -> Result<CheckReport, OfflineError> {
        let store = open_initialised(at)?;
        // The state commitment was checked at open: what differs is
        // reported.
        let state = match crate::unlock::unlock(&store, keyring) {
            Ok(_) => Vec::new(),
            Err(e) => match e {
                UnlockError::WrongKey { .. } => {
                    return Err(OfflineError::Locked {
                        at: None,
                        retired: retired_key(&store),
                        source: Box::new(e),
                    })
                }
                UnlockError::StateDiffers(d) => d,
                UnlockError::HeadRolledBack { .. }
                | UnlockError::HeadWithoutState(_)
                | UnlockError::HeadMissing => vec![e.to_string()],
                e => return Err(e.into()),
            },
        };
        Ok(crate::ops::check::check(&store, keyring, state)?)
    }

    /// The same store under `keyring` (a rotation's new key, read back),
    /// before any record is written.
    pub(crate) fn rekeyed(self, keyring: Keyring) -> Offline {
        Offline::over(self.store, keyring)
    }

    pub(crate) fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// How many keys the store holds.
    pub(crate) fn key_count(&self) -> u64 {
        self.store.key_count() as u64
    }

    /// The store of a database several nodes share (not a data directory).
    pub(crate) fn is_shared(&self) -> bool {
        self.store.node().is_some()
    }

    pub(super) fn store(&self) -> &Store {
        &self.store
    }

    /// Verifies the store's whole audit chain under the log's keys.
    pub(crate) fn verify_log(&self) -> Result<crate::audit::VerifyReport, OfflineError> {
        let keys = self.log()?.verify_keys();
        Ok(crate::audit::verify_store(&self.store, &keys)?)
    }

    pub(super) fn log(&self) -> Result<&AuditLog, OfflineError> {
        if let Some(log) = self.log.get() {
            return Ok(log);
        }
        let log = AuditLog::open(self.store.clone(), &self.keyring)?;
        Ok(self.log.get_or_init(|| log))
    }

    /// Appends one record of the operator's.
    pub(super) fn record(&self, ev: AuditEvent) -> Result<(), OfflineError> {
        self.log()?.append(&[(ev, vec![])])?;
        Ok(())
    }

    /// The vault's rules over this store, for the operator (no flood
    /// counter: each record is written).
    pub(crate) fn vault(&self) -> Result<Vault<'_>, OfflineError> {
        Ok(Vault {
            store: &self.store,
            keyring: (&self.keyring).into(),
            audit: Sink::Log(self.log()?),
            coalescer: None,
        })
    }

    /// What `keyhold serve` starts its core with.
    pub(crate) fn into_opened(self, reveal_rate: RevealRate) -> Result<Opened, OfflineError> {
        let log = match self.log.into_inner() {
            Some(log) => log,
            None => AuditLog::open(self.store.clone(), &self.keyring)?,
        };
        Ok(Opened {
            store: self.store,
            keyring: self.keyring,
            log: std::sync::Arc::new(log),
            reveal_rate,
        })
    }

    /// The reveal rate a shared database stores for all its nodes, if one
    /// is stored yet.
    pub(crate) fn stored_reveal_rate(&self) -> Result<Option<RevealRate>, OfflineError> {
        Ok(crate::ops::settings::stored_reveal_rate(&self.store)?)
    }

    /// Stores the reveal rate of a shared database (audited, `by` naming
    /// who set it); returns the one it replaces.
    pub(crate) fn set_reveal_rate(
        &self,
        rate: RevealRate,
        by: &str,
    ) -> Result<Option<RevealRate>, OfflineError> {
        Ok(crate::ops::settings::set_reveal_rate(
            self.log()?,
            rate,
            by,
        )?)
    }

    /// Re-encrypts everything under the keyring's newest key (paced by
    /// `pace` between keys, `progress` told how many are done), hands the
    /// audit signing key over, and records the rotation. Blocks: call it
    /// outside an async runtime.
    pub(crate) fn rotate(
        &self,
        pace: Duration,
        progress: impl FnMut(u64),
    ) -> Result<Rotated, OfflineError> {
        let log = self.log()?;
        let rotated = super::rotate_store(&self.store, &self.keyring, log, "cli", pace, progress)?;
        let vault = self.vault()?;
        run(vault.record_rotation(&Origin::cli(), None, &rotated))??;
        Ok(rotated)
    }

    /// Reads rows to import and decides each (nothing is written).
    pub(crate) fn plan_import(
        &self,
        input: impl std::io::Read,
        format: ImportFormat,
        options: ImportOptions<'_>,
    ) -> Result<Plan, OfflineError> {
        Ok(crate::ops::import::plan_with(
            &self.store,
            &self.keyring,
            input,
            format,
            options,
        )?)
    }

    /// Writes a planned import (audited, `source` naming the file).
    pub(crate) fn apply_import(
        &self,
        plan: Plan,
        source: &str,
        progress: impl FnMut(u64),
    ) -> Result<ImportReport, OfflineError> {
        Ok(crate::ops::import::apply(
            self.log()?,
            plan,
            source,
            progress,
        )?)
    }

    /// Records a backup to `target` (said in the record), then writes it
    /// to `out`; returns its entry count.
    pub(crate) fn backup(
        &self,
        target: &str,
        out: impl std::io::Write,
    ) -> Result<u64, OfflineError> {
        self.record(AuditEvent::cli(
            crate::audit::Action::Backup,
            crate::audit::Outcome::Success,
            Some(format!("backup to {target}")),
        ))?;
        Ok(crate::ops::backup::write_backup(
            &self.store,
            &self.keyring,
            out,
        )?)
    }

    /// The key that signs the audit log now.
    pub(crate) fn public_key(&self) -> Result<crate::audit::PublicKey, OfflineError> {
        Ok(AuditKeys::unseal(&self.store, &self.keyring)?.public_key())
    }

    /// The log's last seq (how far an export goes).
    pub(crate) fn audit_last_seq(&self) -> Result<u64, OfflineError> {
        Ok(self.store.audit_last_seq()?)
    }

    /// Records an export, then writes the log's records `filter` selects
    /// to `out` (`progress` told each seq). Returns how many were written
    /// and the log's head when the export began.
    pub(crate) fn export(
        &self,
        filter: ExportFilter,
        format: ExportFormat,
        out: impl std::io::Write,
        progress: impl FnMut(u64),
    ) -> Result<(u64, (u64, [u8; 32])), OfflineError> {
        // The export is itself audited, before it is written.
        self.record(AuditEvent::cli(
            crate::audit::Action::AuditExport,
            crate::audit::Outcome::Success,
            Some(format!("format={} {}", format.as_str(), filter.describe())),
        ))?;
        let exporter = crate::audit::Exporter::new(&self.store, filter, format);
        let written = exporter.write_to(out, progress)?;
        Ok((written, self.log()?.head()))
    }
}
