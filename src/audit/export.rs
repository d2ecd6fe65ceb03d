//! Export: the log as JSON Lines or CSV, filtered, streamed record by
//! record so memory stays flat whatever the log's size; oldest first, or
//! one page of it (a seq cursor, a limit, newest first on request); and
//! counts of records per hour or day by outcome ([`Histogram`]).
//!
//! Over 500 lines: the filters, both formats (JSON Lines, CSV), paging in
//! either order and the per-hour/day histogram walk the log the same way,
//! and share their tests.

use std::io::Write as _;

use uuid::Uuid;

use super::{Action, AuditRecord, Outcome};
use crate::store::{Store, StoreError};

/// Output format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum ExportFormat {
    #[default]
    Jsonl,
    Csv,
}

impl ExportFormat {
    pub(crate) fn parse(s: &str) -> Option<ExportFormat> {
        match s {
            "jsonl" | "json" | "ndjson" => Some(ExportFormat::Jsonl),
            "csv" => Some(ExportFormat::Csv),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "jsonl",
            ExportFormat::Csv => "csv",
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// Which records an export holds. Every field narrows the selection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ExportFilter {
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
pub(crate) struct FilterError(pub String);

impl ExportFilter {
    /// Sets one filter by name. Returns `Ok(false)` for a name that is not
    /// a filter.
    pub(crate) fn set(&mut self, name: &str, value: &str) -> Result<bool, FilterError> {
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

    pub(crate) fn matches(&self, r: &AuditRecord) -> bool {
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
    pub(crate) fn describe(&self) -> String {
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
            parts.push(format!("caller={}", super::record_text(c)));
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
pub(crate) enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot encode a record as CSV: {0}")]
    Csv(#[from] csv::Error),
}

/// Which part of the filtered log an export holds, and in which order:
/// records with `after_seq < seq < before_seq`, at most `limit` of them.
/// The default is the whole log, oldest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Page {
    pub after_seq: Option<u64>,
    pub before_seq: Option<u64>,
    pub limit: Option<u64>,
    pub newest_first: bool,
}

impl Page {
    /// Largest `limit` a page may ask for.
    pub(crate) const MAX_LIMIT: u64 = 1000;

    /// A short description for the export's own audit record ("" for the
    /// whole log).
    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(a) = self.after_seq {
            parts.push(format!("after_seq={a}"));
        }
        if let Some(b) = self.before_seq {
            parts.push(format!("before_seq={b}"));
        }
        if let Some(l) = self.limit {
            parts.push(format!("limit={l}"));
        }
        if self.newest_first {
            parts.push("order=desc".into());
        }
        parts.join(" ")
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub records: u64,
    /// True when the page's limit stopped the export before the last
    /// matching record: another page follows.
    pub more: bool,
}

/// Records read backwards at most this many at a time (a newest-first
/// page walks the log from its end in windows read oldest first).
const BACKWARD_WINDOW: u64 = 512;

/// Streams records of a store into a writer.
pub(crate) struct Exporter<'a> {
    store: &'a Store,
    filter: ExportFilter,
    format: ExportFormat,
    page: Page,
}

/// One stored record as the walk hands it over: decoded, or why not.
type Item = (u64, Result<AuditRecord, Undecodable>);

/// A stored record that does not decode: the export shows it in its
/// place (its message is the export's `error` field).
#[derive(Debug, thiserror::Error)]
#[error("{UNDECODABLE}: {0}")]
pub(super) struct Undecodable(StoreError);

impl<'a> Exporter<'a> {
    pub(crate) fn new(
        store: &'a Store,
        filter: ExportFilter,
        format: ExportFormat,
    ) -> Exporter<'a> {
        Exporter {
            store,
            filter,
            format,
            page: Page::default(),
        }
    }

    /// Limits the export to one page.
    pub(crate) fn page(mut self, page: Page) -> Exporter<'a> {
        self.page = page;
        self
    }

    /// Writes the export, calling `progress` with each seq scanned; returns
    /// how many records were written.
    pub(crate) fn write_to<W: std::io::Write>(
        &self,
        out: W,
        progress: impl FnMut(u64),
    ) -> Result<u64, ExportError> {
        Ok(self.write_page(out, progress)?.records)
    }

    /// Writes the export (its page, if one was set), calling `progress`
    /// with each seq scanned.
    pub(crate) fn write_page<W: std::io::Write>(
        &self,
        out: W,
        mut progress: impl FnMut(u64),
    ) -> Result<Written, ExportError> {
        let mut sink = Sink::new(self.format, out)?;
        let mut written = Written {
            records: 0,
            more: false,
        };
        self.walk(|seq, rec| {
            progress(seq);
            // A damaged record is shown, not skipped, and the export goes
            // on: an auditor needs the rest most when something is wrong.
            if rec.as_ref().is_ok_and(|r| !self.filter.matches(r)) {
                return Ok(true);
            }
            if self.page.limit.is_some_and(|l| written.records >= l) {
                written.more = true;
                return Ok(false);
            }
            sink.write(seq, &rec)?;
            written.records += 1;
            Ok(true)
        })?;
        sink.finish()?;
        Ok(written)
    }

    /// Hands every stored record inside the page's bounds to `f`, in the
    /// page's order, until `f` answers `false`.
    fn walk(
        &self,
        mut f: impl FnMut(u64, Result<AuditRecord, Undecodable>) -> Result<bool, ExportError>,
    ) -> Result<(), ExportError> {
        let lo = self.page.after_seq.map_or(0, |a| a.saturating_add(1));
        let hi = self.page.before_seq.unwrap_or(u64::MAX);
        let decode = |seq: u64, bytes: &[u8]| -> Item {
            (seq, AuditRecord::decode(bytes).map_err(Undecodable))
        };
        if !self.page.newest_first {
            for item in self.store.audit_iter(lo) {
                let (seq, bytes) = item?;
                if seq >= hi {
                    break;
                }
                let (seq, rec) = decode(seq, &bytes);
                if !f(seq, rec)? {
                    break;
                }
            }
            return Ok(());
        }
        // Newest first: the backend walks forwards only, so read windows
        // of the log from its end backwards, each window oldest first,
        // and hand its records over in reverse.
        let mut end = hi.min(self.store.audit_last_seq()?.saturating_add(1));
        while end > lo {
            let start = end.saturating_sub(BACKWARD_WINDOW).max(lo);
            let mut window = Vec::new();
            for item in self.store.audit_iter(start) {
                let (seq, bytes) = item?;
                if seq >= end {
                    break;
                }
                window.push(decode(seq, &bytes));
            }
            for (seq, rec) in window.into_iter().rev() {
                if !f(seq, rec)? {
                    return Ok(());
                }
            }
            end = start;
        }
        Ok(())
    }

    /// Counts the filtered records (a coalesced record by its `count`)
    /// per bucket of `bucket_secs` seconds and outcome. The page is not
    /// used. Records that do not decode are counted apart.
    pub(crate) fn histogram(&self, bucket_secs: i64) -> Result<Histogram, ExportError> {
        let bucket_us = bucket_secs.max(1).saturating_mul(1_000_000);
        let mut h = Histogram {
            bucket_secs: bucket_secs.max(1),
            ..Histogram::default()
        };
        for item in self.store.audit_iter(0) {
            let (_, bytes) = item?;
            let Ok(rec) = AuditRecord::decode(&bytes) else {
                h.undecodable += 1;
                continue;
            };
            if !self.filter.matches(&rec) {
                continue;
            }
            let start = rec.at_us.div_euclid(bucket_us).saturating_mul(bucket_us);
            let counts = h.buckets.entry(start).or_default();
            let n = counts.entry(rec.event.outcome.as_str()).or_default();
            *n = n.saturating_add(rec.event.count.unwrap_or(1));
        }
        Ok(h)
    }
}

/// Attempts per time bucket and outcome: only buckets that hold records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Histogram {
    pub bucket_secs: i64,
    /// Bucket start (µs since the epoch) → outcome → attempts.
    pub buckets: std::collections::BTreeMap<i64, std::collections::BTreeMap<&'static str, u64>>,
    /// Stored records that do not decode (their time is unknown).
    pub undecodable: u64,
}

/// The writer side of an export: JSON Lines or CSV.
enum Sink<W: std::io::Write> {
    Jsonl(std::io::BufWriter<W>),
    // Boxed: csv's writer is ten times the size of a BufWriter.
    Csv(Box<csv::Writer<W>>),
}

impl<W: std::io::Write> Sink<W> {
    fn new(format: ExportFormat, out: W) -> Result<Sink<W>, ExportError> {
        Ok(match format {
            ExportFormat::Jsonl => Sink::Jsonl(std::io::BufWriter::with_capacity(64 * 1024, out)),
            ExportFormat::Csv => {
                // The header is written here, once, whatever the rows are.
                let mut w = csv::WriterBuilder::new()
                    .has_headers(false)
                    .buffer_capacity(64 * 1024)
                    .from_writer(out);
                w.write_record(EXPORT_COLUMNS)?;
                Sink::Csv(Box::new(w))
            }
        })
    }

    fn write(
        &mut self,
        seq: u64,
        rec: &Result<AuditRecord, Undecodable>,
    ) -> Result<(), ExportError> {
        match self {
            Sink::Jsonl(out) => {
                match rec {
                    Ok(rec) => serde_json::to_writer(&mut *out, &rec.to_export()),
                    Err(e) => serde_json::to_writer(
                        &mut *out,
                        &serde_json::json!({"seq": seq, "error": e.to_string()}),
                    ),
                }
                .map_err(std::io::Error::other)?;
                out.write_all(b"\n")?;
            }
            Sink::Csv(w) => match rec {
                Ok(rec) => w.serialize(rec.to_export())?,
                Err(e) => {
                    let seq = seq.to_string();
                    let error = e.to_string();
                    let mut row = vec![""; EXPORT_COLUMNS.len()];
                    row[0] = &seq;
                    row[12] = &error;
                    w.write_record(&row)?;
                }
            },
        }
        Ok(())
    }

    fn finish(self) -> Result<(), ExportError> {
        match self {
            Sink::Jsonl(mut out) => out.flush()?,
            Sink::Csv(mut w) => w.flush()?,
        }
        Ok(())
    }
}

/// How an export shows a stored record that does not decode.
const UNDECODABLE: &str = "UNDECODABLE RECORD (damaged or altered; run `keyhold audit verify`)";

/// The column names, in order (the CSV header).
pub(crate) const EXPORT_COLUMNS: [&str; 18] = [
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, AuditLog};
    use crate::keyring::Keyring;

    /// A store whose log holds `n` reveal records after init's, every
    /// third one `forbidden`.
    fn log_of(n: u64) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ring = Keyring::ephemeral();
        crate::unlock::initialise(&store, &ring).unwrap();
        let log = AuditLog::open(store.clone(), &ring).unwrap();
        let batch: Vec<(AuditEvent, Vec<crate::store::Write>)> = (0..n)
            .map(|i| {
                let outcome = if i % 3 == 0 {
                    Outcome::Forbidden
                } else {
                    Outcome::Success
                };
                let ev = AuditEvent {
                    request_id: format!("r{i}"),
                    action: Action::Reveal,
                    key_id: None,
                    provider: Some("claude".into()),
                    caller: "t".into(),
                    caller_id: None,
                    ip: "127.0.0.1".into(),
                    peer: None,
                    outcome,
                    count: None,
                    detail: None,
                };
                (ev, vec![])
            })
            .collect();
        for chunk in batch.chunks(100) {
            log.append(chunk).unwrap();
        }
        (dir, store)
    }

