//! Handlers of the key routes: create, list, a new version, versions,
//! delete (soft, or purge), restore, and the three reveals of one key
//! (several at once: `reveal_batch.rs`).
//! Each extracts what the request says, calls the vault core
//! (`crate::vault`), and presents its answer; the rules — the audit-first
//! reveal, the field rules, the provider limit — are the core's.

use std::borrow::Cow;

use bytes::Buf;
use futures_util::Stream;
use http::StatusCode;
use warp::reply::Response;

use super::context::{secret_json_response, with_rate_headers, Ctx};
use super::error::ApiError;
use super::extract::{self, DeleteQuery, ListQuery, RevealQuery};
use super::response::respond;
use super::{AppState, State};
use crate::access::Scope;
use crate::time::to_rfc3339;
use crate::vault::Action;
use crate::vault::{NewKey, NewVersion, RevealRequest, Target};
use crate::wire::{Done, KeyMeta, RevealedKey, SecretText};

/// POST /api/keys
pub(super) async fn create<S, B>(state: State, ctx: Ctx, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    respond(&state, &ctx, async {
        let (state, ctx) = (&state, &ctx);
        let origin = AppState::origin(ctx);
        let vault = state.vault();
        let (caller, body) = state
            .caller_and_body(ctx, body, Scope::KeysWrite, Action::KeyCreate, false)
            .await?;
        let new: crate::wire::NewKey<'static> = extract::body(body, extract::NEW_KEY)?;
        let new = NewKey::from(new);
        let record = vault.create_key(&origin, &caller, new).await?;
        state.gauges.add_keys(1);
        Ok(ctx.json(StatusCode::OK, &state.core.key_meta(&record, None)))
    })
    .await
}

/// PUT /api/keys/{id}: a new version of the key.
pub(super) async fn put<S, B>(id: String, state: State, ctx: Ctx, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    respond(&state, &ctx, async {
        let (state, ctx, id) = (&state, &ctx, id.as_str());
        let origin = AppState::origin(ctx);
        let vault = state.vault();
        let (caller, body) = state
            .caller_and_body(ctx, body, Scope::KeysWrite, Action::KeyPut, false)
            .await?;
        let new: crate::wire::NewVersion<'static> = extract::body(body, extract::NEW_VERSION)?;
        let record = vault
            .put_version(
                &origin,
                &caller,
                id,
                NewVersion::from(new),
                state.core.key_policy().keep_versions,
                state.core.key_policy().recovery_window_us,
            )
            .await?;
        Ok(ctx.json(StatusCode::OK, &state.core.key_meta_used(&record)))
    })
    .await
}

/// GET /api/keys/{id}/versions
pub(super) async fn versions(id: String, state: State, ctx: Ctx) -> Response {
    respond(&state, &ctx, async {
        let caller = state
            .authorize(&ctx, Scope::KeysList, Action::KeyList)
            .await?;
        let rec = state
            .vault()
            .key_versions(&AppState::origin(&ctx), &caller, &id)
            .await?;
        let out = state.core.versions(&rec, &caller);
        Ok::<_, ApiError>(ctx.json(StatusCode::OK, &out))
    })
    .await
}

/// POST /api/keys/{id}/versions/{n}/restore (admin)
pub(super) async fn restore_version(id: String, n: String, state: State, ctx: Ctx) -> Response {
    respond(&state, &ctx, async {
        let origin = AppState::origin(&ctx);
        let vault = state.vault();
        let caller = state.authenticate(&ctx).await?;
        state
            .require(&ctx, &caller, Scope::Admin, Action::KeyRestore)
            .await?;
        let Ok(n) = n.parse::<u32>() else {
            return Err(ApiError::invalid(
                "the version in the path must be a version number (1, 2, ...)",
            ));
        };
        let rec = vault
            .restore_version(
                &origin,
                &caller,
                &id,
                n,
                state.core.key_policy().recovery_window_us,
            )
            .await?;
        Ok::<_, ApiError>(ctx.json(StatusCode::OK, &state.core.versions(&rec, &caller)))
    })
    .await
}

/// POST /api/keys/{id}/restore
pub(super) async fn restore(id: String, state: State, ctx: Ctx) -> Response {
    respond(&state, &ctx, async {
        let origin = AppState::origin(&ctx);
        let vault = state.vault();
        let caller = state.authenticate(&ctx).await?;
        state
            .require(&ctx, &caller, Scope::KeysWrite, Action::KeyRestore)
            .await?;
        let rec = vault
            .restore_key(
                &origin,
                &caller,
                &id,
                state.core.key_policy().recovery_window_us,
            )
            .await?;
        Ok::<_, ApiError>(ctx.json(StatusCode::OK, &state.core.key_meta_used(&rec)))
    })
    .await
}

/// GET /api/keys?provider=
pub(super) async fn list(state: State, ctx: Ctx, query: String) -> Response {
    respond(&state, &ctx, async {
        let (state, ctx, query) = (&state, &ctx, query.as_str());
        let caller = state
            .authorize(ctx, Scope::KeysList, Action::KeyList)
            .await?;
        let q: ListQuery = extract::query(query)?;
        let filter = q.filter()?;
        let keys = state
            .vault()
            .list_keys(&AppState::origin(ctx), &caller, &filter)
            .await?;
        let out: Vec<KeyMeta> = keys
            .iter()
            .map(|(k, used)| state.core.key_meta(k, *used))
            .collect();
        Ok(ctx.json(StatusCode::OK, &out))
    })
    .await
}

