//! Settings every node of a shared store must agree on, kept in the store
//! (authenticated by the state digest like every meta value) and changed
//! only with an audit record: today the reveal rate limit (issue 24).
//!
//! On PostgreSQL, where nodes share one rate limit, each node applying its
//! own `--reveal-rate` would give a client as many budgets as there are
//! rates. So the rate is stored: `init` and `migrate` into a database
//! write the default, `keyhold reveal-rate RATE` changes it, every node
//! uses the stored one (and re-reads it every 10 s), and a node started
//! with a different `--reveal-rate` refuses to start (exit 2) saying both.

use crate::audit::{Action, AuditError, AuditEvent, AuditLog, Outcome};
use crate::limiter::RevealRate;
use crate::store::{Store, StoreError, Write};

/// Meta: the reveal rate every node of a shared store uses (`10/min`).
pub(crate) const META_REVEAL_RATE: &[u8] = b"reveal_rate";

/// The stored reveal rate, if one is stored.
pub(crate) fn stored_reveal_rate(store: &Store) -> Result<Option<RevealRate>, StoreError> {
    let Some(v) = store.meta_value(META_REVEAL_RATE)? else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&v).map_err(|_| StoreError::Corrupt {
        what: "reveal rate",
        detail: "not text".into(),
    })?;
    text.parse().map(Some).map_err(|_| StoreError::Corrupt {
        what: "reveal rate",
        detail: "not N/s, N/min or N/h".into(),
    })
}

/// The stored reveal rate, only if the signed chain head vouches for it
/// (a running node reads it again every 10 s, and a value written into
/// the database behind keyhold's back must not take effect): `Ok(None)`
/// when none is stored or the head's state digest does not hold this
/// value (a change racing the read shows as that too: read again later).
pub(crate) fn vouched_reveal_rate(store: &Store) -> Result<Option<RevealRate>, AuditError> {
    let Some(raw) = store.meta_value(META_REVEAL_RATE)? else {
        return Ok(None);
    };
    let Some(rate) = stored_reveal_rate(store)? else {
        return Ok(None);
    };
    let keys = store.record_keys().ok_or(StoreError::Locked)?;
    let Some(head) = crate::audit::Head::load(store)? else {
        return Ok(None);
    };
    let Ok(Some(digest)) = head.state(&keys) else {
        return Ok(None);
    };
    Ok(digest
        .meta_is(&keys, META_REVEAL_RATE, &raw)
        .then_some(rate))
}

/// Stores `rate` as the reveal rate, with an audit record (caller `who`)
/// saying what it was. Returns the rate it replaced.
pub(crate) fn set_reveal_rate(
    log: &AuditLog,
    rate: RevealRate,
    who: &str,
) -> Result<Option<RevealRate>, AuditError> {
    let was = stored_reveal_rate(log.store())?;
    let mut ev = AuditEvent::cli(
        Action::Settings,
        Outcome::Success,
        Some(match was {
            Some(w) => format!("reveal rate set to {rate} (was {w})"),
            None => format!("reveal rate set to {rate}"),
        }),
    );
    ev.caller = who.into();
    log.append(&[(
        ev,
        vec![Write::Meta {
            name: META_REVEAL_RATE,
            value: Some(rate.to_string().into_bytes()),
        }],
    )])?;
    Ok(was)
}
