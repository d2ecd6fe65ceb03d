//! Refusals shared by every route: each refusal of the vault answers its
//! status, once, through `From<Refusal> for ApiError`; unknown routes,
//! methods and query parameters are answered before any handler.

use http::StatusCode;

use super::Fx;
use crate::access::Role;
use crate::http::error::ApiError;
use crate::vault::Refusal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_answers_its_status() {
    let fx = Fx::new();
    let writer = fx.token(Role::Writer, &[]).await;
    let admin = fx.admin.as_str();
    let key = format!("/api/keys/{}", uuid::Uuid::new_v4());
    let bad_key = r#"{"provider":"Bad","key_name":"k","api_key":"x"}"#;
    let taken = r#"{"name":"admin","role":"reader"}"#;
    // method, path, token, body, the status it must answer
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        StatusCode,
    );
    let cases: [Case; 10] = [
        ("GET", &key, None, None, StatusCode::UNAUTHORIZED),
        (
            "GET",
            &key,
            Some("kh_unknown"),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        ("GET", &key, Some(&writer), None, StatusCode::FORBIDDEN),
        ("GET", &key, Some(admin), None, StatusCode::NOT_FOUND),
        ("DELETE", &key, Some(admin), None, StatusCode::NOT_FOUND),
        (
            "POST",
            "/api/keys",
            Some(admin),
            Some(bad_key),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/api/tokens",
            Some(admin),
            Some(taken),
            StatusCode::CONFLICT,
        ),
        (
            "GET",
            "/api/tokens/nobody",
            Some(admin),
            None,
            StatusCode::NOT_FOUND,
        ),
        ("GET", "/no/such/route", None, None, StatusCode::NOT_FOUND),
        (
            "PATCH",
            "/api/keys",
            Some(admin),
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    for (method, path, token, body, want) in cases {
        let mut req = fx.req(method, path);
        if let Some(t) = token {
            req = req.token(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        // `send` checks the detail and the request id of each.
        let got = req.send().await;
        assert_eq!(got.status, want, "{method} {path}: {}", got.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_query_parameter_is_refused_before_the_token() {
    let fx = Fx::new();
    for (method, path) in [
        ("GET", "/api/keys?expird=true"),
        ("GET", "/api/whoami?x=1"),
        ("POST", "/api/admin/rotate?dry=1"),
        ("GET", "/healthz?verbose=1"),
    ] {
        let a = fx.req(method, path).send().await;
        a.refused(StatusCode::UNPROCESSABLE_ENTITY, "query parameter");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reveal_over_budget_answers_429_with_retry_after() {
    let fx = Fx::with(super::Setup {
        rate: "1/min",
        ..Default::default()
    });
    let path = format!("/api/keys/{}", uuid::Uuid::new_v4());
    let a = fx.get(&path, &fx.admin).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = fx.get(&path, &fx.admin).await;
    a.refused(StatusCode::TOO_MANY_REQUESTS, "");
    assert!(a.headers.contains_key("retry-after"));
}

#[test]
fn the_refusal_to_status_mapping_is_total() {
    use crate::vault::{
        Conflict, Denied, EveryProvider, Invalid, Missing, Removed, Tampered, Unauthenticated,
        Unfinished,
    };
    let cases = [
        (Refusal::RateLimited(3), StatusCode::TOO_MANY_REQUESTS),
        (Refusal::TooManyRefusals(3), StatusCode::TOO_MANY_REQUESTS),
        (Refusal::TooManyRecords(3), StatusCode::TOO_MANY_REQUESTS),
        (
            Refusal::Unauthenticated(Unauthenticated::UnknownToken),
            StatusCode::UNAUTHORIZED,
        ),
        (Refusal::TamperedToken, StatusCode::UNAUTHORIZED),
        (
            Refusal::TokenExpired {
                at_us: 0,
                rotated: true,
            },
            StatusCode::UNAUTHORIZED,
        ),
        (
            Refusal::Forbidden(Denied::EveryProvider(EveryProvider::Backup)),
            StatusCode::FORBIDDEN,
        ),
        (Refusal::NotFound(Missing::Key), StatusCode::NOT_FOUND),
        (Refusal::Beyond(Missing::Key), StatusCode::NOT_FOUND),
        (Refusal::Deleted(Removed::Key), StatusCode::NOT_FOUND),
        (Refusal::Expired, StatusCode::GONE),
        (Refusal::DecryptFailed, StatusCode::CONFLICT),
        (Refusal::TamperedRecord(Tampered::Key), StatusCode::CONFLICT),
        (
            Refusal::Invalid(Invalid::Provider),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Refusal::Conflict(Conflict::MaintenanceRunning),
            StatusCode::CONFLICT,
        ),
        (Refusal::AuditUnavailable, StatusCode::SERVICE_UNAVAILABLE),
        (
            Refusal::Unavailable(Unfinished::BackupInterrupted),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (Refusal::Storage, StatusCode::SERVICE_UNAVAILABLE),
    ];
    for (refusal, want) in cases {
        let e = ApiError::from(refusal.clone());
        assert_eq!(e.status, want, "{refusal:?}");
        assert_eq!(e.tampered, refusal.is_tampered(), "{refusal:?}");
        assert!(!e.detail.is_empty());
        // Retry-After goes with every 429 and 503, and only with them.
        let retry =
            want == StatusCode::TOO_MANY_REQUESTS || want == StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(e.retry_after.is_some(), retry, "{refusal:?}");
    }
    // Beyond and NotFound answer alike (a provider-limited caller cannot
    // tell another provider's key, or token, from a missing one).
    for missing in [
        Missing::Key,
        Missing::Token {
            id_or_name: "bot".into(),
        },
        Missing::ProviderKey {
            provider: "claude".into(),
            name: Some("main".into()),
            limited: true,
        },
    ] {
        assert_eq!(
            ApiError::from(Refusal::Beyond(missing.clone())),
            ApiError::from(Refusal::NotFound(missing))
        );
    }
}

/// A listing refused because a stored token record failed its integrity
/// check is recorded `tampered` by the vault, before the answer: the edge
/// never takes a refusal for recorded unless the vault says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_listing_refused_as_tampered_is_recorded() {
    let fx = Fx::new();
    let reader = fx.token(Role::Reader, &[]).await;
    // The admin's authentic record copied under the reader's storage key.
    let store = fx.state.core.store_for_tests();
    let at = store
        .token_key(&crate::access::hash_token(&reader))
        .unwrap();
    let admin_at = store
        .token_key(&crate::access::hash_token(&fx.admin))
        .unwrap();
    let admin_value = store
        .entries("tokens")
        .map(|e| e.unwrap())
        .find(|(k, _)| **k == admin_at)
        .unwrap()
        .1;
    store.put_entry("tokens", &at, &admin_value).unwrap();
    let a = fx.get("/api/tokens", &fx.admin).await;
    a.refused(StatusCode::CONFLICT, "integrity check");
    let a = fx
        .get("/api/audit?format=jsonl&order=desc&limit=5", &fx.admin)
        .await;
    let text = a.text();
    let tampered: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["outcome"] == "tampered")
        .collect();
    assert_eq!(tampered.len(), 1, "{text}");
    assert_eq!(tampered[0]["action"], "token_list", "{text}");
    assert_eq!(tampered[0]["caller"], "admin", "{text}");
}

/// Caller text an edge refusal's record keeps: no control or format
/// character (a bidi override would reorder what an auditor reads), no
/// token-like word.
#[test]
fn a_refusals_record_keeps_no_format_character_nor_token() {
    use crate::http::record_text;
    let said = "query parameter `\u{202E}x\u{200B}\u{7}` is unknown";
    assert_eq!(record_text(said), "query parameter `x` is unknown");
    let token = format!("kh_{}", "A-b_9".repeat(9));
    let said = format!("field `role`: `{token}` is no role; nor \u{2066}kh_x\u{2069}");
    let kept = record_text(&said);
    assert_eq!(kept, "field `role`: `kh_…` is no role; nor kh_…");
    assert!(record_text(&"é".repeat(300)).chars().count() == 200);
}
