//! Tokens over time (issue 18): expiring tokens refused and audited once
//! expired, each token's last use written with its audit record, rotation
//! with an overlap window, and stores from before all this. The real
//! binary, servers on loopback ephemeral ports, stopped by their PID.
//! Runs on sled, and on PostgreSQL with `KEYHOLD_TEST_BACKEND=postgres`.
//!
//! Over 500 lines: one scenario per token lifecycle step through a real
//! server.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A `keyhold` client command talking to `s` with `token`.
fn client_cmd(s: &Server, token: &str) -> Command {
    let mut c = keyhold();
    c.env("KEYHOLD_ADDR", &s.base).env("KEYHOLD_TOKEN", token);
    c
}

/// The audit log through the API (JSON Lines).
fn audit(api: &Api) -> Vec<Value> {
    let r = api.get("/api/audit");
    assert_eq!(r.status(), 200);
    r.text()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("jsonl line"))
        .collect()
}

/// Polls the audit log until a record matches (coalesced records land
/// within a second or two), at most 10 s.
fn wait_for_record(api: &Api, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let recs = audit(api);
        if let Some(r) = recs.iter().find(|r| f(r)) {
            return r.clone();
        }
        assert!(Instant::now() < until, "no {what} record in {recs:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sleeps until `rfc3339` (plus a margin) has passed, at most `max`.
fn sleep_past(rfc3339: &str, max: Duration) {
    let at = chrono::DateTime::parse_from_rfc3339(rfc3339).expect("an RFC 3339 time");
    let left = at.signed_duration_since(chrono::Utc::now());
    let left = left.to_std().unwrap_or(Duration::ZERO) + Duration::from_millis(300);
    assert!(left <= max, "{rfc3339} is {left:?} away");
    std::thread::sleep(left);
}

fn token_of(v: &Value) -> String {
    v["token"]
        .as_str()
        .expect("a token in the answer")
        .to_string()
}

/// The listed token named `name` (the newest of that name).
fn listed(api: &Api, id: &str) -> Value {
    let list: Value = api.get("/api/tokens").json().unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no token {id} in {list:#}"))
        .clone()
}

#[test]
fn an_expiring_token_works_until_its_ttl_then_is_refused_and_recorded() {
    let v = Vault::new();
    // Offline, `--ttl 90d` stores an expiry 90 days out.
    let [flag, place] = v.store_args();
    let out = run_with_key(
        &v.key,
        &[
            "token",
            "create",
            flag,
            place,
            "--name",
            "quarterly",
            "--role",
            "reader",
            "--ttl",
            "90d",
        ],
    );
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("expires at"));
    let out = run_with_key(&v.key, &["token", "list", flag, place, "--format", "json"]);
    assert_ok(&out);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let q = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "quarterly")
        .unwrap();
    assert_eq!(q["ttl_seconds"], 90 * 86_400);
    assert_eq!(q["expired"], false);
    assert!(q["last_used"].is_null());
    let expires = chrono::DateTime::parse_from_rfc3339(q["expires_at"].as_str().unwrap()).unwrap();
    let days = expires
        .signed_duration_since(chrono::Utc::now())
        .num_hours() as f64
        / 24.0;
    assert!((89.9..=90.0).contains(&days), "{days}");
    // The first admin token never expires.
    let admin = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "admin")
        .unwrap();
    assert!(admin["expires_at"].is_null() && admin["expired"] == false);
    // Out-of-range ttls are refused with the field named.
    let bad = run_with_key(
        &v.key,
        &[
            "token", "create", flag, place, "--name", "zero", "--role", "reader", "--ttl", "0",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--ttl"));

    let s = v.serve(&[]);
    let admin = Api::new(&s, &v.admin);
    for ttl in [
        json!(0),
        json!(-5),
        json!("2"),
        json!(1.5),
        json!(315_360_001),
    ] {
        let r = admin.post_json(
            "/api/tokens",
            &json!({"name": "bad", "role": "reader", "ttl_seconds": ttl}),
        );
        assert_eq!(r.status(), 422, "ttl {ttl}");
        assert!(detail(r).contains("ttl_seconds"), "ttl {ttl}");
    }
    // Through the API and through `token create --remote --ttl`.
    let r = admin.post_json(
        "/api/tokens",
        &json!({"name": "short-api", "role": "reader", "ttl_seconds": 2}),
    );
    assert_eq!(r.status(), 200);
    let api_made: Value = r.json().unwrap();
    assert_eq!(api_made["ttl_seconds"], 2);
    let out = client_cmd(&s, &v.admin)
        .args([
            "token",
            "create",
            "--remote",
            "--name",
            "short-cli",
            "--role",
            "reader",
            "--ttl",
            "2s",
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    let cli_token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(cli_token.starts_with("kh_"));
    let cli_made: Value = admin.get("/api/tokens/short-cli").json().unwrap();
    assert_eq!(cli_made["ttl_seconds"], 2);
    let both = [(token_of(&api_made), &api_made), (cli_token, &cli_made)];
    for (token, _) in &both {
        assert_eq!(Api::new(&s, token).get("/api/keys").status(), 200);
    }
    for (token, made) in both {
        sleep_past(made["expires_at"].as_str().unwrap(), Duration::from_secs(5));
        let r = Api::new(&s, &token).get("/api/keys");
        assert_eq!(r.status(), 401);
        let d = detail(r);
        assert!(
            d.contains("this token expired at") && d.contains(made["expires_at"].as_str().unwrap()),
            "{d}"
        );
        // A reveal is refused alike.
        let r = Api::new(&s, &token).get("/api/providers/claude/key");
        assert_eq!(r.status(), 401);
        // Recorded, naming the token (name and id), outcome expired.
        let id = made["id"].as_str().unwrap().to_string();
        let rec = wait_for_record(&admin, "expired", |r| {
            r["outcome"] == "expired" && r["caller_id"] == id.as_str()
        });
        assert_eq!(rec["action"], "authenticate");
        assert_eq!(rec["caller"], made["name"]);
        // And listed as expired.
        assert_eq!(listed(&admin, &id)["expired"], true);
    }
    let (_, out, err) = s.stop();
    assert!(!out.contains(&v.admin) && !err.contains(&v.admin));
}

#[test]
fn an_expired_token_flood_is_coalesced() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let admin = Api::new(&s, &v.admin);
    let made: Value = admin
        .post_json(
            "/api/tokens",
            &json!({"name": "flood", "role": "reader", "ttl_seconds": 1}),
        )
        .json()
        .unwrap();
    sleep_past(made["expires_at"].as_str().unwrap(), Duration::from_secs(3));
    let api = Api::new(&s, &token_of(&made));
    for _ in 0..40 {
        assert_eq!(api.get("/api/keys").status(), 401);
    }
    let id = made["id"].as_str().unwrap().to_string();
    let _ = wait_for_record(&admin, "expired", |r| r["caller_id"] == id.as_str());
    std::thread::sleep(Duration::from_millis(1500));
    let recs: Vec<Value> = audit(&admin)
        .into_iter()
        .filter(|r| r["outcome"] == "expired" && r["caller_id"] == id.as_str())
        .collect();
    let counted: u64 = recs.iter().map(|r| r["count"].as_u64().unwrap_or(1)).sum();
    assert_eq!(counted, 40, "{recs:#?}");
    assert!(recs.len() < 40, "not coalesced: {} records", recs.len());
    s.stop();
}

#[test]
fn last_use_is_written_with_the_audit_record_and_listed() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let admin = Api::new(&s, &v.admin);
    let key = admin.create_key("claude", "main", "sk-ant-last-use-0001");
    let made: Value = admin
        .post_json("/api/tokens", &json!({"name": "orch", "role": "reader"}))
        .json()
        .unwrap();
    let id = made["id"].as_str().unwrap().to_string();
    let before = listed(&admin, &id);
    assert!(before["last_used"].is_null(), "{before}");
    assert_eq!(before["expired"], false);
    assert!(before["expires_at"].is_null());
    // A listing is not audited, so it is not a use either.
    let reader = Api::new(&s, made["token"].as_str().unwrap());
    assert_eq!(reader.get("/api/keys").status(), 200);
    assert!(listed(&admin, &id)["last_used"].is_null());
    // A reveal is: its record and the token's last use land together.
    assert_eq!(reader.get(&format!("/api/keys/{key}")).status(), 200);
    let after = listed(&admin, &id);
    let used = after["last_used"]
        .as_str()
        .expect("last_used set")
        .to_string();
    let rec = audit(&admin)
        .into_iter()
        .rev()
        .find(|r| r["action"] == "reveal" && r["caller_id"] == id.as_str())
        .expect("the reveal's record");
    assert_eq!(rec["at"].as_str().unwrap(), used);
    // The admin's own token was used too (it created a key and a token).
    let me: Value = admin.get("/api/whoami").json().unwrap();
    let admin_id = me["id"].as_str().unwrap_or_default().to_string();
    if !admin_id.is_empty() {
        assert!(listed(&admin, &admin_id)["last_used"].is_string());
    }
    // A refused reveal (no such key) by the token is still a use of it.
    // Its record is coalesced (written within a second or two), and the
    // last use with it.
    let r = reader.get("/api/keys/00000000-0000-0000-0000-000000000000");
    assert_eq!(r.status(), 404);
    let started = std::time::Instant::now();
    let later = loop {
        let later = listed(&admin, &id)["last_used"]
            .as_str()
            .unwrap()
            .to_string();
        if later > used || started.elapsed() > std::time::Duration::from_secs(10) {
            break later;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(later > used, "{later} after {used}");
    s.stop();
    // Offline, `token list` shows the same.
    let [flag, place] = v.store_args();
    let out = run_with_key(&v.key, &["token", "list", flag, place, "--format", "json"]);
    assert_ok(&out);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap();
    assert_eq!(t["last_used"].as_str().unwrap(), later);
    let table = run_with_key(&v.key, &["token", "list", flag, place]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.contains("LAST USED") && table.contains("EXPIRES"));
    assert!(!table.contains(made["token"].as_str().unwrap()));
    // A backup carries last use (the token_usage table), and a restore
    // brings it back.
    let file = v.tmp.path().join("with-usage.backup");
    let out = run_with_key(&v.key, &["backup", flag, place, file.to_str().unwrap()]);
    assert_ok(&out);
    let restored = v.tmp.path().join("restored");
    let out = run_with_key(
        &v.key,
        &[
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
        ],
    );
    assert_ok(&out);
    let out = run_with_key(
        &v.key,
        &[
            "token",
            "list",
            "--data-dir",
            restored.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert_ok(&out);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap();
    assert_eq!(t["last_used"].as_str().unwrap(), later);
}

#[test]
fn rotation_issues_a_replacement_and_keeps_the_old_token_for_the_overlap() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let admin = Api::new(&s, &v.admin);
    let made: Value = admin
        .post_json(
            "/api/tokens",
            &json!({"name": "bot", "role": "reader", "providers": ["claude"], "ttl_seconds": 3600}),
        )
        .json()
        .unwrap();
    let old_token = token_of(&made);
    let old_id = made["id"].as_str().unwrap().to_string();
    // Out-of-range overlaps are refused.
    for o in [json!(-1), json!("1"), json!(315_360_001)] {
        let r = admin.post_json("/api/tokens/bot/rotate", &json!({"overlap_seconds": o}));
        assert_eq!(r.status(), 422, "overlap {o}");
        assert!(detail(r).contains("overlap_seconds"));
    }
    let r = admin.post_json("/api/tokens/bot/rotate", &json!({"overlap_seconds": 2}));
    assert_eq!(r.status(), 200);
    let rotated: Value = r.json().unwrap();
    let new_token = token_of(&rotated);
    assert_ne!(new_token, old_token);
    assert_eq!(rotated["name"], "bot");
    assert_eq!(rotated["role"], "reader");
    assert_eq!(rotated["scopes"], made["scopes"]);
    assert_eq!(rotated["providers"], json!(["claude"]));
    assert_eq!(rotated["ttl_seconds"], 3600);
    assert!(rotated["expires_at"].is_string());
    let new_id = rotated["id"].as_str().unwrap().to_string();
    let replaced = &rotated["replaced"];
    assert_eq!(replaced["id"], old_id.as_str());
    assert_eq!(replaced["rotated_to"], new_id.as_str());
    assert!(replaced.get("token").is_none());
    // Both work during the overlap.
    assert_eq!(Api::new(&s, &new_token).get("/api/keys").status(), 200);
    assert_eq!(Api::new(&s, &old_token).get("/api/keys").status(), 200);
    // The name now means the replacement; the old one is found by id.
    let by_name: Value = admin.get("/api/tokens/bot").json().unwrap();
    assert_eq!(by_name["id"], new_id.as_str());
    // A revoke by name during the overlap would reach only one of the
    // two live tokens named `bot`: refused, naming both ids.
    let r = admin.delete("/api/tokens/bot");
    assert_eq!(r.status(), 409);
    let d = detail(r);
    assert!(d.contains(&old_id) && d.contains(&new_id), "{d}");
    assert_eq!(Api::new(&s, &old_token).get("/api/keys").status(), 200);
    // A rotated token is not rotated twice.
    let r = admin.post_json(&format!("/api/tokens/{old_id}/rotate"), &json!({}));
    assert_eq!(r.status(), 409);
    assert!(detail(r).contains("already rotated"));
    // After the overlap the old token is refused as expired, saying so.
    sleep_past(
        replaced["expires_at"].as_str().unwrap(),
        Duration::from_secs(4),
    );
    let r = Api::new(&s, &old_token).get("/api/keys");
    assert_eq!(r.status(), 401);
    assert!(detail(r).contains("rotated"));
    assert_eq!(Api::new(&s, &new_token).get("/api/keys").status(), 200);
    // One record, naming both.
    let rec = wait_for_record(&admin, "token_rotate", |r| {
        r["action"] == "token_rotate" && r["outcome"] == "success"
    });
    let d = rec["detail"].as_str().unwrap();
    assert!(d.contains(&old_id) && d.contains(&new_id), "{d}");
    let old = listed(&admin, &old_id);
    assert_eq!(old["expired"], true);
    assert_eq!(old["rotated_to"], new_id.as_str());
    // `token rotate --remote` with no overlap: the previous token stops now,
    // and only the new one is printed.
    let out = client_cmd(&s, &v.admin)
        .args(["token", "rotate", "--remote", "bot", "--overlap", "0"])
        .output()
        .unwrap();
    assert_ok(&out);
    let third = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(third.starts_with("kh_") && third != new_token);
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&third));
    assert_eq!(Api::new(&s, &third).get("/api/keys").status(), 200);
    assert_eq!(Api::new(&s, &new_token).get("/api/keys").status(), 401);
    // `token revoke bot` revokes the newest live one: the third.
    assert_eq!(admin.delete("/api/tokens/bot").status(), 200);
    assert_eq!(Api::new(&s, &third).get("/api/keys").status(), 401);
    let (_, out, err) = s.stop();
    for t in [&old_token, &new_token, &third] {
        assert!(!out.contains(t.as_str()) && !err.contains(t.as_str()));
    }
    // Offline: `token rotate NAME` on a stopped server.
    let [flag, place] = v.store_args();
    let made = v.token("offline-bot", "writer", None);
    let out = run_with_key(
        &v.key,
        &[
            "token",
            "rotate",
            flag,
            place,
            "offline-bot",
            "--overlap",
            "30m",
        ],
    );
    assert_ok(&out);
    let fresh = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(fresh.starts_with("kh_") && fresh != made);
    let recs = v.audit_records();
    assert!(recs
        .iter()
        .any(|r| r["action"] == "token_rotate" && r["caller"] == "cli"));
}

#[test]
fn a_provider_limited_admin_rotates_only_tokens_it_covers() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let admin = Api::new(&s, &v.admin);
    let limited: Value = admin
        .post_json(
            "/api/tokens",
            &json!({"name": "team", "role": "admin", "providers": ["claude"]}),
        )
        .json()
        .unwrap();
    let team = Api::new(&s, &token_of(&limited));
    let broad: Value = admin
        .post_json("/api/tokens", &json!({"name": "broad", "role": "reader"}))
        .json()
        .unwrap();
    let narrow: Value = admin
        .post_json(
            "/api/tokens",
            &json!({"name": "narrow", "role": "reader", "providers": ["claude"]}),
        )
        .json()
        .unwrap();
    // The broader token is answered like a missing one, recorded forbidden.
    let r = team.post_json("/api/tokens/broad/rotate", &json!({}));
    assert_eq!(r.status(), 404);
    let broad_id = broad["id"].as_str().unwrap().to_string();
    let rec = wait_for_record(&admin, "forbidden rotation", |r| {
        r["action"] == "token_rotate" && r["outcome"] == "forbidden"
    });
    assert!(rec["detail"].as_str().unwrap().contains(&broad_id));
    assert_eq!(rec["caller"], "team");
    // The broad token still works and was not rotated.
    assert_eq!(
        Api::new(&s, &token_of(&broad)).get("/api/keys").status(),
        200
    );
    assert!(listed(&admin, &broad_id)["rotated_to"].is_null());
    // A token within its providers is rotated.
    let r = team.post_json("/api/tokens/narrow/rotate", &json!({}));
    assert_eq!(r.status(), 200);
    let rotated: Value = r.json().unwrap();
    assert_eq!(rotated["providers"], json!(["claude"]));
    assert_eq!(rotated["replaced"]["id"], narrow["id"]);
    // Default overlap: one hour.
    let ends =
        chrono::DateTime::parse_from_rfc3339(rotated["replaced"]["expires_at"].as_str().unwrap())
            .unwrap();
    let mins = ends.signed_duration_since(chrono::Utc::now()).num_minutes();
    assert!((58..=60).contains(&mins), "{mins}");
    // Reader tokens cannot rotate at all.
    let r = Api::new(&s, &token_of(&narrow)).post_json("/api/tokens/narrow/rotate", &json!({}));
    assert_eq!(r.status(), 403);
    s.stop();
}

/// A store written before expiry and last use existed (the schema-2
/// fixture, upgraded in place on first open) keeps its tokens, which read
/// as never expiring and never used, and gains last use.
#[test]
fn a_store_from_before_keeps_its_tokens_and_gains_last_use() {
    const KEY: &str = "Ecxtdn_hT2NlQ72h0aydGQo3ZkIg3JgLnVNcsgoWM1Y=";
    const ADMIN: &str = "kh_4JKqlfY-W9Ehj9AaUMGSn4e_r31oqhVKImB7C9lJFqg";
    const READER: &str = "kh_y7xChjiZWM5-6Ib8RsWmhh7mxiUiKRTEWH3QbEoJv4o";
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    copy_dir(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/schema2-store"),
        &dir,
    );
    let s = Server::start(&dir, &[("FERNET_KEY", KEY)]);
    let admin = Api::new(&s, ADMIN);
    let list: Value = admin.get("/api/tokens").json().unwrap();
    let orch = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orchestrator")
        .unwrap()
        .clone();
    assert!(orch["expires_at"].is_null() && orch["last_used"].is_null());
    assert_eq!(orch["expired"], false);
    let reader = Api::new(&s, READER);
    let r = reader.get("/api/keys/08fa2a66-9d03-4d7c-b336-d84db5de4ac9");
    assert_eq!(r.status(), 200);
    let id = orch["id"].as_str().unwrap().to_string();
    assert!(listed(&admin, &id)["last_used"].is_string());
    // An old token can be rotated too (no ttl: the successor has none).
    let r = admin.post_json(
        "/api/tokens/orchestrator/rotate",
        &json!({"overlap_seconds": 60}),
    );
    assert_eq!(r.status(), 200);
    let rotated: Value = r.json().unwrap();
    assert!(rotated["expires_at"].is_null() && rotated["ttl_seconds"].is_null());
    assert_eq!(reader.get("/api/keys").status(), 200);
    s.stop();
    let out = run_with_key(
        KEY,
        &["audit", "verify", "--data-dir", dir.to_str().unwrap()],
    );
    assert_ok(&out);
}
