//! The HTTP API: warp filters (one function per route, composed in
//! [`routes`]), their handlers, and keyhold's own server loop.
//!
//! A request's whole path: [`routes`] → a route filter below → the handler
//! in `keys.rs` / `admin.rs` / `audit_routes.rs` → the vault's core
//! ([`crate::vault::Core`], in [`AppState`]), the only door to the store,
//! the keyring and the audit log.
//!
//! Modules point one way, never back up: `app` (the running server) →
//! `routes` (the table) → `query_guard` and the handlers (`keys`,
//! `reveal_batch`, `admin`, `audit_routes`, `whoami`, `ui`) → the helpers
//! (`request`, `response`, `extract`, `context`, `error`, `stream`); and
//! `app` → `server` (the transport) → `context`. Every layer may read the
//! data below them all: `route_patterns` (the routes as data) and
//! `observe`.
//!
//! Handlers never reject: they answer every error themselves, so each
//! answer carries `X-Request-Id`. Only unknown paths and methods reach
//! [`recover`].

mod admin_routes;
pub(crate) mod app;
mod audit_routes;
mod batch_routes;
pub(crate) mod context;
pub(crate) mod error;
mod extract;
mod key_routes;
pub(crate) mod observe;
pub(crate) mod query_guard;
pub(crate) mod refusal_text;
mod request;
mod response;
mod route_patterns;
mod routes;
pub(crate) mod server;
mod server_settings;
mod stream;
pub(crate) mod ui;
mod whoami;

pub use route_patterns::ROUTES;
pub(crate) use routes::routes;
pub use routes::OPENAPI;
pub(crate) use server_settings::{Listen, ServerSettings, Timeout, Tls};

use std::sync::Arc;

use crate::access::Caller;
use crate::limiter::TrustedProxies;
use crate::vault::{Action, AuditEvent, Outcome};
use context::Ctx;
use error::ApiError;

/// Everything the handlers share: the vault's core (the only door to the
/// store, the keyring and the audit log) and what is HTTP's own.
pub(crate) struct AppState {
    pub core: Arc<crate::vault::Core>,
    pub proxies: TrustedProxies,
    /// Serves /metrics (absent when no recorder could be installed).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub gauges: Arc<observe::Gauges>,
    /// Time a client has to send a request body (slow-body guard).
    pub read_timeout: std::time::Duration,
    /// Request bodies being read at once, at most (each holds a buffer of
    /// up to 64 KiB); further uploads wait up to `read_timeout`, then 503.
    pub body_reads: tokio::sync::Semaphore,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

pub(crate) type State = Arc<AppState>;

impl AppState {
    /// The vault as this request sees it.
    pub(crate) fn vault(&self) -> crate::vault::Vault<'_> {
        self.core.vault()
    }

    /// Who is asking, as the audit log records it.
    pub(crate) fn origin(ctx: &Ctx) -> crate::vault::Origin {
        let (ip, peer) = ctx.audit_addresses();
        crate::vault::Origin {
            request_id: ctx.request_id.clone(),
            ip,
            peer,
            client: ctx.client_key().to_string(),
            operator: false,
            mark: ctx.refusal_mark.clone(),
        }
    }

    /// Authenticates the request's bearer token through the vault (and
    /// notes the caller's name for the request log).
    pub(crate) async fn authenticate(&self, ctx: &Ctx) -> Result<Caller, ApiError> {
        let token = ctx.bearer();
        let caller = self.vault().authenticate(&Self::origin(ctx), token).await?;
        ctx.set_caller(&caller.name);
        Ok(caller)
    }

    /// The caller of a request, holding `scope`: the one scope check of
    /// every route, through the vault, so a refusal is always recorded
    /// (under `action`; coalesced and budgeted per token).
    pub(crate) async fn authorize(
        &self,
        ctx: &Ctx,
        scope: crate::access::Scope,
        action: Action,
    ) -> Result<Caller, ApiError> {
        let caller = self.authenticate(ctx).await?;
        self.require(ctx, &caller, scope, action).await?;
        Ok(caller)
    }

