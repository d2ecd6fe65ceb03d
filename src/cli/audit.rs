//! `keyhold audit export|verify` (offline).

use std::io::{BufRead, Write};

use std::process::ExitCode;

use anyhow::Context;

use super::{open_checked, open_log, ConfigError};
use crate::audit::{
    self, unhex32, Action, AuditEvent, AuditRecord, ChainVerifier, ExportFilter, ExportFormat,
    ExportRecord, Exporter, MacKey, Outcome, Problem, VerifyReport,
};
use crate::config::{AuditCommand, AuditExportArgs, AuditVerifyArgs, ExportFilterArgs};
use crate::keyring::Keyring;

pub fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Export(a) => export(a),
        AuditCommand::Verify(a) => verify(a),
    }
}

fn filter_of(a: &ExportFilterArgs) -> anyhow::Result<ExportFilter> {
    let mut f = ExportFilter::default();
    for (name, v) in [
        ("since", &a.since),
        ("until", &a.until),
        ("key_id", &a.key_id),
        ("caller", &a.caller),
        ("outcome", &a.outcome),
        ("action", &a.action),
    ] {
        if let Some(v) = v {
            f.set(name, v)
                .map_err(|e| ConfigError(format!("--{}: {e}", name.replace('_', "-"))))?;
        }
    }
    Ok(f)
}

fn export(a: AuditExportArgs) -> anyhow::Result<ExitCode> {
    let format = ExportFormat::parse(&a.format)
        .ok_or_else(|| ConfigError("--format must be jsonl or csv".into()))?;
    let filter = filter_of(&a.filter)?;
    let keyring = Keyring::from_env()?;
    let store = open_checked(&a.data.data_dir, &keyring)?;
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
        if seq % 1024 == 0 {
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
    eprintln!("keyhold: exported {written} audit records");
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
    let keyring = Keyring::from_env()?;
    let store = open_checked(&a.data.data_dir, &keyring)?;
    let key = MacKey::unseal(&store, &keyring)?;
    let mut reports = Vec::new();
    match &a.file {
        Some(path) => reports.push(verify_file(path, &key, a.complete)?),
        None => reports.push(audit::verify_store(&store, &key)?),
    }
    for anchor in &a.anchor {
        reports.push(check_anchor(&store, anchor)?);
    }
    let ok = reports.iter().all(VerifyReport::is_ok);
    let mut out = std::io::stdout().lock();
    for r in &reports {
        if a.json {
            serde_json::to_writer(&mut out, r)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{r}")?;
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Verifies a JSON Lines export. An export that starts at seq 1 with no
/// gap is verified as a whole chain; any other is taken as a filtered
/// export: each record's MAC, increasing seqs, and the `prev` link wherever
/// two consecutive seqs sit side by side — the report counts the gaps.
/// With `complete`, a gap is an error instead. Two passes over the file,
/// so memory stays flat.
fn verify_file(
    path: &std::path::Path,
    key: &MacKey,
    complete: bool,
) -> anyhow::Result<VerifyReport> {
    let mut contiguous_from_one = true;
    let mut last = 0u64;
    for (i, line) in read_lines(path)?.enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let rec = match parse_line(&line) {
            Ok(r) => r,
            Err(why) => {
                return Ok(VerifyReport::Broken {
                    seq: last + 1,
                    problem: Problem::Altered,
                    detail: format!("line {} does not parse: {why}", i + 1),
                })
            }
        };
        if rec.seq != last + 1 {
            contiguous_from_one = false;
        }
        last = rec.seq;
    }
    let mut v = if contiguous_from_one || complete {
        ChainVerifier::new(key.clone())
    } else {
        ChainVerifier::filtered(key.clone())
    };
    for line in read_lines(path)? {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let rec = parse_line(&line).map_err(|e| anyhow::anyhow!(e))?;
        if let Some(report) = v.feed(rec) {
            return Ok(report);
        }
    }
    Ok(v.finish(None))
}

fn read_lines(
    path: &std::path::Path,
) -> anyhow::Result<impl Iterator<Item = std::io::Result<String>>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(std::io::BufReader::new(file).lines())
}

fn parse_line(line: &str) -> Result<AuditRecord, String> {
    let e: ExportRecord = serde_json::from_str(line).map_err(|e| e.to_string())?;
    AuditRecord::from_export(&e)
}

/// `SEQ:MAC` — the store must hold exactly this record at this seq.
fn check_anchor(store: &crate::store::Store, anchor: &str) -> anyhow::Result<VerifyReport> {
    let (seq, mac) = anchor
        .split_once(':')
        .and_then(|(s, m)| Some((s.trim().parse::<u64>().ok()?, unhex32(m.trim())?)))
        .ok_or_else(|| {
            ConfigError(format!(
                "--anchor `{anchor}`: write SEQ:MAC, for example 42:<64 hex digits>"
            ))
        })?;
    let found = store
        .audit_iter(seq)
        .next()
        .transpose()?
        .filter(|(s, _)| *s == seq)
        .and_then(|(_, b)| AuditRecord::decode(&b).ok());
    Ok(match found {
        Some(r) if crate::access::digests_equal(&r.mac, &mac) => VerifyReport::Ok {
            records: 1,
            head_seq: seq,
            head_mac: audit::hex(&mac),
            gaps_expected: false,
            gaps: 0,
        },
        Some(_) => VerifyReport::Broken {
            seq,
            problem: Problem::Altered,
            detail:
                "the store's record at this seq differs from the anchor (rolled back or replaced)"
                    .into(),
        },
        None => VerifyReport::Broken {
            seq,
            problem: Problem::Truncated,
            detail: "the store holds no record at the anchor's seq (rolled back to an older copy?)"
                .into(),
        },
    })
}
