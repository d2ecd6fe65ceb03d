//! `keyhold rotate`, `keyhold check` and `keyhold import` (offline;
//! `rotate --remote` through a running server). Backups: `backups`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::{open_checked, progress_bar, ConfigError};
use crate::config::{CheckArgs, ImportArgs, RotateArgs};
use crate::keyring::Keyring;
use crate::vault::{CheckReport, ImportFormat, ImportOptions};

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
        let client = match super::remote_commands::connect(&a.remote.client) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("keyhold: error: {e}");
                return Ok(super::remote_commands::client_exit(&e));
            }
        };
        let answer = client.admin_post::<crate::wire::RotateReport>(
            "/api/admin/rotate",
            super::keyring_commands::ADMIN_TIMEOUT,
        );
        return match answer {
            Ok(report) => {
                super::table::print_json(&mut std::io::stdout().lock(), &report)?;
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("keyhold: error: {e}");
                Ok(super::remote_commands::client_exit(&e))
            }
        };
    }
    let offline = open_checked(&a.data, Keyring::from_env()?)?;
    // The new key is on disk, durably, before any record is re-encrypted
    // under it: a crash or a closed shell cannot take it away.
    let offline = if a.new_key {
        let keyring = new_key_first(offline.keyring())?;
        offline.rekeyed(keyring)
    } else {
        offline
    };
    if offline.keyring().len() < 2 {
        eprintln!(
            "keyhold: the keyring holds one key, so everything is already under it; to rotate, \
             run `keyhold rotate --new-key` with FERNET_KEY_FILE, or set FERNET_KEYS=new,old"
        );
    }
    let bar = progress_bar(offline.key_count(), "rotating");
    // Keys are re-encrypted one by one before the rotation is recorded: a
    // failure of storage or of the audit log leaves it partly done.
    let rotated = offline
        .rotate(Duration::from_millis(a.pace_ms), |n| bar.set_position(n))
        .map_err(|e| match e {
            crate::vault::OfflineError::Refused(r) => anyhow::Error::new(
                super::refusal::CliRefusal::during(r, super::refusal::Work::Rotation),
            ),
            other => anyhow::Error::new(other),
        })?;
    bar.finish_and_clear();
    if let Some(k) = &rotated.new_public_key {
        eprintln!("keyhold: the audit log is now signed by {k} (the old key signed the hand-over)");
    }
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
        return super::backups::check_backups(&a.backups, a.output.is_json());
    }
    let keyring = Keyring::from_env()?;
    // Damage is what check reports, not an error. A keyring that opens
    // nothing is not: every other line would be empty ("0 of 0 keys"), so
    // it is the error (exit 2) that says which keyring to set.
    let report = crate::vault::Offline::check(&super::location(&a.data)?, &keyring)?;
    let mut out = std::io::stdout().lock();
    if a.output.is_json() {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        for line in check_lines(&report) {
            writeln!(out, "{line}")?;
        }
    }
    Ok(if report.all_well() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `keyhold check`'s findings, a line each.
fn check_lines(report: &CheckReport) -> Vec<String> {
    let mark = |ok: bool| if ok { "ok  " } else { "FAIL" };
    let mut out = vec![format!(
        "{} the keyring opens the store's check value",
        mark(report.keyring_opens_store)
    )];
    out.push(format!(
        "{} {} of {} keys decrypt with the keyring",
        mark(report.keys_failed.is_empty()),
        report.keys_ok,
        report.keys_total
    ));
    for id in report.keys_failed.iter().take(50) {
        out.push(format!("       does not decrypt: {id}"));
    }
    out.push(format!(
        "{} every key and token record passes its integrity check",
        mark(report.tampered.is_empty())
    ));
    for what in report.tampered.iter().take(50) {
        out.push(format!(
            "       tampered (written or changed outside keyhold; restore from a backup): {what}"
        ));
    }
    if report.rotation_unfinished {
        out.push(format!(
            "{} a rotation stopped before every record was authenticated under its new record \
             MAC secret: run `keyhold rotate` again to finish it",
            mark(false)
        ));
    }
    out.push(if report.on_older_key == 0 {
        format!("{} nothing needs an older key of the keyring", mark(true))
    } else {
        format!(
            "{} {} records still need an older key: run `keyhold rotate` before retiring it",
            mark(false),
            report.on_older_key
        )
    });
    out.push(format!(
        "{} the store matches the state its signed audit log last recorded",
        mark(report.state.is_empty())
    ));
    for what in &report.state {
        out.push(format!("       {what}"));
    }
    for what in report.stale.iter().take(50) {
        out.push(format!(
            "       older copy put back (restore from a backup): {what}"
        ));
    }
    if !report.key_names.is_empty() {
        out.push(format!(
            "WARN {} keys have names the API refuses today (they can look like another key's \
             name in listings: store them again under a plain name, then delete these)",
            report.key_names.len()
        ));
        for what in report.key_names.iter().take(50) {
            out.push(format!("       {what}"));
        }
    }
    match &report.audit {
        Some(r) => out.push(format!("{} audit chain: {r}", mark(r.is_ok()))),
        None => out.push(format!(
            "{} audit chain: the keyring cannot open the audit signing key",
            mark(false)
        )),
    }
    out
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
    let offline = open_checked(&a.data, Keyring::from_env()?)?;
    let file = std::fs::File::open(&a.from)
        .with_context(|| format!("cannot open {}", a.from.display()))?;
    let reference = match &a.reference_key_file {
        Some(path) => Some(read_reference_key(path)?),
        None => None,
    };
    let options = ImportOptions {
        reference: reference.as_ref(),
        lowercase_providers: a.providers_lowercase,
    };
    let plan = offline.plan_import(std::io::BufReader::new(file), format, options)?;
    let report = if a.dry_run {
        let mut r = plan.report;
        r.dry_run = true;
        r
    } else {
        let bar = progress_bar(plan.report.imported, "importing");
        let source = a.from.display().to_string();
        let r = offline.apply_import(plan, &source, |n| bar.set_position(n))?;
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
