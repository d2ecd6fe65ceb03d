//! What the offline and `--remote` forms of `keyhold audit` share: the
//! filter flags by name, the verification of a JSON Lines stream against
//! anchors, and the printed reports.

use std::io::{BufRead, Read, Write};

use anyhow::Context;

use crate::audit::{
    self, unhex32, AuditRecord, ChainVerifier, ExportRecord, Problem, VerifyKeys, VerifyReport,
};
use crate::cli::ConfigError;
use crate::config::ExportFilterArgs;

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

/// The longest line of an export (a record is at most a few KiB).
const MAX_LINE: u64 = 1 << 20;

/// Verifies a JSON Lines stream (an export file, or a server's
/// export); `name` says where the lines come from in messages. See
/// `local::verify_file` for what `filtered` and `anchors` do.
///
/// The same on any stream of lines; `name` says where they come
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
