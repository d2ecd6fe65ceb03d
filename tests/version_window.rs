//! Keys over time, the recovery window of versions (issue 24, point 4):
//! only an admin destroys. A writer pushing versions past the cap moves
//! the oldest into the recovery window, where no reveal reaches it and
//! from which an admin (only) puts it back; and a flood of versions does
//! not grow a key's record without bound. Runs the real binary (on sled,
//! and on PostgreSQL in scripts/test.sh's second pass).

mod common;

use common::*;
use serde_json::{json, Value};

fn put(api: &Api, id: &str, api_key: &str) -> reqwest::blocking::Response {
    api.req(reqwest::Method::PUT, &format!("/api/keys/{id}"))
        .json(&json!({ "api_key": api_key }))
        .send()
        .unwrap()
}

fn ok_json(r: reqwest::blocking::Response) -> Value {
    assert_eq!(r.status(), 200);
    r.json().unwrap()
}

fn records_of(v: &Vault, action: &str) -> Vec<Value> {
    v.audit_records()
        .into_iter()
        .filter(|r| r["action"] == action)
        .collect()
}

#[test]
fn versions_past_the_cap_enter_the_recovery_window_and_an_admin_restores_them() {
    let v = Vault::new();
    let writer = v.token("w", "writer", None);
    let server = v.serve(&[]);
    let admin = Api::new(&server, &v.admin);
    let w = Api::new(&server, &writer);
    let id = w.create_key("claude", "main", "sk-window-v1");
    for n in 2..=11 {
        assert_eq!(
            ok_json(put(&w, &id, &format!("sk-window-v{n}")))["version"],
            n
        );
    }
    let r = admin.get(&format!("/api/keys/{id}?version=1"));
    assert_eq!(r.status(), 404);
    let text = detail(r);
    assert!(text.contains("recovery window"), "{text}");
    assert!(!text.contains("sk-window"), "{text}");
    let list = ok_json(admin.get(&format!("/api/keys/{id}/versions")));
    let first = &list.as_array().unwrap()[0];
    assert_eq!(
        (first["version"].as_u64(), first["state"].as_str()),
        (Some(1), Some("recovery"))
    );
    assert!(first["restorable_until"].is_string(), "{first}");
    // The writer cannot put it back (nor purge); the admin can.
    let restore = format!("/api/keys/{id}/versions/1/restore");
    let r = w.req(reqwest::Method::POST, &restore).send().unwrap();
    assert_eq!(r.status(), 403);
    let r = admin.req(reqwest::Method::POST, &restore).send().unwrap();
    assert_eq!(r.status(), 200);
    let r = ok_json(admin.get(&format!("/api/keys/{id}?version=1")));
    assert_eq!(r["api_key"], "sk-window-v1");
    // Not in the window any more: a second restore is a 404.
    let r = admin.req(reqwest::Method::POST, &restore).send().unwrap();
    assert_eq!(r.status(), 404);
    server.stop();
    let restores = records_of(&v, "key_restore");
    assert!(restores.iter().any(|r| r["outcome"] == "success"
        && r["detail"]
            .as_str()
            .unwrap_or("")
            .contains("version 1 restored")));
    assert!(records_of(&v, "key_purge").is_empty());

    // A flood of versions does not grow the record without bound: a key's
    // recovery window holds 1 MiB of versions at most (1,000 at most); the
    // next version that would enter it is 409. Versions of 16 KiB reach it
    // after some 45.
    let server = v.serve(&[("KEYHOLD_KEEP_VERSIONS", "1")]);
    let w = Api::new(&server, &writer);
    let big = "k".repeat(16 * 1024);
    let mut stored = 0;
    let refused = loop {
        let r = put(&w, &id, &big);
        if r.status() != 200 {
            break r;
        }
        stored += 1;
        assert!(stored < 1000, "no bound");
    };
    assert_eq!(refused.status(), 409);
    let said = detail(refused);
    assert!(said.contains("recovery window holds no more"), "{said}");
    assert!((30..100).contains(&stored), "{stored} versions of 16 KiB");
}
