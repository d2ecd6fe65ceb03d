//! The store's check: is everything in the store readable by this keyring,
//! does anything still need an older key, and does the audit chain verify.

use serde::Serialize;
use uuid::Uuid;

use crate::audit::{verify_store, AuditKeys, VerifyReport, MAC_KEY_PURPOSE, SIGNING_PURPOSE};
use crate::keyring::Keyring;
use crate::store::{
    Store, StoreError, META_AUDIT_KEY, META_RECORD_SECRET, META_SIGNING_KEY, RECORD_SECRET_PURPOSE,
};

/// The findings of a check.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CheckReport {
    /// A key of the keyring opens the check value.
    pub keyring_opens_store: bool,
    pub keys_total: u64,
    pub keys_ok: u64,
    /// Keys no key of the keyring opens.
    pub keys_failed: Vec<Uuid>,
    /// Records that failed their integrity check (planted, edited or
    /// moved outside keyhold): key ids, or `token records`.
    pub tampered: Vec<String>,
    /// Records (keys and meta values) still under an older key of the
    /// keyring: a rotation must move them before that key is retired.
    pub on_older_key: u64,
    /// The audit chain, or `None` when the MAC key could not be opened.
    pub audit: Option<VerifyReport>,
    /// How the store differs from the state its signed chain head holds
    /// (empty: it does not).
    pub state: Vec<String>,
    /// The records found to be older copies (or back after a purge), by
    /// what the signed log says of them.
    pub stale: Vec<String>,
    /// A rotation stopped before every record was authenticated under its
    /// new record MAC secret (a rotation run again finishes it).
    pub rotation_unfinished: bool,
    /// Keys whose names the API would refuse today (control or Unicode
    /// format characters, not NFC), stored before the rule: a warning, not
    /// a failure (they can look like another key's name in listings).
    pub key_names: Vec<String>,
}

impl CheckReport {
    pub(crate) fn all_well(&self) -> bool {
        self.keyring_opens_store
            && self.keys_failed.is_empty()
            && self.tampered.is_empty()
            && self.on_older_key == 0
            && self.audit.as_ref().is_some_and(VerifyReport::is_ok)
            && self.state.is_empty()
            && !self.rotation_unfinished
    }
}

