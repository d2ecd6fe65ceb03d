//! Import from the Python reference: rows of its `api_keys` table (`id,
//! provider, key_name, encrypted_key, created_at, last_used`) as
//! `sqlite3 -json`, JSON Lines or `sqlite3 -csv -header` print them.
//!
//! Fernet is a spec, so the tokens are stored as they are (not
//! re-encrypted). Every row is checked — shape, provider and name rules,
//! and that the current keyring decrypts it — before anything is written.
//! Rows that fail, duplicates and malformed rows are reported with their
//! reason and not imported. A row already imported (same id, same token)
//! is counted, not repeated, so the import is idempotent.
//!
//! Over 500 lines: the three input shapes (sqlite3 -json, JSON Lines,
//! sqlite3 -csv), the row checks and the reference key's re-encryption
//! share one row type; about a fifth is tests.

use std::collections::HashMap;
use std::io::Read;

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::access::valid_provider;
use crate::audit::{Action, AuditEvent, AuditLog, Outcome};
use crate::keyring::Keyring;
use crate::store::{KeyRecord, Store, StoreError, Write};

/// Rows per transaction (each with its own audit record).
const CHUNK: usize = 2000;
/// The namespace of ids derived from the reference's integer ids.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6b68_6f6c_645f_696d_706f_7274_5f69_6473);

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    /// `sqlite3 -json`: one JSON array of objects.
    Json,
    /// One JSON object a line.
    Jsonl,
    /// `sqlite3 -csv -header`.
    Csv,
}

impl ImportFormat {
    pub fn parse(s: &str) -> Option<ImportFormat> {
        match s {
            "json" => Some(ImportFormat::Json),
            "jsonl" | "ndjson" => Some(ImportFormat::Jsonl),
            "csv" => Some(ImportFormat::Csv),
            _ => None,
        }
    }

    /// From a file name's extension.
    pub fn guess(path: &std::path::Path) -> Option<ImportFormat> {
        Self::parse(&path.extension()?.to_str()?.to_ascii_lowercase())
    }
}

/// Why one row was refused: the reason shown in the import report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RowError(pub String);

impl From<&str> for RowError {
    fn from(s: &str) -> RowError {
        RowError(s.to_string())
    }
}

/// Why the input as a whole could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read the import file: {0}")]
    Io(#[from] std::io::Error),
    #[error("the import file is not a JSON array of rows (as `sqlite3 -json` prints): {0}")]
    NotJsonArray(String),
    #[error("the CSV has no header row with id, provider, key_name, encrypted_key, created_at (as `sqlite3 -csv -header` prints): {0}")]
    CsvHeader(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

/// A row that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Rejected {
    /// 1-based row number in the input.
    pub row: u64,
    /// The row's id as given, when it had one.
    pub id: Option<String>,
    pub reason: String,
}

/// What an import did (or, for a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ImportReport {
    pub rows: u64,
    pub imported: u64,
    pub already_present: u64,
    pub rejected: Vec<Rejected>,
    pub dry_run: bool,
}

impl ImportReport {
    pub(crate) fn summary(&self) -> String {
        format!(
            "{} rows: {} {}, {} already present, {} rejected",
            self.rows,
            self.imported,
            if self.dry_run {
                "would be imported"
            } else {
                "imported"
            },
            self.already_present,
            self.rejected.len()
        )
    }
}

/// Checked rows ready to write.
pub(crate) struct Plan {
    pub report: ImportReport,
    records: Vec<(KeyRecord, Option<i64>)>,
}

/// Choices of an import beyond the rows themselves.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ImportOptions<'a> {
    /// The Python reference's key(s), used beside keyhold's keyring: a row
    /// only they open is re-encrypted under keyhold's newest key (its
    /// Fernet timestamp kept, as rotation does), so the server never
    /// needs the reference's key.
    pub reference: Option<&'a Keyring>,
    /// Providers are lower-cased before they are checked (`OpenAI` is
    /// stored as `openai`).
    pub lowercase_providers: bool,
}

/// [`plan`] with options.
pub(crate) fn plan_with(
    store: &Store,
    keyring: &Keyring,
    input: impl Read,
    format: ImportFormat,
    options: ImportOptions<'_>,
) -> Result<Plan, ImportError> {
    let rows = read_rows(input, format)?;
    let mut report = ImportReport::default();
    let mut records = Vec::new();
    let mut seen: HashMap<Uuid, u64> = HashMap::new();
    for (i, row) in rows.into_iter().enumerate() {
        let n = i as u64 + 1;
        report.rows += 1;
        let row = match row {
            Ok(r) => r,
            Err(reason) => {
                report.rejected.push(Rejected {
                    row: n,
                    id: None,
                    reason: reason.to_string(),
                });
                continue;
            }
        };
        let given_id = row.get("id").and_then(scalar_text);
        let reject = |reason: String| Rejected {
            row: n,
            id: given_id.clone(),
            reason,
        };
        let (rec, last_used, reencrypted) = match check_row(&row, keyring, options) {
            Ok(x) => x,
            Err(reason) => {
                report.rejected.push(reject(reason.to_string()));
                continue;
            }
        };
        if let Some(first) = seen.get(&rec.id) {
            report
                .rejected
                .push(reject(format!("duplicate id: row {first} has the same id")));
            continue;
        }
        seen.insert(rec.id, n);
        match store.get_key(&rec.id)? {
            Some(existing) if existing.token == rec.token => {
                report.already_present += 1;
                continue;
            }
            // Re-encrypted rows differ by their IV each time: the same
            // key is the same plaintext.
            Some(existing)
                if reencrypted && same_plaintext(keyring, &existing.token, &rec.token) =>
            {
                report.already_present += 1;
                continue;
            }
            Some(_) => {
                report.rejected.push(reject(
                    "a different key with this id is already in the store".into(),
                ));
                continue;
            }
            None => {}
        }
        records.push((rec, last_used));
    }
    report.imported = records.len() as u64;
    Ok(Plan { report, records })
}

