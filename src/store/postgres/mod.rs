//! The network backend: PostgreSQL, so that several keyhold nodes share
//! one (replicated) database: one store, one audit chain, one reveal
//! limit.
//!
//! The seam's methods are blocking; this backend runs tokio-postgres on a
//! small runtime of its own (one thread, its pool of connections from
//! deadpool-postgres) and waits for each call at most [`PgOptions`]'s
//! timeout, so a database that is gone becomes a [`StoreError`] quickly,
//! in request handlers too (it waits on a plain channel, never by entering
//! a runtime, so it may be called from inside another one).
//!
//! Tables (`migrations/postgres/`) hold the same bytes as sled's trees;
//! the audit table one row per record. The commit of the audit writer
//! (`commit.rs`) locks one row, so appends from every node are serialised,
//! and refuses ([`StoreError::HeadMoved`]) a batch chained on a head that
//! another node has since moved: the audit log chains again from the
//! stored head and retries. A commit is durable when it returns
//! (PostgreSQL's own commit; [`Backend::flush`] has nothing left to do).
//!
//! Not for: record formats or their authentication (the `Store` facade).
//!
//! Over 500 lines: the `Backend` implementation, method by method; the
//! commit, scans, schema, limiter and URL handling are in their own files.

mod changes;
mod commit;
pub(crate) mod limit;
mod scan;
mod schema;
mod url;

pub use url::DatabaseUrl;

pub(crate) use url::DatabaseUrlArg;

pub(crate) use url::DatabaseUrlError;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use uuid::Uuid;

use super::backend::{Backend, Bytes, Items, Op};
use super::{Result, StoreError};

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub url: DatabaseUrl,
    /// A PEM file of CA certificates to verify the server with (else the
    /// URL's `sslrootcert`, else the system's roots).
    pub ca_file: Option<PathBuf>,
    /// This node's name, written into every audit record it appends.
    pub node: String,
    /// The longest one call to the database may take.
    pub timeout: Duration,
    /// Connections this node keeps at most.
    pub pool_size: usize,
}

impl PgOptions {
    /// Options with the defaults: a 3 s timeout, 8 connections.
    pub fn new(url: DatabaseUrl, ca_file: Option<PathBuf>, node: String) -> PgOptions {
        PgOptions {
            url,
            ca_file,
            node,
            timeout: Duration::from_secs(3),
            pool_size: 8,
        }
    }
}

/// An error of the database client, before it is said as a [`StoreError`].
#[derive(Debug)]
pub(crate) enum PgError {
    Db(String),
    /// The schema's newest migration is newer than this binary's.
    Newer(i32),
    Store(StoreError),
}

/// The client's error, without anything of the connection string (its
/// messages never hold the password; the server's text is kept).
pub(crate) fn db_error(e: tokio_postgres::Error) -> PgError {
    let mut text = e.to_string();
    if let Some(db) = e.as_db_error() {
        text = format!("{}: {}", db.severity(), db.message());
    } else if let Some(src) = std::error::Error::source(&e) {
        text = format!("{text}: {src}");
    }
    PgError::Db(text)
}

fn pool_error(e: deadpool_postgres::PoolError) -> PgError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db_error(e),
        deadpool_postgres::PoolError::Timeout(_) => {
            PgError::Db("no connection to the database could be had in time".into())
        }
        other => PgError::Db(other.to_string()),
    }
}

/// A client error as the store's.
pub(crate) fn store_error(what: &'static str, e: PgError) -> StoreError {
    match e {
        PgError::Db(detail) => StoreError::Database { what, detail },
        PgError::Newer(found) => StoreError::NewerDatabase {
            found,
            known: schema::known(),
        },
        PgError::Store(e) => e,
    }
}

/// The runtime the client runs on, on a thread of its own: dropped there,
/// never inside the caller's runtime.
struct ClientRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<std::sync::mpsc::Sender<()>>,
}

