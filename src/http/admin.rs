//! Handlers of the admin token routes (scope `admin`).

use bytes::Buf;
use futures_util::Stream;
use http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use warp::reply::Response;

use super::context::Ctx;
use super::error::ApiError;
use super::keys::string_field;
use super::{require, State};
use crate::access::{Caller, Role, Scope};
use crate::audit::{Action, Outcome};
use crate::store::TokenRecord;
use crate::time::to_rfc3339;
use crate::tokens::{self, TokenError};

/// A token as listed (never the secret).
#[derive(Debug, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: String,
    pub scopes: Vec<&'static str>,
    pub providers: Option<Vec<String>>,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

impl TokenInfo {
    pub fn of(r: &TokenRecord) -> TokenInfo {
        TokenInfo {
            id: r.id.to_string(),
            name: r.name.clone(),
            role: r.role.clone(),
            scopes: r.scopes.iter().map(|s| s.as_str()).collect(),
            providers: r.providers.clone(),
            created_at: to_rfc3339(r.created_at_us),
            revoked_at: r.revoked_at_us.map(to_rfc3339),
        }
    }
}

fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::InvalidName(_) | TokenError::InvalidProvider(_) => {
            ApiError::invalid(e.to_string())
        }
        TokenError::NameTaken(_) | TokenError::AlreadyRevoked(_) => {
            ApiError::conflict(e.to_string())
        }
        TokenError::NotFound(_) => ApiError::not_found(e.to_string()),
        TokenError::Random(_) | TokenError::Store(_) => ApiError::storage(&e),
    }
}

async fn admin_caller(state: &State, ctx: &Ctx, action: Action) -> Result<Caller, ApiError> {
    let caller = state.authenticate(ctx)?;
    if let Err(e) = require(&caller, Scope::Admin) {
        if action != Action::Init {
            let ev = state.event(ctx, action, Some(&caller), Outcome::Forbidden);
            state.audit(ev, vec![]).await?;
        }
        return Err(e);
    }
    Ok(caller)
}

/// Refuses a provider-limited caller an operation on the whole store
/// (rotation, backup), recording the refusal.
async fn whole_store_caller(
    state: &State,
    ctx: &Ctx,
    action: Action,
    what: &str,
) -> Result<Caller, ApiError> {
    let caller = admin_caller(state, ctx, action).await?;
    if caller.is_limited() {
        let mut ev = state.event(ctx, action, Some(&caller), Outcome::Forbidden);
        ev.detail = Some("provider-limited token".into());
        state.audit(ev, vec![]).await?;
        return Err(ApiError::forbidden(format!(
            "this token is limited to some providers, and {what} covers every provider's keys: \
             use an admin token without a provider limit"
        )));
    }
    Ok(caller)
}

/// A token beyond the caller's providers is answered like a missing one.
fn token_beyond(id: &str) -> ApiError {
    token_error(TokenError::NotFound(id.chars().take(64).collect()))
}

/// GET /api/tokens — a provider-limited admin sees only the tokens that
/// reach no further than itself.
pub async fn list_tokens(state: State, ctx: Ctx) -> Response {
    let res = async {
        let caller = state.authenticate(&ctx)?;
        require(&caller, Scope::Admin)?;
        let all = state
            .store
            .list_tokens()
            .map_err(|e| ApiError::storage(&e))?;
        let out: Vec<TokenInfo> = all
            .iter()
            .filter(|(_, r)| caller.covers(r.providers.as_deref()))
            .map(|(_, r)| TokenInfo::of(r))
            .collect();
        Ok::<_, ApiError>(ctx.json(StatusCode::OK, &out))
    }
    .await;
    res.unwrap_or_else(|e| ctx.error(&e))
}

