//! Re-encrypts every stored key under the newest key of the keyring,
//! re-seals keyhold's own secrets (record secret, the MAC key of older
//! audit records), starts a new audit signing key ([`rotate_signing_key`])
//! and, last of all, remakes the check value under the newest key
//! ([`reseal_check`]).
//!
//! Records are replaced through the audit log, a chunk of keys a commit,
//! so a kill -9 at any moment leaves every record readable by the keyring
//! (old or new token) and the state digest in step with the store, and
//! running rotate again finishes the job. A token keeps its
//! original Fernet timestamp (what Python's `MultiFernet.rotate` does), and
//! created_at/expires_at are untouched, so ages and TTLs mean the same.
//!
//! Over 500 lines: one concept, the store's rewrite under a new key, step
//! by step (keys, sealed secrets, record MAC secret, signing key, check
//! value), each crash-safe on its own.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::audit::{
    Action, AuditError, AuditEvent, AuditLog, Outcome, PublicKey, MAC_KEY_PURPOSE, SIGNING_PURPOSE,
};
use crate::keyring::{token_timestamp, Keyring};
use crate::store::{
    RecordKeys, Store, StoreError, Write, META_AUDIT_KEY, META_CHECK, META_RECORD_MAC_NEXT,
    META_RECORD_MAC_SECRET, META_RECORD_SECRET, META_SIGNING_KEY, RECORD_MAC_PURPOSE,
    RECORD_SECRET_PURPOSE,
};

/// What a rotation did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RotateReport {
    /// Records re-encrypted under the newest key.
    pub rotated: u64,
    /// Records already under the newest key.
    pub already_current: u64,
    /// Keys no key of the keyring opens (left as they are).
    pub failed: Vec<Uuid>,
    /// Meta values re-encrypted (`keyring_check`, `audit_mac_key`).
    pub meta_rotated: Vec<String>,
    /// Key and token records authenticated again under a new record MAC
    /// secret (the old one, which the retired key could unseal, is gone).
    pub records_reauthenticated: Option<u64>,
}