impl ClientRuntime {
    fn start() -> Result<ClientRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("keyhold-pg")
            .enable_all()
            .build()
            .map_err(|error| StoreError::Io {
                what: "start the database client's runtime",
                error,
            })?;
        let handle = rt.handle().clone();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("keyhold-pg-owner".into())
            .spawn(move || {
                let _ = stopped.recv();
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|error| StoreError::Io {
                what: "start the database client's thread",
                error,
            })?;
        Ok(ClientRuntime {
            handle,
            stop: Some(stop),
        })
    }
}

impl Drop for ClientRuntime {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// The PostgreSQL backend.
pub(crate) struct PgStore {
    pool: Pool,
    rt: ClientRuntime,
    timeout: Duration,
    node: String,
    shown: String,
}

impl PgStore {
    /// Connects (lazily: the first call opens a connection) and checks
    /// that the database is reachable and not newer than this binary.
    /// With `migrate`, applies the schema's missing migrations first
    /// (`init`).
    pub(crate) fn connect(opts: &PgOptions, migrate: bool) -> Result<PgStore> {
        let tls = tls_config(opts)?;
        let mut config = opts.url.config().clone();
        config.connect_timeout(opts.timeout);
        config.application_name(format!("keyhold {}", opts.node));
        let manager = Manager::from_config(
            config,
            tokio_postgres_rustls::MakeRustlsConnect::new(tls),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let rt = ClientRuntime::start()?;
        let pool = {
            let _entered = rt.handle.enter();
            Pool::builder(manager)
                .max_size(opts.pool_size.max(2))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(opts.timeout))
                .create_timeout(Some(opts.timeout))
                .recycle_timeout(Some(opts.timeout))
                .build()
                .map_err(|e| StoreError::Database {
                    what: "set up the connection pool",
                    detail: e.to_string(),
                })?
        };
        let store = PgStore {
            pool,
            rt,
            timeout: opts.timeout,
            node: opts.node.clone(),
            shown: opts.url.to_string(),
        };
        let migrate_now = |store: &PgStore| {
            store.run("create or update the schema", |pool| async move {
                let mut client = pool.get().await.map_err(pool_error)?;
                schema::migrate(&mut client).await
            })
        };
        let mut at = if migrate {
            migrate_now(&store)?
        } else {
            store.run("read the schema version", |pool| async move {
                let client = pool.get().await.map_err(pool_error)?;
                schema::applied(&client).await
            })?
        };
        if at == 0 {
            return Err(StoreError::DatabaseNotInitialised(store.shown.clone()));
        }
        if at < schema::known() {
            // An initialised database from an older keyhold: its missing
            // migrations are applied in place, under the lock on the
            // version table (another node may be doing the same).
            tracing::info!(
                from = at,
                to = schema::known(),
                "applying the database's missing schema migrations"
            );
            at = migrate_now(&store)?;
        }
        if at > schema::known() {
            return Err(StoreError::NewerDatabase {
                found: at,
                known: schema::known(),
            });
        }
        Ok(store)
    }

    /// Runs `f` on the client's runtime and waits for it at most the
    /// timeout. Never enters a runtime, so it is safe inside one.
    pub(crate) fn run<T, F, Fut>(&self, what: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Pool) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, PgError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = f(self.pool.clone());
        let timeout = self.timeout;
        self.rt.handle.spawn(async move {
            let res = tokio::time::timeout(timeout, fut).await;
            let _ = tx.send(res);
        });
        let unanswered = || StoreError::Database {
            what,
            detail: format!(
                "no answer within {} ms (the database is unreachable or overloaded)",
                timeout.as_millis()
            ),
        };
        match rx.recv_timeout(timeout + Duration::from_millis(250)) {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(store_error(what, e)),
            Ok(Err(_)) | Err(_) => Err(unanswered()),
        }
    }

