//! Initialising a store: its sealed secrets and check value
//! (`crate::unlock::initialise`), then the `init` record and the first
//! admin token, in one audit commit.

use super::token_records;
use super::{Conflict, Refusal};
use crate::access::Role;
use crate::audit::{Action, AuditEvent, AuditLog, Outcome, PublicKey};
use crate::keyring::Keyring;
use crate::secret::SecretString;
use crate::store::Store;

/// A new store's first admin token (shown once) and audit public key.
#[derive(Debug)]
pub struct Initialised {
    pub admin_token: SecretString,
    pub public_key: PublicKey,
}

/// Initialises an empty `store` under `keyring`, with a first admin token
/// named `admin_name` (`init`: `admin`; `serve --dev`: `root`).
pub fn initialise(
    store: &Store,
    keyring: &Keyring,
    admin_name: &str,
) -> Result<Initialised, Refusal> {
    let public_key = crate::unlock::initialise(store, keyring).map_err(|e| match e {
        crate::unlock::UnlockError::Store(crate::store::StoreError::AlreadyInitialised(d)) => {
            Refusal::Conflict(Conflict::AlreadyInitialised { location: d })
        }
        e => Refusal::storage(&e),
    })?;
    let log = AuditLog::open(store.clone(), keyring).map_err(|e| Refusal::storage(&e))?;
    let prepared = token_records::prepare(store, admin_name, Role::Admin, None)?;
    let mut token_ev = AuditEvent::cli(
        Action::TokenCreate,
        Outcome::Success,
        Some(format!(
            "token {} `{}` role admin",
            prepared.record.id, prepared.record.name
        )),
    );
    token_ev.caller = "init".into();
    let mut init_ev = AuditEvent::cli(
        Action::Init,
        Outcome::Success,
        Some(format!(
            "keyring key {}; audit signing key {public_key}",
            keyring.fingerprints().first().map_or("", String::as_str)
        )),
    );
    init_ev.caller = "init".into();
    log.append(&[(init_ev, vec![]), (token_ev, vec![prepared.write()])])
        .map_err(|e| {
            tracing::error!(error = %e, "could not write the init records");
            Refusal::AuditUnavailable
        })?;
    Ok(Initialised {
        admin_token: prepared.token.secret,
        public_key,
    })
}
