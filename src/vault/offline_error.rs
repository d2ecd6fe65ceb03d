//! Why an offline command failed: one [`OfflineError`], which carries the
//! error of the part that failed (said as it says it) and tells a setup
//! problem, found before any work, from a failure while working. It names
//! no command: the command line renders the variants that a command
//! fixes ([`OfflineError::Locked`]'s retired key, a stopped re-keying, a
//! CSV export given to verify).
//!
//! Not for: exit codes (the command line maps [`OfflineError::is_setup`]).

use std::path::PathBuf;

use super::Refusal;
use crate::audit::AuditError;
use crate::keyring::KeyringError;
use crate::ops::backup::BackupError;
use crate::ops::copy_store::MigrateError;
use crate::ops::import::ImportError;
use crate::ops::reload::ReloadRefused;
use crate::store::StoreError;
use crate::unlock::UnlockError;

/// A retired key of the key file (or key command) that would open a store
/// the active keys do not: what to put back.
#[derive(Debug, Clone)]
pub(crate) struct RetiredKey {
    pub fingerprint: String,
    /// The key file it is retired in (`None`: the key command's output).
    pub file: Option<PathBuf>,
}

/// Why an offline command failed. Most variants carry the error of the
/// part that failed, said as it says it; [`OfflineError::is_setup`] tells
/// a problem found before any work (nothing changed) from a failure while
/// working.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OfflineError {
    #[error(transparent)]
    Store(StoreError),
    /// No store in the data directory `dir` (its `init` was not run).
    #[error("{}", StoreError::NotInitialised(dir.clone()))]
    NotInitialised { dir: String },
    /// Another process holds the data directory's lock.
    #[error("{}", StoreError::Held { path: path.clone() })]
    StoreHeld { path: String },
    /// No store in the database `url` (shown without its password).
    #[error("{}", StoreError::DatabaseNotInitialised(url.clone()))]
    DatabaseNotInitialised { url: String },
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
    Migrate(MigrateError),
    /// The target of a migration or a restore into a database already
    /// holds a store (or audit records); nothing was changed.
    #[error("{}", MigrateError::TargetNotEmpty)]
    TargetNotEmpty,
    #[error(transparent)]
    Replacement(#[from] ReloadRefused),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Export(#[from] crate::audit::ExportError),
    /// The vault refused (no prose in the core: the command line words
    /// it, naming commands).
    #[error("refused: {0}")]
    Refused(Refusal),
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
        /// What refused the re-keying, if the vault did.
        refused: Option<Refusal>,
    },
    /// A file given to verify is a CSV export, not JSON Lines.
    #[error("{name} is a CSV export: verification reads JSON Lines")]
    CsvExport { name: String },
}

impl From<StoreError> for OfflineError {
    fn from(e: StoreError) -> OfflineError {
        match e {
            StoreError::NotInitialised(dir) => OfflineError::NotInitialised { dir },
            StoreError::DatabaseNotInitialised(url) => OfflineError::DatabaseNotInitialised { url },
            StoreError::Held { path } => OfflineError::StoreHeld { path },
            other => OfflineError::Store(other),
        }
    }
}

impl From<Refusal> for OfflineError {
    fn from(r: Refusal) -> OfflineError {
        OfflineError::Refused(r)
    }
}

impl From<MigrateError> for OfflineError {
    fn from(e: MigrateError) -> OfflineError {
        match e {
            MigrateError::TargetNotEmpty => OfflineError::TargetNotEmpty,
            other => OfflineError::Migrate(other),
        }
    }
}

impl OfflineError {
    /// When no key of the keyring opens the store: where the keyring came
    /// from (said in the message, with where to find the key).
    pub(crate) fn wrong_keyring(&self) -> Option<&str> {
        match self {
            OfflineError::Locked { source, .. } => match source.as_ref() {
                UnlockError::WrongKey { origin } => Some(origin),
                _ => None,
            },
            _ => None,
        }
    }

    /// A setup problem found before any work, with nothing changed (a
    /// keyring that opens nothing, a store not initialised or not empty,
    /// a backup refused before anything was written): the command line's
    /// exit status 2. Anything else failed while working.
    pub(crate) fn is_setup(&self) -> bool {
        match self {
            OfflineError::Locked { .. }
            | OfflineError::CsvExport { .. }
            | OfflineError::TargetNotEmpty
            | OfflineError::NotInitialised { .. }
            | OfflineError::StoreHeld { .. }
            | OfflineError::DatabaseNotInitialised { .. } => true,
            OfflineError::RekeyStopped { .. } => false,
            // A value the vault refused as invalid (a name, a provider).
            OfflineError::Refused(r) => matches!(r, Refusal::Invalid(_)),
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
                | StoreError::Held { .. }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_problems_are_told_from_failures_while_working() {
        let setup = [
            OfflineError::from(StoreError::NotInitialised("/srv/kh".into())),
            OfflineError::from(MigrateError::TargetNotEmpty),
            OfflineError::from(BackupError::NotAuthentic),
            OfflineError::from(AuditError::MacKeyLocked),
            OfflineError::from(UnlockError::HeadMissing),
            OfflineError::CsvExport {
                name: "log.csv".into(),
            },
        ];
        for e in &setup {
            assert!(e.is_setup(), "{e:?}");
        }
        let working = [
            OfflineError::from(StoreError::Unavailable),
            OfflineError::from(BackupError::Truncated),
            OfflineError::from(AuditError::Store(StoreError::Unavailable)),
            OfflineError::RekeyStopped {
                into: "/srv/kh".into(),
                failed: Some(1),
                refused: None,
            },
        ];
        for e in &working {
            assert!(!e.is_setup(), "{e:?}");
        }
    }

    #[test]
    fn what_the_command_line_says_with_a_command_is_its_own_variant_naming_none() {
        for e in [
            OfflineError::from(MigrateError::TargetNotEmpty),
            OfflineError::from(StoreError::NotInitialised("/srv/kh".into())),
            OfflineError::from(StoreError::DatabaseNotInitialised("postgres://db".into())),
            OfflineError::from(StoreError::Held {
                path: "/srv/kh".into(),
            }),
        ] {
            assert!(
                !matches!(e, OfflineError::Store(_) | OfflineError::Migrate(_)),
                "{e:?}"
            );
            assert!(!e.to_string().contains("keyhold "), "{e}");
        }
    }
}
