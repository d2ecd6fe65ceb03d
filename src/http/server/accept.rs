//! The accept loop: caps open connections (in all, and per client
//! address with IPv6 counted by its /64), makes room at the cap by closing
//! an idle connection (`slots.rs`), hands each connection to its own task
//! (`connection.rs`), and at shutdown stops accepting and waits, up to the
//! grace, for open connections to finish.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::sync::Semaphore;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::bind::Listener;
use super::connection::ConnCtx;
use super::slots::Slots;
use super::Limits;
use crate::http::context::Peer;
use crate::http::observe::{RequestObserver, REFUSED_PER_ADDRESS, REFUSED_TOTAL};
use crate::limiter::TrustedProxies;

/// Counts open connections per client address.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

struct PerIpGuard {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn enter(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<PerIpGuard> {
        let mut m = match self.0.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let n = m.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(PerIpGuard {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for PerIpGuard {
    fn drop(&mut self) {
        let mut m = match self.table.0.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// How long (past the handshake deadline, which frees the slots of silent
/// sockets) a new connection at the cap waits for a slot, and how many
/// may wait at once.
const SLOT_WAIT: Duration = Duration::from_secs(2);
const WAITING_MAX: usize = 64;

/// Serves `routes` on `listener` until `shutdown` resolves, then stops
/// accepting and waits (at most `limits.shutdown_grace`) for open
/// connections to finish.
pub(crate) async fn serve(
    listener: Listener,
    routes: BoxedFilter<(Response,)>,
    limits: Limits,
    exempt: TrustedProxies,
    observer: RequestObserver,
    shutdown: impl Future<Output = ()>,
) {
    // Every connection holds one permit until it ends, so taking them all
    // back means every connection is done.
    let max = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let permits = Arc::new(Semaphore::new(max));
    let per_ip = Arc::new(PerIp::default());
    let slots = Arc::new(Slots::default());
    // New connections waiting for a slot an eviction frees.
    let waiting = Arc::new(AtomicUsize::new(0));
    super::panics::install_hook();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(64)
        .max_header_list_size(64 * 1024);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let accepted_at = tokio::time::Instant::now();
        let (io, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let key = match &peer {
            Peer::Tcp(a) if !exempt.contains(a.ip()) => Some(crate::limiter::network_of(a.ip())),
            _ => None,
        };
        let ip_guard = match key {
            // Counted like the rate limit keys clients: a host holding a
            // whole IPv6 /64 is one client, not 2^64 of them.
            Some(k) => match per_ip.enter(k, limits.max_connections_per_ip) {
                Some(g) => Some(g),
                None => {
                    metrics::counter!("keyhold_connections_refused_total", "reason" => REFUSED_PER_ADDRESS)
                        .increment(1);
                    tracing::debug!(peer = %k, "too many connections from one address; closed");
                    continue;
                }
            },
            None => None,
        };
        // At the cap: make room by closing an idle connection (see
        // `slots`); the new one waits, in its own task so that accepting
        // goes on, for a slot to free (the closed one's, or one whose
        // handshake deadline ends). Too many waiting already: refused.
        let ready = permits.clone().try_acquire_owned().ok();
        if ready.is_none() {
            if waiting.load(Ordering::Relaxed) >= WAITING_MAX {
                metrics::counter!("keyhold_connections_refused_total", "reason" => REFUSED_TOTAL)
                    .increment(1);
                tracing::debug!("at the connection cap with too many waiting; closed");
                continue;
            }
            slots.evict_one();
        }
        let slot_wait = limits.handshake_timeout + SLOT_WAIT;
        let (permits_for, waiting_for) = (permits.clone(), waiting.clone());
        let ctx = ConnCtx {
            routes: routes.clone(),
            builder: builder.clone(),
            observer: observer.clone(),
            stop: stop_rx.clone(),
            tls: listener.tls.clone(),
            limits,
            slots: slots.clone(),
            key,
        };
        tokio::spawn(async move {
            let permit = match ready {
                Some(p) => p,
                None => {
                    waiting_for.fetch_add(1, Ordering::Relaxed);
                    let got = tokio::time::timeout(slot_wait, permits_for.acquire_owned()).await;
                    waiting_for.fetch_sub(1, Ordering::Relaxed);
                    match got {
                        Ok(Ok(p)) => p,
                        _ => {
                            metrics::counter!("keyhold_connections_refused_total", "reason" => REFUSED_TOTAL)
                                .increment(1);
                            return;
                        }
                    }
                }
            };
            metrics::gauge!("keyhold_connections").increment(1.0);
            ctx.run(io, peer, accepted_at).await;
            metrics::gauge!("keyhold_connections").decrement(1.0);
            drop(ip_guard);
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    tokio::select! {
        _ = permits.acquire_many(max as u32) => {}
        _ = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!("shutdown grace period over; closing the remaining connections");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_ip_cap_counts_an_ipv6_64_as_one_client() {
        let table = Arc::new(PerIp::default());
        let key = |ip: &str| crate::limiter::network_of(ip.parse().unwrap());
        let first = table.enter(key("2001:db8:1:2::1"), 2);
        let second = table.enter(key("2001:db8:1:2:ffff::9"), 2);
        assert!(first.is_some() && second.is_some());
        assert!(
            table.enter(key("2001:db8:1:2:1234::5"), 2).is_none(),
            "a third address of the same /64 passed the cap of 2"
        );
        assert!(table.enter(key("2001:db8:1:3::1"), 2).is_some());
        drop(first);
        assert!(table.enter(key("2001:db8:1:2::77"), 2).is_some());
    }
}
