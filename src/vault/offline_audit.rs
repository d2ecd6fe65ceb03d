//! Verifying the audit log without a server: the store's chain, or a JSON
//! Lines export (a file, or a server's export streamed in), each against
//! anchors (`SEQ:MAC` heads kept from earlier) that a cut or rolled-back
//! log cannot match.
//!
//! Not for: flags, the terminal, fetching an export (the client does).

use std::io::{BufRead, Read};

use super::offline::{Offline, OfflineError};
use crate::audit::{
    hex, unhex32, AuditKeys, AuditRecord, ChainVerifier, ExportRecord, Problem, VerifyKeys,
    VerifyReport,
};

/// A head kept from earlier: the record at `seq` must have this MAC.
pub(crate) type Anchor = (u64, Mac);

/// Reads `SEQ:MAC` (MAC as 64 hex digits); `None` if it is not one.
pub(crate) fn parse_anchor(text: &str) -> Option<Anchor> {
    text.split_once(':')
        .and_then(|(s, m)| Some((s.trim().parse::<u64>().ok()?, unhex32(m.trim())?)))
}

/// A record's MAC.
type Mac = [u8; 32];

/// The longest line of an export (a record is at most a few KiB).
const MAX_LINE: u64 = 1 << 20;

/// Verifies a JSON Lines stream (an export file, or a server's export);
/// `name` says where the lines come from in messages and `holder` in the
/// anchors' reports ("the file").
///
/// By default the stream must be a complete, unfiltered export: the whole
/// chain from seq 1, no gap. With `filtered`, each record's MAC is
/// checked, seqs must increase, and `prev` must link wherever two
/// consecutive seqs sit side by side; the report counts the gaps, which a
/// filter makes. Returns the chain's report, then one for each anchor:
/// the stream must hold exactly that record (a cut tail is then caught).
pub(crate) fn verify_export(
    input: &mut dyn BufRead,
    name: &str,
    holder: &str,
    keys: &VerifyKeys,
    filtered: bool,
    anchors: &[Anchor],
) -> Result<Vec<VerifyReport>, OfflineError> {
    let (report, found) = verify_lines(input, name, keys, filtered, anchors)?;
    let mut reports = vec![report];
    for ((seq, mac), got) in anchors.iter().zip(found) {
        reports.push(anchor_report(*seq, mac, got, holder));
    }
    Ok(reports)
}

/// The chain's report, and for each anchor the mac the stream holds at
/// its seq.
fn verify_lines(
    input: &mut dyn BufRead,
    name: &str,
    keys: &VerifyKeys,
    filtered: bool,
    anchors: &[Anchor],
) -> Result<(VerifyReport, Vec<Option<Mac>>), OfflineError> {
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
            .map_err(|source| OfflineError::File {
                what: format!("read {name}"),
                source,
            })?;
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
            return Err(OfflineError::CsvExport {
                name: name.to_string(),
            });
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

/// Whether `got` (the mac held at `seq`, if any) matches the anchor.
fn anchor_report(seq: u64, mac: &[u8; 32], got: Option<[u8; 32]>, holder: &str) -> VerifyReport {
    match got {
        Some(g) if crate::access::digests_equal(&g, mac) => VerifyReport::Ok {
            records: 1,
            head_seq: seq,
            head_mac: hex(mac),
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

impl Offline {
    /// What verifying this store's log (or an export of it) takes: its
    /// keys, read without opening the log (a damaged chain is reported).
    pub(crate) fn verify_keys(&self) -> Result<VerifyKeys, OfflineError> {
        Ok(AuditKeys::unseal(self.store(), self.keyring())?.verify_keys())
    }

    /// Verifies the store's chain, then each anchor against the record
    /// the store holds at its seq.
    pub(crate) fn verify_log_anchored(
        &self,
        anchors: &[Anchor],
    ) -> Result<Vec<VerifyReport>, OfflineError> {
        let store = self.store();
        let mut reports = vec![crate::audit::verify_store(store, &self.verify_keys()?)?];
        for (seq, mac) in anchors {
            let got = store
                .audit_iter(*seq)
                .next()
                .transpose()?
                .filter(|(s, _)| s == seq)
                .and_then(|(_, b)| AuditRecord::decode(&b).ok())
                .map(|r| r.mac);
            reports.push(anchor_report(*seq, mac, got, "the store"));
        }
        Ok(reports)
    }
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
        let reports =
            super::verify_export(&mut input, "the stream", "it", &keys, false, &[]).unwrap();
        assert!(!reports[0].is_ok());
        assert!(
            reports[0].to_string().contains("longer than"),
            "{}",
            reports[0]
        );
    }
}
