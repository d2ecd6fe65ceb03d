//! `keyhold audit export|verify|public-key` offline: the store (and the
//! keyring) read here, or an export file (`--remote` forms in `remote`).

use std::io::Write;

use std::process::ExitCode;

use anyhow::Context;

use super::common::{anchor_report, filter_pairs, parse_anchor, print_reports, verify_reader};
use crate::audit::{
    self, Action, AuditEvent, AuditKeys, AuditRecord, ExportFilter, ExportFormat, Exporter,
    Outcome, PublicKey, VerifyKeys, VerifyReport,
};
use crate::cli::{open_checked, open_log, ConfigError};
use crate::config::{AuditExportArgs, AuditPublicKeyArgs, AuditVerifyArgs, ExportFilterArgs};
use crate::keyring::Keyring;

/// `keyhold audit public-key`: the key that signs the log now.
pub(super) fn public_key(a: AuditPublicKeyArgs) -> anyhow::Result<ExitCode> {
    let keyring = Keyring::from_env()?;
    let store = open_checked(&a.data, &keyring)?;
    let keys = AuditKeys::unseal(&store, &keyring)?;
    let mut out = std::io::stdout().lock();
    if a.output.is_json() {
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({"public_key": keys.public_key().to_string()}),
        )?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}", keys.public_key())?;
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
    let keyring = Keyring::from_env()?;
    let store = open_checked(&a.data, &keyring)?;
    let log = open_log(store.clone(), &keyring)?;
    // The export is itself audited, before it is written.
    let ev = AuditEvent::cli(
        Action::AuditExport,
        Outcome::Success,
        Some(format!("format={} {}", format.as_str(), filter.describe())),
    );
    log.append(&[(ev, vec![])])?;
    let exporter = Exporter::new(&store, filter, format);
    let bar = progress_bar(store.audit_last_seq()?, a.output.is_some());
    let tick = |seq: u64| {
        if seq.is_multiple_of(1024) {
            bar.set_position(seq);
        }
    };
    let written = match &a.output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let n = exporter.write_to(&file, tick)?;
            file.sync_all()
                .with_context(|| format!("cannot write {}", path.display()))?;
            n
        }
        None => {
            let stdout = std::io::stdout();
            let out = stdout.lock();
            exporter.write_to(out, tick)?
        }
    };
    bar.finish_and_clear();
    let (seq, mac) = log.head();
    eprintln!(
        "keyhold: exported {written} audit records; the log's head when the export began was \
         {seq}:{} (verify an unfiltered export with `keyhold audit verify --file FILE --anchor {seq}:{}`)",
        audit::hex(&mac),
        audit::hex(&mac)
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
    let anchors = a
        .anchor
        .iter()
        .map(|s| parse_anchor(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // With a public key, nothing but the file is read: no keyring, no store.
    let (keys, store) =
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
                let keyring = Keyring::from_env()?;
                let store = open_checked(&a.data, &keyring)?;
                let keys = AuditKeys::unseal(&store, &keyring)?.verify_keys();
                (keys, Some(store))
            }
        };
    let mut reports = Vec::new();
    match (&a.file, store) {
        (Some(path), _) => {
            let (report, found) = verify_file(path, &keys, a.filtered, &anchors)?;
            reports.push(report);
            // Anchors given with --file apply to the file: it must hold
            // exactly those records (a cut tail is then caught).
            for ((seq, mac), got) in anchors.iter().zip(found) {
                reports.push(anchor_report(*seq, mac, got, "the file"));
            }
        }
        (None, None) => {
            return Err(ConfigError("--public-key needs --file or --remote".into()).into())
        }
        (None, Some(store)) => {
            reports.push(audit::verify_store(&store, &keys)?);
            for (seq, mac) in &anchors {
                let got = store
                    .audit_iter(*seq)
                    .next()
                    .transpose()?
                    .filter(|(s, _)| s == seq)
                    .and_then(|(_, b)| AuditRecord::decode(&b).ok())
                    .map(|r| r.mac);
                reports.push(anchor_report(*seq, mac, got, "the store"));
            }
        }
    }
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

/// Verifies a JSON Lines export in one pass. By default the file must be
/// a complete, unfiltered export: the whole chain from seq 1, no gap.
/// With `filtered`, each record's MAC is checked, seqs must increase, and
/// `prev` must link wherever two consecutive seqs sit side by side; the
/// report counts the gaps, which a filter makes. Returns the report and,
/// for each anchor, the mac the file holds at its seq.
fn verify_file(
    path: &std::path::Path,
    keys: &VerifyKeys,
    filtered: bool,
    anchors: &[(u64, [u8; 32])],
) -> anyhow::Result<(VerifyReport, Vec<Option<[u8; 32]>>)> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    verify_reader(
        &mut std::io::BufReader::new(file),
        &path.display().to_string(),
        keys,
        filtered,
        anchors,
    )
}
