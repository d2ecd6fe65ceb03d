//! Offline work that makes a store rather than opening one: `init`
//! (initialising a store: its sealed secrets and check value, then the
//! `init` record and the first admin token, in one audit commit; `serve
//! --dev` makes its store the same way), restoring a backup, migrating
//! between backends; and reading a backup without a store. The command line checks the directories it is given
//! (owner, emptiness) and creates them; this opens, fills and checks the
//! store.
//!
//! Not for: flags, the terminal, file ownership checks, exit codes.

use std::collections::BTreeMap;
use std::path::Path;

use super::offline::{open_initialised, unlock, Location, Offline, OfflineError};
use super::token_records;
use super::{Conflict, Refusal};
use crate::access::Role;
use crate::audit::{Action, AuditEvent, AuditLog, Outcome, PublicKey, VerifyReport};
use crate::keyring::{Keyring, KeyringError};
use crate::limiter::RevealRate;
use crate::ops::backup::BackupInfo;
use crate::secret::SecretString;
use crate::store::{Store, StoreError};

/// A store just made by `init`.
#[derive(Debug)]
pub(crate) struct Made {
    /// The first admin token, shown once.
    pub admin_token: SecretString,
    /// The key that signs the audit log.
    pub public_key: PublicKey,
    /// On a database: the reveal rate every node will use.
    pub reveal_rate: Option<RevealRate>,
}

/// Makes a new store at `at` under `keyring`, with a first admin token
/// named `admin`. A database gets keyhold's tables (created or brought up
/// to date in one transaction; a newer database is refused) and its
/// shared reveal rate; a data directory must exist (the caller made it,
/// new or empty).
pub(crate) fn init_store(at: &Location, keyring: Keyring) -> Result<Made, OfflineError> {
    let store = match at {
        Location::Database(opts) => Store::connect(opts, true)?,
        Location::Dir { path, .. } => Store::open(path)?,
    };
    if store.is_initialised()? {
        return Err(StoreError::AlreadyInitialised(at.to_string()).into());
    }
    let done = initialise(&store, &keyring, "admin")?;
    let reveal_rate = match at {
        Location::Database(_) => {
            let offline = Offline::over(store, keyring);
            let rate = RevealRate::default();
            offline.set_reveal_rate(rate, "init")?;
            Some(rate)
        }
        Location::Dir { .. } => None,
    };
    Ok(Made {
        admin_token: done.admin_token,
        public_key: done.public_key,
        reveal_rate,
    })
}

/// What a backup holds, read through and checked (nothing is restored).
#[derive(Debug)]
pub(crate) struct BackupSummary {
    pub info: BackupInfo,
    /// Entries per table.
    pub trees: BTreeMap<String, u64>,
}

/// Reads a backup through, checking it end to end under `keyring`
/// (retired keys included).
pub(crate) fn inspect_backup(
    input: impl std::io::Read,
    keyring: &Keyring,
) -> Result<BackupSummary, OfflineError> {
    let mut trees = BTreeMap::<String, u64>::new();
    let info = crate::ops::backup::read_backup(input, keyring, false, |tree, _, _| {
        *trees.entry(tree.to_string()).or_default() += 1;
        Ok(())
    })?;
    Ok(BackupSummary { info, trees })
}

/// As [`inspect_backup`], of the file at `path` (a file that cannot be
/// opened is said as a backup that cannot be read).
pub(crate) fn inspect_backup_file(
    path: &Path,
    keyring: &Keyring,
) -> Result<BackupInfo, OfflineError> {
    let file = std::fs::File::open(path).map_err(crate::ops::backup::BackupError::from)?;
    Ok(inspect_backup(file, keyring)?.info)
}

/// The first bytes of every backup.
pub(crate) const BACKUP_MAGIC: &[u8] = crate::ops::backup::MAGIC;

