//! The audit log: records, the HMAC chain, the append-only writer (group
//! commit), verification and export.
//!
//! Every record's `mac` is HMAC-SHA256, keyed by a random audit MAC key
//! (stored Fernet-encrypted in `meta`), over the previous record's mac and
//! the record's canonical bytes. The chain head (last seq and mac) is kept
//! MAC'd too, so dropping the newest records is detected. No code path
//! here or elsewhere deletes or changes an audit record; a commit rewrites
//! the newest store entry only to append records to it, and never writes
//! over an entry it did not read (see `store::audit_chunks`).
//!
//! Not for: deciding outcomes (callers do) or HTTP.

mod coalesce;
mod export;
mod record;
mod verify;
mod writer;

use std::sync::Mutex;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

pub use coalesce::{Coalescer, Drained};
pub use export::{ExportFilter, ExportFormat, Exporter, FilterError, EXPORT_COLUMNS};
pub use record::{hex, unhex32, Action, AuditEvent, AuditRecord, ExportRecord, Outcome};
pub use verify::{ChainVerifier, Problem, VerifyReport};
pub use writer::{AuditWriter, BatchObserver};

use crate::keyring::Keyring;
use crate::store::{Store, StoreError, Write};

/// The `prev` of the first record.
pub const GENESIS: [u8; 32] = [0u8; 32];
const HEAD_TAG: &[u8] = b"keyhold-audit-head-v1";

/// Why the audit log could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the audit log cannot be written: {0}")]
    Store(#[from] StoreError),
    #[error(
        "the audit MAC key is missing from the store: the store is damaged or was not made by \
         `keyhold init`; restore it from a backup"
    )]
    NoMacKey,
    #[error(
        "no key of the keyring opens the audit MAC key: the keyring is not the one this store was \
         initialised with; set the right FERNET_KEY (or add it to FERNET_KEYS)"
    )]
    MacKeyLocked,
    #[error(
        "the audit record could not be written in time (storage stalled?); nothing was written and the request was not served"
    )]
    Timeout,
    #[error(
        "the audit record is still being written (storage stalled?); the request was not served, and its record may still land"
    )]
    Unknown,
    #[error("{0}")]
    WriteFailed(String),
    #[error("the audit writer has stopped; restart keyhold")]
    Stopped,
}

/// Stored chain head: the newest record's seq and mac, MAC'd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub mac: [u8; 32],
    pub head_mac: [u8; 32],
}

#[derive(Serialize, Deserialize)]
enum StoredHead {
    V1(Head),
}

/// The MAC key, zeroized on drop.
#[derive(Clone)]
pub struct MacKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey([REDACTED])")
    }
}

impl MacKey {
    /// A new random MAC key.
    pub fn generate() -> Result<MacKey, getrandom::Error> {
        let mut k = Zeroizing::new([0u8; 32]);
        getrandom::fill(k.as_mut())?;
        Ok(MacKey(k))
    }

    /// The raw key. Only for checks of where it must never appear (the
    /// secrets-at-rest test); keyhold itself only ever seals it.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key Fernet-encrypted for `meta`.
    pub fn seal(&self, keyring: &Keyring) -> String {
        keyring.encrypt(self.0.as_ref())
    }

    /// Opens the sealed key from the store with the keyring.
    pub fn unseal(store: &Store, keyring: &Keyring) -> Result<MacKey, AuditError> {
        let token = store.audit_key_token()?.ok_or(AuditError::NoMacKey)?;
        let opened = keyring
            .decrypt(&token)
            .map_err(|_| AuditError::MacKeyLocked)?;
        let bytes: [u8; 32] = opened
            .plaintext
            .expose()
            .try_into()
            .map_err(|_| AuditError::MacKeyLocked)?;
        Ok(MacKey(Zeroizing::new(bytes)))
    }

