//! The vault an offline command opens: [`Offline`] owns the store (opened
//! with the keyring checked against it), the keyring and the audit log
//! (opened at the first record), and runs each offline command's work:
//! check, rotation, import, backup, the reveal-rate setting, the audit
//! log's export and public key, and a [`Vault`] view for the token
//! commands. Making a store (`init`), restoring and migrating one are in
//! `offline_store.rs`; verifying an exported log in `offline_audit.rs`.
//!
//! Every failure is one [`OfflineError`], which says whether it is a setup
//! problem found before any work ([`OfflineError::is_setup`]) and carries
//! what an edge needs to name its fix; the command line renders it.
//!
//! Not for: flags, the terminal, file ownership checks, exit codes.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Opened, Origin, Refusal, Rotated, Sink, Vault};
use crate::audit::{AuditError, AuditEvent, AuditKeys, AuditLog, ExportFilter, ExportFormat};
use crate::keyring::{KeySource, Keyring, KeyringError};
use crate::limiter::RevealRate;
use crate::ops::backup::BackupError;
use crate::ops::import::{ImportError, ImportFormat, ImportOptions, ImportReport, Plan};
use crate::ops::migrate::MigrateError;
use crate::ops::reload::ReloadRefused;
use crate::store::{PgOptions, Store, StoreError};
use crate::unlock::UnlockError;

/// Where a store is: a data directory (with its page cache: `None` sizes
/// it to the store), or a PostgreSQL database.
#[derive(Debug, Clone)]
pub enum Location {
    Dir {
        path: PathBuf,
        cache_bytes: Option<u64>,
    },
    Database(Box<PgOptions>),
}

impl Location {
    /// A data directory with the default page cache.
    pub fn dir(path: &Path) -> Location {
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

/// A retired key of the key file (or key command) that would open a store
/// the active keys do not: what to put back.
#[derive(Debug, Clone)]
pub struct RetiredKey {
    pub fingerprint: String,
    /// The key file it is retired in (`None`: the key command's output).
    pub file: Option<PathBuf>,
}

/// Why an offline command failed. Most variants carry the error of the
/// part that failed, said as it says it; [`OfflineError::is_setup`] tells
/// a problem found before any work (nothing changed) from a failure while
/// working.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Unlock(#[from] UnlockError),
    /// No active key of the keyring opens the store (`at`: where, when
    /// the command says it; `retired`: a retired key that would).
    #[error("{}", at.as_ref().map(|a| format!("cannot open the store in {a}")).unwrap_or_default())]
    Locked {
        at: Option<String>,
        retired: Option<Box<RetiredKey>>,
        #[source]
        source: Box<UnlockError>,
    },
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error(transparent)]
    Replacement(#[from] ReloadRefused),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Export(#[from] crate::audit::ExportError),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// A file of the command could not be read or written.
    #[error("cannot {what}")]
    File {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A restored store still needs a retired key after its re-keying:
    /// the retired keys must be put back and the store rotated.
    #[error(
        "the backup was restored into {into}, but re-keying it under the newest active key \
         stopped: some of it still needs a retired key{}",
        failed.map(|n| format!(" ({n} key(s) could not be re-encrypted)")).unwrap_or_default()
    )]
    RekeyStopped {
        into: String,
        failed: Option<usize>,
        #[source]
        source: Option<Refusal>,
    },
    /// A file given to verify is a CSV export, not JSON Lines.
    #[error("{name} is a CSV export: verification reads JSON Lines")]
    CsvExport { name: String },
}

impl OfflineError {
    /// A setup problem found before any work, with nothing changed (a
    /// keyring that opens nothing, a store not initialised or not empty,
    /// a backup refused before anything was written): the command line's
    /// exit status 2. Anything else failed while working.
    pub fn is_setup(&self) -> bool {
        match self {
            OfflineError::Locked { .. } | OfflineError::CsvExport { .. } => true,
            OfflineError::RekeyStopped { .. } => false,
            _ => {
                let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
                // A transparent variant shows the error it wraps and its
                // sources, not itself: look at what it wraps first.
                if let Some(inner) = self.wrapped() {
                    cause = Some(inner);
                }
                while let Some(e) = cause {
                    if let Some(verdict) = setup_verdict(e) {
                        return verdict;
                    }
                    cause = e.source();
                }
                false
            }
        }
    }

    fn wrapped(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(match self {
            OfflineError::Store(e) => e,
            OfflineError::Unlock(e) => e,
            OfflineError::Audit(e) => e,
            OfflineError::Backup(e) => e,
            OfflineError::Migrate(e) => e,
            OfflineError::Replacement(e) => e,
            OfflineError::Import(e) => e,
            OfflineError::Export(e) => e,
            OfflineError::Refused(e) => e,
            OfflineError::Keyring(e) => e,
            _ => return None,
        })
    }
}

