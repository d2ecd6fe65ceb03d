//! The reveals: one key by id, by provider, by provider and name
//! (`http/keys.rs`), and several at once (`http/reveal_batch.rs`).

use http::StatusCode;

use super::{refuses_callers, Fx, Setup};
use crate::access::Role;

route_tests!(reveal_by_id, reveal_newest, reveal_named, reveal_batch);

/// A limited reader is told the same of a key beyond its providers as of
/// a missing one.
const BEYOND: &str = "you may see";

/// GET /api/keys/{id}
async fn reveal_by_id(fx: Fx) {
    let id = fx.add_key("openai", "prod", "sk-one").await;
    let path = format!("/api/keys/{id}");
    let reader = fx.token(Role::Reader, &[]).await;
    let key = fx.get(&path, &reader).await.ok();
    assert_eq!(key["api_key"], "sk-one");
    assert_eq!(key["id"], id.as_str());
    assert_eq!(key["provider"], "openai");
    assert_eq!(key["version"], 1);
    let old = fx.get(&format!("{path}?version=1"), &reader).await.ok();
    assert_eq!(old["api_key"], "sk-one");
    let writer = fx.token(Role::Writer, &[]).await;
    refuses_callers(&fx, "GET", &path, "keys:reveal", &writer).await;
    // Beyond the token's providers: as if missing.
    let limited = fx.token(Role::Reader, &["claude"]).await;
    let beyond = fx.get(&path, &limited).await;
    let missing = fx
        .get(&format!("/api/keys/{}", uuid::Uuid::new_v4()), &limited)
        .await;
    beyond.refused(StatusCode::NOT_FOUND, "no key");
    assert_eq!(beyond.detail(), missing.detail());
    let missing = fx
        .get(&format!("/api/keys/{}", uuid::Uuid::new_v4()), &reader)
        .await;
    missing.refused(StatusCode::NOT_FOUND, "no key");
    for version in ["9", "x", "0"] {
        let a = fx.get(&format!("{path}?version={version}"), &reader).await;
        assert!(
            a.status == StatusCode::NOT_FOUND || a.status == StatusCode::UNPROCESSABLE_ENTITY,
            "version={version}: {}",
            a.text()
        );
        assert!(a.detail().contains("version"), "{}", a.text());
    }
    let a = fx.get(&format!("{path}?purge=true"), &reader).await;
    a.refused(StatusCode::UNPROCESSABLE_ENTITY, "takes only `version`");
    // A reveal's answer says how much of the rate is left.
    let a = fx.get(&path, &reader).await;
    assert!(
        a.headers.contains_key("ratelimit-remaining"),
        "{:?}",
        a.headers
    );
}

/// GET /api/providers/{provider}/key
async fn reveal_newest(fx: Fx) {
    fx.add_key("openai", "old", "sk-old").await;
    fx.add_key("openai", "new", "sk-new").await;
    let reader = fx.token(Role::Reader, &[]).await;
    let key = fx.get("/api/providers/openai/key", &reader).await.ok();
    assert_eq!(key["api_key"], "sk-new");
    assert_eq!(key["key_name"], "new");
    let writer = fx.token(Role::Writer, &[]).await;
    let path = "/api/providers/openai/key";
    refuses_callers(&fx, "GET", path, "keys:reveal", &writer).await;
    let limited = fx.token(Role::Reader, &["claude"]).await;
    fx.get(path, &limited)
        .await
        .refused(StatusCode::NOT_FOUND, BEYOND);
    let a = fx.get("/api/providers/mistral/key", &reader).await;
    a.refused(
        StatusCode::NOT_FOUND,
        "no key stored for provider `mistral`",
    );
}

