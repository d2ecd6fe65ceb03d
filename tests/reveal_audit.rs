//! Reveals are audit-first: every attempt is recorded with its outcome,
//! caller, client IP, time and request id, read back from the store after
//! the server stopped.

mod common;

use common::*;
use serde_json::{json, Value};

fn find<'a>(records: &'a [Value], request_id: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no audit record for request {request_id}"))
}

fn request_id(r: &reqwest::blocking::Response) -> String {
    r.headers()["x-request-id"].to_str().unwrap().to_string()
}

#[test]
fn every_reveal_outcome_is_recorded_with_caller_ip_time_and_request_id() {
    let v = Vault::new();
    let writer = v.token("dashboard", "writer", None);
    let reader = v.token("orchestrator", "reader", None);
    let s = v.serve(&[("KEYHOLD_REVEAL_RATE", "1000/min")]);
    let admin = Api::new(&s, &v.admin);
    let id = admin.create_key("claude", "main", "sk-ant-audit");
    let r = admin.post_json(
        "/api/keys",
        &json!({"provider": "gemini", "key_name": "t", "api_key": "AIza-t", "ttl_seconds": 1}),
    );
    let short: Value = r.json().unwrap();
    let short_id = short["id"].as_str().unwrap().to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let ok = Api::new(&s, &reader).get(&format!("/api/keys/{id}"));
    assert_eq!(ok.status(), 200);
    let ok_id = request_id(&ok);
    let ok_provider = Api::new(&s, &reader).get("/api/providers/claude/key");
    assert_eq!(ok_provider.status(), 200);
    let ok_provider_id = request_id(&ok_provider);
    let unauth = Api::anonymous(&s).get(&format!("/api/keys/{id}"));
    assert_eq!(unauth.status(), 401);
    let forbidden = Api::new(&s, &writer).get(&format!("/api/keys/{id}"));
    assert_eq!(forbidden.status(), 403);
    let missing = Api::new(&s, &reader).get(&format!("/api/keys/{}", uuid_like()));
    assert_eq!(missing.status(), 404);
    let expired = Api::new(&s, &reader).get(&format!("/api/keys/{short_id}"));
    assert_eq!(expired.status(), 410);
    let ids = [
        (request_id(&unauth), "unauthenticated", "anonymous"),
        (request_id(&forbidden), "forbidden", "dashboard"),
        (request_id(&missing), "not_found", "orchestrator"),
        (request_id(&expired), "expired", "orchestrator"),
    ];
    let (code, _, _) = s.stop();
    assert_eq!(code, Some(0));

    let records = v.audit_records();
    let rec = find(&records, &ok_id);
    assert_eq!(rec["action"], "reveal");
    assert_eq!(rec["outcome"], "success");
    assert_eq!(rec["caller"], "orchestrator");
    assert!(rec["caller_id"].is_string());
    assert_eq!(rec["key_id"], id.as_str());
    assert_eq!(rec["provider"], "claude");
    assert_eq!(rec["ip"], "127.0.0.1");
    let at = rec["at"].as_str().unwrap();
    assert!(
        at.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(at).is_ok(),
        "{at}"
    );
    // Which key of the keyring opened it: a fingerprint, never the key.
    let detail = rec["detail"].as_str().unwrap();
    assert!(detail.contains("opened by key "), "{detail}");
    assert!(!detail.contains(&v.key));
    assert_eq!(find(&records, &ok_provider_id)["outcome"], "success");
    for (rid, outcome, caller) in ids {
        let rec = find(&records, &rid);
        assert_eq!(rec["action"], "reveal");
        assert_eq!(rec["outcome"], outcome, "{rec}");
        assert_eq!(rec["caller"], caller, "{rec}");
        assert_eq!(rec["ip"], "127.0.0.1");
    }
    // Creates are audited too, and the chain verifies.
    assert!(records
        .iter()
        .any(|r| r["action"] == "key_create" && r["key_id"] == id.as_str()));
    let [flag, place] = v.store_args();
    let out = run_with_key(&v.key, &["audit", "verify", flag, place]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // No record holds the secret.
    let all = serde_json::to_string(&records).unwrap();
    assert!(!all.contains("sk-ant-audit") && !all.contains(&v.admin));
}

fn uuid_like() -> String {
    "6f1c2d3e-0000-4000-8000-000000000001".to_string()
}

#[test]
fn a_key_the_keyring_cannot_open_is_recorded_decrypt_failed() {
    // The store is initialised with `old`; a key is created while the
    // keyring is `new,old` (so it is encrypted under `new`); then the
    // server runs with `old` alone, which opens the check value but not
    // that key.
    let v = Vault::new();
    let new = keygen();
    let both = format!("{new},{}", v.key);
    let s = v.serve_env(&[("FERNET_KEYS", both.as_str())]);
    let id = Api::new(&s, &v.admin).create_key("claude", "k", "sk-under-new");
    s.stop();
    let s = v.serve(&[]);
    let r = Api::new(&s, &v.admin).get(&format!("/api/keys/{id}"));
    assert_eq!(r.status(), 409);
    let rid = request_id(&r);
    let d = detail(r);
    assert!(d.contains("keyring"), "{d}");
    s.stop();
    let records = v.audit_records();
    assert_eq!(find(&records, &rid)["outcome"], "decrypt_failed");
}

#[test]
fn rate_limited_reveals_are_recorded_with_counts() {
    let v = Vault::new();
    let s = v.serve(&[("KEYHOLD_REVEAL_RATE", "2/min")]);
    let api = Api::new(&s, &v.admin);
    let id = api.create_key("claude", "k", "sk-1");
    let statuses: Vec<u16> = (0..12)
        .map(|_| api.get(&format!("/api/keys/{id}")).status().as_u16())
        .collect();
    assert_eq!(&statuses[..2], &[200, 200]);
    assert!(statuses[2..].iter().all(|s| *s == 429), "{statuses:?}");
    s.stop();
    let records = v.audit_records();
    let limited: Vec<&Value> = records
        .iter()
        .filter(|r| r["outcome"] == "rate_limited")
        .collect();
    assert!(!limited.is_empty());
    let total: u64 = limited.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 10, "every refused attempt is counted");
    assert!(
        limited.len() <= 3,
        "coalesced per second: {}",
        limited.len()
    );
    assert!(limited
        .iter()
        .all(|r| r["ip"] == "127.0.0.1" && r["action"] == "reveal"));
}

#[test]
fn create_delete_and_token_operations_are_audited() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    let id = api.create_key("claude", "k", "sk-1");
    assert_eq!(api.delete(&format!("/api/keys/{id}")).status(), 200);
    let r = api.post_json("/api/tokens", &json!({"name": "bot", "role": "reader"}));
    let tid = r.json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(api.delete(&format!("/api/tokens/{tid}")).status(), 200);
    s.stop();
    let records = v.audit_records();
    let actions: Vec<&str> = records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for a in [
        "init",
        "token_create",
        "key_create",
        "key_delete",
        "token_revoke",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    let del = records
        .iter()
        .find(|r| r["action"] == "key_delete")
        .unwrap();
    assert_eq!(del["key_id"], id.as_str());
    assert_eq!(del["caller"], "admin");
}
