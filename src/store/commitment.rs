//! The state commitment's side of the store facade (see `state`): the
//! digest of every record, the writes of a commit stamped and moved into
//! it, what the check at use learns, and whether another node's rotation
//! replaced the record keys. Kept apart from `mod.rs`, which holds the
//! facade's opening, record keys, meta, commit and audit walk.

use uuid::Uuid;

use super::backend::Op;
use super::{
    corrupt, op_of, state, KeyRecord, RecordKeys, Result, StateDigest, Store, TokenRecord, Write,
    META_RECORD_MAC_NEXT, META_RECORD_MAC_SECRET,
};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The sealed record MAC secrets, current and next, as stored.
pub(crate) type KeysMark = [Option<Vec<u8>>; 2];

/// What a commit changed that the check at use must learn: each key's
/// and token's new stamp and fingerprint (none: the key was removed).
#[derive(Debug, Default)]
pub struct Stamped {
    pub(super) keys: Vec<(Uuid, state::Seen)>,
    pub(super) tokens: Vec<([u8; 32], state::Seen)>,
}

impl Store {
    /// Puts back record keys held before (a switch that failed).
    pub(crate) fn put_record_keys(&self, keys: Arc<RecordKeys>) {
        let mut guard = match self.keys.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *guard = Some(keys);
    }

    /// How many layers a new token record's storage key has (see
    /// `auth::RecordKeys`).
    pub fn token_layers(&self) -> u32 {
        self.record_keys().map_or(0, |k| k.layers())
    }

    /// Notes the sealed record MAC secrets now stored as the ones this
    /// process's record keys come from (see [`Store::keys_replaced`]).
    pub(crate) fn note_keys_mark(&self) {
        if self.backend.node().is_none() {
            return;
        }
        let read = |name| {
            self.backend
                .meta_get(name)
                .ok()
                .flatten()
                .map(|b| b.to_vec())
        };
        let mark = [read(META_RECORD_MAC_SECRET), read(META_RECORD_MAC_NEXT)];
        let mut guard = match self.keys_mark.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *guard = mark;
        self.keys_replaced_seen.store(false, Ordering::SeqCst);
    }

    /// Whether this node found that another node's rotation replaced the
    /// record keys (no query: what [`Store::keys_replaced`] last found).
    pub fn record_keys_replaced(&self) -> bool {
        self.keys_replaced_seen.load(Ordering::SeqCst)
    }

    /// Whether another node changed the record MAC secrets since this
    /// process applied its record keys (a rotation): its records then do
    /// not open here, and that is no tampering. Always false on sled.
    pub(crate) fn keys_replaced(&self) -> Result<bool> {
        self.keys_replaced_asked(false)
    }

    /// As [`Store::keys_replaced`], asking the database even within the
    /// second after the last answer (for a sealed value that just failed
    /// to open, which a rotation in that second explains).
    pub(crate) fn keys_replaced_now(&self) -> Result<bool> {
        self.keys_replaced_asked(true)
    }

