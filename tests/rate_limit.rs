//! The per-IP reveal limit: 429 with Retry-After, RateLimit-* headers on
//! every reveal answer, one budget for both reveal routes, and
//! X-Forwarded-For believed only from trusted proxies.

mod common;

use common::*;

#[test]
fn burst_then_429_with_retry_after_and_ratelimit_headers() {
    let v = Vault::new();
    let s = v.serve(&[("KEYHOLD_REVEAL_RATE", "3/min")]);
    let api = Api::new(&s, &v.admin);
    let id = api.create_key("claude", "k", "sk-1");
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = api.get(&format!("/api/keys/{id}"));
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["ratelimit-limit"], "3");
        assert!(r.headers().get("ratelimit-reset").is_some());
        remaining.push(
            r.headers()["ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    // The provider route shares the same budget.
    let r = api.get("/api/providers/claude/key");
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.headers()["ratelimit-remaining"], "0");
    assert!(detail(r).contains("Retry-After"));
    // Non-reveal routes are not limited.
    for _ in 0..5 {
        assert_eq!(api.get("/api/keys").status(), 200);
    }
    // Even unauthenticated reveal attempts count and are refused.
    assert_eq!(
        Api::anonymous(&s).get(&format!("/api/keys/{id}")).status(),
        429
    );
}

#[test]
fn spoofed_forwarded_for_from_an_untrusted_peer_does_not_escape_the_limit() {
    let v = Vault::new();
    let s = v.serve(&[("KEYHOLD_REVEAL_RATE", "2/min")]);
    let api = Api::new(&s, &v.admin);
    let id = api.create_key("claude", "k", "sk-1");
    let mut statuses = Vec::new();
    for i in 0..6 {
        let r = api
            .req(reqwest::Method::GET, &format!("/api/keys/{id}"))
            .header("X-Forwarded-For", format!("203.0.113.{i}"))
            .send()
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 429, 429, 429]);
    s.stop();
    // The audit log records the real peer, not the claimed address.
    let recs = v.audit_records();
    assert!(recs
        .iter()
        .filter(|r| r["action"] == "reveal")
        .all(|r| r["ip"] == "127.0.0.1" && r["peer"].is_null()));
}

#[test]
fn a_trusted_proxys_forwarded_client_is_limited_on_its_own() {
    let v = Vault::new();
    let s = v.serve(&[
        ("KEYHOLD_REVEAL_RATE", "2/min"),
        ("KEYHOLD_TRUSTED_PROXIES", "127.0.0.0/8"),
    ]);
    let api = Api::new(&s, &v.admin);
    let id = api.create_key("claude", "k", "sk-1");
    let get = |xff: &str| {
        api.req(reqwest::Method::GET, &format!("/api/keys/{id}"))
            .header("X-Forwarded-For", xff)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    // Client A uses its budget; a spoofed left-hand entry does not help it,
    // because the right-most untrusted address is the client.
    assert_eq!(get("198.51.100.1"), 200);
    assert_eq!(get("6.6.6.6, 198.51.100.1"), 200);
    assert_eq!(get("7.7.7.7, 198.51.100.1"), 429);
    // Client B, behind the same proxy, has its own budget.
    assert_eq!(get("198.51.100.2"), 200);
    assert_eq!(get("198.51.100.2"), 200);
    assert_eq!(get("198.51.100.2"), 429);
    // IPv6 clients are keyed by their /64.
    assert_eq!(get("2001:db8:1:2::1"), 200);
    assert_eq!(get("2001:db8:1:2::ffff"), 200);
    assert_eq!(get("2001:db8:1:2:aaaa::9"), 429);
    assert_eq!(get("2001:db8:1:3::1"), 200);
    s.stop();
    // The audit record keeps both the derived client and the peer.
    let recs = v.audit_records();
    let a = recs
        .iter()
        .find(|r| r["action"] == "reveal" && r["ip"] == "198.51.100.1")
        .expect("a record for client A");
    assert_eq!(a["peer"], "127.0.0.1");
}

#[test]
fn rotating_addresses_inside_one_ipv6_64_are_coalesced_together() {
    let v = Vault::new();
    let s = v.serve(&[
        ("KEYHOLD_REVEAL_RATE", "1/h"),
        ("KEYHOLD_TRUSTED_PROXIES", "127.0.0.1"),
    ]);
    let api = Api::new(&s, &v.admin);
    let id = api.create_key("claude", "k", "sk-1");
    let mut limited = 0u64;
    for i in 0..400u32 {
        let r = api
            .req(reqwest::Method::GET, &format!("/api/keys/{id}"))
            .header(
                "X-Forwarded-For",
                format!("2001:db8:7:7:{:x}::{:x}", i / 7, i % 7 + 1),
            )
            .send()
            .unwrap();
        if r.status() == 429 {
            limited += 1;
        }
    }
    assert_eq!(limited, 399, "one /64, one budget");
    s.stop();
    let recs = v.audit_records();
    let lim: Vec<&serde_json::Value> = recs
        .iter()
        .filter(|r| r["outcome"] == "rate_limited")
        .collect();
    let total: u64 = lim.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 399);
    assert!(lim.len() <= 10, "{} records for one /64", lim.len());
}
