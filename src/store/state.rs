//! The state commitment: what binds every key, token and meta record to
//! the signed audit chain, so that an older authentic copy of one record
//! put back (from a backup, from sled's old segments, from a PostgreSQL
//! dead tuple) is refused.
//!
//! Each record contributes F = HMAC(state key, table ‖ len ‖ storage key ‖
//! stored value). The digest keeps, per table, the sum of the
//! contributions modulo 2^256 and the number of records (keys, tokens),
//! and one truncated fingerprint per meta value (so a changed value is
//! named). A commit updates it in O(changes): minus the old value's
//! contribution, plus the new one's. The digest is kept in the chain head
//! (meta `audit_head`), sealed: encrypted with a pad that depends on the
//! head's seq and mac (a sum seen in clear at each commit would let an
//! observer of the files learn per-record differences and look for a set
//! of older copies that sums to the same value), and authenticated by an
//! HMAC bound to the head's seq and mac, which the audit signing key
//! signs. Both keys are derived from the store's record secret: nobody
//! without the keyring can make a digest the store accepts.
//!
//! Every stored key and token record also carries, under its MAC, the seq
//! of the audit record whose commit wrote it (its stamp), which tells an
//! older copy apart from the current one at its use (see [`Fresh`]).
//!
//! Not covered: the chain head itself (it carries the digest), the key
//! count (a cache: recounted when unreadable), the last-use tables and the
//! provider index (each index entry is checked against the authenticated
//! record it names).
//!
//! Over 500 lines: one concept (what binds the state to the chain: the
//! digest, its seal, the per-node check at use), about a fifth of it the
//! unit tests of each part.

use std::collections::HashMap;
use std::sync::RwLock;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use super::auth::RecordKeys;
use super::{corrupt, Result, StoreError, META_AUDIT_HEAD, META_KEY_COUNT};

/// The tables the digest covers, as the byte F starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    Keys = 1,
    Tokens = 2,
    Meta = 3,
}

/// Whether a meta value is covered (all but the head and the key count).
pub(crate) fn covered_meta(name: &[u8]) -> bool {
    name != META_AUDIT_HEAD && name != META_KEY_COUNT
}

/// A sum of 256-bit values modulo 2^256 (little-endian limbs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct Sum256([u64; 4]);

impl Sum256 {
    fn limbs(x: &[u8; 32]) -> [u64; 4] {
        let mut out = [0u64; 4];
        for (i, limb) in out.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&x[i * 8..i * 8 + 8]);
            *limb = u64::from_le_bytes(b);
        }
        out
    }

    pub(crate) fn add(&mut self, x: &[u8; 32]) {
        let y = Self::limbs(x);
        let mut carry = false;
        for (a, b) in self.0.iter_mut().zip(y) {
            let (s1, c1) = a.overflowing_add(b);
            let (s2, c2) = s1.overflowing_add(u64::from(carry));
            *a = s2;
            carry = c1 || c2;
        }
    }

    pub(crate) fn sub(&mut self, x: &[u8; 32]) {
        let y = Self::limbs(x);
        let mut borrow = false;
        for (a, b) in self.0.iter_mut().zip(y) {
            let (d1, b1) = a.overflowing_sub(b);
            let (d2, b2) = d1.overflowing_sub(u64::from(borrow));
            *a = d2;
            borrow = b1 || b2;
        }
    }
}

/// The digest of the whole state (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StateDigest {
    pub(crate) keys: Sum256,
    pub(crate) key_records: u64,
    pub(crate) tokens: Sum256,
    pub(crate) token_records: u64,
    /// (name, truncated fingerprint) of each covered meta value, sorted.
    pub(crate) meta: Vec<(Vec<u8>, [u8; 16])>,
}

fn hmac(key: &[u8; 32]) -> Hmac<Sha256> {
    match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts any key length"),
    }
}

/// One record's contribution.
pub(crate) fn contribution(keys: &RecordKeys, table: Table, key: &[u8], value: &[u8]) -> [u8; 32] {
    let mut m = hmac(keys.state_key());
    m.update(&[table as u8]);
    m.update(&(key.len() as u32).to_be_bytes());
    m.update(key);
    m.update(value);
    m.finalize().into_bytes().into()
}

