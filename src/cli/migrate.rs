//! `keyhold migrate --from-data-dir DIR --to-database-url URL` (and the
//! reverse): moves a whole store between backends, then verifies the
//! audit chain in the target and records the move in it.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::{check_keyring, open_dir_initialised, ConfigError};
use crate::audit::{Action, AuditEvent, AuditLog, Outcome};
use crate::config::{host_name, MigrateArgs};
use crate::keyring::Keyring;
use crate::store::{DatabaseUrl, DatabaseUrlArg, PgOptions, Store, StoreError};

pub(super) fn run(a: MigrateArgs) -> anyhow::Result<ExitCode> {
    let keyring = Keyring::from_env()?;
    let parse = |u: &Option<DatabaseUrlArg>| -> anyhow::Result<Option<DatabaseUrl>> {
        u.as_ref()
            .map(|u| u.parse_url().map_err(|e| ConfigError(e.to_string()).into()))
            .transpose()
    };
    let (from_url, to_url) = (parse(&a.from_database_url)?, parse(&a.to_database_url)?);
    let pg = |url: &DatabaseUrl| PgOptions::new(url.clone(), a.database_ca.clone(), host_name());
    let (source, from) = match (&a.from_data_dir, &from_url) {
        (Some(dir), None) => (open_dir_initialised(dir, None)?, dir.display().to_string()),
        (None, Some(url)) => {
            let store = Store::connect(&pg(url), false)?;
            if !store.is_initialised()? {
                return Err(StoreError::DatabaseNotInitialised(url.to_string()).into());
            }
            store.check_schema()?;
            (store, url.to_string())
        }
        _ => {
            return Err(ConfigError(
                "give one source: --from-data-dir DIR or --from-database-url URL".into(),
            )
            .into())
        }
    };
    check_keyring(&source, &keyring, &from)?;
    let (target, to) = match (&a.to_data_dir, &to_url) {
        (Some(dir), None) => (new_dir_store(dir)?, dir.display().to_string()),
        (None, Some(url)) => (Store::connect(&pg(url), true)?, url.to_string()),
        _ => {
            return Err(ConfigError(
                "give one target: --to-data-dir DIR or --to-database-url URL".into(),
            )
            .into())
        }
    };
    let copied = crate::ops::migrate::copy_store(&source, &target)?;
    drop(source);
    check_keyring(&target, &keyring, &to)?;
    let log = AuditLog::open(target.clone(), &keyring)?;
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
    log.append(&[(ev, vec![])])?;
    // A database's nodes share one reveal rate (ops::settings).
    if target.node().is_some() && crate::ops::settings::stored_reveal_rate(&target)?.is_none() {
        crate::ops::settings::set_reveal_rate(&log, Default::default(), "migrate")?;
    }
    let report = crate::audit::verify_store(&target, &log.verify_keys())?;
    eprintln!(
        "keyhold: migrated {from} to {to} ({} audit records); audit chain: {report}",
        copied.audit_records
    );
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A store in a new or empty directory.
fn new_dir_store(dir: &Path) -> anyhow::Result<Store> {
    super::owner::refuse_foreign_owner(dir)?;
    if let Ok(mut entries) = std::fs::read_dir(dir) {
        if entries.next().is_some() {
            return Err(ConfigError(format!(
                "{} is not empty: migrate into a new or empty directory (nothing was changed)",
                dir.display()
            ))
            .into());
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(Store::open(dir)?)
}