    fn keys_replaced_asked(&self, now: bool) -> Result<bool> {
        if self.backend.node().is_none() {
            return Ok(false);
        }
        if self.keys_replaced_seen.load(Ordering::SeqCst) {
            return Ok(true);
        }
        if !now {
            let mut last = match self.keys_checked.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
                return Ok(false);
            }
            *last = Some(std::time::Instant::now());
        }
        let now = [
            self.backend
                .meta_get(META_RECORD_MAC_SECRET)?
                .map(|b| b.to_vec()),
            self.backend
                .meta_get(META_RECORD_MAC_NEXT)?
                .map(|b| b.to_vec()),
        ];
        let mark = match self.keys_mark.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if now != mark {
            // Sticky until this process applies new record keys.
            if let Ok(mut last) = self.keys_checked.lock() {
                *last = None;
            }
            self.keys_replaced_seen.store(true, Ordering::SeqCst);
        }
        Ok(now != mark)
    }

    /// The digest of the state as the records are now: every key, token
    /// and covered meta record, walked once. On a store whose records can
    /// be changed while keyhold runs (PostgreSQL), also learns each
    /// record's stamp for the check at use.
    pub fn compute_state(&self) -> Result<StateDigest> {
        use std::collections::HashMap;
        let keys = self.write_keys()?;
        let mut d = StateDigest::default();
        let learn = self.fresh.is_some();
        let floor = if learn { self.audit_last_seq()? } else { 0 };
        let (mut key_seen, mut token_seen) = (HashMap::new(), HashMap::new());
        for item in self.backend.entries("keys") {
            let (k, v) = item?;
            d.apply(&keys, state::Table::Keys, &k, None, Some(&v));
            if let (true, Ok(id)) = (learn, Uuid::from_slice(&k)) {
                let stamp = KeyRecord::decode(id, &v).map_or(0, |r| r.stamp);
                key_seen.insert(id, seen(stamp, Some(&v)));
            }
        }
        for item in self.backend.entries("tokens") {
            let (k, v) = item?;
            d.apply(&keys, state::Table::Tokens, &k, None, Some(&v));
            if let (true, Ok(at)) = (learn, <[u8; 32]>::try_from(&k[..])) {
                let stamp = TokenRecord::decode(&v).map_or(0, |r| r.stamp);
                token_seen.insert(at, seen(stamp, Some(&v)));
            }
        }
        for item in self.backend.entries("meta") {
            let (k, v) = item?;
            d.apply(&keys, state::Table::Meta, &k, None, Some(&v));
        }
        if let Some(f) = &self.fresh {
            f.replace(key_seen, token_seen, floor);
        }
        Ok(d)
    }

    /// The writes as the backend's ops, each record stamped with the seq
    /// given beside it and authenticated, and `digest` moved past them
    /// (each change's old value read from the store, or from an earlier
    /// write of the same batch). Callers hold the audit log's lock, or the
    /// append lock of a shared database, so nothing else changes these
    /// records meanwhile.
    pub(crate) fn stamp_ops(
        &self,
        writes: &[(Write, u64)],
        mut digest: Option<&mut StateDigest>,
    ) -> Result<(Vec<Op>, Stamped)> {
        use std::collections::HashMap;
        let mut batch: HashMap<(u8, Vec<u8>), Option<Vec<u8>>> = HashMap::new();
        let mut stamped = Stamped::default();
        let keys = self.record_keys();
        let mut ops = Vec::with_capacity(writes.len());
        for (w, stamp) in writes {
            let mut w = w.clone();
            match &mut w {
                Write::PutKey(rec) => rec.stamp = *stamp,
                Write::PutToken { record, .. } => record.stamp = *stamp,
                _ => {}
            }
            let op = op_of(&w, keys.as_deref())?;
            let change: Option<(state::Table, Vec<u8>, Option<Vec<u8>>)> = match &op {
                Op::PutKey { id, value, .. } => {
                    stamped.keys.push((*id, seen(*stamp, Some(value))));
                    Some((
                        state::Table::Keys,
                        id.as_bytes().to_vec(),
                        Some(value.clone()),
                    ))
                }
                Op::DeleteKey { id, .. } => {
                    stamped.keys.push((*id, seen(*stamp, None)));
                    Some((state::Table::Keys, id.as_bytes().to_vec(), None))
                }
                Op::PutToken { at, value } => {
                    stamped.tokens.push((*at, seen(*stamp, Some(value))));
                    Some((state::Table::Tokens, at.to_vec(), Some(value.clone())))
                }
                Op::DeleteToken { at } => {
                    stamped.tokens.push((*at, seen(*stamp, None)));
                    Some((state::Table::Tokens, at.to_vec(), None))
                }
                Op::Meta { name, value } if state::covered_meta(name) => {
                    Some((state::Table::Meta, name.to_vec(), value.clone()))
                }
                _ => None,
            };
            if let (Some((table, key, new)), Some(d), Some(k)) =
                (change, digest.as_deref_mut(), keys.as_deref())
            {
                let slot = (table as u8, key.clone());
                let old = match batch.get(&slot) {
                    Some(v) => v.clone(),
                    None => match table {
                        state::Table::Keys => {
                            let id = Uuid::from_slice(&key).map_err(corrupt("key id"))?;
                            self.backend.key_get(&id)?.map(|b| b.to_vec())
                        }
                        state::Table::Tokens => {
                            let at: [u8; 32] =
                                key.as_slice().try_into().map_err(corrupt("token key"))?;
                            self.backend.token_get(&at)?.map(|b| b.to_vec())
                        }
                        state::Table::Meta => self.backend.meta_get(&key)?.map(|b| b.to_vec()),
                    },
                };
                d.apply(k, table, &key, old.as_deref(), new.as_deref());
                batch.insert(slot, new);
            }
            ops.push(op);
        }
        Ok((ops, stamped))
    }

    /// Learns every record's stamp for the check at use, if this process
    /// has not read the store yet (a shared database; see `state::Fresh`),
    /// with every node's appends held back meanwhile.
    pub fn learn_stamps(&self) -> Result<()> {
        if self.fresh.as_ref().is_some_and(|f| !f.filled()) && self.record_keys().is_some() {
            let _held = self.lock_appends()?;
            self.compute_state()?;
        }
        Ok(())
    }

    /// Notes what a commit wrote, for the check at use (see `state::Fresh`).
    pub(crate) fn note_stamped(&self, stamped: &Stamped) {
        if let Some(f) = &self.fresh {
            for (id, s) in &stamped.keys {
                f.set_key(*id, *s);
            }
            for (at, s) in &stamped.tokens {
                f.set_token(*at, *s);
            }
        }
    }
}

/// What the check at use knows of a record written at `stamp` (`None`:
/// removed).
fn seen(stamp: u64, bytes: Option<&[u8]>) -> state::Seen {
    state::Seen {
        stamp,
        fingerprint: bytes.map(state::fingerprint),
    }
}
