//! The key routes of `http/keys.rs` but its reveals (`reveal.rs`): create,
//! list, a new version, versions, delete (soft, or purge), restore, and
//! restore a version.

use http::StatusCode;

use super::{each, refuses_callers, refuses_queries, Fx, Setup};
use crate::access::Role;

route_tests!(
    create_key,
    list_keys,
    put_key,
    key_versions,
    delete_key,
    restore_key,
    restore_version,
);

/// A body of POST /api/keys.
fn new_key(provider: &str, name: &str) -> String {
    serde_json::json!({"provider": provider, "key_name": name, "api_key": "sk-test-1"}).to_string()
}

/// POST /api/keys
async fn create_key(fx: Fx) {
    let a = fx
        .req("POST", "/api/keys")
        .token(&fx.admin)
        .json(&new_key("openai", "prod"))
        .send()
        .await;
    let key = a.ok();
    assert!(uuid::Uuid::parse_str(key["id"].as_str().unwrap()).is_ok());
    assert_eq!(key["provider"], "openai");
    assert_eq!(key["key_name"], "prod");
    assert_eq!(key["version"], 1);
    assert!(key["deleted_at"].is_null());
    assert!(key.get("api_key").is_none(), "metadata only: {key}");
    // A writer (keys:write) may; a reader may not.
    let writer = fx.token(Role::Writer, &[]).await;
    let a = fx.req("POST", "/api/keys").token(&writer);
    a.json(&new_key("openai", "ci")).send().await.ok();
    let reader = fx.token(Role::Reader, &[]).await;
    refuses_callers(&fx, "POST", "/api/keys", "keys:write", &reader).await;
    // A writer limited to one provider stores keys of that one only.
    let limited = fx.token(Role::Writer, &["claude"]).await;
    let a = fx.req("POST", "/api/keys").token(&limited);
    let a = a.json(&new_key("openai", "other")).send().await;
    a.refused(
        StatusCode::FORBIDDEN,
        "limited to other providers than `openai`",
    );
    let a = fx.req("POST", "/api/keys").token(&limited);
    a.json(&new_key("claude", "mine")).send().await.ok();
    // Bodies that do not fit, each refused by what is wrong.
    for (body, status, says) in [
        ("{", StatusCode::BAD_REQUEST, "not valid JSON"),
        ("", StatusCode::BAD_REQUEST, "body is empty"),
        ("[1]", StatusCode::UNPROCESSABLE_ENTITY, "JSON object"),
        (
            r#"{"provider":"openai","key_name":"k"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "`api_key` is required",
        ),
        (
            r#"{"provider":"openai","key_name":"k","api_key":"x","ttl_seconds":"1d"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "`ttl_seconds` must be a whole number",
        ),
        (
            r#"{"provider":"Bad","key_name":"k","api_key":"x"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "provider",
        ),
    ] {
        let a = fx.req("POST", "/api/keys").token(&fx.admin);
        a.json(body).send().await.refused(status, says);
    }
    let a = fx.req("POST", "/api/keys").token(&fx.admin);
    let a = a.header("content-type", "text/plain").send().await;
    a.refused(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type");
}

/// GET /api/keys
async fn list_keys(fx: Fx) {
    fx.add_key("openai", "a", "sk-a").await;
    fx.add_key("openai", "b", "sk-b").await;
    fx.add_key("claude", "c", "sk-c").await;
    let all = fx.get("/api/keys", &fx.admin).await.ok();
    assert_eq!(all.as_array().unwrap().len(), 3, "{all}");
    assert!(all[0].get("api_key").is_none(), "metadata only: {all}");
    // The trailing slash is the same route.
    let again = fx.get("/api/keys/", &fx.admin).await.ok();
    assert_eq!(again.as_array().unwrap().len(), 3);
    let some = fx.get("/api/keys?provider=openai", &fx.admin).await.ok();
    assert_eq!(each(&some, "provider"), ["openai", "openai"]);
    // A provider-limited reader lists its providers' keys only.
    let limited = fx.token(Role::Reader, &["claude"]).await;
    let mine = fx.get("/api/keys", &limited).await.ok();
    assert_eq!(mine.as_array().unwrap().len(), 1);
    assert_eq!(mine[0]["provider"], "claude");
    let auditor = fx.token(Role::Auditor, &[]).await;
    refuses_callers(&fx, "GET", "/api/keys", "keys:list", &auditor).await;
    let bad = [
        ("expired=maybe", "`expired` must be true or false"),
        ("deleted=2", "`deleted` must be true or false"),
        (
            "expiring_within=soon",
            "`expiring_within` must be a duration",
        ),
        ("expird=true", "`expird` is not known"),
    ];
    refuses_queries(&fx, "/api/keys", &fx.admin, &bad).await;
}

/// PUT /api/keys/{id}
async fn put_key(fx: Fx) {
    let id = fx.add_key("openai", "prod", "sk-1").await;
    let path = format!("/api/keys/{id}");
    let a = fx.req("PUT", &path).token(&fx.admin);
    let key = a.json(r#"{"api_key":"sk-2"}"#).send().await.ok();
    assert_eq!(key["id"], id.as_str());
    assert_eq!(key["version"], 2);
    assert_eq!(key["provider"], "openai");
    let revealed = fx.get(&path, &fx.admin).await.ok();
    assert_eq!(revealed["api_key"], "sk-2");
    let reader = fx.token(Role::Reader, &[]).await;
    refuses_callers(&fx, "PUT", &path, "keys:write", &reader).await;
    let a = fx
        .req("PUT", &path)
        .token(&fx.admin)
        .json("{}")
        .send()
        .await;
    a.refused(StatusCode::UNPROCESSABLE_ENTITY, "`api_key` is required");
    let a = fx.req("PUT", &path).token(&fx.admin);
    let a = a.json(r#"{"api_key":1}"#).send().await;
    a.refused(
        StatusCode::UNPROCESSABLE_ENTITY,
        "`api_key` must be a string",
    );
    let missing = format!("/api/keys/{}", uuid::Uuid::new_v4());
    let a = fx.req("PUT", &missing).token(&fx.admin);
    let a = a.json(r#"{"api_key":"x"}"#).send().await;
    a.refused(StatusCode::NOT_FOUND, "no key");
    // A writer limited to another provider cannot tell the key exists.
    let limited = fx.token(Role::Writer, &["claude"]).await;
    let a = fx.req("PUT", &path).token(&limited);
    let a = a.json(r#"{"api_key":"x"}"#).send().await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text());
}

/// GET /api/keys/{id}/versions
async fn key_versions(fx: Fx) {
    let id = fx.add_key("openai", "prod", "sk-1").await;
    let put = fx.req("PUT", &format!("/api/keys/{id}")).token(&fx.admin);
    put.json(r#"{"api_key":"sk-2"}"#).send().await.ok();
    let path = format!("/api/keys/{id}/versions");
    let versions = fx.get(&path, &fx.admin).await.ok();
    let numbers: Vec<u64> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers.len(), 2, "{versions}");
    assert!(numbers.contains(&1) && numbers.contains(&2), "{versions}");
    let auditor = fx.token(Role::Auditor, &[]).await;
    refuses_callers(&fx, "GET", &path, "keys:list", &auditor).await;
    let missing = format!("/api/keys/{}/versions", uuid::Uuid::new_v4());
    let a = fx.get(&missing, &fx.admin).await;
    a.refused(StatusCode::NOT_FOUND, "no key");
    let limited = fx.token(Role::Reader, &["claude"]).await;
    let a = fx.get(&path, &limited).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text());
}

/// DELETE /api/keys/{id}
async fn delete_key(fx: Fx) {
    let id = fx.add_key("openai", "prod", "sk-1").await;
    let path = format!("/api/keys/{id}");
    let reader = fx.token(Role::Reader, &[]).await;
    refuses_callers(&fx, "DELETE", &path, "keys:write", &reader).await;
    // Purging is for admins, even to a writer.
    let writer = fx.token(Role::Writer, &[]).await;
    let a = fx
        .req("DELETE", &format!("{path}?purge=true"))
        .token(&writer);
    a.send().await.refused(StatusCode::FORBIDDEN, "`admin`");
    let a = fx
        .req("DELETE", &format!("{path}?purge=soon"))
        .token(&fx.admin);
    let a = a.send().await;
    a.refused(
        StatusCode::UNPROCESSABLE_ENTITY,
        "`purge` must be true or false",
    );
    let limited = fx.token(Role::Writer, &["claude"]).await;
    let a = fx.req("DELETE", &path).token(&limited).send().await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text());
    // Soft delete: the key is gone from reveals, restorable.
    let done = fx.req("DELETE", &path).token(&writer).send().await.ok();
    assert_eq!(done["id"], id.as_str());
    assert_eq!(done["status"], "deleted");
    let a = fx.get(&path, &fx.admin).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text());
    let deleted = fx.get("/api/keys?deleted=true", &fx.admin).await.ok();
    assert_eq!(deleted[0]["id"], id.as_str());
    assert!(deleted[0]["purge_at"].is_string(), "{deleted}");
    // Purge: destroyed at once.
    let other = fx.add_key("openai", "other", "sk-2").await;
    let purge = format!("/api/keys/{other}?purge=true");
    let done = fx.req("DELETE", &purge).token(&fx.admin).send().await.ok();
    assert_eq!(done["id"], other.as_str());
    let a = fx.req("DELETE", &purge).token(&fx.admin).send().await;
    a.refused(StatusCode::NOT_FOUND, "no key");
    let missing = format!("/api/keys/{}", uuid::Uuid::new_v4());
    let a = fx.req("DELETE", &missing).token(&fx.admin).send().await;
    a.refused(StatusCode::NOT_FOUND, "no key");
}

/// POST /api/keys/{id}/restore
async fn restore_key(fx: Fx) {
    let id = fx.add_key("openai", "prod", "sk-1").await;
    let path = format!("/api/keys/{id}/restore");
    let reader = fx.token(Role::Reader, &[]).await;
    refuses_callers(&fx, "POST", &path, "keys:write", &reader).await;
    let del = fx
        .req("DELETE", &format!("/api/keys/{id}"))
        .token(&fx.admin);
    del.send().await.ok();
    let key = fx.req("POST", &path).token(&fx.admin).send().await.ok();
    assert_eq!(key["id"], id.as_str());
    assert!(key["deleted_at"].is_null(), "{key}");
    let revealed = fx.get(&format!("/api/keys/{id}"), &fx.admin).await.ok();
    assert_eq!(revealed["api_key"], "sk-1");
    // A live key has nothing to restore.
    let a = fx.req("POST", &path).token(&fx.admin).send().await;
    assert!(a.status.is_client_error(), "{}", a.text());
    let missing = format!("/api/keys/{}/restore", uuid::Uuid::new_v4());
    let a = fx.req("POST", &missing).token(&fx.admin).send().await;
    a.refused(StatusCode::NOT_FOUND, "no key");
}

/// POST /api/keys/{id}/versions/{n}/restore
async fn restore_version(fx: Fx) {
    // One version kept: a new version drops the old one into the window.
    let fx = fx.another(Setup {
        keep_versions: 1,
        ..Default::default()
    });
    let id = fx.add_key("openai", "prod", "sk-1").await;
    let put = fx.req("PUT", &format!("/api/keys/{id}")).token(&fx.admin);
    put.json(r#"{"api_key":"sk-2"}"#).send().await.ok();
    let path = format!("/api/keys/{id}/versions/1/restore");
    let writer = fx.token(Role::Writer, &[]).await;
    refuses_callers(&fx, "POST", &path, "admin", &writer).await;
    let bad = format!("/api/keys/{id}/versions/first/restore");
    let a = fx.req("POST", &bad).token(&fx.admin).send().await;
    a.refused(StatusCode::UNPROCESSABLE_ENTITY, "version number");
    let absent = format!("/api/keys/{id}/versions/7/restore");
    let a = fx.req("POST", &absent).token(&fx.admin).send().await;
    a.refused(StatusCode::NOT_FOUND, "not in the recovery window");
    let missing = format!("/api/keys/{}/versions/1/restore", uuid::Uuid::new_v4());
    let a = fx.req("POST", &missing).token(&fx.admin).send().await;
    a.refused(StatusCode::NOT_FOUND, "no key");
    let versions = fx.req("POST", &path).token(&fx.admin).send().await.ok();
    let one = versions
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == 1)
        .unwrap_or_else(|| panic!("version 1 is back: {versions}"));
    assert_ne!(one["state"], "recoverable", "{versions}");
    let old = fx
        .get(&format!("/api/keys/{id}?version=1"), &fx.admin)
        .await;
    assert_eq!(old.ok()["api_key"], "sk-1");
}
