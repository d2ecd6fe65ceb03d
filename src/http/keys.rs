//! Handlers of the key routes: create, list, delete, and the two reveals.
//!
//! A reveal is audit-first, in this order: resolve client IP → rate limit
//! → authenticate → authorise → load → check expiry → decrypt → append the
//! audit record (with last_used) durably → answer. Every attempt is
//! recorded whatever its outcome; rate-limited and unauthenticated ones are
//! coalesced.

use bytes::Buf;
use futures_util::Stream;
use http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;
use warp::reply::Response;

use super::context::{secret_json_response, with_rate_headers, Ctx};
use super::error::ApiError;
use super::{require, State};
use crate::access::{valid_provider, Caller, Scope};
use crate::audit::{Action, AuditEvent, Outcome};
use crate::secret::SecretString;
use crate::store::{KeyRecord, Write};
use crate::time::{now_us, to_rfc3339};

/// Largest API key accepted.
pub const MAX_API_KEY: usize = 16 * 1024;
/// Longest key_name, in characters.
pub const MAX_KEY_NAME: usize = 200;
/// Longest ttl_seconds: ten years.
pub const MAX_TTL_SECONDS: i64 = 10 * 365 * 24 * 3600;

/// Key metadata as answered (never ciphertext or plaintext).
#[derive(Debug, Serialize)]
pub struct KeyMeta {
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
pub async fn create<S, B>(state: State, ctx: Ctx, body: S) -> Response
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
    let caller = match state.authenticate(ctx) {
        Ok(c) => c,
        Err(e) => {
            ctx.discard_body(body).await;
            return Err(e);
        }
    };
    if let Err(e) = require(&caller, Scope::KeysWrite) {
        let ev = state.event(ctx, Action::KeyCreate, Some(&caller), Outcome::Forbidden);
        state.audit(ev, vec![]).await?;
        ctx.discard_body(body).await;
        return Err(e);
    }
    let permit = state.body_permit().await?;
    let mut body = ctx.read_json_body(body).await?;
    drop(permit);
    let input = NewKey::from_json(&mut body)?;
    if !caller.may_use_provider(&input.provider) {
        let mut ev = state.event(ctx, Action::KeyCreate, Some(&caller), Outcome::Forbidden);
        ev.provider = Some(input.provider.clone());
        state.audit(ev, vec![]).await?;
        return Err(provider_forbidden(&input.provider));
    }
    let created_at_us = now_us();
    let expires_at_us = match input.ttl_seconds {
        None => None,
        Some(ttl) => Some(
            ttl.checked_mul(1_000_000)
                .and_then(|d| created_at_us.checked_add(d))
                .ok_or_else(|| ApiError::invalid("ttl_seconds is too large"))?,
        ),
    };
    let record = KeyRecord {
        id: Uuid::new_v4(),
        provider: input.provider,
        key_name: input.key_name,
        token: state.keyring.encrypt(input.api_key.expose().as_bytes()),
        created_at_us,
        expires_at_us,
    };
    drop(input.api_key);
    let mut ev = state.event(ctx, Action::KeyCreate, Some(&caller), Outcome::Success);
    ev.key_id = Some(record.id);
    ev.provider = Some(record.provider.clone());
    state.audit(ev, vec![Write::PutKey(record.clone())]).await?;
    state.gauges.add_keys(1);
    Ok(ctx.json(StatusCode::OK, &KeyMeta::of(&record, None)))
}

/// The checked body of a create.
struct NewKey {
    provider: String,
    key_name: String,
    api_key: SecretString,
    ttl_seconds: Option<i64>,
}