/// Runs every check. The caller has tried `crate::unlock::unlock`; when
/// the keyring did not open the store, only that is reported. `state` is
/// what the check at open found of the state commitment (empty: the store
/// matches it), so the store is not walked for it twice.
pub(crate) fn check(
    store: &Store,
    keyring: &Keyring,
    state: Vec<String>,
) -> Result<CheckReport, StoreError> {
    let mut on_older_key = 0;
    let check = store.check_value()?;
    let opened = check.as_deref().and_then(|c| keyring.opens_check(c));
    let keyring_opens_store = opened.is_some() && store.record_keys().is_some();
    if !keyring_opens_store {
        return Ok(CheckReport {
            keyring_opens_store,
            keys_total: 0,
            keys_ok: 0,
            keys_failed: Vec::new(),
            tampered: Vec::new(),
            on_older_key: 0,
            audit: None,
            state: Vec::new(),
            stale: Vec::new(),
            rotation_unfinished: false,
            key_names: Vec::new(),
        });
    }
    if opened.is_some_and(|i| i > 0) {
        on_older_key += 1;
    }
    for (name, purpose) in [
        (META_RECORD_SECRET, RECORD_SECRET_PURPOSE),
        (META_SIGNING_KEY, SIGNING_PURPOSE),
        (META_AUDIT_KEY, MAC_KEY_PURPOSE),
        (
            crate::store::META_RECORD_MAC_SECRET,
            crate::store::RECORD_MAC_PURPOSE,
        ),
        (
            crate::store::META_RECORD_MAC_NEXT,
            crate::store::RECORD_MAC_PURPOSE,
        ),
    ] {
        if let Some(v) = store.meta_string(name)? {
            if keyring.unseal(purpose, &v).is_ok_and(|o| o.key_index > 0) {
                on_older_key += 1;
            }
        }
    }
    let (mut total, mut ok, mut failed, mut tampered) = (0, 0, Vec::new(), Vec::new());
    let mut key_names = Vec::new();
    for item in store.iter_keys() {
        let rec = match item {
            Ok((rec, _)) => rec,
            Err(StoreError::Tampered { id, .. }) => {
                total += 1;
                tampered.push(format!("key {id}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        total += 1;
        if let Some(why) = crate::access::key_name_problem(&rec.key_name) {
            // Escaped, so that the listing itself spoofs nothing.
            key_names.push(format!(
                "key {} ({}) `{}`: the name {why}",
                rec.id,
                rec.provider,
                rec.key_name.escape_default()
            ));
        }
        // Every kept version must open; the record counts once.
        let opened: Result<Vec<_>, _> = rec.tokens().map(|t| keyring.decrypt(t)).collect();
        match opened {
            Ok(all) => {
                ok += 1;
                if all.iter().any(|o| o.key_index > 0) {
                    on_older_key += 1;
                }
            }
            Err(_) => failed.push(rec.id),
        }
    }
    match store.list_tokens() {
        Ok(_) => {}
        Err(StoreError::Tampered { id, .. }) => tampered.push(format!("token record {id}")),
        Err(e) => return Err(e),
    }
    let audit = match AuditKeys::unseal(store, keyring) {
        Ok(keys) => Some(verify_store(store, &keys.verify_keys())?),
        Err(_) => None,
    };
    let stale = if state.is_empty() {
        Vec::new()
    } else {
        stale_records(store)?
    };
    Ok(CheckReport {
        keyring_opens_store,
        keys_total: total,
        keys_ok: ok,
        keys_failed: failed,
        tampered,
        on_older_key,
        audit,
        state,
        stale,
        rotation_unfinished: store
            .meta_value(crate::store::META_RECORD_MAC_NEXT)?
            .is_some(),
        key_names,
    })
}

/// The records whose stamp is older than the newest record of the signed
/// log that changed them, or that are back after the log recorded their
/// purge. Keys are named by `key_id`; tokens by the ids their records'
/// details name.
fn stale_records(store: &Store) -> Result<Vec<String>, StoreError> {
    use crate::audit::{Action, AuditRecord, Outcome};
    use std::collections::HashMap;
    let mut keys: HashMap<Uuid, (u64, Action)> = HashMap::new();
    let mut tokens: HashMap<Uuid, u64> = HashMap::new();
    // Records written before schema 5 carry stamp 0: only a change the
    // log records after the upgrade to 5 tells an older copy of one.
    let mut stamps_from = 0u64;
    for item in store.audit_iter(0) {
        let (seq, bytes) = item?;
        let Ok(rec) = AuditRecord::decode(&bytes) else {
            continue;
        };
        let e = &rec.event;
        if e.outcome != Outcome::Success {
            continue;
        }
        if e.action == Action::Upgrade
            && e.detail
                .as_deref()
                .is_some_and(|d| d.starts_with("upgrade to schema 5"))
        {
            stamps_from = seq;
        }
        match e.action {
            Action::KeyCreate
            | Action::KeyPut
            | Action::KeyDelete
            | Action::KeyRestore
            | Action::KeyPurge => {
                if let Some(id) = e.key_id {
                    keys.insert(id, (seq, e.action));
                }
            }
            Action::TokenCreate | Action::TokenRevoke | Action::TokenRotate => {
                for word in e.detail.as_deref().unwrap_or("").split_whitespace() {
                    let word = word.trim_matches(|c: char| !c.is_ascii_hexdigit() && c != '-');
                    if let Ok(id) = Uuid::parse_str(word) {
                        tokens.insert(id, seq);
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for item in store.iter_keys() {
        let Ok((rec, _)) = item else { continue };
        match keys.get(&rec.id) {
            Some((seq, Action::KeyPurge)) => out.push(format!(
                "key {}: purged at seq {seq}, but its record is back",
                rec.id
            )),
            Some((seq, _)) if rec.stamp < *seq && (rec.stamp > 0 || *seq > stamps_from) => out
                .push(format!(
                    "key {}: the record was written at seq {} but seq {seq} changed it since",
                    rec.id, rec.stamp
                )),
            _ => {}
        }
    }
    if let Ok(list) = store.list_tokens() {
        for (_, rec) in list {
            if let Some(seq) = tokens.get(&rec.id) {
                if rec.stamp < *seq && (rec.stamp > 0 || *seq > stamps_from) {
                    out.push(format!(
                        "token {} `{}`: the record was written at seq {} but seq {seq} changed it \
                         since",
                        rec.id, rec.name, rec.stamp
                    ));
                }
            }
        }
    }
    Ok(out)
}
