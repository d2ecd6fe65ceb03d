//! Keys as the API presents them: a key's metadata (for a deleted key,
//! when it will be destroyed) and its versions, each with its state; who
//! stored each version shown only to callers who may see token names.
//!
//! Not for: the JSON's shape (see `crate::wire`) or HTTP.

use crate::access::{Caller, Scope};
use crate::store::KeyRecord;
use crate::time::to_rfc3339;
use crate::wire::{KeyMeta, VersionMeta};

use super::KeyPolicy;

/// Key metadata as answered: for a deleted key, when it will be
/// destroyed too.
pub(super) fn key_meta(rec: &KeyRecord, last_used: Option<i64>, policy: &KeyPolicy) -> KeyMeta {
    KeyMeta {
        id: rec.id.to_string(),
        provider: rec.provider.clone(),
        key_name: rec.key_name.clone(),
        created_at: to_rfc3339(rec.created_at_us),
        last_used: last_used.map(to_rfc3339),
        expires_at: rec.expires_at_us.map(to_rfc3339),
        version: rec.version,
        deleted_at: rec.deleted_at_us.map(to_rfc3339),
        purge_at: rec
            .deleted_at_us
            .map(|d| to_rfc3339(d.saturating_add(policy.recovery_window_us))),
    }
}

/// Every version of a key, oldest first, each with its state.
pub(super) fn versions_of(rec: &KeyRecord, window_us: i64) -> Vec<VersionMeta> {
    let now = crate::time::now_us();
    let state = |expires: Option<i64>, current: bool| {
        if rec.deleted_at_us.is_some() {
            "deleted"
        } else if expires.is_some_and(|e| e <= now) {
            "expired"
        } else if current {
            "current"
        } else {
            "previous"
        }
    };
    let dropped = rec.dropped.iter().map(|d| VersionMeta {
        version: d.version.number,
        created_at: to_rfc3339(d.version.created_at_us),
        created_by: d.version.created_by.clone(),
        expires_at: d.version.expires_at_us.map(to_rfc3339),
        state: if rec.deleted_at_us.is_some() {
            "deleted".into()
        } else {
            "recovery".into()
        },
        restorable_until: Some(to_rfc3339(d.dropped_at_us.saturating_add(window_us))),
    });
    let mut out: Vec<VersionMeta> = dropped
        .chain(rec.older.iter().map(|v| VersionMeta {
            version: v.number,
            created_at: to_rfc3339(v.created_at_us),
            created_by: v.created_by.clone(),
            expires_at: v.expires_at_us.map(to_rfc3339),
            state: state(v.expires_at_us, false).into(),
            restorable_until: None,
        }))
        .collect();
    out.push(VersionMeta {
        version: rec.version,
        created_at: to_rfc3339(rec.version_created_at_us),
        created_by: rec.created_by.clone(),
        expires_at: rec.expires_at_us.map(to_rfc3339),
        state: state(rec.expires_at_us, true).into(),
        restorable_until: None,
    });
    out.sort_by_key(|v| v.version);
    out
}

/// [`versions_of`], with who stored each version left out unless `caller`
/// may see token names anyway (admins, auditors; the operator offline).
pub(super) fn versions_for(
    rec: &KeyRecord,
    window_us: i64,
    caller: Option<&Caller>,
) -> Vec<VersionMeta> {
    let mut out = versions_of(rec, window_us);
    if caller.is_some_and(|c| !c.has(Scope::Admin) && !c.has(Scope::AuditRead)) {
        for v in &mut out {
            v.created_by = None;
        }
    }
    out
}
