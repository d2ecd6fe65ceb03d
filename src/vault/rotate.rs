//! Rotation: re-encrypt every key under the newest key of the keyring,
//! re-seal keyhold's own secrets, start a new audit signing key (the old
//! one signs the hand-over), and record it all. The work is blocking
//! (`rotate_store`); its record is written by [`Vault::record_rotation`].

use std::time::Duration;

use super::{Denied, EveryProvider, Origin, Refusal, Vault};
use crate::access::Caller;
use crate::audit::{Action, AuditLog, Outcome, PublicKey};
use crate::keyring::Keyring;
use crate::ops::rewrap::RotateReport;
use crate::store::Store;

/// What a rotation did.
#[derive(Debug)]
pub(crate) struct Rotated {
    pub report: RotateReport,
    /// The new audit signing key, when one was started.
    pub new_public_key: Option<PublicKey>,
}

/// Rotates everything (blocking: run it off an async runtime's threads).
/// `who` names the caller in the hand-over record; `pace` sleeps between
/// records; `progress` is told the number of keys visited.
pub(crate) fn rotate_store(
    store: &Store,
    keyring: &Keyring,
    log: &AuditLog,
    who: &str,
    pace: Duration,
    progress: impl FnMut(u64),
) -> Result<Rotated, Refusal> {
    let report = crate::ops::rewrap::rewrap_all(store, keyring, log, who, pace, progress)
        .map_err(|e| Refusal::storage(&e))?;
    let new_public_key = crate::ops::rewrap::rotate_signing_key(log, keyring, who)
        .map_err(|e| Refusal::storage(&e))?;
    // Last, once everything else is under the newest key.
    let mut report = report;
    if crate::ops::rewrap::reseal_check(store, keyring, log, who)
        .map_err(|e| Refusal::storage(&e))?
    {
        report.meta_rotated.push("keyring_check".into());
    }
    if let Some(k) = new_public_key {
        tracing::info!(audit_public_key = %k, "rotation started a new audit signing key");
    }
    Ok(Rotated {
        report,
        new_public_key,
    })
}

impl Vault<'_> {
    /// Refuses a provider-limited `caller` what covers every provider (a
    /// whole-store operation, the audit log, the metrics: `what`),
    /// recording the refusal under `action`.
    pub(crate) async fn require_unlimited(
        &self,
        origin: &Origin,
        caller: &Caller,
        action: Action,
        what: EveryProvider,
    ) -> Result<(), Refusal> {
        if !caller.is_limited() {
            return Ok(());
        }
        let mut ev = self.event(origin, action, Some(caller), Outcome::Forbidden);
        ev.detail = Some("provider-limited token".into());
        Err(self
            .refuse(origin, ev, Refusal::Forbidden(Denied::EveryProvider(what)))
            .await)
    }

    /// Records a rotation (`caller` none: the operator offline).
    pub(crate) async fn record_rotation(
        &self,
        origin: &Origin,
        caller: Option<&Caller>,
        rotated: &Rotated,
    ) -> Result<(), Refusal> {
        let mut ev = self.event(origin, Action::Rotate, caller, Outcome::Success);
        ev.detail = Some(format!(
            "{}; newest key {}",
            rotated.report.summary(),
            self.keyring
                .fingerprints()
                .first()
                .map_or("", String::as_str)
        ));
        self.record(ev, vec![]).await?;
        Ok(())
    }
}
