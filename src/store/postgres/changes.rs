//! The PostgreSQL side of what each commit changed (`store::changes`):
//! reading a record with the log's newest seq in one statement, reading
//! and pruning the change rows.

use super::{db_error, pool_error, scan, PgStore};
use crate::store::backend::Bytes;
use crate::store::{Result, META_AUDIT_HEAD};

/// A record and the newest audit seq, in one statement (one snapshot:
/// the seq is that of the commit the record was read after).
pub(super) fn get_seen(
    store: &PgStore,
    table: &'static str,
    key: Vec<u8>,
) -> Result<Option<(Bytes, u64)>> {
    // The newer of the log's last seq and the head's: cutting the
    // log's tail alone does not hide a commit from the check.
    let sql = format!(
        "SELECT v, (SELECT COALESCE(max(seq), 0) FROM keyhold_audit), \
         (SELECT v FROM keyhold_meta WHERE k = $2) FROM {} WHERE k = $1",
        scan::table(table)?
    );
    store.run("read a record", move |pool| async move {
        let client = pool.get().await.map_err(pool_error)?;
        let stmt = client.prepare_cached(&sql).await.map_err(db_error)?;
        let row = client
            .query_opt(&stmt, &[&key, &META_AUDIT_HEAD])
            .await
            .map_err(db_error)?;
        Ok(row.map(|r| {
            let last = r.get::<_, i64>(1).max(0) as u64;
            let head = r
                .get::<_, Option<Vec<u8>>>(2)
                .and_then(|h| crate::store::changes::head_seq(&h))
                .unwrap_or(0);
            (Bytes::from(r.get::<_, Vec<u8>>(0)), last.max(head))
        }))
    })
}

/// The change rows of the commits that end after `after`, oldest first.
pub(super) fn after(store: &PgStore, after: u64, limit: i64) -> Result<Vec<(u64, u64, Bytes)>> {
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    store.run("read what other nodes changed", move |pool| async move {
        let client = pool.get().await.map_err(pool_error)?;
        let stmt = client
            .prepare_cached(
                "SELECT first, last, v FROM keyhold_changes WHERE last > $1 \
                 ORDER BY last LIMIT $2",
            )
            .await
            .map_err(db_error)?;
        let rows = client
            .query(&stmt, &[&after, &limit])
            .await
            .map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, i64>(0).max(0) as u64,
                    r.get::<_, i64>(1).max(0) as u64,
                    Bytes::from(r.get::<_, Vec<u8>>(2)),
                )
            })
            .collect())
    })
}

/// Deletes the change rows of commits that end before `before`.
pub(super) fn prune(store: &PgStore, before: u64) -> Result<()> {
    let before = i64::try_from(before).unwrap_or(i64::MAX);
    store.run("prune the change rows", move |pool| async move {
        let client = pool.get().await.map_err(pool_error)?;
        client
            .execute("DELETE FROM keyhold_changes WHERE last < $1", &[&before])
            .await
            .map_err(db_error)?;
        Ok(())
    })
}
