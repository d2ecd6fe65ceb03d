//! The commit of the audit writer: a batch of audit records, the new
//! chain head and the changes they record, in one transaction across every
//! tree (atomic across a crash; durable after a flush).

use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use sled::Transactional;
use uuid::Uuid;

use super::Trees;
use crate::store::backend::Op;
use crate::store::{corrupt, Result, StoreError, META_AUDIT_HEAD, META_KEY_COUNT};

pub(super) fn commit(t: &Trees, records: &[(u64, Vec<u8>)], head: &[u8], ops: &[Op]) -> Result<()> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match commit_once(t, records, head, ops) {
            Err(CommitAbort::TailMoved) if attempts < 3 => continue,
            Err(CommitAbort::TailMoved) => {
                return Err(StoreError::Corrupt {
                    what: "audit log",
                    detail: "its newest entry kept changing under the writer".into(),
                })
            }
            Err(CommitAbort::Occupied(seq)) => {
                return Err(StoreError::Corrupt {
                    what: "audit log",
                    detail: format!(
                        "an entry at seq {seq} already exists where new records were to go \
                         (records were added outside keyhold; nothing was overwritten). \
                         Run `keyhold audit verify`"
                    ),
                })
            }
            Err(CommitAbort::Store(e)) => return Err(e),
            Ok(()) => return Ok(()),
        }
    }
}

/// One attempt of [`commit`]. The tail entry is read before the
/// transaction and checked again inside it, and a new entry never
/// replaces one that exists: an append can only extend the newest
/// entry it read, or add entries after it.
fn commit_once(
    t: &Trees,
    records: &[(u64, Vec<u8>)],
    head: &[u8],
    ops: &[Op],
) -> std::result::Result<(), CommitAbort> {
    let last = t.audit.last().map_err(|e| CommitAbort::Store(e.into()))?;
    // A tail whose key is not a seq is never extended (so never
    // rewritten): new entries all have 8-byte keys.
    let tail = last
        .as_ref()
        .and_then(|(k, v)| Some((decode_seq(k).ok()?, v)));
    let chunks: Vec<([u8; 8], Vec<u8>)> = super::audit_chunks::plan_append(tail, records)
        .into_iter()
        .map(|(key, value)| (key.to_be_bytes(), value))
        .collect();
    let trees = (
        &t.audit,
        &t.meta,
        &t.keys,
        &t.key_usage,
        &t.by_provider,
        &t.tokens,
        &t.token_usage,
    );
    let res: std::result::Result<(), TransactionError<CommitAbort>> = trees.transaction(
        |(audit, meta, keys, usage, by_provider, tokens, token_usage)| {
            for (key, value) in &chunks {
                let now = audit.get(key)?;
                // The one entry a commit may rewrite: the tail it read,
                // extended (its bytes stay a prefix of the new value).
                let extended =
                    tail.filter(|(seq, read)| seq.to_be_bytes() == *key && value.starts_with(read));
                if let Some((_, read)) = extended {
                    if now.as_ref() != Some(read) {
                        return Err(ConflictableTransactionError::Abort(CommitAbort::TailMoved));
                    }
                } else if now.is_some() {
                    return Err(ConflictableTransactionError::Abort(CommitAbort::Occupied(
                        u64::from_be_bytes(*key),
                    )));
                }
                audit.insert(key, value.as_slice())?;
            }
            meta.insert(META_AUDIT_HEAD, head)?;
            let mut added: i64 = 0;
            for op in ops {
                let trees = Ops {
                    keys,
                    usage,
                    by_provider,
                    tokens,
                    token_usage,
                    meta,
                };
                added += apply(op, &trees)?;
            }
            if added != 0 {
                if let Some(n) = meta.get(META_KEY_COUNT)?.as_deref().and_then(decode_count) {
                    let n = n.saturating_add_signed(added);
                    meta.insert(META_KEY_COUNT, &n.to_be_bytes())?;
                }
            }
            Ok(())
        },
    );
    match res {
        Ok(()) => Ok(()),
        Err(TransactionError::Abort(a)) => Err(a),
        Err(TransactionError::Storage(e)) => Err(CommitAbort::Store(e.into())),
    }
}