    fn seqs(store: &Store, filter: ExportFilter, page: Page) -> (Vec<u64>, bool) {
        let mut out = Vec::new();
        let w = Exporter::new(store, filter, ExportFormat::Jsonl)
            .page(page)
            .write_page(&mut out, |_| {})
            .unwrap();
        let seqs = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect::<Vec<_>>();
        assert_eq!(seqs.len() as u64, w.records);
        (seqs, w.more)
    }

    #[test]
    fn newest_first_pages_walk_back_through_the_whole_filtered_log_across_windows() {
        // More records than three backward windows.
        let (_dir, store) = log_of(3 * BACKWARD_WINDOW + 40);
        let forbidden = ExportFilter {
            outcome: Some(Outcome::Forbidden),
            ..ExportFilter::default()
        };
        let (all, more) = seqs(&store, forbidden.clone(), Page::default());
        assert!(!more);
        let mut walked = Vec::new();
        let mut cursor = None;
        loop {
            let page = Page {
                before_seq: cursor,
                limit: Some(97),
                newest_first: true,
                ..Page::default()
            };
            let (got, more) = seqs(&store, forbidden.clone(), page);
            assert!(got.windows(2).all(|w| w[0] > w[1]), "newest first");
            walked.extend_from_slice(&got);
            if !more {
                break;
            }
            assert_eq!(got.len(), 97);
            cursor = got.last().copied();
        }
        walked.reverse();
        assert_eq!(walked, all, "the pages hold every record once");
    }

