//! The admin routes of `http/admin.rs`: tokens (list, mint, one, revoke,
//! rotate) and the whole-store operations (rotate, reload, backup).

use http::StatusCode;

use super::{each, refuses_callers, Fx};
use crate::access::Role;

route_tests!(
    list_tokens,
    create_token,
    get_token,
    revoke_token,
    rotate_token,
    rotate_keys,
    reload_keyring,
    backup,
);

/// A limited admin doing what covers every provider.
const WHOLE_STORE: &str = "limited to some providers";

/// POST /api/tokens as the admin; the answer's JSON.
async fn mint(fx: &Fx, body: serde_json::Value) -> serde_json::Value {
    let a = fx.req("POST", "/api/tokens").token(&fx.admin);
    a.json(&body.to_string()).send().await.ok()
}

/// GET /api/tokens
async fn list_tokens(fx: Fx) {
    mint(&fx, serde_json::json!({"name": "ci", "role": "reader"})).await;
    let limited = mint(
        &fx,
        serde_json::json!({"name": "team", "role": "admin", "providers": ["claude"]}),
    )
    .await;
    let all = fx.get("/api/tokens", &fx.admin).await.ok();
    let names = each(&all, "name");
    for name in ["admin", "ci", "team"] {
        assert!(names.contains(&name), "{name} in {all}");
    }
    assert!(
        !all.to_string().contains("kh_"),
        "no secret is listed: {all}"
    );
    // A limited admin sees the tokens that reach no further than itself.
    let limited = limited["token"].as_str().unwrap();
    let some = fx.get("/api/tokens", limited).await.ok();
    let names = each(&some, "name");
    assert_eq!(names, ["team"], "{some}");
    let writer = fx.token(Role::Writer, &[]).await;
    refuses_callers(&fx, "GET", "/api/tokens", "admin", &writer).await;
}

/// POST /api/tokens
async fn create_token(fx: Fx) {
    let minted = mint(
        &fx,
        serde_json::json!({"name": "ci", "role": "reader", "providers": ["openai"]}),
    )
    .await;
    let token = minted["token"].as_str().unwrap();
    assert!(token.starts_with("kh_"), "{minted}");
    assert_eq!(minted["name"], "ci");
    assert_eq!(minted["role"], "reader");
    assert_eq!(minted["providers"], serde_json::json!(["openai"]));
    assert!(minted["scopes"]
        .as_array()
        .unwrap()
        .contains(&"keys:reveal".into()));
    // The new token works.
    let me = fx.get("/api/whoami", token).await.ok();
    assert_eq!(me["name"], "ci");
    let writer = fx.token(Role::Writer, &[]).await;
    refuses_callers(&fx, "POST", "/api/tokens", "admin", &writer).await;
    let send =
        |token: &str, body: &str| fx.req("POST", "/api/tokens").token(token).json(body).send();
    for (body, status, says) in [
        (
            r#"{"name":"x","role":"boss"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "field `role`",
        ),
        (
            r#"{"role":"reader"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "`name` is required",
        ),
        (
            r#"{"name":"x","role":"reader","providers":"openai"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "`providers` must be a list of strings",
        ),
        (
            r#"{"name":"ci","role":"reader"}"#,
            StatusCode::CONFLICT,
            "ci",
        ),
        ("{", StatusCode::BAD_REQUEST, "not valid JSON"),
    ] {
        send(&fx.admin, body).await.refused(status, says);
    }
    // A limited admin mints tokens within its providers only.
    let limited = fx.token(Role::Admin, &["claude"]).await;
    let a = send(&limited, r#"{"name":"wide","role":"reader"}"#).await;
    a.refused(StatusCode::FORBIDDEN, "set `providers`");
    let a = send(
        &limited,
        r#"{"name":"n","role":"reader","providers":["claude"]}"#,
    )
    .await;
    a.ok();
}

/// GET /api/tokens/{id}
async fn get_token(fx: Fx) {
    let minted = mint(&fx, serde_json::json!({"name": "ci", "role": "reader"})).await;
    let id = minted["id"].as_str().unwrap();
    for which in [id, "ci"] {
        let one = fx
            .get(&format!("/api/tokens/{which}"), &fx.admin)
            .await
            .ok();
        assert_eq!(one["id"], id);
        assert_eq!(one["name"], "ci");
        assert!(one.get("token").is_none(), "shown once only: {one}");
    }
    let writer = fx.token(Role::Writer, &[]).await;
    let path = format!("/api/tokens/{id}");
    refuses_callers(&fx, "GET", &path, "admin", &writer).await;
    let a = fx.get("/api/tokens/nobody", &fx.admin).await;
    a.refused(StatusCode::NOT_FOUND, "nobody");
    // Beyond a limited admin: as if missing.
    let limited = fx.token(Role::Admin, &["claude"]).await;
    let beyond = fx.get(&path, &limited).await;
    beyond.refused(StatusCode::NOT_FOUND, id);
}

/// DELETE /api/tokens/{id}
async fn revoke_token(fx: Fx) {
    let minted = mint(&fx, serde_json::json!({"name": "ci", "role": "reader"})).await;
    let (id, token) = (
        minted["id"].as_str().unwrap(),
        minted["token"].as_str().unwrap(),
    );
    let path = format!("/api/tokens/{id}");
    let writer = fx.token(Role::Writer, &[]).await;
    refuses_callers(&fx, "DELETE", &path, "admin", &writer).await;
    let limited = fx.token(Role::Admin, &["claude"]).await;
    let a = fx.req("DELETE", &path).token(&limited).send().await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text());
    let done = fx.req("DELETE", &path).token(&fx.admin).send().await.ok();
    assert_eq!(done["id"], id);
    assert_eq!(done["status"], "revoked");
    let a = fx.get("/api/whoami", token).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.text());
    let a = fx.req("DELETE", "/api/tokens/nobody").token(&fx.admin);
    a.send().await.refused(StatusCode::NOT_FOUND, "nobody");
}

