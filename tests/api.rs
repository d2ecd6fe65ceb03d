//! The HTTP API of DESIGN.md against a real server: every route, its JSON
//! shape, and every error status with a `detail`.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

#[test]
fn create_list_reveal_delete_round_trip_with_reference_shapes() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);

    // Create, with and without the trailing slash (the Python front end uses it).
    let r = api.post_json(
        "/api/keys/",
        &json!({"provider": "claude", "key_name": "main", "api_key": "sk-ant-one"}),
    );
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-request-id").is_some());
    let created: serde_json::Value = r.json().unwrap();
    let mut fields: Vec<_> = created.as_object().unwrap().keys().cloned().collect();
    fields.sort();
    // The reference's fields, and the fields versions and soft deletion
    // added (issue 18): nothing else.
    assert_eq!(
        fields,
        [
            "created_at",
            "deleted_at",
            "expires_at",
            "id",
            "key_name",
            "last_used",
            "provider",
            "purge_at",
            "version"
        ]
    );
    assert_eq!(created["version"], 1);
    assert_eq!(created["deleted_at"], serde_json::Value::Null);
    assert_eq!(created["provider"], "claude");
    assert_eq!(created["last_used"], serde_json::Value::Null);
    let id = created["id"].as_str().unwrap().to_string();
    let gemini = api.create_key("gemini", "g", "AIza-two");

    // List: metadata only, never ciphertext or plaintext; filter by provider.
    let r = api.get("/api/keys");
    assert_eq!(r.status(), 200);
    let body = r.text().unwrap();
    assert!(
        !body.contains("sk-ant-one") && !body.contains("gAAAA"),
        "{body}"
    );
    let all: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(all.len(), 2);
    let only: Vec<serde_json::Value> = api.get("/api/keys/?provider=gemini").json().unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["id"], gemini.as_str());

    // Reveal by id.
    let r = api.get(&format!("/api/keys/{id}"));
    assert_eq!(r.status(), 200);
    let revealed: serde_json::Value = r.json().unwrap();
    assert_eq!(
        revealed,
        // The reference's shape, and the version revealed and its expiry
        // (issue 18).
        json!({"id": id, "provider": "claude", "key_name": "main", "api_key": "sk-ant-one",
               "version": 1, "expires_at": null})
    );
    // last_used is set by the reveal.
    let listed: Vec<serde_json::Value> = api.get("/api/keys?provider=claude").json().unwrap();
    assert!(listed[0]["last_used"].is_string());

    // Delete, then it is gone.
    let r = api.delete(&format!("/api/keys/{id}"));
    assert_eq!(r.status(), 200);
    let v2: serde_json::Value = r.json().unwrap();
    assert_eq!(v2, json!({"status": "deleted", "id": id}));
    assert_eq!(api.get(&format!("/api/keys/{id}")).status(), 404);
    assert_eq!(api.delete(&format!("/api/keys/{id}")).status(), 404);
}

#[test]
fn newest_live_key_of_a_provider_is_revealed() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    api.create_key("claude", "old", "sk-old");
    std::thread::sleep(std::time::Duration::from_millis(5));
    let newest = api.create_key("claude", "new", "sk-new");
    api.create_key("claudex", "other", "sk-other");
    let r = api.get("/api/providers/claude/key");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["id"], newest.as_str());
    assert_eq!(v["api_key"], "sk-new");
    let r = api.get("/api/providers/mistral/key");
    assert_eq!(r.status(), 404);
    assert!(detail(r).contains("mistral"));
    assert_eq!(api.get("/api/providers/NOT_VALID/key").status(), 404);
}

#[test]
fn expired_keys_answer_410_and_are_skipped_for_the_newest() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    let live = api.create_key("gemini", "live", "AIza-live");
    let r = api.post_json(
        "/api/keys",
        &json!({"provider": "gemini", "key_name": "short", "api_key": "AIza-short", "ttl_seconds": 1}),
    );
    assert_eq!(r.status(), 200);
    let short: serde_json::Value = r.json().unwrap();
    assert!(short["expires_at"].is_string());
    let short_id = short["id"].as_str().unwrap().to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = api.get(&format!("/api/keys/{short_id}"));
    assert_eq!(r.status(), 410);
    assert!(detail(r).contains("expired"));
    // The newest live key skips the expired one.
    let v2: serde_json::Value = api.get("/api/providers/gemini/key").json().unwrap();
    assert_eq!(v2["id"], live.as_str());
    // A provider whose only key has expired answers 410.
    let r = api.post_json(
        "/api/keys",
        &json!({"provider": "brief", "key_name": "b", "api_key": "x", "ttl_seconds": 1}),
    );
    assert_eq!(r.status(), 200);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(api.get("/api/providers/brief/key").status(), 410);
}

