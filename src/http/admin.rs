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
use crate::audit::{Action, Outcome};
use crate::vault::TokenRequest;
use crate::wire::{Done, MintedToken, NewToken, ReloadReport, RotateToken, SecretText, TokenInfo};

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
    what: &str,
) -> Result<Caller, ApiError> {
    let caller = admin_caller(state, ctx, action).await?;
    state
        .vault()
        .require_whole_store(&AppState::origin(ctx), &caller, action, what)
        .await?;
    Ok(caller)
}

/// GET /api/tokens — a provider-limited admin sees only the tokens that
/// reach no further than itself.
pub(super) async fn list_tokens(state: State, ctx: Ctx) -> Response {
    respond(&ctx, async {
        let caller = state
            .authorize(&ctx, Scope::Admin, Action::TokenList)
            .await?;
        let out: Vec<TokenInfo> = state
            .vault()
            .list_tokens(Some(&caller))?
            .iter()
            .map(TokenInfo::listed)
            .collect();
        Ok::<_, ApiError>(ctx.json(StatusCode::OK, &out))
    })
    .await
}

/// GET /api/tokens/{id}
pub(super) async fn get_token(id: String, state: State, ctx: Ctx) -> Response {
    respond(&ctx, async {
        let caller = state
            .authorize(&ctx, Scope::Admin, Action::TokenList)
            .await?;
        let rec = state.vault().find_token(Some(&caller), &id)?;
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
    respond(&ctx, async {
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
    respond(&ctx, async {
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
    respond(&ctx, async {
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
    respond(&ctx, async {
        let caller = whole_store_caller(&state, &ctx, Action::Rotate, "a rotation").await?;
        let Ok(_guard) = state.maintenance.try_lock() else {
            return Err(ApiError::conflict(
                "a rotation or backup is already running: wait for it to finish",
            ));
        };
        let st = state.clone();
        let name = caller.name.clone();
        // One keyring for the whole rotation, whatever a reload does meanwhile.
        let ring = state.keyring.load();
        let rotated = crate::blocking::run(move || {
            crate::vault::rotate_store(
                &st.store,
                &ring,
                st.audit.log(),
                &name,
                std::time::Duration::ZERO,
                |_| {},
            )
        })
        .await
        .map_err(|_| ApiError::unavailable("the rotation was interrupted; run it again"))??;
        state
            .vault()
            .record_rotation(&AppState::origin(&ctx), Some(&caller), &rotated)
            .await?;
        Ok::<_, ApiError>(ctx.json(StatusCode::OK, &rotated.report))
    })
    .await
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
    #[error("{}", .0.detail)]
    Limited(super::error::ApiError),
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
    let new = crate::blocking::run(move || {
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
    state.record(ev, vec![]).await.map_err(|e| match e.status {
        http::StatusCode::TOO_MANY_REQUESTS => ReloadError::Limited(e),
        _ => ReloadError::Audit,
    })?;
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
pub(super) async fn reload(state: State, ctx: Ctx) -> Response {
    respond(&ctx, async {
        let caller = whole_store_caller(&state, &ctx, Action::Reload, "a reload").await?;
        let ev = state.event(&ctx, Action::Reload, Some(&caller), Outcome::Success);
        let report = reload_keyring(&state, ev).await.map_err(|e| match e {
            ReloadError::Audit => ApiError::audit_unavailable(),
            ReloadError::Limited(e) => e,
            ReloadError::Refused(crate::ops::reload::ReloadRefused::Store(e)) => {
                ApiError::storage(&e)
            }
            other => ApiError::conflict(other.to_string()),
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
    respond(&ctx, async {
        let caller = whole_store_caller(&state, &ctx, Action::Backup, "a backup").await?;
        let guard = state.maintenance.clone().try_lock_owned().map_err(|_| {
            ApiError::conflict("a rotation or backup is already running: wait for it to finish")
        })?;
        let ev = state.event(&ctx, Action::Backup, Some(&caller), Outcome::Success);
        state.record(ev, vec![]).await?;
        let st = state.clone();
        let file = crate::blocking::run(
            move || -> Result<std::fs::File, crate::ops::backup::BackupError> {
                let file = private_temp_file()?;
                st.audit.log().with_writes_paused(|| {
                    crate::ops::backup::write_backup(&st.store, &st.keyring.load(), &file)
                })?;
                Ok(file)
            },
        )
        .await
        .map_err(|_| ApiError::unavailable("the backup was interrupted; retry"))?
        .map_err(|e| ApiError::storage(&e))?;
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
