//! Handlers of the audit routes: streamed export (whole, or one page by
//! a seq cursor), counts per hour or day, and chain verification (scope
//! `audit:read`).

use http::header::{HeaderValue, CONTENT_TYPE};
use http::StatusCode;
use warp::reply::Response;

use super::context::Ctx;
use super::error::ApiError;
use super::request::form_pairs;
use super::response::respond;
use super::stream::stream_blocking;
use super::{AppState, State};
use crate::access::{Caller, Scope};
use crate::vault::{self, Action, ExportFilter, ExportFormat, Outcome, Page, View};

/// Parses the export query: the filters (`since`, `until`, `key_id`,
/// `caller`, `outcome`, `action`), `format`, and the page (`limit`,
/// `before_seq`, `after_seq`, `order=asc|desc`). A name that is none of
/// these is refused rather than ignored.
pub(super) fn parse_export_query(
    query: &str,
) -> Result<(ExportFilter, ExportFormat, Page), ApiError> {
    let mut f = ExportFilter::default();
    let mut format = ExportFormat::default();
    let mut page = Page::default();
    let seq = |name: &str, v: &str| {
        v.parse::<u64>().map_err(|_| {
            ApiError::invalid(format!(
                "query parameter `{name}` must be a record's seq (a whole number)"
            ))
        })
    };
    for (k, v) in form_pairs(query)? {
        if v.is_empty() {
            continue;
        }
        match k.as_str() {
            "format" => {
                format = ExportFormat::parse(&v).ok_or_else(|| {
                    ApiError::invalid("query parameter `format` must be `jsonl` or `csv`")
                })?
            }
            "limit" => match v.parse::<u64>() {
                Ok(n) if (1..=Page::MAX_LIMIT).contains(&n) => page.limit = Some(n),
                _ => {
                    return Err(ApiError::invalid(format!(
                        "query parameter `limit` must be a whole number from 1 to {}",
                        Page::MAX_LIMIT
                    )))
                }
            },
            "before_seq" => page.before_seq = Some(seq("before_seq", &v)?),
            "after_seq" => page.after_seq = Some(seq("after_seq", &v)?),
            "order" => page.newest_first = match v.as_str() {
                "asc" => false,
                "desc" => true,
                _ => return Err(ApiError::invalid(
                    "query parameter `order` must be `asc` (oldest first) or `desc` (newest first)",
                )),
            },
            _ => {
                let known = f
                    .set(&k, &v)
                    .map_err(|e| ApiError::invalid(format!("query parameter {e}")))?;
                if !known {
                    return Err(unknown_parameter(&k));
                }
            }
        }
    }
    Ok((f, format, page))
}

fn unknown_parameter(name: &str) -> ApiError {
    let shown: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
    ApiError::invalid(format!(
        "query parameter `{shown}` is not known: use since, until, key_id, caller, outcome, \
         action, format, limit, before_seq, after_seq or order"
    ))
}

/// An auditor without a provider limit (refusals recorded under `action`).
/// The audit log is one chain over every provider: a provider-limited
/// token reads none of it (a filtered view could not be verified, and
/// records without a provider would leak or vanish).
async fn audit_reader(state: &State, ctx: &Ctx, action: Action) -> Result<Caller, ApiError> {
    let caller = state.authorize(ctx, Scope::AuditRead, action).await?;
    state
        .vault()
        .require_unlimited(
            &AppState::origin(ctx),
            &caller,
            action,
            crate::vault::EveryProvider::AuditLog,
        )
        .await?;
    Ok(caller)
}

/// The console's session header: the random id the console makes at each
/// sign-in, so that its pages of the log are recorded as one session (see
/// `audit::ConsoleViews`). It is no credential.
const CONSOLE_SESSION: &str = "x-keyhold-console-session";

/// The console session a request names, if any; a malformed one is
/// refused rather than ignored.
fn console_session(ctx: &Ctx) -> Result<Option<String>, ApiError> {
    let mut values = ctx.headers.get_all(CONSOLE_SESSION).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(id) if values.next().is_none() && vault::valid_session_id(id) => Ok(Some(id.into())),
        _ => Err(ApiError::invalid(
            "header `X-Keyhold-Console-Session` must appear once, as 16 to 64 letters, digits, \
             `-` or `_` (the console makes one at each sign-in); leave it out to have each \
             export recorded on its own",
        )),
    }
}