/// GET /api/tokens/{id}
pub async fn get_token(id: String, state: State, ctx: Ctx) -> Response {
    let res = async {
        let caller = state.authenticate(&ctx)?;
        require(&caller, Scope::Admin)?;
        let (_, rec) = tokens::find(&state.store, &id).map_err(token_error)?;
        if !caller.covers(rec.providers.as_deref()) {
            return Err(token_beyond(&id));
        }
        Ok::<_, ApiError>(ctx.json(StatusCode::OK, &TokenInfo::of(&rec)))
    }
    .await;
    res.unwrap_or_else(|e| ctx.error(&e))
}

/// POST /api/tokens  `{name, role, providers?}`
pub async fn create_token<S, B>(state: State, ctx: Ctx, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let res = async {
        // Authenticated and authorised before the body is read.
        let caller = match admin_caller(&state, &ctx, Action::TokenCreate).await {
            Ok(c) => c,
            Err(e) => {
                ctx.discard_body(body).await;
                return Err(e);
            }
        };
        let permit = state.body_permit().await?;
        let body = ctx.read_json_body(body).await?;
        drop(permit);
        let obj = body.as_object().ok_or_else(|| {
            ApiError::invalid("the body must be a JSON object with name and role")
        })?;
        let name = string_field(obj, "name")?;
        let role: Role =
            string_field(obj, "role")?
                .parse()
                .map_err(|e: crate::access::UnknownRole| {
                    ApiError::invalid(format!("field `role`: {e}"))
                })?;
        let providers = match obj.get("providers") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for it in items {
                    match it {
                        Value::String(s) => out.push(s.clone()),
                        _ => {
                            return Err(ApiError::invalid(
                                "field `providers` must be a list of strings",
                            ))
                        }
                    }
                }
                Some(out)
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    "field `providers` must be a list of strings",
                ))
            }
        };
        let prepared =
            tokens::prepare(&state.store, &name, role, providers).map_err(token_error)?;
        // A limited admin mints nothing broader than itself.
        if !caller.covers(prepared.record.providers.as_deref()) {
            let mut ev = state.event(&ctx, Action::TokenCreate, Some(&caller), Outcome::Forbidden);
            ev.detail = Some(format!(
                "token `{}` would reach beyond the caller's providers",
                prepared.record.name
            ));
            state.audit(ev, vec![]).await?;
            return Err(ApiError::forbidden(format!(
                "this token is limited to the providers {}: a token it creates must be limited to \
                 some of them (set `providers`)",
                caller.providers.as_deref().unwrap_or_default().join(", ")
            )));
        }
        let mut ev = state.event(&ctx, Action::TokenCreate, Some(&caller), Outcome::Success);
        ev.detail = Some(format!(
            "token {} `{}` role {}",
            prepared.record.id, prepared.record.name, prepared.record.role
        ));
        state.audit(ev, vec![prepared.write()]).await?;
        let info = TokenInfo::of(&prepared.record);
        let mut v = serde_json::to_value(&info).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert(
                "token".into(),
                Value::String(prepared.token.secret.expose().to_string()),
            );
        }
        Ok::<_, ApiError>(ctx.json(StatusCode::OK, &v))
    }
    .await;
    res.unwrap_or_else(|e| ctx.error(&e))
}

/// DELETE /api/tokens/{id}
pub async fn revoke_token(id: String, state: State, ctx: Ctx) -> Response {
    let res = async {
        let caller = admin_caller(&state, &ctx, Action::TokenRevoke).await?;
        let (hash, rec) = tokens::find(&state.store, &id).map_err(token_error)?;
        // A broader token is answered like a missing one; the record keeps
        // the truth.
        if !caller.covers(rec.providers.as_deref()) {
            let mut ev = state.event(&ctx, Action::TokenRevoke, Some(&caller), Outcome::Forbidden);
            ev.detail = Some(format!(
                "token {} `{}` reaches beyond the caller's providers",
                rec.id, rec.name
            ));
            state.audit(ev, vec![]).await?;
            return Err(token_beyond(&id));
        }
        let (rec, write) = tokens::revoke(hash, rec).map_err(token_error)?;
        let mut ev = state.event(&ctx, Action::TokenRevoke, Some(&caller), Outcome::Success);
        ev.detail = Some(format!("token {} `{}`", rec.id, rec.name));
        state.audit(ev, vec![write]).await?;
        Ok::<_, ApiError>(ctx.json(
            StatusCode::OK,
            &serde_json::json!({"status": "revoked", "id": rec.id.to_string()}),
        ))
    }
    .await;
    res.unwrap_or_else(|e| ctx.error(&e))
}

