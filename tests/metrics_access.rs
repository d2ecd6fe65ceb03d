//! `/metrics` is private (issue 24, point 5): it needs a token with the
//! `metrics:read` scope (admin, or the `metrics` role); `--metrics-listen`
//! serves it without a token on a loopback address or Unix socket of its
//! own; and it tells apart no more than the answers do. Every family has
//! its `# HELP` and `# TYPE` lines, and counters are there at 0 from start
//! (issue 25, point 7). Every test runs the real binary.

mod common;

use common::*;
use serde_json::Value;
use std::io::{Read, Write};

fn token(api: &Api, name: &str, body: Value) -> String {
    let mut body = body;
    body["name"] = name.into();
    let r = api.post_json("/api/tokens", &body);
    assert_eq!(r.status(), 200);
    r.json::<Value>().unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn metrics_need_a_token_with_metrics_read() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let admin = Api::new(&s, &v.admin);
    let scraper = token(&admin, "prom", serde_json::json!({"role": "metrics"}));
    let reader = token(&admin, "orch", serde_json::json!({"role": "reader"}));
    let http = client();
    let get = |t: Option<&str>| {
        let mut r = http.get(s.url("/metrics"));
        if let Some(t) = t {
            r = r.bearer_auth(t);
        }
        r.send().unwrap()
    };
    let r = get(None);
    assert_eq!(r.status(), 401);
    assert!(!r.text().unwrap().contains("keyhold_"), "metrics leaked");
    let r = get(Some(&reader));
    assert_eq!(r.status(), 403);
    let body: Value = r.json().unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("metrics:read"),
        "{body}"
    );
    for t in [&scraper, &v.admin] {
        let r = get(Some(t));
        assert_eq!(r.status(), 200);
        assert!(r.text().unwrap().contains("keyhold_build_info"));
    }
    // A provider-limited admin reads no metrics (they cover every
    // provider), and a metrics token cannot be limited.
    let limited = token(
        &admin,
        "claude-admin",
        serde_json::json!({"role": "admin", "providers": ["claude"]}),
    );
    assert_eq!(get(Some(&limited)).status(), 403);
    let r = admin.post_json(
        "/api/tokens",
        &serde_json::json!({"name": "p2", "role": "metrics", "providers": ["claude"]}),
    );
    assert_eq!(r.status(), 422);
    // The metrics role reaches nothing else.
    assert_eq!(Api::new(&s, &scraper).get("/api/keys").status(), 403);
    let who: Value = Api::new(&s, &scraper).get("/api/whoami").json().unwrap();
    assert_eq!(who["scopes"], serde_json::json!(["metrics:read"]));
}

/// One HTTP/1.1 GET over a Unix socket; the whole answer.
fn get_unix(path: &std::path::Path, target: &str) -> String {
    let mut c = std::os::unix::net::UnixStream::connect(path).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        c,
        "GET {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn metrics_listen_serves_them_without_a_token_on_a_local_listener_only() {
    let v = Vault::new();
    let sock = v.tmp.path().join("metrics.sock");
    let listen = format!("unix:{}", sock.display());
    let s = v.serve(&[("KEYHOLD_METRICS_LISTEN", listen.as_str())]);
    let got = get_unix(&sock, "/metrics");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains("keyhold_build_info"), "{got}");
    // A query parameter is refused, as on the main listener.
    let got = get_unix(&sock, "/metrics?format=text");
    assert!(got.starts_with("HTTP/1.1 422"), "{got}");
    assert!(got.contains("takes no query parameters"), "{got}");
    let got = get_unix(&sock, "/api/keys");
    assert!(got.starts_with("HTTP/1.1 404"), "{got}");
    assert!(got.contains("serves GET /metrics only"), "{got}");
    // The main listener still wants a token.
    assert_eq!(
        client().get(s.url("/metrics")).send().unwrap().status(),
        401
    );
    s.stop();

    // Anywhere but loopback or a socket: refused at start, exit 2.
    for addr in ["0.0.0.0:0", "192.0.2.1:9100"] {
        let out = keyhold()
            .env("FERNET_KEY", &v.key)
            .args([
                "serve",
                "--data-dir",
                v.dir_str(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--metrics-listen", addr])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{addr}: {err}");
        assert!(err.contains("only on a loopback address"), "{addr}: {err}");
    }
}

/// The `keyhold_reveals_total{outcome=...}` value, 0 when absent.
fn reveals(text: &str, outcome: &str) -> u64 {
    let want = format!("keyhold_reveals_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(want.as_str()))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_key_beyond_the_callers_providers_counts_as_not_found_in_the_metrics() {
    let v = Vault::new();
    let s = v.serve(&[("KEYHOLD_REVEAL_RATE", "1000/min")]);
    let admin = Api::new(&s, &v.admin);
    let other = admin.create_key("gemini", "main", "AIza-beyond-00001");
    let limited = token(
        &admin,
        "claude-only",
        serde_json::json!({"role": "reader", "providers": ["claude"]}),
    );
    let scrape = || admin.get("/metrics").text().unwrap();
    let before = scrape();
    let as_limited = Api::new(&s, &limited);
    // Another provider's key and a key that does not exist: the same 404.
    let a = as_limited.get(&format!("/api/keys/{other}"));
    let b = as_limited.get(&format!("/api/keys/{}", uuid::Uuid::new_v4()));
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (404, 404));
    let after = scrape();
    assert_eq!(
        reveals(&after, "not_found") - reveals(&before, "not_found"),
        2,
        "{after}"
    );
    assert_eq!(reveals(&after, "forbidden"), reveals(&before, "forbidden"));
    // The audit log still says which was which.
    s.stop();
    let out = run_with_key(
        &v.key,
        &[
            "audit",
            "export",
            "--data-dir",
            v.dir_str(),
            "--caller",
            "claude-only",
        ],
    );
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"outcome\":\"forbidden\""), "{text}");
    assert!(text.contains("\"outcome\":\"not_found\""), "{text}");
}

