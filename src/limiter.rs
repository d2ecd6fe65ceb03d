//! The reveal rate limit (governor, keyed by client IP) and trusted-proxy
//! client-IP resolution.
//!
//! The client IP is the TCP peer. `X-Forwarded-For` is believed only when
//! the peer is a listed trusted proxy, and then the right-most address
//! that is not itself a trusted proxy is the client. IPv6 clients are keyed
//! by their /64 (one host usually holds a whole /64).
//!
//! Not for: HTTP responses (see `http`).
//!
//! Over 500 lines because: the two places a budget is kept (governor in
//! this process, the GCRA row every node shares) side by side, each with
//! its one-cell and batch takes, beside the client keying they share.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use ipnet::IpNet;

/// A reveal rate: N per period, with a burst of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevealRate {
    pub count: NonZeroU32,
    pub period: Duration,
}

impl Default for RevealRate {
    fn default() -> Self {
        RevealRate {
            count: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
            period: Duration::from_secs(60),
        }
    }
}

impl fmt::Display for RevealRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid reveal rate `{0}`: write N/s, N/min or N/h with N a whole number from 1 to 4294967295 (for example 10/min)"
)]
pub struct RateSpecError(String);

impl FromStr for RevealRate {
    type Err = RateSpecError;
    fn from_str(s: &str) -> Result<RevealRate, RateSpecError> {
        let err = || RateSpecError(s.chars().take(40).collect());
        let (n, unit) = s.trim().split_once('/').ok_or_else(err)?;
        let count: NonZeroU32 = n.trim().parse().map_err(|_| err())?;
        let period = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(err()),
        };
        Ok(RevealRate { count, period })
    }
}

/// The key a client is limited by: an address (IPv6 by its /64), or the
/// user id of a Unix-socket caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(Who);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    Ip(IpAddr),
    /// A Unix-socket peer, by the uid the kernel vouches for.
    Uid(u32),
    /// A Unix-socket peer whose uid the OS did not give: all such share
    /// one budget.
    UnixUnknown,
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Who::Ip(IpAddr::V4(v4)) => write!(f, "{v4}"),
            Who::Ip(IpAddr::V6(v6)) => write!(f, "{v6}/64"),
            Who::Uid(uid) => write!(f, "unix uid={uid}"),
            Who::UnixUnknown => f.write_str("unix uid=?"),
        }
    }
}

impl ClientKey {
    /// IPv4 as is (IPv4-mapped IPv6 too); IPv6 by its /64.
    pub fn of(ip: IpAddr) -> ClientKey {
        ClientKey(Who::Ip(network_of(ip)))
    }

    /// A Unix-socket caller, by its peer uid: local processes of other
    /// users neither share its budget nor pass for 127.0.0.1.
    pub fn unix(uid: Option<u32>) -> ClientKey {
        ClientKey(uid.map_or(Who::UnixUnknown, Who::Uid))
    }
}

/// The address a client is counted under: IPv4 as is (IPv4-mapped IPv6
/// too), IPv6 by its /64 (one host usually holds a whole /64).
pub(crate) fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// What the limiter decided, with the header values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the quota is fully replenished (at least 1 when
    /// anything was used).
    pub reset_secs: u64,
    /// Seconds to wait before retrying (set when refused; at least 1).
    pub retry_after_secs: u64,
}

/// The shared per-IP limiter for every reveal route: governor in this
/// process (sled, one node), or, where several nodes share a PostgreSQL
/// store, the GCRA state in the database (`store::postgres::limit`), so
/// N nodes behind a balancer give a client one budget, not N.
pub struct RevealLimiter {
    /// The store holding the limit every node shares, if any.
    shared: Option<crate::store::Store>,
    limiter: RateLimiter<
        ClientKey,
        DefaultKeyedStateStore<ClientKey>,
        DefaultClock,
        StateInformationMiddleware,
    >,
    /// The rate in force: where the limit is shared, the one the store
    /// holds (`ops::settings`), which can change while the server runs.
    rate: std::sync::RwLock<RevealRate>,
    clock: DefaultClock,
}

