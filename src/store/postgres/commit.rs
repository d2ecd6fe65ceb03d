//! The commit of the audit writer on PostgreSQL: a batch of audit records,
//! the chain head and the changes they record, in one transaction.
//!
//! Every node appends to one chain. The transaction first locks the one
//! row of `keyhold_audit_lock` (so commits from all nodes run one after
//! the other), then reads the newest stored seq: if the batch does not
//! start after it, another node has appended since this node chained the
//! batch, and the commit is refused with [`StoreError::HeadMoved`] before
//! anything is written; the audit log then chains the batch again from
//! the stored head and retries. Nothing can fork the chain: two batches
//! can never both start at the same seq (the seq is also the primary key).

use deadpool_postgres::Transaction;
use uuid::Uuid;

use super::{db_error, pool_error, PgError, PgStore};
use crate::store::backend::{Bytes, ChainAtHead, Op};
use crate::store::sled_store::{decode_count, provider_index_key};
use crate::store::{Result, StoreError, META_AUDIT_HEAD, META_KEY_COUNT};

/// One op in owned form (sent to the client's runtime).
enum Owned {
    PutKey {
        id: Vec<u8>,
        index: Vec<u8>,
        value: Vec<u8>,
        indexed: bool,
    },
    DeleteKey {
        id: Vec<u8>,
        index: Vec<u8>,
    },
    /// A run of consecutive last-use writes to one usage table (keys' or
    /// tokens'), applied in one statement (the last time of each id wins,
    /// as it would applied one by one).
    Touch {
        table: &'static str,
        run: Vec<(Vec<u8>, Vec<u8>)>,
    },
    PutToken {
        at: Vec<u8>,
        value: Vec<u8>,
    },
    DeleteToken {
        at: Vec<u8>,
    },
    Meta {
        name: Vec<u8>,
        value: Option<Vec<u8>>,
    },
    Changes {
        first: i64,
        last: i64,
        value: Vec<u8>,
    },
}

/// A seq as the database stores it (the batch's own seqs are checked to
/// fit before anything is written, so this never saturates in a commit
/// that lands).
fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// An id's last use as stored: (id, time in µs big-endian).
fn touch_entry(id: &Uuid, at_us: i64) -> (Vec<u8>, Vec<u8>) {
    (id.as_bytes().to_vec(), at_us.to_be_bytes().to_vec())
}

/// Adds a last use to the run of the same table that `out` ends with, if
/// it does (returns whether it did).
fn touch(out: &mut [Owned], table: &'static str, id: &Uuid, at_us: i64) -> bool {
    let Some(Owned::Touch { table: t, run }) = out.last_mut() else {
        return false;
    };
    if *t != table {
        return false;
    }
    let (k, v) = touch_entry(id, at_us);
    match run.iter_mut().find(|(key, _)| *key == k) {
        Some(e) => e.1 = v,
        None => run.push((k, v)),
    }
    true
}

fn owned(ops: &[Op]) -> Vec<Owned> {
    let mut out: Vec<Owned> = Vec::with_capacity(ops.len());
    for op in ops {
        let next = match op {
            Op::PutKey {
                id,
                provider,
                created_at_us,
                value,
                indexed,
            } => Owned::PutKey {
                id: id.as_bytes().to_vec(),
                index: provider_index_key(provider, *created_at_us, id),
                value: value.clone(),
                indexed: *indexed,
            },
            Op::DeleteKey {
                id,
                provider,
                created_at_us,
            } => Owned::DeleteKey {
                id: id.as_bytes().to_vec(),
                index: provider_index_key(provider, *created_at_us, id),
            },
            Op::TouchKey { id, at_us } => {
                if touch(&mut out, "keyhold_key_usage", id, *at_us) {
                    continue;
                }
                Owned::Touch {
                    table: "keyhold_key_usage",
                    run: vec![touch_entry(id, *at_us)],
                }
            }
            Op::PutToken { at, value } => Owned::PutToken {
                at: at.to_vec(),
                value: value.clone(),
            },
            Op::DeleteToken { at } => Owned::DeleteToken { at: at.to_vec() },
            Op::TouchToken { id, at_us } => {
                if touch(&mut out, "keyhold_token_usage", id, *at_us) {
                    continue;
                }
                Owned::Touch {
                    table: "keyhold_token_usage",
                    run: vec![touch_entry(id, *at_us)],
                }
            }
            Op::Meta { name, value } => Owned::Meta {
                name: name.to_vec(),
                value: value.clone(),
            },
            Op::Changes { first, last, value } => Owned::Changes {
                first: seq_i64(*first),
                last: seq_i64(*last),
                value: value.clone(),
            },
        };
        out.push(next);
    }
    out
}

