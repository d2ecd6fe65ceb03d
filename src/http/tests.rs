//! The route handlers without a socket (`warp::test`): each refusal of
//! the vault answers its status, once, through `From<Refusal> for ApiError`.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::{routes, AppState, State};
use crate::access::Role;
use crate::limiter::TrustedProxies;
use crate::vault::{Core, CorePolicy, Opened, Origin, Refusal, TokenRequest};

/// A server state on a temporary store, and its admin token.
fn state(rate: &str) -> (State, String) {
    let (opened, admin) = Opened::development("admin", rate.parse().unwrap()).unwrap();
    let admin = admin.expose().to_string();
    let budget = (
        std::num::NonZeroU32::new(1000).unwrap(),
        Duration::from_secs(60),
    );
    let policy = CorePolicy {
        audit_timeout: Duration::from_secs(5),
        refusal_budget: budget,
        record_budget: budget,
        key_policy: crate::vault::KeyPolicy::default(),
    };
    let state = Arc::new(AppState {
        core: Arc::new(Core::start(opened, policy, None)),
        proxies: TrustedProxies::default(),
        metrics: None,
        gauges: super::observe::Gauges::new(),
        read_timeout: Duration::from_secs(5),
        body_reads: tokio::sync::Semaphore::new(4),
    });
    (state, admin)
}

/// A token of `role` minted by the operator on `state`'s store.
async fn token(state: &State, role: Role) -> String {
    let req = TokenRequest {
        name: format!("t-{}", uuid::Uuid::new_v4().simple()),
        role,
        providers: None,
        ttl_seconds: None,
    };
    let minted = state
        .core
        .vault()
        .create_token(&Origin::cli(), None, req)
        .await
        .unwrap();
    minted.secret.expose().to_string()
}