/// POST /api/admin/rotate — re-encrypt everything under the newest key.
pub async fn rotate(state: State, ctx: Ctx) -> Response {
    let res = async {
        let caller = whole_store_caller(&state, &ctx, Action::Rotate, "a rotation").await?;
        let Ok(_guard) = state.maintenance.try_lock() else {
            return Err(ApiError::conflict(
                "a rotation or backup is already running: wait for it to finish",
            ));
        };
        let st = state.clone();
        let name = caller.name.clone();
        // One keyring for the whole rotation, whatever a reload does meanwhile.
        let keyring = state.keyring.load();
        let ring = keyring.clone();
        let (report, new_key) = tokio::task::spawn_blocking(move || {
            let report =
                crate::ops::rotate::rotate(&st.store, &ring, std::time::Duration::ZERO, |_| {})
                    .map_err(|e| e.to_string())?;
            let new_key = crate::ops::rotate::rotate_signing_key(st.audit.log(), &ring, &name)
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((report, new_key))
        })
        .await
        .map_err(|_| ApiError::unavailable("the rotation was interrupted; run it again"))?
        .map_err(|e| ApiError::storage(&e))?;
        if let Some(k) = new_key {
            tracing::info!(audit_public_key = %k, "rotation started a new audit signing key");
        }
        let mut ev = state.event(&ctx, Action::Rotate, Some(&caller), Outcome::Success);
        ev.detail = Some(format!(
            "{}; newest key {}",
            report.summary(),
            keyring.fingerprints()[0]
        ));
        state.audit(ev, vec![]).await?;
        Ok::<_, ApiError>(ctx.json(StatusCode::OK, &report))
    }
    .await;
    res.unwrap_or_else(|e| ctx.error(&e))
}

/// What a keyring reload did: the keyring now in use (fingerprints,
/// newest first; never a key) and the one before.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    pub source: String,
    pub fingerprints: Vec<String>,
    pub previous: Vec<String>,
    pub changed: bool,
}