/// Writes a plan, in chunks, each with its audit record. Returns the
/// report.
pub(crate) fn apply(
    log: &AuditLog,
    plan: Plan,
    source: &str,
    mut progress: impl FnMut(u64),
) -> Result<ImportReport, ImportError> {
    let Plan { report, records } = plan;
    let total = records.len();
    let mut done = 0u64;
    for (c, chunk) in records.chunks(CHUNK).enumerate() {
        let mut writes = Vec::with_capacity(chunk.len() * 2);
        for (rec, last_used) in chunk {
            writes.push(Write::PutKey(rec.clone()));
            if let Some(at_us) = last_used {
                writes.push(Write::TouchKey {
                    id: rec.id,
                    at_us: *at_us,
                });
            }
        }
        let first = c * CHUNK + 1;
        let ev = AuditEvent::cli(
            Action::Import,
            Outcome::Success,
            Some(format!(
                "rows {first}-{} of {total} to import from {source}",
                first + chunk.len() - 1
            )),
        );
        log.append(&[(ev, writes)])?;
        done += chunk.len() as u64;
        progress(done);
    }
    let ev = AuditEvent::cli(
        Action::Import,
        Outcome::Success,
        Some(format!(
            "import from {source} finished: {}",
            report.summary()
        )),
    );
    log.append(&[(ev, vec![])])?;
    Ok(report)
}

/// One input row, by column name.
pub(crate) type Row = serde_json::Map<String, Value>;

pub fn read_rows(
    mut input: impl Read,
    format: ImportFormat,
) -> Result<Vec<Result<Row, RowError>>, ImportError> {
    match format {
        ImportFormat::Json => {
            let mut text = String::new();
            input.read_to_string(&mut text)?;
            if text.trim().is_empty() {
                // `sqlite3 -json` prints nothing for an empty table.
                return Ok(Vec::new());
            }
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| ImportError::NotJsonArray(e.to_string()))?;
            let Value::Array(items) = v else {
                return Err(ImportError::NotJsonArray(
                    "the top level is not an array".into(),
                ));
            };
            Ok(items
                .into_iter()
                .map(|it| match it {
                    Value::Object(m) => Ok(m),
                    _ => Err(RowError("the row is not a JSON object".into())),
                })
                .collect())
        }
        ImportFormat::Jsonl => {
            let mut text = String::new();
            input.read_to_string(&mut text)?;
            Ok(text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| match serde_json::from_str::<Value>(l) {
                    Ok(Value::Object(m)) => Ok(m),
                    Ok(_) => Err(RowError("the line is not a JSON object".into())),
                    Err(e) => Err(RowError(format!("the line is not JSON ({e})"))),
                })
                .collect())
        }
        ImportFormat::Csv => {
            let mut rdr = csv::ReaderBuilder::new()
                .has_headers(true)
                .flexible(true)
                .from_reader(input);
            let headers: Vec<String> = rdr
                .headers()
                .map_err(|e| ImportError::CsvHeader(e.to_string()))?
                .iter()
                .map(|h| h.trim().to_string())
                .collect();
            for need in ["id", "provider", "key_name", "encrypted_key", "created_at"] {
                if !headers.iter().any(|h| h == need) {
                    return Err(ImportError::CsvHeader(format!(
                        "column `{need}` is missing"
                    )));
                }
            }
            let mut out = Vec::new();
            for rec in rdr.records() {
                out.push(match rec {
                    Err(e) => Err(RowError(format!("the CSV row does not parse ({e})"))),
                    Ok(r) if r.len() != headers.len() => Err(RowError(format!(
                        "the CSV row has {} fields, the header {}",
                        r.len(),
                        headers.len()
                    ))),
                    Ok(r) => Ok(headers
                        .iter()
                        .zip(r.iter())
                        .map(|(h, v)| {
                            // sqlite3 prints NULL as an empty field.
                            let v = if v.is_empty() {
                                Value::Null
                            } else {
                                Value::String(v.to_string())
                            };
                            (h.clone(), v)
                        })
                        .collect()),
                });
            }
            Ok(out)
        }
    }
}

