//! Flood-proof records: rate-limited and unauthenticated attempts are
//! counted in memory and written as at most one record per client, outcome
//! and second, with a `count`, so a flood cannot fill the disk and no
//! attempt goes uncounted.
//!
//! A client is what the rate limiter keys on (an IPv4 address, an IPv6
//! /64), so rotating addresses inside one /64 does not defeat it.
//!
//! Refusals of authenticated callers are counted too, keyed by token and
//! action (one record per token, action, outcome and second), and each
//! token has a budget of refusals ([`Coalescer::take_refusal`]): past it,
//! its refused requests are answered 429, so a valid token cannot make
//! the server write (and fsync) a record per request by asking for what
//! it may not have. A token's successful audited requests (reveals
//! excepted: they have the per-client reveal rate) have a budget of their
//! own ([`Coalescer::take_record`]), so nothing a caller sends writes more
//! than a bounded number of records a second.

use std::collections::HashMap;
use std::sync::Mutex;

use super::AuditEvent;

/// Past this many distinct clients pending, further ones are counted
/// together under `ip = "*"`, so memory stays bounded.
const MAX_PENDING: usize = 65_536;

struct Pending {
    event: AuditEvent,
    count: u64,
    mixed_target: bool,
    mixed_ip: bool,
    /// Several tokens (expired ones) were refused in the same second.
    mixed_caller: bool,
}

type Budget = governor::RateLimiter<
    uuid::Uuid,
    governor::state::keyed::DefaultKeyedStateStore<uuid::Uuid>,
    governor::clock::DefaultClock,
>;

/// `count` per `period`, burst `count`, per token.
fn budget(count: std::num::NonZeroU32, period: std::time::Duration) -> Budget {
    let per = period / count.get();
    let quota = governor::Quota::with_period(per.max(std::time::Duration::from_nanos(1)))
        .unwrap_or_else(|| governor::Quota::per_second(count))
        .allow_burst(count);
    governor::RateLimiter::keyed(quota)
}

/// Takes one from `token`'s budget; `Err(seconds)` when it is spent (retry
/// after that many seconds, at least 1). No budget: unlimited.
fn take(budget: Option<&Budget>, token: uuid::Uuid) -> Result<(), u64> {
    let Some(b) = budget else {
        return Ok(());
    };
    b.check_key(&token).map_err(|not_until| {
        use governor::clock::Clock;
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        wait.as_secs().max(1)
    })
}

/// Counts coalesced attempts until they are drained into records.
#[derive(Default)]
pub(crate) struct Coalescer {
    /// (client key, outcome, second) → what is counted.
    pending: Mutex<HashMap<(String, &'static str, i64), Pending>>,
    /// Each token's budget of refusals (none: unlimited).
    refusals: Option<Budget>,
    /// Each token's budget of successful audited requests (none: unlimited).
    records: Option<Budget>,
}

impl std::fmt::Debug for Coalescer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer").finish_non_exhaustive()
    }
}

impl Coalescer {
    #[cfg(test)]
    pub(crate) fn new() -> Coalescer {
        Coalescer::default()
    }

    /// A coalescer that also gives each token `count` refusals per
    /// `period` (burst `count`).
    pub(crate) fn with_refusal_budget(
        count: std::num::NonZeroU32,
        period: std::time::Duration,
    ) -> Coalescer {
        Coalescer {
            refusals: Some(budget(count, period)),
            ..Coalescer::default()
        }
    }

    /// Also gives each token `count` successful audited requests per
    /// `period` (burst `count`).
    pub(crate) fn with_record_budget(
        mut self,
        count: std::num::NonZeroU32,
        period: std::time::Duration,
    ) -> Coalescer {
        self.records = Some(budget(count, period));
        self
    }

    /// Takes one refusal from `token`'s budget; `Err(seconds)` when it is
    /// spent (retry after that many seconds, at least 1).
    pub(crate) fn take_refusal(&self, token: uuid::Uuid) -> Result<(), u64> {
        take(self.refusals.as_ref(), token)
    }

    /// Takes one successful audited request from `token`'s budget;
    /// `Err(seconds)` when it is spent.
    pub(crate) fn take_record(&self, token: uuid::Uuid) -> Result<(), u64> {
        take(self.records.as_ref(), token)
    }

    /// Forgets tokens whose refusal budget is full again.
    pub(crate) fn prune(&self) {
        for b in [&self.refusals, &self.records].into_iter().flatten() {
            b.retain_recent();
            b.shrink_to_fit();
        }
    }

    /// Counts one attempt by `client` (the limiter's key) at `now_us`.
    pub(crate) fn add(&self, client: &str, event: AuditEvent, now_us: i64) {
        self.add_count(client, event, now_us.div_euclid(1_000_000), 1);
    }

    fn add_count(&self, client: &str, event: AuditEvent, second: i64, n: u64) {
        let mut map = match self.pending.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let mut key = (client.to_string(), event.outcome.as_str(), second);
        if !map.contains_key(&key) && map.len() >= MAX_PENDING {
            // Still one record per action: what was attempted stays told.
            key.0 = format!("* {}", event.action.as_str());
        }
        match map.get_mut(&key) {
            Some(p) => {
                p.count += n;
                if p.event.key_id != event.key_id || p.event.provider != event.provider {
                    p.mixed_target = true;
                }
                if p.event.ip != event.ip {
                    p.mixed_ip = true;
                }
                if p.event.caller_id != event.caller_id {
                    p.mixed_caller = true;
                }
            }
            None => {
                let mut event = event;
                if key.0.starts_with('*') {
                    event.ip = "*".into();
                    event.peer = None;
                }
                map.insert(
                    key,
                    Pending {
                        event,
                        count: n,
                        mixed_target: false,
                        mixed_ip: false,
                        mixed_caller: false,
                    },
                );
            }
        }
    }