#[test]
fn missing_bad_and_revoked_tokens_answer_401() {
    let v = Vault::new();
    let reader = v.token("orchestrator", "reader", None);
    let s = v.serve(&[]);
    let admin = Api::new(&s, &v.admin);
    let id = admin.create_key("claude", "k", "sk-1");
    let http = client();
    for path in [
        "/api/keys",
        &format!("/api/keys/{id}"),
        "/api/providers/claude/key",
        "/api/tokens",
        "/api/audit",
    ] {
        let r = http.get(s.url(path)).send().unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert!(detail(r).contains("Authorization"));
    }
    let r = http
        .get(s.url("/api/keys"))
        .header("Authorization", "Basic YTpi")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(detail(r).contains("scheme"));
    let r = http
        .get(s.url("/api/keys"))
        .bearer_auth("kh_short")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let wrong = format!("kh_{}", "A".repeat(43));
    let r = http
        .get(s.url("/api/keys"))
        .bearer_auth(&wrong)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(detail(r).contains("invalid or revoked"));

    // Revoke the reader online: its token stops working at once.
    let r = Api::new(&s, &reader).get("/api/keys");
    assert_eq!(r.status(), 200);
    let tokens: Vec<serde_json::Value> = admin.get("/api/tokens").json().unwrap();
    let rid = tokens.iter().find(|t| t["name"] == "orchestrator").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = admin.delete(&format!("/api/tokens/{rid}"));
    assert_eq!(r.status(), 200);
    assert_eq!(Api::new(&s, &reader).get("/api/keys").status(), 401);
}

#[test]
fn scopes_and_provider_limits_answer_403() {
    let v = Vault::new();
    let writer = v.token("dashboard", "writer", None);
    let reader = v.token("orch", "reader", None);
    let auditor = v.token("auditor", "auditor", None);
    let claude_only = v.token("claude-only", "reader", Some("claude"));
    let s = v.serve(&[]);
    let admin = Api::new(&s, &v.admin);
    let claude = admin.create_key("claude", "c", "sk-c");
    let gemini = admin.create_key("gemini", "g", "AIza-g");

    // writer: may create/delete/list, not reveal.
    let w = Api::new(&s, &writer);
    assert_eq!(w.get("/api/keys").status(), 200);
    let r = w.get(&format!("/api/keys/{claude}"));
    assert_eq!(r.status(), 403);
    assert!(detail(r).contains("keys:reveal"));
    assert_eq!(w.get("/api/providers/claude/key").status(), 403);
    // reader: may reveal, not create or delete.
    let rd = Api::new(&s, &reader);
    assert_eq!(rd.get(&format!("/api/keys/{claude}")).status(), 200);
    let r = rd.post_json(
        "/api/keys",
        &json!({"provider": "x", "key_name": "x", "api_key": "x"}),
    );
    assert_eq!(r.status(), 403);
    assert!(detail(r).contains("keys:write"));
    assert_eq!(rd.delete(&format!("/api/keys/{claude}")).status(), 403);
    // auditor: audit only.
    let a = Api::new(&s, &auditor);
    assert_eq!(a.get("/api/keys").status(), 403);
    assert_eq!(a.get("/api/audit/verify").status(), 200);
    assert_eq!(rd.get("/api/audit").status(), 403);
    // Non-admins cannot manage tokens.
    assert_eq!(rd.get("/api/tokens").status(), 403);
    assert_eq!(
        w.post_json("/api/tokens", &json!({"name": "x", "role": "admin"}))
            .status(),
        403
    );
    // A provider-limited token sees and reveals only its providers; the
    // others' keys answer 404, like missing ones (issue 14).
    let c = Api::new(&s, &claude_only);
    assert_eq!(c.get(&format!("/api/keys/{claude}")).status(), 200);
    assert_eq!(c.get(&format!("/api/keys/{gemini}")).status(), 404);
    assert_eq!(c.get("/api/providers/gemini/key").status(), 404);
    let listed: Vec<serde_json::Value> = c.get("/api/keys").json().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["provider"], "claude");
}

