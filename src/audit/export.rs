//! Export: the log as JSON Lines or CSV, filtered, oldest first, streamed
//! record by record so memory stays flat whatever the log's size.

use std::io::Write as _;

use uuid::Uuid;

use super::{Action, AuditRecord, Outcome};
use crate::store::{Store, StoreError};

/// Output format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportFormat {
    #[default]
    Jsonl,
    Csv,
}

impl ExportFormat {
    pub fn parse(s: &str) -> Option<ExportFormat> {
        match s {
            "jsonl" | "json" | "ndjson" => Some(ExportFormat::Jsonl),
            "csv" => Some(ExportFormat::Csv),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "jsonl",
            ExportFormat::Csv => "csv",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// Which records an export holds. Every field narrows the selection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportFilter {
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
    pub key_id: Option<Uuid>,
    pub caller: Option<String>,
    pub outcome: Option<Outcome>,
    pub action: Option<Action>,
}

/// A filter value that does not parse; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(pub String);

impl ExportFilter {
    /// Sets one filter by name. Returns `Ok(false)` for a name that is not
    /// a filter.
    pub fn set(&mut self, name: &str, value: &str) -> Result<bool, FilterError> {
        let time = |v: &str| {
            crate::time::parse_rfc3339(v).ok_or_else(|| {
                FilterError(format!(
                    "`{name}` must be an RFC 3339 time, for example 2026-11-28T00:00:00Z"
                ))
            })
        };
        match name {
            "since" => self.since_us = Some(time(value)?),
            "until" => self.until_us = Some(time(value)?),
            "key_id" => {
                self.key_id = Some(
                    Uuid::parse_str(value)
                        .map_err(|_| FilterError("`key_id` must be a UUID".into()))?,
                )
            }
            "caller" => self.caller = Some(value.to_string()),
            "outcome" => {
                self.outcome = Some(Outcome::parse(value).ok_or_else(|| {
                    FilterError(format!(
                        "`outcome` must be one of: {}",
                        Outcome::ALL.map(|o| o.as_str()).join(", ")
                    ))
                })?)
            }
            "action" => {
                self.action = Some(Action::parse(value).ok_or_else(|| {
                    FilterError(format!(
                        "`action` must be one of: {}",
                        Action::ALL.map(|a| a.as_str()).join(", ")
                    ))
                })?)
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub fn is_empty(&self) -> bool {
        *self == ExportFilter::default()
    }

    pub fn matches(&self, r: &AuditRecord) -> bool {
        self.since_us.is_none_or(|s| r.at_us >= s)
            && self.until_us.is_none_or(|u| r.at_us < u)
            && self.key_id.is_none_or(|k| r.event.key_id == Some(k))
            && self.caller.as_deref().is_none_or(|c| {
                r.event.caller == c
                    || r.event.caller_id.map(|i| i.to_string()).as_deref() == Some(c)
            })
            && self.outcome.is_none_or(|o| r.event.outcome == o)
            && self.action.is_none_or(|a| r.event.action == a)
    }

    /// A short description for the export's own audit record.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = self.since_us {
            parts.push(format!("since={}", crate::time::to_rfc3339(s)));
        }
        if let Some(u) = self.until_us {
            parts.push(format!("until={}", crate::time::to_rfc3339(u)));
        }
        if let Some(k) = self.key_id {
            parts.push(format!("key_id={k}"));
        }
        if let Some(c) = &self.caller {
            parts.push(format!("caller={c}"));
        }
        if let Some(o) = self.outcome {
            parts.push(format!("outcome={}", o.as_str()));
        }
        if let Some(a) = self.action {
            parts.push(format!("action={}", a.as_str()));
        }
        if parts.is_empty() {
            "unfiltered".into()
        } else {
            parts.join(" ")
        }
    }
}

/// Errors while exporting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot encode a record as CSV: {0}")]
    Csv(#[from] csv::Error),
}

/// Streams records of a store into a writer.
pub struct Exporter<'a> {
    store: &'a Store,
    filter: ExportFilter,
    format: ExportFormat,
}

impl<'a> Exporter<'a> {
    pub fn new(store: &'a Store, filter: ExportFilter, format: ExportFormat) -> Exporter<'a> {
        Exporter {
            store,
            filter,
            format,
        }
    }

    /// Writes the export, calling `progress` with each seq scanned; returns
    /// how many records were written.
    pub fn write_to<W: std::io::Write>(
        &self,
        out: W,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, ExportError> {
        let mut written = 0u64;
        match self.format {
            ExportFormat::Jsonl => {
                let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
                for item in self.store.audit_iter(0) {
                    let (seq, bytes) = item?;
                    progress(seq);
                    match AuditRecord::decode(&bytes) {
                        Ok(rec) if !self.filter.matches(&rec) => continue,
                        Ok(rec) => serde_json::to_writer(&mut out, &rec.to_export())
                            .map_err(std::io::Error::other)?,
                        // A damaged record is shown, not skipped, and the
                        // export goes on: an auditor needs the rest most
                        // when something is wrong.
                        Err(e) => serde_json::to_writer(
                            &mut out,
                            &serde_json::json!({"seq": seq, "error": format!("{UNDECODABLE}: {e}")}),
                        )
                        .map_err(std::io::Error::other)?,
                    }
                    out.write_all(b"\n")?;
                    written += 1;
                }
                out.flush()?;
            }
            ExportFormat::Csv => {
                // The header is written here, once, whatever the rows are.
                let mut w = csv::WriterBuilder::new()
                    .has_headers(false)
                    .buffer_capacity(64 * 1024)
                    .from_writer(out);
                w.write_record(EXPORT_COLUMNS)?;
                for item in self.store.audit_iter(0) {
                    let (seq, bytes) = item?;
                    progress(seq);
                    match AuditRecord::decode(&bytes) {
                        Ok(rec) if !self.filter.matches(&rec) => continue,
                        Ok(rec) => w.serialize(rec.to_export())?,
                        Err(e) => {
                            let seq = seq.to_string();
                            let detail = format!("{UNDECODABLE}: {e}");
                            let mut row = vec![""; EXPORT_COLUMNS.len()];
                            row[0] = &seq;
                            row[12] = &detail;
                            w.write_record(&row)?;
                        }
                    }
                    written += 1;
                }
                w.flush()?;
            }
        }
        Ok(written)
    }
}

/// How an export shows a stored record that does not decode.
const UNDECODABLE: &str = "UNDECODABLE RECORD (damaged or altered; run `keyhold audit verify`)";

/// The column names, in order (the CSV header).
pub const EXPORT_COLUMNS: [&str; 18] = [
    "seq",
    "at",
    "request_id",
    "action",
    "key_id",
    "provider",
    "caller",
    "caller_id",
    "ip",
    "peer",
    "outcome",
    "count",
    "detail",
    "prev",
    "mac",
    "tag",
    "sig",
    "node",
];
