//! The audit log: records, the hash chain and its signatures, the
//! append-only writer (group commit), verification and export.
//!
//! Every record's `mac` is SHA-256 over the previous record's mac and the
//! record's canonical bytes; each commit signs its newest (seq, mac) with
//! the Ed25519 audit signing key (`sign`), so anyone holding the public
//! key verifies an export. Records written before schema 3 keep their
//! HMAC chain (checked with the keyring). The chain head is stored with
//! its signature, so dropping the newest records is detected. No code path
//! here or elsewhere deletes or changes an audit record; a commit rewrites
//! the newest store entry only to append records to it, and never writes
//! over an entry it did not read (see `store::audit_chunks`).
//!
//! Not for: deciding outcomes (callers do) or HTTP.
//!
//! Over 500 lines: one concept, the append side (`AuditLog`: chaining under
//! one lock, on sled or at a shared database's head, the signing-key
//! hand-over, recovery) with where the chain continues; keys (`keys.rs`),
//! the stored head (`head.rs`), records, signatures, verification, export
//! and the writer are in their own files.

mod coalesce;
mod export;
mod head;
mod log_keys;
mod record;
mod sign;
mod verify;
pub(crate) mod views;
mod writer;

use std::sync::Mutex;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

pub(crate) use coalesce::Coalescer;

pub(crate) use export::{ExportError, ExportFilter, ExportFormat, Exporter, Histogram, Page};
pub use head::Head;
pub(crate) use log_keys::MAC_KEY_PURPOSE;
pub use log_keys::{record_tag, AuditKeys, MacKey, VerifyKeys};
pub use record::hex;
pub(crate) use record::BadExportRecord;
pub(crate) use record::{record_text, unhex32};
pub use record::{Action, AuditEvent, AuditRecord};
pub use record::{ExportRecord, Outcome};
pub use sign::SIGNING_PURPOSE;
pub(crate) use sign::{AuditSigner, PublicKey, Signature, HAND_OVER_PREFIX};
pub use verify::ChainVerifier;
pub(crate) use verify::Problem;
pub use verify::VerifyReport;
pub(crate) use verify::LEGACY_PREFIX_WORDS;
pub(crate) use verify::{legacy_prefix_hasher, legacy_prefix_update};
pub(crate) use views::{valid_session_id, ConsoleViews, View};
pub(crate) use writer::{AuditWriter, BatchObserver};

use crate::keyring::Keyring;
use crate::store::backend::Op;
use crate::store::{
    AuditTagKeys, Stamped, StateDigest, Store, StoreError, Write, META_AUDIT_KEY,
    META_AUDIT_TAG_EPOCHS, META_PUBLIC_KEY, META_RECORD_MAC_NEXT, META_SIGNING_KEY,
};

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
        "no key of the keyring opens the audit log's sealed keys (its signing key, or the MAC key \
         of records from before schema 3): the keyring is not the one this store was initialised \
         with (set the right FERNET_KEY, or add it to FERNET_KEYS), or they were replaced outside \
         keyhold (restore the store from a backup)"
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
    #[error(
        "another node started a new audit signing key (a rotation), so this node can no longer \
         sign the shared chain: restart it with the keyring the rotation used (nothing was \
         written)"
    )]
    SignerReplaced,
}

/// A batch chained and signed, not yet written.
struct Chained {
    records: Vec<AuditRecord>,
    encoded: Vec<(u64, Vec<u8>)>,
    head: Vec<u8>,
    ops: Vec<Op>,
    /// The state digest after the batch (`None`: not kept, see
    /// [`ChainState::digest`]).
    digest: Option<StateDigest>,
    stamped: Stamped,
    /// The audit tag keys after the batch (a switch of the record keys
    /// moves them on).
    tags: AuditTagKeys,
    /// The position after the batch.
    next_seq: u64,
    prev: [u8; 32],
}