#[test]
fn malformed_and_invalid_bodies_answer_400_413_415_422() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    let post_raw = |body: &str, ct: &str| {
        api.req(Method::POST, "/api/keys")
            .header("Content-Type", ct)
            .body(body.to_string())
            .send()
            .unwrap()
    };
    // 400: not JSON, empty, truncated.
    for body in ["{not json", "", "{\"provider\": \"claude\""] {
        let r = post_raw(body, "application/json");
        assert_eq!(r.status(), 400, "{body:?}");
        assert!(!detail(r).is_empty());
    }
    // 415: not JSON content type.
    let r = post_raw("provider=claude", "application/x-www-form-urlencoded");
    assert_eq!(r.status(), 415);
    // 413: over 64 KiB, with and without Content-Length.
    let huge = json!({"provider": "claude", "key_name": "k", "api_key": "x".repeat(70 * 1024)})
        .to_string();
    let r = post_raw(&huge, "application/json");
    assert_eq!(r.status(), 413);
    assert!(detail(r).contains("64 KiB"));
    // Chunked, without Content-Length: refused once 64 KiB are exceeded.
    let answer = chunked_post(&s, &v.admin, 20, 8 * 1024);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // 422: each field, named.
    let cases = [
        (json!({"key_name": "k", "api_key": "x"}), "provider"),
        (json!({"provider": "claude", "api_key": "x"}), "key_name"),
        (json!({"provider": "claude", "key_name": "k"}), "api_key"),
        (
            json!({"provider": 5, "key_name": "k", "api_key": "x"}),
            "provider",
        ),
        (
            json!({"provider": "claude", "key_name": ["k"], "api_key": "x"}),
            "key_name",
        ),
        (
            json!({"provider": "claude", "key_name": "k", "api_key": null}),
            "api_key",
        ),
        (
            json!({"provider": "Claude!", "key_name": "k", "api_key": "x"}),
            "provider",
        ),
        (
            json!({"provider": "a".repeat(65), "key_name": "k", "api_key": "x"}),
            "provider",
        ),
        (
            json!({"provider": "claude", "key_name": "", "api_key": "x"}),
            "key_name",
        ),
        (
            json!({"provider": "claude", "key_name": "n".repeat(201), "api_key": "x"}),
            "key_name",
        ),
        (
            json!({"provider": "claude", "key_name": "a\u{7}b", "api_key": "x"}),
            "key_name",
        ),
        (
            json!({"provider": "claude", "key_name": "k", "api_key": ""}),
            "api_key",
        ),
        (
            json!({"provider": "claude", "key_name": "k", "api_key": "x".repeat(16 * 1024 + 1)}),
            "api_key",
        ),
        (
            json!({"provider": "claude", "key_name": "k", "api_key": "x", "ttl_seconds": 0}),
            "ttl_seconds",
        ),
        (
            json!({"provider": "claude", "key_name": "k", "api_key": "x", "ttl_seconds": "60"}),
            "ttl_seconds",
        ),
        (
            json!({"provider": "claude", "key_name": "k", "api_key": "x", "ttl_seconds": 1.5}),
            "ttl_seconds",
        ),
        (json!(["not", "an", "object"]), "object"),
    ];
    for (body, field) in cases {
        let r = api.post_json("/api/keys", &body);
        assert_eq!(r.status(), 422, "{body}");
        let d = detail(r);
        assert!(d.contains(field), "{d} should name {field}");
    }
    // Limits are inclusive: 200 characters and 16 KiB are accepted.
    let r = api.post_json(
        "/api/keys",
        &json!({"provider": "a".repeat(64), "key_name": "n".repeat(200), "api_key": "x".repeat(16 * 1024)}),
    );
    assert_eq!(r.status(), 200);
    // Invalid list filter.
    assert_eq!(api.get("/api/keys?provider=Bad!").status(), 422);
    // The server is still healthy.
    assert_eq!(api.get("/healthz").status(), 200);
}

