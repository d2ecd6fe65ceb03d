//! `GET /api/whoami`: who a token is and what it may do, for a front end
//! (the console) that shows only what the token reaches. Any valid token;
//! nothing secret is answered and nothing is audited (it changes nothing
//! and reads no key or record).

use http::StatusCode;
use warp::reply::Response;

use super::context::Ctx;
use super::State;
use crate::access::Scope;
use crate::wire::WhoAmI;

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
                    .map(|s| s.as_str().to_string())
                    .collect(),
                providers: caller.providers.clone(),
            },
        ),
        Err(e) => ctx.error(&e),
    }
}