impl fmt::Debug for RevealLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevealLimiter")
            .field("rate", &self.rate())
            .field("tracked", &self.limiter.len())
            .finish()
    }
}

impl RevealLimiter {
    pub fn new(rate: RevealRate) -> RevealLimiter {
        let per_cell = rate.period / rate.count.get();
        let quota = Quota::with_period(per_cell.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(rate.count))
            .allow_burst(rate.count);
        RevealLimiter {
            shared: None,
            limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            rate: std::sync::RwLock::new(rate),
            clock: DefaultClock::default(),
        }
    }

    /// A limiter whose state every node sharing `store` shares (a store
    /// that keeps no shared state leaves it to this process).
    pub fn shared(rate: RevealRate, store: crate::store::Store) -> RevealLimiter {
        RevealLimiter {
            shared: Some(store),
            ..RevealLimiter::new(rate)
        }
    }

    pub fn rate(&self) -> RevealRate {
        match self.rate.read() {
            Ok(r) => *r,
            Err(p) => *p.into_inner(),
        }
    }

    /// Puts `rate` in force where the limit is shared (the cluster's rate
    /// changed); returns whether it differed. A limit kept by this process
    /// keeps the rate it was built with.
    pub fn set_rate(&self, rate: RevealRate) -> bool {
        if self.shared.is_none() {
            return false;
        }
        let mut r = match self.rate.write() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        let changed = *r != rate;
        *r = rate;
        changed
    }

    /// Whether the state is shared with other nodes.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Takes one cell for `client`, from the shared state where there is
    /// one (off the async threads: it is a database round trip), else
    /// from this process's. An unreachable database is an error: the
    /// reveal is refused (503) rather than let through unlimited.
    pub async fn decide(&self, client: ClientKey) -> Result<Decision, crate::store::StoreError> {
        let Some(store) = &self.shared else {
            return Ok(self.check_client(client));
        };
        let rate = self.rate();
        let limit = rate.count.get();
        let emission_us = i64::try_from((rate.period / limit).as_micros())
            .unwrap_or(i64::MAX)
            .max(1);
        let (store, name) = (store.clone(), client.to_string());
        let cell =
            crate::blocking::run(move || store.take_reveal_cells(&name, emission_us, limit, 1))
                .await
                .map_err(|_| crate::store::StoreError::Unavailable)??;
        Ok(match cell {
            Some(cell) => shared_decision(cell, emission_us, limit, 1),
            None => self.check_client(client),
        })
    }

    /// Takes `more` cells for `client` at once, all or none, after the
    /// one [`decide`](Self::decide) took for the same request (a batch
    /// reveal of `more + 1` keys). Refused, its `retry_after_secs` is the
    /// wait until `more + 1` cells are free, so the whole request retried
    /// then fits. `more` must be below the rate's count (the caller
    /// refuses larger batches): more could never fit.
    pub async fn decide_more(
        &self,
        client: ClientKey,
        more: u32,
    ) -> Result<Decision, crate::store::StoreError> {
        let rate = self.rate();
        let limit = rate.count.get();
        let Some(more) = NonZeroU32::new(more.min(limit)) else {
            return Ok(self.peek(limit));
        };
        if let Some(store) = &self.shared {
            let emission_us = i64::try_from((rate.period / limit).as_micros())
                .unwrap_or(i64::MAX)
                .max(1);
            let (store, name) = (store.clone(), client.to_string());
            let cell = crate::blocking::run(move || {
                store.take_reveal_cells(&name, emission_us, limit, more.get())
            })
            .await
            .map_err(|_| crate::store::StoreError::Unavailable)??;
            if let Some(cell) = cell {
                return Ok(shared_decision(cell, emission_us, limit, more.get() + 1));
            }
        }
        let per_cell = rate.period / limit;
        Ok(match self.limiter.check_key_n(&client, more) {
            Ok(Ok(snapshot)) => allowed(snapshot.remaining_burst_capacity(), limit, per_cell),
            // The wait until `more` are free, and one more for the cell the
            // retried request's first check takes.
            Ok(Err(not_until)) => refused(
                not_until.wait_time_from(self.clock.now()) + per_cell,
                limit,
                per_cell,
            ),
            Err(_) => Decision {
                allowed: false,
                limit,
                remaining: 0,
                reset_secs: rate.period.as_secs().max(1),
                retry_after_secs: rate.period.as_secs().max(1),
            },
        })
    }