    /// Takes every count from seconds before `now_us` (or all of them when
    /// `all`) as records to write, each with its client and second so a
    /// failed write can be put back with [`restore`](Self::restore).
    pub(crate) fn drain(&self, now_us: i64, all: bool) -> Vec<Drained> {
        let second = now_us.div_euclid(1_000_000);
        let mut map = match self.pending.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let due: Vec<(String, &'static str, i64)> = map
            .keys()
            .filter(|(_, _, s)| all || *s < second)
            .cloned()
            .collect();
        due.into_iter()
            .filter_map(|k| map.remove(&k).map(|p| (k, p)))
            .map(|((client, _, second), p)| Drained {
                event: finish(&client, second, p),
                client,
                second,
            })
            .collect()
    }

    /// Puts back the count of a record that could not be written, so it is
    /// written later and no attempt goes uncounted.
    pub(crate) fn restore(&self, d: Drained) {
        let n = d.event.count.unwrap_or(1);
        let mut event = d.event;
        event.count = None;
        event.detail = None;
        self.add_count(&d.client, event, d.second, n);
    }
}

/// A coalesced record ready to write.
#[derive(Debug, Clone)]
pub(crate) struct Drained {
    pub event: AuditEvent,
    client: String,
    second: i64,
}

fn finish(client: &str, second: i64, p: Pending) -> AuditEvent {
    let mut e = p.event;
    e.count = Some(p.count);
    // The first attempt's own detail (why it was refused), then the count.
    let mut detail = e
        .detail
        .take()
        .map(|d| format!("{d}; "))
        .unwrap_or_default();
    detail.push_str(&format!(
        "{} attempts coalesced in the second starting {}",
        p.count,
        crate::time::to_rfc3339(second * 1_000_000)
    ));
    if p.mixed_ip {
        detail.push_str(&format!("; from several addresses of {client}"));
    }
    if p.mixed_target {
        e.key_id = None;
        e.provider = None;
        detail.push_str("; several keys or providers were asked for");
    }
    if p.mixed_caller {
        e.caller = "several".into();
        e.caller_id = None;
        detail.push_str("; several tokens were refused");
    }
    e.detail = Some(detail);
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Action, Outcome};

    fn ev(ip: &str) -> AuditEvent {
        AuditEvent {
            request_id: "r".into(),
            action: Action::Reveal,
            key_id: None,
            provider: Some("claude".into()),
            caller: "anonymous".into(),
            caller_id: None,
            ip: ip.into(),
            peer: None,
            outcome: Outcome::RateLimited,
            count: None,
            detail: None,
        }
    }

    #[test]
    fn counts_add_up_one_record_per_client_per_second() {
        let c = Coalescer::new();
        for i in 0..1000i64 {
            // 1000 attempts over 2.5 seconds from two clients.
            let now = 10_000_000 + i * 2_500;
            let client = if i % 2 == 0 { "a" } else { "b" };
            c.add(client, ev(client), now);
        }
        let written = c.drain(20_000_000, true);
        let total: u64 = written.iter().map(|d| d.event.count.unwrap()).sum();
        assert_eq!(total, 1000);
        assert_eq!(written.len(), 6, "2 clients x 3 seconds");
    }

    #[test]
    fn a_failed_write_is_put_back_and_counted_again() {
        let c = Coalescer::new();
        for _ in 0..5 {
            c.add("a", ev("1.2.3.4"), 1_000_000);
        }
        let d = c.drain(5_000_000, false);
        assert_eq!(d.len(), 1);
        c.restore(d.into_iter().next().unwrap());
        c.add("a", ev("1.2.3.4"), 1_500_000);
        let d = c.drain(5_000_000, false);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].event.count, Some(6));
    }

    #[test]
    fn outcomes_are_counted_apart() {
        let c = Coalescer::new();
        for _ in 0..3 {
            c.add("a", ev("1.2.3.4"), 0);
        }
        let mut unauth = ev("1.2.3.4");
        unauth.outcome = Outcome::Unauthenticated;
        for _ in 0..2 {
            c.add("a", unauth.clone(), 0);
        }
        let mut d = c.drain(2_000_000, false);
        d.sort_by_key(|d| d.event.count);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].event.outcome, Outcome::Unauthenticated);
        assert_eq!(d[0].event.count, Some(2));
        assert_eq!(d[1].event.outcome, Outcome::RateLimited);
        assert_eq!(d[1].event.count, Some(3));
    }

    #[test]
    fn addresses_of_one_client_share_a_record() {
        let c = Coalescer::new();
        c.add("2001:db8::/64", ev("2001:db8::1"), 0);
        c.add("2001:db8::/64", ev("2001:db8::2"), 0);
        let d = c.drain(2_000_000, false);
        assert_eq!(d.len(), 1);
        assert!(d[0]
            .event
            .detail
            .as_deref()
            .unwrap()
            .contains("several addresses"));
    }
}
