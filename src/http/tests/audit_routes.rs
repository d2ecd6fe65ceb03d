//! The audit routes of `http/audit_routes.rs`: the export (whole, or a
//! page), the counts per hour or day, and the chain's verification.

use http::StatusCode;
use serde_json::Value;

use super::{refuses_callers, refuses_queries, Fx};
use crate::access::Role;
use crate::audit::Action;

route_tests!(export, stats, verify);

/// An audit reader limited to some providers (an admin: auditor tokens
/// cannot be limited) reads none of the log.
const LIMITED: &str = "limited to some providers";

/// The refusals of an audit route: no token, an unknown one, one without
/// `audit:read`, and one limited to some providers.
async fn refuses_readers(fx: &Fx, path: &str) {
    let writer = fx.token(Role::Writer, &[]).await;
    refuses_callers(fx, "GET", path, "audit:read", &writer).await;
    let limited = fx.token(Role::Admin, &["openai"]).await;
    let a = fx.get(path, &limited).await;
    a.refused(StatusCode::FORBIDDEN, LIMITED);
}

/// The JSON Lines of an export.
fn lines(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// GET /api/audit
async fn export(fx: Fx) {
    let id = fx.add_key("openai", "prod", "sk-1").await;
    let auditor = fx.token(Role::Auditor, &[]).await;
    let a = fx.get("/api/audit", &auditor).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(!a.header("x-keyhold-audit-head").is_empty());
    let records = lines(&a.body);
    let created = Action::KeyCreate.as_str();
    assert!(
        records
            .iter()
            .any(|r| r["action"] == created && r["key_id"] == id.as_str()),
        "{}",
        a.text()
    );
    assert!(!a.text().contains("sk-1"), "no key in the log");
    // One page, newest first: the export's own record heads it.
    let a = fx
        .get("/api/audit?limit=1&order=desc&format=jsonl", &auditor)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let page = lines(&a.body);
    assert_eq!(page.len(), 1);
    assert_eq!(page[0]["action"], Action::AuditExport.as_str());
    assert_eq!(a.header("x-keyhold-more"), "true");
    let a = fx.get("/api/audit?format=csv", &auditor).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.header("content-type").starts_with("text/csv"));
    refuses_readers(&fx, "/api/audit").await;
    let bad = [
        ("limit=0", "`limit`"),
        ("format=xml", "`format`"),
        ("order=up", "`order`"),
        ("before_seq=x", "`before_seq`"),
        ("since=yesterday", "`since`"),
        ("key_id=7", "`key_id`"),
        ("outcome=maybe", "`outcome`"),
        ("bucket=hour", "`bucket` is not known"),
    ];
    refuses_queries(&fx, "/api/audit", &auditor, &bad).await;
    let a = fx.req("GET", "/api/audit?limit=5&order=desc");
    let a = a
        .token(&auditor)
        .header("x-keyhold-console-session", "short");
    a.send().await.refused(
        StatusCode::UNPROCESSABLE_ENTITY,
        "X-Keyhold-Console-Session",
    );
}

/// GET /api/audit/stats
async fn stats(fx: Fx) {
    fx.add_key("openai", "prod", "sk-1").await;
    let auditor = fx.token(Role::Auditor, &[]).await;
    let path = "/api/audit/stats?bucket=day";
    let out = fx.get(path, &auditor).await.ok();
    assert_eq!(out["bucket"], "day");
    assert!(
        out["since"].is_string() && out["until"].is_string(),
        "{out}"
    );
    let counted: u64 = out["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["counts"].as_object().unwrap().values())
        .map(|n| n.as_u64().unwrap_or(0))
        .sum();
    assert!(counted >= 1, "the key's creation is counted: {out}");
    refuses_readers(&fx, path).await;
    let bad = [
        ("bucket=week", "`bucket` must be `hour` or `day`"),
        ("since=2000-01-01T00:00:00Z", "narrow it"),
        ("until=soon", "`until`"),
        ("limit=5", "`limit` is not known"),
    ];
    refuses_queries(&fx, "/api/audit/stats", &auditor, &bad).await;
}

/// GET /api/audit/verify
async fn verify(fx: Fx) {
    fx.add_key("openai", "prod", "sk-1").await;
    let auditor = fx.token(Role::Auditor, &[]).await;
    let path = "/api/audit/verify";
    let report = fx.get(path, &auditor).await.ok();
    assert_eq!(report["status"], "ok", "{report}");
    assert!(report["records"].as_u64().unwrap() >= 2, "{report}");
    assert!(report["public_key"].is_string(), "{report}");
    refuses_readers(&fx, path).await;
    let a = fx.get("/api/audit/verify?full=1", &auditor).await;
    a.refused(StatusCode::UNPROCESSABLE_ENTITY, "takes no query");
}