impl StateDigest {
    /// Applies one change: `old` is what the record held (`None`: absent),
    /// `new` what it holds after (`None`: removed).
    pub(crate) fn apply(
        &mut self,
        keys: &RecordKeys,
        table: Table,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) {
        match table {
            Table::Keys | Table::Tokens => {
                let (sum, count) = if table == Table::Keys {
                    (&mut self.keys, &mut self.key_records)
                } else {
                    (&mut self.tokens, &mut self.token_records)
                };
                if let Some(o) = old {
                    sum.sub(&contribution(keys, table, key, o));
                    *count = count.wrapping_sub(1);
                }
                if let Some(n) = new {
                    sum.add(&contribution(keys, table, key, n));
                    *count = count.wrapping_add(1);
                }
            }
            Table::Meta => {
                if !covered_meta(key) {
                    return;
                }
                let at = self.meta.binary_search_by(|(n, _)| n.as_slice().cmp(key));
                match (at, new) {
                    (Ok(i), None) => {
                        self.meta.remove(i);
                    }
                    (Err(_), None) => {}
                    (at, Some(v)) => {
                        let f = contribution(keys, table, key, v);
                        let mut short = [0u8; 16];
                        short.copy_from_slice(&f[..16]);
                        match at {
                            Ok(i) => self.meta[i].1 = short,
                            Err(i) => self.meta.insert(i, (key.to_vec(), short)),
                        }
                    }
                }
            }
        }
    }

    /// Whether the state holds the meta value `name`.
    pub(crate) fn has_meta(&self, name: &[u8]) -> bool {
        self.meta.iter().any(|(n, _)| n == name)
    }

    /// Whether the state holds `value` as the meta value `name` (what a
    /// node checks a value read while it runs against: the signed head).
    pub fn meta_is(&self, keys: &RecordKeys, name: &[u8], value: &[u8]) -> bool {
        let f = contribution(keys, Table::Meta, name, value);
        self.meta
            .iter()
            .any(|(n, short)| n == name && short[..] == f[..16])
    }

    /// What differs between the signed digest (`self`) and the one the
    /// records give (`found`), said for people; empty when nothing does.
    pub fn differences(&self, found: &StateDigest) -> Vec<String> {
        let mut out = Vec::new();
        let table = |what: &str, want: (Sum256, u64), got: (Sum256, u64), out: &mut Vec<String>| {
            if want == got {
                return;
            }
            let how = match got.1.cmp(&want.1) {
                std::cmp::Ordering::Equal => "one or more were replaced (by an older copy, or \
                                              another store's)"
                    .to_string(),
                std::cmp::Ordering::Less => format!(
                    "{} records are missing (and others may be replaced)",
                    want.1 - got.1
                ),
                std::cmp::Ordering::Greater => format!(
                    "{} records were added (a purged or never-written record put back?)",
                    got.1 - want.1
                ),
            };
            out.push(format!(
                "the {what} records differ from the signed state ({} signed, {} found): {how}",
                want.1, got.1
            ));
        };
        table(
            "key",
            (self.keys, self.key_records),
            (found.keys, found.key_records),
            &mut out,
        );
        table(
            "token",
            (self.tokens, self.token_records),
            (found.tokens, found.token_records),
            &mut out,
        );
        // Names are bytes someone with the files may have written: shown
        // escaped, never as terminal control sequences.
        let name = |n: &[u8]| String::from_utf8_lossy(n).escape_debug().to_string();
        for (n, f) in &self.meta {
            match found.meta.iter().find(|(m, _)| m == n) {
                None => out.push(format!("the meta value `{}` is missing", name(n))),
                Some((_, g)) if g != f => out.push(format!(
                    "the meta value `{}` differs from the signed state (set back or replaced)",
                    name(n)
                )),
                Some(_) => {}
            }
        }
        for (n, _) in &found.meta {
            if !self.meta.iter().any(|(m, _)| m == n) {
                out.push(format!(
                    "the meta value `{}` is not in the signed state (added outside keyhold)",
                    name(n)
                ));
            }
        }
        out
    }

