//! Every audited request is bounded (issue 24, point 2): a valid token's
//! refused requests are coalesced (one record per token, action, outcome
//! and second, with counts that add up), and past the token's refusal
//! budget they are answered 429; its successful audited requests have a
//! record budget past which they are answered 429, not done, and counted
//! coalesced. Real binary, loopback.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// A 429 answer whose detail says `why`, with its Retry-After.
fn assert_429_saying(r: reqwest::blocking::Response, why: &str) {
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let said: Value = r.json().unwrap();
    assert!(said["detail"].as_str().unwrap().contains(why), "{said}");
}

/// The records of `action` by `caller`, once the server is stopped
/// (coalesced counts are written at shutdown), checking that the data
/// directory grew by under 1 MiB since `before`.
fn records_after(v: &Vault, s: Server, before: u64, action: &str, caller: &str) -> Vec<Value> {
    s.stop();
    let grew = dir_bytes(&v.dir).saturating_sub(before);
    assert!(
        grew < 1024 * 1024,
        "the data directory grew by {grew} bytes"
    );
    v.audit_records()
        .into_iter()
        .filter(|r| r["action"] == action && r["caller"] == caller)
        .collect()
}

/// The requests `records` of `outcome` stand for (counts added up).
fn count(records: &[Value], outcome: &str) -> u64 {
    records
        .iter()
        .filter(|r| r["outcome"] == outcome)
        .map(|r| r["count"].as_u64().unwrap_or(1))
        .sum()
}

#[test]
fn a_flood_of_refused_admin_calls_by_an_auditor_writes_a_few_records_that_add_up() {
    let v = Vault::new();
    let auditor = v.token("flooder", "auditor", None);
    let s = v.serve(&[]);
    // Settle: the first records, the files' first growth.
    std::thread::sleep(Duration::from_millis(500));
    let before = dir_bytes(&v.dir);
    let sent = AtomicU64::new(0);
    let statuses = [AtomicU64::new(0), AtomicU64::new(0)];
    let until = Instant::now() + Duration::from_secs(3);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                let api = Api::new(&s, &auditor);
                while Instant::now() < until {
                    let r = api
                        .req(reqwest::Method::POST, "/api/admin/rotate")
                        .send()
                        .unwrap();
                    sent.fetch_add(1, Ordering::Relaxed);
                    match r.status().as_u16() {
                        403 => statuses[0].fetch_add(1, Ordering::Relaxed),
                        429 => statuses[1].fetch_add(1, Ordering::Relaxed),
                        other => panic!("answered {other}"),
                    };
                }
            });
        }
    });
    let sent = sent.load(Ordering::Relaxed);
    let forbidden = statuses[0].load(Ordering::Relaxed);
    // The budget (60/min, burst 60, one more a second) answered the first
    // refusals 403, the rest 429.
    assert!((60..=65).contains(&forbidden), "{forbidden} of {sent}");
    assert!(sent > 200, "only {sent} requests in 3 s");
    let r = Api::new(&s, &auditor)
        .req(reqwest::Method::POST, "/api/admin/rotate")
        .send()
        .unwrap();
    assert_429_saying(r, "refused too often");
    let records = records_after(&v, s, before, "rotate", "flooder");
    assert!(records.len() <= 24, "{} records", records.len());
    // Every attempt is counted as what it was (forbidden), those past the
    // budget saying that they were answered 429.
    assert_eq!(count(&records, "forbidden"), sent + 1);
    let past: u64 = records
        .iter()
        .filter(|r| r["detail"].as_str().unwrap_or("").contains("answered 429"))
        .map(|r| r["count"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(past, sent + 1 - forbidden);
}

/// Floods `path` with `method` from 8 threads for 3 s; (sent, statuses).
fn flood(
    s: &Server,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u64, std::collections::BTreeMap<u16, u64>) {
    let sent = AtomicU64::new(0);
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::new());
    let until = Instant::now() + Duration::from_secs(3);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                let api = Api::new(s, token);
                while Instant::now() < until {
                    let mut r = api.req(method.clone(), path);
                    if let Some(b) = &body {
                        r = r.json(b);
                    }
                    let status = r.send().unwrap().status().as_u16();
                    sent.fetch_add(1, Ordering::Relaxed);
                    *statuses.lock().unwrap().entry(status).or_insert(0) += 1;
                }
            });
        }
    });
    (sent.load(Ordering::Relaxed), statuses.into_inner().unwrap())
}

