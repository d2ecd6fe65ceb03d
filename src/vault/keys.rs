//! Storing and deleting API keys: the field rules, the provider limit, and
//! the audit record each change lands with; and keys over time: versions,
//! soft deletion, restore, purge, and the housekeeping pass.
//!
//! Over 500 lines: every change to a key record (create, new version,
//! delete, restore, purge) shares one way of loading, refusing and
//! recording, and one lock; keeping them together keeps those rules in
//! one place.

use std::num::NonZeroU32;

use uuid::Uuid;

use super::{Conflict, Denied, Invalid, Missing, Origin, Refusal, Removed, Tampered, Vault};
use crate::access::{valid_provider, Caller, Scope};
use crate::audit::{Action, AuditEvent, Outcome};
use crate::duration::MAX_TTL_SECONDS;
use crate::secret::SecretString;
use crate::store::{Guarded, KeyRecord, Write, WriteLock};
use crate::time::now_us;

/// Largest API key accepted.
pub(crate) const MAX_API_KEY: usize = 16 * 1024;

/// A key to store, as the caller gave it (checked by [`Vault::create_key`]).
#[derive(Debug)]
pub(crate) struct NewKey {
    pub provider: String,
    pub key_name: String,
    pub api_key: SecretString,
    pub ttl_seconds: Option<i64>,
}

/// How long a scrub waits for the store's operations in flight.
const SCRUB_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl NewKey {
    /// The field rules of the API, each failure naming its field.
    fn check(&self) -> Result<(), Refusal> {
        if !valid_provider(&self.provider) {
            return Err(Refusal::Invalid(Invalid::Provider));
        }
        if let Some(why) = crate::access::check_key_name(&self.key_name) {
            return Err(Refusal::Invalid(Invalid::KeyName(why)));
        }
        check_api_key(&self.api_key)?;
        check_ttl(self.ttl_seconds)
    }
}

/// Which keys a listing shows.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyFilter {
    /// One provider's keys only.
    pub provider: Option<String>,
    /// Soft-deleted keys instead of live ones.
    pub deleted: bool,
    /// Keys whose current version lapses within this many microseconds
    /// from now (not yet lapsed).
    pub expiring_within_us: Option<i64>,
    /// Keys whose current version has lapsed. With `expiring_within_us`
    /// too: either.
    pub expired: bool,
}

impl KeyFilter {
    fn matches(&self, k: &KeyRecord, now: i64) -> bool {
        if k.deleted_at_us.is_some() != self.deleted {
            return false;
        }
        if self.expiring_within_us.is_none() && !self.expired {
            return true;
        }
        let Some(exp) = k.expires_at_us else {
            return false;
        };
        let lapsed = exp <= now;
        (self.expired && lapsed)
            || self
                .expiring_within_us
                .is_some_and(|w| !lapsed && exp <= now.saturating_add(w))
    }
}

/// The most versions a server may keep of a key: a record holds all of
/// them (each up to 16 KiB), and a backup entry is at most 16 MiB.
pub(crate) const MAX_KEEP_VERSIONS: u32 = 100;
/// How many versions of a key are kept by default.
pub(crate) const DEFAULT_KEEP_VERSIONS: NonZeroU32 = match NonZeroU32::new(10) {
    Some(n) => n,
    None => NonZeroU32::MIN,
};
/// How long a deleted key can be restored by default: 7 days.
pub(crate) const DEFAULT_RECOVERY_WINDOW_SECS: u64 = 7 * 24 * 3600;

const DAY_US: i64 = 86_400 * 1_000_000;
/// The windows of the `keyhold_keys_expiring{within=...}` gauges, in days.
pub(crate) const EXPIRING_WITHIN_DAYS: [i64; 3] = [1, 7, 30];

/// What one housekeeping pass over the keys found.
#[derive(Debug, Default)]
pub(crate) struct Upkeep {
    /// Deleted keys whose recovery window has ended.
    pub due: Vec<KeyRecord>,
    /// Live keys lapsing within 1, 7 and 30 days (not yet lapsed).
    pub expiring: [u64; 3],
    /// Live keys whose current version has lapsed.
    pub expired: u64,
    /// Live keys lapsing within 7 days: id, provider, name, expiry.
    pub soon: Vec<(Uuid, String, String, i64)>,
    /// Live keys holding versions whose recovery window has ended.
    pub versions_due: Vec<KeyRecord>,
}