pub(super) fn commit(
    store: &PgStore,
    records: &[(u64, Vec<u8>)],
    head: &[u8],
    ops: &[Op],
) -> Result<()> {
    let Some(first) = records.first().map(|r| r.0) else {
        return Ok(());
    };
    let first = i64::try_from(first).map_err(|_| StoreError::Corrupt {
        what: "audit log",
        detail: "a seq beyond what the database stores".into(),
    })?;
    let seqs: Vec<i64> = records.iter().map(|r| r.0 as i64).collect();
    let values: Vec<Vec<u8>> = records.iter().map(|r| r.1.clone()).collect();
    let nodes: Vec<String> = vec![store.node.clone(); records.len()];
    let head = head.to_vec();
    let ops = owned(ops);
    store.run("commit audit records", move |pool| async move {
        let mut client = pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(db_error)?;
        tx.query_one(
            "SELECT id FROM keyhold_audit_lock WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await
        .map_err(db_error)?;
        let newest: i64 = tx
            .query_one("SELECT COALESCE(max(seq), 0) FROM keyhold_audit", &[])
            .await
            .map_err(db_error)?
            .get(0);
        if first <= newest {
            // Dropping the transaction rolls it back.
            return Err(PgError::Store(StoreError::HeadMoved));
        }
        write_batch(&tx, &seqs, &values, &nodes, &head, &ops).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(())
    })
}

/// Insert or replace `k` in a k/v table.
pub(super) async fn upsert(
    tx: &Transaction<'_>,
    table: &'static str,
    k: &[u8],
    v: &[u8],
) -> std::result::Result<(), PgError> {
    let sql = format!(
        "INSERT INTO {table} (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
    );
    let stmt = tx.prepare_cached(&sql).await.map_err(db_error)?;
    tx.execute(&stmt, &[&k, &v]).await.map_err(db_error)?;
    Ok(())
}

/// Applies one op; returns the change in the number of keys.
async fn apply(tx: &Transaction<'_>, op: &Owned) -> std::result::Result<i64, PgError> {
    let mut added = 0;
    match op {
        Owned::PutKey {
            id,
            index,
            value,
            indexed,
        } => {
            let row = tx
                .query_one(
                    "INSERT INTO keyhold_keys (k, v) VALUES ($1, $2) \
                     ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v RETURNING (xmax = 0)",
                    &[id, value],
                )
                .await
                .map_err(db_error)?;
            if row.get::<_, bool>(0) {
                added = 1;
                // As on sled: a usage row left by a reveal that raced the
                // key's deletion must not show on a key imported again.
                tx.execute("DELETE FROM keyhold_key_usage WHERE k = $1", &[id])
                    .await
                    .map_err(db_error)?;
            }
            if *indexed {
                upsert(tx, "keyhold_by_provider", index, &[]).await?;
            } else {
                tx.execute("DELETE FROM keyhold_by_provider WHERE k = $1", &[index])
                    .await
                    .map_err(db_error)?;
            }
        }
        Owned::DeleteKey { id, index } => {
            let n = tx
                .execute("DELETE FROM keyhold_keys WHERE k = $1", &[id])
                .await
                .map_err(db_error)?;
            if n > 0 {
                added = -1;
            }
            tx.execute("DELETE FROM keyhold_key_usage WHERE k = $1", &[id])
                .await
                .map_err(db_error)?;
            tx.execute("DELETE FROM keyhold_by_provider WHERE k = $1", &[index])
                .await
                .map_err(db_error)?;
        }
        Owned::Touch { table, run } => {
            let (ids, times): (Vec<Vec<u8>>, Vec<Vec<u8>>) = run.iter().cloned().unzip();
            let sql = format!(
                "INSERT INTO {table} (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
            );
            let stmt = tx.prepare_cached(&sql).await.map_err(db_error)?;
            tx.execute(&stmt, &[&ids, &times]).await.map_err(db_error)?;
        }
        Owned::PutToken { at, value } => upsert(tx, "keyhold_tokens", at, value).await?,
        Owned::DeleteToken { at } => {
            tx.execute("DELETE FROM keyhold_tokens WHERE k = $1", &[at])
                .await
                .map_err(db_error)?;
        }
        Owned::Meta { name, value } => match value {
            Some(v) => upsert(tx, "keyhold_meta", name, v).await?,
            None => {
                tx.execute("DELETE FROM keyhold_meta WHERE k = $1", &[name])
                    .await
                    .map_err(db_error)?;
            }
        },
        Owned::Changes { first, last, value } => {
            let stmt = tx
                .prepare_cached("INSERT INTO keyhold_changes (last, first, v) VALUES ($1, $2, $3)")
                .await
                .map_err(db_error)?;
            tx.execute(&stmt, &[last, first, value])
                .await
                .map_err(db_error)?;
        }
    }
    Ok(added)
}

/// Inserts a chained batch, the head and the ops, inside `tx`.
async fn write_batch(
    tx: &Transaction<'_>,
    seqs: &[i64],
    values: &[Vec<u8>],
    nodes: &[String],
    head: &[u8],
    ops: &[Owned],
) -> std::result::Result<(), PgError> {
    let insert = tx
        .prepare_cached(
            "INSERT INTO keyhold_audit (seq, v, node) \
                 SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::text[])",
        )
        .await
        .map_err(db_error)?;
    tx.execute(&insert, &[&seqs, &values, &nodes])
        .await
        .map_err(db_error)?;
    upsert(tx, "keyhold_meta", META_AUDIT_HEAD, head).await?;
    let mut added: i64 = 0;
    for op in ops {
        added += apply(tx, op).await?;
    }
    if added != 0 {
        let row = tx
            .query_opt(
                "SELECT v FROM keyhold_meta WHERE k = $1",
                &[&META_KEY_COUNT],
            )
            .await
            .map_err(db_error)?;
        if let Some(n) = row.and_then(|r| decode_count(&r.get::<_, Vec<u8>>(0))) {
            let n = n.saturating_add_signed(added);
            upsert(tx, "keyhold_meta", META_KEY_COUNT, &n.to_be_bytes()).await?;
        }
    }
    Ok(())
}

/// The commit of a node that shares the store (see the module docs): the
/// lock is taken and the newest record and head are read first, in the
/// transaction; `chain` builds the batch on them on the calling thread
/// (the transaction waits for it), and the batch is written and committed
/// in the same transaction. No other node can append in between, so the
/// batch never has to be chained again.
pub(super) fn commit_at_head(
    store: &PgStore,
    long: bool,
    chain: &mut ChainAtHead<'_>,
) -> Result<()> {
    type Seen = (Option<Vec<u8>>, Option<(i64, Vec<u8>)>);
    type Batch = (Vec<i64>, Vec<Vec<u8>>, Vec<u8>, Vec<Owned>);
    let (seen_tx, seen_rx) = std::sync::mpsc::sync_channel::<Seen>(1);
    let (batch_tx, batch_rx) = tokio::sync::oneshot::channel::<Batch>();
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
    // A commit whose chaining walks the whole store (`long`) gets up to
    // an hour; every other one the call timeout.
    let timeout = if long {
        store.timeout.max(std::time::Duration::from_secs(3600))
    } else {
        store.timeout
    };
    let (pool, node) = (store.pool.clone(), store.node.clone());
    let started = std::time::Instant::now();
    store.rt.handle.spawn(async move {
        let work = async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(db_error)?;
            tx.query_one(
                "SELECT id FROM keyhold_audit_lock WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await
            .map_err(db_error)?;
            let last = tx
                .query_opt(
                    "SELECT seq, v FROM keyhold_audit ORDER BY seq DESC LIMIT 1",
                    &[],
                )
                .await
                .map_err(db_error)?
                .map(|r| (r.get::<_, i64>(0), r.get::<_, Vec<u8>>(1)));
            let head = tx
                .query_opt(
                    "SELECT v FROM keyhold_meta WHERE k = $1",
                    &[&META_AUDIT_HEAD],
                )
                .await
                .map_err(db_error)?
                .map(|r| r.get::<_, Vec<u8>>(0));
            if seen_tx.send((head, last)).is_err() {
                return Err(PgError::Db("the batch was given up".into()));
            }
            // A caller that could not chain drops the sender: roll back.
            let (seqs, values, head, ops) = batch_rx
                .await
                .map_err(|_| PgError::Db("the batch was not chained".into()))?;
            let nodes = vec![node; seqs.len()];
            write_batch(&tx, &seqs, &values, &nodes, &head, &ops).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(())
        };
        let res = match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(PgError::Db(format!(
                "no answer within {} ms (the database is unreachable or overloaded)",
                timeout.as_millis()
            ))),
        };
        let _ = done_tx.send(res);
    });
    let what = "commit audit records";
    let wait_done = |extra: std::time::Duration| -> Result<()> {
        let left = (timeout + extra).saturating_sub(started.elapsed());
        match done_rx.recv_timeout(left) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(super::store_error(what, e)),
            Err(_) => Err(super::store_error(
                what,
                PgError::Db("no answer in time (the database is unreachable or overloaded)".into()),
            )),
        }
    };
    let left = timeout.saturating_sub(started.elapsed());
    let Ok((head, last)) = seen_rx.recv_timeout(left) else {
        // The transaction failed (or stalled) before the head was read.
        return wait_done(std::time::Duration::from_millis(250));
    };
    let chained = chain(
        head.map(Bytes::from),
        last.map(|(seq, v)| (seq as u64, Bytes::from(v))),
    );
    let (records, head, ops) = match chained {
        Ok(c) => c,
        Err(e) => {
            drop(batch_tx);
            let _ = wait_done(std::time::Duration::from_millis(250));
            return Err(e);
        }
    };
    let seqs = records
        .iter()
        .map(|r| {
            i64::try_from(r.0).map_err(|_| StoreError::Corrupt {
                what: "audit log",
                detail: "a seq beyond what the database stores".into(),
            })
        })
        .collect::<Result<Vec<i64>>>()?;
    let values = records.into_iter().map(|r| r.1).collect();
    if batch_tx.send((seqs, values, head, owned(&ops))).is_err() {
        return wait_done(std::time::Duration::from_millis(250));
    }
    wait_done(std::time::Duration::from_millis(250))
}
