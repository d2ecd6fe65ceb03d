//! `GET /api/whoami`: who a token is and what it may do, for a front end
//! (the console) that shows only what the token reaches. Any valid token;
//! nothing secret is answered and nothing is audited (it changes nothing
//! and reads no key or record).

use http::StatusCode;
use serde::Serialize;
use warp::reply::Response;

use super::context::Ctx;
use super::State;
use crate::access::Scope;

/// The answer of `GET /api/whoami`.
#[derive(Debug, Serialize)]
pub(super) struct WhoAmI {
    pub name: String,
    pub id: String,
    /// The scopes the token holds in effect (`admin` grants every scope,
    /// so an admin token lists all five).
    pub scopes: Vec<&'static str>,
    /// The providers the token is limited to; `null` for every provider.
    pub providers: Option<Vec<String>>,
}

/// GET /api/whoami
pub(super) async fn whoami(state: State, ctx: Ctx) -> Response {
    match state.authenticate(&ctx).await {
        Ok(caller) => ctx.json(
            StatusCode::OK,
            &WhoAmI {
                name: caller.name.clone(),
                id: caller.id.to_string(),
                scopes: Scope::ALL
                    .into_iter()
                    .filter(|s| caller.has(*s))
                    .map(Scope::as_str)
                    .collect(),
                providers: caller.providers.clone(),
            },
        ),
        Err(e) => ctx.error(&e),
    }
}