/// A backup restored.
#[derive(Debug)]
pub(crate) struct Restored {
    pub info: BackupInfo,
    /// It needed a retired key, and was re-keyed under the newest active
    /// key (whose fingerprint this is).
    pub rekeyed_under: Option<String>,
    /// The restored audit chain, verified.
    pub report: VerifyReport,
}

/// Restores the backup `file` into `at` (a new or empty directory, or a
/// database that holds no store), read under `keyring` (retired keys
/// included). What was restored must open under the same keyring and is
/// recorded; a backup that needs a retired key is then re-keyed under the
/// newest key of `active` (audited, as a rotation), so that the active
/// keyring alone opens it. A restore refused before its end leaves nothing
/// behind in a directory.
pub(crate) fn restore(
    file: &Path,
    at: &Location,
    keyring: Keyring,
    active: impl FnOnce() -> Result<Keyring, KeyringError>,
    allow_unauthenticated: bool,
) -> Result<Restored, OfflineError> {
    let (info, offline) = match at {
        Location::Database(opts) => {
            // Checked and staged in a private directory as on sled, then
            // copied into the database (which must hold no store).
            let to = Store::connect(opts, true)?;
            crate::ops::copy_store::check_empty(&to)?;
            let staging =
                std::env::temp_dir().join(format!("keyhold-restore-{}", uuid::Uuid::new_v4()));
            let staged = (|| -> Result<_, OfflineError> {
                let info =
                    crate::ops::backup::restore(file, &staging, &keyring, allow_unauthenticated)?;
                let from = open_initialised(&Location::Dir {
                    path: staging.clone(),
                    cache_bytes: None,
                })?;
                crate::ops::copy_store::copy_store(&from, &to)?;
                from.close()?;
                Ok(info)
            })();
            let _ = std::fs::remove_dir_all(&staging);
            let info = staged?;
            (info, Offline::open(at, keyring)?)
        }
        Location::Dir { path, .. } => {
            let info = crate::ops::backup::restore(file, path, &keyring, allow_unauthenticated)?;
            // The same keyring must open what was restored; the chain must
            // verify. A refused restore leaves nothing behind (the target
            // was new or empty).
            match Offline::open(&Location::dir(path), keyring) {
                Ok(o) => (info, o),
                Err(e) => {
                    let _ = crate::store::wait_until_released(path);
                    let _ = std::fs::remove_dir_all(path);
                    return Err(e);
                }
            }
        }
    };
    offline.log()?;
    let active = active()?;
    let rekey = match crate::ops::reload::check_replacement(offline.store(), &active) {
        Ok(()) => false,
        Err(crate::ops::reload::ReloadRefused::StillNeeded { .. }) => true,
        Err(e) => return Err(e.into()),
    };
    offline.record(AuditEvent::cli(
        Action::Restore,
        Outcome::Success,
        Some(format!(
            "restored {} entries from {} (backup made {})",
            info.entries,
            file.display(),
            crate::time::to_rfc3339(info.created_at_us)
        )),
    ))?;
    let mut rekeyed_under = None;
    if rekey {
        // Everything is re-encrypted and re-sealed under the newest active
        // key, as a rotation does (audited).
        let stopped = |failed, refused| OfflineError::RekeyStopped {
            into: at.to_string(),
            failed,
            refused,
        };
        let rotated = match offline.rotate(std::time::Duration::ZERO, |_| {}) {
            Ok(r) => r,
            Err(OfflineError::Refused(r)) => return Err(stopped(None, Some(r))),
            Err(e) => return Err(e),
        };
        if !rotated.report.failed.is_empty() {
            return Err(stopped(Some(rotated.report.failed.len()), None));
        }
        if crate::ops::reload::check_replacement(offline.store(), &active).is_err() {
            return Err(stopped(None, None));
        }
        rekeyed_under = Some(active.fingerprints().first().cloned().unwrap_or_default());
    }
    let report = offline.verify_log()?;
    Ok(Restored {
        info,
        rekeyed_under,
        report,
    })
}

