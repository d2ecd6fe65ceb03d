//! The server core's background work: every second, the coalesced
//! attempts written and the storage probed (a shared database) or brought
//! back after a disk error (sled); every 30 s, the limiter and the
//! coalescer pruned; every key-upkeep period, deleted keys and versions
//! whose recovery window ended destroyed, expiry gauges set and lapsing
//! keys warned of; every minute, the chain's head logged as an off-box
//! anchor.
//!
//! Not for: what a request does (see `core.rs` and the vault's rules).

use std::sync::Arc;
use std::time::Duration;

use super::core::Core;
use super::notes::{Anchors, NoteWords};
use crate::audit::{AuditError, AuditEvent};

/// Called with the change in the number of keys when upkeep destroys some.
pub(crate) type KeysChanged = Arc<dyn Fn(i64) + Send + Sync>;

impl Core {
    /// Logs the operator's notes (lapsing keys, anchors) in `words` (set
    /// once; later calls are ignored).
    pub(crate) fn word_notes(&self, words: NoteWords) {
        self.anchors().set_words(words);
    }

    /// Starts the background work (see the module's documentation); a
    /// key-upkeep pass every `key_upkeep_every`.
    pub(crate) fn spawn_upkeep(
        self: &Arc<Self>,
        key_upkeep_every: Duration,
        keys_changed: KeysChanged,
    ) {
        spawn_storage_watch(self.clone());
        spawn_key_upkeep(self.clone(), key_upkeep_every, keys_changed);
        let core = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                let core = core.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    core.limiter().prune();
                    core.coalescer().prune();
                })
                .await;
            }
        });
        let core = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                // Submitted together, so they share one fsync; a record that
                // cannot be written is put back and counted again later.
                let due = core.coalescer().drain(crate::time::now_us(), false);
                let writes = due.into_iter().map(|d| {
                    let core = core.clone();
                    async move {
                        if !write_pending(&core, d.event.clone()).await {
                            core.coalescer().restore(d);
                        }
                    }
                });
                futures_util::future::join_all(writes).await;
            }
        });
        // A head that moved since the last anchor is anchored within a
        // minute even if no further batch comes.
        let core = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Anchors::EVERY);
            loop {
                tick.tick().await;
                let (seq, mac) = core.audit_head();
                core.anchors().offer(seq, &mac, core.public_key());
            }
        });
    }
}

/// Every second: a shared database is probed (so `/healthz` says when it
/// is gone even without traffic, and service resumes by itself when it
/// answers again), and every 10 s this node learns the other nodes'
/// changes and the cluster's reveal rate; sled, failing, is reopened.
fn spawn_storage_watch(core: Arc<Core>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut ticks: u64 = 0;
        loop {
            tick.tick().await;
            let (store, audit) = (core.store().clone(), core.audit());
            if store.node().is_some() {
                let probe = store.clone();
                let res = tokio::task::spawn_blocking(move || probe.ping())
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                if res.is_ok() && !audit.is_healthy() {
                    tracing::info!("the database answers again");
                }
                let up = res.is_ok();
                audit.probed(res);
                ticks = ticks.wrapping_add(1);
                if up && ticks.is_multiple_of(10) {
                    // Never lag behind the pruning of the change rows.
                    let s = store.clone();
                    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.keep_up()).await {
                        tracing::warn!(error = %e, "could not learn other nodes' changes");
                    }
                    // The cluster's reveal rate, if an admin changed it.
                    let stored = tokio::task::spawn_blocking(move || {
                        crate::ops::settings::vouched_reveal_rate(&store)
                    })
                    .await;
                    if let Ok(Ok(Some(rate))) = stored {
                        if core.limiter().set_rate(rate) {
                            tracing::info!(reveal_rate = %rate, "the cluster's reveal rate changed; in force");
                        }
                    }
                }
                continue;
            }
            if audit.is_healthy() {
                continue;
            }
            // sled keeps returning an IO error (a full or failing disk)
            // until the database is opened again: reopen it, so service
            // resumes by itself once the disk recovers.
            let log = audit.log().clone();
            match tokio::task::spawn_blocking(move || log.recover()).await {
                Ok(Ok(true)) => tracing::info!("storage reopened"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "storage still failing"),
                Err(_) => {}
            }
        }
    });
}

/// Writes a coalesced record counted in memory; false when it failed and
/// should be kept for later (a write whose fate is unknown may still land:
/// it is not kept, so it is never counted twice).
async fn write_pending(core: &Core, event: AuditEvent) -> bool {
    match core.audit().record(event, vec![]).await {
        Ok(_) => true,
        Err(AuditError::Unknown) => {
            tracing::error!("a coalesced audit record is still being written");
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "could not write a coalesced audit record; kept for later");
            false
        }
    }
}

/// Keys over time: destroys deleted keys whose recovery window ended
/// (audited `key_purge`), sets the expiry gauges, and warns in the log
/// once a day for each key that lapses within 7 days; a pass `every`.
fn spawn_key_upkeep(core: Arc<Core>, every: Duration, keys_changed: KeysChanged) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        // A pass slower than the period (a huge store) is not followed by
        // a burst of catch-up passes.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut warned: std::collections::HashMap<uuid::Uuid, i64> = Default::default();
        loop {
            tick.tick().await;
            let c = core.clone();
            let window = core.key_policy().recovery_window_us;
            let Ok(up) = tokio::task::spawn_blocking(move || c.vault().key_upkeep(window)).await
            else {
                continue;
            };
            for (i, days) in super::EXPIRING_WITHIN_DAYS.iter().enumerate() {
                let within = format!("{days}d");
                metrics::gauge!("keyhold_keys_expiring", "within" => within)
                    .set(up.expiring[i] as f64);
            }
            metrics::gauge!("keyhold_keys_expired").set(up.expired as f64);
            let today = crate::time::now_us() / (86_400 * 1_000_000);
            warned.retain(|_, day| *day == today);
            for (id, provider, name, exp) in &up.soon {
                if warned.insert(*id, today).is_none() {
                    tracing::warn!(
                        key_id = %id,
                        provider = %provider,
                        key_name = %name,
                        expires_at = %crate::time::to_rfc3339(*exp),
                        "{}",
                        core.anchors().words().key_expiring
                    );
                }
            }
            if !up.due.is_empty() {
                match core.vault().purge_deleted(up.due).await {
                    Ok(0) => {}
                    Ok(n) => {
                        keys_changed(-(n as i64));
                        tracing::info!(
                            purged = n,
                            "destroyed deleted keys whose recovery window ended"
                        );
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not destroy deleted keys yet; retried later")
                    }
                }
            }
            if !up.versions_due.is_empty() {
                match core.vault().purge_dropped(up.versions_due, window).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        purged = n,
                        "destroyed key versions whose recovery window ended"
                    ),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "could not destroy key versions yet; retried later"
                    ),
                }
            }
            core.scrub_removed().await;
        }
    });
}
