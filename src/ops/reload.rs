//! Whether a running server may take up a new keyring (a reload on
//! SIGHUP or `POST /api/admin/reload`): only if every record the store
//! needs a key for still opens with it — the check value, keyhold's own
//! sealed secrets (record secret, audit signing key, audit MAC key) and
//! every stored API key. A keyring that dropped a key something still
//! needs is refused, and the server keeps the one it has.
//!
//! Not for: reading the keyring (see `keyring`) or swapping it (see
//! `keyring::LiveKeyring`).

use crate::audit::{MAC_KEY_PURPOSE, SIGNING_PURPOSE};
use crate::keyring::Keyring;
use crate::store::{
    Store, StoreError, META_AUDIT_KEY, META_RECORD_SECRET, META_SIGNING_KEY, RECORD_SECRET_PURPOSE,
};

/// Why a new keyring was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadRefused {
    #[error(
        "the new keyring does not open {} record(s) the store still needs ({}): keep the old key \
         in the key file (after the new one), run the rotation (POST /api/admin/rotate, or \
         `keyhold rotate` offline), then drop it and reload again; the server keeps its keyring",
        needed.len(),
        needed.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
    )]
    StillNeeded { needed: Vec<String> },
    #[error("cannot read the store to check the new keyring: {0}")]
    Store(#[from] StoreError),
}

/// Refuses `new` unless it opens everything in `store` that needs a key.
pub fn check_replacement(store: &Store, new: &Keyring) -> Result<(), ReloadRefused> {
    let mut needed = Vec::new();
    if let Some(check) = store.check_value()? {
        if new.opens_check(&check).is_none() {
            needed.push("the keyring check value".to_string());
        }
    }
    for (name, purpose, what) in [
        (
            META_RECORD_SECRET,
            RECORD_SECRET_PURPOSE,
            "the record secret",
        ),
        (META_SIGNING_KEY, SIGNING_PURPOSE, "the audit signing key"),
        (META_AUDIT_KEY, MAC_KEY_PURPOSE, "the audit MAC key"),
        (
            crate::store::META_RECORD_MAC_SECRET,
            crate::store::RECORD_MAC_PURPOSE,
            "the record MAC secrets",
        ),
        (
            crate::store::META_RECORD_MAC_NEXT,
            crate::store::RECORD_MAC_PURPOSE,
            "the next record MAC secret (a rotation is unfinished: run it again first)",
        ),
    ] {
        if let Some(v) = store.meta_string(name)? {
            if new.unseal(purpose, &v).is_err() {
                needed.push(what.to_string());
            }
        }
    }
    for item in store.iter_keys() {
        match item {
            Ok((rec, _)) => {
                if rec.tokens().any(|t| new.decrypt(t).is_err()) {
                    needed.push(format!("key {}", rec.id));
                }
            }
            // A tampered record opens with no keyring: not this one's to keep.
            Err(StoreError::Tampered { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if needed.is_empty() {
        Ok(())
    } else {
        Err(ReloadRefused::StillNeeded { needed })
    }
}
