//! What the offline and `--remote` forms of `keyhold audit` share: the
//! filter flags by name, the anchors, and the printed reports (the
//! verification itself is the vault's, `vault::verify_export`).

use std::io::Write;

use crate::cli::ConfigError;
use crate::config::ExportFilterArgs;
use crate::vault::{Anchor, VerifyReport};

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

/// The `--anchor SEQ:MAC` values.
pub(super) fn parse_anchors(given: &[String]) -> anyhow::Result<Vec<Anchor>> {
    given.iter().map(|s| parse_anchor(s)).collect()
}

pub(super) fn parse_anchor(anchor: &str) -> anyhow::Result<Anchor> {
    crate::vault::parse_anchor(anchor).ok_or_else(|| {
        ConfigError(format!(
            "--anchor `{anchor}`: write SEQ:MAC, for example 42:<64 hex digits>"
        ))
        .into()
    })
}
