//! `keyhold migrate --from-data-dir DIR --to-database-url URL` (and the
//! reverse): moves a whole store between backends, then verifies the
//! audit chain in the target and records the move in it.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::ConfigError;
use crate::config::{host_name, MigrateArgs};
use crate::keyring::Keyring;
use crate::vault::{DatabaseUrl, DatabaseUrlArg, Location, Migration, PgOptions};

pub(super) fn run(a: MigrateArgs) -> anyhow::Result<ExitCode> {
    let keyring = Keyring::from_env()?;
    let parse = |u: &Option<DatabaseUrlArg>| -> anyhow::Result<Option<DatabaseUrl>> {
        u.as_ref()
            .map(|u| u.parse_url().map_err(|e| ConfigError(e.to_string()).into()))
            .transpose()
    };
    let (from_url, to_url) = (parse(&a.from_database_url)?, parse(&a.to_database_url)?);
    let pg = |url: &DatabaseUrl| {
        Location::Database(Box::new(PgOptions::new(
            url.clone(),
            a.database_ca.clone(),
            host_name(),
        )))
    };
    let from = match (&a.from_data_dir, &from_url) {
        (Some(dir), None) => super::dir_location(dir, None)?,
        (None, Some(url)) => pg(url),
        _ => {
            return Err(ConfigError(
                "give one source: --from-data-dir DIR or --from-database-url URL".into(),
            )
            .into())
        }
    };
    let migration = Migration::open(&from, keyring)?;
    let to = match (&a.to_data_dir, &to_url) {
        (Some(dir), None) => {
            new_dir(dir)?;
            Location::dir(dir)
        }
        (None, Some(url)) => pg(url),
        _ => {
            return Err(ConfigError(
                "give one target: --to-data-dir DIR or --to-database-url URL".into(),
            )
            .into())
        }
    };
    let migrated = migration.to(&to)?;
    let report = migrated.report;
    eprintln!(
        "keyhold: migrated {from} to {to} ({} audit records); audit chain: {report}",
        migrated.audit_records
    );
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A new or empty directory for a store, made if needed.
fn new_dir(dir: &Path) -> anyhow::Result<()> {
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
    Ok(())
}
