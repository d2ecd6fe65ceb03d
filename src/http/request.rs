//! What handlers read from a request besides its body: the request's
//! context ([`ctx`]: peer, headers, request id), its raw query string and
//! the query's pairs, and the purpose a client gives for a reveal.
//!
//! Not for: typed bodies and queries (`extract.rs`) or answers
//! (`response.rs`). Handlers and the route table point here, never the
//! other way.

use std::convert::Infallible;

use warp::Filter;

use super::context::{self, Ctx, Peer};
use super::error::ApiError;
use super::State;

/// Builds the request context (peer from keyhold's server, headers).
pub(super) fn ctx(state: State) -> impl Filter<Extract = (Ctx,), Error = Infallible> + Clone {
    warp::ext::optional::<Peer>()
        .and(warp::ext::optional::<context::HttpVersion>())
        .and(warp::ext::optional::<context::RequestId>())
        .and(warp::header::headers_cloned())
        .map(
            move |peer,
                  version: Option<context::HttpVersion>,
                  id: Option<context::RequestId>,
                  headers| {
                let mut ctx = Ctx::new(peer, headers, &state.proxies, state.read_timeout);
                if let Some(v) = version {
                    ctx.version = v.0;
                }
                if let Some(id) = id {
                    ctx.request_id = id.0;
                }
                ctx
            },
        )
}

/// The raw query string, empty when there is none.
pub(super) fn query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// Parses a query string into pairs, refusing malformed encodings.
pub(super) fn form_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .map_err(|_| ApiError::bad_request("the query string is malformed"))
}

/// What `exec` (or another client) says the key is for.
pub(super) fn purpose(ctx: &Ctx) -> Option<String> {
    let v = ctx.headers.get("x-keyhold-purpose")?.to_str().ok()?;
    let clean: String = v.chars().filter(|c| !c.is_control()).take(200).collect();
    (!clean.is_empty()).then_some(clean)
}
