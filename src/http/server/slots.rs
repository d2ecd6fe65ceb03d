//! Room under pressure (issue 24, point 1): at the connection cap, the
//! server makes room for a new connection by closing one that sits idle
//! between requests, chosen from the client address (IPv4, IPv6 /64) that
//! holds the most connections, the one idle longest. Closing is graceful
//! (HTTP/2 gets a GOAWAY; an idle HTTP/1 connection just ends), and a
//! connection at work is never chosen. Only when nothing can be closed is
//! the new connection refused.
//!
//! Metrics (no per-address labels): `keyhold_connections` (held),
//! `keyhold_connections_evicted_total` (closed to make room) and
//! `keyhold_connections_refused_total{reason="per_address"|"total"}`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// A connection must have been idle this long to be closed to make room
/// (one that was just answered may be sending its next request).
pub(super) const MIN_IDLE: Duration = Duration::from_millis(200);

/// How long an idle connection has been idle, or `None` while it is at
/// work or already closing.
pub(super) type IdleProbe = Box<dyn Fn() -> Option<Duration> + Send + Sync>;

struct Entry {
    /// The client's address as the per-address cap counts it (`None`: a
    /// Unix-socket peer or a trusted proxy, never chosen).
    key: Option<IpAddr>,
    idle: IdleProbe,
    evict: Arc<Notify>,
    asked: bool,
}

/// Every open connection that could be closed to make room.
#[derive(Default)]
pub(super) struct Slots {
    next: AtomicU64,
    conns: Mutex<HashMap<u64, Entry>>,
}

/// A connection's place in [`Slots`], given up when dropped.
pub(super) struct Registered {
    slots: Arc<Slots>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.slots.lock().remove(&self.id);
    }
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        match self.conns.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Registers a connection; `evict` is notified when it is chosen.
    pub(super) fn register(
        self: &Arc<Self>,
        key: Option<IpAddr>,
        idle: IdleProbe,
        evict: Arc<Notify>,
    ) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Entry {
                key,
                idle,
                evict,
                asked: false,
            },
        );
        Registered {
            slots: self.clone(),
            id,
        }
    }

    /// Asks one idle connection to close: of the address holding the most
    /// connections, the one idle longest. Returns whether one was asked.
    pub(super) fn evict_one(&self) -> bool {
        let mut conns = self.lock();
        let mut held: HashMap<IpAddr, usize> = HashMap::new();
        for e in conns.values() {
            if let (Some(k), false) = (e.key, e.asked) {
                *held.entry(k).or_insert(0) += 1;
            }
        }
        let victim = conns
            .iter()
            .filter(|(_, e)| !e.asked)
            .filter_map(|(id, e)| {
                let key = e.key?;
                let idle = (e.idle)().filter(|d| *d >= MIN_IDLE)?;
                Some(((held.get(&key).copied().unwrap_or(0), idle), *id))
            })
            .max_by_key(|(rank, _)| *rank)
            .map(|(_, id)| id);
        match victim.and_then(|id| conns.get_mut(&id)) {
            Some(e) => {
                e.asked = true;
                e.evict.notify_one();
                metrics::counter!("keyhold_connections_evicted_total").increment(1);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle_for(secs: u64) -> IdleProbe {
        Box::new(move || Some(Duration::from_secs(secs)))
    }

    #[test]
    fn the_address_holding_most_loses_its_longest_idle_connection() {
        let slots = Arc::new(Slots::default());
        let a: IpAddr = "127.0.0.10".parse().unwrap();
        let b: IpAddr = "127.0.0.11".parse().unwrap();
        let n: Vec<Arc<Notify>> = (0..5).map(|_| Arc::new(Notify::new())).collect();
        let _r = [
            slots.register(Some(a), idle_for(5), n[0].clone()),
            slots.register(Some(a), idle_for(9), n[1].clone()),
            slots.register(Some(a), Box::new(|| None), n[2].clone()),
            // Idle longest, but its address holds fewer.
            slots.register(Some(b), idle_for(60), n[3].clone()),
            // Never chosen: a Unix-socket peer or a trusted proxy.
            slots.register(None, idle_for(99), n[4].clone()),
        ];
        assert!(slots.evict_one());
        let asked: Vec<bool> = {
            let c = slots.lock();
            let mut v: Vec<(u64, bool)> = c.iter().map(|(id, e)| (*id, e.asked)).collect();
            v.sort();
            v.into_iter().map(|(_, a)| a).collect()
        };
        assert_eq!(asked, [false, true, false, false, false]);
        // Then a's other idle one, then b's (a now holds 2 unasked, b 1).
        assert!(slots.evict_one());
        assert!(slots.evict_one());
        // Nothing idle is left: at work, or never chosen.
        assert!(!slots.evict_one());
    }
}
