//! The store facade's key and token queries, and the steps of the upgrade
//! to schema 3: each reads bytes from the backend and decodes and
//! authenticates them as the store's state requires.

use uuid::Uuid;

use super::records::Auth;
use super::{
    decode_count, decode_i64, Bytes, KeyRecord, Result, Store, StoreError, TokenRecord,
    META_KEY_COUNT,
};

impl Store {
    // ---- keys ----

    /// One key by id.
    pub fn get_key(&self, id: &Uuid) -> Result<Option<KeyRecord>> {
        Ok(self.get_key_raw(id)?.map(|(rec, _)| rec))
    }

    /// One key by id with its stored bytes (for compare-and-swap).
    ///
    /// Where records can change while this process reads them (a shared
    /// database), a record refused as an older copy is read once more
    /// before it is refused: a commit of this node may have moved its
    /// expected stamp on between the read and the check.
    pub fn get_key_raw(&self, id: &Uuid) -> Result<Option<(KeyRecord, Bytes)>> {
        let read = || -> Result<Option<(KeyRecord, Bytes)>> {
            // With the newest audit seq of the same snapshot: what other
            // nodes changed up to it is learnt before the record is checked.
            match self.backend.key_get_seen(id)? {
                None => Ok(None),
                Some((v, seq)) => {
                    self.catch_up(seq)?;
                    Ok(Some((self.decode_key(*id, &v)?, v)))
                }
            }
        };
        match read() {
            Err(StoreError::Tampered { .. }) if self.backend.node().is_some() => match read() {
                Err(e @ StoreError::Tampered { .. }) => Err(self.replaced_or(e)?),
                res => res,
            },
            res => res,
        }
    }

    /// `e`, unless another node rotated the record keys meanwhile: then
    /// [`StoreError::KeysReplaced`].
    fn replaced_or(&self, e: StoreError) -> Result<StoreError> {
        Ok(if self.keys_replaced()? {
            StoreError::KeysReplaced
        } else {
            e
        })
    }

    /// A key's last_used, if it was ever revealed.
    pub fn last_used(&self, id: &Uuid) -> Result<Option<i64>> {
        match self.backend.usage_get(id)? {
            None => Ok(None),
            Some(v) => Ok(Some(decode_i64(&v)?)),
        }
    }

    /// Keys, oldest first, optionally for one provider.
    pub fn list_keys(&self, provider: Option<&str>) -> Result<Vec<KeyRecord>> {
        let mut out = Vec::new();
        match provider {
            Some(p) => {
                for entry in self.backend.provider_ids(p) {
                    let (at, id) = entry?;
                    if let Some(rec) = self.get_key(&id)? {
                        out.push(indexed(p, at, rec)?);
                    }
                }
            }
            None => {
                self.catch_up_for_walk()?;
                for item in self.backend.keys() {
                    let (id, v) = item?;
                    out.push(self.decode_key(id, &v)?);
                }
                out.sort_by_key(|k| (k.created_at_us, k.id));
            }
        }
        Ok(out)
    }