    /// A transaction-level advisory lock, held by a task on the client's
    /// runtime until the returned value is dropped (then the transaction
    /// ends and PostgreSQL lets go; if this process dies, so does its
    /// connection, and the lock with it).
    fn advisory_lock(&self, id: i64) -> Result<Option<super::backend::SharedLock>> {
        self.hold(Some(id), "take the lock of key and token changes")
    }

    /// The lock every node's audit commit takes (the row of
    /// `keyhold_audit_lock`), held the same way: while it is held no node
    /// appends, so nothing covered by the state digest changes.
    fn append_lock(&self) -> Result<Option<super::backend::SharedLock>> {
        self.hold(None, "take the lock of audit appends")
    }

    /// Holds an advisory lock (`Some(id)`) or the append lock (`None`).
    fn hold(
        &self,
        id: Option<i64>,
        what: &'static str,
    ) -> Result<Option<super::backend::SharedLock>> {
        let (held_tx, held_rx) =
            std::sync::mpsc::sync_channel::<std::result::Result<(), PgError>>(1);
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let pool = self.pool.clone();
        let timeout = self.timeout;
        self.rt.handle.spawn(async move {
            let mut client = match tokio::time::timeout(timeout, pool.get()).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    let _ = held_tx.send(Err(pool_error(e)));
                    return;
                }
                Err(_) => return,
            };
            let tx = match client.transaction().await {
                Ok(tx) => tx,
                Err(e) => {
                    let _ = held_tx.send(Err(db_error(e)));
                    return;
                }
            };
            let lock = async {
                match id {
                    Some(id) => {
                        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
                        tx.execute("SELECT pg_advisory_xact_lock($1)", &params)
                            .await
                    }
                    None => {
                        tx.execute(
                            "SELECT id FROM keyhold_audit_lock WHERE id = 1 FOR UPDATE",
                            &[],
                        )
                        .await
                    }
                }
            };
            match tokio::time::timeout(timeout, lock).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    let _ = held_tx.send(Err(db_error(e)));
                    return;
                }
                // Given up: dropping the transaction rolls it back, which
                // also ends the lock should it be granted later.
                Err(_) => return,
            }
            if held_tx.send(Ok(())).is_err() {
                // Nobody waits any more: let go at once.
                let _ = tx.rollback().await;
                return;
            }
            // Released or dropped: either way the lock ends here.
            let _ = release_rx.await;
            let _ = tx.rollback().await;
        });
        match held_rx.recv_timeout(timeout + Duration::from_millis(250)) {
            Ok(Ok(())) => Ok(Some(Box::new(release_tx))),
            Ok(Err(e)) => Err(store_error(what, e)),
            Err(_) => Err(StoreError::Database {
                what,
                detail: format!(
                    "not granted within {} ms (another node holds it, or the database is \
                     unreachable)",
                    timeout.as_millis()
                ),
            }),
        }
    }

    /// One query's rows of (k, v) as bytes.
    fn get(&self, table: &'static str, key: Vec<u8>) -> Result<Option<Bytes>> {
        let sql = format!("SELECT v FROM {} WHERE k = $1", scan::table(table)?);
        self.run("read a record", move |pool| async move {
            let client = pool.get().await.map_err(pool_error)?;
            let stmt = client.prepare_cached(&sql).await.map_err(db_error)?;
            let row = client.query_opt(&stmt, &[&key]).await.map_err(db_error)?;
            Ok(row.map(|r| Bytes::from(r.get::<_, Vec<u8>>(0))))
        })
    }

    fn swap(&self, table: &'static str, key: Vec<u8>, current: &[u8], new: &[u8]) -> Result<bool> {
        let sql = format!(
            "UPDATE {} SET v = $3 WHERE k = $1 AND v = $2",
            scan::table(table)?
        );
        let (current, new) = (current.to_vec(), new.to_vec());
        self.run("update a record", move |pool| async move {
            let client = pool.get().await.map_err(pool_error)?;
            let n = client
                .execute(&sql, &[&key, &current, &new])
                .await
                .map_err(db_error)?;
            Ok(n == 1)
        })
    }
}