/// POSTs a chunked body of `n` chunks over a raw socket and returns the
/// answer's text (the server may answer before the body is complete).
fn chunked_post(s: &Server, token: &str, n: usize, size: usize) -> String {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(&s.addr).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "POST /api/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", size, " ".repeat(size));
    for _ in 0..n {
        if sock.write_all(chunk.as_bytes()).is_err() {
            break;
        }
    }
    let _ = sock.write_all(b"0\r\n\r\n");
    let mut buf = Vec::new();
    let _ = sock.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
fn ids_that_are_not_uuids_and_unknown_routes_answer_404() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    for path in [
        "/api/keys/not-a-uuid",
        "/api/keys/..%2F..%2Fetc%2Fpasswd",
        "/api/keys/00000000-0000-0000-0000-000000000000",
        "/api/nothing",
        "/",
    ] {
        let r = api.get(path);
        assert_eq!(r.status(), 404, "{path}");
        assert!(!detail(r).is_empty());
    }
    assert_eq!(api.delete("/api/keys/zzz").status(), 404);
    let r = api.req(Method::PUT, "/api/keys").send().unwrap();
    assert_eq!(r.status(), 405);
}

#[test]
fn token_routes_create_list_get_revoke() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    let r = api.post_json(
        "/api/tokens",
        &json!({"name": "ci-bot", "role": "reader", "providers": ["claude"]}),
    );
    assert_eq!(r.status(), 200);
    let created: serde_json::Value = r.json().unwrap();
    let token = created["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("kh_") && token.len() >= 3 + 43);
    assert_eq!(created["scopes"], json!(["keys:list", "keys:reveal"]));
    assert_eq!(created["providers"], json!(["claude"]));
    let id = created["id"].as_str().unwrap().to_string();
    // The new token works, limited as asked.
    let bot = Api::new(&s, &token);
    assert_eq!(bot.get("/api/keys").status(), 200);
    // List and get never show a secret.
    let body = api.get("/api/tokens").text().unwrap();
    assert!(!body.contains(&token) && !body.contains(&v.admin));
    let got: serde_json::Value = api.get(&format!("/api/tokens/{id}")).json().unwrap();
    assert_eq!(got["name"], "ci-bot");
    assert!(got.get("token").is_none());
    // Duplicate names, bad roles, bad names.
    assert_eq!(
        api.post_json("/api/tokens", &json!({"name": "ci-bot", "role": "reader"}))
            .status(),
        409
    );
    let r = api.post_json("/api/tokens", &json!({"name": "x", "role": "root"}));
    assert_eq!(r.status(), 422);
    assert!(detail(r).contains("role"));
    assert_eq!(
        api.post_json(
            "/api/tokens",
            &json!({"name": "bad name", "role": "reader"})
        )
        .status(),
        422
    );
    assert_eq!(
        api.post_json("/api/tokens", &json!({"role": "reader"}))
            .status(),
        422
    );
    // Revoke: twice is a conflict; unknown is 404.
    let r = api.delete(&format!("/api/tokens/{id}"));
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().unwrap(),
        json!({"status": "revoked", "id": id})
    );
    assert_eq!(api.delete(&format!("/api/tokens/{id}")).status(), 409);
    assert_eq!(api.delete("/api/tokens/no-such").status(), 404);
    assert_eq!(bot.get("/api/keys").status(), 401);
}

#[test]
fn healthz_answers_without_a_token() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let r = client().get(s.url("/healthz")).send().unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["audit_writer"], "ok");
}

#[test]
fn a_body_that_does_not_arrive_answers_408_and_others_are_served() {
    use std::io::{Read, Write};
    let v = Vault::new();
    let s = v.serve(&[("KEYHOLD_HEADER_TIMEOUT", "1")]);
    let mut sock = std::net::TcpStream::connect(&s.addr).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "POST /api/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        v.admin
    );
    sock.write_all(head.as_bytes()).unwrap();
    // Meanwhile another client is served.
    assert_eq!(Api::new(&s, &v.admin).get("/api/keys").status(), 200);
    let mut buf = Vec::new();
    let _ = sock.read_to_end(&mut buf);
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("detail"));
}
