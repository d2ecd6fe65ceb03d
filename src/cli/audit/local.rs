//! `keyhold audit export|verify|public-key` offline: the store (and the
//! keyring) read here, or an export file (`--remote` forms in `remote`).

use std::io::Write;

use std::process::ExitCode;

use anyhow::Context;

use super::common::{filter_pairs, parse_anchors, print_reports};
use crate::cli::{open_checked, ConfigError};
use crate::config::{AuditExportArgs, AuditPublicKeyArgs, AuditVerifyArgs, ExportFilterArgs};
use crate::keyring::Keyring;
use crate::vault::{hex, verify_export, ExportFilter, ExportFormat, PublicKey, VerifyKeys};

/// `keyhold audit public-key`: the key that signs the log now.
pub(super) fn public_key(a: AuditPublicKeyArgs) -> anyhow::Result<ExitCode> {
    let key = open_checked(&a.data, Keyring::from_env()?)?.public_key()?;
    let mut out = std::io::stdout().lock();
    if a.output.is_json() {
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({"public_key": key.to_string()}),
        )?;
        writeln!(out)?;
    } else {
        writeln!(out, "{key}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn filter_of(a: &ExportFilterArgs) -> anyhow::Result<ExportFilter> {
    let mut f = ExportFilter::default();
    for (name, v) in filter_pairs(a) {
        if let Some(v) = v {
            f.set(name, v)
                .map_err(|e| ConfigError(format!("--{}: {e}", name.replace('_', "-"))))?;
        }
    }
    Ok(f)
}

pub(super) fn export(a: AuditExportArgs) -> anyhow::Result<ExitCode> {
    let format = match a.format {
        crate::config::ExportFormatArg::Jsonl => ExportFormat::Jsonl,
        crate::config::ExportFormatArg::Csv => ExportFormat::Csv,
    };
    let filter = filter_of(&a.filter)?;
    let offline = open_checked(&a.data, Keyring::from_env()?)?;
    let bar = progress_bar(offline.audit_last_seq()?, a.output.is_some());
    let tick = |seq: u64| {
        if seq.is_multiple_of(1024) {
            bar.set_position(seq);
        }
    };
    let (written, (seq, mac)) = match &a.output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let done = offline.export(filter, format, &file, tick)?;
            file.sync_all()
                .with_context(|| format!("cannot write {}", path.display()))?;
            done
        }
        None => {
            let stdout = std::io::stdout();
            let out = stdout.lock();
            offline.export(filter, format, out, tick)?
        }
    };
    bar.finish_and_clear();
    eprintln!(
        "keyhold: exported {written} audit records; the log's head when the export began was \
         {seq}:{} (verify an unfiltered export with `keyhold audit verify --file FILE --anchor {seq}:{}`)",
        hex(&mac),
        hex(&mac)
    );
    Ok(ExitCode::SUCCESS)
}

/// The export's progress bar: on a terminal, unless the export itself goes
/// to that terminal.
fn progress_bar(total: u64, to_file: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !to_file && std::io::stdout().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    crate::cli::progress_bar(total, "exporting")
}

pub(super) fn verify(a: AuditVerifyArgs) -> anyhow::Result<ExitCode> {
    let anchors = parse_anchors(&a.anchor)?;
    // With a public key, nothing but the file is read: no keyring, no store.
    let (keys, offline) =
        match &a.public_key {
            Some(_) if a.file.is_none() => return Err(ConfigError(
                "--public-key verifies an export: give --file EXPORT.jsonl, or --remote to verify \
                 the running server's log"
                    .into(),
            )
            .into()),
            Some(text) => {
                let key: PublicKey = text
                    .parse()
                    .map_err(|e| ConfigError(format!("--public-key: {e}")))?;
                if a.filtered {
                    return Err(ConfigError(
                    "a filtered export cannot be verified with the public key alone (the records \
                     between its records are not in the file): verify it with the keyring \
                     (FERNET_KEY set, without --public-key), or verify an unfiltered export with \
                     the public key"
                        .into(),
                )
                .into());
                }
                (VerifyKeys::public(key), None)
            }
            None => {
                let offline = open_checked(&a.data, Keyring::from_env()?)?;
                (offline.verify_keys()?, Some(offline))
            }
        };
    let reports = match (&a.file, offline) {
        // Anchors given with --file apply to the file: it must hold
        // exactly those records (a cut tail is then caught).
        (Some(path), _) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            verify_export(
                &mut std::io::BufReader::new(file),
                &path.display().to_string(),
                "the file",
                &keys,
                a.filtered,
                &anchors,
            )?
        }
        (None, None) => {
            return Err(ConfigError("--public-key needs --file or --remote".into()).into())
        }
        (None, Some(offline)) => offline.verify_log_anchored(&anchors)?,
    };
    let ok = print_reports(&reports, a.output.is_json())?;
    let mut out = std::io::stdout().lock();
    // A file that verifies may still end early: cut after one of its
    // signed commits, it verifies just the same. Only a later anchor
    // rules that out.
    if ok && a.file.is_some() && anchors.is_empty() && !a.filtered {
        let note = "note: records after the file's last signed commit could have been cut at a \
                    commit boundary without this verification seeing it; give --anchor SEQ:MAC \
                    from a later head to rule that out";
        if a.output.is_json() {
            eprintln!("keyhold: {note}");
        } else {
            writeln!(out, "{note}")?;
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