/// rustls, verifying the server against the CA file, the URL's root
/// certificate, or the system's roots.
fn tls_config(opts: &PgOptions) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let file = opts.ca_file.as_ref().or(opts.url.root_cert());
    match file {
        Some(path) => {
            use rustls_pki_types::pem::PemObject;
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(|e| {
                StoreError::Database {
                    what: "read the database's CA file",
                    detail: format!("{}: {e}", path.display()),
                }
            })?;
            for cert in certs {
                let cert = cert.map_err(|e| StoreError::Database {
                    what: "read the database's CA file",
                    detail: format!("{}: {e}", path.display()),
                })?;
                roots.add(cert).map_err(|e| StoreError::Database {
                    what: "use the database's CA file",
                    detail: format!("{}: {e}", path.display()),
                })?;
            }
        }
        None if opts.url.tls() => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
        None => {}
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Database {
            what: "set up TLS",
            detail: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

impl Backend for PgStore {
    fn dir(&self) -> Option<PathBuf> {
        None
    }

    fn lock_appends(&self) -> Result<Option<super::backend::SharedLock>> {
        self.append_lock()
    }

    fn lock_shared(&self, id: i64) -> Result<Option<super::backend::SharedLock>> {
        self.advisory_lock(id)
    }

    /// Every commit is durable when PostgreSQL answers it.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// The pool replaces broken connections by itself: nothing to reopen.
    fn reopen(&self, _wait: Duration) -> Result<()> {
        Ok(())
    }

    /// `VACUUM FULL` of the keys table: PostgreSQL writes it into new
    /// files and removes the old ones, dead rows (purged keys, replaced
    /// versions) and all. Its WAL, replicas and base backups are the
    /// database's (docs/security.md).
    /// The time returned is the whole `VACUUM FULL`: it holds the keys
    /// table's exclusive lock for most of it.
    fn scrub(&self, _wait: Duration) -> Result<Option<Duration>> {
        self.run("rewrite the keys table (VACUUM FULL)", |pool| async move {
            let client = pool.get().await.map_err(pool_error)?;
            let started = std::time::Instant::now();
            client
                .simple_query("VACUUM (FULL) keyhold_keys")
                .await
                .map_err(db_error)?;
            Ok(Some(started.elapsed()))
        })
    }

    fn ping(&self) -> Result<()> {
        self.run("answer a ping", |pool| async move {
            let client = pool.get().await.map_err(pool_error)?;
            client.simple_query("SELECT 1").await.map_err(db_error)?;
            Ok(())
        })
    }

    fn node(&self) -> Option<&str> {
        Some(&self.node)
    }

    fn take_reveal_cells(
        &self,
        client: &str,
        emission_us: i64,
        burst: u32,
        cells: u32,
    ) -> Result<Option<crate::store::backend::SharedCell>> {
        limit::take(self, client, emission_us, burst, cells).map(Some)
    }

    fn prune_reveal_cells(&self) -> Result<()> {
        limit::prune(self)
    }

    fn changes_after(&self, after: u64, limit: i64) -> Result<Vec<(u64, u64, Bytes)>> {
        changes::after(self, after, limit)
    }

    fn prune_changes(&self, before: u64) -> Result<()> {
        changes::prune(self, before)
    }

    fn key_get_seen(&self, id: &Uuid) -> Result<Option<(Bytes, u64)>> {
        changes::get_seen(self, "keys", id.as_bytes().to_vec())
    }

    fn token_get_seen(&self, at: &[u8; 32]) -> Result<Option<(Bytes, u64)>> {
        changes::get_seen(self, "tokens", at.to_vec())
    }

    fn meta_get(&self, name: &[u8]) -> Result<Option<Bytes>> {
        self.get("meta", name.to_vec())
    }

    fn meta_init(&self, guard: &[u8], values: &[(&[u8], &[u8])]) -> Result<bool> {
        let guard = guard.to_vec();
        let values: Vec<(Vec<u8>, Vec<u8>)> = values
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        self.run("write the first meta values", move |pool| async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(db_error)?;
            tx.batch_execute("LOCK TABLE keyhold_meta IN EXCLUSIVE MODE")
                .await
                .map_err(db_error)?;
            let there = tx
                .query_opt("SELECT 1 FROM keyhold_meta WHERE k = $1", &[&guard])
                .await
                .map_err(db_error)?;
            if there.is_some() {
                return Ok(false);
            }
            for (k, v) in &values {
                tx.execute(
                    "INSERT INTO keyhold_meta (k, v) VALUES ($1, $2) \
                     ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
                    &[k, v],
                )
                .await
                .map_err(db_error)?;
            }
            tx.commit().await.map_err(db_error)?;
            Ok(true)
        })
    }

    fn key_get(&self, id: &Uuid) -> Result<Option<Bytes>> {
        self.get("keys", id.as_bytes().to_vec())
    }

    fn key_swap(&self, id: &Uuid, current: &[u8], new: &[u8]) -> Result<bool> {
        self.swap("keys", id.as_bytes().to_vec(), current, new)
    }

    fn keys(&self) -> Items<'_, (Uuid, Bytes)> {
        Box::new(scan::Scan::all(self, "keys").map(|item| {
            let (k, v) = item?;
            let id = Uuid::from_slice(&k).map_err(super::corrupt("key id"))?;
            Ok((id, Bytes::from(v)))
        }))
    }

    fn provider_ids(&self, provider: &str) -> Items<'_, (i64, Uuid)> {
        ids_of(scan::Scan::prefix(
            self,
            "by_provider",
            crate::store::sled_store::provider_prefix(provider),
            false,
        ))
    }

    fn provider_ids_newest_first(&self, provider: &str) -> Items<'_, (i64, Uuid)> {
        ids_of(scan::Scan::prefix(
            self,
            "by_provider",
            crate::store::sled_store::provider_prefix(provider),
            true,
        ))
    }

    fn count_index(&self) -> Result<u64> {
        self.run("count keys", |pool| async move {
            let client = pool.get().await.map_err(pool_error)?;
            let row = client
                .query_one("SELECT count(*) FROM keyhold_by_provider", &[])
                .await
                .map_err(db_error)?;
            Ok(row.get::<_, i64>(0).max(0) as u64)
        })
    }

    fn usage_get(&self, id: &Uuid) -> Result<Option<Bytes>> {
        self.get("key_usage", id.as_bytes().to_vec())
    }

    fn token_get(&self, at: &[u8; 32]) -> Result<Option<Bytes>> {
        self.get("tokens", at.to_vec())
    }

    fn tokens(&self) -> Items<'_, ([u8; 32], Bytes)> {
        Box::new(scan::Scan::all(self, "tokens").map(|item| {
            let (k, v) = item?;
            let at: [u8; 32] = k
                .as_slice()
                .try_into()
                .map_err(super::corrupt("token hash"))?;
            Ok((at, Bytes::from(v)))
        }))
    }

    fn tokens_move(
        &self,
        meta: &[(&'static [u8], Vec<u8>)],
        moves: &[([u8; 32], [u8; 32], Vec<u8>)],
    ) -> Result<()> {
        let meta: Vec<(Vec<u8>, Vec<u8>)> =
            meta.iter().map(|(k, v)| (k.to_vec(), v.clone())).collect();
        let moves: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = moves
            .iter()
            .map(|(a, b, v)| (a.to_vec(), b.to_vec(), v.clone()))
            .collect();
        self.run("move token records", move |pool| async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(db_error)?;
            for (k, v) in &meta {
                commit::upsert(&tx, "keyhold_meta", k, v).await?;
            }
            for (from, to, v) in &moves {
                tx.execute("DELETE FROM keyhold_tokens WHERE k = $1", &[from])
                    .await
                    .map_err(db_error)?;
                commit::upsert(&tx, "keyhold_tokens", to, v).await?;
            }
            tx.commit().await.map_err(db_error)?;
            Ok(())
        })
    }

    fn commit(&self, records: &[(u64, Vec<u8>)], head: &[u8], ops: &[Op]) -> Result<()> {
        commit::commit(self, records, head, ops)
    }

    fn commit_at_head(
        &self,
        long: bool,
        chain: &mut crate::store::backend::ChainAtHead<'_>,
    ) -> Result<()> {
        commit::commit_at_head(self, long, chain)
    }

    fn audit_last(&self) -> Result<Option<(u64, Bytes)>> {
        self.run("read the newest audit record", |pool| async move {
            let client = pool.get().await.map_err(pool_error)?;
            let row = client
                .query_opt(
                    "SELECT seq, v FROM keyhold_audit ORDER BY seq DESC LIMIT 1",
                    &[],
                )
                .await
                .map_err(db_error)?;
            Ok(row.map(|r| {
                (
                    r.get::<_, i64>(0) as u64,
                    Bytes::from(r.get::<_, Vec<u8>>(1)),
                )
            }))
        })
    }

    fn audit_from(&self, from_seq: u64) -> Items<'_, (u64, Bytes)> {
        Box::new(scan::AuditScan::new(self, from_seq))
    }

    fn entries(&self, table: &str) -> Items<'_, (Bytes, Bytes)> {
        if table == "audit" {
            // One record an entry: the form sled reads as a record of its
            // own (an old schema-1 entry), so backups move between backends.
            return Box::new(scan::AuditScan::new(self, 0).map(|item| {
                let (seq, v) = item?;
                Ok((Bytes::from(seq.to_be_bytes().to_vec()), v))
            }));
        }
        match scan::known_table(table) {
            Some(t) => Box::new(scan::Scan::all(self, t).map(|item| {
                let (k, v) = item?;
                Ok((Bytes::from(k), Bytes::from(v)))
            })),
            None => Box::new(std::iter::once(Err(StoreError::Corrupt {
                what: "table name",
                detail: table.chars().take(40).collect(),
            }))),
        }
    }

    fn put_entry(&self, table: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let node = self.node.clone();
        if table == "audit" {
            // An entry of a sled backup may hold several records.
            let first = crate::store::sled_store::commit_decode_seq(key)?;
            let records: Vec<(i64, Vec<u8>)> =
                crate::store::sled_store::audit_chunks::Entries::new(first, value.to_vec())
                    .map(|(seq, v)| (seq as i64, v.to_vec()))
                    .collect();
            return self.run("write audit records", move |pool| async move {
                let client = pool.get().await.map_err(pool_error)?;
                for (seq, v) in &records {
                    client
                        .execute(
                            "INSERT INTO keyhold_audit (seq, v, node) VALUES ($1, $2, $3) \
                             ON CONFLICT (seq) DO UPDATE SET v = EXCLUDED.v",
                            &[seq, v, &node],
                        )
                        .await
                        .map_err(db_error)?;
                }
                Ok(())
            });
        }
        let t = scan::known_table(table)
            .map(scan::table)
            .transpose()?
            .ok_or_else(|| StoreError::Corrupt {
                what: "table name",
                detail: table.chars().take(40).collect(),
            })?;
        let (k, v) = (key.to_vec(), value.to_vec());
        self.run("write an entry", move |pool| async move {
            let client = pool.get().await.map_err(pool_error)?;
            let sql = format!(
                "INSERT INTO {t} (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
            );
            client.execute(&sql, &[&k, &v]).await.map_err(db_error)?;
            Ok(())
        })
    }
}

fn ids_of<'a>(scan: scan::Paged<scan::Scan<'a>>) -> Items<'a, (i64, Uuid)> {
    Box::new(scan.filter_map(|item| match item {
        Err(e) => Some(Err(e)),
        Ok((k, _)) => crate::store::sled_store::entry_of_index(&k).map(Ok),
    }))
}
