//! `keyhold rotate` and `keyhold check` (offline).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::{open_checked, open_initialised, open_log, progress_bar, ConfigError};
use crate::audit::{Action, AuditEvent, Outcome};
use crate::config::{BackupArgs, CheckArgs, ImportArgs, RestoreArgs, RotateArgs};
use crate::keyring::Keyring;
use crate::ops;
use crate::ops::import::ImportFormat;
use crate::store::Store;

pub fn rotate(a: RotateArgs) -> anyhow::Result<ExitCode> {
    let keyring = Keyring::from_env()?;
    let store = open_checked(&a.data, &keyring)?;
    let log = open_log(store.clone(), &keyring)?;
    if keyring.len() < 2 {
        eprintln!(
            "keyhold: the keyring holds one key, so everything is already under it; to rotate, set \
             FERNET_KEYS=new,old (see `Rotating the Fernet key` in docs/operations.md)"
        );
    }
    let bar = progress_bar(store.key_count() as u64, "rotating");
    let report = ops::rotate::rotate(&store, &keyring, Duration::from_millis(a.pace_ms), |n| {
        bar.set_position(n)
    })?;
    bar.finish_and_clear();
    if let Some(k) = ops::rotate::rotate_signing_key(&log, &keyring, "cli")? {
        eprintln!("keyhold: the audit log is now signed by {k} (the old key signed the hand-over)");
    }
    let outcome = Outcome::Success;
    let ev = AuditEvent::cli(
        Action::Rotate,
        outcome,
        Some(format!(
            "{}; newest key {}",
            report.summary(),
            keyring.fingerprints()[0]
        )),
    );
    log.append(&[(ev, vec![])])?;
    eprintln!("keyhold: {}", report.summary());
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn check(a: CheckArgs) -> anyhow::Result<ExitCode> {
    let keyring = Keyring::from_env()?;
    let store = open_initialised(&a.data)?;
    // A wrong key is what check reports, not an error; damage is too.
    if let Err(e) = crate::unlock::unlock(&store, &keyring) {
        if !matches!(e, crate::unlock::UnlockError::WrongKey { .. }) {
            return Err(e.into());
        }
    }
    let report = ops::check::check(&store, &keyring)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        for line in report.lines() {
            writeln!(out, "{line}")?;
        }
    }
    Ok(if report.all_well() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn import(a: ImportArgs) -> anyhow::Result<ExitCode> {
    let format = match &a.format {
        Some(f) => ImportFormat::parse(f)
            .ok_or_else(|| ConfigError("--format must be json, jsonl or csv".into()))?,
        None => ImportFormat::guess(&a.from).ok_or_else(|| {
            ConfigError(format!(
                "cannot tell the format of {} from its name: add --format json, jsonl or csv",
                a.from.display()
            ))
        })?,
    };
    let keyring = Keyring::from_env()?;
    let store = open_checked(&a.data, &keyring)?;
    let file = std::fs::File::open(&a.from)
        .with_context(|| format!("cannot open {}", a.from.display()))?;
    let plan = ops::import::plan(&store, &keyring, std::io::BufReader::new(file), format)?;
    let report = if a.dry_run {
        let mut r = plan.report;
        r.dry_run = true;
        r
    } else {
        let log = open_log(store.clone(), &keyring)?;
        let bar = progress_bar(plan.report.imported, "importing");
        let source = a.from.display().to_string();
        let r = ops::import::apply(&log, plan, &source, |n| bar.set_position(n))?;
        bar.finish_and_clear();
        r
    };
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}", report.summary())?;
        for r in &report.rejected {
            writeln!(
                out,
                "  row {}{}: {}",
                r.row,
                r.id.as_ref()
                    .map(|i| format!(" (id {i})"))
                    .unwrap_or_default(),
                r.reason
            )?;
        }
    }
    Ok(if report.rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn backup(a: BackupArgs) -> anyhow::Result<ExitCode> {
    let keyring = Keyring::from_env()?;
    if a.verify {
        return verify_backup(&a.file, &keyring);
    }
    let store = open_checked(&a.data, &keyring)?;
    let log = open_log(store.clone(), &keyring)?;
    let to_stdout = a.file.as_os_str() == "-";
    let target = if to_stdout {
        "stdout".to_string()
    } else {
        a.file.display().to_string()
    };
    let ev = AuditEvent::cli(
        Action::Backup,
        Outcome::Success,
        Some(format!("backup to {target}")),
    );
    log.append(&[(ev, vec![])])?;
    let entries = if to_stdout {
        ops::backup::write_backup(&store, &keyring, std::io::stdout().lock())?
    } else {
        // Written beside the target, then renamed: never a half backup
        // under the final name.
        let tmp = a.file.with_extension("partial");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let n = ops::backup::write_backup(&store, &keyring, &file)?;
        file.sync_all()
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &a.file)
            .with_context(|| format!("cannot move the backup to {}", a.file.display()))?;
        n
    };
    eprintln!("keyhold: backed up {entries} entries to {target}");
    Ok(ExitCode::SUCCESS)
}

/// `keyhold backup --verify FILE`: checks a backup without restoring it.
fn verify_backup(path: &std::path::Path, keyring: &Keyring) -> anyhow::Result<ExitCode> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut entries_per_tree = std::collections::BTreeMap::<String, u64>::new();
    let info = ops::backup::read_backup(file, keyring, false, |tree, _, _| {
        *entries_per_tree.entry(tree.to_string()).or_default() += 1;
        Ok(())
    })
    .with_context(|| format!("{} did not verify", path.display()))?;
    let trees: Vec<String> = entries_per_tree
        .iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    writeln!(
        std::io::stdout().lock(),
        "ok: {} is an intact keyhold backup (format {}, schema {}, made {}; {} entries: {}), \
         authenticated under this keyring",
        path.display(),
        info.format,
        info.schema,
        crate::time::to_rfc3339(info.created_at_us),
        info.entries,
        trees.join(", ")
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn restore(a: RestoreArgs) -> anyhow::Result<ExitCode> {
    let keyring = Keyring::from_env()?;
    if !a.file.is_file() {
        return Err(ConfigError(format!(
            "cannot read the backup {}: no such file",
            a.file.display()
        ))
        .into());
    }
    let (info, store, into) = match (
        &a.data_dir,
        a.database
            .options()
            .map_err(|e| ConfigError(e.to_string()))?,
    ) {
        (_, Some(opts)) => {
            // Checked and staged in a private directory as on sled, then
            // copied into the database (which must hold no store).
            let to = Store::connect(&opts, true)?;
            ops::migrate::check_empty(&to)?;
            let staging =
                std::env::temp_dir().join(format!("keyhold-restore-{}", uuid::Uuid::new_v4()));
            let staged = (|| -> anyhow::Result<_> {
                let info =
                    ops::backup::restore(&a.file, &staging, &keyring, a.allow_unauthenticated)?;
                let from = super::open_dir_initialised(&staging, None)?;
                ops::migrate::copy_store(&from, &to)?;
                from.close()?;
                Ok(info)
            })();
            let _ = std::fs::remove_dir_all(&staging);
            let info = staged?;
            let data = crate::config::DataDir {
                data_dir: std::path::PathBuf::new(),
                database: a.database.clone(),
            };
            (info, open_checked(&data, &keyring)?, opts.url.to_string())
        }
        (Some(dir), None) => {
            let info = ops::backup::restore(&a.file, dir, &keyring, a.allow_unauthenticated)?;
            // The same keyring must open what was restored; the chain must
            // verify. A refused restore leaves nothing behind (the target
            // was new or empty).
            let data = crate::config::DataDir {
                data_dir: dir.clone(),
                database: a.database.clone(),
            };
            let store = match open_checked(&data, &keyring) {
                Ok(s) => s,
                Err(e) => {
                    let _ = crate::store::wait_until_released(dir);
                    let _ = std::fs::remove_dir_all(dir);
                    return Err(e);
                }
            };
            (info, store, dir.display().to_string())
        }
        (None, None) => {
            return Err(ConfigError(
                "give --data-dir DIR or --database-url URL to restore into".into(),
            )
            .into())
        }
    };
    let log = open_log(store.clone(), &keyring)?;
    let ev = AuditEvent::cli(
        Action::Restore,
        Outcome::Success,
        Some(format!(
            "restored {} entries from {} (backup made {})",
            info.entries,
            a.file.display(),
            crate::time::to_rfc3339(info.created_at_us)
        )),
    );
    log.append(&[(ev, vec![])])?;
    let report = crate::audit::verify_store(&store, &log.verify_keys())?;
    eprintln!(
        "keyhold: restored {} entries into {}; audit chain: {report}",
        info.entries, into
    );
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
