//! `keyhold backup` (offline, or `--remote`), `backup --verify`, `check
//! --backup` and `restore`: which key each backup needs, retired keys
//! included, and a restore that re-keys a pre-rotation backup under the
//! active key.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::Context;

use super::{open_checked, ConfigError};
use crate::config::{BackupArgs, RestoreArgs};
use crate::keyring::Keyring;
use crate::private_file::PendingFile;
use crate::vault::{BackupInfo, Location};

pub(super) fn backup(a: BackupArgs) -> anyhow::Result<ExitCode> {
    if a.remote.remote {
        return backup_remote(&a);
    }
    if a.verify {
        let keyring = Keyring::from_env_with_retired()?;
        return verify_backup(&a.file, &keyring, a.output.is_json());
    }
    let offline = open_checked(&a.data, Keyring::from_env()?)?;
    // Written beside the target (mode 0600), then renamed: never a half
    // backup under the final name. Made before the audit record, so a
    // path that cannot be written records no backup.
    let mut file = backup_target(&a.file)?;
    let target = match &file {
        Some(_) => a.file.display().to_string(),
        None => "stdout".to_string(),
    };
    let entries = match file.take() {
        None => offline.backup(&target, std::io::stdout().lock())?,
        Some(mut file) => {
            let n = offline.backup(&target, file.file())?;
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
fn key_named(keyring: &Keyring, info: &BackupInfo) -> String {
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
    let crate::vault::BackupSummary {
        info,
        trees: entries_per_tree,
    } = crate::vault::inspect_backup(file, keyring)
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
pub(super) fn check_backups(files: &[std::path::PathBuf], json: bool) -> anyhow::Result<ExitCode> {
    let keyring = Keyring::from_env_with_retired()?;
    let mut all_ok = true;
    let mut found = Vec::new();
    for path in files {
        let read = crate::vault::inspect_backup_file(path, &keyring);
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
    let at = match (
        &a.data_dir,
        a.database
            .options()
            .map_err(|e| ConfigError(e.to_string()))?,
    ) {
        (_, Some(opts)) => Location::Database(Box::new(opts)),
        (Some(dir), None) => {
            super::owner::refuse_foreign_owner(dir)?;
            Location::dir(dir)
        }
        (None, None) => {
            return Err(ConfigError(
                "give --data-dir DIR or --database-url URL to restore into".into(),
            )
            .into())
        }
    };
    let restored = crate::vault::restore(
        &a.file,
        &at,
        keyring,
        Keyring::from_env,
        a.allow_unauthenticated,
    )?;
    if let Some(fingerprint) = &restored.rekeyed_under {
        eprintln!(
            "keyhold: the backup was made under a retired key: what it holds is now \
             re-encrypted under the newest active key ({fingerprint})"
        );
    }
    let report = restored.report;
    eprintln!(
        "keyhold: restored {} entries into {at}; audit chain: {report}",
        restored.info.entries
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

/// `keyhold backup --remote FILE`: downloads a backup from the server
/// (`GET /api/admin/backup`, an admin token) into FILE, made new beside it
/// with mode 0600 and renamed over it only when the whole backup is in
/// (`-`: stdout). Client errors exit 2 (setup) or 1; a transfer that
/// breaks off leaves nothing under FILE and exits 1.
fn backup_remote(a: &BackupArgs) -> anyhow::Result<ExitCode> {
    let client = match super::remote_commands::connect(&a.remote.client) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keyhold: error: {e}");
            return Ok(super::remote_commands::client_exit(&e));
        }
    };
    // Before the request: a path that cannot be written asks the server
    // for no snapshot.
    let mut file = backup_target(&a.file)?;
    let mut answer = match client.backup() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keyhold: error: {e}");
            return Ok(super::remote_commands::client_exit(&e));
        }
    };
    let (target, bytes) = match file.as_mut() {
        Some(f) => (
            a.file.display().to_string(),
            download(&mut answer, f.file())
                .with_context(|| format!("no backup was written to {}", a.file.display()))?,
        ),
        None => (
            "stdout".to_string(),
            download(&mut answer, &mut std::io::stdout().lock())?,
        ),
    };
    if let Some(f) = file {
        f.commit()
            .with_context(|| format!("cannot write the backup {}", a.file.display()))?;
    }
    eprintln!("keyhold: downloaded a backup of {bytes} bytes to {target}");
    Ok(ExitCode::SUCCESS)
}

/// Copies a backup's body to `out`: it must begin as a backup does and
/// arrive whole. Returns its length.
fn download(body: &mut impl Read, out: &mut impl Write) -> anyhow::Result<u64> {
    let magic = crate::vault::BACKUP_MAGIC;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => anyhow::bail!(
                "the download broke off after {total} bytes ({e}): run the backup again"
            ),
        };
        // The first bytes, checked before any is written: an answer that
        // is not a backup (a proxy's page) is never saved as one.
        let seen = total as usize;
        if seen < magic.len() {
            let upto = (magic.len() - seen).min(n);
            if buf[..upto] != magic[seen..seen + upto] {
                anyhow::bail!(
                    "the server's answer is not a keyhold backup (no KEYHOLD-BACKUP header): \
                     check that KEYHOLD_ADDR (--addr) points at keyhold itself"
                );
            }
        }
        out.write_all(&buf[..n])
            .context("cannot write the backup")?;
        total += n as u64;
    }
    if total < magic.len() as u64 {
        anyhow::bail!(
            "the server's answer ended after {total} bytes, before a backup's header: run \
             the backup again"
        );
    }
    out.flush().context("cannot write the backup")?;
    Ok(total)
}