async fn status(
    state: &State,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, String) {
    let mut req = warp::test::request().method(method).path(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.reply(&routes(state.clone())).await;
    let detail = serde_json::from_slice::<serde_json::Value>(resp.body())
        .ok()
        .and_then(|v| v["detail"].as_str().map(String::from))
        .unwrap_or_default();
    (resp.status(), detail)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_answers_its_status() {
    let (s, admin) = state("100/min");
    let writer = token(&s, Role::Writer).await;
    let id = uuid::Uuid::new_v4();
    // method, path, token, body, the status it must answer
    type Case<'a> = (
        &'a str,
        String,
        Option<&'a str>,
        Option<&'a str>,
        StatusCode,
    );
    let cases: Vec<Case> = vec![
        (
            "GET",
            format!("/api/keys/{id}"),
            None,
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "GET",
            format!("/api/keys/{id}"),
            Some("kh_unknown"),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "GET",
            format!("/api/keys/{id}"),
            Some(&writer),
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "GET",
            format!("/api/keys/{id}"),
            Some(&admin),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "DELETE",
            format!("/api/keys/{id}"),
            Some(&admin),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            "/api/keys".into(),
            Some(&admin),
            Some(r#"{"provider":"Bad","key_name":"k","api_key":"x"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/api/tokens".into(),
            Some(&admin),
            Some(r#"{"name":"admin","role":"reader"}"#),
            StatusCode::CONFLICT,
        ),
        (
            "GET",
            "/api/tokens/nobody".into(),
            Some(&admin),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "GET",
            "/no/such/route".into(),
            None,
            None,
            StatusCode::NOT_FOUND,
        ),
    ];
    for (method, path, token, body, want) in cases {
        let (got, detail) = status(&s, method, &path, token, body).await;
        assert_eq!(got, want, "{method} {path}: {detail}");
        assert!(
            !detail.is_empty(),
            "{method} {path}: every error says what to do"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reveal_over_budget_answers_429_with_retry_after() {
    let (s, admin) = state("1/min");
    let path = format!("/api/keys/{}", uuid::Uuid::new_v4());
    assert_eq!(
        status(&s, "GET", &path, Some(&admin), None).await.0,
        StatusCode::NOT_FOUND
    );
    let resp = warp::test::request()
        .path(&path)
        .header("authorization", format!("Bearer {admin}"))
        .reply(&routes(s.clone()))
        .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
}

#[test]
fn the_refusal_to_status_mapping_is_total() {
    use super::error::ApiError;
    let cases = [
        (Refusal::RateLimited(3), StatusCode::TOO_MANY_REQUESTS),
        (
            Refusal::Unauthenticated("x".into()),
            StatusCode::UNAUTHORIZED,
        ),
        (Refusal::TamperedToken, StatusCode::UNAUTHORIZED),
        (Refusal::TokenExpired("x".into()), StatusCode::UNAUTHORIZED),
        (Refusal::Forbidden("x".into()), StatusCode::FORBIDDEN),
        (Refusal::NotFound("x".into()), StatusCode::NOT_FOUND),
        (Refusal::Beyond("x".into()), StatusCode::NOT_FOUND),
        (Refusal::Expired, StatusCode::GONE),
        (Refusal::DecryptFailed, StatusCode::CONFLICT),
        (Refusal::TamperedRecord("x".into()), StatusCode::CONFLICT),
        (
            Refusal::Invalid("x".into()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (Refusal::Conflict("x".into()), StatusCode::CONFLICT),
        (Refusal::AuditUnavailable, StatusCode::SERVICE_UNAVAILABLE),
        (Refusal::Storage, StatusCode::SERVICE_UNAVAILABLE),
    ];
    for (refusal, want) in cases {
        let tampered = matches!(refusal, Refusal::TamperedToken | Refusal::TamperedRecord(_));
        let e = ApiError::from(refusal.clone());
        assert_eq!(e.status, want, "{refusal:?}");
        assert_eq!(e.tampered, tampered, "{refusal:?}");
        assert!(!e.detail.is_empty());
    }
    // Beyond and NotFound answer alike (a provider-limited caller cannot
    // tell another provider's key from a missing one).
    assert_eq!(
        ApiError::from(Refusal::Beyond("same".into())).detail,
        ApiError::from(Refusal::NotFound("same".into())).detail
    );
}

/// The label as it was computed before it stopped allocating: every
/// pattern and the path split into vectors.
fn label_by_vectors(method: &http::Method, path: &str) -> &'static str {
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let segs: Vec<&str> = path.split('/').collect();
    let fits = |pattern: &str| {
        let p: Vec<&str> = pattern.trim_end_matches('/').split('/').collect();
        p.len() == segs.len()
            && p.iter()
                .zip(&segs)
                .all(|(a, b)| (a.starts_with('{') && !b.is_empty()) || a == b)
    };
    super::ROUTES
        .iter()
        .filter(|(_, p)| fits(p))
        .min_by_key(|(m, p)| (*m != method.as_str(), p.contains('{')))
        .map_or("unmatched", |(_, p)| p)
}

#[test]
fn route_labels_are_the_patterns_they_were() {
    use http::Method;
    let mut paths: Vec<String> = [
        "/",
        "",
        "//",
        "/api",
        "/api/",
        "/api/keys/",
        "/api/keys//",
        "/api/keys//versions",
        "/api/keys/x/versions/",
        "/api/keys/x/y/z",
        "/api/audit/verify",
        "/api/audit/verify/",
        "/api/audit/x",
        "/ui",
        "/ui/",
        "/ui/assets/app.js",
        "/ui/assets/",
        "/nope",
        "/api/providers/claude/keys/a%20b",
        "/api/providers//key",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (_, p) in super::ROUTES {
        paths.push(p.to_string());
        paths.push(p.replace("{id}", "0b6e").replace(['{', '}'], ""));
        paths.push(format!("{p}/"));
        paths.push(format!("{p}/extra"));
    }
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::from_bytes(b"BREW").unwrap(),
    ];
    for path in &paths {
        for m in &methods {
            assert_eq!(
                super::route_label(m, path),
                label_by_vectors(m, path),
                "{m} {path}"
            );
        }
    }
    assert_eq!(
        super::route_label(&Method::GET, "/api/keys/0b6e"),
        "/api/keys/{id}"
    );
    assert_eq!(
        super::route_label(&Method::GET, "/api/audit/verify"),
        "/api/audit/verify"
    );
    assert_eq!(super::route_label(&Method::GET, "/nope"), "unmatched");
}

#[tokio::test]
async fn routes_joined_as_a_tree_are_tried_first_to_last() {
    use warp::Filter;
    // Routes 0..n, each answering its number on /x/{n} and every even one
    // on /shared too: the first that accepts answers.
    for n in 1..=9usize {
        let table: Vec<super::routes::Route> = (0..n)
            .map(|i| {
                let own = warp::path!("x" / usize)
                    .and_then(move |k: usize| async move {
                        if k == i {
                            Ok(())
                        } else {
                            Err(warp::reject::not_found())
                        }
                    })
                    .untuple_one();
                let shared = warp::path!("shared").and_then(move || async move {
                    if i % 2 == 0 {
                        Ok(())
                    } else {
                        Err(warp::reject::not_found())
                    }
                });
                own.or(shared)
                    .map(move |_| warp::reply::Response::new(i.to_string().into()))
                    .boxed()
            })
            .collect();
        let all = super::routes::any_of(table).unwrap();
        for i in 0..n {
            let r = warp::test::request()
                .path(&format!("/x/{i}"))
                .reply(&all)
                .await;
            assert_eq!(r.body(), i.to_string().as_bytes(), "{n} routes, /x/{i}");
        }
        let r = warp::test::request().path("/shared").reply(&all).await;
        assert_eq!(r.body(), "0".as_bytes(), "{n} routes: the first wins");
        let r = warp::test::request().path("/none").reply(&all).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{n} routes");
    }
    assert!(super::routes::any_of(Vec::new()).is_none());
}
