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
}

impl<'a> Scan<'a> {
    pub(super) fn all(store: &'a PgStore, name: &'static str) -> Paged<Scan<'a>> {
        Self::prefix(store, name, Vec::new(), false)
    }

    pub(super) fn prefix(
        store: &'a PgStore,
        name: &'static str,
        prefix: Vec<u8>,
        newest_first: bool,
    ) -> Paged<Scan<'a>> {
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
        Paged::new(Scan {
            store,
            sql,
            prefix,
            end,
            after: None,
        })
    }
}

impl Pager for Scan<'_> {
    type Item = (Vec<u8>, Vec<u8>);

    fn next_page(&mut self) -> Result<Vec<Self::Item>> {
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
        if let Some((k, _)) = rows.last() {
            self.after = Some(k.clone());
        }
        Ok(rows)
    }
}

/// A source of rows a page at a time: a page shorter than [`PAGE`] is the
/// last.
pub(super) trait Pager {
    type Item;
    fn next_page(&mut self) -> Result<Vec<Self::Item>>;
}

/// A lazy walk over a [`Pager`]'s rows, one page held at a time; an error
/// ends the walk.
pub(super) struct Paged<P: Pager> {
    pager: P,
    buf: VecDeque<P::Item>,
    done: bool,
}

impl<P: Pager> Paged<P> {
    fn new(pager: P) -> Paged<P> {
        Paged {
            pager,
            buf: VecDeque::new(),
            done: false,
        }
    }
}

impl<P: Pager> Iterator for Paged<P> {
    type Item = Result<P::Item>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() && !self.done {
            match self.pager.next_page() {
                Ok(rows) => {
                    self.done = (rows.len() as i64) < PAGE;
                    self.buf.extend(rows);
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
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
}

impl<'a> AuditScan<'a> {
    pub(super) fn new(store: &'a PgStore, from_seq: u64) -> Paged<AuditScan<'a>> {
        Paged::new(AuditScan {
            store,
            next: i64::try_from(from_seq).unwrap_or(i64::MAX),
        })
    }
}

impl Pager for AuditScan<'_> {
    type Item = (u64, Bytes);

    fn next_page(&mut self) -> Result<Vec<Self::Item>> {
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
        if let Some((seq, _)) = rows.last() {
            self.next = seq.saturating_add(1);
        }
        Ok(rows
            .into_iter()
            .map(|(s, v)| (s as u64, Bytes::from(v)))
            .collect())
    }
}