/// Why one attempt of [`Store::commit`] did not apply.
enum CommitAbort {
    /// The newest audit entry changed between reading it and the
    /// transaction (only a second writer could do that): plan again.
    TailMoved,
    /// A new entry's key is taken: the log holds entries keyhold did not
    /// write there. Nothing is overwritten.
    Occupied(u64),
    Store(StoreError),
}

/// The trees an op may change, inside the commit's transaction.
struct Ops<'a> {
    keys: &'a TransactionalTree,
    usage: &'a TransactionalTree,
    by_provider: &'a TransactionalTree,
    tokens: &'a TransactionalTree,
    token_usage: &'a TransactionalTree,
    meta: &'a TransactionalTree,
}

/// Applies one op inside the commit's transaction; returns the change
/// in the number of keys.
fn apply(op: &Op, t: &Ops<'_>) -> std::result::Result<i64, UnabortableTransactionError> {
    let Ops {
        keys,
        usage,
        by_provider,
        tokens,
        token_usage,
        meta,
    } = *t;
    let mut added = 0;
    match op {
        Op::PutKey {
            id,
            provider,
            created_at_us,
            value,
            indexed,
        } => {
            if keys.insert(id.as_bytes(), value.as_slice())?.is_none() {
                added = 1;
                // A usage entry left by a reveal that raced the key's
                // deletion must not show on a key imported again
                // under the same id.
                usage.remove(id.as_bytes())?;
            }
            let index = provider_index_key(provider, *created_at_us, id);
            if *indexed {
                by_provider.insert(index, &[])?;
            } else {
                by_provider.remove(index)?;
            }
        }
        Op::DeleteKey {
            id,
            provider,
            created_at_us,
        } => {
            if keys.remove(id.as_bytes())?.is_some() {
                added = -1;
            }
            usage.remove(id.as_bytes())?;
            by_provider.remove(provider_index_key(provider, *created_at_us, id))?;
        }
        Op::TouchKey { id, at_us } => {
            // Not checked against `keys`: that read cost the single
            // audit writer a node load per reveal on a large store. A
            // reveal that races a deletion leaves a 24-byte entry that
            // nothing reads (usage is only read through a key).
            usage.insert(id.as_bytes(), &at_us.to_be_bytes())?;
        }
        Op::PutToken { at, value } => {
            tokens.insert(at, value.as_slice())?;
        }
        Op::DeleteToken { at } => {
            tokens.remove(at)?;
        }
        Op::TouchToken { id, at_us } => {
            token_usage.insert(id.as_bytes(), &at_us.to_be_bytes())?;
        }
        Op::Meta { name, value } => match value {
            Some(v) => {
                meta.insert(*name, v.as_slice())?;
            }
            None => {
                meta.remove(*name)?;
            }
        },
        // One process holds a sled store: no other node checks at use.
        Op::Changes { .. } => {}
    }
    Ok(added)
}

/// `provider 0x00 created_at(u64 BE, offset) id(16)`: sorted by time
/// within a provider, so the newest is the last.
pub(crate) fn provider_index_key(provider: &str, created_at_us: i64, id: &Uuid) -> Vec<u8> {
    let mut k = provider_prefix(provider);
    // Offset so negative times still sort correctly as unsigned bytes.
    let t = (created_at_us as u64) ^ (1u64 << 63);
    k.extend_from_slice(&t.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

pub(crate) fn provider_prefix(provider: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(provider.len() + 25);
    k.extend_from_slice(provider.as_bytes());
    k.push(0);
    k
}

/// `(created_at, id)` of a provider index entry.
pub(crate) fn entry_of_index(k: &[u8]) -> Option<(i64, Uuid)> {
    if k.len() < 24 {
        return None;
    }
    let id = Uuid::from_slice(&k[k.len() - 16..]).ok()?;
    let t: [u8; 8] = k[k.len() - 24..k.len() - 16].try_into().ok()?;
    Some(((u64::from_be_bytes(t) ^ (1u64 << 63)) as i64, id))
}

pub(super) fn decode_seq(k: &[u8]) -> Result<u64> {
    let b: [u8; 8] = k.try_into().map_err(corrupt("audit seq"))?;
    Ok(u64::from_be_bytes(b))
}

pub(crate) fn decode_count(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}