struct ChainState {
    next_seq: u64,
    prev: [u8; 32],
    /// Signs each commit's newest record; replaced by a hand-over.
    signer: AuditSigner,
    /// The digest of the whole state after the newest commit (see
    /// `store::state`), which each commit moves on and seals into the
    /// head. On a shared database each commit starts from the digest in
    /// the stored head instead. `None` only for a store without record
    /// keys (before the upgrade to schema 3 applied them).
    digest: Option<StateDigest>,
    /// Set for one commit while the record keys are switched
    /// ([`AuditLog::switch_record_keys`]): its digest is computed afresh
    /// from the records under the new keys.
    restate: bool,
    /// Tag each record (see `store::AuditTagKeys`).
    tags: AuditTagKeys,
}

/// The append side of the log: chains records and commits them, with
/// their side writes, in one transaction, then fsyncs.
pub struct AuditLog {
    store: Store,
    /// The node name records carry where several nodes share the store.
    node: Option<String>,
    legacy: Option<MacKey>,
    state: Mutex<ChainState>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the log: unseals its keys and continues the chain after the
    /// authentic chain head. If the newest records were cut (the head
    /// says the log ends later than its last record), appends continue
    /// after the head, so the cut stays visible to `audit verify` as
    /// missing records instead of being papered over. The store's record
    /// keys must be applied first (`crate::unlock`).
    pub fn open(store: Store, keyring: &Keyring) -> Result<AuditLog, AuditError> {
        let keys = AuditKeys::unseal(&store, keyring)?;
        Self::with_keys(store, keys)
    }