#[test]
fn a_flood_of_successful_exports_by_an_auditor_is_bounded_by_its_record_budget() {
    let v = Vault::new();
    let auditor = v.token("reader", "auditor", None);
    let s = v.serve(&[("KEYHOLD_RECORD_BUDGET", "20/min")]);
    std::thread::sleep(Duration::from_millis(500));
    let before = dir_bytes(&v.dir);
    let (sent, statuses) = flood(
        &s,
        &auditor,
        reqwest::Method::GET,
        "/api/audit?limit=1",
        None,
    );
    assert!(sent > 200, "only {sent} requests in 3 s");
    let ok = statuses.get(&200).copied().unwrap_or(0);
    // Burst 20, then one every 3 s.
    assert!((20..=22).contains(&ok), "{statuses:?}");
    assert_eq!(
        ok + statuses.get(&429).copied().unwrap_or(0),
        sent,
        "{statuses:?}"
    );
    assert_429_saying(
        Api::new(&s, &auditor).get("/api/audit?limit=1"),
        "record budget",
    );
    let records = records_after(&v, s, before, "audit_export", "reader");
    assert_eq!(count(&records, "success"), ok);
    assert_eq!(count(&records, "rate_limited"), sent + 1 - ok);
    // A few coalesced records (one a second) hold every 429.
    assert!(records.len() as u64 <= ok + 8, "{} records", records.len());
}

