//! Re-encrypts every stored key, the keyring check value and the audit MAC
//! key under the newest key of the keyring.
//!
//! Each record is replaced on its own by compare-and-swap, so a kill -9 at
//! any moment leaves every record readable by the keyring (old or new
//! token), and running rotate again finishes the job. A token keeps its
//! original Fernet timestamp (what Python's `MultiFernet.rotate` does), and
//! created_at/expires_at are untouched, so ages and TTLs mean the same.

use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use crate::keyring::{token_timestamp, Keyring};
use crate::store::{Store, StoreError, META_AUDIT_KEY, META_CHECK};

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
    for name in [META_CHECK, META_AUDIT_KEY] {
        if rotate_meta(store, keyring, name)? {
            report
                .meta_rotated
                .push(String::from_utf8_lossy(name).into_owned());
        }
    }
    let mut visited = 0u64;
    for item in store.iter_keys() {
        let (mut rec, mut current) = item?;
        // A concurrent change (a delete, another rotation) makes the swap
        // fail; re-read and try again a few times.
        for _attempt in 0..3 {
            let opened = match keyring.decrypt(&rec.token) {
                Ok(o) => o,
                Err(_) => {
                    report.failed.push(rec.id);
                    break;
                }
            };
            if opened.key_index == 0 {
                report.already_current += 1;
                break;
            }
            let stamp = token_timestamp(&rec.token).unwrap_or_else(now_secs);
            let mut new = rec.clone();
            new.token = keyring.encrypt_at(opened.plaintext.expose(), stamp);
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

/// Re-encrypts one meta value if it is under an older key.
fn rotate_meta(store: &Store, keyring: &Keyring, name: &[u8]) -> Result<bool, StoreError> {
    let Some(current) = store.meta_value(name)? else {
        return Ok(false);
    };
    let token = String::from_utf8_lossy(&current).into_owned();
    let Ok(opened) = keyring.decrypt(&token) else {
        return Ok(false);
    };
    if opened.key_index == 0 {
        return Ok(false);
    }
    let stamp = token_timestamp(&token).unwrap_or_else(now_secs);
    let new = keyring.encrypt_at(opened.plaintext.expose(), stamp);
    store.swap_meta(name, &current, new.as_bytes())
}

fn now_secs() -> u64 {
    u64::try_from(crate::time::now_us() / 1_000_000).unwrap_or(0)
}