/// Whether `e` decides the exit status: `Some(true)` a setup problem,
/// `Some(false)` a failure while working, `None` look at its source.
fn setup_verdict(e: &(dyn std::error::Error + 'static)) -> Option<bool> {
    if e.is::<KeyringError>() {
        return Some(true);
    }
    if let Some(Refusal::Invalid(_)) = e.downcast_ref() {
        return Some(true);
    }
    if let Some(MigrateError::TargetNotEmpty) = e.downcast_ref() {
        return Some(true);
    }
    if let Some(
        BackupError::NotEmpty(_)
        | BackupError::NotAuthentic
        | BackupError::Unauthenticated
        | BackupError::Rewrapped(_),
    ) = e.downcast_ref()
    {
        return Some(true);
    }
    if let Some(e) = e.downcast_ref::<StoreError>() {
        return Some(matches!(
            e,
            StoreError::NotInitialised(_)
                | StoreError::DatabaseNotInitialised(_)
                | StoreError::NewerDatabase { .. }
                | StoreError::AlreadyInitialised(_)
                | StoreError::Open { .. }
                | StoreError::BadCurrent { .. }
                | StoreError::CurrentMissing { .. }
                | StoreError::NewerSchema { .. }
        ));
    }
    if let Some(
        UnlockError::WrongKey { .. }
        | UnlockError::Missing(_)
        | UnlockError::StateDiffers(_)
        | UnlockError::HeadRolledBack { .. }
        | UnlockError::HeadWithoutState(_)
        | UnlockError::HeadMissing
        | UnlockError::LegacyRecordAltered(_)
        | UnlockError::Downgraded,
    ) = e.downcast_ref()
    {
        return Some(true);
    }
    if let Some(AuditError::MacKeyLocked | AuditError::NoMacKey) = e.downcast_ref() {
        return Some(true);
    }
    None
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
pub fn holds_store(dir: &Path) -> bool {
    crate::store::holds_store(dir)
}

/// Opens the initialised store at `at` (never creating one: only `init`
/// does, and sled writes files on open).
pub(super) fn open_initialised(at: &Location) -> Result<Store, OfflineError> {
    let store = match at {
        Location::Database(opts) => {
            let store = Store::connect(opts, false)?;
            if !store.is_initialised()? {
                return Err(StoreError::DatabaseNotInitialised(opts.url.to_string()).into());
            }
            store
        }
        Location::Dir { path, cache_bytes } => {
            if !crate::store::holds_store(path) {
                return Err(StoreError::NotInitialised(path.display().to_string()).into());
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
                return Err(StoreError::NotInitialised(path.display().to_string()).into());
            }
            store
        }
    };
    store.check_schema()?;
    Ok(store)
}

/// Unlocks `store` with `keyring` (applying the record keys, upgrading a
/// store from an older keyhold, audited); a keyring none of whose active
/// keys opens the check value is refused, naming a retired key that would.
pub(super) fn unlock(
    store: &Store,
    keyring: &Keyring,
    at: Option<String>,
) -> Result<(), OfflineError> {
    match crate::unlock::unlock(store, keyring) {
        Ok(_) => Ok(()),
        Err(source @ UnlockError::WrongKey { .. }) => Err(OfflineError::Locked {
            at,
            retired: retired_key(store),
            source: Box::new(source),
        }),
        Err(source) => match at {
            Some(at) => Err(OfflineError::Locked {
                at: Some(at),
                retired: None,
                source: Box::new(source),
            }),
            None => Err(source.into()),
        },
    }
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
pub struct Offline {
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
pub use crate::ops::check::CheckReport;

impl Offline {
    /// Opens the initialised store at `at` and checks that `keyring` opens
    /// it (a wrong key fails here, not at the first reveal).
    pub fn open(at: &Location, keyring: Keyring) -> Result<Offline, OfflineError> {
        let store = open_initialised(at)?;
        unlock(&store, &keyring, Some(at.to_string()))?;
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
    pub fn check(at: &Location, keyring: &Keyring) -> Result<CheckReport, OfflineError> {
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
    pub fn rekeyed(self, keyring: Keyring) -> Offline {
        Offline::over(self.store, keyring)
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// How many keys the store holds.
    pub fn key_count(&self) -> u64 {
        self.store.key_count() as u64
    }

    /// The store of a database several nodes share (not a data directory).
    pub fn is_shared(&self) -> bool {
        self.store.node().is_some()
    }

    pub(super) fn store(&self) -> &Store {
        &self.store
    }

    /// Verifies the store's whole audit chain under the log's keys.
    pub fn verify_log(&self) -> Result<crate::audit::VerifyReport, OfflineError> {
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
    pub fn vault(&self) -> Result<Vault<'_>, OfflineError> {
        Ok(Vault {
            store: &self.store,
            keyring: (&self.keyring).into(),
            audit: Sink::Log(self.log()?),
            coalescer: None,
        })
    }

    /// What `keyhold serve` starts its core with.
    pub fn into_opened(self, reveal_rate: RevealRate) -> Result<Opened, OfflineError> {
        self.log()?;
        let log = self.log.into_inner().ok_or(AuditError::NoMacKey)?;
        Ok(Opened {
            store: self.store,
            keyring: self.keyring,
            log: std::sync::Arc::new(log),
            reveal_rate,
        })
    }

    /// The reveal rate a shared database stores for all its nodes, if one
    /// is stored yet.
    pub fn stored_reveal_rate(&self) -> Result<Option<RevealRate>, OfflineError> {
        Ok(crate::ops::settings::stored_reveal_rate(&self.store)?)
    }

    /// Stores the reveal rate of a shared database (audited, `by` naming
    /// who set it); returns the one it replaces.
    pub fn set_reveal_rate(
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
    pub fn rotate(
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
    pub fn plan_import(
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
    pub fn apply_import(
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
    pub fn backup(&self, target: &str, out: impl std::io::Write) -> Result<u64, OfflineError> {
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
    pub fn public_key(&self) -> Result<crate::audit::PublicKey, OfflineError> {
        Ok(AuditKeys::unseal(&self.store, &self.keyring)?.public_key())
    }

    /// The log's last seq (how far an export goes).
    pub fn audit_last_seq(&self) -> Result<u64, OfflineError> {
        Ok(self.store.audit_last_seq()?)
    }

    /// Records an export, then writes the log's records `filter` selects
    /// to `out` (`progress` told each seq). Returns how many were written
    /// and the log's head when the export began.
    pub fn export(
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