    /// Checks that `caller` holds `scope` for `action` through the vault
    /// (a refusal recorded); once it does, a refusal answered later in
    /// the request is recorded as that caller's ([`AppState::answer_refused`]).
    pub(crate) async fn require(
        &self,
        ctx: &Ctx,
        caller: &Caller,
        scope: crate::access::Scope,
        action: Action,
    ) -> Result<(), ApiError> {
        self.vault()
            .require(&Self::origin(ctx), caller, scope, action)
            .await?;
        ctx.set_authorized(caller, action);
        Ok(())
    }

    /// The one path of a refusal to an answer: a refusal whose record the
    /// vault decided (it set the request's mark: made, counted, or none
    /// due) is answered as it is; one the edge gives itself (a body, query
    /// or path that does not fit) to a caller that passed its scope check
    /// is recorded here, through the vault, as that caller's refusal of
    /// the action (outcome `forbidden`, coalesced and taken from its
    /// refusal budget: past it, the answer is 429; never counted in the
    /// reveal metric). Before a scope check passed nothing is recorded
    /// here: unauthenticated junk costs no record. The record's detail is
    /// the answer's, with no control or format character and no
    /// token-like word ([`record_text`]).
    pub(crate) async fn answer_refused(&self, ctx: &Ctx, e: ApiError) -> ApiError {
        let decided = ctx.refusal_mark.take();
        let status = e.status;
        let caller_error = status.is_client_error()
            && status != http::StatusCode::UNAUTHORIZED
            && status != http::StatusCode::TOO_MANY_REQUESTS;
        if e.recorded || decided || !caller_error {
            return e;
        }
        let Some((caller, action)) = ctx.authorized() else {
            return e;
        };
        let mut ev = self.event(ctx, action, Some(&caller), Outcome::Forbidden);
        ev.detail = Some(format!(
            "answered {}: {}",
            status.as_u16(),
            record_text(&e.detail)
        ));
        let refusal = crate::vault::Refusal::Invalid(crate::vault::Invalid::Request);
        let answer = match self
            .vault()
            .edge_refused(&Self::origin(ctx), ev, refusal)
            .await
        {
            spent @ crate::vault::Refusal::TooManyRefusals(_) => ApiError {
                // The body the refusal left unread still closes the
                // connection.
                unread_body: e.unread_body,
                ..ApiError::from(spent)
            },
            _ => e,
        };
        ctx.refusal_mark.take();
        ApiError {
            recorded: true,
            ..answer
        }
    }

    /// The caller of a route that takes a body, and the body: the token is
    /// authenticated and `scope` checked (a refusal recorded under
    /// `action`) before any of the body is read, so a refused upload costs
    /// no buffer (its body is drained and dropped, or its stream reset).
    /// With `optional`, an empty body reads as `{}`.
    pub(crate) async fn caller_and_body<S, B>(
        &self,
        ctx: &Ctx,
        body: S,
        scope: crate::access::Scope,
        action: Action,
        optional: bool,
    ) -> Result<(Caller, serde_json::Value), ApiError>
    where
        S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
        B: bytes::Buf,
    {
        let caller = match self.authorize(ctx, scope, action).await {
            Ok(c) => c,
            Err(e) => {
                ctx.discard_body(body).await;
                return Err(e);
            }
        };
        let permit = self.body_permit().await?;
        let value = if optional {
            ctx.read_optional_json_body(body).await?
        } else {
            ctx.read_json_body(body).await?
        };
        drop(permit);
        Ok((caller, value))
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
        self.vault()
            .event(&Self::origin(ctx), action, caller, outcome)
    }
}

/// Caller text as a record keeps it (the core's rule, `vault::record_text`).
pub(crate) use crate::vault::record_text;

#[cfg(test)]
mod tests;
