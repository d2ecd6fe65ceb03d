//! `keyhold rotate` and `keyhold check` (offline).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::{open_checked, open_initialised, open_log, progress_bar, ConfigError};
use crate::audit::{Action, AuditEvent, Outcome};
use crate::config::{BackupArgs, CheckArgs, ImportArgs, RestoreArgs, RotateArgs};
use crate::keyring::Keyring;
use crate::ops;
use crate::ops::import::ImportFormat;
use crate::private_file::PendingFile;
use crate::store::Store;

pub(super) fn rotate(a: RotateArgs) -> anyhow::Result<ExitCode> {
    if a.remote.remote {
        if a.new_key {
            return Err(ConfigError(
                "--new-key is for an offline rotation: with --remote, add the key with `keyhold \
                 keygen --key-file FILE` and `keyhold keyring reload` first"
                    .into(),
            )
            .into());
        }
        let client = match super::remote::connect(&a.remote.client) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("keyhold: error: {e}");
                return Ok(super::remote::client_exit(&e));
            }
        };
        return match client.admin_post("/api/admin/rotate", super::keyring::ADMIN_TIMEOUT) {
            Ok(v) => {
                println!("{}", serde_json::to_string_pretty(&v)?);
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("keyhold: error: {e}");
                Ok(super::remote::client_exit(&e))
            }
        };
    }
    let keyring = Keyring::from_env()?;
    let store = open_checked(&a.data, &keyring)?;
    // The new key is on disk, durably, before any record is re-encrypted
    // under it: a crash or a closed shell cannot take it away.
    let keyring = if a.new_key {
        new_key_first(&keyring)?
    } else {
        keyring
    };
    let log = open_log(store.clone(), &keyring)?;
    if keyring.len() < 2 {
        eprintln!(
            "keyhold: the keyring holds one key, so everything is already under it; to rotate, \
             run `keyhold rotate --new-key` with FERNET_KEY_FILE, or set FERNET_KEYS=new,old"
        );
    }
    let bar = progress_bar(store.key_count() as u64, "rotating");
    let rotated = crate::vault::rotate_store(
        &store,
        &keyring,
        &log,
        "cli",
        Duration::from_millis(a.pace_ms),
        |n| bar.set_position(n),
    )?;
    bar.finish_and_clear();
    if let Some(k) = rotated.new_public_key {
        eprintln!("keyhold: the audit log is now signed by {k} (the old key signed the hand-over)");
    }
    let vault = super::offline_vault(&store, &keyring, &log);
    super::block_on(vault.record_rotation(&crate::vault::Origin::cli(), None, &rotated))??;
    let report = rotated.report;
    eprintln!("keyhold: {}", report.summary());
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `rotate --new-key`: writes a new key at the top of FERNET_KEY_FILE and
/// reads the keyring back from the file, refusing unless its newest key
/// is the one just written.
fn new_key_first(keyring: &Keyring) -> anyhow::Result<Keyring> {
    let crate::keyring::KeySource::File(path) = keyring.source() else {
        return Err(ConfigError(format!(
            "--new-key writes the new key into the key file FERNET_KEY_FILE names, but the keyring \
             comes from {}: nothing was changed. Put a new key (`keyhold keygen`) first in that \
             source yourself and run `keyhold rotate` without --new-key, or keep the keys in a \
             key file",
            keyring.source()
        ))
        .into());
    };
    let written = crate::key_file::prepend_new_key(path)?;
    let reread = Keyring::from_env()?;
    if reread.fingerprints().first() != Some(&written.fingerprint) {
        return Err(ConfigError(format!(
            "FERNET_KEY_FILE did not read back with the new key ({}) first; nothing was \
             re-encrypted",
            written.fingerprint
        ))
        .into());
    }
    eprintln!(
        "keyhold: wrote a new key ({}) at the top of {}; rotating under it",
        written.fingerprint,
        path.display()
    );
    Ok(reread)
}