    fn hmac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length; 32 bytes never fails.
        match <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_ref()) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts any key length"),
        }
    }

    /// mac = HMAC(key, prev || canonical bytes).
    pub fn record_mac(
        &self,
        prev: &[u8; 32],
        seq: u64,
        at_us: i64,
        event: &AuditEvent,
    ) -> [u8; 32] {
        let mut m = self.hmac();
        m.update(prev);
        m.update(&AuditRecord::canonical_bytes(seq, at_us, event));
        m.finalize().into_bytes().into()
    }

    fn head_mac(&self, seq: u64, mac: &[u8; 32]) -> [u8; 32] {
        let mut m = self.hmac();
        m.update(HEAD_TAG);
        m.update(&seq.to_be_bytes());
        m.update(mac);
        m.finalize().into_bytes().into()
    }

    /// A head for (seq, mac).
    pub fn head(&self, seq: u64, mac: [u8; 32]) -> Head {
        Head {
            seq,
            mac,
            head_mac: self.head_mac(seq, &mac),
        }
    }

    /// True when the head's MAC is right.
    pub fn head_is_authentic(&self, head: &Head) -> bool {
        crate::access::digests_equal(&self.head_mac(head.seq, &head.mac), &head.head_mac)
    }
}

impl Head {
    fn encode(&self) -> Result<Vec<u8>, StoreError> {
        postcard::to_stdvec(&StoredHead::V1(*self)).map_err(crate::store::corrupt("audit head"))
    }

    pub fn decode(bytes: &[u8]) -> Result<Head, StoreError> {
        let StoredHead::V1(h) =
            postcard::from_bytes(bytes).map_err(crate::store::corrupt("audit head"))?;
        Ok(h)
    }

    /// Reads the stored head.
    pub fn load(store: &Store) -> Result<Option<Head>, StoreError> {
        store
            .audit_head_bytes()?
            .map(|b| Head::decode(&b))
            .transpose()
    }
}

struct ChainState {
    next_seq: u64,
    prev: [u8; 32],
}