/// GET /api/audit
pub(super) async fn export(state: State, ctx: Ctx, query: String) -> Response {
    respond(&state, &ctx, async {
        // Refusals go through the vault: recorded, coalesced per token,
        // budgeted.
        let caller = audit_reader(&state, &ctx, Action::AuditExport).await?;
        let (filter, format, page) = parse_export_query(&query)?;
        let session = console_session(&ctx)?;
        let mut ev = state.event(&ctx, Action::AuditExport, Some(&caller), Outcome::Success);
        let described = filter.describe();
        let mut detail = format!("format={} {described}", format.as_str());
        let paging = page.describe();
        if !paging.is_empty() {
            detail = format!("{detail} {paging}");
        }
        ev.detail = Some(detail);
        // Only the console's own kind of page joins its session: JSON
        // Lines, newest first, small. Anything else is recorded alone.
        let session = session.filter(|_| {
            format == ExportFormat::Jsonl
                && page.newest_first
                && page.limit.is_some_and(|l| l <= vault::MAX_PAGE)
        });
        let vault = state.vault();
        // Every page takes from the token's record budget, counted or not.
        let ev = vault.spend_record_budget(ev)?;
        let view = match &session {
            Some(id) => state.core.console_view(caller.id, id),
            None => View::Alone,
        };
        match (view, &session) {
            (View::Counted, _) => {}
            (View::Open, Some(id)) => {
                let mut ev = ev;
                ev.detail = ev.detail.map(|d| {
                    format!(
                        "{d}; opens a console session: this record stands for its further \
                         pages too (until 10 minutes idle, an hour or 1000 pages)"
                    )
                });
                let written = vault.record_budgeted(ev, vec![]).await;
                state.core.console_opened(caller.id, id, written.is_ok());
                written?;
            }
            _ => {
                vault.record_budgeted(ev, vec![]).await?;
            }
        }
        // The head once the export's own record is in: an unfiltered export
        // holds this record, which `audit verify --file --anchor` checks.
        let (head_seq, head_mac) = state.core.audit_head();

        let mut resp = if page.limit.is_some() {
            // A page is small (at most Page::MAX_LIMIT records): it is
            // written whole first, so its answer can say whether another
            // page follows.
            let page = state.core.export_page(filter, format, page).await?;
            let mut resp = Response::new(page.body.into());
            resp.headers_mut().insert(
                "x-keyhold-more",
                HeaderValue::from_static(if page.more { "true" } else { "false" }),
            );
            resp
        } else {
            let produce = state.core.export_to(filter, format, page);
            stream_blocking(move |out| produce(out))
        };
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("{head_seq}:{}", vault::hex(&head_mac))) {
            resp.headers_mut().insert("x-keyhold-audit-head", v);
        }
        Ok::<_, ApiError>(ctx.finish(resp))
    })
    .await
}

/// Most buckets one `GET /api/audit/stats` may span.
const MAX_BUCKETS: i64 = 5000;

/// GET /api/audit/stats — attempts per hour or day by outcome, over the
/// same filters as the export (the console's chart).
pub(super) async fn stats(state: State, ctx: Ctx, query: String) -> Response {
    respond(&state, &ctx, async {
        audit_reader(&state, &ctx, Action::AuditExport).await?;
        let mut filter = ExportFilter::default();
        let mut bucket_secs = 3600i64;
        for (k, v) in form_pairs(&query)? {
            if v.is_empty() {
                continue;
            }
            if k == "bucket" {
                bucket_secs = match v.as_str() {
                    "hour" => 3600,
                    "day" => 86_400,
                    _ => {
                        return Err(ApiError::invalid(
                            "query parameter `bucket` must be `hour` or `day`",
                        ))
                    }
                };
                continue;
            }
            let known = filter
                .set(&k, &v)
                .map_err(|e| ApiError::invalid(format!("query parameter {e}")))?;
            if !known {
                return Err(unknown_parameter(&k));
            }
        }
        // The span defaults to the last MAX_BUCKETS buckets (about 208 days
        // of hours); a wider one is refused rather than cut silently.
        let bucket_us = bucket_secs * 1_000_000;
        let until = filter.until_us.unwrap_or_else(crate::time::now_us);
        let since = filter
            .since_us
            .unwrap_or_else(|| until.saturating_sub(MAX_BUCKETS * bucket_us));
        if until.saturating_sub(since) / bucket_us > MAX_BUCKETS {
            let hint = if bucket_secs == 3600 {
                ", or use `bucket=day`"
            } else {
                ""
            };
            return Err(ApiError::invalid(format!(
                "`since` to `until` spans more than {MAX_BUCKETS} buckets: narrow it{hint}"
            )));
        }
        filter.since_us = Some(since);
        filter.until_us = Some(until);
        let h = state.core.histogram(filter, bucket_secs).await?;
        let buckets: Vec<serde_json::Value> = h
            .buckets
            .iter()
            .map(|(start, counts)| {
                serde_json::json!({"start": crate::time::to_rfc3339(*start), "counts": counts})
            })
            .collect();
        let body = serde_json::json!({
            "bucket": if bucket_secs == 3600 { "hour" } else { "day" },
            "since": crate::time::to_rfc3339(since),
            "until": crate::time::to_rfc3339(until),
            "buckets": buckets,
            "undecodable": h.undecodable,
        });
        Ok::<_, ApiError>(ctx.json(StatusCode::OK, &body))
    })
    .await
}

/// GET /api/audit/verify
pub(super) async fn verify(state: State, ctx: Ctx) -> Response {
    respond(&state, &ctx, async {
        audit_reader(&state, &ctx, Action::AuditExport).await?;
        let report = state.core.verify_log().await?;
        // The status panel shows which key vouches for the chain: the
        // store's current signing key, next to the existing fields.
        let mut body = serde_json::to_value(&report)
            .map_err(|_| ApiError::unavailable("the report could not be encoded; retry"))?;
        if let Some(obj) = body.as_object_mut() {
            obj.insert(
                "public_key".into(),
                state.core.public_key().to_string().into(),
            );
        }
        Ok::<_, ApiError>(ctx.json(StatusCode::OK, &body))
    })
    .await
}