#[test]
fn a_writer_past_its_record_budget_changes_nothing() {
    let v = Vault::new();
    let writer = v.token("backend", "writer", None);
    let s = v.serve(&[("KEYHOLD_RECORD_BUDGET", "5/min")]);
    let api = Api::new(&s, &writer);
    let id = api.create_key("p", "k", "v0");
    let mut answered = Vec::new();
    for i in 1..=8 {
        let r = api
            .req(reqwest::Method::PUT, &format!("/api/keys/{id}"))
            .json(&serde_json::json!({"api_key": format!("v{i}")}))
            .send()
            .unwrap();
        answered.push(r.status().as_u16());
    }
    // The create took one of 5: four versions, then 429s.
    assert_eq!(answered, [200, 200, 200, 200, 429, 429, 429, 429]);
    let key: Value = Api::new(&s, &v.admin)
        .get(&format!("/api/keys/{id}"))
        .json()
        .unwrap();
    assert_eq!(key["version"], 5, "{key}");
    assert_eq!(key["api_key"], "v4", "{key}");
    s.stop();
    let limited: u64 = v
        .audit_records()
        .into_iter()
        .filter(|r| r["action"] == "key_put" && r["outcome"] == "rate_limited")
        .map(|r| r["count"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(limited, 4);
}

/// One scope check for every route, through the vault: a refusal is
/// recorded whatever the route — listing tokens, keys or versions, the
/// audit log's stats and verification, the metrics — and so are the
/// provider-limited readers refused what covers every provider.
#[test]
fn every_refused_scope_is_recorded_whatever_the_route() {
    let v = Vault::new();
    let metrics = v.token("m", "metrics", None);
    let reader = v.token("r", "reader", None);
    let limited = v.token("lim", "admin", Some("github"));
    let s = v.serve(&[]);
    let id = Api::new(&s, &v.admin).create_key("claude", "k", "sk-x");
    let cases: [(&str, &str, &str, &str); 8] = [
        (&reader, "/api/tokens", "token_list", "r"),
        (&metrics, "/api/keys", "key_list", "m"),
        (&metrics, "/api/keys/ID/versions", "key_list", "m"),
        (&metrics, "/api/audit/stats", "audit_export", "m"),
        (&metrics, "/api/audit/verify", "audit_export", "m"),
        (&reader, "/metrics", "metrics_read", "r"),
        (&limited, "/metrics", "metrics_read", "lim"),
        (&limited, "/api/audit/stats", "audit_export", "lim"),
    ];
    for (token, path, _, _) in cases {
        let r = Api::new(&s, token).get(&path.replace("ID", &id));
        assert_eq!(r.status(), 403, "{path}");
    }
    // A malformed query does not get ahead of the scope check.
    let r = Api::new(&s, &reader).delete(&format!("/api/keys/{id}?purge=maybe"));
    assert_eq!(r.status(), 403);
    s.stop();
    let records = v.audit_records();
    for (_, path, action, caller) in cases {
        let n: u64 = records
            .iter()
            .filter(|r| {
                r["action"] == action && r["caller"] == caller && r["outcome"] == "forbidden"
            })
            .map(|r| r["count"].as_u64().unwrap_or(1))
            .sum();
        assert!(
            n >= 1,
            "{path}: no {action} refusal of {caller}: {records:#?}"
        );
    }
    assert!(
        records.iter().any(|r| r["action"] == "key_delete"
            && r["caller"] == "r"
            && r["outcome"] == "forbidden"),
        "{records:#?}"
    );
}

/// The `detail`s of the records of `action` by `caller` with `outcome`.
fn details(records: &[Value], outcome: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["outcome"] == outcome)
        .map(|r| r["detail"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A refusal answered to a token that passed its scope check is recorded
/// whoever words it: the vault (a field rule, a name already taken) or
/// the edge (a body that is not JSON, a query or a path that does not
/// fit). Before, each of these was answered with no record at all.
#[test]
fn a_refused_body_query_or_field_of_an_authorised_token_is_recorded() {
    let v = Vault::new();
    let writer = v.token("backend", "writer", None);
    let s = v.serve(&[]);
    let api = Api::new(&s, &writer);
    let admin = Api::new(&s, &v.admin);
    let id = api.create_key("claude", "main", "sk-1");
    // The edge's: a body that is not JSON (the first refusal, so its
    // detail is the coalesced record's), then one without a field.
    let r = api
        .req(reqwest::Method::POST, "/api/keys")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    // The vault's own field rule.
    let r = api.post_json(
        "/api/keys",
        &serde_json::json!({"provider": "Bad", "key_name": "k", "api_key": "x"}),
    );
    assert_eq!(r.status(), 422);
    let r = api.post_json("/api/keys", &serde_json::json!({"provider": "claude"}));
    assert_eq!(r.status(), 422);
    // A malformed DELETE query, after the scope check.
    let r = api.delete(&format!("/api/keys/{id}?purge=maybe"));
    assert_eq!(r.status(), 422);
    // An admin's: an unknown role, a name already taken, a version in the
    // path that is not a number, versions of a missing key.
    let r = admin.post_json(
        "/api/tokens",
        &serde_json::json!({"name": "x", "role": "overlord"}),
    );
    assert_eq!(r.status(), 422);
    let r = admin.post_json(
        "/api/tokens",
        &serde_json::json!({"name": "backend", "role": "reader"}),
    );
    assert_eq!(r.status(), 409);
    let r = admin
        .req(
            reqwest::Method::POST,
            &format!("/api/keys/{id}/versions/two/restore"),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = admin.get(&format!("/api/keys/{}/versions", uuid::Uuid::new_v4()));
    assert_eq!(r.status(), 404);
    s.stop();
    let records = v.audit_records();
    let of = |action: &str, caller: &str| -> Vec<Value> {
        records
            .iter()
            .filter(|r| r["action"] == action && r["caller"] == caller)
            .cloned()
            .collect()
    };
    let created = of("key_create", "backend");
    assert_eq!(count(&created, "forbidden"), 3, "{created:#?}");
    let said = details(&created, "forbidden").join("\n");
    assert!(said.contains("answered 400"), "{created:#?}");
    let deleted = of("key_delete", "backend");
    assert_eq!(count(&deleted, "forbidden"), 1, "{deleted:#?}");
    assert!(details(&deleted, "forbidden")[0].contains("`purge`"));
    let tokens = of("token_create", "admin");
    assert_eq!(count(&tokens, "forbidden"), 2, "{tokens:#?}");
    let restored = of("key_restore", "admin");
    assert_eq!(count(&restored, "forbidden"), 1, "{restored:#?}");
    let listed = of("key_list", "admin");
    assert_eq!(count(&listed, "not_found"), 1, "{listed:#?}");
    // No record holds the key a refused body carried.
    let all = serde_json::to_string(&records).unwrap();
    assert!(!all.contains("sk-1"));
}

/// Refusals the edge words count against the token's refusal budget like
/// the vault's: a flood of bodies that are not JSON from a valid token is
/// answered 429 past the budget, and its records add up to the requests.
#[test]
fn a_flood_of_bad_bodies_from_a_valid_token_is_bounded_by_its_refusal_budget() {
    let v = Vault::new();
    let writer = v.token("sloppy", "writer", None);
    let s = v.serve(&[]);
    std::thread::sleep(Duration::from_millis(500));
    let before = dir_bytes(&v.dir);
    let sent = AtomicU64::new(0);
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::new());
    let until = Instant::now() + Duration::from_secs(2);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let api = Api::new(&s, &writer);
                while Instant::now() < until {
                    let r = api
                        .req(reqwest::Method::POST, "/api/keys")
                        .header("content-type", "application/json")
                        .body("[")
                        .send()
                        .unwrap();
                    sent.fetch_add(1, Ordering::Relaxed);
                    *statuses
                        .lock()
                        .unwrap()
                        .entry(r.status().as_u16())
                        .or_insert(0u64) += 1;
                }
            });
        }
    });
    let sent = sent.load(Ordering::Relaxed);
    let statuses = statuses.into_inner().unwrap();
    let bad = statuses.get(&400).copied().unwrap_or(0);
    // Burst 60, one more a second.
    assert!((60..=63).contains(&bad), "{statuses:?}");
    assert_eq!(
        bad + statuses.get(&429).copied().unwrap_or(0),
        sent,
        "{statuses:?}"
    );
    let records = records_after(&v, s, before, "key_create", "sloppy");
    assert_eq!(count(&records, "forbidden"), sent);
    assert!(records.len() <= 16, "{} records", records.len());
}