/// The family a sample line belongs to: its name, less a histogram's
/// `_bucket`/`_sum`/`_count` when `histograms` names it so.
fn family_of<'a>(line: &'a str, histograms: &[&str]) -> &'a str {
    let name = line.split(['{', ' ']).next().unwrap_or_default();
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if histograms.contains(&base) {
                return base;
            }
        }
    }
    name
}

/// The value of the sample `series` (name and labels exactly as printed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|n| n.trim().parse().ok())
}

#[test]
fn every_family_has_help_and_type_and_counters_start_at_zero() {
    let v = Vault::new();
    let s = v.serve(&[]);
    // The first scrape after start: nothing but the harness's /healthz
    // polls has happened.
    let text = metrics_text(&s, &v.admin);
    let mut help = std::collections::BTreeSet::new();
    let mut typed = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, words) = rest.split_once(' ').unwrap();
            assert!(!words.trim().is_empty(), "empty help: {line}");
            help.insert(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                help.contains(name),
                "{name}: its TYPE line has no HELP line before it\n{text}"
            );
            typed.insert(name.to_string(), kind.to_string());
        }
    }
    let histograms: Vec<&str> = typed
        .iter()
        .filter(|(_, k)| *k == "histogram")
        .map(|(n, _)| n.as_str())
        .collect();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let family = family_of(line, &histograms);
        assert!(
            typed.contains_key(family),
            "{family} has samples but no TYPE line\n{text}"
        );
    }
    for (family, kind) in [
        ("keyhold_reveals_total", "counter"),
        ("keyhold_requests_total", "counter"),
        ("keyhold_request_panics_total", "counter"),
        ("keyhold_rate_limited_total", "counter"),
        ("keyhold_connections_refused_total", "counter"),
        ("keyhold_connections_evicted_total", "counter"),
        ("keyhold_connections", "gauge"),
        ("keyhold_build_info", "gauge"),
        ("keyhold_audit_records", "gauge"),
        ("keyhold_limiter_addresses", "gauge"),
        ("keyhold_audit_batch_size", "histogram"),
        ("keyhold_audit_commit_seconds", "histogram"),
    ] {
        assert_eq!(
            typed.get(family).map(String::as_str),
            Some(kind),
            "{family} missing from the first scrape\n{text}"
        );
    }
    // Counters at 0 for every known label, before anything happened.
    for outcome in [
        "success",
        "unauthenticated",
        "forbidden",
        "not_found",
        "expired",
        "decrypt_failed",
        "rate_limited",
        "tampered",
        "deleted",
    ] {
        let series = format!("keyhold_reveals_total{{outcome=\"{outcome}\"}}");
        assert_eq!(sample(&text, &series), Some(0.0), "{series}\n{text}");
    }
    for series in [
        "keyhold_rate_limited_total",
        "keyhold_connections_evicted_total",
        "keyhold_connections_refused_total{reason=\"per_address\"}",
        "keyhold_connections_refused_total{reason=\"total\"}",
        "keyhold_request_panics_total{route=\"/api/keys/{id}\"}",
        "keyhold_request_panics_total{route=\"/api/admin/backup\"}",
        "keyhold_requests_total{route=\"/api/providers/{provider}/key\",method=\"GET\",status=\"200\"}",
        "keyhold_requests_total{route=\"/api/keys\",method=\"POST\",status=\"200\"}",
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series}\n{text}");
    }
    // No label names a client, a key or a token.
    assert!(!text.contains("127.0.0.1"), "{text}");

    // The pre-registered series are the ones the events count.
    let admin = Api::new(&s, &v.admin);
    let missing = admin.get(&format!("/api/keys/{}", uuid::Uuid::new_v4()));
    assert_eq!(missing.status(), 404);
    admin.create_key("claude", "main", "sk-families-000001");
    let text = metrics_text(&s, &v.admin);
    assert_eq!(reveals(&text, "not_found"), 1, "{text}");
    assert_eq!(reveals(&text, "success"), 0, "{text}");
    assert_eq!(
        sample(
            &text,
            "keyhold_requests_total{route=\"/api/keys\",method=\"POST\",status=\"200\"}"
        ),
        Some(1.0),
        "{text}"
    );
}
