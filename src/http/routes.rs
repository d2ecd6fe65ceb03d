//! The route table: one function per route (its doc names the method and
//! path), composed in one place ([`routes`]). `route_patterns.rs` lists
//! the same routes as data for the metrics' `route` label, the request
//! log, the query guard and the OpenAPI test.
//!
//! Handlers (`keys.rs`, `admin.rs`, `audit_routes.rs`) never reject: they
//! answer every error themselves, so each answer carries `X-Request-Id`.
//! Only unknown paths and methods reach [`recover`]. A query naming a
//! parameter its route does not know is answered 422 before the table
//! (`query_guard.rs`).
//!
//! Over 500 lines: the table itself (one function a route) with the few
//! answers that need no handler module (health, metrics, the fallback).

use std::convert::Infallible;

use http::StatusCode;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::context::{self, error_response, Ctx};
use super::error::ApiError;
use super::request::{ctx, query};
use super::{admin_routes, audit_routes, key_routes, AppState, State};

fn with_state(state: State) -> impl Filter<Extract = (State,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// `/api/keys`, with or without the trailing slash (the Python
/// reference's front end calls `/api/keys/`).
fn keys_root() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::path!("api" / "keys")
        .or(exact_path("/api/keys/"))
        .unify()
}

fn exact_path(path: &'static str) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::path::full()
        .and_then(move |full: warp::path::FullPath| async move {
            if full.as_str() == path {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
}

/// A route's filter: boxed, so the table composes quickly.
pub(super) type Route = BoxedFilter<(Response,)>;

/// POST /api/keys — create a key (keys:write)
fn create_key(s: &State) -> Route {
    keys_root()
        .and(warp::post())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .and(warp::body::stream())
        .then(key_routes::create)
        .boxed()
}

/// GET /api/keys — list metadata (keys:list), `?provider=`
fn list_keys(s: &State) -> Route {
    keys_root()
        .and(warp::get())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .and(query())
        .then(key_routes::list)
        .boxed()
}

/// GET /api/keys/{id} — reveal one key (keys:reveal), `?version=N`
fn reveal_key(s: &State) -> Route {
    warp::path!("api" / "keys" / String)
        .and(warp::get())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .and(query())
        .then(key_routes::reveal_by_id)
        .boxed()
}

/// DELETE /api/keys/{id} — soft-delete a key (keys:write); `?purge=true`
/// destroys it at once (admin)
fn delete_key(s: &State) -> Route {
    warp::path!("api" / "keys" / String)
        .and(warp::delete())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .and(query())
        .then(key_routes::delete)
        .boxed()
}

/// PUT /api/keys/{id} — a new version of a key (keys:write)
fn put_key(s: &State) -> Route {
    warp::path!("api" / "keys" / String)
        .and(warp::put())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .and(warp::body::stream())
        .then(key_routes::put)
        .boxed()
}

/// GET /api/keys/{id}/versions — version metadata (keys:list)
fn key_versions(s: &State) -> Route {
    warp::path!("api" / "keys" / String / "versions")
        .and(warp::get())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .then(key_routes::versions)
        .boxed()
}

/// POST /api/keys/{id}/restore — undelete within the recovery window
/// (keys:write)
fn restore_key(s: &State) -> Route {
    warp::path!("api" / "keys" / String / "restore")
        .and(warp::post())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .then(key_routes::restore)
        .boxed()
}

/// POST /api/keys/{id}/versions/{n}/restore — put a version back from the
/// recovery window (admin)
fn restore_version(s: &State) -> Route {
    warp::path!("api" / "keys" / String / "versions" / String / "restore")
        .and(warp::post())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .then(key_routes::restore_version)
        .boxed()
}

/// GET /api/providers/{provider}/keys/{key_name} — reveal the newest live
/// key with that name (keys:reveal)
fn reveal_named(s: &State) -> Route {
    warp::path!("api" / "providers" / String / "keys" / String)
        .and(warp::get())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .then(key_routes::reveal_named)
        .boxed()
}

/// GET /api/providers/{provider}/key — reveal the newest live key
fn reveal_provider(s: &State) -> Route {
    warp::path!("api" / "providers" / String / "key")
        .and(warp::get())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .then(key_routes::reveal_newest)
        .boxed()
}

/// POST /api/reveal — reveal several keys at once, all or none
/// (keys:reveal; each key counts against the reveal rate)
fn reveal_batch(s: &State) -> Route {
    warp::path!("api" / "reveal")
        .and(warp::post())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .and(warp::body::stream())
        .then(super::batch_routes::reveal_batch)
        .boxed()
}

/// GET /api/tokens — list tokens (admin)
fn list_tokens(s: &State) -> Route {
    warp::path!("api" / "tokens")
        .and(warp::get())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .then(admin_routes::list_tokens)
        .boxed()
}

/// POST /api/tokens — mint a token (admin)
fn create_token(s: &State) -> Route {
    warp::path!("api" / "tokens")
        .and(warp::post())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .and(warp::body::stream())
        .then(admin_routes::create_token)
        .boxed()
}

/// GET /api/tokens/{id} — one token (admin)
fn get_token(s: &State) -> Route {
    warp::path!("api" / "tokens" / String)
        .and(warp::get())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .then(admin_routes::get_token)
        .boxed()
}

/// DELETE /api/tokens/{id} — revoke a token (admin)
fn revoke_token(s: &State) -> Route {
    warp::path!("api" / "tokens" / String)
        .and(warp::delete())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .then(admin_routes::revoke_token)
        .boxed()
}

/// POST /api/tokens/{id}/rotate — replace a token, with an overlap (admin)
fn rotate_token(s: &State) -> Route {
    warp::path!("api" / "tokens" / String / "rotate")
        .and(warp::post())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .and(warp::body::stream())
        .then(admin_routes::rotate_token)
        .boxed()
}

/// GET /api/audit — the log, streamed (audit:read)
fn export(s: &State) -> Route {
    warp::path!("api" / "audit")
        .and(warp::get())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .and(query())
        .then(audit_routes::export)
        .boxed()
}

/// GET /api/audit/verify — chain verification (audit:read)
fn verify(s: &State) -> Route {
    warp::path!("api" / "audit" / "verify")
        .and(warp::get())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .then(audit_routes::verify)
        .boxed()
}

/// GET /api/audit/stats — attempts per hour or day by outcome (audit:read)
fn stats(s: &State) -> Route {
    warp::path!("api" / "audit" / "stats")
        .and(warp::get())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .and(query())
        .then(audit_routes::stats)
        .boxed()
}

/// GET /api/whoami — the token's name, scopes and providers (any token)
fn whoami(s: &State) -> Route {
    warp::path!("api" / "whoami")
        .and(warp::get())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .then(super::whoami::whoami)
        .boxed()
}

/// POST /api/admin/rotate — re-encrypt under the newest key (admin)
fn rotate(s: &State) -> Route {
    warp::path!("api" / "admin" / "rotate")
        .and(warp::post())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .then(admin_routes::rotate)
        .boxed()
}

/// POST /api/admin/reload — read the keyring again, as SIGHUP does (admin)
fn reload(s: &State) -> Route {
    warp::path!("api" / "admin" / "reload")
        .and(warp::post())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .then(admin_routes::reload)
        .boxed()
}

/// GET /api/admin/backup — a consistent, authenticated snapshot (admin)
fn backup(s: &State) -> Route {
    warp::path!("api" / "admin" / "backup")
        .and(warp::get())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .then(admin_routes::backup)
        .boxed()
}

/// GET /healthz — liveness, and whether the audit writer works (no token)
fn health(s: &State) -> Route {
    warp::path!("healthz")
        .and(warp::get())
        .and(with_state(s.clone()))
        .map(|st: State| healthz(&st))
        .boxed()
}

/// GET /metrics — Prometheus text (a token with `metrics:read`)
fn metrics(s: &State) -> Route {
    warp::path!("metrics")
        .and(warp::get())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .then(|st: State, ctx: Ctx| async move {
            // Metrics cover every provider: a provider-limited token reads
            // none of them (a limited admin included).
            let allowed = async {
                let action = crate::vault::Action::MetricsRead;
                let caller = st
                    .authorize(&ctx, crate::access::Scope::MetricsRead, action)
                    .await?;
                let what = crate::vault::EveryProvider::Metrics;
                st.vault()
                    .require_unlimited(&AppState::origin(&ctx), &caller, action, what)
                    .await
                    .map_err(ApiError::from)
            }
            .await;
            // Through the context, as every handler's answer: its
            // `X-Request-Id` (a 404 when metrics are off is an error too).
            match allowed {
                Ok(()) => ctx.finish(metrics_answer(&st)),
                Err(e) => ctx.error(&e),
            }
        })
        .boxed()
}

/// What `--metrics-listen` serves: GET /metrics without a token, and a
/// JSON 404 for anything else.
pub(super) fn metrics_only(state: State) -> BoxedFilter<(Response,)> {
    let s = state.clone();
    warp::path!("metrics")
        .and(warp::get())
        .and(query())
        .map(move |q: String| {
            // Its query parameters are refused as on the main listener.
            match super::query_guard::check(&http::Method::GET, "/metrics", &q) {
                Some(refusal) => error_response(&refusal),
                None => metrics_answer(&s),
            }
        })
        .or(warp::any().map(|| {
            context::json_response(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"detail": "this listener serves GET /metrics only"}),
            )
        }))
        .unify()
        .boxed()
}

/// GET /openapi.json — the API document (no token)
fn openapi() -> Route {
    warp::path!("openapi.json")
        .and(warp::get())
        .map(|| {
            let mut r = Response::new(OPENAPI.into());
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        })
        .boxed()
}

/// The whole API. Order matters only where paths overlap: specific paths
/// come before the `{id}` captures.
pub(crate) fn routes(state: State) -> BoxedFilter<(Response,)> {
    let s = &state;
    let table = [
        create_key(s),
        list_keys(s),
        reveal_key(s),
        delete_key(s),
        put_key(s),
        key_versions(s),
        restore_key(s),
        restore_version(s),
        reveal_provider(s),
        reveal_named(s),
        reveal_batch(s),
        list_tokens(s),
        create_token(s),
        get_token(s),
        revoke_token(s),
        rotate_token(s),
        export(s),
        verify(s),
        rotate(s),
        reload(s),
        backup(s),
        health(s),
        metrics(s),
        openapi(),
        stats(s),
        whoami(s),
        // GET /ui/ and /ui/assets/{name} — the read-only console (no token;
        // its calls carry one)
        super::ui::routes().boxed(),
    ];
    let table = any_of(Vec::from(table))
        .unwrap_or_else(|| warp::any().map(|| Response::new("".into())).boxed());
    // An unknown query parameter answers 422 before any route runs.
    super::query_guard::guard(state.clone())
        .or(table)
        .unify()
        .recover(recover)
        .unify()
        .boxed()
}

/// The routes joined with `or`, tried first to last, as a balanced tree:
/// each level is a boxed filter whose future is allocated and polled
/// through on every request, so a chain one level per route cost every
/// request (a reveal too) one allocation and one poll layer for each
/// route in the table; the tree costs about log2 of that.
pub(super) fn any_of(mut routes: Vec<Route>) -> Option<Route> {
    if routes.len() <= 1 {
        return routes.pop();
    }
    let later = routes.split_off(routes.len() / 2);
    match (any_of(routes), any_of(later)) {
        (Some(first), Some(then)) => Some(first.or(then).unify().boxed()),
        (first, then) => first.or(then),
    }
}

/// The OpenAPI 3 document of this API (kept true by tests/openapi.rs).
pub const OPENAPI: &str = include_str!("openapi.json");

fn metrics_answer(state: &AppState) -> Response {
    let Some(handle) = &state.metrics else {
        return context::json_response(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"detail": "metrics are not enabled in this process"}),
        );
    };
    metrics::gauge!("keyhold_audit_records").set(state.core.audit_head().0 as f64);
    let keys = state.gauges.keys.load(std::sync::atomic::Ordering::Relaxed);
    if keys >= 0 {
        metrics::gauge!("keyhold_keys").set(keys as f64);
    }
    metrics::gauge!("keyhold_limiter_addresses").set(state.core.limiter().tracked() as f64);
    let mut r = Response::new(handle.render().into());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