impl NewKey {
    fn from_json(body: &mut Value) -> Result<NewKey, ApiError> {
        let obj = body.as_object_mut().ok_or_else(|| {
            ApiError::invalid("the body must be a JSON object with provider, key_name and api_key")
        })?;
        // Take the secret out first so it is not left in the JSON value.
        let api_key = match obj.remove("api_key") {
            Some(Value::String(s)) => SecretString::new(s),
            Some(_) => return Err(ApiError::invalid("field `api_key` must be a string")),
            None => return Err(ApiError::invalid("field `api_key` is required")),
        };
        let provider = string_field(obj, "provider")?;
        let key_name = string_field(obj, "key_name")?;
        if !valid_provider(&provider) {
            return Err(ApiError::invalid(
                "field `provider` must match [a-z0-9][a-z0-9_.-]{0,63} (for example `claude` or `gemini`)",
            ));
        }
        let name_len = key_name.chars().count();
        if name_len == 0 || name_len > MAX_KEY_NAME {
            return Err(ApiError::invalid(format!(
                "field `key_name` must be 1 to {MAX_KEY_NAME} characters"
            )));
        }
        if key_name.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "field `key_name` must not contain control characters",
            ));
        }
        let len = api_key.expose().len();
        if len == 0 || len > MAX_API_KEY {
            return Err(ApiError::invalid(format!(
                "field `api_key` must be 1 byte to {} KiB",
                MAX_API_KEY / 1024
            )));
        }
        let ttl_seconds = match obj.get("ttl_seconds") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_i64() {
                Some(t) if (1..=MAX_TTL_SECONDS).contains(&t) => Some(t),
                _ => {
                    return Err(ApiError::invalid(format!(
                        "field `ttl_seconds` must be a whole number from 1 to {MAX_TTL_SECONDS}"
                    )))
                }
            },
        };
        Ok(NewKey {
            provider,
            key_name,
            api_key,
            ttl_seconds,
        })
    }
}

pub(crate) fn string_field(
    obj: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<String, ApiError> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::invalid(format!(
            "field `{name}` must be a string"
        ))),
        None => Err(ApiError::invalid(format!("field `{name}` is required"))),
    }
}

fn provider_forbidden(provider: &str) -> ApiError {
    ApiError::forbidden(format!(
        "this token is limited to other providers than `{provider}`"
    ))
}

/// GET /api/keys?provider=
pub async fn list(state: State, ctx: Ctx, query: String) -> Response {
    match list_inner(&state, &ctx, &query) {
        Ok(r) => r,
        Err(e) => ctx.error(&e),
    }
}

fn list_inner(state: &State, ctx: &Ctx, query: &str) -> Result<Response, ApiError> {
    let caller = state.authenticate(ctx)?;
    require(&caller, Scope::KeysList)?;
    let mut provider = None;
    for (k, v) in form_pairs(query)? {
        if k == "provider" && !v.is_empty() {
            if !valid_provider(&v) {
                return Err(ApiError::invalid(
                    "query parameter `provider` must match [a-z0-9][a-z0-9_.-]{0,63}",
                ));
            }
            provider = Some(v);
        }
    }
    let keys = state
        .store
        .list_keys(provider.as_deref())
        .map_err(|e| match e {
            crate::store::StoreError::Tampered { .. } => ApiError::tampered(
                StatusCode::CONFLICT,
                "a stored key record failed its integrity check (it was changed outside keyhold), \
                 so the list is refused: tell the operator to run `keyhold check`",
            ),
            e => ApiError::storage(&e),
        })?;
    let mut out = Vec::with_capacity(keys.len());
    for k in keys.iter().filter(|k| caller.may_use_provider(&k.provider)) {
        let used = state
            .store
            .last_used(&k.id)
            .map_err(|e| ApiError::storage(&e))?;
        out.push(KeyMeta::of(k, used));
    }
    Ok(ctx.json(StatusCode::OK, &out))
}

/// Parses a query string into pairs, refusing malformed encodings.
pub(crate) fn form_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .map_err(|_| ApiError::bad_request("the query string is malformed"))
}

/// DELETE /api/keys/{id}
pub async fn delete(id: String, state: State, ctx: Ctx) -> Response {
    match delete_inner(&state, &ctx, &id).await {
        Ok(r) => r,
        Err(e) => ctx.error(&e),
    }
}

async fn delete_inner(state: &State, ctx: &Ctx, id: &str) -> Result<Response, ApiError> {
    let caller = state.authenticate(ctx)?;
    if let Err(e) = require(&caller, Scope::KeysWrite) {
        let ev = state.event(ctx, Action::KeyDelete, Some(&caller), Outcome::Forbidden);
        state.audit(ev, vec![]).await?;
        return Err(e);
    }
    let mut ev = state.event(ctx, Action::KeyDelete, Some(&caller), Outcome::NotFound);
    let found = match Uuid::parse_str(id) {
        Ok(id) => {
            ev.key_id = Some(id);
            state
                .store
                .get_key(&id)
                .map_err(|e| ApiError::storage(&e))?
        }
        Err(_) => None,
    };
    // A key of another provider answers exactly like a missing one (both
    // are recorded, so they take as long); the record keeps the truth.
    let Some(rec) = found else {
        state.audit(ev, vec![]).await?;
        return Err(no_such_key());
    };
    ev.provider = Some(rec.provider.clone());
    if !caller.may_use_provider(&rec.provider) {
        ev.outcome = Outcome::Forbidden;
        state.audit(ev, vec![]).await?;
        return Err(no_such_key());
    }
    ev.outcome = Outcome::Success;
    let id = rec.id;
    state.audit(ev, vec![Write::DeleteKey(rec)]).await?;
    state.gauges.add_keys(-1);
    Ok(ctx.json(
        StatusCode::OK,
        &serde_json::json!({"status": "deleted", "id": id.to_string()}),
    ))
}

