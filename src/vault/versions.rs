//! A key's versions over time: a new version stored (`PUT`), versions
//! pushed past the cap of kept versions entering the recovery window (an
//! admin restores them; housekeeping destroys them when the window ends),
//! and their listing. Only an admin's purge, or the end of the window,
//! destroys a version.

use std::num::NonZeroU32;

use super::{Conflict, Missing, Origin, Refusal, Removed, Vault};
use crate::access::Caller;
use crate::audit::{Action, Outcome};
use crate::store::{DroppedVersion, KeyRecord, KeyVersion, Write};
use crate::time::now_us;
use uuid::Uuid;

use super::keys::{expiry, NewVersion};

/// The most versions one key holds in the recovery window.
const MAX_DROPPED: usize = 1000;
/// The most ciphertext one key holds in the recovery window, in bytes
/// (with at most 100 kept versions of 16 KiB, a record stays far below a
/// backup entry's 16 MiB, and a new version rewrites at most ~3 MiB).
const MAX_DROPPED_BYTES: usize = 1024 * 1024;

impl Vault<'_> {
    /// Stores a new version of a key (`PUT /api/keys/{id}`, keys:write):
    /// same id, provider and name; the current version becomes an older
    /// one; beyond `keep` versions the oldest enter the recovery window
    /// (named in the audit record's detail): not revealable, restorable by
    /// an admin, destroyed when the window ends. Only an admin's purge, or
    /// the end of the window, destroys a version.
    pub(crate) async fn put_version(
        &self,
        origin: &Origin,
        caller: &Caller,
        id: &str,
        new: NewVersion,
        keep: NonZeroU32,
        window_us: i64,
    ) -> Result<KeyRecord, Refusal> {
        self.recorded(origin, Some(caller), Action::KeyPut, new.check())
            .await?;
        let _one = self.key_lock().await?;
        let (mut ev, rec) = self
            .load_live_for_change(origin, caller, id, Action::KeyPut)
            .await?;
        // The recovery window of one key is bounded (MAX_DROPPED versions,
        // MAX_DROPPED_BYTES of ciphertext), so a flood of new versions
        // cannot grow a record without bound, nor destroy any (that is an
        // admin's). Hourly rotation of a typical key over the default
        // 7-day window puts about 170 versions of ~200 bytes there.
        let held = rec.older.len() + rec.dropped.len() + 1;
        let bytes: usize = rec.dropped.iter().map(|d| d.version.token.len()).sum();
        let moves = rec.older.len() + 2 > keep.get() as usize;
        if moves && (rec.dropped.len() >= MAX_DROPPED || bytes >= MAX_DROPPED_BYTES) {
            ev.detail = Some(format!("{held} versions held ({bytes} bytes)"));
            let until_us = rec
                .dropped
                .iter()
                .map(|d| d.dropped_at_us)
                .min()
                .map(|at| at.saturating_add(window_us));
            let refusal = Refusal::Conflict(Conflict::RecoveryWindowFull {
                held,
                kept: rec.older.len() + 1,
                in_window: rec.dropped.len(),
                bytes,
                until_us,
            });
            return Err(self.refuse(origin, ev, refusal).await);
        }
        let now = now_us();
        let expires_at_us = match expiry(now, new.ttl_seconds) {
            Ok(e) => e,
            Err(r) => return Err(self.refuse(origin, ev, r).await),
        };
        let mut next = rec.clone();
        next.older.push(KeyVersion {
            number: rec.version,
            token: rec.token,
            created_at_us: rec.version_created_at_us,
            created_by: rec.created_by,
            expires_at_us: rec.expires_at_us,
        });
        next.version = rec.version.saturating_add(1);
        next.token = self.keyring.encrypt(new.api_key.expose().as_bytes());
        drop(new.api_key);
        next.version_created_at_us = now;
        next.created_by = Some(caller.name.clone());
        next.expires_at_us = expires_at_us;
        let keep = keep.get() as usize;
        let excess = (next.older.len() + 1).saturating_sub(keep);
        let dropped: Vec<KeyVersion> = next.older.drain(..excess).collect();
        let numbers = numbers(dropped.iter().map(|v| v.number));
        next.dropped
            .extend(dropped.into_iter().map(|version| DroppedVersion {
                version,
                dropped_at_us: now,
            }));
        ev.outcome = Outcome::Success;
        ev.detail = Some(if numbers.is_empty() {
            format!("version {} stored", next.version)
        } else {
            format!(
                "version {} stored; version(s) {numbers} moved to the recovery window (keeping \
                 {keep}; an admin can restore them until it ends)",
                next.version
            )
        });
        self.record(ev, vec![Write::PutKey(next.clone())]).await?;
        Ok(next)
    }

    /// Puts version `n` of a key back from the recovery window among its
    /// kept versions (`POST /api/keys/{id}/versions/{n}/restore`, admin).
    pub(crate) async fn restore_version(
        &self,
        origin: &Origin,
        caller: &Caller,
        id: &str,
        n: u32,
        window_us: i64,
    ) -> Result<KeyRecord, Refusal> {
        let _one = self.key_lock().await?;
        let (mut ev, mut rec) = self
            .load_for_change(origin, caller, id, Action::KeyRestore)
            .await?;
        if rec.deleted_at_us.is_some() {
            return Err(self
                .refuse(origin, ev, Refusal::Deleted(Removed::Key))
                .await);
        }
        let Some(i) = rec.dropped.iter().position(|d| d.version.number == n) else {
            ev.detail = Some(format!("version {n} is not in the recovery window"));
            let refusal = Refusal::NotFound(Missing::VersionNotInRecoveryWindow { version: n });
            return Err(self.refuse(origin, ev, refusal).await);
        };
        if rec.dropped[i].dropped_at_us.saturating_add(window_us) <= now_us() {
            ev.detail = Some(format!("version {n}: its recovery window has ended"));
            let refusal = Refusal::Deleted(Removed::VersionPastRecovery { version: n });
            return Err(self.refuse(origin, ev, refusal).await);
        }
        let back = rec.dropped.remove(i).version;
        rec.older.push(back);
        rec.older.sort_by_key(|v| v.number);
        ev.outcome = Outcome::Success;
        ev.detail = Some(format!("version {n} restored from the recovery window"));
        self.record(ev, vec![Write::PutKey(rec.clone())]).await?;
        Ok(rec)
    }

    /// Destroys the versions in the recovery window of the keys `due`
    /// (from [`Vault::key_upkeep`]) whose window (`window_us`) has ended,
    /// each key's in one record audited `key_purge` (caller
    /// `housekeeping`). Returns how many versions were destroyed.
    pub(crate) async fn purge_dropped(
        &self,
        due: Vec<KeyRecord>,
        window_us: i64,
    ) -> Result<usize, Refusal> {
        let mut n = 0;
        for rec in due {
            let _one = self.key_lock().await?;
            // Read again under the lock: a restore or a new version may
            // have changed it.
            let Ok(Some(mut cur)) = self.store.get_key(&rec.id) else {
                continue;
            };
            let now = now_us();
            let (ended, kept): (Vec<_>, Vec<_>) = cur
                .dropped
                .drain(..)
                .partition(|d| d.dropped_at_us.saturating_add(window_us) <= now);
            cur.dropped = kept;
            if ended.is_empty() {
                continue;
            }
            let ev = self.housekeeping_purge(
                &cur,
                format!(
                    "recovery window ended: version(s) {} destroyed",
                    numbers(ended.iter().map(|d| d.version.number))
                ),
            );
            self.record(ev, vec![Write::PutKey(cur)]).await?;
            self.store.mark_scrub_due();
            n += ended.len();
        }
        Ok(n)
    }

    /// The versions of a key, oldest first (keys:list; the provider limit
    /// answers like a missing key). Not audited when found (no secret
    /// leaves); a refusal is recorded under `key_list`.
    pub(crate) async fn key_versions(
        &self,
        origin: &Origin,
        caller: &Caller,
        id: &str,
    ) -> Result<KeyRecord, Refusal> {
        let found = match Uuid::parse_str(id) {
            Err(_) => Err(Refusal::NotFound(Missing::Key)),
            Ok(id) => match self.store.get_key(&id).map_err(Refusal::of_store) {
                Ok(Some(rec)) if caller.may_use_provider(&rec.provider) => Ok(rec),
                Ok(Some(_)) => Err(Refusal::Beyond(Missing::Key)),
                Ok(None) => Err(Refusal::NotFound(Missing::Key)),
                Err(r) => Err(r),
            },
        };
        self.recorded(origin, Some(caller), Action::KeyList, found)
            .await
    }
}

/// Version numbers as the audit details write them: `1, 2, 3`.
fn numbers(n: impl Iterator<Item = u32>) -> String {
    n.map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
}
