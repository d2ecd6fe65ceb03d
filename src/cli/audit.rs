//! `keyhold audit export|verify|public-key` (offline; `--remote` forms in
//! `audit_remote`).

use std::io::{BufRead, Read, Write};

use std::process::ExitCode;

use anyhow::Context;

use super::{open_checked, open_log, ConfigError};
use crate::audit::{
    self, unhex32, Action, AuditEvent, AuditKeys, AuditRecord, ChainVerifier, ExportFilter,
    ExportFormat, ExportRecord, Exporter, Outcome, Problem, PublicKey, VerifyKeys, VerifyReport,
};
use crate::config::{
    AuditCommand, AuditExportArgs, AuditPublicKeyArgs, AuditVerifyArgs, ExportFilterArgs,
};
use crate::keyring::Keyring;

pub(super) fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Export(a) if a.remote.remote => super::audit_remote::export(a),
        AuditCommand::Verify(a) if a.remote.remote => {
            let anchors = a
                .anchor
                .iter()
                .map(|s| parse_anchor(s))
                .collect::<anyhow::Result<Vec<_>>>()?;
            super::audit_remote::verify(a, anchors)
        }
        AuditCommand::PublicKey(a) if a.remote.remote => super::audit_remote::public_key(a),
        AuditCommand::Export(a) => export(a),
        AuditCommand::Verify(a) => verify(a),
        AuditCommand::PublicKey(a) => public_key(a),
    }
}

