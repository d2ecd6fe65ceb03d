//! The HTTP API: warp filters (one function per route, composed in
//! [`routes`]), their handlers, and keyhold's own server loop.
//!
//! A request's whole path: [`routes`] → a route filter below → the handler
//! in `keys.rs` / `admin.rs` / `audit_routes.rs` → `access`, `store`,
//! `keyring` → the `audit` writer.
//!
//! Handlers never reject: they answer every error themselves, so each
//! answer carries `X-Request-Id`. Only unknown paths and methods reach
//! [`recover`].

mod admin;
mod audit_routes;
pub mod context;
pub mod error;
mod keys;
pub mod observe;
pub mod server;
mod stream;

pub use admin::TokenInfo;

use std::convert::Infallible;
use std::sync::Arc;

use http::StatusCode;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::access::{Caller, Scope};
use crate::audit::{Action, AuditEvent, AuditWriter, Coalescer, Outcome};
use crate::keyring::Keyring;
use crate::limiter::{RevealLimiter, TrustedProxies};
use crate::store::Store;
use context::{error_response, Ctx, Peer};
use error::ApiError;

/// Everything the handlers share.
pub struct AppState {
    pub store: Store,
    pub keyring: Arc<Keyring>,
    pub audit: AuditWriter,
    pub limiter: RevealLimiter,
    pub proxies: TrustedProxies,
    pub coalescer: Coalescer,
    /// Serves /metrics (absent when no recorder could be installed).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub gauges: Arc<observe::Gauges>,
    /// Time a client has to send a request body (slow-body guard).
    pub read_timeout: std::time::Duration,
    /// Request bodies being read at once, at most (each holds a buffer of
    /// up to 64 KiB); further uploads wait up to `read_timeout`, then 503.
    pub body_reads: tokio::sync::Semaphore,
    /// Held by a rotation or a backup, so they do not overlap.
    pub maintenance: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

pub type State = Arc<AppState>;

impl AppState {
    /// Authenticates the request's bearer token (and notes the caller's
    /// name for the request log).
    pub(crate) fn authenticate(&self, ctx: &Ctx) -> Result<Caller, ApiError> {
        let token = ctx.bearer()?;
        match crate::tokens::authenticate(&self.store, token) {
            Ok(Some(c)) => {
                ctx.set_caller(&c.name);
                Ok(c)
            }
            Ok(None) => Err(ApiError::unauthenticated(
                "invalid or revoked token: check the token, or ask an admin for a new one",
            )),
            Err(crate::store::StoreError::Tampered { .. }) => {
                // Recorded here for every route; the answer does not wait
                // for it (nothing is served to this caller).
                let mut ev = self.event(ctx, Action::Authenticate, None, Outcome::Tampered);
                ev.detail = Some(
                    "the token's stored record failed its integrity check (planted, edited or \
                     moved outside keyhold); refused"
                        .into(),
                );
                let writer = self.audit.clone();
                tokio::spawn(async move {
                    if let Err(e) = writer.record(ev, vec![]).await {
                        tracing::error!(error = %e, "could not record a tampered token record");
                    }
                });
                Err(ApiError::tampered(
                    StatusCode::UNAUTHORIZED,
                    "this token's stored record failed its integrity check (it was changed outside \
                     keyhold) and is refused: tell the operator to run `keyhold check`",
                ))
            }
            Err(e) => Err(ApiError::storage(&e)),
        }
    }

    /// A permit to read one request body, waiting up to the read timeout
    /// for one to be free.
    pub(crate) async fn body_permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        match tokio::time::timeout(self.read_timeout, self.body_reads.acquire()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(ApiError::unavailable(
                "too many request bodies are being read at once: retry shortly",
            )),
        }
    }

    /// A base audit event for this request.
    pub(crate) fn event(
        &self,
        ctx: &Ctx,
        action: Action,
        caller: Option<&Caller>,
        outcome: Outcome,
    ) -> AuditEvent {
        let (ip, peer) = ctx.audit_addresses();
        AuditEvent {
            request_id: ctx.request_id.clone(),
            action,
            key_id: None,
            provider: None,
            caller: caller.map_or_else(|| "anonymous".to_string(), |c| c.name.clone()),
            caller_id: caller.map(|c| c.id),
            ip,
            peer,
            outcome,
            count: None,
            detail: None,
        }
    }