/// Sends a POST with a declared body over the cap (and a little of it) on
/// a fresh connection; the whole answer, as text.
fn oversized_post(addr: &str, token: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /api/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: \
         application/json\r\nContent-Length: {}\r\n\r\n{{\"pad\":\"",
        100 * 1024
    );
    let _ = c.write_all(head.as_bytes());
    let _ = c.write_all(&[b'x'; 1024]);
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A refusal that leaves the body unread closes the connection, also past
/// the token's refusal budget, where it is answered 429.
#[test]
fn a_429_for_an_unread_body_still_closes_the_connection() {
    let v = Vault::new();
    let writer = v.token("uploader", "writer", None);
    let s = v.serve(&[("KEYHOLD_REFUSAL_BUDGET", "3/min")]);
    let mut answers = Vec::new();
    for _ in 0..8 {
        let a = oversized_post(&s.addr, &writer);
        let spent = a.starts_with("HTTP/1.1 429 ");
        answers.push(a);
        if spent {
            break;
        }
    }
    let first = &answers[0];
    assert!(first.starts_with("HTTP/1.1 413 "), "{first:?}");
    let last = answers.last().unwrap();
    assert!(last.starts_with("HTTP/1.1 429 "), "{answers:#?}");
    let head = last.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(head.contains("\r\nconnection: close"), "{last:?}");
    assert!(head.contains("\r\nretry-after: "), "{last:?}");
}
