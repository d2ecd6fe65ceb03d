//! keyhold on PostgreSQL (issue 17): a server of the test's own
//! (`common::postgres`), the real binary, one or several nodes on one
//! database.
//!
//! Over 800 lines: every multi-node scenario needs its own cluster set-up
//! (to be split by topic with issue 26; new suites go to files of their own).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::postgres::{cluster, Cluster};
use common::*;
use serde_json::Value;

/// An initialised store in a database of its own on `pg`.
struct PgVault {
    url: String,
    key: String,
    admin: String,
    tmp: tempfile::TempDir,
}

impl PgVault {
    fn new(pg: &Cluster, db: &str) -> PgVault {
        let url = pg.database(db);
        let key = keygen();
        let out = run_with_key(&key, &["init", "--database-url", &url]);
        assert_ok(&out);
        let admin = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(admin.starts_with("kh_"));
        PgVault {
            url,
            key,
            admin,
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    /// `keyhold serve --database-url URL --node-name NAME` with `env`.
    fn serve(&self, node: &str, env: &[(&str, &str)]) -> Server {
        pg_rate(&self.url, &self.key, env);
        let mut all = vec![("FERNET_KEY", self.key.as_str())];
        all.extend_from_slice(env);
        Server::start_args(
            &[
                "--database-url",
                &self.url,
                "--node-name",
                node,
                "--listen",
                "127.0.0.1:0",
            ],
            &all,
        )
    }

    /// Runs an offline command with `--database-url`.
    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--database-url", &self.url]);
        run_with_key(&self.key, &all)
    }

    fn audit_records(&self) -> Vec<Value> {
        let out = self.run(&["audit", "export"]);
        assert_ok(&out);
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The audit log read straight from the database (no command: a
    /// store that differs from its signed state is refused by them all).
    fn audit_records_raw(&self) -> Vec<Value> {
        let url: keyhold::internals::store::DatabaseUrl = self.url.parse().unwrap();
        let opts = keyhold::internals::store::PgOptions::new(url, None, "reader".into());
        let store = keyhold::internals::store::Store::connect(&opts, false).unwrap();
        store
            .audit_iter(0)
            .map(|r| {
                let (_, b) = r.unwrap();
                let rec = keyhold::internals::audit::AuditRecord::decode(&b).unwrap();
                serde_json::to_value(rec.to_export()).unwrap()
            })
            .collect()
    }

    /// `audit verify` on the database: (exit 0, report).
    fn verify(&self) -> (bool, String) {
        let out = self.run(&["audit", "verify"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// An export and the public key; then `audit verify --file --public-key`.
    fn verify_export_with_public_key(&self) {
        let file = self.tmp.path().join("export.jsonl");
        let out = self.run(&["audit", "export", "--output", file.to_str().unwrap()]);
        assert_ok(&out);
        let pk = self.run(&["audit", "public-key"]);
        assert_ok(&pk);
        let pk = String::from_utf8(pk.stdout).unwrap().trim().to_string();
        let out = keyhold()
            .args(["audit", "verify", "--file", file.to_str().unwrap()])
            .args(["--public-key", &pk])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn reveal(api: &Api, id: &str) -> reqwest::blocking::Response {
    api.get(&format!("/api/keys/{id}"))
}

#[test]
fn setting_both_a_data_dir_and_a_database_url_is_an_error_naming_both() {
    let out = keyhold()
        .args(["init", "--data-dir", "/tmp/x", "--database-url"])
        .arg("postgres://kh:hunter2-secret@127.0.0.1:1/db")
        .env("FERNET_KEY", keygen())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--data-dir") && err.contains("--database-url"),
        "{err}"
    );
    assert!(!err.contains("hunter2-secret"), "{err}");
    // The same through the environment.
    let out = keyhold()
        .args(["audit", "verify"])
        .env("KEYHOLD_DATA_DIR", "/tmp/x")
        .env(
            "KEYHOLD_DATABASE_URL",
            "postgres://kh:hunter2-secret@127.0.0.1:1/db",
        )
        .env("FERNET_KEY", keygen())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--data-dir") && err.contains("--database-url"),
        "{err}"
    );
    assert!(!err.contains("hunter2-secret"), "{err}");
}

#[test]
fn a_malformed_database_url_is_refused_without_echoing_it() {
    let out = run_with_key(
        &keygen(),
        &[
            "check",
            "--database-url",
            "postgres://kh:hunter2-secret@127.0.0.1:1/db?sslmode=sometimes",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sslmode"), "{err}");
    assert!(!err.contains("hunter2-secret"), "{err}");
}

#[test]
fn an_unreachable_database_is_a_quick_clear_error_without_the_password() {
    let started = Instant::now();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run_with_key(
        &keygen(),
        &[
            "audit",
            "verify",
            "--database-url",
            &format!("postgres://kh:hunter2-secret@127.0.0.1:{port}/db"),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("database"), "{err}");
    assert!(!err.contains("hunter2-secret"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn one_node_serves_the_api_and_the_database_holds_no_secret_in_clear() {
    let Some(pg) = cluster() else { return };
    let v = PgVault::new(&pg, "single");
    // init twice is refused, nothing changed.
    let again = run_with_key(&v.key, &["init", "--database-url", &v.url]);
    assert_eq!(again.status.code(), Some(2));
    let s = v.serve("node-a", &[]);
    let api = Api::new(&s, &v.admin);
    let id = api.create_key("claude", "main", "sk-ant-plaintext-123456");
    let r = reveal(&api, &id);
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().unwrap()["api_key"],
        "sk-ant-plaintext-123456"
    );
    let r = api.get("/api/providers/claude/key");
    assert_eq!(r.status(), 200);
    let list: Value = api.get("/api/keys").json().unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0]["last_used"].is_string(), "{list}");
    assert_eq!(
        api.get("/api/keys/00000000-0000-0000-0000-000000000000")
            .status(),
        404
    );
    let del = api.delete(&format!("/api/keys/{id}"));
    assert_eq!(del.status(), 200);
    assert_eq!(reveal(&api, &id).status(), 404);
    let health: Value = common::client()
        .get(s.url("/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["node"], "node-a");
    let (_, out, err) = s.stop();
    assert!(!out.contains(&v.admin) && !err.contains(&v.admin));
    // Nothing secret in the database: no API key, no token, no Fernet key.
    let dump = pg.psql(
        "single",
        "SELECT string_agg(encode(v, 'escape'), '') FROM (SELECT v FROM keyhold_meta UNION ALL \
         SELECT v FROM keyhold_keys UNION ALL SELECT v FROM keyhold_tokens UNION ALL \
         SELECT k FROM keyhold_tokens UNION ALL SELECT v FROM keyhold_audit) t",
    );
    assert!(dump.len() > 1000, "the dump holds the records");
    for secret in ["sk-ant-plaintext-123456", v.admin.as_str(), v.key.as_str()] {
        assert!(!dump.contains(secret), "{secret} is in the database");
    }
    // Every record names its node, and the chain verifies, with the
    // keyring and with the public key alone.
    let recs = v.audit_records();
    assert!(recs.iter().any(|r| r["node"] == "node-a"), "{recs:?}");
    let (ok, report) = v.verify();
    assert!(ok, "{report}");
    v.verify_export_with_public_key();
    let check = v.run(&["check"]);
    assert_ok(&check);
    // A database migrated by a newer keyhold is refused, by every command.
    pg.psql(
        "single",
        "INSERT INTO keyhold_schema (version) VALUES (999)",
    );
    for args in [&["check"][..], &["init"][..]] {
        let out = v.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("newer") && err.contains("999"), "{err}");
    }
}

#[test]
fn two_nodes_share_keys_one_chain_and_concurrent_reveals_verify() {
    let Some(pg) = cluster() else { return };
    let v = PgVault::new(&pg, "pair");
    let env = [("KEYHOLD_REVEAL_RATE", "100000/s")];
    let a = v.serve("node-a", &env);
    let b = v.serve("node-b", &env);
    let id = Api::new(&a, &v.admin).create_key("openai", "k1", "sk-openai-abcdef");
    // Created on one node, revealed on the other.
    let r = reveal(&Api::new(&b, &v.admin), &id);
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap()["api_key"], "sk-openai-abcdef");
    // Concurrent reveals on both nodes.
    let ok = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|scope| {
        for n in 0..8 {
            let server = if n % 2 == 0 { &a } else { &b };
            let (ok, id, admin) = (ok.clone(), id.clone(), v.admin.clone());
            scope.spawn(move || {
                let api = Api::new(server, &admin);
                for _ in 0..25 {
                    if reveal(&api, &id).status() == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(ok.load(Ordering::Relaxed), 200, "every reveal answered 200");
    // A token made on one node works on the other.
    let t = Api::new(&b, &v.admin).post_json(
        "/api/tokens",
        &serde_json::json!({"name": "bot", "role": "reader"}),
    );
    assert_eq!(t.status(), 200, "{:?}", t.text());
    let token = t.json::<Value>().unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(reveal(&Api::new(&a, &token), &id).status(), 200);
    drop((a, b));
    let recs = v.audit_records();
    let reveals = |node: &str| {
        recs.iter()
            .filter(|r| r["action"] == "reveal" && r["outcome"] == "success" && r["node"] == node)
            .count()
    };
    assert!(
        reveals("node-a") >= 100 && reveals("node-b") >= 100,
        "{}",
        recs.len()
    );
    let seqs: Vec<u64> = recs.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "one gapless chain"
    );
    let (ok, report) = v.verify();
    assert!(ok, "{report}");
    v.verify_export_with_public_key();
}

#[test]
fn three_nodes_give_a_client_one_reveal_budget() {
    let Some(pg) = cluster() else { return };
    let v = PgVault::new(&pg, "budget");
    let env = [("KEYHOLD_REVEAL_RATE", "6/min")];
    let nodes = [
        v.serve("n1", &env),
        v.serve("n2", &env),
        v.serve("n3", &env),
    ];
    let id = Api::new(&nodes[0], &v.admin).create_key("claude", "k", "sk-limit-1");
    let mut allowed = 0;
    let mut limited = 0;
    for i in 0..18 {
        let r = reveal(&Api::new(&nodes[i % 3], &v.admin), &id);
        match r.status().as_u16() {
            200 => allowed += 1,
            429 => {
                assert!(r.headers().get("retry-after").is_some());
                limited += 1
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(allowed, 6, "three nodes, one budget of 6");
    assert_eq!(limited, 12);
}

#[test]
fn a_node_killed_under_load_loses_no_acknowledged_write() {
    let Some(pg) = cluster() else { return };
    let v = PgVault::new(&pg, "crash");
    let env = [("KEYHOLD_REVEAL_RATE", "100000/s")];
    let a = v.serve("node-a", &env);
    let b = v.serve("node-b", &env);
    let id = Api::new(&b, &v.admin).create_key("claude", "k", "sk-crash-1");
    let acked: Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::scope(|scope| {
        for n in 0..6 {
            let server = if n % 2 == 0 { &a } else { &b };
            let (acked, stop, id, admin) =
                (acked.clone(), stop.clone(), id.clone(), v.admin.clone());
            scope.spawn(move || {
                let api = Api::new(server, &admin);
                while !stop.load(Ordering::Relaxed) {
                    let Ok(r) = api
                        .req(reqwest::Method::GET, &format!("/api/keys/{id}"))
                        .send()
                    else {
                        continue;
                    };
                    if r.status() == 200 {
                        if let Some(rid) = r.headers().get("x-request-id") {
                            acked
                                .lock()
                                .unwrap()
                                .push(rid.to_str().unwrap().to_string());
                        }
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(1500));
        let pid = a.pid();
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        std::thread::sleep(Duration::from_millis(1000));
        stop.store(true, Ordering::Relaxed);
    });
    drop(a);
    drop(b);
    let recs = v.audit_records();
    let written: std::collections::HashSet<&str> = recs
        .iter()
        .filter_map(|r| r["request_id"].as_str())
        .collect();
    let acked = acked.lock().unwrap();
    assert!(acked.len() > 20, "load ran: {}", acked.len());
    let lost: Vec<&String> = acked
        .iter()
        .filter(|r| !written.contains(r.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged reveals have no record",
        lost.len()
    );
    let (ok, report) = v.verify();
    assert!(ok, "no half-written chain: {report}");
}

#[test]
fn the_database_stopped_under_load_means_503_then_service_resumes_by_itself() {
    let Some(mut pg) = cluster() else { return };
    let v = PgVault::new(&pg, "outage");
    let s = v.serve(
        "node-a",
        &[
            ("KEYHOLD_REVEAL_RATE", "100000/s"),
            ("KEYHOLD_AUDIT_TIMEOUT_MS", "2000"),
            ("KEYHOLD_DATABASE_TIMEOUT_MS", "1000"),
        ],
    );
    let api = Api::new(&s, &v.admin);
    let id = api.create_key("claude", "k", "sk-outage-secret");
    assert_eq!(reveal(&api, &id).status(), 200);
    pg.halt();
    let started = Instant::now();
    let r = reveal(&api, &id);
    assert_eq!(r.status(), 503);
    let body = r.text().unwrap();
    assert!(!body.contains("sk-outage-secret"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    // /healthz says why, within a few probes.
    let deadline = Instant::now() + Duration::from_secs(10);
    let health = loop {
        let r = common::client().get(s.url("/healthz")).send().unwrap();
        if r.status() == 503 || Instant::now() > deadline {
            break r.json::<Value>().unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(health["storage"], "unreachable", "{health}");
    assert!(
        health["detail"]
            .as_str()
            .is_some_and(|d| d.contains("database")),
        "{health}"
    );
    pg.boot();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = reveal(&api, &id);
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "service did not resume");
        std::thread::sleep(Duration::from_millis(250));
    }
    let r = common::client().get(s.url("/healthz")).send().unwrap();
    assert_eq!(r.status(), 200);
    let (_, out, err) = s.stop();
    assert!(!out.contains("sk-outage-secret") && !err.contains("sk-outage-secret"));
    let (ok, report) = v.verify();
    assert!(ok, "{report}");
}

#[test]
fn migrate_moves_a_store_both_ways_with_its_chain_verifiable() {
    let Some(pg) = cluster() else { return };
    let sled = Vault::new();
    let s = sled.serve(&[]);
    let api = Api::new(&s, &sled.admin);
    let id = api.create_key("claude", "k", "sk-migrate-1");
    for _ in 0..3 {
        assert_eq!(reveal(&api, &id).status(), 200);
    }
    s.stop();
    let url = pg.database("moved");
    let out = run_with_key(
        &sled.key,
        &[
            "migrate",
            "--from-data-dir",
            sled.dir_str(),
            "--to-database-url",
            &url,
        ],
    );
    assert_ok(&out);
    let v = PgVault {
        url: url.clone(),
        key: sled.key.clone(),
        admin: sled.admin.clone(),
        tmp: tempfile::tempdir().unwrap(),
    };
    let (ok, report) = v.verify();
    assert!(ok, "{report}");
    let s = v.serve("node-a", &[]);
    let r = reveal(&Api::new(&s, &sled.admin), &id);
    assert_eq!(r.json::<Value>().unwrap()["api_key"], "sk-migrate-1");
    drop(s);
    // A second migration into the same database is refused.
    let again = run_with_key(
        &sled.key,
        &[
            "migrate",
            "--from-data-dir",
            sled.dir_str(),
            "--to-database-url",
            &url,
        ],
    );
    // Before anything is copied, as a setup problem (exit 2), saying what
    // to migrate into instead.
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    assert!(
        stderr(&again).contains(
            "the target is not empty: it already holds a keyhold store (or audit records). Use \
             a new or empty data directory, or a database without keyhold's records; nothing \
             was changed"
        ),
        "{}",
        stderr(&again)
    );
    // And back to a new directory.
    let back = sled.tmp.path().join("back");
    let out = run_with_key(
        &sled.key,
        &[
            "migrate",
            "--from-database-url",
            &url,
            "--to-data-dir",
            back.to_str().unwrap(),
        ],
    );
    assert_ok(&out);
    let out = run_with_key(
        &sled.key,
        &["audit", "verify", "--data-dir", back.to_str().unwrap()],
    );
    assert_ok(&out);
    let recs = {
        let out = run_with_key(
            &sled.key,
            &["audit", "export", "--data-dir", back.to_str().unwrap()],
        );
        assert_ok(&out);
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(
        recs.contains("\"node\":\"node-a\""),
        "records of the PostgreSQL node kept"
    );
    let s = Server::start(&back, &[("FERNET_KEY", sled.key.as_str())]);
    let r = reveal(&Api::new(&s, &sled.admin), &id);
    assert_eq!(r.status(), 200);
}

#[test]
fn backup_of_a_database_restores_into_another_database() {
    let Some(pg) = cluster() else { return };
    let v = PgVault::new(&pg, "origin");
    let s = v.serve("node-a", &[]);
    let id = Api::new(&s, &v.admin).create_key("claude", "k", "sk-backup-1");
    drop(s);
    let file = v.tmp.path().join("b.khb");
    let out = v.run(&["backup", file.to_str().unwrap()]);
    assert_ok(&out);
    let url = pg.database("restored");
    // An empty database is no store yet: said with the init to run.
    let out = run_with_key(&v.key, &["check", "--database-url", &url]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("holds no keyhold store: run `keyhold init --database-url URL` first"),
        "{}",
        stderr(&out)
    );
    let out = run_with_key(
        &v.key,
        &["restore", file.to_str().unwrap(), "--database-url", &url],
    );
    assert_ok(&out);
    // A second restore into the same database is refused the same way.
    let again = run_with_key(
        &v.key,
        &["restore", file.to_str().unwrap(), "--database-url", &url],
    );
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("it already holds a keyhold store"),
        "{}",
        stderr(&again)
    );
    let w = PgVault {
        url,
        key: v.key.clone(),
        admin: v.admin.clone(),
        tmp: tempfile::tempdir().unwrap(),
    };
    let (ok, report) = w.verify();
    assert!(ok, "{report}");
    let s = w.serve("node-b", &[]);
    let r = reveal(&Api::new(&s, &v.admin), &id);
    assert_eq!(r.json::<Value>().unwrap()["api_key"], "sk-backup-1");
}

#[test]
fn tls_to_the_database_is_rustls_and_verifies_the_server() {
    let Some(mut pg) = cluster() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let [ca, cert, key] = tls::certificates(tmp.path(), "good");
    let [other_ca, _, _] = tls::certificates(tmp.path(), "other");
    pg.psql("postgres", "CREATE DATABASE secure");
    pg.require_tls(&cert, &key);
    let fernet = keygen();
    let base = format!("postgres://keyhold@localhost:{}/secure", pg.port);
    // In clear: the server refuses (hostssl only).
    let out = run_with_key(&fernet, &["init", "--database-url", &base]);
    assert!(!out.status.success());
    // TLS with a CA that did not sign the server's certificate: refused.
    let out = run_with_key(
        &fernet,
        &[
            "init",
            "--database-url",
            &format!("{base}?sslmode=verify-full"),
            "--database-ca",
            other_ca.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success(), "an unverified server was accepted");
    // TLS verified against the right CA (from the URL's sslrootcert).
    let url = format!("{base}?sslmode=verify-full&sslrootcert={}", ca.display());
    let out = run_with_key(&fernet, &["init", "--database-url", &url]);
    assert_ok(&out);
    let ssl = pg.psql_local("secure", "SELECT count(*) FROM keyhold_audit");
    assert!(ssl.trim().parse::<u64>().unwrap() >= 2, "{ssl}");
    let out = run_with_key(&fernet, &["audit", "verify", "--database-url", &url]);
    assert_ok(&out);
}

#[test]
fn a_rotation_on_one_node_stops_the_others_signing_until_they_restart() {
    let Some(pg) = cluster() else { return };
    let v = PgVault::new(&pg, "rotation");
    let new = keygen();
    let both = format!("{new},{}", v.key);
    let serve = |node: &str| {
        Server::start_args(
            &[
                "--database-url",
                &v.url,
                "--node-name",
                node,
                "--listen",
                "127.0.0.1:0",
            ],
            &[("FERNET_KEYS", both.as_str())],
        )
    };
    let a = serve("node-a");
    let b = serve("node-b");
    let id = Api::new(&a, &v.admin).create_key("claude", "k", "sk-rotate-1");
    assert_eq!(reveal(&Api::new(&b, &v.admin), &id).status(), 200);
    let r = Api::new(&a, &v.admin).post_json("/api/admin/rotate", &serde_json::json!({}));
    assert_eq!(r.status(), 200, "{:?}", r.text());
    assert_eq!(reveal(&Api::new(&a, &v.admin), &id).status(), 200);
    // node-b still holds the old signing key: it refuses rather than sign
    // records that would not verify, and says why.
    let r = reveal(&Api::new(&b, &v.admin), &id);
    assert_eq!(r.status(), 503);
    let health: Value = common::client()
        .get(b.url("/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    // (Its token's record moved with the rotation's new record MAC
    // secret, which node-b does not hold: it says so, as it would of the
    // signing key.)
    assert!(
        health["detail"]
            .as_str()
            .is_some_and(|d| d.contains("signing key") || d.contains("record keys")),
        "{health}"
    );
    drop(b);
    let b = serve("node-b");
    assert_eq!(reveal(&Api::new(&b, &v.admin), &id).status(), 200);
    drop((a, b));
    let out = run_with_key(&new, &["audit", "verify", "--database-url", &v.url]);
    assert_ok(&out);
}

#[test]
fn a_failover_to_a_synchronous_standby_keeps_every_acknowledged_reveal() {
    let Some(primary) = cluster() else { return };
    let url1 = primary.database("failover");
    let key = keygen();
    let out = run_with_key(&key, &["init", "--database-url", &url1]);
    assert_ok(&out);
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let standby = primary.standby();
    // Synchronous replication: a commit is acknowledged once the standby
    // has it.
    primary.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = '*'",
    );
    primary.psql("postgres", "SELECT pg_reload_conf()");
    let url = format!(
        "postgres://keyhold@127.0.0.1:{},127.0.0.1:{}/failover?target_session_attrs=read-write",
        primary.port, standby.port
    );
    let v = PgVault {
        url,
        key,
        admin,
        tmp: tempfile::tempdir().unwrap(),
    };
    let s = v.serve(
        "node-a",
        &[
            ("KEYHOLD_REVEAL_RATE", "100000/s"),
            ("KEYHOLD_DATABASE_TIMEOUT_MS", "1000"),
            ("KEYHOLD_AUDIT_TIMEOUT_MS", "2000"),
        ],
    );
    let id = Api::new(&s, &v.admin).create_key("claude", "k", "sk-failover-1");
    let acked: Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let (acked, stop, refused, id, admin) = (
                acked.clone(),
                stop.clone(),
                refused.clone(),
                id.clone(),
                v.admin.clone(),
            );
            let s = &s;
            scope.spawn(move || {
                let api = Api::new(s, &admin);
                while !stop.load(Ordering::Relaxed) {
                    let Ok(r) = api
                        .req(reqwest::Method::GET, &format!("/api/keys/{id}"))
                        .send()
                    else {
                        continue;
                    };
                    match r.status().as_u16() {
                        200 => {
                            let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
                            acked.lock().unwrap().push(rid);
                        }
                        503 => {
                            assert!(!r.text().unwrap().contains("sk-failover-1"));
                            refused.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        other => panic!("unexpected {other}"),
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(1000));
        let before = acked.lock().unwrap().len();
        assert!(before > 10, "load ran before the failover: {before}");
        primary.halt();
        standby.promote();
        // Service resumes on the new primary without restarting keyhold.
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked.lock().unwrap().len() < before + 20 {
            assert!(
                Instant::now() < deadline,
                "service did not resume after the failover"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
    });
    drop(s);
    let recs = v.audit_records();
    let written: std::collections::HashSet<&str> = recs
        .iter()
        .filter_map(|r| r["request_id"].as_str())
        .collect();
    let acked = acked.lock().unwrap();
    let lost = acked
        .iter()
        .filter(|r| !written.contains(r.as_str()))
        .count();
    assert_eq!(lost, 0, "acknowledged reveals lost across the failover");
    let (ok, report) = v.verify();
    assert!(ok, "{report}");
    eprintln!(
        "failover: {} acknowledged, {} refused with 503 meanwhile",
        acked.len(),
        refused.load(Ordering::Relaxed)
    );
}

/// A database at migration 1 (before `keyhold_token_usage` and
/// `keyhold_changes`) is brought to the newest migration in place by the
/// first command that opens it, keeps its tokens, and records their last
/// use from then on.
#[test]
fn a_database_at_migration_1_is_migrated_to_the_newest_in_place_on_open() {
    let Some(pg) = cluster() else { return };
    let v = PgVault::new(&pg, "older");
    pg.psql(
        "older",
        "DROP TABLE keyhold_token_usage; DROP TABLE keyhold_changes; \
         DELETE FROM keyhold_schema WHERE version >= 2",
    );
    let at = |pg: &Cluster| {
        pg.psql(
            "older",
            "SELECT max(version) || ' ' || (to_regclass('keyhold_token_usage') IS NOT NULL) \
             || ' ' || (to_regclass('keyhold_changes') IS NOT NULL) FROM keyhold_schema",
        )
    };
    assert!(at(&pg).contains("1 false false"), "{}", at(&pg));
    let out = v.run(&["token", "list", "--format", "json"]);
    assert_ok(&out);
    assert!(at(&pg).contains("3 true true"), "{}", at(&pg));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(list[0]["last_used"].is_null(), "{list}");
    // From then on a use of a token is recorded with its audit record.
    let s = v.serve("node-a", &[]);
    let api = Api::new(&s, &v.admin);
    api.create_key("claude", "main", "sk-ant-migrated-0001");
    let list: Value = api.get("/api/tokens").json().unwrap();
    assert!(list[0]["last_used"].is_string(), "{list}");
    s.stop();
    let (ok, report) = v.verify();
    assert!(ok, "{report}");
}

#[test]
fn key_and_token_changes_on_two_nodes_are_serialised() {
    let Some(pg) = cluster() else { return };
    let v = PgVault::new(&pg, "writes");
    let env = [("KEYHOLD_KEEP_VERSIONS", "50")];
    let a = v.serve("node-a", &env);
    let b = v.serve("node-b", &env);
    let id = Api::new(&a, &v.admin).create_key("claude", "busy", "sk-0");
    // New versions of one key from both nodes at once: every one gets its
    // own number (the lock is taken in the database, not only per node).
    let numbers = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for t in 0..4 {
            let server = if t % 2 == 0 { &a } else { &b };
            let (id, numbers, admin) = (&id, &numbers, &v.admin);
            scope.spawn(move || {
                let api = Api::new(server, admin);
                for n in 0..5 {
                    let r = api
                        .req(reqwest::Method::PUT, &format!("/api/keys/{id}"))
                        .json(&serde_json::json!({"api_key": format!("sk-{t}-{n}")}))
                        .send()
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    let meta: Value = r.json().unwrap();
                    numbers
                        .lock()
                        .unwrap()
                        .push(meta["version"].as_u64().unwrap());
                }
            });
        }
    });
    let mut numbers = numbers.into_inner().unwrap();
    numbers.sort();
    assert_eq!(numbers, (2..=21).collect::<Vec<u64>>());
    // A delete on one node and a new version on the other: the delete is
    // never undone (whichever comes second sees the other's result).
    let id2 = Api::new(&a, &v.admin).create_key("claude", "race", "sk-r");
    std::thread::scope(|scope| {
        let (id2, admin, a, b) = (&id2, &v.admin, &a, &b);
        scope.spawn(move || Api::new(a, admin).delete(&format!("/api/keys/{id2}")));
        scope.spawn(move || {
            Api::new(b, admin)
                .req(reqwest::Method::PUT, &format!("/api/keys/{id2}"))
                .json(&serde_json::json!({"api_key": "sk-r2"}))
                .send()
                .unwrap()
        });
    });
    let r = reveal(&Api::new(&b, &v.admin), &id2);
    assert_eq!(r.status(), 404, "the delete was undone");
    drop((a, b));
    let (ok, report) = v.verify();
    assert!(ok, "{report}");
}

/// Someone who can write the database (not the Fernet key) edits a key
/// record, token records and an audit record: each is refused and
/// recorded, or reported by `audit verify`, as on sled.
#[test]
fn records_edited_in_the_database_are_refused_and_the_log_reports_them() {
    let Some(pg) = cluster() else { return };
    let v = PgVault::new(&pg, "tampered");
    let s = v.serve("node-a", &[]);
    let api = Api::new(&s, &v.admin);
    let id = api.create_key("claude", "main", "sk-ant-edited-123456");
    let reader = api.post_json(
        "/api/tokens",
        &serde_json::json!({"name": "bot", "role": "reader"}),
    );
    let reader: Value = reader.json().unwrap();
    let reader = reader["token"].as_str().unwrap().to_string();
    assert_eq!(reveal(&Api::new(&s, &reader), &id).status(), 200);
    let keys = rows(&pg, "tampered", "keyhold_keys");
    let tokens = rows(&pg, "tampered", "keyhold_tokens");

    // With the node running (a superuser's edit): the key record's last
    // byte (inside its MAC) flipped.
    pg.psql(
        "tampered",
        "UPDATE keyhold_keys SET v = set_byte(v, length(v) - 1, get_byte(v, length(v) - 1) # 1)",
    );
    let r = reveal(&Api::new(&s, &v.admin), &id);
    assert_eq!(r.status(), 409, "an edited key record is refused");
    assert!(detail(r).contains("integrity"));
    // Every token record's last byte flipped: the reader is refused.
    pg.psql(
        "tampered",
        "UPDATE keyhold_tokens SET v = set_byte(v, length(v) - 1, get_byte(v, length(v) - 1) # 1)",
    );
    let r = reveal(&Api::new(&s, &reader), &id);
    assert_eq!(r.status(), 401, "an edited token record is refused");
    drop(s);
    let recs = v.audit_records_raw();
    assert!(
        recs.iter()
            .any(|r| r["action"] == "reveal" && r["outcome"] == "tampered"),
        "{recs:?}"
    );
    assert!(
        recs.iter()
            .any(|r| r["action"] == "authenticate" && r["outcome"] == "tampered"),
        "{recs:?}"
    );
    // Stopped, the store no longer matches its signed state: refused.
    let out = v.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(2));
    // The records put back as they were: the store opens again.
    write_back(&pg, "tampered", "keyhold_keys", &keys);
    write_back(&pg, "tampered", "keyhold_tokens", &tokens);
    let (ok, report) = v.verify();
    assert!(ok, "the log itself was not touched yet: {report}");
    // One audit record's last byte flipped: verify names it.
    pg.psql(
        "tampered",
        "UPDATE keyhold_audit SET v = set_byte(v, length(v) - 1, get_byte(v, length(v) - 1) # 1) \
         WHERE seq = 3",
    );
    let (ok, report) = v.verify();
    assert!(!ok, "{report}");
    assert!(report.contains('3'), "{report}");
}

/// Each row of `table` as `hex(k):hex(v)`.
fn rows(pg: &Cluster, db: &str, table: &str) -> Vec<(String, String)> {
    pg.psql(
        db,
        &format!("SELECT encode(k, 'hex') || ':' || encode(v, 'hex') FROM {table} ORDER BY k"),
    )
    .lines()
    .filter_map(|l| l.split_once(':'))
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Writes rows back into `table` as they were (a superuser putting a dead
/// tuple back, with the node running).
fn write_back(pg: &Cluster, db: &str, table: &str, rows: &[(String, String)]) {
    for (k, v) in rows {
        pg.psql(
            db,
            &format!(
                "INSERT INTO {table} (k, v) VALUES (decode('{k}', 'hex'), decode('{v}', 'hex')) \
                 ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
            ),
        );
    }
}

#[test]
fn older_records_written_back_while_the_node_runs_are_refused_at_their_first_use() {
    let Some(pg) = cluster() else { return };
    let v = PgVault::new(&pg, "replayed");
    let s = v.serve("node-a", &[]);
    let api = Api::new(&s, &v.admin);
    let made: Value = api
        .post_json(
            "/api/tokens",
            &serde_json::json!({"name": "old-admin", "role": "admin"}),
        )
        .json()
        .unwrap();
    let old_admin = made["token"].as_str().unwrap().to_string();
    let old_id = made["id"].as_str().unwrap().to_string();
    let purged = api.create_key("claude", "main", "sk-ant-purged-000001");
    let deleted = api.create_key("gemini", "main", "AIza-deleted-000002");
    // What a superuser can read back later from the dead tuples.
    let tokens = rows(&pg, "replayed", "keyhold_tokens");
    let keys = rows(&pg, "replayed", "keyhold_keys");
    let index = rows(&pg, "replayed", "keyhold_by_provider");

    assert_eq!(api.delete(&format!("/api/tokens/{old_id}")).status(), 200);
    assert_eq!(Api::new(&s, &old_admin).get("/api/tokens").status(), 401);
    assert_eq!(
        api.delete(&format!("/api/keys/{purged}?purge=true"))
            .status(),
        200
    );
    assert_eq!(api.delete(&format!("/api/keys/{deleted}")).status(), 200);

    write_back(&pg, "replayed", "keyhold_tokens", &tokens);
    write_back(&pg, "replayed", "keyhold_keys", &keys);
    write_back(&pg, "replayed", "keyhold_by_provider", &index);

    // The revoked admin stays revoked: 401, and nothing minted.
    let r = Api::new(&s, &old_admin).post_json(
        "/api/tokens",
        &serde_json::json!({"name": "minted", "role": "admin"}),
    );
    assert_eq!(r.status(), 401);
    // The purged key's record is back: refused, no plaintext.
    let r = reveal(&api, &purged);
    assert_eq!(r.status(), 409);
    assert!(!r.text().unwrap().contains("sk-ant-purged"));
    // The soft-deleted key's pre-delete record: refused.
    let r = reveal(&api, &deleted);
    assert_eq!(r.status(), 409);
    assert!(!r.text().unwrap().contains("AIza-deleted"));
    drop(s);

    let recs = v.audit_records_raw();
    assert!(
        recs.iter()
            .any(|r| r["action"] == "authenticate" && r["outcome"] == "tampered"),
        "{recs:?}"
    );
    assert_eq!(
        recs.iter()
            .filter(|r| r["action"] == "reveal" && r["outcome"] == "tampered")
            .count(),
        2,
        "{recs:?}"
    );
    // And at the next open, the whole store is refused.
    let out = v.run(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL the store matches the state"), "{text}");
    assert!(
        text.contains(&format!("token {old_id} `old-admin`")),
        "{text}"
    );
    assert!(
        text.contains(&format!("key {purged}: purged at seq")),
        "{text}"
    );
}

/// Node B changes a record (revokes a token, purges a key, soft-deletes
/// one) that node A has already read; a superuser then writes the older
/// rows back before A reads them again. A has not been told of B's change
/// by anything but the database: it learns it from the change rows of B's
/// commits before it trusts the record, and refuses the older copy at its
/// first use.
#[test]
fn an_older_record_written_back_after_another_nodes_change_is_refused_on_every_node() {
    let Some(pg) = cluster() else { return };
    let v = PgVault::new(&pg, "racewin");
    let a = v.serve("node-a", &[]);
    let b = v.serve("node-b", &[]);
    let (on_a, on_b) = (Api::new(&a, &v.admin), Api::new(&b, &v.admin));
    let made: Value = on_a
        .post_json(
            "/api/tokens",
            &serde_json::json!({"name": "ops", "role": "admin"}),
        )
        .json()
        .unwrap();
    let ops = made["token"].as_str().unwrap().to_string();
    let ops_id = made["id"].as_str().unwrap().to_string();
    let purged = on_a.create_key("claude", "main", "sk-ant-window-000001");
    let deleted = on_a.create_key("gemini", "main", "AIza-window-000002");
    // Node A uses each record, so it knows each one's current stamp.
    assert_eq!(Api::new(&a, &ops).get("/api/tokens").status(), 200);
    assert_eq!(reveal(&on_a, &purged).status(), 200);
    assert_eq!(reveal(&on_a, &deleted).status(), 200);
    let tokens = rows(&pg, "racewin", "keyhold_tokens");
    let keys = rows(&pg, "racewin", "keyhold_keys");
    let index = rows(&pg, "racewin", "keyhold_by_provider");

    // The changes are made on node B; node A reads nothing meanwhile.
    assert_eq!(on_b.delete(&format!("/api/tokens/{ops_id}")).status(), 200);
    assert_eq!(
        on_b.delete(&format!("/api/keys/{purged}?purge=true"))
            .status(),
        200
    );
    assert_eq!(on_b.delete(&format!("/api/keys/{deleted}")).status(), 200);
    write_back(&pg, "racewin", "keyhold_tokens", &tokens);
    write_back(&pg, "racewin", "keyhold_keys", &keys);
    write_back(&pg, "racewin", "keyhold_by_provider", &index);

    // On node A, at the first use of each: refused.
    let r = Api::new(&a, &ops).post_json(
        "/api/tokens",
        &serde_json::json!({"name": "minted", "role": "admin"}),
    );
    assert_eq!(r.status(), 401);
    let r = reveal(&on_a, &purged);
    assert_eq!(r.status(), 409);
    assert!(!r.text().unwrap().contains("sk-ant-window"));
    let r = reveal(&on_a, &deleted);
    assert_eq!(r.status(), 409);
    assert!(!r.text().unwrap().contains("AIza-window"));
    drop(a);
    drop(b);
    let recs = v.audit_records_raw();
    let on_node_a = |action: &str| {
        recs.iter()
            .filter(|r| {
                r["action"] == action && r["outcome"] == "tampered" && r["node"] == "node-a"
            })
            .count()
    };
    assert!(on_node_a("authenticate") >= 1, "{recs:?}");
    assert_eq!(on_node_a("reveal"), 2, "{recs:?}");
}

/// The change rows a node learns from are authenticated and must follow
/// each other without a gap: a row deleted in the database makes the node
/// check the whole store against the signed chain head before it trusts a
/// record (which finds the older copy written back, and from then on the
/// node refuses every record, as it would refuse to open the store); a row
/// edited is refused; and the log's tail cut with them does not hide the
/// commit either (the head still names it).
#[test]
fn change_rows_deleted_or_edited_in_the_database_do_not_hide_a_change() {
    let Some(pg) = cluster() else { return };
    for (db, edit) in [
        (
            "rows_gone",
            "DELETE FROM keyhold_changes WHERE last > {before}",
        ),
        (
            "rows_edited",
            "UPDATE keyhold_changes SET v = overlay(v placing '\\xff'::bytea from 3 for 1) \
             WHERE last > {before}",
        ),
        // The log's tail cut with the rows, the head left as it is.
        (
            "tail_cut",
            "DELETE FROM keyhold_changes WHERE last > {before}; \
             DELETE FROM keyhold_audit WHERE seq > {before}",
        ),
    ] {
        let v = PgVault::new(&pg, db);
        let a = v.serve("node-a", &[]);
        let b = v.serve("node-b", &[]);
        let (on_a, on_b) = (Api::new(&a, &v.admin), Api::new(&b, &v.admin));
        let id = on_a.create_key("claude", "one", "sk-ant-rows-0000001");
        assert_eq!(reveal(&on_a, &id).status(), 200);
        let keys = rows(&pg, db, "keyhold_keys");
        let index = rows(&pg, db, "keyhold_by_provider");
        let before = pg.psql(db, "SELECT COALESCE(max(last), 0) FROM keyhold_changes");
        let before: i64 = before.trim().parse().unwrap();
        assert_eq!(on_b.delete(&format!("/api/keys/{id}")).status(), 200);
        pg.psql(db, &edit.replace("{before}", &before.to_string()));
        write_back(&pg, db, "keyhold_keys", &keys);
        write_back(&pg, db, "keyhold_by_provider", &index);
        // Refused: the caller's own token record is the first record the
        // node reads, and it is refused with the rest (401), or the key
        // (409).
        let r = reveal(&on_a, &id);
        assert!(
            [401, 409].contains(&r.status().as_u16()),
            "{db}: {}",
            r.status()
        );
        assert!(!r.text().unwrap().contains("sk-ant-rows"), "{db}");
        drop(a);
        drop(b);
    }
}

#[test]
fn a_schema_4_store_on_postgresql_is_upgraded_in_place() {
    let Some(pg) = cluster() else { return };
    // The schema-4 fixture (tests/data/SCHEMA4-FIXTURE.md, written by the
    // release before schema 5), its entries copied into a database as
    // they are: what that release's `migrate` wrote there.
    const KEY: &str = "Vj6t2f0pQ9y8mH5xJ3kL1nR4sT7uW0zA2bC5dE8fG1I=";
    const ADMIN: &str = "kh_T0sNhZLho9egREkNgPVs9vsooT3ttPYBxwe07fRD1Ic";
    const READER: &str = "kh_m6u_WL6CG0Utw0g8zKxP5FEFBs9CiRfEKGL1P-XPVBU";
    const OLD_ADMIN: &str = "kh_F5Db_icHeVIk4WKzeH5KNSaGQtH3NsOT3p0dgav3DTY";
    const CLAUDE: &str = "7f8e6787-8090-44a6-be9b-2523522157e4";
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    copy_dir(&data.join("schema4-store"), &dir);
    let url = pg.database("schema4");
    {
        let from = keyhold::internals::store::Store::open(&dir).unwrap();
        let parsed: keyhold::internals::store::DatabaseUrl = url.parse().unwrap();
        let opts = keyhold::internals::store::PgOptions::new(parsed, None, "copy".into());
        let to = keyhold::internals::store::Store::connect(&opts, true).unwrap();
        keyhold::internals::ops::copy_store::copy_store(&from, &to).unwrap();
        from.close().unwrap();
    }
    let v = PgVault {
        url,
        key: KEY.into(),
        admin: ADMIN.into(),
        tmp,
    };
    let s = v.serve("node-a", &[]);
    let r: Value = reveal(&Api::new(&s, READER), CLAUDE).json().unwrap();
    assert_eq!(r["api_key"], "sk-ant-schema4-claude-0001-v2");
    assert_eq!(Api::new(&s, OLD_ADMIN).get("/api/tokens").status(), 401);
    // Held to its state from now on: a token revoked after the upgrade,
    // its older row written back while the node runs, is refused.
    let tokens = rows(&pg, "schema4", "keyhold_tokens");
    let admin = Api::new(&s, ADMIN);
    let list: Value = admin.get("/api/tokens").json().unwrap();
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orchestrator")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(admin.delete(&format!("/api/tokens/{id}")).status(), 200);
    write_back(&pg, "schema4", "keyhold_tokens", &tokens);
    assert_eq!(reveal(&Api::new(&s, READER), CLAUDE).status(), 401);
    drop(s);
    let recs = v.audit_records_raw();
    let upgrades: Vec<&Value> = recs.iter().filter(|r| r["action"] == "upgrade").collect();
    assert_eq!(upgrades.len(), 1, "{upgrades:?}");
    assert!(upgrades[0]["detail"]
        .as_str()
        .unwrap()
        .starts_with("upgrade to schema 5"));
    assert!(recs
        .iter()
        .any(|r| r["action"] == "authenticate" && r["outcome"] == "tampered"));
}

#[test]
fn a_token_forged_with_a_retired_keys_record_secret_is_refused_by_a_running_node() {
    let Some(pg) = cluster() else { return };
    let v = PgVault::new(&pg, "retired");
    // The attacker's copy from before the rotation: a backup, restored
    // into a directory of their own (it needs the old key to open).
    let backup = v.tmp.path().join("before.backup");
    assert_ok(&v.run(&["backup", backup.to_str().unwrap()]));
    let copy = v.tmp.path().join("copy");
    assert_ok(&run_with_key(
        &v.key,
        &[
            "restore",
            backup.to_str().unwrap(),
            "--data-dir",
            copy.to_str().unwrap(),
        ],
    ));
    let new = keygen();
    let both = format!("{new},{}", v.key);
    let s = Server::start_args(
        &[
            "--database-url",
            &v.url,
            "--node-name",
            "node-a",
            "--listen",
            "127.0.0.1:0",
        ],
        &[("FERNET_KEYS", both.as_str())],
    );
    let admin = Api::new(&s, &v.admin);
    let r = admin.post_json("/api/admin/rotate", &serde_json::json!({}));
    assert_eq!(r.status(), 200, "{:?}", r.text());
    let body: Value = r.json().unwrap();
    assert!(
        body["records_reauthenticated"].is_u64(),
        "the record MAC secret was replaced: {body}"
    );
    // With the retired key, the copy mints an admin token; its record,
    // authenticated under the secret that key unseals, is planted.
    let before: Vec<Vec<u8>> = with_sled(&copy, |db| {
        db.open_tree("tokens")
            .unwrap()
            .iter()
            .map(|e| e.unwrap().0.to_vec())
            .collect()
    });
    let out = run_with_key(
        &v.key,
        &[
            "token",
            "create",
            "--data-dir",
            copy.to_str().unwrap(),
            "--name",
            "forged",
            "--role",
            "admin",
        ],
    );
    assert_ok(&out);
    let forged = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let planted: Vec<(String, String)> = with_sled(&copy, |db| {
        db.open_tree("tokens")
            .unwrap()
            .iter()
            .map(|e| e.unwrap())
            .filter(|(k, _)| !before.contains(&k.to_vec()))
            .map(|(k, v)| (hex(&k), hex(&v)))
            .collect()
    });
    assert_eq!(planted.len(), 1);
    write_back(&pg, "retired", "keyhold_tokens", &planted);
    let r = Api::new(&s, &forged).get("/api/tokens");
    assert_eq!(r.status(), 401, "a token forged with the retired secret");
    // The listing meets the planted record and refuses, naming it.
    let r = admin.get("/api/tokens");
    assert_eq!(r.status(), 409);
    assert!(detail(r).contains("integrity check"));
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
