//! `/metrics` is private (issue 24, point 5): it needs a token with the
//! `metrics:read` scope (admin, or the `metrics` role); `--metrics-listen`
//! serves it without a token on a loopback address or Unix socket of its
//! own; and it tells apart no more than the answers do. Every test runs the
//! real binary.

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
