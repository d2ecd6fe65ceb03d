//! Every audited refusal is bounded (issue 24, point 2): a valid token's
//! refused requests are coalesced (one record per token, action, outcome
//! and second, with counts that add up), and past the token's refusal
//! budget they are answered 429. Real binary, loopback.

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
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let said: Value = r.json().unwrap();
    assert!(
        said["detail"]
            .as_str()
            .unwrap()
            .contains("refused too often"),
        "{said}"
    );
    s.stop();
    let grew = dir_bytes(&v.dir).saturating_sub(before);
    assert!(
        grew < 1024 * 1024,
        "the data directory grew by {grew} bytes"
    );
    let records: Vec<Value> = v
        .audit_records()
        .into_iter()
        .filter(|r| r["action"] == "rotate" && r["caller"] == "flooder")
        .collect();
    assert!(records.len() <= 24, "{} records", records.len());
    let count = |outcome: &str| -> u64 {
        records
            .iter()
            .filter(|r| r["outcome"] == outcome)
            .map(|r| r["count"].as_u64().unwrap_or(1))
            .sum()
    };
    // Every attempt is counted as what it was (forbidden), those past the
    // budget saying that they were answered 429.
    assert_eq!(count("forbidden"), sent + 1);
    let past: u64 = records
        .iter()
        .filter(|r| r["detail"].as_str().unwrap_or("").contains("answered 429"))
        .map(|r| r["count"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(past, sent + 1 - forbidden);
}