/// What a server does with keys over time: versions kept, and how long a
/// deleted key can be restored. Made once at start ([`KeyPolicy::new`]
/// refuses what is out of range), so nothing that reads it re-checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyPolicy {
    /// 1 to [`MAX_KEEP_VERSIONS`].
    pub keep_versions: NonZeroU32,
    /// 0 to [`MAX_TTL_SECONDS`], in microseconds.
    pub recovery_window_us: i64,
}

impl Default for KeyPolicy {
    fn default() -> KeyPolicy {
        KeyPolicy {
            keep_versions: DEFAULT_KEEP_VERSIONS,
            recovery_window_us: DEFAULT_RECOVERY_WINDOW_SECS as i64 * 1_000_000,
        }
    }
}

/// A key policy out of range (the edge that took the value names its flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeyPolicyError {
    #[error("{0} versions kept: keep from 1 to {MAX_KEEP_VERSIONS}")]
    KeepVersions(u32),
    #[error("a recovery window of {0} s: at most 10 years ({MAX_TTL_SECONDS} s)")]
    RecoveryWindow(u64),
}

impl KeyPolicy {
    /// Keeps `keep_versions` versions of each key (1 to
    /// [`MAX_KEEP_VERSIONS`]) and deleted keys for `recovery_window_secs`
    /// (at most ten years); refuses anything else.
    pub(crate) fn new(
        keep_versions: u32,
        recovery_window_secs: u64,
    ) -> Result<KeyPolicy, KeyPolicyError> {
        let keep = NonZeroU32::new(keep_versions)
            .filter(|k| k.get() <= MAX_KEEP_VERSIONS)
            .ok_or(KeyPolicyError::KeepVersions(keep_versions))?;
        let secs = i64::try_from(recovery_window_secs)
            .ok()
            .filter(|s| *s <= MAX_TTL_SECONDS)
            .ok_or(KeyPolicyError::RecoveryWindow(recovery_window_secs))?;
        Ok(KeyPolicy {
            keep_versions: keep,
            recovery_window_us: secs * 1_000_000,
        })
    }
}

/// A new version of a key, as the caller gave it.
#[derive(Debug)]
pub(crate) struct NewVersion {
    pub api_key: SecretString,
    pub ttl_seconds: Option<i64>,
}

impl NewVersion {
    pub(super) fn check(&self) -> Result<(), Refusal> {
        check_api_key(&self.api_key)?;
        check_ttl(self.ttl_seconds)
    }
}

fn check_api_key(api_key: &SecretString) -> Result<(), Refusal> {
    let len = api_key.expose().len();
    if len == 0 || len > MAX_API_KEY {
        return Err(Refusal::Invalid(Invalid::ApiKeySize));
    }
    Ok(())
}

fn check_ttl(ttl_seconds: Option<i64>) -> Result<(), Refusal> {
    match ttl_seconds {
        Some(t) if !(1..=MAX_TTL_SECONDS).contains(&t) => Err(ttl_invalid()),
        _ => Ok(()),
    }
}

/// When a version stored at `from_us` with `ttl_seconds` lapses.
pub(super) fn expiry(from_us: i64, ttl_seconds: Option<i64>) -> Result<Option<i64>, Refusal> {
    match ttl_seconds {
        None => Ok(None),
        Some(ttl) => ttl
            .checked_mul(1_000_000)
            .and_then(|d| from_us.checked_add(d))
            .map(Some)
            .ok_or_else(ttl_invalid),
    }
}

/// The refusal of a ttl_seconds out of range.
pub(crate) fn ttl_invalid() -> Refusal {
    Refusal::Invalid(Invalid::KeyTtl)
}

