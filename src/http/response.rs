//! How a handler's work becomes its answer: [`respond`] runs the work and
//! answers its error, if any, through the request's context (the JSON
//! `detail`, the `X-Request-Id`), so each handler is written once as the
//! work that can fail.
//!
//! Not for: the error-to-status mapping (`error.rs`) or building JSON
//! answers (`context.rs`).

use std::future::Future;

use warp::reply::Response;

use super::context::Ctx;
use super::error::ApiError;
use super::AppState;

/// The answer of `work`: its response, or its error answered for `ctx`,
/// recorded first if it is a refusal of an authorised caller that has no
/// record yet ([`AppState::answer_refused`]).
pub(super) async fn respond(
    state: &AppState,
    ctx: &Ctx,
    work: impl Future<Output = Result<Response, ApiError>>,
) -> Response {
    match work.await {
        Ok(resp) => resp,
        Err(e) => ctx.error(&state.answer_refused(ctx, e).await),
    }
}