    /// An allowed decision that took nothing (a batch of one key).
    fn peek(&self, limit: u32) -> Decision {
        Decision {
            allowed: true,
            limit,
            remaining: limit,
            reset_secs: 0,
            retry_after_secs: 0,
        }
    }

    /// Takes one cell for `ip`, or refuses.
    pub fn check(&self, ip: IpAddr) -> Decision {
        self.check_client(ClientKey::of(ip))
    }

    /// Takes one cell for `client`, or refuses.
    pub fn check_client(&self, client: ClientKey) -> Decision {
        let rate = self.rate();
        let limit = rate.count.get();
        let per_cell = rate.period / limit;
        match self.limiter.check_key(&client) {
            Ok(snapshot) => allowed(snapshot.remaining_burst_capacity(), limit, per_cell),
            Err(not_until) => refused(not_until.wait_time_from(self.clock.now()), limit, per_cell),
        }
    }

    /// Forgets addresses whose state is back to full; keeps memory bounded.
    /// Called from a periodic task (shared state: from a blocking one).
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        if let Some(store) = &self.shared {
            if let Err(e) = store.prune_reveal_cells() {
                tracing::warn!(error = %e, "could not prune the shared reveal limit");
            }
        }
    }

    /// How many addresses are tracked.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

/// This process's verdict to let a take through, `remaining` cells left.
fn allowed(remaining: u32, limit: u32, per_cell: Duration) -> Decision {
    let used = u64::from(limit - remaining.min(limit));
    Decision {
        allowed: true,
        limit,
        remaining,
        reset_secs: (per_cell.as_secs_f64() * used as f64).ceil() as u64,
        retry_after_secs: 0,
    }
}

/// This process's verdict to refuse a take until `wait` has passed.
fn refused(wait: Duration, limit: u32, per_cell: Duration) -> Decision {
    let retry = (wait.as_secs_f64().ceil() as u64).max(1);
    let full = per_cell.as_secs_f64() * f64::from(limit);
    Decision {
        allowed: false,
        limit,
        remaining: 0,
        reset_secs: (full.ceil() as u64).max(retry),
        retry_after_secs: retry,
    }
}

/// The header values of a take the database's GCRA decided (T: the time
/// one reveal costs; TAT: when the client's budget is full again); a
/// refusal's retry is the wait until `cells` are free.
fn shared_decision(
    cell: crate::store::SharedCell,
    emission_us: i64,
    limit: u32,
    cells: u32,
) -> Decision {
    let secs = |us: i64| (us.max(0) as u64).div_ceil(1_000_000);
    let ahead = cell.tat_us.saturating_sub(cell.now_us).max(0);
    let burst_us = emission_us.saturating_mul(i64::from(limit));
    let cost_us = emission_us.saturating_mul(i64::from(cells.max(1)));
    if cell.allowed {
        let free = burst_us.saturating_sub(ahead) / emission_us;
        Decision {
            allowed: true,
            limit,
            remaining: u32::try_from(free.max(0)).unwrap_or(limit).min(limit),
            reset_secs: secs(ahead),
            retry_after_secs: 0,
        }
    } else {
        let retry = secs(ahead.saturating_add(cost_us).saturating_sub(burst_us)).max(1);
        Decision {
            allowed: false,
            limit,
            remaining: 0,
            reset_secs: secs(ahead).max(retry),
            retry_after_secs: retry,
        }
    }
}

/// Networks whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid KEYHOLD_TRUSTED_PROXIES entry `{0}`: list addresses or CIDRs separated by commas (for example 10.0.0.0/8,::1)"
)]
pub struct ProxySpecError(String);