fn no_such_key() -> ApiError {
    ApiError::not_found("no key with this id: list keys with GET /api/keys")
}

/// The answer of a successful reveal.
#[derive(Serialize)]
struct Revealed<'a> {
    id: String,
    provider: &'a str,
    key_name: &'a str,
    api_key: &'a str,
}

/// What a reveal asks for.
enum Target {
    Id(String),
    NewestOf(String),
}

/// GET /api/keys/{id}
pub async fn reveal_by_id(id: String, state: State, ctx: Ctx) -> Response {
    reveal(state, ctx, Target::Id(id)).await
}

/// GET /api/providers/{provider}/key
pub async fn reveal_newest(provider: String, state: State, ctx: Ctx) -> Response {
    reveal(state, ctx, Target::NewestOf(provider)).await
}

async fn reveal(state: State, ctx: Ctx, target: Target) -> Response {
    // 1. client IP (in ctx) → 2. rate limit, before anything else. A
    // limit shared through the database that cannot be read refuses the
    // reveal (503) rather than let it through unlimited.
    let decision = match state.limiter.decide(ctx.client_key()).await {
        Ok(d) => d,
        Err(e) => return ctx.error(&ApiError::storage(&e)),
    };
    let mut ev = state.event(&ctx, Action::Reveal, None, Outcome::Success);
    match &target {
        Target::Id(id) => ev.key_id = Uuid::parse_str(id).ok(),
        Target::NewestOf(p) if valid_provider(p) => ev.provider = Some(p.clone()),
        Target::NewestOf(_) => ev.detail = Some("invalid provider name".into()),
    }
    if let Some(purpose) = purpose(&ctx) {
        ev.detail = Some(format!("for {purpose}"));
    }
    if !decision.allowed {
        ev.outcome = Outcome::RateLimited;
        metrics::counter!("keyhold_rate_limited_total").increment(1);
        metrics::counter!("keyhold_reveals_total", "outcome" => Outcome::RateLimited.as_str())
            .increment(1);
        let client = ctx.client_key().to_string();
        state.coalescer.add(&client, ev, now_us());
        let err = ApiError::rate_limited(decision.retry_after_secs);
        return with_rate_headers(ctx.error(&err), &decision);
    }
    let resp = match reveal_allowed(&state, &ctx, target, ev).await {
        Ok(r) => r,
        Err(e) => ctx.error(&e),
    };
    with_rate_headers(resp, &decision)
}

/// What `exec` (or another client) says the key is for.
fn purpose(ctx: &Ctx) -> Option<String> {
    let v = ctx.headers.get("x-keyhold-purpose")?.to_str().ok()?;
    let clean: String = v.chars().filter(|c| !c.is_control()).take(200).collect();
    (!clean.is_empty()).then_some(clean)
}