    /// Writes a record durably; a failure becomes the 503 answer.
    pub(crate) async fn audit(
        &self,
        event: AuditEvent,
        writes: Vec<crate::store::Write>,
    ) -> Result<u64, ApiError> {
        if event.action == Action::Reveal {
            metrics::counter!("keyhold_reveals_total", "outcome" => event.outcome.as_str())
                .increment(1);
        }
        self.audit.record(event, writes).await.map_err(|e| {
            tracing::error!(error = %e, "audit write failed");
            ApiError::audit_unavailable()
        })
    }
}

/// Every route the API serves: method and path pattern. One source of
/// truth for the metrics' `route` label, the request log and the OpenAPI
/// document's test.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/keys"),
    ("GET", "/api/keys"),
    ("GET", "/api/keys/{id}"),
    ("DELETE", "/api/keys/{id}"),
    ("GET", "/api/providers/{provider}/key"),
    ("GET", "/api/tokens"),
    ("POST", "/api/tokens"),
    ("GET", "/api/tokens/{id}"),
    ("DELETE", "/api/tokens/{id}"),
    ("GET", "/api/audit"),
    ("GET", "/api/audit/verify"),
    ("POST", "/api/admin/rotate"),
    ("GET", "/api/admin/backup"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];

/// The route pattern a request path falls under (`unmatched` for none):
/// ids never become labels.
pub fn route_label(method: &http::Method, path: &str) -> &'static str {
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let segs: Vec<&str> = path.split('/').collect();
    let fits = |pattern: &str| {
        let p: Vec<&str> = pattern.split('/').collect();
        p.len() == segs.len()
            && p.iter()
                .zip(&segs)
                .all(|(a, b)| (a.starts_with('{') && !b.is_empty()) || a == b)
    };
    ROUTES
        .iter()
        .filter(|(_, p)| fits(p))
        // A literal route beats a pattern (`/api/audit/verify`).
        .min_by_key(|(m, p)| (*m != method.as_str(), p.contains('{')))
        .map_or("unmatched", |(_, p)| p)
}

/// Checks a scope, answering 403 naming the scope when missing.
pub(crate) fn require(caller: &Caller, scope: Scope) -> Result<(), ApiError> {
    if caller.has(scope) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "this token lacks the `{scope}` scope: use a token whose role grants it"
        )))
    }
}

