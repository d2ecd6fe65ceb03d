//! Lazy walks over a table, a page of rows at a time, so a walk of a large
//! table holds one page in memory and rows appended meanwhile are seen up
//! to where the walk ends.

use std::collections::VecDeque;

use super::{db_error, pool_error, PgStore};
use crate::store::backend::Bytes;
use crate::store::{Result, StoreError};

/// Rows a page holds.
const PAGE: i64 = 500;

/// The seam's table names and their SQL tables (fixed names: nothing from
/// outside is ever put into SQL text).
pub(super) fn table(name: &str) -> Result<&'static str> {
    Ok(match name {
        "meta" => "keyhold_meta",
        "tokens" => "keyhold_tokens",
        "keys" => "keyhold_keys",
        "by_provider" => "keyhold_by_provider",
        "key_usage" => "keyhold_key_usage",
        "audit" => "keyhold_audit",
        "token_usage" => "keyhold_token_usage",
        _ => {
            return Err(StoreError::Corrupt {
                what: "table name",
                detail: name.chars().take(40).collect(),
            })
        }
    })
}

/// A seam table name as a `'static` one, if it is one of the k/v tables.
pub(super) fn known_table(name: &str) -> Option<&'static str> {
    [
        "meta",
        "tokens",
        "keys",
        "by_provider",
        "key_usage",
        "token_usage",
    ]
    .into_iter()
    .find(|t| *t == name)
}

/// A walk over a k/v table in key order (or reverse), within a prefix.
pub(super) struct Scan<'a> {
    store: &'a PgStore,
    sql: Result<String>,
    prefix: Vec<u8>,
    /// The prefix's end (exclusive), none when the prefix is empty.
    end: Option<Vec<u8>>,
    after: Option<Vec<u8>>,
    buf: VecDeque<(Vec<u8>, Vec<u8>)>,
    done: bool,
}

impl<'a> Scan<'a> {
    pub(super) fn all(store: &'a PgStore, name: &'static str) -> Scan<'a> {
        Self::prefix(store, name, Vec::new(), false)
    }

    pub(super) fn prefix(
        store: &'a PgStore,
        name: &'static str,
        prefix: Vec<u8>,
        newest_first: bool,
    ) -> Scan<'a> {
        let sql = table(name).map(|t| {
            if newest_first {
                format!(
                    "SELECT k, v FROM {t} WHERE k >= $1 AND ($2::bytea IS NULL OR k < $2) \
                     AND ($3::bytea IS NULL OR k < $3) ORDER BY k DESC LIMIT {PAGE}"
                )
            } else {
                format!(
                    "SELECT k, v FROM {t} WHERE k >= $1 AND ($2::bytea IS NULL OR k < $2) \
                     AND ($3::bytea IS NULL OR k > $3) ORDER BY k LIMIT {PAGE}"
                )
            }
        });
        let end = prefix_end(&prefix);
        Scan {
            store,
            sql,
            prefix,
            end,
            after: None,
            buf: VecDeque::new(),
            done: false,
        }
    }

    fn fill(&mut self) -> Result<()> {
        let sql = match &self.sql {
            Ok(s) => s.clone(),
            Err(_) => {
                return Err(StoreError::Corrupt {
                    what: "table name",
                    detail: "unknown".into(),
                })
            }
        };
        let (prefix, end, after) = (self.prefix.clone(), self.end.clone(), self.after.clone());
        let rows = self.store.run("read a table", move |pool| async move {
            let client = pool.get().await.map_err(pool_error)?;
            let stmt = client.prepare_cached(&sql).await.map_err(db_error)?;
            let rows = client
                .query(&stmt, &[&prefix, &end, &after])
                .await
                .map_err(db_error)?;
            Ok(rows
                .into_iter()
                .map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, Vec<u8>>(1)))
                .collect::<Vec<_>>())
        })?;
        if (rows.len() as i64) < PAGE {
            self.done = true;
        }
        if let Some((k, _)) = rows.last() {
            self.after = Some(k.clone());
        }
        self.buf.extend(rows);
        Ok(())
    }
}

impl Iterator for Scan<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>)>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() && !self.done {
            if let Err(e) = self.fill() {
                self.done = true;
                return Some(Err(e));
            }
        }
        self.buf.pop_front().map(Ok)
    }
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A walk over the audit table from a seq on.
pub(super) struct AuditScan<'a> {
    store: &'a PgStore,
    next: i64,
    buf: VecDeque<(u64, Bytes)>,
    done: bool,
}

impl<'a> AuditScan<'a> {
    pub(super) fn new(store: &'a PgStore, from_seq: u64) -> AuditScan<'a> {
        AuditScan {
            store,
            next: i64::try_from(from_seq).unwrap_or(i64::MAX),
            buf: VecDeque::new(),
            done: false,
        }
    }

    fn fill(&mut self) -> Result<()> {
        let from = self.next;
        let rows = self
            .store
            .run("read the audit log", move |pool| async move {
                let client = pool.get().await.map_err(pool_error)?;
                let stmt = client
                    .prepare_cached(
                        "SELECT seq, v FROM keyhold_audit WHERE seq >= $1 ORDER BY seq LIMIT 500",
                    )
                    .await
                    .map_err(db_error)?;
                let rows = client.query(&stmt, &[&from]).await.map_err(db_error)?;
                Ok(rows
                    .into_iter()
                    .map(|r| (r.get::<_, i64>(0), r.get::<_, Vec<u8>>(1)))
                    .collect::<Vec<_>>())
            })?;
        if (rows.len() as i64) < PAGE {
            self.done = true;
        }
        if let Some((seq, _)) = rows.last() {
            self.next = seq.saturating_add(1);
        }
        self.buf
            .extend(rows.into_iter().map(|(s, v)| (s as u64, Bytes::from(v))));
        Ok(())
    }
}

impl Iterator for AuditScan<'_> {
    type Item = Result<(u64, Bytes)>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() && !self.done {
            if let Err(e) = self.fill() {
                self.done = true;
                return Some(Err(e));
            }
        }
        self.buf.pop_front().map(Ok)
    }
}
