//! Flood-proof records: rate-limited attempts are counted in memory and
//! written as at most one record per client IP per second, with a `count`,
//! so a flood cannot fill the disk and no attempt goes uncounted.

use std::collections::HashMap;
use std::sync::Mutex;

use super::AuditEvent;

/// Past this many distinct addresses in one second, further addresses
/// are counted together under `ip = "*"`, so memory stays bounded.
const MAX_PENDING: usize = 65_536;

struct Pending {
    event: AuditEvent,
    count: u64,
    second: i64,
    mixed_target: bool,
}

/// Counts coalesced attempts until they are drained into records.
#[derive(Default)]
pub struct Coalescer {
    pending: Mutex<HashMap<String, Pending>>,
}

impl std::fmt::Debug for Coalescer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer").finish_non_exhaustive()
    }
}

impl Coalescer {
    pub fn new() -> Coalescer {
        Coalescer::default()
    }

    /// Counts one attempt at `now_us`. Returns records that must be
    /// written now (an earlier second's count for the same address).
    pub fn add(&self, event: AuditEvent, now_us: i64) -> Vec<AuditEvent> {
        let second = now_us.div_euclid(1_000_000);
        let mut out = Vec::new();
        let mut map = match self.pending.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let mut key = event.ip.clone();
        if !map.contains_key(&key) && map.len() >= MAX_PENDING {
            key = "*".to_string();
        }
        match map.get_mut(&key) {
            Some(p) if p.second == second => {
                p.count += 1;
                if p.event.key_id != event.key_id || p.event.provider != event.provider {
                    p.mixed_target = true;
                }
            }
            Some(_) => {
                if let Some(old) = map.remove(&key) {
                    out.push(finish(old));
                }
                map.insert(key.clone(), start(event, second, &key));
            }
            None => {
                map.insert(key.clone(), start(event, second, &key));
            }
        }
        out
    }

    /// Takes every count from seconds before `now_us` (or all of them when
    /// `all`) as records to write.
    pub fn drain(&self, now_us: i64, all: bool) -> Vec<AuditEvent> {
        let second = now_us.div_euclid(1_000_000);
        let mut map = match self.pending.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let due: Vec<String> = map
            .iter()
            .filter(|(_, p)| all || p.second < second)
            .map(|(k, _)| k.clone())
            .collect();
        due.into_iter()
            .filter_map(|k| map.remove(&k))
            .map(finish)
            .collect()
    }
}

fn start(mut event: AuditEvent, second: i64, key: &str) -> Pending {
    if key == "*" {
        event.ip = "*".into();
        event.peer = None;
    }
    Pending {
        event,
        count: 1,
        second,
        mixed_target: false,
    }
}

fn finish(p: Pending) -> AuditEvent {
    let mut e = p.event;
    e.count = Some(p.count);
    let window = format!(
        "{} attempts coalesced in the second starting {}",
        p.count,
        crate::time::to_rfc3339(p.second * 1_000_000)
    );
    if p.mixed_target {
        e.key_id = None;
        e.provider = None;
        e.detail = Some(format!(
            "{window}; several keys or providers were asked for"
        ));
    } else {
        e.detail = Some(window);
    }
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
    fn counts_add_up_one_record_per_ip_per_second() {
        let c = Coalescer::new();
        let mut written = Vec::new();
        for i in 0..1000i64 {
            // 1000 attempts over 2.5 seconds from two addresses.
            let now = 10_000_000 + i * 2_500;
            written.extend(c.add(ev(if i % 2 == 0 { "a" } else { "b" }), now));
        }
        written.extend(c.drain(20_000_000, true));
        let total: u64 = written.iter().map(|e| e.count.unwrap()).sum();
        assert_eq!(total, 1000);
        assert!(written.len() <= 6, "{}", written.len());
    }
}
