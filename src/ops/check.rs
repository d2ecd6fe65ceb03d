//! `keyhold check`: is everything in the store readable by this keyring,
//! does anything still need an older key, and does the audit chain verify.

use serde::Serialize;
use uuid::Uuid;

use crate::audit::{verify_store, MacKey, VerifyReport};
use crate::keyring::Keyring;
use crate::store::{Store, StoreError, META_AUDIT_KEY, META_CHECK};

/// The findings of a check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// A key of the keyring opens the check value.
    pub keyring_opens_store: bool,
    pub keys_total: u64,
    pub keys_ok: u64,
    /// Keys no key of the keyring opens.
    pub keys_failed: Vec<Uuid>,
    /// Records (keys and meta values) still under an older key of the
    /// keyring: run `keyhold rotate` before retiring it.
    pub on_older_key: u64,
    /// The audit chain, or `None` when the MAC key could not be opened.
    pub audit: Option<VerifyReport>,
}

impl CheckReport {
    pub fn all_well(&self) -> bool {
        self.keyring_opens_store
            && self.keys_failed.is_empty()
            && self.on_older_key == 0
            && self.audit.as_ref().is_some_and(VerifyReport::is_ok)
    }

    /// Human-readable lines.
    pub fn lines(&self) -> Vec<String> {
        let mark = |ok: bool| if ok { "ok  " } else { "FAIL" };
        let mut out = vec![format!(
            "{} the keyring opens the store's check value",
            mark(self.keyring_opens_store)
        )];
        out.push(format!(
            "{} {} of {} keys decrypt with the keyring",
            mark(self.keys_failed.is_empty()),
            self.keys_ok,
            self.keys_total
        ));
        for id in self.keys_failed.iter().take(50) {
            out.push(format!("       does not decrypt: {id}"));
        }
        out.push(if self.on_older_key == 0 {
            format!("{} nothing needs an older key of the keyring", mark(true))
        } else {
            format!(
                "{} {} records still need an older key: run `keyhold rotate` before retiring it",
                mark(false),
                self.on_older_key
            )
        });
        match &self.audit {
            Some(r) => out.push(format!("{} audit chain: {r}", mark(r.is_ok()))),
            None => out.push(format!(
                "{} audit chain: the keyring cannot open the audit MAC key",
                mark(false)
            )),
        }
        out
    }
}

/// Runs every check.
pub fn check(store: &Store, keyring: &Keyring) -> Result<CheckReport, StoreError> {
    let mut on_older_key = 0;
    let mut keyring_opens_store = false;
    for name in [META_CHECK, META_AUDIT_KEY] {
        if let Some(v) = store.meta_value(name)? {
            if let Ok(o) = keyring.decrypt(&String::from_utf8_lossy(&v)) {
                if name == META_CHECK {
                    keyring_opens_store = true;
                }
                if o.key_index > 0 {
                    on_older_key += 1;
                }
            }
        }
    }
    let (mut total, mut ok, mut failed) = (0, 0, Vec::new());
    for item in store.iter_keys() {
        let (rec, _) = item?;
        total += 1;
        match keyring.decrypt(&rec.token) {
            Ok(o) => {
                ok += 1;
                if o.key_index > 0 {
                    on_older_key += 1;
                }
            }
            Err(_) => failed.push(rec.id),
        }
    }
    let audit = match MacKey::unseal(store, keyring) {
        Ok(key) => Some(verify_store(store, &key)?),
        Err(_) => None,
    };
    Ok(CheckReport {
        keyring_opens_store,
        keys_total: total,
        keys_ok: ok,
        keys_failed: failed,
        on_older_key,
        audit,
    })
}