impl RotateReport {
    pub(crate) fn summary(&self) -> String {
        let mut s = format!(
            "rotated {} keys, {} already current",
            self.rotated, self.already_current
        );
        if !self.meta_rotated.is_empty() {
            s.push_str(&format!("; re-encrypted {}", self.meta_rotated.join(", ")));
        }
        if let Some(n) = self.records_reauthenticated {
            s.push_str(&format!(
                "; a new record MAC secret authenticates every key and token record ({n} written \
                 again)"
            ));
        }
        if !self.failed.is_empty() {
            s.push_str(&format!(
                "; {} keys open with no key of the keyring: {}",
                self.failed.len(),
                self.failed
                    .iter()
                    .take(20)
                    .map(Uuid::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        s
    }
}

/// How many key records one commit re-encrypts.
const CHUNK: usize = 256;

/// Rotates everything. `pace` sleeps between records (to spread the I/O of
/// a large store); `progress` is called with the number of keys visited.
///
/// Every record is rewritten through the audit log (`log`), in commits of
/// up to 256 keys, each with a `rotate` record naming `who` and how many
/// keys it re-encrypted, so the state digest the signed chain holds always
/// matches the store (see `store::state`); a crash between commits leaves
/// each record readable by the keyring, and running rotate again finishes
/// the job.
pub(crate) fn rewrap_all(
    store: &Store,
    keyring: &Keyring,
    log: &AuditLog,
    who: &str,
    pace: Duration,
    mut progress: impl FnMut(u64),
) -> Result<RotateReport, AuditError> {
    let mut report = RotateReport::default();
    // Whether the secret that authenticates records is still one a retired
    // key opens (or a rotation stopped half-way): decided before the
    // re-sealing below puts it under the newest key.
    // A store that never made a record MAC secret (never rotated since
    // schema 5, or a rotation stopped before it got there) still
    // authenticates records under a secret that any key it was ever
    // sealed under opens: due as well, so a rotation run again after a
    // crash in the re-encryption below still makes one.
    let rekey_due = store.meta_value(META_RECORD_MAC_NEXT)?.is_some()
        || store.meta_value(META_RECORD_MAC_SECRET)?.is_none()
        || under_older_key(store, keyring, META_RECORD_SECRET, RECORD_SECRET_PURPOSE)?
        || under_older_key(store, keyring, META_RECORD_MAC_SECRET, RECORD_MAC_PURPOSE)?;
    // The sealed secrets first, so every record written from here on
    // opens under the newest key. The check value is re-sealed last (see
    // below).
    let mut meta = Vec::new();
    for (name, purpose) in [
        (META_RECORD_SECRET, RECORD_SECRET_PURPOSE),
        (META_AUDIT_KEY, MAC_KEY_PURPOSE),
    ] {
        if let Some(value) = reseal_meta(store, keyring, name, purpose)? {
            meta.push(Write::Meta {
                name,
                value: Some(value),
            });
            report
                .meta_rotated
                .push(String::from_utf8_lossy(name).into_owned());
        }
    }
    if !meta.is_empty() {
        let detail = format!(
            "rotation: re-sealed {} under the newest key",
            report.meta_rotated.join(", ")
        );
        log.append(&[(rotate_event(who, detail), meta)])?;
    }
    let mut visited = 0u64;
    let mut ids = Vec::with_capacity(CHUNK);
    let mut keys = store.iter_keys();
    loop {
        ids.clear();
        for item in keys.by_ref() {
            match item {
                Ok((rec, _)) => ids.push(rec.id),
                Err(StoreError::Tampered { id, .. }) => {
                    if let Ok(u) = Uuid::parse_str(&id) {
                        report.failed.push(u);
                    }
                }
                Err(e) => return Err(e.into()),
            }
            if ids.len() >= CHUNK || !pace.is_zero() {
                break;
            }
        }
        if ids.is_empty() {
            break;
        }
        // Key changes that read a record and write it back (a new version,
        // a delete, a restore) hold this lock until their commit; holding
        // it from the read of each record to this chunk's commit keeps
        // them from writing back a record this rotation re-encrypts.
        let held = store.write_lock_blocking(crate::store::Guarded::Keys)?;
        let mut writes = Vec::new();
        for id in &ids {
            let Some(rec) = store.get_key(id)? else {
                continue;
            };
            match reencrypt(keyring, &rec) {
                Reencrypted::Failed => report.failed.push(rec.id),
                Reencrypted::Current => report.already_current += 1,
                Reencrypted::New(new) => writes.push(Write::PutKey(*new)),
            }
        }
        if !writes.is_empty() {
            let n = writes.len() as u64;
            let detail = format!("rotation: re-encrypted {n} keys under the newest key");
            log.append(&[(rotate_event(who, detail), writes)])?;
            report.rotated += n;
        }
        drop(held);
        visited += ids.len() as u64;
        progress(visited);
        if !pace.is_zero() {
            std::thread::sleep(pace);
        }
    }
    if rekey_due {
        // A rotation resumed with a next secret sealed under a key older
        // than the newest: that key (with a backup taken meanwhile) would
        // open the secret it makes current, so a fresh one follows.
        let stale_next = under_older_key(store, keyring, META_RECORD_MAC_NEXT, RECORD_MAC_PURPOSE)?;
        let mut n = new_record_mac_secret(store, keyring, log, who, pace)?;
        if stale_next {
            n += new_record_mac_secret(store, keyring, log, who, pace)?;
        }
        report.records_reauthenticated = Some(n);
    }
    store.flush()?;
    Ok(report)
}

/// The last step of a rotation, once every key and keyhold's own secrets
/// (the audit signing key included: [`rotate_signing_key`]) are under the
/// newest key: the check value, which a start tests the keyring against.
/// Until it moves, the check value opens only with the older key, so a
/// keyring that dropped or retired that key before the rotation finished
/// is refused at start (naming `keyhold keyring unretire`), not taken up
/// with secrets it cannot open. True when it was re-sealed.
pub(crate) fn reseal_check(
    store: &Store,
    keyring: &Keyring,
    log: &AuditLog,
    who: &str,
) -> Result<bool, AuditError> {
    let Some(check) = store.check_value()? else {
        return Ok(false);
    };
    if keyring.opens_check(&check).is_none_or(|i| i == 0) {
        return Ok(false);
    }
    let detail = "rotation: every key and secret is under the newest key; re-sealed \
                  keyring_check under it"
        .to_string();
    let write = Write::Meta {
        name: META_CHECK,
        value: Some(keyring.check_token().into_bytes()),
    };
    log.append(&[(rotate_event(who, detail), vec![write])])?;
    store.flush()?;
    Ok(true)
}

/// Whether the meta value `name` is sealed under an older key of the
/// keyring.
fn under_older_key(
    store: &Store,
    keyring: &Keyring,
    name: &[u8],
    purpose: &str,
) -> Result<bool, StoreError> {
    Ok(match store.meta_string(name)? {
        Some(v) => keyring.unseal(purpose, &v).is_ok_and(|o| o.key_index > 0),
        None => false,
    })
}

/// Replaces the secret that authenticates records (and keys the state
/// digest) with a new one, so that nothing a retired key unseals from an
/// older copy of the store authenticates a current record:
///
/// 1. the new secret is recorded, sealed, as the next one (a rotation
///    stopped after this resumes with it); from then on records are
///    written under it and read under either;
/// 2. every key and token record is written again, a chunk a commit,
///    each holding its kind's write lock;
/// 3. one commit makes it the current secret and drops the next, the
///    state digest computed afresh under it with every other write held
///    back ([`AuditLog::switch_record_keys`]).
///
/// Token records also move: the new secret adds a layer to the token
/// digest (see `store::RecordKeys`), so the retired key no longer tells
/// where a token's record would be. Returns how many records were written
/// again.
fn new_record_mac_secret(
    store: &Store,
    keyring: &Keyring,
    log: &AuditLog,
    who: &str,
    pace: Duration,
) -> Result<u64, AuditError> {
    let unsealed = |name: &[u8], purpose: &str| -> Result<Option<Zeroizing<Vec<u8>>>, AuditError> {
        match store.meta_string(name)? {
            None => Ok(None),
            Some(v) => keyring
                .unseal(purpose, &v)
                .map(|o| Some(Zeroizing::new(o.secret.expose().to_vec())))
                .map_err(|_| AuditError::MacKeyLocked),
        }
    };
    let next = match unsealed(META_RECORD_MAC_NEXT, RECORD_MAC_PURPOSE)? {
        Some(n) => n,
        None => {
            let mut fresh = Zeroizing::new(vec![0u8; 32]);
            getrandom::fill(fresh.as_mut_slice()).map_err(|e| {
                AuditError::WriteFailed(format!("the system random generator failed: {e}"))
            })?;
            let sealed = keyring.seal(RECORD_MAC_PURPOSE, &fresh).into_bytes();
            log.append(&[(
                rotate_event(
                    who,
                    "rotation: a new record MAC secret; every key and token record is \
                     authenticated under it next"
                        .into(),
                ),
                vec![Write::Meta {
                    name: META_RECORD_MAC_NEXT,
                    value: Some(sealed),
                }],
            )])?;
            fresh
        }
    };
    let secret =
        unsealed(META_RECORD_SECRET, RECORD_SECRET_PURPOSE)?.ok_or(AuditError::MacKeyLocked)?;
    // The MAC secrets made so far, oldest first (32 bytes each); the new
    // one joins them at the end.
    let history = unsealed(META_RECORD_MAC_SECRET, RECORD_MAC_PURPOSE)?
        .map(|h| h.to_vec())
        .unwrap_or_default();
    if history.len() % 32 != 0 || next.len() != 32 {
        return Err(AuditError::MacKeyLocked);
    }
    let layers: Vec<&[u8]> = history.chunks_exact(32).collect();
    let moving = RecordKeys::from_secrets(&secret, &layers, Some(&next));
    let current_layers = moving.layers();
    // In use once no commit is under way: a commit that began with the
    // keys before would write a record the snapshot below may miss.
    log.with_writes_paused(|| {
        store.set_record_keys(RecordKeys::from_secrets(&secret, &layers, Some(&next)))
    });
    let mut written = 0u64;
    let chunk = if pace.is_zero() { CHUNK } else { 1 };
    // Key records.
    let ids: Vec<Uuid> = store
        .iter_keys()
        .filter_map(|item| item.ok().map(|(rec, _)| rec.id))
        .collect();
    for part in ids.chunks(chunk) {
        let held = store.write_lock_blocking(crate::store::Guarded::Keys)?;
        let mut writes = Vec::new();
        for id in part {
            if let Some(rec) = store.get_key(id)? {
                writes.push(Write::PutKey(rec));
            }
        }
        written += commit_chunk(log, who, "key", writes)?;
        drop(held);
        if !pace.is_zero() {
            std::thread::sleep(pace);
        }
    }
    // Token records move to where the new secret's layer of the token
    // digest puts them (a record says how many layers its place has, so
    // a rotation run again after a crash moves only the rest). Token
    // changes wait from here to the switch: one made in between would be
    // left where the switch no longer looks.
    let held = store.write_lock_blocking(crate::store::Guarded::Tokens)?;
    let tokens = store.list_tokens()?;
    let mut moves = Vec::new();
    for (at, mut rec) in tokens {
        if rec.layers == current_layers + 1 {
            continue;
        }
        let to =
            moving
                .relocate(at, rec.layers)
                .ok_or(AuditError::Store(StoreError::Tampered {
                    what: "token",
                    id: rec.id.to_string(),
                }))?;
        rec.layers = current_layers + 1;
        moves.push(Write::PutToken {
            hash: to,
            record: rec,
        });
        moves.push(Write::DeleteToken { hash: at });
    }
    for part in moves.chunks(2 * CHUNK) {
        written += commit_chunk(log, who, "token", part.to_vec())? / 2;
    }
    let mut all = history.clone();
    all.extend_from_slice(&next);
    layers_switch(keyring, log, who, &secret, &all, written)?;
    drop(held);
    Ok(written)
}

/// The last step of [`new_record_mac_secret`]: the next secret becomes
/// the newest of `all` (every MAC secret made, oldest first).
fn layers_switch(
    keyring: &Keyring,
    log: &AuditLog,
    who: &str,
    secret: &[u8],
    all: &[u8],
    written: u64,
) -> Result<(), AuditError> {
    let layers: Vec<&[u8]> = all.chunks_exact(32).collect();
    log.switch_record_keys(
        rotate_event(
            who,
            format!(
                "rotation: every key and token record is authenticated under the new record MAC \
                 secret ({written} written again; token records moved to its layer of the token \
                 digest); the old one authenticates nothing"
            ),
        ),
        vec![
            Write::Meta {
                name: META_RECORD_MAC_SECRET,
                value: Some(keyring.seal(RECORD_MAC_PURPOSE, all).into_bytes()),
            },
            Write::Meta {
                name: META_RECORD_MAC_NEXT,
                value: None,
            },
        ],
        RecordKeys::from_secrets(secret, &layers, None),
    )?;
    Ok(())
}

/// Commits records written again under the next MAC secret, with their
/// record; returns how many.
fn commit_chunk(
    log: &AuditLog,
    who: &str,
    what: &str,
    writes: Vec<Write>,
) -> Result<u64, AuditError> {
    if writes.is_empty() {
        return Ok(0);
    }
    let n = writes.len() as u64;
    let detail =
        format!("rotation: {n} {what} records authenticated under the new record MAC secret");
    log.append(&[(rotate_event(who, detail), writes)])?;
    Ok(n)
}

/// A key record re-encrypted under the newest key, if it needed it.
enum Reencrypted {
    New(Box<crate::store::KeyRecord>),
    Current,
    Failed,
}

/// Re-encrypts every version the record keeps, each with its own
/// timestamp (what Python's `MultiFernet.rotate` does).
fn reencrypt(keyring: &Keyring, rec: &crate::store::KeyRecord) -> Reencrypted {
    let mut new = rec.clone();
    let mut changed = false;
    for token in new.tokens_mut() {
        let Ok(opened) = keyring.decrypt(token) else {
            return Reencrypted::Failed;
        };
        if opened.key_index == 0 {
            continue;
        }
        let stamp = token_timestamp(token).unwrap_or_else(now_secs);
        *token = keyring.encrypt_at(opened.plaintext.expose(), stamp);
        changed = true;
    }
    if changed {
        Reencrypted::New(Box::new(new))
    } else {
        Reencrypted::Current
    }
}

/// The record of one step of a rotation.
fn rotate_event(who: &str, detail: String) -> AuditEvent {
    let mut ev = AuditEvent::cli(Action::Rotate, Outcome::Success, Some(detail));
    ev.caller = who.to_string();
    ev
}

/// The sealed meta value re-sealed under the newest key, if it is under
/// an older one.
fn reseal_meta(
    store: &Store,
    keyring: &Keyring,
    name: &'static [u8],
    purpose: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(current) = store.meta_string(name)? else {
        return Ok(None);
    };
    let Ok(opened) = keyring.unseal(purpose, &current) else {
        return Ok(None);
    };
    if opened.key_index == 0 {
        return Ok(None);
    }
    Ok(Some(
        keyring.seal(purpose, opened.secret.expose()).into_bytes(),
    ))
}

/// Starts a new audit signing key when the current one is sealed under an
/// older key of the keyring (a rotation): the old key signs the hand-over
/// record. Returns the new public key, or `None` when nothing was due.
pub(crate) fn rotate_signing_key(
    log: &AuditLog,
    keyring: &Keyring,
    caller: &str,
) -> Result<Option<PublicKey>, AuditError> {
    let Some(sealed) = log.store().meta_string(META_SIGNING_KEY)? else {
        return Ok(None);
    };
    match keyring.unseal(SIGNING_PURPOSE, &sealed) {
        Ok(o) if o.key_index == 0 => Ok(None),
        Ok(_) => Ok(Some(log.hand_over(keyring, caller)?)),
        Err(_) => Err(AuditError::MacKeyLocked),
    }
}

fn now_secs() -> u64 {
    u64::try_from(crate::time::now_us() / 1_000_000).unwrap_or(0)
}
