//! `GET /api/audit` pages (limit, before_seq/after_seq, order), the
//! per-hour/day counts of `GET /api/audit/stats`, and the public key in
//! `GET /api/audit/verify`: what the console reads, through the API.

mod common;

use common::*;
use serde_json::Value;

fn lines(r: reqwest::blocking::Response) -> (Option<String>, Vec<Value>) {
    assert_eq!(r.status(), 200);
    let more = r
        .headers()
        .get("x-keyhold-more")
        .map(|v| v.to_str().unwrap().to_string());
    let body = r.text().unwrap();
    let recs = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (more, recs)
}

fn seqs(recs: &[Value]) -> Vec<u64> {
    recs.iter().map(|r| r["seq"].as_u64().unwrap()).collect()
}

#[test]
fn limit_and_a_seq_cursor_page_through_the_log_newest_first() {
    let v = Vault::new();
    let auditor = v.token("aud", "auditor", None);
    let s = v.serve(&[("KEYHOLD_REVEAL_RATE", "1000/min")]);
    let admin = Api::new(&s, &v.admin);
    admin.create_key("claude", "k", "sk-1");
    let a = Api::new(&s, &auditor);
    // Seven refused attempts, each at another key id: a token's refusals
    // are coalesced per target and second, so these are seven records.
    for _ in 0..7 {
        let other = uuid::Uuid::new_v4();
        assert_eq!(a.get(&format!("/api/keys/{other}")).status(), 403);
    }
    // Coalesced records are written within a second or two.
    let started = std::time::Instant::now();
    while lines(a.get("/api/audit?outcome=forbidden")).1.len() < 7 {
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // `limit` is honoured (it used to be ignored) and says whether more follow.
    let (more, first) = lines(a.get("/api/audit?outcome=forbidden&order=desc&limit=3"));
    assert_eq!(more.as_deref(), Some("true"));
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|r| r["outcome"] == "forbidden"));
    let s1 = seqs(&first);
    assert!(s1.windows(2).all(|w| w[0] > w[1]), "newest first: {s1:?}");

    let (more, second) = lines(a.get(&format!(
        "/api/audit?outcome=forbidden&order=desc&limit=3&before_seq={}",
        s1[2]
    )));
    assert_eq!(more.as_deref(), Some("true"));
    let (more, third) = lines(a.get(&format!(
        "/api/audit?outcome=forbidden&order=desc&limit=3&before_seq={}",
        seqs(&second)[2]
    )));
    assert_eq!(more.as_deref(), Some("false"));
    assert_eq!(third.len(), 1);
    let mut walked: Vec<u64> = [s1, seqs(&second), seqs(&third)].concat();
    walked.reverse();
    let (more, all) = lines(a.get("/api/audit?outcome=forbidden"));
    assert_eq!(more, None, "an unpaged export is streamed as before");
    assert_eq!(walked, seqs(&all));

    // Oldest first from a cursor.
    let (_, after) = lines(a.get("/api/audit?after_seq=2&limit=2"));
    assert_eq!(seqs(&after), vec![3, 4]);

    // A paged CSV has its header and `limit` rows.
    let r = a.get("/api/audit?format=csv&limit=2&order=desc");
    assert_eq!(r.status(), 200);
    let body = r.text().unwrap();
    assert_eq!(body.lines().count(), 3, "{body}");
    assert!(body.starts_with("seq,at,"));

    // The export's own audit record names the page.
    let (_, newest) = lines(a.get("/api/audit?order=desc&limit=1"));
    let detail = newest[0]["detail"].as_str().unwrap();
    assert!(detail.contains("limit=1 order=desc"), "{detail}");
}

#[test]
fn bad_paging_parameters_and_unknown_ones_are_422_never_ignored() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let a = Api::new(&s, &v.admin);
    for q in [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=ten",
        "before_seq=-1",
        "after_seq=1e3",
        "before_seq=18446744073709551616",
        "order=newest",
        "page=2",
        "lmit=5",
    ] {
        let r = a.get(&format!("/api/audit?{q}"));
        assert_eq!(r.status(), 422, "{q}");
        assert!(!detail(r).is_empty());
    }
    for q in ["bucket=week", "format=csv", "since=yesterday", "limit=5"] {
        let r = a.get(&format!("/api/audit/stats?{q}"));
        assert_eq!(r.status(), 422, "stats {q}");
    }
    let r = a.get("/api/audit/stats?since=1970-01-01T00:00:00Z&until=2026-01-01T00:00:00Z");
    assert_eq!(r.status(), 422, "a span of too many hours");
    let r =
        a.get("/api/audit/stats?bucket=day&since=2026-01-01T00:00:00Z&until=2025-01-01T00:00:00Z");
    assert_eq!(r.status(), 200, "an empty span is empty");
}

#[test]
fn stats_count_attempts_per_bucket_by_outcome_including_coalesced_ones() {
    let v = Vault::new();
    let s = v.serve(&[("KEYHOLD_REVEAL_RATE", "1000/min")]);
    let admin = Api::new(&s, &v.admin);
    let id = admin.create_key("claude", "k", "sk-1");
    for _ in 0..3 {
        assert_eq!(admin.get(&format!("/api/keys/{id}")).status(), 200);
    }
    let anon = Api::anonymous(&s);
    for _ in 0..12 {
        assert_eq!(anon.get(&format!("/api/keys/{id}")).status(), 401);
    }
    // Token-less attempts are coalesced and written within a second or so.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let counts = loop {
        let r = admin.get("/api/audit/stats?action=reveal&bucket=day");
        assert_eq!(r.status(), 200);
        let body: Value = r.json().unwrap();
        assert_eq!(body["bucket"], "day");
        let mut success = 0;
        let mut unauth = 0;
        for b in body["buckets"].as_array().unwrap() {
            success += b["counts"]["success"].as_u64().unwrap_or(0);
            unauth += b["counts"]["unauthenticated"].as_u64().unwrap_or(0);
        }
        if unauth == 12 || std::time::Instant::now() > deadline {
            break (success, unauth);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(counts, (3, 12));
    // Hourly buckets start on the hour.
    let body: Value = admin.get("/api/audit/stats").json().unwrap();
    for b in body["buckets"].as_array().unwrap() {
        assert!(b["start"].as_str().unwrap().contains(":00:00"), "{b}");
    }
}

#[test]
fn verify_names_the_public_key_that_audit_public_key_prints() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let report: Value = Api::new(&s, &v.admin)
        .get("/api/audit/verify")
        .json()
        .unwrap();
    assert_eq!(report["status"], "ok");
    assert!(report["head_seq"].as_u64().is_some());
    let served = report["public_key"].as_str().unwrap().to_string();
    s.stop();
    let out = run_with_key(&v.key, &["audit", "public-key", "--data-dir", v.dir_str()]);
    assert_ok(&out);
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), served);
}
