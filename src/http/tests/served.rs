//! The routes answered without a handler module of their own, or with a
//! small one: whoami (`http/whoami.rs`), health, metrics and the OpenAPI
//! document (`http/routes.rs`), and the console (`http/ui.rs`).

use http::StatusCode;

use super::{refuses_callers, Fx, Setup};
use crate::access::Role;

route_tests!(whoami, healthz, metrics, openapi, console);

/// GET /api/whoami
async fn whoami(fx: Fx) {
    let limited = fx.token(Role::Reader, &["openai"]).await;
    let me = fx.get("/api/whoami", &limited).await.ok();
    assert!(me["name"].as_str().unwrap().starts_with("t-"), "{me}");
    assert!(uuid::Uuid::parse_str(me["id"].as_str().unwrap()).is_ok());
    assert_eq!(
        me["scopes"],
        serde_json::json!(["keys:list", "keys:reveal"])
    );
    assert_eq!(me["providers"], serde_json::json!(["openai"]));
    let admin = fx.get("/api/whoami", &fx.admin).await.ok();
    assert_eq!(admin["name"], "admin");
    assert!(admin["providers"].is_null());
    assert!(!admin.to_string().contains("kh_"), "no secret: {admin}");
    // Any valid token may ask: no scope to lack.
    let a = fx.req("GET", "/api/whoami").send().await;
    a.refused(StatusCode::UNAUTHORIZED, "Authorization");
    let a = fx.get("/api/whoami", "kh_unknown").await;
    a.refused(StatusCode::UNAUTHORIZED, "token");
    let a = fx
        .req("GET", "/api/whoami")
        .header("authorization", "Basic eDp5");
    a.send()
        .await
        .refused(StatusCode::UNAUTHORIZED, "unsupported Authorization scheme");
}

/// GET /healthz
async fn healthz(fx: Fx) {
    let a = fx.req("GET", "/healthz").send().await;
    let health = a.ok();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["audit_writer"], "ok");
    assert!(health["build"]["version"].is_string(), "{health}");
    let a = fx.req("GET", "/healthz?deep=1").send().await;
    a.refused(StatusCode::UNPROCESSABLE_ENTITY, "takes no query");
    let a = fx.req("POST", "/healthz").send().await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{}", a.text());
}

/// GET /metrics
async fn metrics(fx: Fx) {
    let scraper = fx.token(Role::Metrics, &[]).await;
    let a = fx.get("/metrics", &scraper).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(a.header("content-type").starts_with("text/plain"));
    assert!(!a.header("x-request-id").is_empty());
    fx.get("/metrics", &fx.admin).await.ok();
    let reader = fx.token(Role::Reader, &[]).await;
    refuses_callers(&fx, "GET", "/metrics", "metrics:read", &reader).await;
    // Metrics cover every provider: a limited admin reads none.
    let limited = fx.token(Role::Admin, &["openai"]).await;
    let a = fx.get("/metrics", &limited).await;
    a.refused(StatusCode::FORBIDDEN, "limited to some providers");
    // A process that could install no recorder answers 404, as an error.
    let without = fx.another(Setup {
        metrics: false,
        ..Default::default()
    });
    let a = without.get("/metrics", &without.admin).await;
    a.refused(StatusCode::NOT_FOUND, "metrics are not enabled");
}

/// GET /openapi.json
async fn openapi(fx: Fx) {
    let a = fx.req("GET", "/openapi.json").send().await;
    let doc = a.ok();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert!(doc["paths"]["/api/keys"].is_object());
    assert_eq!(a.header("content-type"), "application/json");
    let a = fx.req("GET", "/openapi.json?v=2").send().await;
    a.refused(StatusCode::UNPROCESSABLE_ENTITY, "takes no query");
}

/// GET /ui/ and GET /ui/assets/{name}
async fn console(fx: Fx) {
    let a = fx.req("GET", "/ui/").send().await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.header("content-type").starts_with("text/html"));
    assert!(a
        .header("content-security-policy")
        .contains("default-src 'none'"));
    let page = a.text();
    let a = fx.req("GET", "/ui").send().await;
    assert_eq!(a.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(a.header("location"), "ui/");
    for name in crate::http::ui::asset_names() {
        assert!(page.contains(&name), "the page names {name}");
        let a = fx.req("GET", &format!("/ui/assets/{name}")).send().await;
        assert_eq!(a.status, StatusCode::OK, "{name}");
        assert!(a.header("cache-control").contains("immutable"));
        assert!(!a.body.is_empty());
    }
    let a = fx.req("GET", "/ui/assets/app.js").send().await;
    a.refused(StatusCode::NOT_FOUND, "no such page or asset");
    assert!(a.header("content-security-policy").contains("default-src"));
    let a = fx.req("POST", "/ui/").send().await;
    a.refused(StatusCode::METHOD_NOT_ALLOWED, "read-only");
    let a = fx.req("GET", "/ui/?token=kh_x").send().await;
    a.refused(StatusCode::UNPROCESSABLE_ENTITY, "takes no query");
}