/// A store moved to another backend.
#[derive(Debug)]
pub(crate) struct Migrated {
    /// How many audit records were copied.
    pub audit_records: u64,
    /// The target's audit chain, verified after the move was recorded.
    pub report: VerifyReport,
}

/// A store about to move to another backend: opened, its keyring checked.
pub(crate) struct Migration {
    source: Store,
    keyring: Keyring,
    from: String,
}

impl std::fmt::Debug for Migration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migration")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Migration {
    /// Opens the store at `from` (which `keyring` must open).
    pub(crate) fn open(from: &Location, keyring: Keyring) -> Result<Migration, OfflineError> {
        let source = open_initialised(from)?;
        unlock(&source, &keyring, from.to_string())?;
        Ok(Migration {
            source,
            keyring,
            from: from.to_string(),
        })
    }

    /// Moves the whole store to `to`: a directory the caller made new or
    /// empty, or a database without keyhold's records. The move is
    /// recorded in the target and its chain verified.
    pub(crate) fn to(self, to: &Location) -> Result<Migrated, OfflineError> {
        let Migration {
            source,
            keyring,
            from,
        } = self;
        let target = match to {
            Location::Dir { path, .. } => Store::open(path)?,
            Location::Database(opts) => Store::connect(opts, true)?,
        };
        let copied = crate::ops::copy_store::copy_store(&source, &target)?;
        drop(source);
        unlock(&target, &keyring, to.to_string())?;
        let offline = Offline::over(target, keyring);
        let mut ev = AuditEvent::cli(
            Action::Restore,
            Outcome::Success,
            Some(format!(
                "migrated from {from}: {} audit records, {}",
                copied.audit_records,
                copied
                    .per_table
                    .iter()
                    .map(|(t, n)| format!("{t} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        );
        ev.caller = "migrate".into();
        offline.record(ev)?;
        // A database's nodes share one reveal rate (ops::settings).
        if offline.is_shared() && offline.stored_reveal_rate()?.is_none() {
            offline.set_reveal_rate(RevealRate::default(), "migrate")?;
        }
        Ok(Migrated {
            audit_records: copied.audit_records,
            report: offline.verify_log()?,
        })
    }
}

/// A new store's first admin token (shown once) and audit public key.
#[derive(Debug)]
pub(crate) struct Initialised {
    pub admin_token: SecretString,
    pub public_key: PublicKey,
}

/// Initialises an empty `store` under `keyring`, with a first admin token
/// named `admin_name` (`init`: `admin`; `serve --dev`: `root`).
pub(crate) fn initialise(
    store: &Store,
    keyring: &Keyring,
    admin_name: &str,
) -> Result<Initialised, Refusal> {
    let public_key = crate::unlock::initialise(store, keyring).map_err(|e| match e {
        crate::unlock::UnlockError::Store(crate::store::StoreError::AlreadyInitialised(d)) => {
            Refusal::Conflict(Conflict::AlreadyInitialised { location: d })
        }
        e => Refusal::storage(&e),
    })?;
    let log = AuditLog::open(store.clone(), keyring).map_err(|e| Refusal::storage(&e))?;
    let prepared = token_records::prepare(store, admin_name, Role::Admin, None)?;
    let mut token_ev = AuditEvent::cli(
        Action::TokenCreate,
        Outcome::Success,
        Some(format!(
            "token {} `{}` role admin",
            prepared.record.id, prepared.record.name
        )),
    );
    token_ev.caller = "init".into();
    let mut init_ev = AuditEvent::cli(
        Action::Init,
        Outcome::Success,
        Some(format!(
            "keyring key {}; audit signing key {public_key}",
            keyring.fingerprints().first().map_or("", String::as_str)
        )),
    );
    init_ev.caller = "init".into();
    log.append(&[(init_ev, vec![]), (token_ev, vec![prepared.write()])])
        .map_err(|e| {
            tracing::error!(error = %e, "could not write the init records");
            Refusal::AuditUnavailable
        })?;
    Ok(Initialised {
        admin_token: prepared.token.secret,
        public_key,
    })
}