    fn pad(keys: &RecordKeys, seq: u64, mac: &[u8; 32], len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 32);
        let mut block = 0u32;
        while out.len() < len {
            let mut m = hmac(keys.state_mask_key());
            m.update(b"keyhold-state-pad-v1");
            m.update(&seq.to_be_bytes());
            m.update(mac);
            m.update(&block.to_be_bytes());
            out.extend_from_slice(&m.finalize().into_bytes());
            block += 1;
        }
        out.truncate(len);
        out
    }

    fn seal_mac(keys: &RecordKeys, seq: u64, mac: &[u8; 32], plain: &[u8]) -> [u8; 32] {
        let mut m = hmac(keys.state_seal_key());
        m.update(b"keyhold-state-v1");
        m.update(&seq.to_be_bytes());
        m.update(mac);
        m.update(plain);
        m.finalize().into_bytes().into()
    }

    /// The digest sealed for the head at (`seq`, `mac`).
    pub fn seal(&self, keys: &RecordKeys, seq: u64, mac: &[u8; 32]) -> Result<SealedState> {
        let plain = postcard::to_stdvec(self).map_err(corrupt("state digest"))?;
        let tag = Self::seal_mac(keys, seq, mac, &plain);
        let pad = Self::pad(keys, seq, mac, plain.len());
        let body = plain.iter().zip(pad).map(|(a, b)| a ^ b).collect();
        Ok(SealedState { body, mac: tag })
    }

    /// The digest a head at (`seq`, `mac`) holds, if it is authentic.
    pub fn unseal(
        sealed: &SealedState,
        keys: &RecordKeys,
        seq: u64,
        mac: &[u8; 32],
    ) -> Result<StateDigest> {
        let pad = Self::pad(keys, seq, mac, sealed.body.len());
        let plain: Vec<u8> = sealed.body.iter().zip(pad).map(|(a, b)| a ^ b).collect();
        let want = Self::seal_mac(keys, seq, mac, &plain);
        if !super::auth::mac_matches(&want, &sealed.mac) {
            return Err(StoreError::Tampered {
                what: "chain head's state",
                id: format!("seq {seq}"),
            });
        }
        postcard::from_bytes(&plain).map_err(corrupt("state digest"))
    }
}

/// The digest as the head stores it (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedState {
    pub body: Vec<u8>,
    pub mac: [u8; 32],
}

/// Each record's expected stamp and fingerprint, for the check at use
/// where the database can be written while keyhold runs (PostgreSQL: a
/// superuser can put a dead tuple back with the node running; sled's files
/// are held by one process, and checked whole at every open). Learnt at
/// open from the records (right after the whole state was checked against
/// the signed digest, under the lock every node's appends take) and kept
/// by this node's commits. A record read with an older stamp than
/// expected, with the same stamp but other bytes (copies from before
/// schema 5 all carry stamp 0), or back under a name this node saw
/// removed, is an older copy: refused as tampered. A newer stamp than
/// expected was written by another node (only the keyring's holders make
/// one): it is learnt.
///
/// A record this node does not know is one another node wrote after this
/// node read the store, so its stamp must be newer than the log was then
/// (`floor`): an unknown record with an older stamp was absent at open.
#[derive(Debug, Default)]
pub(crate) struct Fresh {
    keys: RwLock<HashMap<Uuid, Seen>>,
    tokens: RwLock<HashMap<[u8; 32], Seen>>,
    floor: std::sync::atomic::AtomicU64,
    /// Whether the store was read (see [`Fresh::reset`]).
    filled: std::sync::atomic::AtomicBool,
    /// The audit seq up to which every commit's changes are known: the
    /// log's end when the store was read, then the last change row read
    /// (`super::changes`).
    learned: std::sync::atomic::AtomicU64,
    /// Held by the one reader of change rows.
    catching: std::sync::Mutex<()>,
    /// What reads the whole store again (see `super::changes`).
    relearn: std::sync::OnceLock<fn(&super::Store) -> Result<()>>,
    /// Set when that found the store differing from the signed state:
    /// every record read is refused from then on (the maps above were
    /// filled from the differing records).
    differs: std::sync::OnceLock<String>,
}

/// What this node knows of one record: the stamp it was written with, and
/// a fingerprint of its bytes (`None`: removed by the commit at `stamp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) stamp: u64,
    pub(crate) fingerprint: Option<u64>,
}

