//! Handlers of the audit routes: streamed export and chain verification
//! (scope `audit:read`).

use http::header::{HeaderValue, CONTENT_TYPE};
use http::StatusCode;
use warp::reply::Response;

use super::context::Ctx;
use super::error::ApiError;
use super::keys::form_pairs;
use super::stream::stream_blocking;
use super::{require, State};
use crate::access::Scope;
use crate::audit::{self, Action, ExportFilter, ExportFormat, Exporter, Outcome};

/// Parses the export query (`since`, `until`, `key_id`, `caller`,
/// `outcome`, `action`, `format`).
pub(super) fn parse_export_query(query: &str) -> Result<(ExportFilter, ExportFormat), ApiError> {
    let mut f = ExportFilter::default();
    let mut format = ExportFormat::default();
    for (k, v) in form_pairs(query)? {
        if v.is_empty() {
            continue;
        }
        if k == "format" {
            format = ExportFormat::parse(&v).ok_or_else(|| {
                ApiError::invalid("query parameter `format` must be `jsonl` or `csv`")
            })?;
            continue;
        }
        f.set(&k, &v)
            .map_err(|e| ApiError::invalid(format!("query parameter {e}")))?;
    }
    Ok((f, format))
}

/// The audit log is one chain over every provider: a provider-limited
/// token reads none of it (a filtered view could not be verified, and
/// records without a provider would leak or vanish).
fn limited_audit_reader() -> ApiError {
    ApiError::forbidden(
        "this token is limited to some providers, and the audit log covers every provider: \
         read it with an auditor token without a provider limit",
    )
}

/// GET /api/audit
pub(super) async fn export(state: State, ctx: Ctx, query: String) -> Response {
    let res = async {
        let caller = state.authenticate(&ctx).await?;
        if let Err(e) = require(&caller, Scope::AuditRead) {
            let ev = state.event(&ctx, Action::AuditExport, Some(&caller), Outcome::Forbidden);
            state.record(ev, vec![]).await?;
            return Err(e);
        }
        if caller.is_limited() {
            let mut ev = state.event(&ctx, Action::AuditExport, Some(&caller), Outcome::Forbidden);
            ev.detail = Some("provider-limited token".into());
            state.record(ev, vec![]).await?;
            return Err(limited_audit_reader());
        }
        let (filter, format) = parse_export_query(&query)?;
        let mut ev = state.event(&ctx, Action::AuditExport, Some(&caller), Outcome::Success);
        ev.detail = Some(format!("format={} {}", format.as_str(), filter.describe()));
        state.record(ev, vec![]).await?;
        // The head once the export's own record is in: an unfiltered export
        // holds this record, which `audit verify --file --anchor` checks.
        let (head_seq, head_mac) = state.audit.log().head();

        let store = state.store.clone();
        let mut resp = stream_blocking(move |out| {
            Exporter::new(&store, filter, format)
                .write_to(out, |_| {})
                .map(|_| ())
        });
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("{head_seq}:{}", audit::hex(&head_mac))) {
            resp.headers_mut().insert("x-keyhold-audit-head", v);
        }
        Ok::<_, ApiError>(ctx.finish(resp))
    }
    .await;
    res.unwrap_or_else(|e| ctx.error(&e))
}

/// GET /api/audit/verify
pub(super) async fn verify(state: State, ctx: Ctx) -> Response {
    let res = async {
        let caller = state.authenticate(&ctx).await?;
        require(&caller, Scope::AuditRead)?;
        if caller.is_limited() {
            return Err(limited_audit_reader());
        }
        let store = state.store.clone();
        let keys = state.audit.log().verify_keys();
        let report = tokio::task::spawn_blocking(move || audit::verify_store(&store, &keys))
            .await
            .map_err(|_| ApiError::unavailable("verification was interrupted; retry"))?
            .map_err(|e| ApiError::storage(&e))?;
        Ok::<_, ApiError>(ctx.json(StatusCode::OK, &report))
    }
    .await;
    res.unwrap_or_else(|e| ctx.error(&e))
}