/// Steps 3 onwards of a reveal, once the limiter let it through. Every
/// return path has written its audit record.
async fn reveal_allowed(
    state: &State,
    ctx: &Ctx,
    target: Target,
    mut ev: AuditEvent,
) -> Result<Response, ApiError> {
    // 3. authenticate
    let caller = match state.authenticate(ctx) {
        Ok(c) => c,
        Err(e) => {
            // Counted like rate-limited attempts (one record per client
            // and second, with a count): a flood of bad or missing tokens
            // cannot fill the disk, and none goes uncounted. A tampered
            // token record was recorded by `authenticate`.
            if e.status == StatusCode::UNAUTHORIZED && !e.tampered {
                ev.outcome = Outcome::Unauthenticated;
                metrics::counter!("keyhold_reveals_total", "outcome" => Outcome::Unauthenticated.as_str())
                    .increment(1);
                state
                    .coalescer
                    .add(&ctx.client_key().to_string(), ev, now_us());
            }
            return Err(e);
        }
    };
    ev.caller = caller.name.clone();
    ev.caller_id = Some(caller.id);
    // 4. authorise
    if let Err(e) = require(&caller, Scope::KeysReveal) {
        ev.outcome = Outcome::Forbidden;
        state.audit(ev, vec![]).await?;
        return Err(e);
    }
    // 5. load (and the provider limit, which needs the record)
    let rec = match load(state, &caller, &target, &mut ev) {
        Ok(rec) => rec,
        Err((outcome, err)) => {
            ev.outcome = outcome;
            state.audit(ev, vec![]).await?;
            return Err(err);
        }
    };
    ev.key_id = Some(rec.id);
    ev.provider = Some(rec.provider.clone());
    // 6. expiry
    let now = now_us();
    if rec.expires_at_us.is_some_and(|e| e <= now) {
        ev.outcome = Outcome::Expired;
        state.audit(ev, vec![]).await?;
        return Err(expired());
    }
    // 7. decrypt
    let opened = match state.keyring.decrypt(&rec.token) {
        Ok(o) => o,
        Err(_) => {
            ev.outcome = Outcome::DecryptFailed;
            state.audit(ev, vec![]).await?;
            return Err(ApiError::conflict(
                "the stored key does not decrypt with this server's keyring (its Fernet key is not in \
                 FERNET_KEYS): tell the operator; `keyhold check` lists such keys",
            ));
        }
    };
    ev.outcome = Outcome::Success;
    let opened_by = format!("key {}", opened.fingerprint);
    ev.detail = Some(match ev.detail.take() {
        Some(d) => format!("{d}; opened by {opened_by}"),
        None => format!("opened by {opened_by}"),
    });
    // 8. audit durably, with last_used, before anything leaves.
    state
        .audit(
            ev,
            vec![Write::TouchKey {
                id: rec.id,
                at_us: now,
            }],
        )
        .await?;
    // 9. answer
    // Borrowed, not copied, when the key is UTF-8 (it always is when it
    // came through the API).
    let api_key = String::from_utf8_lossy(opened.plaintext.expose());
    let body = Revealed {
        id: rec.id.to_string(),
        provider: &rec.provider,
        key_name: &rec.key_name,
        api_key: &api_key,
    };
    let resp = secret_json_response(StatusCode::OK, &body, api_key.len());
    Ok(ctx.finish(resp))
}

fn expired() -> ApiError {
    ApiError::gone("this key has expired (its ttl_seconds ran out): store a new one")
}

fn load(
    state: &State,
    caller: &Caller,
    target: &Target,
    ev: &mut AuditEvent,
) -> Result<KeyRecord, (Outcome, ApiError)> {
    let storage = |e: crate::store::StoreError| match e {
        crate::store::StoreError::Tampered { .. } => (
            Outcome::Tampered,
            ApiError::tampered(
                StatusCode::CONFLICT,
                "the stored record of this key failed its integrity check (it was changed outside \
                 keyhold) and is refused: tell the operator to run `keyhold check`",
            ),
        ),
        e => (Outcome::NotFound, ApiError::storage(&e)),
    };
    match target {
        Target::Id(id) => {
            let Ok(id) = Uuid::parse_str(id) else {
                return Err((Outcome::NotFound, no_such_key()));
            };
            let rec = state
                .store
                .get_key(&id)
                .map_err(storage)?
                .ok_or((Outcome::NotFound, no_such_key()))?;
            // Another provider's key answers like a missing one; the
            // record keeps the truth.
            if !caller.may_use_provider(&rec.provider) {
                ev.key_id = Some(rec.id);
                ev.provider = Some(rec.provider.clone());
                return Err((Outcome::Forbidden, no_such_key()));
            }
            Ok(rec)
        }
        Target::NewestOf(provider) => {
            let none = || {
                ApiError::not_found(format!(
                    "no key stored for provider `{}`: add one with POST /api/keys",
                    provider.chars().take(64).collect::<String>()
                ))
            };
            if !valid_provider(provider) {
                return Err((Outcome::NotFound, none()));
            }
            if !caller.may_use_provider(provider) {
                return Err((Outcome::Forbidden, none()));
            }
            let now = now_us();
            let mut newest_expired = None;
            for item in state.store.provider_keys_newest_first(provider) {
                let rec = item.map_err(storage)?;
                if rec.expires_at_us.is_some_and(|e| e <= now) {
                    newest_expired.get_or_insert(rec);
                    continue;
                }
                return Ok(rec);
            }
            match newest_expired {
                Some(rec) => {
                    ev.key_id = Some(rec.id);
                    Err((Outcome::Expired, expired()))
                }
                None => Err((Outcome::NotFound, none())),
            }
        }
    }
}