/// A record's fingerprint: the first 8 bytes of SHA-256 of its bytes.
pub(crate) fn fingerprint(bytes: &[u8]) -> u64 {
    use sha2::Digest;
    let h = Sha256::digest(bytes);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    u64::from_be_bytes(b)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    match l.write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Fresh {
    /// Replaces what is known with a reading of the store made when the
    /// log ended at `seq` (at once: a check never sees it half-filled).
    pub(crate) fn replace(
        &self,
        keys: HashMap<Uuid, Seen>,
        tokens: HashMap<[u8; 32], Seen>,
        seq: u64,
    ) {
        let mut k = write(&self.keys);
        let mut t = write(&self.tokens);
        *k = keys;
        *t = tokens;
        self.floor.store(seq, std::sync::atomic::Ordering::Release);
        self.learned
            .store(seq, std::sync::atomic::Ordering::Release);
        self.filled
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// See the field's docs.
    pub(crate) fn learned(&self) -> u64 {
        self.learned.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn set_learned(&self, seq: u64) {
        self.learned
            .fetch_max(seq, std::sync::atomic::Ordering::AcqRel);
    }

    /// Moves `learned` from `from` to `to` if it is still at `from`.
    pub(crate) fn learned_through(&self, from: u64, to: u64) {
        let _ = self.learned.compare_exchange(
            from,
            to,
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
        );
    }

    pub(crate) fn catching(&self) -> std::sync::MutexGuard<'_, ()> {
        match self.catching.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub(crate) fn set_relearn(&self, f: fn(&super::Store) -> Result<()>) {
        let _ = self.relearn.set(f);
    }

    pub(crate) fn relearn(&self) -> Option<fn(&super::Store) -> Result<()>> {
        self.relearn.get().copied()
    }

    pub(crate) fn set_differs(&self, why: String) {
        let _ = self.differs.set(why);
    }

    pub(crate) fn differs(&self) -> Option<&str> {
        self.differs.get().map(String::as_str)
    }

    /// Whether the store was read since this process opened it.
    pub(crate) fn filled(&self) -> bool {
        self.filled.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn set_key(&self, id: Uuid, seen: Seen) {
        Self::set(&self.keys, id, seen);
    }

    pub(crate) fn set_token(&self, at: [u8; 32], seen: Seen) {
        Self::set(&self.tokens, at, seen);
    }

    /// Notes a commit's write, never going back to an older one (two
    /// commits' notes can arrive out of order).
    fn set<K: std::hash::Hash + Eq>(map: &RwLock<HashMap<K, Seen>>, k: K, seen: Seen) {
        let mut m = write(map);
        match m.get(&k) {
            Some(old) if old.stamp > seen.stamp => {}
            _ => {
                m.insert(k, seen);
            }
        }
    }

    /// Checks a key record (its stamp and bytes; see the type's docs).
    pub(crate) fn check_key(&self, id: &Uuid, stamp: u64, bytes: &[u8]) -> Result<()> {
        self.check(&self.keys, id, stamp, bytes, "key", || id.to_string())
    }

    /// Checks a token record.
    pub(crate) fn check_token(&self, at: &[u8; 32], stamp: u64, bytes: &[u8]) -> Result<()> {
        self.check(&self.tokens, at, stamp, bytes, "token", || {
            at[..8].iter().map(|b| format!("{b:02x}")).collect()
        })
    }

    fn check<K: std::hash::Hash + Eq + Copy>(
        &self,
        map: &RwLock<HashMap<K, Seen>>,
        k: &K,
        stamp: u64,
        bytes: &[u8],
        what: &'static str,
        name: impl Fn() -> String,
    ) -> Result<()> {
        let tampered = || StoreError::Tampered { what, id: name() };
        let fp = fingerprint(bytes);
        let known = match map.read() {
            Ok(g) => g.get(k).copied(),
            Err(p) => p.into_inner().get(k).copied(),
        };
        let floor = self.floor.load(std::sync::atomic::Ordering::Acquire);
        match known {
            Some(s) if stamp == s.stamp && s.fingerprint == Some(fp) => return Ok(()),
            Some(s) if stamp <= s.stamp => return Err(tampered()),
            None if stamp <= floor => return Err(tampered()),
            _ => {}
        }
        // Newer than known, or unknown here: another node's write. Learnt
        // under the lock, unless a newer one was learnt meanwhile.
        let mut m = write(map);
        match m.get(k) {
            Some(s) if s.stamp > stamp => Err(tampered()),
            Some(s) if s.stamp == stamp && s.fingerprint != Some(fp) => Err(tampered()),
            _ => {
                m.insert(
                    *k,
                    Seen {
                        stamp,
                        fingerprint: Some(fp),
                    },
                );
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> RecordKeys {
        RecordKeys::from_secret(&[7u8; 32])
    }

    #[test]
    fn sums_add_and_remove_in_any_order() {
        let k = keys();
        let mut a = StateDigest::default();
        a.apply(&k, Table::Keys, b"1", None, Some(b"one"));
        a.apply(&k, Table::Keys, b"2", None, Some(b"two"));
        a.apply(&k, Table::Keys, b"1", Some(b"one"), Some(b"uno"));
        let mut b = StateDigest::default();
        b.apply(&k, Table::Keys, b"2", None, Some(b"two"));
        b.apply(&k, Table::Keys, b"1", None, Some(b"uno"));
        assert_eq!(a, b);
        a.apply(&k, Table::Keys, b"2", Some(b"two"), None);
        assert_ne!(a, b);
        assert_eq!(a.key_records, 1);
        let mut c = StateDigest::default();
        c.apply(&k, Table::Keys, b"1", None, Some(b"uno"));
        assert_eq!(a, c);
    }

    #[test]
    fn an_older_copy_differs_and_is_named() {
        let k = keys();
        let mut signed = StateDigest::default();
        signed.apply(&k, Table::Tokens, b"t", None, Some(b"revoked"));
        signed.apply(&k, Table::Meta, b"schema_version", None, Some(&[5]));
        let mut found = StateDigest::default();
        found.apply(&k, Table::Tokens, b"t", None, Some(b"live"));
        found.apply(&k, Table::Meta, b"schema_version", None, Some(&[4]));
        let d = signed.differences(&found);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].contains("token records differ"), "{d:?}");
        assert!(d[1].contains("schema_version"), "{d:?}");
        assert!(signed.differences(&signed.clone()).is_empty());
    }

    #[test]
    fn a_sealed_digest_opens_only_at_its_head_and_with_its_keys() {
        let k = keys();
        let mut d = StateDigest::default();
        d.apply(&k, Table::Keys, b"1", None, Some(b"one"));
        let sealed = d.seal(&k, 9, &[1; 32]).unwrap();
        assert_eq!(StateDigest::unseal(&sealed, &k, 9, &[1; 32]).unwrap(), d);
        assert!(StateDigest::unseal(&sealed, &k, 10, &[1; 32]).is_err());
        assert!(StateDigest::unseal(&sealed, &k, 9, &[2; 32]).is_err());
        let other = RecordKeys::from_secret(&[8u8; 32]);
        assert!(StateDigest::unseal(&sealed, &other, 9, &[1; 32]).is_err());
        let plain = postcard::to_stdvec(&d).unwrap();
        assert_ne!(sealed.body, plain, "the digest is not stored in clear");
    }

    #[test]
    fn fresh_refuses_older_copies_and_learns_newer_ones() {
        let f = Fresh::default();
        let id = Uuid::new_v4();
        let seen = |stamp, b: &[u8]| Seen {
            stamp,
            fingerprint: Some(fingerprint(b)),
        };
        f.set_key(id, seen(10, b"v10"));
        assert!(f.check_key(&id, 10, b"v10").is_ok());
        // Same stamp, other bytes: a copy from before stamps (stamp 0).
        assert!(f.check_key(&id, 10, b"older").is_err());
        assert!(f.check_key(&id, 9, b"v9").is_err());
        assert!(f.check_key(&id, 12, b"v12").is_ok());
        assert!(f.check_key(&id, 10, b"v10").is_err());
        // Removed at 14: older copies stay out, a newer write is learnt.
        f.set_key(
            id,
            Seen {
                stamp: 14,
                fingerprint: None,
            },
        );
        assert!(f.check_key(&id, 12, b"v12").is_err());
        assert!(f.check_key(&id, 15, b"v15").is_ok());
        // A note older than what is known is ignored.
        f.set_key(id, seen(11, b"v11"));
        assert!(f.check_key(&id, 15, b"v15").is_ok());
        assert!(f.check_token(&[1; 32], 3, b"t").is_ok());
        // After a reading of the store at seq 20: an unknown record of an
        // older stamp was not there; a newer one is another node's.
        f.replace(HashMap::new(), HashMap::new(), 20);
        assert!(f.filled());
        assert!(f.check_token(&[2; 32], 20, b"t").is_err());
        assert!(f.check_token(&[2; 32], 0, b"t").is_err());
        assert!(f.check_token(&[2; 32], 21, b"t").is_ok());
    }
}