/// `keyhold audit public-key`: the key that signs the log now.
fn public_key(a: AuditPublicKeyArgs) -> anyhow::Result<ExitCode> {
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

/// The filter flags by the name the export's filter (and route) gives
/// them.
pub(super) fn filter_pairs(a: &ExportFilterArgs) -> [(&'static str, &Option<String>); 6] {
    [
        ("since", &a.since),
        ("until", &a.until),
        ("key_id", &a.key_id),
        ("caller", &a.caller),
        ("outcome", &a.outcome),
        ("action", &a.action),
    ]
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

fn export(a: AuditExportArgs) -> anyhow::Result<ExitCode> {
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
    super::progress_bar(total, "exporting")
}

fn verify(a: AuditVerifyArgs) -> anyhow::Result<ExitCode> {
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

/// Prints the reports (one JSON line each, or text); whether all are ok.
pub(super) fn print_reports(reports: &[VerifyReport], json: bool) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    for r in reports {
        if json {
            serde_json::to_writer(&mut out, r)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{r}")?;
        }
    }
    Ok(reports.iter().all(VerifyReport::is_ok))
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

/// The longest line of an export (a record is at most a few KiB).
const MAX_LINE: u64 = 1 << 20;

/// [`verify_file`] on any stream of lines; `name` says where they come
/// from in messages.
pub(super) fn verify_reader(
    input: &mut dyn BufRead,
    name: &str,
    keys: &VerifyKeys,
    filtered: bool,
    anchors: &[(u64, [u8; 32])],
) -> anyhow::Result<(VerifyReport, Vec<Option<[u8; 32]>>)> {
    let mut v = if filtered {
        ChainVerifier::filtered(keys.clone())
    } else {
        ChainVerifier::new(keys.clone())
    };
    let mut found = vec![None; anchors.len()];
    let mut last = 0u64;
    // A line is read with a cap: a stream from a server being verified
    // (`--remote`) is not trusted to ever send a newline.
    let mut raw = Vec::new();
    for i in 0.. {
        raw.clear();
        let n = (&mut *input)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut raw)
            .with_context(|| format!("cannot read {name}"))?;
        if n == 0 {
            break;
        }
        if raw.len() as u64 > MAX_LINE {
            let report = VerifyReport::Broken {
                seq: last + 1,
                problem: Problem::Altered,
                detail: format!(
                    "line {} is longer than {} bytes: not an audit record",
                    i + 1,
                    MAX_LINE
                ),
            };
            return Ok((report, found));
        }
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        if i == 0 && line.starts_with("seq,at,") {
            return Err(ConfigError(format!(
                "{name} is a CSV export: verification reads JSON Lines; export again with \
                 `keyhold audit export --format jsonl`"
            ))
            .into());
        }
        let rec = match parse_line(line) {
            Ok(r) => r,
            Err(why) => {
                let report = VerifyReport::Broken {
                    seq: last + 1,
                    problem: Problem::Altered,
                    detail: format!("line {} is not an audit record: {why}", i + 1),
                };
                return Ok((report, found));
            }
        };
        last = rec.seq;
        for (slot, (seq, _)) in found.iter_mut().zip(anchors) {
            if rec.seq == *seq {
                *slot = Some(rec.mac);
            }
        }
        if let Some(mut report) = v.feed(rec) {
            if let VerifyReport::Broken {
                problem: Problem::Missing,
                detail,
                ..
            } = &mut report
            {
                detail.push_str(" (if this export was filtered, verify it with --filtered)");
            }
            return Ok((report, found));
        }
    }
    if last == 0 {
        // Nothing to vouch for, filtered or not.
        let report = VerifyReport::Broken {
            seq: 1,
            problem: Problem::Truncated,
            detail: format!(
                "{name} holds no records (an empty file proves nothing): export the log again, or \
                 check that the right file was given"
            ),
        };
        return Ok((report, found));
    }
    Ok((v.finish(), found))
}

pub(super) fn parse_anchor(anchor: &str) -> anyhow::Result<(u64, [u8; 32])> {
    anchor
        .split_once(':')
        .and_then(|(s, m)| Some((s.trim().parse::<u64>().ok()?, unhex32(m.trim())?)))
        .ok_or_else(|| {
            ConfigError(format!(
                "--anchor `{anchor}`: write SEQ:MAC, for example 42:<64 hex digits>"
            ))
            .into()
        })
}

/// Whether `got` (the mac held at `seq`, if any) matches the anchor.
pub(super) fn anchor_report(
    seq: u64,
    mac: &[u8; 32],
    got: Option<[u8; 32]>,
    holder: &str,
) -> VerifyReport {
    match got {
        Some(g) if crate::access::digests_equal(&g, mac) => VerifyReport::Ok {
            records: 1,
            head_seq: seq,
            head_mac: audit::hex(mac),
            gaps_expected: false,
            gaps: 0,
            signed_by: None,
            legacy_unchecked: 0,
        },
        Some(_) => VerifyReport::Broken {
            seq,
            problem: Problem::Altered,
            detail: format!("{holder}'s record at this seq differs from the anchor (rolled back or replaced)"),
        },
        None => VerifyReport::Broken {
            seq,
            problem: Problem::Truncated,
            detail: format!("{holder} holds no record at the anchor's seq (cut, or rolled back to an older copy)"),
        },
    }
}

/// Why a line of an export is not an audit record.
#[derive(Debug, thiserror::Error)]
enum BadLine {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Field(#[from] crate::audit::BadExportRecord),
}

fn parse_line(line: &str) -> Result<AuditRecord, BadLine> {
    let e: ExportRecord = serde_json::from_str(line)?;
    Ok(AuditRecord::from_export(&e)?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_endless_line_is_refused_without_reading_it_whole() {
        let keys = crate::audit::VerifyKeys::public(
            "ed25519:0000000000000000000000000000000000000000000000000000000000000000"
                .parse()
                .unwrap(),
        );
        let mut endless = std::io::Read::take(std::io::repeat(b'a'), 64 << 20);
        let mut input = std::io::BufReader::new(&mut endless);
        let (report, _) =
            super::verify_reader(&mut input, "the stream", &keys, false, &[]).unwrap();
        assert!(!report.is_ok());
        assert!(report.to_string().contains("longer than"), "{report}");
    }
}
