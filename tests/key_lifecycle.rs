//! Keys over time (issue 18, points 1-4), through the real server: versions
//! and the version cap, soft delete, restore, the recovery window
//! elapsing, purge, reveal by name, expiry filters, gauges and warnings.
//! Runs on sled, and on PostgreSQL with KEYHOLD_TEST_BACKEND=postgres.
//!
//! Over 500 lines: one scenario per lifecycle step, each through a real
//! server and read back from the audit log.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn put(api: &Api, id: &str, api_key: &str) -> reqwest::blocking::Response {
    api.req(reqwest::Method::PUT, &format!("/api/keys/{id}"))
        .json(&json!({ "api_key": api_key }))
        .send()
        .unwrap()
}

fn json_of(r: reqwest::blocking::Response) -> Value {
    let status = r.status();
    let text = r.text().unwrap();
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// The audit records of `action`, read back offline.
fn records_of(v: &Vault, action: &str) -> Vec<Value> {
    v.audit_records()
        .into_iter()
        .filter(|r| r["action"] == action)
        .collect()
}

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("not within {limit:?}: {what}");
}

#[test]
fn versions_are_numbered_revealable_listed_and_capped() {
    let v = Vault::new();
    let writer = v.token("w", "writer", None);
    let reader = v.token("r", "reader", None);
    let gem = v.token("gw", "writer", Some("gemini"));
    let server = v.serve(&[("KEYHOLD_KEEP_VERSIONS", "3")]);
    let admin = Api::new(&server, &v.admin);
    let w = Api::new(&server, &writer);
    let id = admin.create_key("claude", "main", "sk-v1");

    let meta = json_of(put(&w, &id, "sk-v2"));
    assert_eq!(meta["version"], 2);
    assert_eq!(meta["id"], id.as_str());
    assert_eq!(meta["key_name"], "main");
    assert_eq!(json_of(put(&w, &id, "sk-v3"))["version"], 3);

    // The current version, with its number, by id and by provider.
    let r = json_of(admin.get(&format!("/api/keys/{id}")));
    assert_eq!(
        (r["api_key"].as_str(), r["version"].as_u64()),
        (Some("sk-v3"), Some(3))
    );
    let r = json_of(admin.get("/api/providers/claude/key"));
    assert_eq!(r["api_key"], "sk-v3");
    // An older one on request.
    let r = json_of(admin.get(&format!("/api/keys/{id}?version=1")));
    assert_eq!(
        (r["api_key"].as_str(), r["version"].as_u64()),
        (Some("sk-v1"), Some(1))
    );
    // Nonsense versions are refused, not served.
    for bad in ["0", "abc", "99999999999"] {
        let r = admin.get(&format!("/api/keys/{id}?version={bad}"));
        assert_eq!(r.status(), 404, "version={bad}");
        assert!(detail(r).contains("version"));
    }
    let r = admin.get(&format!("/api/keys/{id}?version=9"));
    assert_eq!(r.status(), 404);
    assert!(detail(r).contains("not kept"));

    let list = json_of(admin.get(&format!("/api/keys/{id}/versions")));
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    let states: Vec<&str> = list.iter().map(|x| x["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["previous", "previous", "current"]);
    assert_eq!(list[0]["created_by"], "admin");
    assert_eq!(list[1]["created_by"], "w");
    assert!(list.iter().all(|x| x.get("api_key").is_none()));

    // Version 1's Fernet token as stored (read with the server stopped).
    server.stop();
    let uuid = uuid::Uuid::parse_str(&id).unwrap();
    let first = v.with_unlocked(&v.key, |store| {
        let rec = store.get_key(&uuid).unwrap().unwrap();
        rec.version_token(1).unwrap().0.to_string()
    });
    let first = [first];
    // A short recovery window makes the housekeeping pass run each second.
    let server = v.serve(&[
        ("KEYHOLD_KEEP_VERSIONS", "3"),
        ("KEYHOLD_RECOVERY_WINDOW", "4s"),
    ]);
    let admin = Api::new(&server, &v.admin);
    let w = Api::new(&server, &writer);

    // The cap: a fourth version moves the first to the recovery window
    // (4 s here); when it ends, housekeeping destroys it, audited, and
    // rewrites the files without it.
    assert!(in_files(&v, &first).is_some(), "the scan cannot see it");
    assert_eq!(json_of(put(&w, &id, "sk-v4"))["version"], 4);
    eventually(
        "no file of the store holds the dropped version",
        Duration::from_secs(20),
        || in_files(&v, &first).is_none(),
    );
    let r = admin.get(&format!("/api/keys/{id}?version=1"));
    assert_eq!(r.status(), 404);
    let r = json_of(admin.get(&format!("/api/keys/{id}?version=2")));
    assert_eq!(r["api_key"], "sk-v2");
    let versions = json_of(admin.get(&format!("/api/keys/{id}/versions")));
    let numbers: Vec<u64> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["version"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 3, 4]);

    // A reader may list versions but not write one; a limited writer
    // does not reach another provider's key.
    assert_eq!(put(&Api::new(&server, &reader), &id, "x").status(), 403);
    // A reader lists versions, without the token names that stored them.
    let seen = json_of(Api::new(&server, &reader).get(&format!("/api/keys/{id}/versions")));
    assert!(seen
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["created_by"].is_null()));
    assert_eq!(put(&Api::new(&server, &gem), &id, "x").status(), 404);
    let r = w
        .req(reqwest::Method::PUT, &format!("/api/keys/{id}"))
        .json(&json!({"api_key": ""}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    server.stop();

    let puts = records_of(&v, "key_put");
    let ok: Vec<&Value> = puts.iter().filter(|r| r["outcome"] == "success").collect();
    assert_eq!(ok.len(), 3, "{puts:?}");
    assert!(ok[2]["detail"]
        .as_str()
        .unwrap()
        .contains("version(s) 1 moved to the recovery window"));
    assert!(records_of(&v, "key_purge")
        .iter()
        .any(|r| r["caller"] == "housekeeping"
            && r["detail"]
                .as_str()
                .unwrap_or("")
                .contains("version(s) 1 destroyed")));
    assert!(puts.iter().any(|r| r["outcome"] == "forbidden"));
    let reveals = records_of(&v, "reveal");
    assert!(reveals
        .iter()
        .any(|r| r["outcome"] == "success"
            && r["detail"].as_str().unwrap_or("").contains("version 1")));
    // Versions survive a restart, and check opens every one of them.
    let [flag, place] = v.store_args();
    assert_ok(&run_with_key(&v.key, &["check", flag, place]));
}

#[test]
fn a_deleted_key_is_not_revealable_until_restored() {
    let v = Vault::new();
    let reader = v.token("r", "reader", None);
    let server = v.serve(&[]);
    let admin = Api::new(&server, &v.admin);
    let id = admin.create_key("claude", "main", "sk-deleted-then-back");

    let r = admin.delete(&format!("/api/keys/{id}"));
    assert_eq!(r.status(), 200);
    let body: Value = r.json().unwrap();
    assert_eq!(body, json!({"status": "deleted", "id": id}));

    let r = admin.get(&format!("/api/keys/{id}"));
    assert_eq!(r.status(), 404);
    assert!(detail(r).contains("deleted"));
    assert_eq!(admin.get("/api/providers/claude/key").status(), 404);
    assert_eq!(admin.get("/api/providers/claude/keys/main").status(), 404);
    assert_eq!(put(&admin, &id, "x").status(), 404);
    // Deleting again answers 404, as before soft deletion.
    assert_eq!(admin.delete(&format!("/api/keys/{id}")).status(), 404);

    let live = json_of(admin.get("/api/keys"));
    assert!(live.as_array().unwrap().is_empty(), "{live}");
    let deleted = json_of(admin.get("/api/keys?deleted=true"));
    let deleted = deleted.as_array().unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["id"], id.as_str());
    // With a provider too (deleted keys are not in the provider index).
    let of_claude = json_of(admin.get("/api/keys?deleted=true&provider=claude"));
    assert_eq!(of_claude.as_array().unwrap().len(), 1);
    let of_gemini = json_of(admin.get("/api/keys?deleted=true&provider=gemini"));
    assert!(of_gemini.as_array().unwrap().is_empty());
    assert!(deleted[0]["deleted_at"].is_string());
    assert!(deleted[0]["purge_at"].is_string());

    let r = admin
        .req(reqwest::Method::POST, &format!("/api/keys/{id}/restore"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = json_of(admin.get(&format!("/api/keys/{id}")));
    assert_eq!(r["api_key"], "sk-deleted-then-back");
    assert_eq!(
        json_of(admin.get("/api/providers/claude/key"))["id"],
        id.as_str()
    );
    // Restoring a live key is a conflict.
    let r = admin
        .req(reqwest::Method::POST, &format!("/api/keys/{id}/restore"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 409);
    // A reader cannot restore.
    let r = Api::new(&server, &reader)
        .req(reqwest::Method::POST, &format!("/api/keys/{id}/restore"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    server.stop();

    let reveals = records_of(&v, "reveal");
    assert!(reveals
        .iter()
        .any(|r| r["outcome"] == "deleted" && r["key_id"] == id.as_str()));
    assert_eq!(
        records_of(&v, "key_restore")
            .iter()
            .filter(|r| r["outcome"] == "success")
            .count(),
        1
    );
}

#[test]
fn the_recovery_window_elapsing_destroys_the_key() {
    let v = Vault::new();
    let server = v.serve(&[]);
    let admin = Api::new(&server, &v.admin);
    let id = admin.create_key("claude", "main", "sk-window-elapses-0123456789");
    assert_eq!(
        put(&admin, &id, "sk-window-elapses-second-version").status(),
        200
    );
    let keep = admin.create_key("claude", "other", "sk-stays");
    server.stop();
    // The key's Fernet tokens (both versions), as stored.
    let uuid = uuid::Uuid::parse_str(&id).unwrap();
    let tokens: Vec<String> = v.with_unlocked(&v.key, |store| {
        let rec = store.get_key(&uuid).unwrap().unwrap();
        rec.tokens().map(str::to_string).collect()
    });
    assert_eq!(tokens.len(), 2);
    // The scan below can see them: before the purge the files do.
    assert!(in_files(&v, &tokens).is_some());

    let server = v.serve(&[("KEYHOLD_RECOVERY_WINDOW", "2s")]);
    let admin = Api::new(&server, &v.admin);
    assert_eq!(admin.delete(&format!("/api/keys/{id}")).status(), 200);
    eventually(
        "the deleted key is destroyed",
        Duration::from_secs(20),
        || {
            json_of(admin.get("/api/keys?deleted=true"))
                .as_array()
                .unwrap()
                .is_empty()
        },
    );
    // While the server runs: the housekeeping pass that destroyed it
    // rewrites the store, and then no file in the data directory holds
    // either version's Fernet token.
    eventually(
        "no file of the store holds the purged key",
        Duration::from_secs(20),
        || in_files(&v, &tokens).is_none(),
    );
    let r = admin
        .req(reqwest::Method::POST, &format!("/api/keys/{id}/restore"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(admin.get(&format!("/api/keys/{id}")).status(), 404);
    assert_eq!(
        json_of(admin.get(&format!("/api/keys/{keep}")))["api_key"],
        "sk-stays"
    );
    // Writes after the rewrite land in the rewritten store.
    let later = admin.create_key("gemini", "later", "sk-after-rewrite");
    server.stop();

    let purges = records_of(&v, "key_purge");
    assert_eq!(purges.len(), 1, "{purges:?}");
    assert_eq!(purges[0]["caller"], "housekeeping");
    assert_eq!(purges[0]["key_id"], id.as_str());
    assert!(purges[0]["detail"]
        .as_str()
        .unwrap()
        .contains("2 version(s) destroyed"));
    // The record is gone from the store, every version with it.
    v.with_unlocked(&v.key, |store| {
        assert!(store.get_key(&uuid).unwrap().is_none());
    });
    // A backup (what leaves the host) holds none of its ciphertexts.
    let backup = v.tmp.path().join("after-purge.backup");
    let [flag, place] = v.store_args();
    assert_ok(&run_with_key(
        &v.key,
        &["backup", flag, place, backup.to_str().unwrap()],
    ));
    let bytes = std::fs::read(&backup).unwrap();
    for t in &tokens {
        assert!(
            !contains(&bytes, t.as_bytes()),
            "the backup holds a purged version"
        );
    }
    // Stopped, the files still hold none, and the rewritten store opens
    // again with everything else in it, its audit log intact.
    assert_eq!(in_files(&v, &tokens), None);
    let server = v.serve(&[]);
    let admin = Api::new(&server, &v.admin);
    assert_eq!(
        json_of(admin.get(&format!("/api/keys/{keep}")))["api_key"],
        "sk-stays"
    );
    assert_eq!(
        json_of(admin.get(&format!("/api/keys/{later}")))["api_key"],
        "sk-after-rewrite"
    );
    server.stop();
    assert_ok(&run_with_key(&v.key, &["audit", "verify", flag, place]));
}

/// The first file of the store that holds one of `needles`: under the
/// data directory on sled; on PostgreSQL, under the server's `base/` (the
/// tables' files, written out by a CHECKPOINT first; its WAL is the
/// database's own, docs/security.md).
fn in_files(v: &Vault, needles: &[String]) -> Option<std::path::PathBuf> {
    match &v.pg {
        None => on_disk(&v.dir, needles),
        Some((cluster, _)) => {
            cluster.psql("vault", "CHECKPOINT");
            on_disk(&cluster.data_dir().join("base"), needles)
        }
    }
}

/// The first file under `dir` that holds one of `needles`, read the way
/// someone with the disk would (files that vanish during the walk, as a
/// rewrite removes them, are skipped).
fn on_disk(dir: &std::path::Path, needles: &[String]) -> Option<std::path::PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(_) => {
                    if let Ok(bytes) = std::fs::read(&p) {
                        if needles.iter().any(|n| contains(&bytes, n.as_bytes())) {
                            return Some(p);
                        }
                    }
                }
                Err(_) => {}
            }
        }
    }
    None
}

#[test]
fn purge_destroys_at_once_and_needs_admin() {
    let v = Vault::new();
    let writer = v.token("w", "writer", None);
    let server = v.serve(&[]);
    let admin = Api::new(&server, &v.admin);
    let id = admin.create_key("claude", "main", "sk-purge");
    server.stop();
    let uuid = uuid::Uuid::parse_str(&id).unwrap();
    let stored: Vec<String> = v.with_unlocked(&v.key, |store| {
        let rec = store.get_key(&uuid).unwrap().unwrap();
        rec.tokens().map(str::to_string).collect()
    });
    let server = v.serve(&[]);
    let admin = Api::new(&server, &v.admin);
    let r = Api::new(&server, &writer).delete(&format!("/api/keys/{id}?purge=true"));
    assert_eq!(r.status(), 403);
    assert_eq!(
        json_of(admin.get(&format!("/api/keys/{id}")))["api_key"],
        "sk-purge"
    );
    let r = admin.delete(&format!("/api/keys/{id}?purge=maybe"));
    assert_eq!(r.status(), 422);
    assert!(in_files(&v, &stored).is_some(), "the scan cannot see it");
    let r = admin.delete(&format!("/api/keys/{id}?purge=true"));
    assert_eq!(r.status(), 200);
    // Destroyed at once: off the disk before the answer came back.
    assert_eq!(in_files(&v, &stored), None);
    assert_eq!(admin.get(&format!("/api/keys/{id}")).status(), 404);
    assert!(json_of(admin.get("/api/keys?deleted=true"))
        .as_array()
        .unwrap()
        .is_empty());
    let r = admin
        .req(reqwest::Method::POST, &format!("/api/keys/{id}/restore"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    server.stop();
    let purges = records_of(&v, "key_purge");
    assert!(purges
        .iter()
        .any(|r| r["outcome"] == "forbidden" && r["caller"] == "w"));
    assert!(purges
        .iter()
        .any(|r| r["outcome"] == "success" && r["caller"] == "admin"));
}

#[test]
fn reveal_by_name_serves_the_newest_live_key_of_that_name() {
    let v = Vault::new();
    let gem = v.token("g", "reader", Some("gemini"));
    let server = v.serve(&[]);
    let admin = Api::new(&server, &v.admin);
    admin.create_key("claude", "ci bot", "sk-old");
    std::thread::sleep(Duration::from_millis(5));
    let newer = admin.create_key("claude", "ci bot", "sk-new");
    std::thread::sleep(Duration::from_millis(5));
    admin.create_key("claude", "other", "sk-other");

    let r = json_of(admin.get("/api/providers/claude/keys/ci%20bot"));
    assert_eq!(
        (r["api_key"].as_str(), r["id"].as_str()),
        (Some("sk-new"), Some(newer.as_str()))
    );
    assert_eq!(
        json_of(admin.get("/api/providers/claude/key"))["api_key"],
        "sk-other"
    );
    // The newest one deleted: the older one of that name is served.
    assert_eq!(admin.delete(&format!("/api/keys/{newer}")).status(), 200);
    assert_eq!(
        json_of(admin.get("/api/providers/claude/keys/ci%20bot"))["api_key"],
        "sk-old"
    );
    assert_eq!(admin.get("/api/providers/claude/keys/nobody").status(), 404);
    // A token limited to another provider is answered like a missing key.
    let r = Api::new(&server, &gem).get("/api/providers/claude/keys/other");
    assert_eq!(r.status(), 404);

    // The CLI and exec take PROVIDER/NAME.
    let out = keyhold()
        .args(["keys", "reveal", "claude/other", "--addr", &server.base])
        .env("KEYHOLD_TOKEN", &v.admin)
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "sk-other");
    let out = keyhold()
        .args([
            "exec",
            "--addr",
            &server.base,
            "--provider",
            "claude/ci bot",
            "--env",
            "K",
        ])
        .args(["--", "sh", "-c", "printf %s \"$K\""])
        .env("KEYHOLD_TOKEN", &v.admin)
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "sk-old");
    server.stop();
    let reveals = records_of(&v, "reveal");
    assert!(reveals
        .iter()
        .any(|r| r["outcome"] == "forbidden" && r["caller"] == "g"));
}

#[test]
fn expiring_keys_are_listed_counted_and_warned_about() {
    let v = Vault::new();
    // A short recovery window makes the housekeeping pass run every second.
    let server = v.serve(&[("KEYHOLD_RECOVERY_WINDOW", "4s")]);
    let admin = Api::new(&server, &v.admin);
    let create = |name: &str, ttl: Option<i64>| {
        let mut body =
            json!({"provider": "claude", "key_name": name, "api_key": format!("sk-{name}")});
        if let Some(t) = ttl {
            body["ttl_seconds"] = json!(t);
        }
        json_of(admin.post_json("/api/keys", &body))["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let soon = create("soon", Some(2 * 86_400));
    let later = create("later", Some(20 * 86_400));
    create("never", None);
    let lapsing = create("lapsing", Some(1));
    std::thread::sleep(Duration::from_millis(1500));

    let ids = |v: Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(json_of(admin.get("/api/keys?expiring_within=7d"))),
        vec![soon.clone()]
    );
    let mut within30 = ids(json_of(admin.get("/api/keys?expiring_within=30d")));
    within30.sort();
    let mut want = vec![soon.clone(), later.clone()];
    want.sort();
    assert_eq!(within30, want);
    assert_eq!(
        ids(json_of(admin.get("/api/keys?expired=true"))),
        vec![lapsing.clone()]
    );
    assert_eq!(admin.get("/api/keys?expiring_within=soon").status(), 422);

    let out = keyhold()
        .args([
            "keys",
            "list",
            "--expiring",
            "7d",
            "--format",
            "json",
            "--addr",
            &server.base,
        ])
        .env("KEYHOLD_TOKEN", &v.admin)
        .output()
        .unwrap();
    assert_ok(&out);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(listed), vec![soon.clone()]);

    let metric = |text: &str, name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
    };
    eventually("the expiry gauges are set", Duration::from_secs(15), || {
        let text = Api::new(&server, &v.admin).get("/metrics").text().unwrap();
        metric(&text, "keyhold_keys_expiring{within=\"7d\"}") == Some(1.0)
            && metric(&text, "keyhold_keys_expiring{within=\"30d\"}") == Some(2.0)
            && metric(&text, "keyhold_keys_expiring{within=\"1d\"}") == Some(0.0)
            && metric(&text, "keyhold_keys_expired") == Some(1.0)
    });
    // One warning a day for the key lapsing within 7 days, not one a pass.
    std::thread::sleep(Duration::from_millis(2500));
    let log = server.output();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("a key expires within 7 days") && l.contains(&soon))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(!log
        .lines()
        .any(|l| l.contains("expires within") && l.contains(&later)));

    // exec says so on stderr, and still runs the command.
    let out = keyhold()
        .args([
            "exec",
            "--addr",
            &server.base,
            "--provider",
            "claude/soon",
            "--env",
            "K",
        ])
        .args(["--", "sh", "-c", "printf %s \"$K\""])
        .env("KEYHOLD_TOKEN", &v.admin)
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "sk-soon");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expires at"), "{err}");
    assert!(!err.contains("sk-soon"), "{err}");
    server.stop();
}

/// Concurrent new versions of one key: each builds on the one before (no
/// two get the same number, none is lost), and every one is audited.
#[test]
fn concurrent_new_versions_each_get_their_own_number() {
    let v = Vault::new();
    let server = v.serve(&[("KEYHOLD_KEEP_VERSIONS", "50")]);
    let admin = Api::new(&server, &v.admin);
    let id = admin.create_key("claude", "busy", "sk-0");
    let numbers = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (id, numbers, server, token) = (&id, &numbers, &server, &v.admin);
            scope.spawn(move || {
                let api = Api::new(server, token);
                for n in 0..5 {
                    let meta = json_of(put(&api, id, &format!("sk-{t}-{n}")));
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
    let listed = json_of(admin.get(&format!("/api/keys/{id}/versions")));
    assert_eq!(listed.as_array().unwrap().len(), 21);
    server.stop();
    let ok = records_of(&v, "key_put")
        .into_iter()
        .filter(|r| r["outcome"] == "success")
        .count();
    assert_eq!(ok, 20);
}

/// The store and backup a keyhold at schema 3 wrote (tests/data,
/// SCHEMA3-FIXTURE.md): opened by this one, upgraded to schema 4 in
/// place, once; every key reads as version 1 and takes new versions, the
/// tokens work and list as never expiring, the chain verifies, and the
/// old backup restores.
#[test]
fn a_schema_3_store_and_backup_are_upgraded_in_place() {
    if on_postgres() {
        return; // a sled fixture
    }
    const KEY: &str = "t-kxZ7dR8_vdXXrcsj9wWX6jeoV7EZ8b1MfoeatwJsU=";
    const ADMIN: &str = "kh_Puh9UBOlVEO_hOfIKi09Q0AU4zdkFwZmRq98RPgiMTw";
    const READER: &str = "kh_fy0ykw0yTVq-Oe3K0QiFwNsHyfFSby65SY7PlTqGoVI";
    const CLAUDE: &str = "a2e3628b-576d-4ec9-ba44-456e9b523c03";
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    copy_dir(&data.join("schema3-store"), &dir);

    let s = Server::start(&dir, &[("FERNET_KEY", KEY)]);
    let admin = Api::new(&s, ADMIN);
    let listed = json_of(admin.get("/api/keys"));
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed
        .iter()
        .all(|k| k["version"] == 1 && k["deleted_at"].is_null()));
    let r = json_of(Api::new(&s, READER).get(&format!("/api/keys/{CLAUDE}")));
    assert_eq!(r["api_key"], "sk-ant-schema3-claude-0001");
    let versions = json_of(admin.get(&format!("/api/keys/{CLAUDE}/versions")));
    assert_eq!(versions[0]["created_by"], Value::Null);
    assert_eq!(
        json_of(put(&admin, CLAUDE, "sk-ant-schema4-0003"))["version"],
        2
    );
    let r = json_of(admin.get(&format!("/api/keys/{CLAUDE}?version=1")));
    assert_eq!(r["api_key"], "sk-ant-schema3-claude-0001");
    let tokens = json_of(admin.get("/api/tokens"));
    let reader = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orchestrator")
        .unwrap()
        .clone();
    assert!(reader["expires_at"].is_null());
    assert!(reader["last_used"].is_string(), "{reader}");
    let (_, _, err) = s.stop();
    assert!(err.contains("schema 4"), "{err}");
    // Once: a second start does not upgrade again.
    let s = Server::start(&dir, &[("FERNET_KEY", KEY)]);
    s.stop();
    let out = run_with_key(
        KEY,
        &["audit", "export", "--data-dir", dir.to_str().unwrap()],
    );
    assert_ok(&out);
    let upgrades = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.contains("upgrade to schema 4"))
        .count();
    assert_eq!(upgrades, 1);
    assert_ok(&run_with_key(
        KEY,
        &["audit", "verify", "--data-dir", dir.to_str().unwrap()],
    ));

    // The schema-3 backup restores with this keyhold and is upgraded too.
    let restored = tmp.path().join("restored");
    assert_ok(&run_with_key(
        KEY,
        &[
            "restore",
            data.join("schema3.backup").to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
        ],
    ));
    let s = Server::start(&restored, &[("FERNET_KEY", KEY)]);
    let r = json_of(Api::new(&s, READER).get(&format!("/api/keys/{CLAUDE}")));
    assert_eq!(
        (r["api_key"].as_str(), r["version"].as_u64()),
        (Some("sk-ant-schema3-claude-0001"), Some(1))
    );
    s.stop();
}