impl Vault<'_> {
    /// Checks that `caller` holds `scope` for `action`, recording a
    /// refusal. Edges call it before they read a request's body.
    pub(crate) async fn require(
        &self,
        origin: &Origin,
        caller: &Caller,
        scope: Scope,
        action: Action,
    ) -> Result<(), Refusal> {
        if caller.has(scope) {
            return Ok(());
        }
        let ev = self.event(origin, action, Some(caller), Outcome::Forbidden);
        Err(self.refuse(origin, ev, Refusal::missing_scope(scope)).await)
    }

    /// Stores a new key (encrypted under the newest key of the keyring),
    /// with its audit record, for a caller that holds `keys:write`.
    pub(crate) async fn create_key(
        &self,
        origin: &Origin,
        caller: &Caller,
        new: NewKey,
    ) -> Result<KeyRecord, Refusal> {
        let action = Action::KeyCreate;
        self.recorded(origin, Some(caller), action, new.check())
            .await?;
        if !caller.may_use_provider(&new.provider) {
            let mut ev = self.event(origin, Action::KeyCreate, Some(caller), Outcome::Forbidden);
            ev.provider = Some(new.provider.clone());
            let refusal = Refusal::Forbidden(Denied::OtherProvider {
                provider: new.provider.clone(),
            });
            return Err(self.refuse(origin, ev, refusal).await);
        }
        let created_at_us = now_us();
        let expires_at_us = self
            .recorded(
                origin,
                Some(caller),
                action,
                expiry(created_at_us, new.ttl_seconds),
            )
            .await?;
        let record = KeyRecord::new(
            Uuid::new_v4(),
            new.provider,
            new.key_name,
            self.keyring.encrypt(new.api_key.expose().as_bytes()),
            created_at_us,
            expires_at_us,
            Some(caller.name.clone()),
        );
        drop(new.api_key);
        let mut ev = self.event(origin, Action::KeyCreate, Some(caller), Outcome::Success);
        ev.key_id = Some(record.id);
        ev.provider = Some(record.provider.clone());
        self.record(ev, vec![Write::PutKey(record.clone())]).await?;
        Ok(record)
    }

    /// Soft-deletes a key (not revealable, restorable within the
    /// recovery window), with its audit record, for a caller that holds
    /// `keys:write`. A key of another provider answers exactly like a
    /// missing one, and so does a key already deleted (both are recorded,
    /// so they take as long).
    pub(crate) async fn delete_key(
        &self,
        origin: &Origin,
        caller: &Caller,
        id: &str,
    ) -> Result<Uuid, Refusal> {
        let _one = self.key_lock().await?;
        let (mut ev, rec) = self
            .load_live_for_change(origin, caller, id, Action::KeyDelete)
            .await?;
        ev.outcome = Outcome::Success;
        let id = rec.id;
        let mut rec = rec;
        rec.deleted_at_us = Some(now_us());
        self.record(ev, vec![Write::PutKey(rec)]).await?;
        Ok(id)
    }

    /// Destroys a key at once, live or deleted, every version of it
    /// (`DELETE /api/keys/{id}?purge=true`, admin): audited `key_purge`.
    pub(crate) async fn purge_key(
        &self,
        origin: &Origin,
        caller: &Caller,
        id: &str,
    ) -> Result<Uuid, Refusal> {
        let _one = self.key_lock().await?;
        let (mut ev, rec) = self
            .load_for_change(origin, caller, id, Action::KeyPurge)
            .await?;
        ev.outcome = Outcome::Success;
        ev.detail = Some(format!(
            "purged by an admin: {} version(s) destroyed",
            rec.older.len() + 1
        ));
        let id = rec.id;
        self.record(ev, vec![Write::DeleteKey(rec)]).await?;
        self.store.mark_scrub_due();
        Ok(id)
    }

    /// Brings back a soft-deleted key within `window_us` of its deletion
    /// (`POST /api/keys/{id}/restore`, keys:write).
    pub(crate) async fn restore_key(
        &self,
        origin: &Origin,
        caller: &Caller,
        id: &str,
        window_us: i64,
    ) -> Result<KeyRecord, Refusal> {
        let _one = self.key_lock().await?;
        let (mut ev, mut rec) = self
            .load_for_change(origin, caller, id, Action::KeyRestore)
            .await?;
        let Some(deleted_at) = rec.deleted_at_us else {
            ev.outcome = Outcome::Forbidden;
            ev.detail = Some("the key is not deleted".into());
            return Err(self
                .refuse(origin, ev, Refusal::Conflict(Conflict::KeyNotDeleted))
                .await);
        };
        if deleted_at.saturating_add(window_us) <= now_us() {
            ev.detail = Some("its recovery window has ended".into());
            return Err(self
                .refuse(origin, ev, Refusal::Deleted(Removed::KeyPastRecovery))
                .await);
        }
        ev.outcome = Outcome::Success;
        rec.deleted_at_us = None;
        self.record(ev, vec![Write::PutKey(rec.clone())]).await?;
        Ok(rec)
    }

    /// One pass over every key for the server's housekeeping: the deleted
    /// keys whose recovery window (`window_us`) has ended, and what the
    /// expiry gauges and warnings need. Blocking (a walk of the store).
    pub(crate) fn key_upkeep(&self, window_us: i64) -> Upkeep {
        let now = now_us();
        let mut up = Upkeep::default();
        for (rec, _) in self.store.iter_keys().filter_map(|item| item.ok()) {
            if let Some(d) = rec.deleted_at_us {
                if d.saturating_add(window_us) <= now {
                    up.due.push(rec);
                }
                continue;
            }
            if rec
                .dropped
                .iter()
                .any(|d| d.dropped_at_us.saturating_add(window_us) <= now)
            {
                up.versions_due.push(rec.clone());
            }
            let Some(exp) = rec.expires_at_us else {
                continue;
            };
            if exp <= now {
                up.expired += 1;
                continue;
            }
            for (i, days) in EXPIRING_WITHIN_DAYS.iter().enumerate() {
                if exp <= now.saturating_add(days * DAY_US) {
                    up.expiring[i] += 1;
                }
            }
            if exp <= now.saturating_add(7 * DAY_US) {
                up.soon.push((rec.id, rec.provider, rec.key_name, exp));
            }
        }
        up
    }

    /// The audit record of housekeeping destroying (part of) `rec`.
    pub(super) fn housekeeping_purge(&self, rec: &KeyRecord, detail: String) -> AuditEvent {
        let origin = Origin::housekeeping();
        let mut ev = self.event(&origin, Action::KeyPurge, None, Outcome::Success);
        ev.caller = "housekeeping".into();
        ev.key_id = Some(rec.id);
        ev.provider = Some(rec.provider.clone());
        ev.detail = Some(detail);
        ev
    }

    /// Destroys the deleted keys `due` (from [`Vault::key_upkeep`]) whose
    /// recovery window has ended, each audited `key_purge` (caller
    /// `housekeeping`). A key restored meanwhile is left alone. Returns
    /// how many were destroyed.
    pub(crate) async fn purge_deleted(&self, due: Vec<KeyRecord>) -> Result<usize, Refusal> {
        let mut n = 0;
        for rec in due {
            let _one = self.key_lock().await?;
            // Read again under the lock: a restore may have won the race.
            match self.store.get_key(&rec.id) {
                Ok(Some(cur)) if cur.deleted_at_us.is_some() && cur == rec => {}
                _ => continue,
            }
            let ev = self.housekeeping_purge(
                &rec,
                format!(
                    "recovery window ended: {} version(s) destroyed",
                    rec.older.len() + 1
                ),
            );
            self.record(ev, vec![Write::DeleteKey(rec)]).await?;
            self.store.mark_scrub_due();
            n += 1;
        }
        Ok(n)
    }

    /// After a purge or versions dropped beyond the cap: rewrites the
    /// store's files so that none holds the destroyed ciphertexts
    /// ([`crate::store::Store::scrub_if_due`]). Returns how long it took and how
    /// long other uses of the store waited, or `None` when nothing was
    /// due. Blocking: call it off the async workers.
    pub(crate) fn scrub_if_due(
        &self,
    ) -> Result<Option<(std::time::Duration, std::time::Duration)>, crate::store::StoreError> {
        let started = std::time::Instant::now();
        Ok(self
            .store
            .scrub_if_due(SCRUB_WAIT)?
            .map(|paused| (started.elapsed(), paused)))
    }

    /// The lock of key changes: a new version, a delete, a restore, a
    /// purge and a rotation's re-encryption each read a record and write
    /// it back, so they are serialised (across nodes on a shared
    /// database too), and none can undo another's change.
    pub(super) async fn key_lock(&self) -> Result<WriteLock, Refusal> {
        self.store
            .write_lock(Guarded::Keys)
            .await
            .map_err(|e| Refusal::storage(&e))
    }

    /// Loads the key a change names, recording a refusal (missing, beyond
    /// the caller's providers, tampered) under `action`.
    pub(super) async fn load_for_change(
        &self,
        origin: &Origin,
        caller: &Caller,
        id: &str,
        action: Action,
    ) -> Result<(AuditEvent, KeyRecord), Refusal> {
        let mut ev = self.event(origin, action, Some(caller), Outcome::NotFound);
        let found = match Uuid::parse_str(id) {
            Ok(id) => {
                ev.key_id = Some(id);
                match self.store.get_key(&id) {
                    Ok(found) => found,
                    Err(e) => return Err(self.refuse(origin, ev, Refusal::of_store(e)).await),
                }
            }
            Err(_) => None,
        };
        let Some(rec) = found else {
            return Err(self
                .refuse(origin, ev, Refusal::NotFound(Missing::Key))
                .await);
        };
        ev.provider = Some(rec.provider.clone());
        if !caller.may_use_provider(&rec.provider) {
            return Err(self.refuse(origin, ev, Refusal::Beyond(Missing::Key)).await);
        }
        Ok((ev, rec))
    }

    /// As [`Vault::load_for_change`], for a change a deleted key refuses
    /// (a new version, a delete): a deleted key is refused, recorded.
    pub(super) async fn load_live_for_change(
        &self,
        origin: &Origin,
        caller: &Caller,
        id: &str,
        action: Action,
    ) -> Result<(AuditEvent, KeyRecord), Refusal> {
        let (ev, rec) = self.load_for_change(origin, caller, id, action).await?;
        if rec.deleted_at_us.is_some() {
            return Err(self
                .refuse(origin, ev, Refusal::Deleted(Removed::Key))
                .await);
        }
        Ok((ev, rec))
    }

    /// The keys a caller with `keys:list` sees (its providers only),
    /// oldest first, each with its last use. A listing refused because a
    /// record failed its integrity check is recorded.
    pub(crate) async fn list_keys(
        &self,
        origin: &Origin,
        caller: &Caller,
        filter: &KeyFilter,
    ) -> Result<Vec<(KeyRecord, Option<i64>)>, Refusal> {
        match self.list_keys_now(caller, filter) {
            Err(r @ Refusal::TamperedRecord(_)) => {
                let mut ev = self.event(origin, Action::KeyList, Some(caller), Outcome::Tampered);
                ev.detail = Some("a stored key record failed its integrity check".into());
                Err(self.refuse(origin, ev, r).await)
            }
            other => {
                self.recorded(origin, Some(caller), Action::KeyList, other)
                    .await
            }
        }
    }

    fn list_keys_now(
        &self,
        caller: &Caller,
        filter: &KeyFilter,
    ) -> Result<Vec<(KeyRecord, Option<i64>)>, Refusal> {
        let provider = filter.provider.as_deref();
        if let Some(p) = provider {
            if !valid_provider(p) {
                return Err(Refusal::Invalid(Invalid::ProviderFilter));
            }
        }
        // Deleted keys are not in the provider index: walk every key and
        // filter by provider instead.
        let walk = if filter.deleted { None } else { provider };
        let keys = self.store.list_keys(walk).map_err(|e| match e {
            crate::store::StoreError::Tampered { .. } => {
                Refusal::TamperedRecord(Tampered::KeyInList)
            }
            e => Refusal::storage(&e),
        })?;
        let mut out = Vec::with_capacity(keys.len());
        let now = now_us();
        for k in keys
            .into_iter()
            .filter(|k| provider.is_none_or(|p| k.provider == p))
            .filter(|k| caller.may_use_provider(&k.provider) && filter.matches(k, now))
        {
            let used = self
                .store
                .last_used(&k.id)
                .map_err(|e| Refusal::storage(&e))?;
            out.push((k, used));
        }
        Ok(out)
    }
}
