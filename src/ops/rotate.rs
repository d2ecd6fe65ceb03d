//! Re-encrypts every stored key under the newest key of the keyring,
//! re-seals keyhold's own secrets (record secret, the MAC key of older
//! audit records) and remakes the check value under the newest key's
//! derived keys, and starts a new audit signing key
//! ([`rotate_signing_key`]).
//!
//! Each record is replaced on its own by compare-and-swap, so a kill -9 at
//! any moment leaves every record readable by the keyring (old or new
//! token), and running rotate again finishes the job. A token keeps its
//! original Fernet timestamp (what Python's `MultiFernet.rotate` does), and
//! created_at/expires_at are untouched, so ages and TTLs mean the same.

use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use crate::audit::{AuditError, AuditLog, PublicKey, MAC_KEY_PURPOSE, SIGNING_PURPOSE};
use crate::keyring::{token_timestamp, Keyring};
use crate::store::{
    Store, StoreError, META_AUDIT_KEY, META_CHECK, META_RECORD_SECRET, META_SIGNING_KEY,
    RECORD_SECRET_PURPOSE,
};

/// What a rotation did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RotateReport {
    /// Records re-encrypted under the newest key.
    pub rotated: u64,
    /// Records already under the newest key.
    pub already_current: u64,
    /// Keys no key of the keyring opens (left as they are).
    pub failed: Vec<Uuid>,
    /// Meta values re-encrypted (`keyring_check`, `audit_mac_key`).
    pub meta_rotated: Vec<String>,
}

impl RotateReport {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "rotated {} keys, {} already current",
            self.rotated, self.already_current
        );
        if !self.meta_rotated.is_empty() {
            s.push_str(&format!("; re-encrypted {}", self.meta_rotated.join(", ")));
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

/// How many records between fsyncs.
const FLUSH_EVERY: u64 = 1000;

/// Rotates everything. `pace` sleeps between records (to spread the I/O of
/// a large store); `progress` is called with the number of keys visited.
pub fn rotate(
    store: &Store,
    keyring: &Keyring,
    pace: Duration,
    mut progress: impl FnMut(u64),
) -> Result<RotateReport, StoreError> {
    let mut report = RotateReport::default();
    // The meta values first: the server checks them at start-up.
    if let Some(check) = store.check_value()? {
        if keyring.opens_check(&check).is_some_and(|i| i > 0)
            && store.swap_meta(
                META_CHECK,
                check.as_bytes(),
                keyring.check_token().as_bytes(),
            )?
        {
            report.meta_rotated.push("keyring_check".into());
        }
    }
    for (name, purpose) in [
        (META_RECORD_SECRET, RECORD_SECRET_PURPOSE),
        (META_AUDIT_KEY, MAC_KEY_PURPOSE),
    ] {
        if reseal_meta(store, keyring, name, purpose)? {
            report
                .meta_rotated
                .push(String::from_utf8_lossy(name).into_owned());
        }
    }
    let mut visited = 0u64;
    // Key changes that read a record and write it back (a new version, a
    // delete, a restore) hold this lock until their commit; holding it
    // around each swap keeps them from writing back a record this
    // rotation has just re-encrypted. Taken per 256 records (a round trip
    // on a shared database), let go while pacing.
    let mut held: Option<crate::store::WriteLock> = None;
    let mut in_chunk = 0u32;
    for item in store.iter_keys() {
        if held.is_none() {
            held = Some(store.write_lock_blocking(crate::store::Guarded::Keys)?);
        }
        let (mut rec, mut current) = item?;
        // A concurrent change (a delete, another rotation) makes the swap
        // fail; re-read and try again a few times.
        for _attempt in 0..3 {
            // Every version the record keeps is re-encrypted, each with
            // its own timestamp; the record is written if any was not
            // under the newest key yet.
            let mut new = rec.clone();
            let mut changed = false;
            let mut failed = false;
            for token in new.tokens_mut() {
                let opened = match keyring.decrypt(token) {
                    Ok(o) => o,
                    Err(_) => {
                        failed = true;
                        break;
                    }
                };
                if opened.key_index == 0 {
                    continue;
                }
                let stamp = token_timestamp(token).unwrap_or_else(now_secs);
                *token = keyring.encrypt_at(opened.plaintext.expose(), stamp);
                changed = true;
            }
            if failed {
                report.failed.push(rec.id);
                break;
            }
            if !changed {
                report.already_current += 1;
                break;
            }
            if store.swap_key(&current, &new)? {
                report.rotated += 1;
                break;
            }
            match store.get_key_raw(&rec.id)? {
                Some((r, bytes)) => {
                    rec = r;
                    current = bytes;
                }
                None => break,
            }
        }
        visited += 1;
        in_chunk += 1;
        if in_chunk >= 256 || !pace.is_zero() {
            held = None;
            in_chunk = 0;
        }
        progress(visited);
        if visited.is_multiple_of(FLUSH_EVERY) {
            store.flush()?;
        }
        if !pace.is_zero() {
            std::thread::sleep(pace);
        }
    }
    store.flush()?;
    Ok(report)
}

/// Re-seals one sealed meta value if it is under an older key.
fn reseal_meta(
    store: &Store,
    keyring: &Keyring,
    name: &'static [u8],
    purpose: &str,
) -> Result<bool, StoreError> {
    let Some(current) = store.meta_string(name)? else {
        return Ok(false);
    };
    let Ok(opened) = keyring.unseal(purpose, &current) else {
        return Ok(false);
    };
    if opened.key_index == 0 {
        return Ok(false);
    }
    let new = keyring.seal(purpose, opened.secret.expose());
    store.swap_meta(name, current.as_bytes(), new.as_bytes())
}

/// Starts a new audit signing key when the current one is sealed under an
/// older key of the keyring (a rotation): the old key signs the hand-over
/// record. Returns the new public key, or `None` when nothing was due.
pub fn rotate_signing_key(
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
