//! Limiter memory under a million distinct client addresses, sent through
//! a trusted proxy's X-Forwarded-For: the server's RSS stays bounded once
//! pruning has run. Slow, so ignored in the default run:
//!
//!     scripts/limiter-memory.sh            # release build, 1,000,000 addresses
//!
//! KEYHOLD_FLOOD_ADDRESSES sets the count; KEYHOLD_BIN the binary.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn tracked(s: &Server, token: &str) -> f64 {
    let text = metrics_text(s, token);
    text.lines()
        .find_map(|l| l.strip_prefix("keyhold_limiter_addresses "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0)
}

#[test]
#[ignore = "a million requests; run scripts/limiter-memory.sh"]
fn a_million_distinct_addresses_leave_bounded_memory_after_pruning() {
    let n: u64 = std::env::var("KEYHOLD_FLOOD_ADDRESSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let v = Vault::new();
    // 60/min: an address's budget is whole again a second after one use,
    // so pruning (every 30 s) may forget it.
    let s = v.serve(&[
        ("KEYHOLD_TRUSTED_PROXIES", "127.0.0.1"),
        ("KEYHOLD_REVEAL_RATE", "60/min"),
        ("KEYHOLD_LOG", "warn"),
    ]);
    let pid = s.pid();
    let rss_start = status_kib(pid, "VmRSS:");
    let started = Instant::now();
    let threads = 16u64;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let url = s.url("/api/providers/claude/key");
            std::thread::spawn(move || {
                let c = client();
                let mut i = t;
                while i < n {
                    // One /64 of the documentation prefix per address.
                    let xff = format!("2001:db8:{:x}:{:x}::1", (i >> 16) & 0xffff, i & 0xffff);
                    let r = c.get(&url).header("X-Forwarded-For", xff).send().unwrap();
                    assert_eq!(
                        r.status(),
                        401,
                        "each address is new: not limited, not authenticated"
                    );
                    i += threads;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let flood = started.elapsed();
    let rss_flood = status_kib(pid, "VmRSS:");
    let peak = status_kib(pid, "VmHWM:");
    let tracked_flood = tracked(&s, &v.admin);
    // Pruning runs every 30 s.
    std::thread::sleep(Duration::from_secs(35));
    let tracked_after = tracked(&s, &v.admin);
    let rss_after = status_kib(pid, "VmRSS:");
    eprintln!(
        "limiter flood: {n} distinct addresses in {flood:.1?} ({:.0} req/s); RSS {:.1} MiB at start, {:.1} MiB after the flood (peak {:.1} MiB), {:.1} MiB after pruning; tracked addresses {tracked_flood} after the flood, {tracked_after} after pruning",
        n as f64 / flood.as_secs_f64(),
        rss_start as f64 / 1024.0,
        rss_flood as f64 / 1024.0,
        peak as f64 / 1024.0,
        rss_after as f64 / 1024.0,
    );
    assert!(
        tracked_after < 1000.0,
        "pruning left {tracked_after} addresses"
    );
    assert!(rss_after < 256 * 1024, "RSS after pruning {rss_after} KiB");
}