/// A scalar as text (ids may be integers or strings).
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn text_field(row: &Row, name: &str) -> Result<String, RowError> {
    match row.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Null) | None => Err(RowError(format!("`{name}` is missing"))),
        Some(_) => Err(RowError(format!("`{name}` is not text"))),
    }
}

/// The id keyhold stores: a UUID as given, or one derived (UUID v5) from
/// the reference's integer id, so re-importing maps to the same id.
pub fn import_id(given: &str) -> Option<Uuid> {
    if let Ok(u) = Uuid::parse_str(given) {
        return Some(u);
    }
    let n: u64 = given.trim().parse().ok()?;
    Some(Uuid::new_v5(
        &ID_NAMESPACE,
        format!("api_keys:{n}").as_bytes(),
    ))
}

/// A time as the reference stores it: RFC 3339, or SQLite's
/// `YYYY-MM-DD HH:MM:SS[.ffffff]` (also with `T`), which is UTC.
pub fn parse_reference_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(us) = crate::time::parse_rfc3339(s) {
        return Some(us);
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_micros());
        }
        if fmt == "%Y-%m-%d" {
            if let Ok(d) = chrono::NaiveDate::parse_from_str(s, fmt) {
                return d
                    .and_hms_opt(0, 0, 0)
                    .map(|t| t.and_utc().timestamp_micros());
            }
        }
    }
    None
}

fn same_plaintext(keyring: &Keyring, a: &str, b: &str) -> bool {
    match (keyring.decrypt(a), keyring.decrypt(b)) {
        (Ok(x), Ok(y)) => x.plaintext.expose() == y.plaintext.expose(),
        _ => false,
    }
}

/// A checked row: its record, when it was last used, and whether its
/// token was re-encrypted (it opened only with the reference's key).
type CheckedRow = (KeyRecord, Option<i64>, bool);

fn check_row(
    row: &Row,
    keyring: &Keyring,
    options: ImportOptions<'_>,
) -> Result<CheckedRow, RowError> {
    let given_id = row
        .get("id")
        .and_then(scalar_text)
        .ok_or("`id` is missing")?;
    let id = import_id(&given_id).ok_or("`id` is neither a UUID nor a whole number")?;
    let mut provider = text_field(row, "provider")?;
    if options.lowercase_providers {
        provider = provider.to_lowercase();
    }
    if !valid_provider(&provider) {
        let hint = if valid_provider(&provider.to_lowercase()) {
            format!(
                "; add --providers-lowercase to store it as `{}`",
                provider.to_lowercase()
            )
        } else {
            String::new()
        };
        return Err(RowError(format!(
            "provider `{}` does not match [a-z0-9][a-z0-9_.-]{{0,63}}{hint}",
            provider.chars().take(64).collect::<String>()
        )));
    }
    let key_name = text_field(row, "key_name")?;
    if let Some(why) = crate::access::key_name_problem(&key_name) {
        return Err(RowError(format!("key_name {why}")));
    }
    let mut token = text_field(row, "encrypted_key")?.trim().to_string();
    let mut reencrypted = false;
    if keyring.decrypt(&token).is_err() {
        let opened = options.reference.and_then(|r| r.decrypt(&token).ok());
        let stamped = crate::keyring::token_timestamp(&token);
        match (opened, stamped) {
            (Some(o), Some(ts)) => {
                token = keyring.encrypt_at(o.plaintext.expose(), ts);
                reencrypted = true;
            }
            _ if options.reference.is_some() => {
                return Err(
                    "encrypted_key decrypts neither with keyhold's keyring nor with \
                     --reference-key-file (made under another Fernet key?)"
                        .into(),
                )
            }
            _ => {
                return Err(
                    "encrypted_key does not decrypt with keyhold's keyring: give the reference's \
                     key with --reference-key-file FILE"
                        .into(),
                )
            }
        }
    }
    let created_at_us = parse_reference_time(&text_field(row, "created_at")?)
        .ok_or("created_at is not a time (RFC 3339 or YYYY-MM-DD HH:MM:SS)")?;
    let last_used = match row.get("last_used") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(parse_reference_time(s).ok_or("last_used is not a time")?),
        Some(_) => return Err(RowError("`last_used` is not text".into())),
    };
    Ok((
        KeyRecord::new(
            id,
            provider,
            key_name,
            token,
            created_at_us,
            None,
            Some("import".into()),
        ),
        last_used,
        reencrypted,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_times_without_a_zone_are_utc() {
        let a = parse_reference_time("2024-05-01 10:00:00").unwrap();
        let b = parse_reference_time("2024-05-01T10:00:00Z").unwrap();
        assert_eq!(a, b);
        assert_eq!(
            parse_reference_time("2024-05-01 10:00:00.250000").unwrap() - a,
            250_000
        );
        assert!(parse_reference_time("yesterday").is_none());
    }

    #[test]
    fn integer_ids_map_to_stable_uuids() {
        assert_eq!(import_id("42"), import_id("42"));
        assert_ne!(import_id("42"), import_id("43"));
        let u = Uuid::new_v4();
        assert_eq!(import_id(&u.to_string()), Some(u));
        assert_eq!(import_id("x"), None);
    }
}
