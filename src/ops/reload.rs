//! Whether a running server may take up a new keyring (a reload on
//! SIGHUP or the admin route): only if every record the store
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
pub(crate) enum ReloadRefused {
    /// The edge that refuses it says how to recover (the key file's
    /// `retired_in`, when its retired keys would open everything).
    #[error(
        "the new keyring does not open {} record(s) the store still needs ({}), so the server \
         keeps its keyring",
        needed.len(),
        needed.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
    )]
    StillNeeded {
        needed: Vec<String>,
        retired_in: Option<std::path::PathBuf>,
    },
    #[error("cannot read the store to check the new keyring: {0}")]
    Store(#[from] StoreError),
}

/// Refuses `new` unless it opens everything in `store` that needs a key.
/// The refusal says whether the key file's retired keys would open
/// everything (so that unretiring them recovers).
pub(crate) fn check_replacement(store: &Store, new: &Keyring) -> Result<(), ReloadRefused> {
    let needed = needed_by(store, new)?;
    if needed.is_empty() {
        return Ok(());
    }
    let with_retired = Keyring::from_env_with_retired()
        .ok()
        .filter(|all| all.len() > new.len());
    let retired_in = match (&with_retired, new.source()) {
        (Some(all), crate::keyring::KeySource::File(path)) if needed_by(store, all)?.is_empty() => {
            Some(path.clone())
        }
        _ => None,
    };
    Err(ReloadRefused::StillNeeded { needed, retired_in })
}

/// What in `store` needs a key that `keyring` does not hold.
fn needed_by(store: &Store, new: &Keyring) -> Result<Vec<String>, ReloadRefused> {
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
    Ok(needed)
}