fn with_state(state: State) -> impl Filter<Extract = (State,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// Builds the request context (peer from keyhold's server, headers).
fn ctx(state: State) -> impl Filter<Extract = (Ctx,), Error = Infallible> + Clone {
    warp::ext::optional::<Peer>()
        .and(warp::ext::optional::<context::HttpVersion>())
        .and(warp::header::headers_cloned())
        .map(
            move |peer, version: Option<context::HttpVersion>, headers| {
                let mut ctx = Ctx::new(peer, headers, &state.proxies, state.read_timeout);
                if let Some(v) = version {
                    ctx.version = v.0;
                }
                ctx
            },
        )
}

/// The raw query string, empty when there is none.
fn query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
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

/// The whole API. Order matters only where paths overlap: specific paths
/// come before the `{id}` captures.
pub fn routes(state: State) -> BoxedFilter<(Response,)> {
    let s = state;
    // POST /api/keys — create a key (keys:write)
    let create_key = keys_root()
        .and(warp::post())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .and(warp::body::stream())
        .then(keys::create);
    // GET /api/keys?provider= — list metadata (keys:list)
    let list_keys = keys_root()
        .and(warp::get())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .and(query())
        .then(keys::list);
    // GET /api/keys/{id} — reveal one key (keys:reveal)
    let reveal_key = warp::path!("api" / "keys" / String)
        .and(warp::get())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .then(keys::reveal_by_id);
    // DELETE /api/keys/{id} — delete a key (keys:write)
    let delete_key = warp::path!("api" / "keys" / String)
        .and(warp::delete())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .then(keys::delete);
    // GET /api/providers/{provider}/key — reveal the newest live key
    let reveal_provider = warp::path!("api" / "providers" / String / "key")
        .and(warp::get())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .then(keys::reveal_newest);
    // GET/POST /api/tokens, GET/DELETE /api/tokens/{id} — admin
    let list_tokens = warp::path!("api" / "tokens")
        .and(warp::get())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .then(admin::list_tokens);
    let create_token = warp::path!("api" / "tokens")
        .and(warp::post())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .and(warp::body::stream())
        .then(admin::create_token);
    let get_token = warp::path!("api" / "tokens" / String)
        .and(warp::get())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .then(admin::get_token);
    let revoke_token = warp::path!("api" / "tokens" / String)
        .and(warp::delete())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .then(admin::revoke_token);
    // GET /api/audit — export (audit:read); GET /api/audit/verify
    let export = warp::path!("api" / "audit")
        .and(warp::get())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .and(query())
        .then(audit_routes::export);
    let verify = warp::path!("api" / "audit" / "verify")
        .and(warp::get())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .then(audit_routes::verify);
    // POST /api/admin/rotate — re-encrypt under the newest key (admin)
    let rotate = warp::path!("api" / "admin" / "rotate")
        .and(warp::post())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .then(admin::rotate);
    // GET /api/admin/backup — a consistent, authenticated snapshot (admin)
    let backup = warp::path!("api" / "admin" / "backup")
        .and(warp::get())
        .and(with_state(s.clone()))
        .and(ctx(s.clone()))
        .then(admin::backup);
    // GET /metrics — Prometheus text (no token)
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_state(s.clone()))
        .map(|st: State| metrics_answer(&st));
    // GET /openapi.json — the API document (no token)
    let openapi = warp::path!("openapi.json").and(warp::get()).map(|| {
        let mut r = Response::new(OPENAPI.into());
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    });
    // GET /healthz — liveness, and whether the audit writer works
    let health = warp::path!("healthz")
        .and(warp::get())
        .and(with_state(s.clone()))
        .map(|st: State| healthz(&st));

    create_key
        .or(list_keys)
        .unify()
        .or(reveal_key)
        .unify()
        .or(delete_key)
        .unify()
        .or(reveal_provider)
        .unify()
        .or(list_tokens)
        .unify()
        .or(create_token)
        .unify()
        .or(get_token)
        .unify()
        .or(revoke_token)
        .unify()
        .or(export)
        .unify()
        .or(verify)
        .unify()
        .or(rotate)
        .unify()
        .or(backup)
        .unify()
        .or(health)
        .unify()
        .or(metrics)
        .unify()
        .or(openapi)
        .unify()
        .recover(recover)
        .unify()
        .boxed()
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
    metrics::gauge!("keyhold_audit_records").set(state.audit.log().head().0 as f64);
    let keys = state.gauges.keys.load(std::sync::atomic::Ordering::Relaxed);
    if keys >= 0 {
        metrics::gauge!("keyhold_keys").set(keys as f64);
    }
    metrics::gauge!("keyhold_limiter_addresses").set(state.limiter.tracked() as f64);
    let mut r = Response::new(handle.render().into());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

fn healthz(state: &AppState) -> Response {
    let ok = state.audit.is_healthy();
    let mut body = serde_json::json!({
        "status": if ok { "ok" } else { "degraded" },
        "audit_writer": if ok { "ok" } else { "failing" },
    });
    if let Some(node) = state.store.node() {
        // Several nodes on one database: which node answered, and why it
        // cannot serve reveals (the database probed every second).
        body["node"] = node.into();
        body["storage"] = if ok { "ok" } else { "unreachable" }.into();
    }
    if let Some(why) = state.audit.last_error().filter(|_| !ok) {
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
        ApiError::not_found("no such route: see the API table in the README")
    } else if rej.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this route: see the API table in the README",
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
