//! Handlers of the key routes: create, list, delete, and the two reveals.
//! Each extracts what the request says, calls the vault core
//! (`crate::vault`), and presents its answer; the rules — the audit-first
//! reveal, the field rules, the provider limit — are the core's.

use bytes::Buf;
use futures_util::Stream;
use http::StatusCode;
use serde::Serialize;
use warp::reply::Response;

use super::context::{secret_json_response, with_rate_headers, Ctx};
use super::error::ApiError;
use super::extract::{self, ListQuery, NewKeyBody};
use super::{AppState, State};
use crate::access::Scope;
use crate::audit::Action;
use crate::store::KeyRecord;
use crate::time::to_rfc3339;
use crate::vault::{NewKey, RevealRequest, Target};

/// Key metadata as answered (never ciphertext or plaintext).
#[derive(Debug, Serialize)]
pub(super) struct KeyMeta {
    pub id: String,
    pub provider: String,
    pub key_name: String,
    pub created_at: String,
    pub last_used: Option<String>,
    pub expires_at: Option<String>,
}

impl KeyMeta {
    fn of(rec: &KeyRecord, last_used: Option<i64>) -> KeyMeta {
        KeyMeta {
            id: rec.id.to_string(),
            provider: rec.provider.clone(),
            key_name: rec.key_name.clone(),
            created_at: to_rfc3339(rec.created_at_us),
            last_used: last_used.map(to_rfc3339),
            expires_at: rec.expires_at_us.map(to_rfc3339),
        }
    }
}

/// POST /api/keys
pub(super) async fn create<S, B>(state: State, ctx: Ctx, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    match create_inner(&state, &ctx, body).await {
        Ok(r) => r,
        Err(e) => ctx.error(&e),
    }
}

async fn create_inner<S, B>(state: &State, ctx: &Ctx, body: S) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    // Authentication and scope come before the body is read: a refused
    // upload costs no buffer (its body is drained and dropped, or its
    // stream reset).
    let origin = AppState::origin(ctx);
    let vault = state.vault();
    let checked = match state.authenticate(ctx).await {
        Ok(caller) => vault
            .require(&origin, &caller, Scope::KeysWrite, Action::KeyCreate)
            .await
            .map(|()| caller)
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let caller = match checked {
        Ok(c) => c,
        Err(e) => {
            ctx.discard_body(body).await;
            return Err(e);
        }
    };
    let permit = state.body_permit().await?;
    let body = ctx.read_json_body(body).await?;
    drop(permit);
    let new: NewKeyBody = extract::body(body, extract::NEW_KEY)?;
    let new = NewKey::from(new);
    let record = vault.create_key(&origin, &caller, new).await?;
    state.gauges.add_keys(1);
    Ok(ctx.json(StatusCode::OK, &KeyMeta::of(&record, None)))
}

/// GET /api/keys?provider=
pub(super) async fn list(state: State, ctx: Ctx, query: String) -> Response {
    match list_inner(&state, &ctx, &query).await {
        Ok(r) => r,
        Err(e) => ctx.error(&e),
    }
}

async fn list_inner(state: &State, ctx: &Ctx, query: &str) -> Result<Response, ApiError> {
    let caller = state.authenticate(ctx).await?;
    super::require(&caller, Scope::KeysList)?;
    let q: ListQuery = extract::query(query)?;
    let keys = state
        .vault()
        .list_keys(&AppState::origin(ctx), &caller, q.provider.as_deref())
        .await?;
    let out: Vec<KeyMeta> = keys.iter().map(|(k, used)| KeyMeta::of(k, *used)).collect();
    Ok(ctx.json(StatusCode::OK, &out))
}

/// Parses a query string into pairs, refusing malformed encodings.
pub(crate) fn form_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .map_err(|_| ApiError::bad_request("the query string is malformed"))
}

/// DELETE /api/keys/{id}
pub(super) async fn delete(id: String, state: State, ctx: Ctx) -> Response {
    match delete_inner(&state, &ctx, &id).await {
        Ok(r) => r,
        Err(e) => ctx.error(&e),
    }
}

async fn delete_inner(state: &State, ctx: &Ctx, id: &str) -> Result<Response, ApiError> {
    let origin = AppState::origin(ctx);
    let vault = state.vault();
    let caller = state.authenticate(ctx).await?;
    vault
        .require(&origin, &caller, Scope::KeysWrite, Action::KeyDelete)
        .await?;
    let id = vault.delete_key(&origin, &caller, id).await?;
    state.gauges.add_keys(-1);
    Ok(ctx.json(
        StatusCode::OK,
        &serde_json::json!({"status": "deleted", "id": id.to_string()}),
    ))
}

/// The answer of a successful reveal.
#[derive(Serialize)]
struct Revealed<'a> {
    id: String,
    provider: &'a str,
    key_name: &'a str,
    api_key: &'a str,
}

/// GET /api/keys/{id}
pub(super) async fn reveal_by_id(id: String, state: State, ctx: Ctx) -> Response {
    reveal(state, ctx, Target::Id(id)).await
}

/// GET /api/providers/{provider}/key
pub(super) async fn reveal_newest(provider: String, state: State, ctx: Ctx) -> Response {
    reveal(state, ctx, Target::NewestOf(provider)).await
}

/// A reveal: the edge resolves the client (in `ctx`) and asks the limiter;
/// the vault does the rest, audit-first; the answer carries the limiter's
/// headers whatever it is.
async fn reveal(state: State, ctx: Ctx, target: Target) -> Response {
    // A limit shared through the database that cannot be read refuses
    // the reveal (503) rather than let it through unlimited.
    let decision = match state.limiter.decide(ctx.client_key()).await {
        Ok(d) => d,
        Err(e) => return ctx.error(&ApiError::storage(&e)),
    };
    let note = |name: &str| ctx.set_caller(name);
    let req = RevealRequest {
        origin: AppState::origin(&ctx),
        token: ctx
            .bearer()
            .map_err(|e| crate::vault::Refusal::Unauthenticated(e.detail)),
        target,
        verdict: if decision.allowed {
            Ok(())
        } else {
            Err(decision.retry_after_secs)
        },
        purpose: purpose(&ctx),
        on_caller: Some(&note),
    };
    let resp = match state.vault().reveal(req).await {
        Ok(key) => {
            // Borrowed, not copied, when the key is UTF-8 (it always is
            // when it came through the API).
            let api_key = String::from_utf8_lossy(key.api_key.expose());
            let body = Revealed {
                id: key.id.to_string(),
                provider: &key.provider,
                key_name: &key.key_name,
                api_key: &api_key,
            };
            let resp = secret_json_response(StatusCode::OK, &body, api_key.len());
            ctx.finish(resp)
        }
        Err(refusal) => ctx.error(&ApiError::from(refusal)),
    };
    with_rate_headers(resp, &decision)
}

/// What `exec` (or another client) says the key is for.
fn purpose(ctx: &Ctx) -> Option<String> {
    let v = ctx.headers.get("x-keyhold-purpose")?.to_str().ok()?;
    let clean: String = v.chars().filter(|c| !c.is_control()).take(200).collect();
    (!clean.is_empty()).then_some(clean)
}