fn healthz(state: &AppState) -> Response {
    // Another node's rotation replaced the record keys: this node answers
    // 503 to what it cannot read until it is restarted.
    let health = state.core.health();
    let writer_ok = health.writer_ok;
    let ok = writer_ok && !health.keys_replaced;
    let mut body = serde_json::json!({
        "status": if ok { "ok" } else { "degraded" },
        "audit_writer": if writer_ok { "ok" } else { "failing" },
        "build": crate::build_info::BUILD,
    });
    if let Some(node) = health.node {
        // Several nodes on one database: which node answered, and why it
        // cannot serve reveals (the database probed every second).
        body["node"] = node.into();
        body["storage"] = if writer_ok { "ok" } else { "unreachable" }.into();
    }
    if let Some(why) = health.detail {
        body["detail"] = why.into();
    }
    context::json_response(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &body,
    )
}

/// Unknown paths and methods (handlers answer everything else).
async fn recover(rej: Rejection) -> Result<Response, Infallible> {
    let err = if rej.is_not_found() {
        ApiError::not_found("no such route: GET /openapi.json lists every route")
    } else if rej.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this route: GET /openapi.json lists each route's methods",
        )
    } else {
        ApiError::bad_request("the request could not be read: check its headers and body")
    };
    let mut resp = error_response(&err);
    if let Ok(v) = http::HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        resp.headers_mut().insert("x-request-id", v);
    }
    Ok(resp)
}