pub(super) fn check(a: CheckArgs) -> anyhow::Result<ExitCode> {
    if !a.backups.is_empty() {
        return check_backups(&a.backups, a.output.is_json());
    }
    let keyring = Keyring::from_env()?;
    let store = open_initialised(&a.data)?;
    // Damage is what check reports, not an error. A keyring that opens
    // nothing is not: every other line would be empty ("0 of 0 keys"), so
    // it is the error (exit 2) that says which keyring to set. The state
    // commitment was checked at open: what differs is reported.
    let state = match crate::unlock::unlock(&store, &keyring) {
        Ok(_) => Vec::new(),
        Err(e) => {
            use crate::unlock::UnlockError;
            match e {
                UnlockError::WrongKey { .. } => {
                    let hint = super::keyring::retired_hint(&store);
                    let e = anyhow::Error::new(e);
                    return Err(match hint {
                        Some(h) => e.context(h),
                        None => e,
                    });
                }
                UnlockError::StateDiffers(d) => d,
                UnlockError::HeadRolledBack { .. }
                | UnlockError::HeadWithoutState(_)
                | UnlockError::HeadMissing => vec![e.to_string()],
                e => return Err(e.into()),
            }
        }
    };
    let report = ops::check::check(&store, &keyring, state)?;
    let mut out = std::io::stdout().lock();
    if a.output.is_json() {
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

pub(super) fn import(a: ImportArgs) -> anyhow::Result<ExitCode> {
    let format = match &a.input_format {
        Some(f) => ImportFormat::parse(f)
            .ok_or_else(|| ConfigError("--input-format must be json, jsonl or csv".into()))?,
        None => ImportFormat::guess(&a.from).ok_or_else(|| {
            ConfigError(format!(
                "cannot tell the format of {} from its name: add --input-format json, jsonl or \
                 csv",
                a.from.display()
            ))
        })?,
    };
    let keyring = Keyring::from_env()?;
    let store = open_checked(&a.data, &keyring)?;
    let file = std::fs::File::open(&a.from)
        .with_context(|| format!("cannot open {}", a.from.display()))?;
    let reference = match &a.reference_key_file {
        Some(path) => Some(read_reference_key(path)?),
        None => None,
    };
    let options = ops::import::ImportOptions {
        reference: reference.as_ref(),
        lowercase_providers: a.providers_lowercase,
    };
    let plan = ops::import::plan_with(
        &store,
        &keyring,
        std::io::BufReader::new(file),
        format,
        options,
    )?;
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
    if a.output.is_json() {
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

/// The Python reference's key(s) from `--reference-key-file` (one key a
/// line, `#` comments), never echoed.
fn read_reference_key(path: &std::path::Path) -> anyhow::Result<Keyring> {
    let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| {
        ConfigError(format!(
            "cannot read --reference-key-file {}: {e}",
            path.display()
        ))
    })?);
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        ConfigError(format!(
            "--reference-key-file {} is not text: it holds one Fernet key a line",
            path.display()
        ))
    })?;
    Keyring::parse_list(
        crate::keyring::KeySource::File(path.to_path_buf()),
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#')),
    )
    .map_err(|e| ConfigError(format!("--reference-key-file: {e}")).into())
}

pub(super) fn backup(a: BackupArgs) -> anyhow::Result<ExitCode> {
    if a.remote.remote {
        return super::remote::backup(&a);
    }
    if a.verify {
        let keyring = Keyring::from_env_with_retired()?;
        return verify_backup(&a.file, &keyring, a.output.is_json());
    }
    let keyring = Keyring::from_env()?;
    let store = open_checked(&a.data, &keyring)?;
    let log = open_log(store.clone(), &keyring)?;
    // Written beside the target (mode 0600), then renamed: never a half
    // backup under the final name. Made before the audit record, so a
    // path that cannot be written records no backup.
    let mut file = backup_target(&a.file)?;
    let target = match &file {
        Some(_) => a.file.display().to_string(),
        None => "stdout".to_string(),
    };
    let ev = AuditEvent::cli(
        Action::Backup,
        Outcome::Success,
        Some(format!("backup to {target}")),
    );
    log.append(&[(ev, vec![])])?;
    let entries = match file.take() {
        None => ops::backup::write_backup(&store, &keyring, std::io::stdout().lock())?,
        Some(mut file) => {
            let n = ops::backup::write_backup(&store, &keyring, file.file())?;
            file.commit()
                .with_context(|| format!("cannot write the backup {}", a.file.display()))?;
            n
        }
    };
    eprintln!("keyhold: backed up {entries} entries to {target}");
    Ok(ExitCode::SUCCESS)
}

/// Which key of `keyring` a backup's MAC is under, said for people:
/// `FINGERPRINT (active)` or `FINGERPRINT (retired)`.
fn key_named(keyring: &Keyring, info: &ops::backup::BackupInfo) -> String {
    match info.key_index {
        Some(i) => format!(
            "{} ({})",
            keyring.fingerprints().get(i).map_or("?", String::as_str),
            if keyring.is_retired(i) {
                "retired"
            } else {
                "active"
            }
        ),
        None => "none (an unauthenticated format 1 backup)".into(),
    }
}

/// Where a backup goes: `-` is stdout (`None`), else a [`PendingFile`]
/// beside FILE.
pub(super) fn backup_target(file: &std::path::Path) -> anyhow::Result<Option<PendingFile>> {
    if file.as_os_str() == "-" {
        return Ok(None);
    }
    PendingFile::create(file).map(Some).with_context(|| {
        format!(
            "cannot create the backup {} (written beside it first, then renamed): check that \
             its directory exists and is writable",
            file.display()
        )
    })
}