/// The append side of the log: chains records and commits them, with
/// their side writes, in one transaction, then fsyncs.
pub struct AuditLog {
    store: Store,
    key: MacKey,
    state: Mutex<ChainState>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the log: unseals the MAC key and continues the chain after
    /// the authentic chain head. If the newest records were cut (the head
    /// says the log ends later than its last record), appends continue
    /// after the head, so the cut stays visible to `audit verify` as
    /// missing records instead of being papered over.
    pub fn open(store: Store, keyring: &Keyring) -> Result<AuditLog, AuditError> {
        let key = MacKey::unseal(&store, keyring)?;
        let (next_seq, prev) = chain_position(&store, &key)?;
        Ok(AuditLog {
            store,
            key,
            state: Mutex::new(ChainState { next_seq, prev }),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn mac_key(&self) -> &MacKey {
        &self.key
    }

    /// Chains and commits a batch, then fsyncs. Returns each record's seq.
    /// On error nothing of the batch is committed (the transaction is
    /// atomic), except when only the final fsync failed.
    pub fn append(&self, batch: &[(AuditEvent, Vec<Write>)]) -> Result<Vec<u64>, AuditError> {
        self.append_with(batch, |_| {})
    }

    /// As [`append`](Self::append), calling `on_record` with each chained
    /// record after it is durable (used for anchors and metrics).
    pub fn append_with(
        &self,
        batch: &[(AuditEvent, Vec<Write>)],
        mut on_record: impl FnMut(&AuditRecord),
    ) -> Result<Vec<u64>, AuditError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut seq = state.next_seq;
        let mut prev = state.prev;
        let mut encoded = Vec::with_capacity(batch.len());
        let mut records = Vec::with_capacity(batch.len());
        let mut writes = Vec::new();
        for (event, w) in batch {
            let at_us = crate::time::now_us();
            let mac = self.key.record_mac(&prev, seq, at_us, event);
            let rec = AuditRecord {
                seq,
                at_us,
                event: event.clone(),
                prev,
                mac,
            };
            encoded.push((seq, rec.encode()?));
            records.push(rec);
            writes.extend(w.iter().cloned());
            prev = mac;
            seq = seq.checked_add(1).ok_or_else(seq_space_used_up)?;
        }
        let last_seq = seq - 1;
        let head = self.key.head(last_seq, prev).encode()?;
        self.store.commit(&encoded, &head, &writes)?;
        state.next_seq = seq;
        state.prev = prev;
        self.store.flush()?;
        drop(state);
        for r in &records {
            on_record(r);
        }
        Ok(records.iter().map(|r| r.seq).collect())
    }

    /// After a failed write: if the store keeps failing (sled keeps an IO
    /// error until the database is opened again), reopens it and takes the
    /// chain up again from what is durable. Returns whether it reopened.
    /// Appends wait meanwhile; nothing acknowledged is affected, since an
    /// append is acknowledged only after its fsync succeeded.
    pub fn recover(&self) -> Result<bool, AuditError> {
        let mut state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if self.store.flush().is_ok() {
            return Ok(false);
        }
        self.store.reopen(std::time::Duration::from_secs(5))?;
        let (next_seq, prev) = chain_position(&self.store, &self.key)?;
        state.next_seq = next_seq;
        state.prev = prev;
        tracing::warn!(
            next_seq,
            "storage reopened after a disk error; the audit chain continues"
        );
        Ok(true)
    }

    /// Runs `f` with every write held back (all writes go through this
    /// log), so `f` sees one consistent state of the store.
    pub fn with_writes_paused<T>(&self, f: impl FnOnce() -> T) -> T {
        let _state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        f()
    }

    /// The newest seq and mac (what an off-box anchor records).
    pub fn head(&self) -> (u64, [u8; 32]) {
        let state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        (state.next_seq.saturating_sub(1), state.prev)
    }
}

/// A seq after `u64::MAX` would wrap to 0 and write over the log's start;
/// only a log edited outside keyhold gets there.
fn seq_space_used_up() -> StoreError {
    StoreError::Corrupt {
        what: "audit log",
        detail: "its newest seq is the largest possible, so no record can follow it (records \
                 were added outside keyhold); run `keyhold audit verify`"
            .into(),
    }
}

/// Where the chain continues: after the authentic head. If the newest
/// records were cut (the head says the log ends later than its last
/// record), appends continue after the head, so the cut stays visible to
/// `audit verify` as missing records instead of being papered over.
fn chain_position(store: &Store, key: &MacKey) -> Result<(u64, [u8; 32]), AuditError> {
    // A damaged newest record must not stop appends; verify reports
    // the damage where it is.
    let last = store.last_audit()?.map(|(seq, bytes)| {
        let mac = AuditRecord::decode(&bytes)
            .map(|r| r.mac)
            .unwrap_or(GENESIS);
        (seq, mac)
    });
    let head = Head::load(store)?.filter(|h| key.head_is_authentic(h));
    let (newest, prev) = match (head, last) {
        (Some(h), Some((seq, mac))) if h.seq == seq && h.mac == mac => (seq, mac),
        (Some(h), last) => {
            tracing::warn!(
                    head_seq = h.seq,
                    last_seq = last.map_or(0, |l| l.0),
                    "the audit log does not end at its chain head: records were removed or added \
                     outside keyhold; run `keyhold audit verify`. New records continue after the head"
                );
            (h.seq.max(last.map_or(0, |l| l.0)), h.mac)
        }
        (None, Some((seq, mac))) => {
            tracing::warn!(
                "the audit chain head is missing or not authentic; run `keyhold audit verify`"
            );
            (seq, mac)
        }
        (None, None) => return Ok((1, GENESIS)),
    };
    Ok((newest.checked_add(1).ok_or_else(seq_space_used_up)?, prev))
}

/// Verifies the whole chain in the store. The head is read first, so
/// records a running server appends meanwhile are simply further records
/// that must chain on from it (no false "truncated" under load).
pub fn verify_store(store: &Store, key: &MacKey) -> Result<VerifyReport, StoreError> {
    let head = Head::load(store)?;
    let mut v = ChainVerifier::for_store(key.clone(), head.map(|h| h.seq));
    for item in store.audit_iter(0) {
        let (seq, bytes) = item?;
        let rec = AuditRecord::decode(&bytes).ok();
        if let Some(report) = v.feed_stored(seq, rec) {
            return Ok(report);
        }
    }
    Ok(v.finish_store(head))
}