/// DELETE /api/keys/{id}[?purge=true]
pub(super) async fn delete(id: String, state: State, ctx: Ctx, query: String) -> Response {
    respond(&state, &ctx, async {
        let (state, ctx, id, query) = (&state, &ctx, id.as_str(), query.as_str());
        let origin = AppState::origin(ctx);
        let vault = state.vault();
        let caller = state.authenticate(ctx).await?;
        let parsed = extract::query::<DeleteQuery>(query)
            .and_then(|q| extract::flag(q.purge.as_deref(), "purge"));
        let purge = match parsed {
            Ok(purge) => purge,
            Err(e) => {
                // A malformed query is answered only to a caller that may
                // delete: a scope refusal comes first, and is recorded.
                state
                    .require(ctx, &caller, Scope::KeysWrite, Action::KeyDelete)
                    .await?;
                return Err(e);
            }
        };
        let id = if purge {
            // Destroying at once skips the recovery window: admins only.
            state
                .require(ctx, &caller, Scope::Admin, Action::KeyPurge)
                .await?;
            let id = vault.purge_key(&origin, &caller, id).await?;
            state.gauges.add_keys(-1);
            // Destroyed at once means off the disk too before the answer.
            state.core.scrub_removed().await;
            id
        } else {
            state
                .require(ctx, &caller, Scope::KeysWrite, Action::KeyDelete)
                .await?;
            // The record stays (restorable) until the window ends: the key
            // count changes when it is destroyed.
            vault.delete_key(&origin, &caller, id).await?
        };
        Ok(ctx.json(
            StatusCode::OK,
            &Done {
                id: id.to_string(),
                status: "deleted".into(),
            },
        ))
    })
    .await
}

/// The answer for a revealed `key`, its plaintext as `api_key` (borrowed,
/// not copied, when the key is UTF-8: it always is when it came through
/// the API).
pub(super) fn revealed<'a>(key: &'a crate::vault::Revealed, api_key: &'a str) -> RevealedKey<'a> {
    RevealedKey {
        id: key.id.to_string(),
        provider: Cow::Borrowed(&key.provider),
        key_name: Cow::Borrowed(&key.key_name),
        api_key: SecretText::Borrowed(api_key),
        version: key.version,
        expires_at: key.expires_at_us.map(to_rfc3339),
    }
}

/// GET /api/keys/{id}[?version=N]
pub(super) async fn reveal_by_id(id: String, state: State, ctx: Ctx, query: String) -> Response {
    // A `version` that is not a version number is refused by the vault,
    // after the limiter and the token, and recorded like any attempt.
    // Most reveals carry no query: skip its parsing on the hot path.
    let version = if query.is_empty() {
        None
    } else {
        match extract::query::<RevealQuery>(&query) {
            Ok(q) => q.version(),
            Err(e) => return ctx.error(&e),
        }
    };
    reveal(state, ctx, Target::Id(id, version)).await
}

/// GET /api/providers/{provider}/key
pub(super) async fn reveal_newest(provider: String, state: State, ctx: Ctx) -> Response {
    reveal(state, ctx, Target::NewestOf(provider)).await
}

/// GET /api/providers/{provider}/keys/{key_name}
pub(super) async fn reveal_named(
    provider: String,
    name: String,
    state: State,
    ctx: Ctx,
) -> Response {
    // warp hands the segment still percent-encoded.
    let name = match percent_encoding::percent_decode_str(&name).decode_utf8() {
        Ok(n) => n.into_owned(),
        Err(_) => {
            return ctx.error(&ApiError::bad_request(
                "the key name in the path is not valid UTF-8 once percent-decoded",
            ))
        }
    };
    reveal(state, ctx, Target::Named(provider, name)).await
}

/// A reveal: the edge resolves the client (in `ctx`) and asks the limiter;
/// the vault does the rest, audit-first; the answer carries the limiter's
/// headers whatever it is.
async fn reveal(state: State, ctx: Ctx, target: Target) -> Response {
    // A limit shared through the database that cannot be read refuses
    // the reveal (503) rather than let it through unlimited.
    let decision = match state.core.limiter().decide(ctx.client_key()).await {
        Ok(d) => d,
        Err(e) => return ctx.error(&ApiError::storage(&e)),
    };
    let note = |name: &str| ctx.set_caller(name);
    let req = RevealRequest {
        origin: AppState::origin(&ctx),
        token: ctx.bearer(),
        target,
        verdict: if decision.allowed {
            Ok(())
        } else {
            Err(decision.retry_after_secs)
        },
        purpose: super::request::purpose(&ctx),
        on_caller: Some(&note),
    };
    let resp = match state.vault().reveal(req).await {
        Ok(key) => {
            let api_key = String::from_utf8_lossy(key.api_key.expose());
            let body = revealed(&key, &api_key);
            let resp = secret_json_response(StatusCode::OK, &body, api_key.len());
            ctx.finish(resp)
        }
        Err(refusal) => ctx.error(&ApiError::from(refusal)),
    };
    with_rate_headers(resp, &decision)
}
