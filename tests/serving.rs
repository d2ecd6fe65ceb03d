//! Production serving: slow-loris resistance, HTTPS, a Unix socket,
//! graceful shutdown without losing an acknowledged write (and removing
//! only the socket file it made), Prometheus metrics and JSON logs.
//!
//! Over 500 lines: one file for the production listener's cases (TLS, socket, shutdown), which share its server set-ups.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

#[test]
fn slow_loris_connections_neither_exhaust_the_server_nor_delay_reveals() {
    let v = Vault::new();
    let s = v.serve(&[
        ("KEYHOLD_HEADER_TIMEOUT", "2"),
        ("KEYHOLD_REVEAL_RATE", "100000/s"),
    ]);
    let id = Api::new(&s, &v.admin).create_key("claude", "k", "sk-1");
    // 100 connections that send their headers a byte at a time.
    let stop = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(Mutex::new(0usize));
    let mut socks: Vec<std::net::TcpStream> = (0..100)
        .map(|_| {
            let c = std::net::TcpStream::connect(&s.addr).unwrap();
            c.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
            c
        })
        .collect();
    let loris = {
        let (stop, closed) = (stop.clone(), closed.clone());
        std::thread::spawn(move || {
            let line =
                b"GET /api/keys HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            let started = Instant::now();
            let mut i = 0;
            let mut open: Vec<bool> = vec![true; socks.len()];
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(8) {
                for (k, sock) in socks.iter_mut().enumerate() {
                    if !open[k] {
                        continue;
                    }
                    let byte = line[i % line.len()];
                    let mut buf = [0u8; 256];
                    // Closed by the server: a failed write, an end of
                    // stream, or an answer (its 408) before the headers.
                    let gone = sock.write_all(&[byte]).is_err()
                        || match sock.read(&mut buf) {
                            Ok(_) => true,
                            Err(e) => !matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ),
                        };
                    if gone {
                        open[k] = false;
                        *closed.lock().unwrap() += 1;
                    }
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    // Meanwhile reveals are served promptly, well within the header timeout.
    let api = Api::new(&s, &v.admin);
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(api.get(&format!("/api/keys/{id}")).status(), 200);
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(
        worst < Duration::from_secs(2),
        "a reveal waited {worst:?} behind slow clients"
    );
    // The slow connections are closed once their header time is up.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    loris.join().unwrap();
    assert!(
        *closed.lock().unwrap() >= 95,
        "{} of 100 slow connections closed",
        closed.lock().unwrap()
    );
    assert_eq!(api.get("/healthz").status(), 200);
}

#[test]
fn https_round_trip_with_a_private_ca_records_the_client_ip() {
    let v = Vault::new();
    let [ca, cert, key] = tls::certificates(v.tmp.path(), "srv");
    let s = tls::serve(&v, &cert, &key, &[]);
    let ca = ca.to_str().unwrap().to_string();
    assert!(s.base.starts_with("https://"), "{}", s.base);
    let url = s.base.clone();
    let cli = |args: &[&str], ca: Option<&str>| {
        let mut c = keyhold();
        c.env("KEYHOLD_ADDR", &url)
            .env("KEYHOLD_TOKEN", &v.admin)
            .args(args);
        if let Some(ca) = ca {
            c.env("KEYHOLD_CA_CERT", ca);
        }
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    };
    // keys add over TLS, trusting the private CA.
    let mut child = cli(
        &["keys", "add", "--provider", "claude", "--name", "tls"],
        Some(&ca),
    )
    .spawn()
    .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"sk-over-tls")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_ok(&out);
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let out = cli(&["keys", "reveal", &id], Some(&ca)).output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "sk-over-tls\n");
    // Without the CA the certificate is refused.
    let out = cli(&["keys", "reveal", &id], None).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    // Plain HTTP to the TLS port is refused (tests/operator_messages.rs
    // checks what it says).
    let plain = client().get(format!("http://{}/healthz", s.addr)).send();
    assert_eq!(plain.unwrap().status(), 400);
    // A reqwest client over TLS, and the audit record's client IP.
    let pem = std::fs::read(&ca).unwrap();
    let https = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let r = https
        .get(format!("{url}/api/keys/{id}"))
        .bearer_auth(&v.admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    s.stop();
    let recs = v.audit_records();
    let rec = recs
        .iter()
        .find(|r| r["request_id"] == rid.as_str())
        .unwrap();
    assert_eq!(rec["outcome"], "success");
    assert_eq!(rec["ip"], "127.0.0.1");
}

fn unix_request(path: &str, req: &str) -> String {
    let mut sock = std::os::unix::net::UnixStream::connect(path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    sock.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn unix_socket_round_trip_records_the_socket_and_peer() {
    use std::os::unix::fs::PermissionsExt;
    let v = Vault::new();
    let sock = v.tmp.path().join("keyhold.sock");
    let listen = format!("unix:{}", sock.display());
    let s = Server::start_args(
        &["--data-dir", v.dir_str(), "--listen", &listen],
        &[("FERNET_KEY", v.key.as_str())],
    );
    assert_eq!(s.base, listen);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let path = sock.to_str().unwrap();
    let body = r#"{"provider":"claude","key_name":"uds","api_key":"sk-over-uds"}"#;
    let created = unix_request(
        path,
        &format!(
            "POST /api/keys HTTP/1.1\r\nHost: keyhold\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            v.admin,
            body.len()
        ),
    );
    assert!(created.starts_with("HTTP/1.1 200"), "{created}");
    let json: Value = serde_json::from_str(created.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let id = json["id"].as_str().unwrap();
    let revealed = unix_request(
        path,
        &format!("GET /api/keys/{id} HTTP/1.1\r\nHost: keyhold\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n", v.admin),
    );
    assert!(
        revealed.starts_with("HTTP/1.1 200") && revealed.contains("sk-over-uds"),
        "{revealed}"
    );
    // SIGTERM by PID: the socket file goes with the server.
    let (code, _, err) = s.stop();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        std::fs::symlink_metadata(&sock).is_err(),
        "the socket file outlived the server"
    );
    let recs = v.audit_records();
    let rec = recs.iter().find(|r| r["action"] == "reveal").unwrap();
    let ip = rec["ip"].as_str().unwrap();
    assert!(ip.starts_with(&format!("unix:{}", sock.display())), "{ip}");
    assert!(ip.contains("uid=") && ip.contains("pid="), "{ip}");
}

#[test]
fn at_shutdown_only_the_socket_keyhold_bound_is_removed() {
    let v = Vault::new();
    let run = v.tmp.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let (main, metrics) = (run.join("keyhold.sock"), run.join("metrics.sock"));
    // The metrics socket is bound after the "listening" line: wait for it.
    let serve = || {
        let s = Server::start_args(
            &[
                "--data-dir",
                v.dir_str(),
                "--listen",
                &format!("unix:{}", main.display()),
                "--metrics-listen",
                &format!("unix:{}", metrics.display()),
            ],
            &[("FERNET_KEY", v.key.as_str())],
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&metrics).is_err() {
            assert!(
                Instant::now() < deadline,
                "no metrics socket: {}",
                s.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    };
    // Both sockets go at SIGTERM.
    let s = serve();
    assert!(unix_request(
        main.to_str().unwrap(),
        "GET /healthz HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n"
    )
    .starts_with("HTTP/1.1 200"));
    let (code, _, err) = s.stop();
    assert_eq!(code, Some(0), "{err}");
    assert!(std::fs::symlink_metadata(&main).is_err(), "{err}");
    assert!(std::fs::symlink_metadata(&metrics).is_err(), "{err}");

    // Replaced while serving (by whoever can write the directory): a
    // symbolic link to a file, and another program's socket. Neither is
    // removed, nor is the link followed.
    let s = serve();
    let victim = v.tmp.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::fs::remove_file(&main).unwrap();
    std::os::unix::fs::symlink(&victim, &main).unwrap();
    std::fs::remove_file(&metrics).unwrap();
    let other = std::os::unix::net::UnixListener::bind(&metrics).unwrap();
    let (code, _, err) = s.stop();
    assert_eq!(code, Some(0), "{err}");
    assert!(std::fs::symlink_metadata(&main)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(
        std::os::unix::net::UnixStream::connect(&metrics).is_ok(),
        "the other program's socket was removed: {err}"
    );
    assert!(err.contains("was replaced while serving"), "{err}");
    drop(other);
}

#[test]
fn a_socket_in_a_missing_directory_says_to_create_it() {
    let v = Vault::new();
    let sock = v.tmp.path().join("run/keyhold/keyhold.sock");
    let (code, err) = refused_within(
        keyhold()
            .env("FERNET_KEY", &v.key)
            .args(["serve", "--data-dir", v.dir_str()])
            .arg("--listen")
            .arg(format!("unix:{}", sock.display())),
    );
    assert_eq!(code, Some(2), "{err}");
    let dir = v.tmp.path().join("run/keyhold");
    assert!(
        err.contains(&format!("the directory {} does not exist", dir.display()))
            && err.contains("install -d")
            && err.contains("RuntimeDirectory=keyhold"),
        "{err}"
    );
    assert!(!dir.exists(), "serve made the directory");
}

#[test]
fn sigterm_during_a_stream_of_creates_loses_no_acknowledged_write() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let url = s.url("/api/keys");
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (url, token, stop, acked) = (url.clone(), v.admin.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let c = client();
                for i in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let body = serde_json::json!({"provider": "claude", "key_name": format!("w{w}-{i}"), "api_key": format!("sk-{w}-{i}")});
                    match c.post(&url).bearer_auth(&token).json(&body).send() {
                        Ok(r) if r.status() == 200 => {
                            let v: Value = r.json().unwrap();
                            acked.lock().unwrap().push(v["id"].as_str().unwrap().to_string());
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    let (code, _, _) = s.stop();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(code, Some(0), "graceful shutdown exits 0");
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "creates were flowing ({})", acked.len());
    with_unlocked_store(&v.dir, &v.key, |store| {
        for id in &acked {
            assert!(
                store.get_key(&id.parse().unwrap()).unwrap().is_some(),
                "acknowledged create {id} lost"
            );
        }
    });
    let out = run_with_key(&v.key, &["audit", "verify", "--data-dir", v.dir_str()]);
    assert!(out.status.success());
}

/// Parses Prometheus text: name{labels} value, comments allowed.
fn parse_prometheus(text: &str) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let kind = rest.split_whitespace().nth(1).unwrap_or("");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line}"
                );
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                assert!(l.ends_with('}'), "{line}");
                (n, l.trim_end_matches('}'))
            }
            None => (series, ""),
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        out.push((name.to_string(), labels.to_string(), value));
    }
    out
}

fn metric(ms: &[(String, String, f64)], name: &str, label: &str) -> f64 {
    ms.iter()
        .filter(|(n, l, _)| n == name && l.contains(label))
        .map(|(_, _, v)| v)
        .sum()
}

#[test]
fn metrics_parse_as_prometheus_text_and_move() {
    let v = Vault::new();
    let s = v.serve(&[("KEYHOLD_REVEAL_RATE", "3/min")]);
    let api = Api::new(&s, &v.admin);
    let id = api.create_key("claude", "k", "sk-metrics-secret");
    let before = parse_prometheus(&metrics_text(&s, &v.admin));
    for _ in 0..5 {
        api.get(&format!("/api/keys/{id}"));
    }
    let text = metrics_text(&s, &v.admin);
    let after = parse_prometheus(&text);
    let d = |name: &str, label: &str| metric(&after, name, label) - metric(&before, name, label);
    assert_eq!(d("keyhold_reveals_total", "outcome=\"success\""), 3.0);
    assert_eq!(d("keyhold_reveals_total", "outcome=\"rate_limited\""), 2.0);
    assert_eq!(d("keyhold_rate_limited_total", ""), 2.0);
    assert!(d("keyhold_requests_total", "route=\"/api/keys/{id}\"") >= 5.0);
    assert!(metric(&after, "keyhold_audit_batch_size_count", "") >= 1.0);
    assert!(metric(&after, "keyhold_audit_commit_seconds_bucket", "le=\"+Inf\"") >= 1.0);
    assert!(metric(&after, "keyhold_request_duration_seconds_count", "") >= 1.0);
    assert_eq!(metric(&after, "keyhold_keys", ""), 1.0);
    assert!(metric(&after, "keyhold_audit_records", "") >= 4.0);
    // No label carries a key id, a token or a secret.
    for needle in [id.as_str(), v.admin.as_str(), "sk-metrics-secret"] {
        assert!(!text.contains(needle), "{needle} in /metrics");
    }
}

#[test]
fn json_logs_parse_line_by_line_and_hold_no_secret() {
    let v = Vault::new();
    let s = v.serve(&[("KEYHOLD_LOG_FORMAT", "json"), ("KEYHOLD_LOG", "debug")]);
    let api = Api::new(&s, &v.admin);
    let secret = "sk-ant-LOG-MUST-NOT-SHOW";
    let id = api.create_key("claude", "k", secret);
    let r = api.get(&format!("/api/keys/{id}"));
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    Api::anonymous(&s).get("/api/keys");
    let (_, _, stderr) = s.stop();
    let mut request_lines = Vec::new();
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        // Event fields are at the top level of each line (issue 16).
        if v["message"] == "request" {
            request_lines.push(v);
        }
    }
    let reveal = request_lines
        .iter()
        .find(|l| l["request_id"] == rid.as_str())
        .expect("a log line for the reveal");
    let f = reveal;
    assert_eq!(f["route"], "/api/keys/{id}");
    assert_eq!(f["status"], 200);
    assert_eq!(f["client"], "127.0.0.1");
    assert_eq!(f["caller"], "admin");
    assert!(f["latency_ms"].is_number());
    assert!(request_lines.iter().any(|l| l["status"] == 401));
    for needle in [secret, v.admin.as_str(), v.key.as_str(), id.as_str()] {
        assert!(!stderr.contains(needle), "{needle} in the logs");
    }
}

#[test]
fn a_systemd_unit_is_shipped_with_the_hardening() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/keyhold.service"
    ))
    .unwrap();
    for line in [
        "User=keyhold",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/keyhold",
        "PrivateTmp=yes",
        "MemoryDenyWriteExecute=yes",
        // The key file the service reads, again on a reload (issue 16).
        "Environment=FERNET_KEY_FILE=/etc/keyhold/fernet.keys",
        // The directory of the documented socket (issue 25, point 8).
        "RuntimeDirectory=keyhold",
    ] {
        assert!(
            unit.contains(line),
            "{line} missing from scripts/keyhold.service"
        );
    }
    // systemd-analyze, where installed, checks it properly.
    if let Ok(out) = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/keyhold.service"
        ))
        .output()
    {
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(!e.contains("Unknown key") && !e.contains("Invalid"), "{e}");
    }
}