/// GET /api/providers/{provider}/keys/{key_name}
async fn reveal_named(fx: Fx) {
    fx.add_key("openai", "prod", "sk-prod").await;
    fx.add_key("openai", "a b", "sk-space").await;
    let reader = fx.token(Role::Reader, &[]).await;
    let path = "/api/providers/openai/keys/prod";
    let key = fx.get(path, &reader).await.ok();
    assert_eq!(key["api_key"], "sk-prod");
    assert_eq!(key["key_name"], "prod");
    let spaced = fx.get("/api/providers/openai/keys/a%20b", &reader).await;
    assert_eq!(spaced.ok()["api_key"], "sk-space");
    let writer = fx.token(Role::Writer, &[]).await;
    refuses_callers(&fx, "GET", path, "keys:reveal", &writer).await;
    let limited = fx.token(Role::Reader, &["claude"]).await;
    fx.get(path, &limited)
        .await
        .refused(StatusCode::NOT_FOUND, BEYOND);
    let a = fx.get("/api/providers/openai/keys/staging", &reader).await;
    a.refused(StatusCode::NOT_FOUND, "no live key named \"staging\"");
    let a = fx.get("/api/providers/openai/keys/%FF", &reader).await;
    a.refused(StatusCode::BAD_REQUEST, "not valid UTF-8");
}

/// POST /api/reveal
async fn reveal_batch(fx: Fx) {
    let id = fx.add_key("openai", "prod", "sk-prod").await;
    fx.add_key("claude", "ci", "sk-ci").await;
    let reader = fx.token(Role::Reader, &[]).await;
    let both = serde_json::json!({"keys": [
        {"id": id}, {"provider": "claude", "key_name": "ci"}
    ]})
    .to_string();
    let send =
        |token: &str, body: &str| fx.req("POST", "/api/reveal").token(token).json(body).send();
    let out = send(&reader, &both).await.ok();
    let keys = out["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{out}");
    assert_eq!(keys[0]["api_key"], "sk-prod");
    assert_eq!(keys[0]["id"], id.as_str());
    assert_eq!(keys[1]["api_key"], "sk-ci");
    let writer = fx.token(Role::Writer, &[]).await;
    refuses_callers(&fx, "POST", "/api/reveal", "keys:reveal", &writer).await;
    // All or none: one key beyond a limited token reveals nothing.
    let limited = fx.token(Role::Reader, &["claude"]).await;
    let a = send(&limited, &both).await;
    a.refused(StatusCode::NOT_FOUND, "key 1 of 2");
    assert!(a.json().get("keys").is_none(), "{}", a.text());
    assert_eq!(a.json()["failed"][0]["index"], 0, "{}", a.text());
    let missing = serde_json::json!({"keys": [{"id": id}, {"provider": "mistral"}]}).to_string();
    let a = send(&reader, &missing).await;
    a.refused(StatusCode::NOT_FOUND, "key 2 of 2");
    assert!(
        !a.text().contains("sk-prod"),
        "nothing revealed: {}",
        a.text()
    );
    for (body, status, says) in [
        ("{", StatusCode::BAD_REQUEST, "not valid JSON"),
        (
            "{}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "field `keys` is required",
        ),
        (r#"{"keys":[]}"#, StatusCode::UNPROCESSABLE_ENTITY, "no key"),
        (
            r#"{"keys":[{"provider":"openai","keyname":"p"}]}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field",
        ),
    ] {
        send(&reader, body).await.refused(status, says);
    }
    // More keys than the reveal rate lets one client have at once.
    let slow = fx.another(Setup {
        rate: "1/min",
        ..Default::default()
    });
    let (a, b) = (
        slow.add_key("openai", "a", "sk-a").await,
        slow.add_key("openai", "b", "sk-b").await,
    );
    let two = serde_json::json!({"keys": [{"id": a}, {"id": b}]}).to_string();
    let r = slow.req("POST", "/api/reveal").token(&slow.admin);
    let r = r.json(&two).send().await;
    r.refused(
        StatusCode::UNPROCESSABLE_ENTITY,
        "split it into smaller requests",
    );
    assert!(!r.text().contains("sk-a"), "{}", r.text());
}