    /// Keys of a provider, newest first, lazily (for "newest live key").
    pub fn provider_keys_newest_first(
        &self,
        provider: &str,
    ) -> impl Iterator<Item = Result<KeyRecord>> + '_ {
        let provider = provider.to_string();
        self.backend
            .provider_ids_newest_first(&provider)
            .filter_map(move |entry| match entry {
                Err(e) => Some(Err(e)),
                Ok((at, id)) => match self.get_key(&id) {
                    Err(e) => Some(Err(e)),
                    Ok(None) => None,
                    Ok(Some(rec)) => Some(indexed(&provider, at, rec)),
                },
            })
    }

    /// The number of stored keys, from the count kept in meta. Only if
    /// that is unreadable are the keys counted (on the provider index,
    /// one small entry a key): a walk pulls every node it visits into
    /// sled's cache, and walking 100,000 keys at start-up left ~40 MiB
    /// resident for the life of the server.
    pub fn key_count(&self) -> usize {
        let stored = self
            .backend
            .meta_get(META_KEY_COUNT)
            .ok()
            .flatten()
            .as_deref()
            .and_then(decode_count);
        match stored {
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => self
                .backend
                .count_index()
                .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX)),
        }
    }

    /// Every key with its stored bytes (for compare-and-swap), in id order.
    /// A record that fails its integrity check is an `Err` item; the walk
    /// goes on.
    pub fn iter_keys(&self) -> impl Iterator<Item = Result<(KeyRecord, Bytes)>> + '_ {
        // What other nodes changed is learnt first (a failure to: the
        // first item).
        let caught_up = self.catch_up_for_walk().err().map(Err);
        caught_up
            .into_iter()
            .chain(self.backend.keys().map(move |item| {
                let (id, v) = item?;
                Ok((self.decode_key(id, &v)?, v))
            }))
    }

    // ---- tokens ----

    /// A token record by the SHA-256 of the token, with its storage key.
    pub fn get_token(&self, sha: &[u8; 32]) -> Result<Option<([u8; 32], TokenRecord)>> {
        // While a rotation moves token records, one may be where the next
        // record MAC secret puts it, or still where the current one does.
        // The current place first: a move (put at the next place, delete
        // at the current one, in one commit) is never undone, so a record
        // missed there is found at the next place afterwards.
        let mut places = vec![self.token_key(sha)?];
        if let Some(next) = self.record_keys().and_then(|k| k.token_key_next(sha)) {
            places.push(next);
        }
        let read = || -> Result<Option<([u8; 32], TokenRecord)>> {
            for at in &places {
                if let Some((v, seq)) = self.backend.token_get_seen(at)? {
                    self.catch_up(seq)?;
                    return Ok(Some((*at, self.decode_token(at, &v)?)));
                }
            }
            Ok(None)
        };
        // As for keys (see `get_key_raw`): read once more before refusing;
        // a token not found, or refused, on a node whose record keys another
        // node's rotation replaced is not this token's fault.
        let node = self.backend.node().is_some();
        match read() {
            Err(StoreError::Tampered { .. }) if node => match read() {
                Err(e @ StoreError::Tampered { .. }) => Err(self.replaced_or(e)?),
                res => res,
            },
            Ok(None) if node && self.keys_replaced()? => Err(StoreError::KeysReplaced),
            res => res,
        }
    }

    /// Every token record with its storage key. A record that fails its
    /// integrity check fails the whole listing.
    pub fn list_tokens(&self) -> Result<Vec<([u8; 32], TokenRecord)>> {
        self.catch_up_for_walk()?;
        let mut out = Vec::new();
        for item in self.backend.tokens() {
            let (at, v) = item?;
            out.push((at, self.decode_token(&at, &v)?));
        }
        out.sort_by_key(|(_, r)| r.created_at_us);
        Ok(out)
    }

    /// Every token's last use (token id → µs), as the audit commits
    /// wrote it. A malformed entry is skipped (it only feeds a listing).
    pub fn token_usage(&self) -> Result<std::collections::HashMap<Uuid, i64>> {
        let mut out = std::collections::HashMap::new();
        for item in self.backend.entries("token_usage") {
            let (k, v) = item?;
            if let (Ok(id), Ok(at)) = (Uuid::from_slice(&k), decode_i64(&v)) {
                out.insert(id, at);
            }
        }
        Ok(out)
    }

    // ---- the upgrade to schema 3 (see `crate::unlock`) ----

    /// Step 1 of the upgrade, in one transaction: writes the new meta
    /// values (sealed secrets, check value, the in-progress mark) and moves
    /// every pre-schema-3 token record to its keyed digest, authenticated.
    /// The record keys must be applied first.
    pub fn upgrade_meta_and_tokens(&self, meta: &[(&'static [u8], Vec<u8>)]) -> Result<u64> {
        let keys = self.write_keys()?;
        let mut moves = Vec::new();
        for item in self.backend.tokens() {
            let (sha, v) = item?;
            if !TokenRecord::is_legacy(&v) {
                continue;
            }
            let rec = TokenRecord::decode_checked(&sha, &v, Auth::Legacy)?;
            let at = keys.token_key(&sha);
            moves.push((sha, at, rec.encode(&at, &keys)?));
        }
        self.backend.tokens_move(meta, &moves)?;
        self.flush()?;
        Ok(moves.len() as u64)
    }

    /// Step 2 of the upgrade: authenticates every pre-schema-3 key record
    /// in place (compare-and-swap each; running it again finishes the job).
    pub fn upgrade_keys(&self) -> Result<u64> {
        let keys = self.write_keys()?;
        let mut n = 0;
        for item in self.backend.keys() {
            let (id, v) = item?;
            if !KeyRecord::is_legacy(&v) {
                continue;
            }
            let rec = KeyRecord::decode_checked(id, &v, Auth::Legacy)?;
            self.backend.key_swap(&id, &v, &rec.encode(&keys)?)?;
            n += 1;
        }
        self.flush()?;
        Ok(n)
    }
}

/// Checks a provider index entry against the authenticated record it
/// names: the index is not authenticated, so an entry planted under
/// another provider, or with another time (to make an older key "newest"),
/// is refused as tampered rather than followed.
fn indexed(provider: &str, at: i64, rec: KeyRecord) -> Result<KeyRecord> {
    if rec.provider != provider || rec.created_at_us != at {
        return Err(super::StoreError::Tampered {
            what: "provider index",
            id: rec.id.to_string(),
        });
    }
    Ok(rec)
}
