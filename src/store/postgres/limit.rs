//! The reveal rate limit shared by every node: GCRA in one upsert.
//!
//! Per client, the table keeps the theoretical arrival time (TAT). A
//! reveal at `now` (the database's clock, one clock for every node) is
//! allowed when `max(TAT, now) + T - now <= burst * T` (T: the time one
//! reveal "costs", the period divided by the count), and then moves TAT
//! to `max(TAT, now) + T`. The read, the decision and the write are one
//! `INSERT ... ON CONFLICT DO UPDATE ... RETURNING`: PostgreSQL locks the
//! client's row for it, so concurrent reveals on any number of nodes take
//! cells one after the other, and N nodes give a client one budget, not N.
//! A batch reveal of n keys takes n cells at once (cost n T, all or none).

use super::{db_error, pool_error, PgStore};
use crate::store::backend::SharedCell;
use crate::store::Result;

const TAKE: &str = "\
INSERT INTO keyhold_reveal_limit AS l (client, tat_us, allowed, seen_us)
SELECT $1, n.us + $2, true, n.us
  FROM (SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS us) n
ON CONFLICT (client) DO UPDATE SET
  allowed = GREATEST(l.tat_us, EXCLUDED.seen_us) + $2 - EXCLUDED.seen_us <= $3,
  tat_us = CASE WHEN GREATEST(l.tat_us, EXCLUDED.seen_us) + $2 - EXCLUDED.seen_us <= $3
                THEN GREATEST(l.tat_us, EXCLUDED.seen_us) + $2
                ELSE l.tat_us END,
  seen_us = EXCLUDED.seen_us
RETURNING tat_us, allowed, seen_us";

/// Takes `cells` cells for `client`, all or none (T = `emission_us`,
/// burst `burst`; `cells` at most `burst`, so a first take always fits):
/// the statement with their cost, `cells` times T, in place of T.
pub(super) fn take(
    store: &PgStore,
    client: &str,
    emission_us: i64,
    burst: u32,
    cells: u32,
) -> Result<SharedCell> {
    let client = client.to_string();
    let tolerance = emission_us.saturating_mul(i64::from(burst));
    let emission_us = emission_us.saturating_mul(i64::from(cells.clamp(1, burst.max(1))));
    store.run("apply the shared reveal limit", move |pool| async move {
        let db = pool.get().await.map_err(pool_error)?;
        let stmt = db.prepare_cached(TAKE).await.map_err(db_error)?;
        let row = db
            .query_one(&stmt, &[&client, &emission_us, &tolerance])
            .await
            .map_err(db_error)?;
        Ok(SharedCell {
            allowed: row.get(1),
            tat_us: row.get(0),
            now_us: row.get(2),
        })
    })
}

/// Forgets clients whose budget is full again (TAT in the past).
pub(super) fn prune(store: &PgStore) -> Result<()> {
    store.run("prune the shared reveal limit", |pool| async move {
        let db = pool.get().await.map_err(pool_error)?;
        db.execute(
            "DELETE FROM keyhold_reveal_limit \
             WHERE tat_us < (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
            &[],
        )
        .await
        .map_err(db_error)?;
        Ok(())
    })
}