/// `keyhold backup --verify FILE`: checks a backup without restoring it.
fn verify_backup(
    path: &std::path::Path,
    keyring: &Keyring,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut entries_per_tree = std::collections::BTreeMap::<String, u64>::new();
    let info = ops::backup::read_backup(file, keyring, false, |tree, _, _| {
        *entries_per_tree.entry(tree.to_string()).or_default() += 1;
        Ok(())
    })
    .with_context(|| format!("{} did not verify", path.display()))?;
    let key = key_named(keyring, &info);
    if json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(
            &mut out,
            &serde_json::json!({
                "file": path.display().to_string(),
                "intact": true,
                "format": info.format,
                "schema": info.schema,
                "created_at": crate::time::to_rfc3339(info.created_at_us),
                "entries": info.entries,
                "trees": entries_per_tree,
                "key": key,
            }),
        )?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let trees: Vec<String> = entries_per_tree
        .iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    writeln!(
        std::io::stdout().lock(),
        "ok: {} is an intact keyhold backup (format {}, schema {}, made {}; {} entries: {}), \
         authenticated under key {key}",
        path.display(),
        info.format,
        info.schema,
        crate::time::to_rfc3339(info.created_at_us),
        info.entries,
        trees.join(", ")
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `keyhold check --backup FILE...`: which key each backup needs, and
/// whether it is intact (no store is opened).
fn check_backups(files: &[std::path::PathBuf], json: bool) -> anyhow::Result<ExitCode> {
    let keyring = Keyring::from_env_with_retired()?;
    let mut all_ok = true;
    let mut found = Vec::new();
    for path in files {
        let read = std::fs::File::open(path)
            .map_err(ops::backup::BackupError::from)
            .and_then(|f| ops::backup::read_backup(f, &keyring, false, |_, _, _| Ok(())));
        let (ok, line, key) = match read {
            Ok(info) => {
                let key = key_named(&keyring, &info);
                (
                    true,
                    format!(
                        "ok   {}: intact, made {}, needs key {key}",
                        path.display(),
                        crate::time::to_rfc3339(info.created_at_us)
                    ),
                    Some(key),
                )
            }
            Err(e) => (
                false,
                format!(
                    "FAIL {}: {e} (no key of the keyring, active or retired, opens it, or it \
                     is damaged)",
                    path.display()
                ),
                None,
            ),
        };
        all_ok &= ok;
        if json {
            found.push(serde_json::json!({"file": path.display().to_string(), "ok": ok, "key": key, "said": line}));
        } else {
            println!("{line}");
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(super) fn restore(a: RestoreArgs) -> anyhow::Result<ExitCode> {
    // A backup made before a rotation is under a key the key file now
    // lists as retired: restore reads with the retired keys too, then
    // re-keys what it restored under the newest active key (below), so
    // the server, which never loads retired keys, opens it.
    let keyring = Keyring::from_env_with_retired()?;
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
            super::owner::refuse_foreign_owner(dir)?;
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
    let active = Keyring::from_env()?;
    let rekey = match ops::reload::check_replacement(&store, &active) {
        Ok(()) => false,
        Err(ops::reload::ReloadRefused::StillNeeded { .. }) => true,
        Err(e) => return Err(e.into()),
    };
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
    if rekey {
        // The backup needs a retired key: everything is re-encrypted and
        // re-sealed under the newest active key, as `keyhold rotate` does
        // (audited), so that the active keyring alone opens the store.
        let rotated =
            crate::vault::rotate_store(&store, &keyring, &log, "cli", Duration::ZERO, |_| {})?;
        let vault = super::offline_vault(&store, &keyring, &log);
        super::block_on(vault.record_rotation(&crate::vault::Origin::cli(), None, &rotated))??;
        if !rotated.report.failed.is_empty() {
            return Err(anyhow::anyhow!(
                "the backup was restored into {into} but {} key(s) could not be re-encrypted \
                 under the newest key: keep the retired keys active (`keyhold keyring \
                 unretire`) and run `keyhold check`",
                rotated.report.failed.len()
            ));
        }
        ops::reload::check_replacement(&store, &active)?;
        eprintln!(
            "keyhold: the backup was made under a retired key: what it holds is now \
             re-encrypted under the newest active key ({})",
            active.fingerprints().first().map_or("", String::as_str)
        );
    }
    let report = crate::audit::verify_store(&store, &log.verify_keys())?;
    eprintln!(
        "keyhold: restored {} entries into {}; audit chain: {report}",
        info.entries, into
    );
    if let (Some(dir), None) = (&a.data_dir, &a.database.database_url) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::metadata(dir) {
            eprintln!(
                "keyhold: the restored store belongs to {}: serve it as that user, or give it to \
                 the service user first (chown -R USER: {})",
                super::owner::who(meta.uid()),
                dir.display()
            );
        }
    }
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