impl FromStr for TrustedProxies {
    type Err = ProxySpecError;
    fn from_str(s: &str) -> Result<TrustedProxies, ProxySpecError> {
        let mut nets = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let net = match part.parse::<IpNet>() {
                Ok(n) => n,
                Err(_) => match part.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => return Err(ProxySpecError(part.chars().take(60).collect())),
                },
            };
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }
}

impl TrustedProxies {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client address for a request from `peer` with these
    /// `X-Forwarded-For` values (in header order). Returns the address and
    /// whether it was derived from the header.
    pub fn client_ip<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl Iterator<Item = &'a str>,
    ) -> (IpAddr, bool) {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return (peer, false);
        }
        let hops: Vec<&str> = forwarded_for
            .flat_map(|h| h.split(','))
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        let mut current = peer;
        for hop in hops.iter().rev() {
            match parse_hop(hop) {
                Some(ip) if self.contains(ip) => current = ip,
                Some(ip) => return (ip, true),
                // An address we cannot read: stop at the last one we trust.
                None => break,
            }
        }
        (current, current != peer)
    }
}

/// IPv4-mapped IPv6 as IPv4, so `::ffff:1.2.3.4` and `1.2.3.4` are one.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// One `X-Forwarded-For` hop: an address, optionally `[v6]:port` or `v4:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = hop.parse::<std::net::SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_specs() {
        assert_eq!(
            "10/min".parse::<RevealRate>().unwrap(),
            RevealRate::default()
        );
        assert_eq!(
            "5/s".parse::<RevealRate>().unwrap().period,
            Duration::from_secs(1)
        );
        assert_eq!(
            "7/h".parse::<RevealRate>().unwrap().period,
            Duration::from_secs(3600)
        );
        for bad in ["", "10", "0/s", "-1/s", "10/day", "x/min", "99999999999/s"] {
            assert!(bad.parse::<RevealRate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ipv6_is_keyed_by_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::of(a), ClientKey::of(b));
        assert_ne!(ClientKey::of(a), ClientKey::of(c));
    }

    #[test]
    fn unix_callers_are_limited_by_uid_apart_from_loopback() {
        let l = RevealLimiter::new("1/min".parse().unwrap());
        assert!(l.check_client(ClientKey::unix(Some(1000))).allowed);
        assert!(!l.check_client(ClientKey::unix(Some(1000))).allowed);
        assert!(l.check_client(ClientKey::unix(Some(1001))).allowed);
        assert!(l.check("127.0.0.1".parse().unwrap()).allowed);
        assert_eq!(ClientKey::unix(Some(7)).to_string(), "unix uid=7");
    }

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let l = RevealLimiter::new("3/min".parse().unwrap());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let d: Vec<Decision> = (0..4).map(|_| l.check(ip)).collect();
        assert!(d[..3].iter().all(|d| d.allowed));
        assert_eq!(d[2].remaining, 0);
        assert!(!d[3].allowed);
        assert!(d[3].retry_after_secs >= 1 && d[3].retry_after_secs <= 20);
        assert!(l.check("192.0.2.2".parse().unwrap()).allowed);
    }

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        let t: TrustedProxies = "10.0.0.0/8, 127.0.0.1".parse().unwrap();
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        // From an untrusted peer the header is ignored.
        assert_eq!(
            t.client_ip(stranger, ["1.2.3.4"].into_iter()),
            (stranger, false)
        );
        // Right-most untrusted address wins; a spoofed left part is ignored.
        assert_eq!(
            t.client_ip(peer, ["6.6.6.6, 203.0.113.9, 10.1.1.1"].into_iter()),
            ("203.0.113.9".parse().unwrap(), true)
        );
        // Only trusted hops: the left-most trusted one.
        assert_eq!(
            t.client_ip(peer, ["10.2.2.2"].into_iter()),
            ("10.2.2.2".parse().unwrap(), true)
        );
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(t.client_ip(peer, ["nonsense"].into_iter()), (peer, false));
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
    }
}
