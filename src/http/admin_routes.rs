//! Handlers of the admin token routes (scope `admin`).

use bytes::Buf;
use futures_util::Stream;
use http::StatusCode;
use warp::reply::Response;

use super::context::Ctx;
use super::error::ApiError;
use super::extract;
use super::response::respond;
use super::{AppState, State};
use crate::access::{Caller, Scope};
use crate::vault::{Action, Outcome};
use crate::vault::{EveryProvider, ReloadError, TokenRequest};
use crate::wire::{Done, MintedToken, NewToken, RotateToken, SecretText, TokenInfo};

/// Authenticates an admin (recording a refused scope).
async fn admin_caller(state: &State, ctx: &Ctx, action: Action) -> Result<Caller, ApiError> {
    state.authorize(ctx, Scope::Admin, action).await
}

/// An admin without a provider limit, for an operation on the whole
/// store (rotation, backup).
async fn whole_store_caller(
    state: &State,
    ctx: &Ctx,
    action: Action,
    what: EveryProvider,
) -> Result<Caller, ApiError> {
    let caller = admin_caller(state, ctx, action).await?;
    state
        .vault()
        .require_unlimited(&AppState::origin(ctx), &caller, action, what)
        .await?;
    Ok(caller)
}

/// GET /api/tokens — a provider-limited admin sees only the tokens that
/// reach no further than itself.
pub(super) async fn list_tokens(state: State, ctx: Ctx) -> Response {
    respond(&state, &ctx, async {
        let caller = state
            .authorize(&ctx, Scope::Admin, Action::TokenList)
            .await?;
        let out: Vec<TokenInfo> = state
            .vault()
            .list_tokens(&AppState::origin(&ctx), Some(&caller))
            .await?
            .iter()
            .map(TokenInfo::listed)
            .collect();
        Ok::<_, ApiError>(ctx.json(StatusCode::OK, &out))
    })
    .await
}

/// GET /api/tokens/{id}
pub(super) async fn get_token(id: String, state: State, ctx: Ctx) -> Response {
    respond(&state, &ctx, async {
        let caller = state
            .authorize(&ctx, Scope::Admin, Action::TokenList)
            .await?;
        let rec = state
            .vault()
            .find_token(&AppState::origin(&ctx), Some(&caller), &id)
            .await?;
        Ok::<_, ApiError>(ctx.json(StatusCode::OK, &TokenInfo::listed(&rec)))
    })
    .await
}

/// POST /api/tokens  `{name, role, providers?}`
pub(super) async fn create_token<S, B>(state: State, ctx: Ctx, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    respond(&state, &ctx, async {
        // Authenticated and authorised before the body is read.
        let (caller, body) = state
            .caller_and_body(&ctx, body, Scope::Admin, Action::TokenCreate, false)
            .await?;
        let req: NewToken = extract::body(body, extract::NEW_TOKEN)?;
        let role = extract::role_of(&req)?;
        let (name, providers, ttl_seconds) = (req.name, req.providers, req.ttl_seconds);
        let minted = state
            .vault()
            .create_token(
                &AppState::origin(&ctx),
                Some(&caller),
                TokenRequest {
                    name,
                    role,
                    providers,
                    ttl_seconds,
                },
            )
            .await?;
        Ok::<_, ApiError>(ctx.json(StatusCode::OK, &with_secret(&minted)))
    })
    .await
}

/// A minted token as answered: its info and, once, its secret (`token`).
fn with_secret(minted: &crate::vault::MintedToken) -> MintedToken<'_> {
    MintedToken {
        token: SecretText::Borrowed(minted.secret.expose()),
        replaced: None,
        info: TokenInfo::of(&minted.record),
    }
}

/// POST /api/tokens/{id}/rotate  `{overlap_seconds?}` — a replacement
/// with the same grants; the old token works until the overlap ends.
pub(super) async fn rotate_token<S, B>(id: String, state: State, ctx: Ctx, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    respond(&state, &ctx, async {
        let (caller, body) = state
            .caller_and_body(&ctx, body, Scope::Admin, Action::TokenRotate, true)
            .await?;
        let req: RotateToken = extract::body(body, extract::ROTATE_TOKEN)?;
        let rotated = state
            .vault()
            .rotate_token(
                &AppState::origin(&ctx),
                Some(&caller),
                &id,
                req.overlap_seconds,
            )
            .await?;
        let answer = MintedToken {
            replaced: Some(TokenInfo::of(&rotated.old)),
            ..with_secret(&rotated.new)
        };
        Ok::<_, ApiError>(ctx.json(StatusCode::OK, &answer))
    })
    .await
}

/// DELETE /api/tokens/{id}
pub(super) async fn revoke_token(id: String, state: State, ctx: Ctx) -> Response {
    respond(&state, &ctx, async {
        let caller = admin_caller(&state, &ctx, Action::TokenRevoke).await?;
        let rec = state
            .vault()
            .revoke_token(&AppState::origin(&ctx), Some(&caller), &id)
            .await?;
        Ok::<_, ApiError>(ctx.json(
            StatusCode::OK,
            &Done {
                id: rec.id.to_string(),
                status: "revoked".into(),
            },
        ))
    })
    .await
}

/// POST /api/admin/rotate — re-encrypt everything under the newest key.
pub(super) async fn rotate(state: State, ctx: Ctx) -> Response {
    respond(&state, &ctx, async {
        let caller =
            whole_store_caller(&state, &ctx, Action::Rotate, EveryProvider::Rotation).await?;
        let report = state.core.rotate(&AppState::origin(&ctx), &caller).await?;
        Ok::<_, ApiError>(ctx.json(StatusCode::OK, &report))
    })
    .await
}

/// POST /api/admin/reload — read the keyring again (as SIGHUP does).
pub(super) async fn reload(state: State, ctx: Ctx) -> Response {
    respond(&state, &ctx, async {
        let caller =
            whole_store_caller(&state, &ctx, Action::Reload, EveryProvider::Reload).await?;
        let ev = state.event(&ctx, Action::Reload, Some(&caller), Outcome::Success);
        let report = state.core.reload(ev).await.map_err(|e| match e {
            ReloadError::Refused(r) => ApiError::from(r),
            other => ApiError::conflict(super::refusal_text::reload_refused(&other)),
        })?;
        Ok::<_, ApiError>(ctx.json(StatusCode::OK, &report))
    })
    .await
}

/// GET /api/admin/backup — streams one consistent snapshot of the store.
///
/// Writes are held back only while the snapshot is copied to a private
/// temporary file (local disk speed), not while a slow client downloads.
pub(super) async fn backup(state: State, ctx: Ctx) -> Response {
    respond(&state, &ctx, async {
        let caller =
            whole_store_caller(&state, &ctx, Action::Backup, EveryProvider::Backup).await?;
        let (file, guard) = state.core.backup(&AppState::origin(&ctx), &caller).await?;
        let mut resp = super::stream::stream_blocking(move |out| {
            let _guard = guard;
            let mut file = file;
            std::io::Seek::rewind(&mut file)?;
            std::io::copy(&mut file, out).map(|_| ())
        });
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/octet-stream"),
        );
        Ok::<_, ApiError>(ctx.finish(resp))
    })
    .await
}