/// Why a reload did not happen; the server keeps its keyring.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("a rotation, backup or reload is already running: wait for it to finish")]
    Busy,
    #[error("a --dev server's keyring is a random key held in memory: there is nothing to reload")]
    Development,
    #[error("the keyring could not be read again, so the server keeps its keyring: {0}")]
    Keyring(#[from] crate::keyring::KeyringError),
    #[error("{0}")]
    Refused(#[from] crate::ops::reload::ReloadRefused),
    #[error("the reload was interrupted; the server keeps its keyring")]
    Interrupted,
    #[error("the reload could not be recorded in the audit log, so the server keeps its keyring")]
    Audit,
}

/// Reads the keyring again from its source (FERNET_KEY_FILE is read
/// again, KEYHOLD_KEY_COMMAND run again; FERNET_KEY(S) cannot change in a
/// running process) and puts it in use, unless something the store
/// needs would no longer open with it. Shared by SIGHUP and
/// `POST /api/admin/reload`; `ev` says who asked and is recorded, durably,
/// before the new keyring is used.
pub async fn reload_keyring(
    state: &super::AppState,
    mut ev: crate::audit::AuditEvent,
) -> Result<ReloadReport, ReloadError> {
    let Ok(_guard) = state.maintenance.try_lock() else {
        return Err(ReloadError::Busy);
    };
    let old = state.keyring.load();
    if *old.source() == crate::keyring::KeySource::Ephemeral {
        return Err(ReloadError::Development);
    }
    let store = state.store.clone();
    let new = tokio::task::spawn_blocking(move || {
        let new = crate::keyring::Keyring::from_env()?;
        crate::ops::reload::check_replacement(&store, &new)?;
        Ok::<_, ReloadError>(new)
    })
    .await
    .map_err(|_| ReloadError::Interrupted)??;
    let report = ReloadReport {
        source: new.source().to_string(),
        fingerprints: new.fingerprints(),
        previous: old.fingerprints(),
        changed: new.fingerprints() != old.fingerprints(),
    };
    ev.action = Action::Reload;
    ev.outcome = Outcome::Success;
    ev.detail = Some(format!(
        "keyring from {}: keys {} (before: {})",
        report.source,
        report.fingerprints.join(","),
        report.previous.join(",")
    ));
    state
        .audit(ev, vec![])
        .await
        .map_err(|_| ReloadError::Audit)?;
    state.keyring.replace(new);
    tracing::info!(
        source = %report.source,
        keys = %report.fingerprints.join(","),
        previous = %report.previous.join(","),
        changed = report.changed,
        "keyring reloaded"
    );
    Ok(report)
}

/// POST /api/admin/reload — read the keyring again (as SIGHUP does).
pub async fn reload(state: State, ctx: Ctx) -> Response {
    let res = async {
        let caller = whole_store_caller(&state, &ctx, Action::Reload, "a reload").await?;
        let ev = state.event(&ctx, Action::Reload, Some(&caller), Outcome::Success);
        let report = reload_keyring(&state, ev).await.map_err(|e| match e {
            ReloadError::Audit => ApiError::audit_unavailable(),
            ReloadError::Refused(crate::ops::reload::ReloadRefused::Store(e)) => {
                ApiError::storage(&e)
            }
            other => ApiError::conflict(other.to_string()),
        })?;
        Ok::<_, ApiError>(ctx.json(StatusCode::OK, &report))
    }
    .await;
    res.unwrap_or_else(|e| ctx.error(&e))
}

/// GET /api/admin/backup — streams one consistent snapshot of the store.
///
/// Writes are held back only while the snapshot is copied to a private
/// temporary file (local disk speed), not while a slow client downloads.
pub async fn backup(state: State, ctx: Ctx) -> Response {
    let res = async {
        let caller = whole_store_caller(&state, &ctx, Action::Backup, "a backup").await?;
        let guard = state.maintenance.clone().try_lock_owned().map_err(|_| {
            ApiError::conflict("a rotation or backup is already running: wait for it to finish")
        })?;
        let ev = state.event(&ctx, Action::Backup, Some(&caller), Outcome::Success);
        state.audit(ev, vec![]).await?;
        let st = state.clone();
        let file = tokio::task::spawn_blocking(move || -> Result<std::fs::File, String> {
            let file = private_temp_file().map_err(|e| e.to_string())?;
            st.audit
                .log()
                .with_writes_paused(|| {
                    crate::ops::backup::write_backup(&st.store, &st.keyring.load(), &file)
                })
                .map_err(|e| e.to_string())?;
            Ok(file)
        })
        .await
        .map_err(|_| ApiError::unavailable("the backup was interrupted; retry"))?
        .map_err(|e| ApiError::storage(&e))?;
        let mut resp = super::stream::stream_blocking(move |out| {
            let _guard = guard;
            let mut file = file;
            std::io::Seek::rewind(&mut file).map_err(|e| e.to_string())?;
            std::io::copy(&mut file, out)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/octet-stream"),
        );
        Ok::<_, ApiError>(ctx.finish(resp))
    }
    .await;
    res.unwrap_or_else(|e| ctx.error(&e))
}

/// A read-write temporary file, mode 0600, already unlinked: it vanishes
/// when closed, whatever happens.
fn private_temp_file() -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = std::env::temp_dir().join(format!("keyhold-backup-{}", uuid::Uuid::new_v4()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}
