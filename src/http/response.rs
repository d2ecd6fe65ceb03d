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

/// The answer of `work`: its response, or its error answered for `ctx`.
pub(super) async fn respond(
    ctx: &Ctx,
    work: impl Future<Output = Result<Response, ApiError>>,
) -> Response {
    work.await.unwrap_or_else(|e| ctx.error(&e))
}