    /// Opens the log with keys already unsealed.
    pub fn with_keys(store: Store, keys: AuditKeys) -> Result<AuditLog, AuditError> {
        let (next_seq, prev) = chain_position(&store, keys.legacy.as_ref())?;
        let digest = initial_digest(&store)?;
        Ok(AuditLog {
            node: store.node().map(str::to_string),
            store,
            legacy: keys.legacy,
            state: Mutex::new(ChainState {
                next_seq,
                prev,
                signer: keys.signer,
                digest,
                restate: false,
                tags: keys.tag,
            }),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// What verifying this log takes: its keys, trusting the current
    /// signing key.
    pub fn verify_keys(&self) -> VerifyKeys {
        let tags = self.lock().tags.clone();
        VerifyKeys {
            legacy: self.legacy.clone(),
            tag: Some(tags),
            trusted: vec![self.public_key()],
        }
    }

    /// The current signing key's public key.
    pub fn public_key(&self) -> PublicKey {
        self.lock().signer.public_key()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ChainState> {
        match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
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
        on_record: impl FnMut(&AuditRecord),
    ) -> Result<Vec<u64>, AuditError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut state = self.lock();
        self.append_locked(&mut state, batch, &[], None, on_record)
    }

    /// Chains `batch`, signs its newest record with the current signer
    /// (and, for a hand-over, the record at `hand_over` with the new key),
    /// commits it with `extra` writes and fsyncs.
    ///
    /// Where several nodes share the store, the in-memory position is a
    /// hint: a commit refused because another node appended since
    /// ([`StoreError::HeadMoved`]) wrote nothing, and the batch is chained
    /// again from the stored head and committed again.
    fn append_locked(
        &self,
        state: &mut ChainState,
        batch: &[(AuditEvent, Vec<Write>)],
        extra: &[Write],
        hand_over: Option<(usize, &AuditSigner)>,
        mut on_record: impl FnMut(&AuditRecord),
    ) -> Result<Vec<u64>, AuditError> {
        let mut attempts = 0;
        let records = loop {
            attempts += 1;
            match self.chain_and_commit(state, batch, extra, hand_over) {
                Err(AuditError::Store(StoreError::HeadMoved)) if attempts < HEAD_MOVED_RETRIES => {
                    // A head signed by another key than this node's: a
                    // rotation on another node handed the key over. Records
                    // this node signed now would not verify: refuse.
                    if let Some(h) = Head::load(&self.store)? {
                        if let Some(sig) = h.sig() {
                            if sig.key != state.signer.public_key()
                                && sig.verifies(h.seq(), &h.mac())
                            {
                                return Err(AuditError::SignerReplaced);
                            }
                        }
                    }
                    let (next_seq, prev) = chain_position(&self.store, self.legacy.as_ref())?;
                    state.next_seq = next_seq;
                    state.prev = prev;
                }
                res => break res?,
            }
        };
        self.store.flush()?;
        for r in &records {
            on_record(r);
        }
        Ok(records.iter().map(|r| r.seq).collect())
    }

    /// Chains `batch` after the in-memory position and commits it; on
    /// success moves the position past it. Not yet flushed. Where several
    /// nodes share the store, the batch is chained under the store's
    /// append lock on the stored head ([`Store::commit_at_head`]): the
    /// in-memory position is then only where it was last seen.
    fn chain_and_commit(
        &self,
        state: &mut ChainState,
        batch: &[(AuditEvent, Vec<Write>)],
        extra: &[Write],
        hand_over: Option<(usize, &AuditSigner)>,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        if self.node.is_none() {
            let digest = if state.restate {
                Some(self.store.compute_state()?)
            } else {
                state.digest.clone()
            };
            let chained = self.chain(
                state,
                state.next_seq,
                state.prev,
                batch,
                extra,
                hand_over,
                digest,
            )?;
            self.store
                .commit(&chained.encoded, &chained.head, &chained.ops)?;
            state.next_seq = chained.next_seq;
            state.prev = chained.prev;
            state.digest = chained.digest;
            state.tags = chained.tags;
            self.store.note_stamped(&chained.stamped);
            return Ok(chained.records);
        }
        let mut out: Option<Chained> = None;
        let mut refused: Option<AuditError> = None;
        // A commit that walks the whole store under the append lock (a
        // switch of the record keys, the upgrade's commit on a head
        // without a digest) is not held to one call's database timeout.
        let long = state.restate || self.store.schema() < 5;
        let res = self.store.commit_at_head(long, |head, last| {
            let head = head.map(|b| Head::decode(&b)).transpose()?;
            // A head signed by another key than this node's: a rotation on
            // another node handed the key over. Records this node signed
            // now would not verify: refuse.
            if let Some(h) = &head {
                if let Some(sig) = h.sig() {
                    if sig.key != state.signer.public_key() && sig.verifies(h.seq(), &h.mac()) {
                        refused = Some(AuditError::SignerReplaced);
                        return Err(StoreError::Unavailable);
                    }
                }
            }
            // The digest every node moves on is the one in the stored head
            // (authenticated); a head from before schema 5 has none, and
            // the one computed at open stands in.
            let digest = match (&head, self.store.record_keys()) {
                (Some(h @ Head::V3 { .. }), Some(keys)) if !state.restate => {
                    // Another node's rotation: under way (a next secret
                    // this node does not hold, so what it writes now would
                    // not verify once it ends) or done (the head sealed
                    // under keys this node does not hold). Refused, not
                    // taken for tampering.
                    let d = match h.state(&keys) {
                        Ok(d) => d,
                        Err(e) => {
                            return Err(if self.store.keys_replaced()? {
                                StoreError::KeysReplaced
                            } else {
                                e
                            })
                        }
                    };
                    if d.as_ref().is_some_and(|d| d.has_meta(META_RECORD_MAC_NEXT))
                        && !keys.has_next()
                    {
                        // Noted for /healthz as well.
                        let _ = self.store.keys_replaced();
                        return Err(StoreError::KeysReplaced);
                    }
                    d
                }
                // A switch of the record keys, or a head from before
                // schema 5 (the upgrade's commit, or one by a node of an
                // older release): the digest is computed from the records,
                // under the lock every node's appends wait for, so nothing
                // changes while they are walked.
                (_, Some(_)) => Some(self.store.compute_state()?),
                (_, None) => None,
            };
            let (next_seq, prev) =
                position_from(head, last, self.legacy.as_ref()).map_err(|e| match e {
                    AuditError::Store(e) => e,
                    other => {
                        refused = Some(other);
                        StoreError::Unavailable
                    }
                })?;
            let chained = self
                .chain(state, next_seq, prev, batch, extra, hand_over, digest)
                .map_err(|e| match e {
                    AuditError::Store(e) => e,
                    other => {
                        refused = Some(other);
                        StoreError::Unavailable
                    }
                })?;
            let ret = (
                chained.encoded.clone(),
                chained.head.clone(),
                chained.ops.clone(),
            );
            out = Some(chained);
            Ok(ret)
        });
        if let Some(e) = refused {
            return Err(e);
        }
        res?;
        let chained = out.ok_or(AuditError::Store(StoreError::Unavailable))?;
        state.next_seq = chained.next_seq;
        state.prev = chained.prev;
        state.digest = chained.digest;
        state.tags = chained.tags;
        self.store.note_stamped(&chained.stamped);
        if let (Some(first), Some(last)) = (chained.records.first(), chained.records.last()) {
            self.store.note_committed(first.seq, last.seq);
        }
        Ok(chained.records)
    }

    /// Chains `batch` after (`seq`, `prev`), stamps and encodes its
    /// writes (each with the seq of the record it came with), moves the
    /// state `digest` past them and signs; nothing written.
    #[allow(clippy::too_many_arguments)]
    fn chain(
        &self,
        state: &ChainState,
        mut seq: u64,
        mut prev: [u8; 32],
        batch: &[(AuditEvent, Vec<Write>)],
        extra: &[Write],
        hand_over: Option<(usize, &AuditSigner)>,
        mut digest: Option<StateDigest>,
    ) -> Result<Chained, AuditError> {
        let first_seq = seq;
        // A switch to a new record MAC secret moves the audit tag key on
        // from this batch's first record (noted in meta, in this commit).
        let mut tags = state.tags.clone();
        let mut tag_epochs = None;
        if state.restate {
            if let Some(keys) = self.store.record_keys() {
                if let Some(i) = keys.newest_mac_index() {
                    let mut epochs = tags.epochs().to_vec();
                    if epochs.last().map(|e| e.1) != Some(i) {
                        epochs.push((first_seq, i));
                        tags = keys
                            .audit_tags(&epochs)
                            .ok_or(AuditError::Store(StoreError::Locked))?;
                        tag_epochs = Some(epochs);
                    }
                }
            }
        }
        let mut records = Vec::with_capacity(batch.len());
        let mut writes = Vec::new();
        // Each token that acted in the batch: its last use, written in the
        // same commit as its records (one write per token per batch).
        let mut touched: Vec<(uuid::Uuid, i64)> = Vec::new();
        for (event, w) in batch {
            let at_us = crate::time::now_us();
            if let Some(id) = used_token(event) {
                match touched.iter_mut().find(|(t, _)| *t == id) {
                    Some(t) => t.1 = at_us,
                    None => touched.push((id, at_us)),
                }
            }
            let node = self.node.as_deref();
            let mac = AuditRecord::chain_hash(&prev, seq, at_us, event, node);
            records.push(AuditRecord {
                seq,
                at_us,
                event: event.clone(),
                prev,
                mac,
                tag: Some(record_tag(tags.current(), &mac)),
                sig: None,
                node: self.node.clone(),
            });
            writes.extend(w.iter().cloned().map(|w| (w, seq)));
            prev = mac;
            seq = seq.checked_add(1).ok_or_else(seq_space_used_up)?;
        }
        let last_seq = seq.saturating_sub(1);
        writes.extend(extra.iter().cloned().map(|w| (w, last_seq)));
        if let Some(epochs) = tag_epochs {
            let value = postcard::to_stdvec(&epochs).map_err(|e| {
                AuditError::Store(StoreError::Corrupt {
                    what: "audit tag epochs",
                    detail: e.to_string(),
                })
            })?;
            writes.push((
                Write::Meta {
                    name: META_AUDIT_TAG_EPOCHS,
                    value: Some(value),
                },
                last_seq,
            ));
        }
        writes.extend(
            touched
                .into_iter()
                .map(|(id, at_us)| (Write::TouchToken { id, at_us }, last_seq)),
        );
        let (mut ops, stamped) = self.store.stamp_ops(&writes, digest.as_mut())?;
        if let Some(op) = self.store.changes_op(&stamped, first_seq, last_seq)? {
            ops.push(op);
        }
        let n = records.len();
        // A hand-over: the old key signs every record up to the hand-over
        // record; the new key signs the newest.
        let (old_signs, new_signs) = match hand_over {
            Some((i, new)) => (i, new),
            None => (n - 1, &state.signer),
        };
        if hand_over.is_some() {
            let r = &mut records[old_signs];
            r.sig = Some(state.signer.sign(r.seq, &r.mac));
        }
        let last = &mut records[n - 1];
        let sig = new_signs.sign(last.seq, &last.mac);
        last.sig = Some(sig.clone());
        let head = match (&digest, self.store.record_keys()) {
            (Some(d), Some(keys)) => Head::V3 {
                seq: last.seq,
                mac: last.mac,
                sig,
                state: d.seal(&keys, last.seq, &last.mac)?,
            },
            _ => Head::V2 {
                seq: last.seq,
                mac: last.mac,
                sig,
            },
        }
        .encode()?;
        let encoded = records
            .iter()
            .map(|r| Ok((r.seq, r.encode()?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Chained {
            records,
            encoded,
            head,
            ops,
            digest,
            stamped,
            tags,
            next_seq: seq,
            prev,
        })
    }

    /// Starts a new signing key, sealed with the keyring's newest key:
    /// one commit holds the hand-over record (naming the new public key,
    /// signed by the old key), the first record the new key signs, and the
    /// new sealed seed. Returns the new public key.
    pub fn hand_over(&self, keyring: &Keyring, caller: &str) -> Result<PublicKey, AuditError> {
        let (new, seed) =
            AuditSigner::generate().map_err(|e| AuditError::WriteFailed(e.to_string()))?;
        let sealed = keyring.seal(SIGNING_PURPOSE, seed.as_ref());
        let public = new.public_key();
        let mut state = self.lock();
        let old = state.signer.public_key();
        let mut first = AuditEvent::cli(
            Action::SigningKey,
            Outcome::Success,
            Some(format!("{HAND_OVER_PREFIX}{public} (from {old})")),
        );
        first.caller = caller.to_string();
        let mut second = AuditEvent::cli(
            Action::SigningKey,
            Outcome::Success,
            Some(format!("first record signed by {public}")),
        );
        second.caller = caller.to_string();
        let extra = [
            Write::Meta {
                name: META_SIGNING_KEY,
                value: Some(sealed.into_bytes()),
            },
            Write::Meta {
                name: META_PUBLIC_KEY,
                value: Some(public.0.to_vec()),
            },
        ];
        self.append_locked(
            &mut state,
            &[(first, vec![]), (second, vec![])],
            &extra,
            Some((0, &new)),
            |_| {},
        )?;
        state.signer = new;
        Ok(public)
    }

    /// Puts new record keys in use (the end of a rotation of the record
    /// MAC secret, `ops::rewrap`) in one commit of `event` and its
    /// `writes`: with every other write held back, the state digest is
    /// computed afresh from the records under the new keys and sealed
    /// under them. On failure the store keeps the keys it had.
    pub fn switch_record_keys(
        &self,
        event: AuditEvent,
        writes: Vec<Write>,
        keys: crate::store::RecordKeys,
    ) -> Result<Vec<u64>, AuditError> {
        let mut state = self.lock();
        let previous = self.store.record_keys();
        self.store.set_record_keys(keys);
        state.restate = true;
        let res = self.append_locked(&mut state, &[(event, writes)], &[], None, |_| {});
        state.restate = false;
        // A commit can land and its fsync still fail: the stored meta
        // says which keys are in use (no next secret: the switch landed).
        let landed = match &res {
            Ok(_) => true,
            Err(_) => matches!(
                self.store.meta_value(crate::store::META_RECORD_MAC_NEXT),
                Ok(None)
            ),
        };
        if landed {
            self.store.note_keys_mark();
            // The tag keys as the switch's commit stored them (its answer
            // may have been lost after it landed).
            if let Ok(tags) = log_keys::tag_keys(&self.store) {
                state.tags = tags;
            }
        } else {
            if let Some(p) = previous {
                self.store.put_record_keys(p);
            }
            // The digest kept in memory may be the new keys' one.
            if let Ok(d) = initial_digest(&self.store) {
                state.digest = d;
            }
        }
        res
    }

    /// After a failed write: if the store keeps failing (sled keeps an IO
    /// error until the database is opened again), reopens it and takes the
    /// chain up again from what is durable. Returns whether it reopened.
    /// Appends wait meanwhile; nothing acknowledged is affected, since an
    /// append is acknowledged only after its fsync succeeded.
    pub fn recover(&self) -> Result<bool, AuditError> {
        let mut state = self.lock();
        if self.store.flush().is_ok() {
            return Ok(false);
        }
        self.store.reopen(std::time::Duration::from_secs(5))?;
        let (next_seq, prev) = chain_position(&self.store, self.legacy.as_ref())?;
        state.next_seq = next_seq;
        state.prev = prev;
        // The digest too: commits that never became durable are gone.
        state.digest = initial_digest(&self.store)?;
        tracing::warn!(
            next_seq,
            "storage reopened after a disk error; the audit chain continues"
        );
        Ok(true)
    }

    /// Runs `f` with every write held back (all writes go through this
    /// log), so `f` sees one consistent state of the store.
    pub fn with_writes_paused<T>(&self, f: impl FnOnce() -> T) -> T {
        let _state = self.lock();
        f()
    }

    /// The newest seq and mac (what an off-box anchor records).
    pub fn head(&self) -> (u64, [u8; 32]) {
        let state = self.lock();
        (state.next_seq.saturating_sub(1), state.prev)
    }
}

/// The state digest a log starts from: the one its head holds (checked
/// against the records by `crate::unlock` at open), or, for a head from
/// before schema 5, the one the records give. `None` without record keys.
fn initial_digest(store: &Store) -> Result<Option<StateDigest>, AuditError> {
    let Some(keys) = store.record_keys() else {
        return Ok(None);
    };
    if let Some(h @ Head::V3 { .. }) = Head::load(store)? {
        return Ok(h.state(&keys)?);
    }
    Ok(Some(store.compute_state()?))
}

/// How often a batch is chained again after other nodes appended first
/// (each retry follows a commit of another node, so the chain moves on).
const HEAD_MOVED_RETRIES: u32 = 64;

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
fn chain_position(store: &Store, legacy: Option<&MacKey>) -> Result<(u64, [u8; 32]), AuditError> {
    position_from(Head::load(store)?, store.last_audit()?, legacy)
}

/// [`chain_position`] from the stored head and newest record as read.
fn position_from(
    head: Option<Head>,
    last: Option<(u64, crate::store::Bytes)>,
    legacy: Option<&MacKey>,
) -> Result<(u64, [u8; 32]), AuditError> {
    // A damaged newest record must not stop appends; verify reports
    // the damage where it is.
    let last = last.map(|(seq, bytes)| {
        let mac = AuditRecord::decode(&bytes)
            .map(|r| r.mac)
            .unwrap_or(GENESIS);
        (seq, mac)
    });
    let head = head.filter(|h| h.is_authentic(legacy));
    let (newest, prev) = match (head, last) {
        (Some(h), Some((seq, mac))) if h.seq() == seq && h.mac() == mac => (seq, mac),
        (Some(h), last) => {
            tracing::warn!(
                    head_seq = h.seq(),
                    last_seq = last.map_or(0, |l| l.0),
                    "the audit log does not end at its chain head: records were removed or added \
                     outside keyhold; run `keyhold audit verify`. New records continue after the head"
                );
            (h.seq().max(last.map_or(0, |l| l.0)), h.mac())
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
pub(crate) fn verify_store(store: &Store, keys: &VerifyKeys) -> Result<VerifyReport, StoreError> {
    let head = Head::load(store)?;
    let mut v = ChainVerifier::for_store(keys.clone(), head.as_ref().map(Head::seq));
    for item in store.audit_iter(0) {
        let (seq, bytes) = item?;
        let rec = AuditRecord::decode(&bytes).ok();
        if let Some(report) = v.feed_stored(seq, rec) {
            return Ok(report);
        }
    }
    Ok(v.finish_store(head))
}

/// The token whose use a record is: its caller, when the token was
/// accepted. A refusal of the token itself (recorded as `authenticate`:
/// expired, or not authentic) is not a use.
fn used_token(event: &AuditEvent) -> Option<uuid::Uuid> {
    match (event.action, event.outcome) {
        (Action::Authenticate, _) | (_, Outcome::Unauthenticated) => None,
        _ => event.caller_id,
    }
}