/// POST /api/tokens/{id}/rotate
async fn rotate_token(fx: Fx) {
    let minted = mint(&fx, serde_json::json!({"name": "ci", "role": "reader"})).await;
    let (id, old) = (
        minted["id"].as_str().unwrap(),
        minted["token"].as_str().unwrap(),
    );
    let path = format!("/api/tokens/{id}/rotate");
    let writer = fx.token(Role::Writer, &[]).await;
    refuses_callers(&fx, "POST", &path, "admin", &writer).await;
    let a = fx.req("POST", &path).token(&fx.admin);
    let a = a.json(r#"{"overlap_seconds":"1h"}"#).send().await;
    a.refused(StatusCode::UNPROCESSABLE_ENTITY, "`overlap_seconds`");
    let a = fx.req("POST", "/api/tokens/nobody/rotate").token(&fx.admin);
    a.send().await.refused(StatusCode::NOT_FOUND, "nobody");
    // An overlap of ten minutes.
    let a = fx.req("POST", &path).token(&fx.admin);
    let rotated = a.json(r#"{"overlap_seconds":600}"#).send().await.ok();
    let new = rotated["token"].as_str().unwrap();
    assert!(new.starts_with("kh_") && new != old, "{rotated}");
    assert_eq!(rotated["replaced"]["id"], id);
    assert_eq!(rotated["name"], "ci");
    // Within the overlap both work.
    fx.get("/api/whoami", new).await.ok();
    fx.get("/api/whoami", old).await.ok();
    // No body: the default overlap; the new token is rotated in turn.
    let path = format!("/api/tokens/{}/rotate", rotated["id"].as_str().unwrap());
    let again = fx.req("POST", &path).token(&fx.admin).send().await.ok();
    assert!(
        again["token"].as_str().unwrap().starts_with("kh_"),
        "{again}"
    );
    assert_eq!(again["replaced"]["id"], rotated["id"]);
}

/// POST /api/admin/rotate
async fn rotate_keys(fx: Fx) {
    fx.add_key("openai", "prod", "sk-1").await;
    let path = "/api/admin/rotate";
    let report = fx.req("POST", path).token(&fx.admin).send().await.ok();
    assert!(report["rotated"].is_u64(), "{report}");
    assert!(report["failed"].as_array().unwrap().is_empty(), "{report}");
    let writer = fx.token(Role::Writer, &[]).await;
    refuses_callers(&fx, "POST", path, "admin", &writer).await;
    let limited = fx.token(Role::Admin, &["openai"]).await;
    let a = fx.req("POST", path).token(&limited).send().await;
    a.refused(StatusCode::FORBIDDEN, WHOLE_STORE);
    // The keys still open.
    let key = fx.get("/api/providers/openai/key", &fx.admin).await.ok();
    assert_eq!(key["api_key"], "sk-1");
}

/// POST /api/admin/reload (its success: see `SUCCESS_ELSEWHERE`)
async fn reload_keyring(fx: Fx) {
    let path = "/api/admin/reload";
    let writer = fx.token(Role::Writer, &[]).await;
    refuses_callers(&fx, "POST", path, "admin", &writer).await;
    let limited = fx.token(Role::Admin, &["openai"]).await;
    let a = fx.req("POST", path).token(&limited).send().await;
    a.refused(StatusCode::FORBIDDEN, WHOLE_STORE);
    let a = fx.req("POST", path).token(&fx.admin).send().await;
    a.refused(StatusCode::CONFLICT, "nothing to reload");
}

/// GET /api/admin/backup
async fn backup(fx: Fx) {
    fx.add_key("openai", "prod", "sk-secret-in-backup").await;
    let path = "/api/admin/backup";
    let a = fx.get(path, &fx.admin).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.header("content-type"), "application/octet-stream");
    assert!(!a.header("x-request-id").is_empty());
    assert!(a.body.len() > 64, "a snapshot: {} bytes", a.body.len());
    let plain = a.body.windows(19).any(|w| w == b"sk-secret-in-backup");
    assert!(!plain, "keys stay encrypted in a backup");
    let writer = fx.token(Role::Writer, &[]).await;
    refuses_callers(&fx, "GET", path, "admin", &writer).await;
    let limited = fx.token(Role::Admin, &["openai"]).await;
    fx.get(path, &limited)
        .await
        .refused(StatusCode::FORBIDDEN, WHOLE_STORE);
}
