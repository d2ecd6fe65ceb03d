//! The database schema, versioned: the migrations in
//! `migrations/postgres/` (compiled in), applied in order in one
//! transaction, each recorded in `keyhold_schema`: all of them by `keyhold
//! init`, and the missing ones of an initialised database by whatever
//! command opens it first (in place, under the lock on the version table).
//! A database whose newest migration is newer than this binary's is
//! refused.
//!
//! This is the layout of the tables; keyhold's own record schema (the
//! `schema_version` meta value) is versioned above the seam as on sled.

use tokio_postgres::Client;

use super::{db_error, PgError};

/// The migrations, oldest first: (version, SQL). Only ever appended.
pub(crate) const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        include_str!("../../../migrations/postgres/0001_tables.sql"),
    ),
    (
        2,
        include_str!("../../../migrations/postgres/0002_token_usage.sql"),
    ),
    (
        3,
        include_str!("../../../migrations/postgres/0003_changes.sql"),
    ),
];

/// The newest migration this binary knows.
pub(crate) fn known() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

const CREATE_VERSIONS: &str = "CREATE TABLE IF NOT EXISTS keyhold_schema (
    version    int PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// The newest applied migration (0 when none, or no keyhold tables).
pub(crate) async fn applied(client: &Client) -> Result<i32, PgError> {
    let exists = client
        .query_one("SELECT to_regclass('keyhold_schema') IS NOT NULL", &[])
        .await
        .map_err(db_error)?;
    if !exists.get::<_, bool>(0) {
        return Ok(0);
    }
    let row = client
        .query_one("SELECT COALESCE(max(version), 0) FROM keyhold_schema", &[])
        .await
        .map_err(db_error)?;
    Ok(row.get(0))
}

/// Applies every missing migration in one transaction (serialised with
/// any other node doing the same by a lock on the version table).
/// Returns the version the database is at.
pub(crate) async fn migrate(client: &mut Client) -> Result<i32, PgError> {
    let tx = client.transaction().await.map_err(db_error)?;
    tx.batch_execute(CREATE_VERSIONS).await.map_err(db_error)?;
    tx.batch_execute("LOCK TABLE keyhold_schema IN EXCLUSIVE MODE")
        .await
        .map_err(db_error)?;
    let row = tx
        .query_one("SELECT COALESCE(max(version), 0) FROM keyhold_schema", &[])
        .await
        .map_err(db_error)?;
    let at: i32 = row.get(0);
    if at > known() {
        return Err(PgError::Newer(at));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > at) {
        tx.batch_execute(sql).await.map_err(db_error)?;
        tx.execute(
            "INSERT INTO keyhold_schema (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(db_error)?;
    }
    tx.commit().await.map_err(db_error)?;
    Ok(known().max(at))
}