    #[test]
    fn after_seq_and_before_seq_bound_an_oldest_first_page() {
        let (_dir, store) = log_of(50);
        let page = Page {
            after_seq: Some(10),
            before_seq: Some(20),
            ..Page::default()
        };
        let (got, more) = seqs(&store, ExportFilter::default(), page);
        assert_eq!(got, (11..20).collect::<Vec<_>>());
        assert!(!more);
        let page = Page {
            after_seq: Some(10),
            limit: Some(5),
            ..Page::default()
        };
        assert_eq!(
            seqs(&store, ExportFilter::default(), page),
            ((11..16).collect::<Vec<_>>(), true)
        );
        // A cursor past either end is an empty page, not an error.
        let page = Page {
            before_seq: Some(0),
            newest_first: true,
            ..Page::default()
        };
        assert_eq!(seqs(&store, ExportFilter::default(), page), (vec![], false));
        let page = Page {
            after_seq: Some(u64::MAX),
            ..Page::default()
        };
        assert_eq!(seqs(&store, ExportFilter::default(), page), (vec![], false));
    }

    #[test]
    fn the_histogram_counts_filtered_records_by_outcome() {
        let (_dir, store) = log_of(30);
        let reveals = ExportFilter {
            action: Some(Action::Reveal),
            ..ExportFilter::default()
        };
        let h = Exporter::new(&store, reveals, ExportFormat::Jsonl)
            .histogram(86_400)
            .unwrap();
        let total: u64 = h.buckets.values().flat_map(|c| c.values()).sum();
        assert_eq!(total, 30);
        let forbidden: u64 = h.buckets.values().filter_map(|c| c.get("forbidden")).sum();
        assert_eq!(forbidden, 10);
        assert!(h.buckets.keys().all(|k| k % 86_400_000_000 == 0));
    }
}
