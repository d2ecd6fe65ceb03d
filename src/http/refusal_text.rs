//! The words of the vault's refusals as the HTTP API answers them: the
//! `detail` of each [`Refusal`], naming the routes that help and
//! `Retry-After`. Each says what happened, then what to do; none holds a
//! secret. The status of each is in `error.rs`.
//!
//! Not for: the status mapping (`error.rs`), or a terminal's wording
//! (`cli::refusal`).

use crate::duration::MAX_TTL_SECONDS;
use crate::vault::TokenError;
use crate::vault::{
    Conflict, Denied, EveryProvider, Invalid, Missing, Refusal, ReloadError, ReloadRefused,
    Removed, Tampered, Unauthenticated, Unfinished, MAX_API_KEY,
};

/// The detail of a missing key.
const NO_SUCH_KEY: &str = "no key with this id: list keys with GET /api/keys";

/// The `detail` of `refusal`.
pub(crate) fn detail(refusal: &Refusal) -> String {
    match refusal {
        Refusal::RateLimited(secs) => {
            format!("too many reveals from this address: retry in {secs} s (see Retry-After)")
        }
        Refusal::TooManyRefusals(secs) => format!(
            "this token was refused too often in a short time, so further requests it makes that \
             would be refused are answered 429: retry in {secs} s (see Retry-After), and check \
             what the token may do (GET /api/whoami)"
        ),
        Refusal::TooManyRecords(secs) => format!(
            "this token made too many audited requests in a short time (its record budget), so \
             this one was not done: retry in {secs} s (see Retry-After)"
        ),
        Refusal::Unauthenticated(why) => unauthenticated(*why).to_string(),
        Refusal::TokenExpired { at_us, rotated } => {
            let at = crate::time::to_rfc3339(*at_us);
            if *rotated {
                format!(
                    "this token was rotated and its overlap window ended at {at}: use its \
                     replacement, or ask an admin for a new one (keyhold token create or rotate)"
                )
            } else {
                format!(
                    "this token expired at {at}: ask an admin for a new one (keyhold token create \
                     or rotate)"
                )
            }
        }
        Refusal::TamperedToken => "this token's stored record failed its integrity check (it \
             was changed outside keyhold) and is refused: tell the operator to run `keyhold \
             check`"
            .into(),
        Refusal::Forbidden(denied) => forbidden(denied),
        Refusal::NotFound(missing) | Refusal::Beyond(missing) => not_found(missing),
        Refusal::Deleted(removed) => deleted(*removed),
        Refusal::Expired => {
            "this key has expired (its ttl_seconds ran out): store a new one".into()
        }
        Refusal::DecryptFailed => "the stored key does not decrypt with this server's keyring \
             (its Fernet key is not in FERNET_KEYS): tell the operator; `keyhold check` lists \
             such keys"
            .into(),
        Refusal::TamperedRecord(what) => tampered(*what).into(),
        Refusal::Invalid(invalid) => self::invalid(invalid),
        Refusal::Conflict(conflict) => self::conflict(conflict),
        Refusal::AuditUnavailable => "the audit log cannot be written right now, so the request \
             was not served; retry shortly, and tell the operator (check disk space and \
             `/healthz`)"
            .into(),
        Refusal::Unavailable(what) => unfinished(*what).into(),
        Refusal::Storage => {
            "storage is unavailable right now; retry shortly and tell the operator".into()
        }
    }
}

fn unauthenticated(why: Unauthenticated) -> &'static str {
    match why {
        Unauthenticated::Missing => {
            "missing Authorization header: send `Authorization: Bearer <token>` (make a token \
             with `keyhold token create`)"
        }
        Unauthenticated::Several => {
            "more than one Authorization header: send exactly one `Authorization: Bearer <token>`"
        }
        Unauthenticated::Unreadable => {
            "the Authorization header is not readable text: send `Authorization: Bearer <token>`"
        }
        Unauthenticated::NotBearer => {
            "unsupported Authorization scheme: send `Authorization: Bearer <token>`"
        }
        Unauthenticated::Empty => "empty bearer token: send `Authorization: Bearer <token>`",
        Unauthenticated::UnknownToken => {
            "invalid or revoked token: check the token, or ask an admin for a new one"
        }
    }
}

fn forbidden(denied: &Denied) -> String {
    let whole_store = |what: &str| {
        format!(
            "this token is limited to some providers, and {what} covers every provider's keys: \
             use an admin token without a provider limit"
        )
    };
    match denied {
        Denied::MissingScope(scope) => {
            format!("this token lacks the `{scope}` scope: use a token whose role grants it")
        }
        Denied::OtherProvider { provider } => {
            format!("this token is limited to other providers than `{provider}`")
        }
        Denied::BroaderToken { providers } => format!(
            "this token is limited to the providers {}: a token it creates must be limited to \
             some of them (set `providers`)",
            providers.join(", ")
        ),
        Denied::EveryProvider(EveryProvider::Rotation) => whole_store("a rotation"),
        Denied::EveryProvider(EveryProvider::Reload) => whole_store("a reload"),
        Denied::EveryProvider(EveryProvider::Backup) => whole_store("a backup"),
        Denied::EveryProvider(EveryProvider::AuditLog) => {
            "this token is limited to some providers, and the audit log covers every provider: \
             read it with an auditor token without a provider limit"
                .into()
        }
        Denied::EveryProvider(EveryProvider::Metrics) => {
            "this token is limited to some providers, and the metrics cover every provider: read \
             them with an unlimited metrics or admin token"
                .into()
        }
    }
}

fn not_found(missing: &Missing) -> String {
    match missing {
        Missing::Key => NO_SUCH_KEY.into(),
        Missing::VersionNotANumber => "query parameter `version` must be a version number (1, 2, \
             ...): list them with GET /api/keys/{id}/versions"
            .into(),
        Missing::VersionInRecoveryWindow { version } => format!(
            "version {version} of this key was pushed past the number of versions kept and is in \
             the recovery window: not revealable; an admin can put it back with POST \
             /api/keys/{{id}}/versions/{version}/restore"
        ),
        Missing::VersionNotKept { version, kept } => format!(
            "version {version} of this key is not kept (kept: {}); list them with GET \
             /api/keys/{{id}}/versions",
            numbers(kept)
        ),
        Missing::ProviderKey {
            provider,
            name,
            limited,
        } => {
            let name = name.as_ref().map(|n| format!("{n:?}"));
            match (name, limited) {
                (None, false) => {
                    format!("no key stored for provider `{provider}`: add one with POST /api/keys")
                }
                (Some(n), false) => format!(
                    "no live key named {n} for provider `{provider}`: list keys with GET \
                     /api/keys?provider={provider}"
                ),
                (n, true) => format!(
                    "no key{} you may see for provider `{provider}`: this token reaches only \
                     some providers (GET /api/whoami lists them); if the key should be there, \
                     ask an admin",
                    n.map_or(String::new(), |n| format!(" named {n}"))
                ),
            }
        }
        Missing::VersionNotInRecoveryWindow { version } => format!(
            "version {version} of this key is not in the recovery window (GET \
             /api/keys/{{id}}/versions lists each version and its state)"
        ),
        Missing::Token { id_or_name } => format!(
            "{}: list them with `keyhold token list`",
            TokenError::NotFound(id_or_name.clone())
        ),
    }
}

fn deleted(removed: Removed) -> String {
    match removed {
        Removed::Key => "this key is deleted: POST /api/keys/{id}/restore brings it back within \
             the recovery window (GET /api/keys?deleted=true lists deleted keys)"
            .into(),
        Removed::KeyPastRecovery => "this key's recovery window has ended: it is being \
             destroyed and cannot be restored; store the key again with POST /api/keys"
            .into(),
        Removed::VersionPastRecovery { version } => format!(
            "version {version}'s recovery window has ended: it is being destroyed and cannot be \
             restored"
        ),
    }
}

/// The words of a record that failed its integrity check.
fn tampered(what: Tampered) -> &'static str {
    match what {
        Tampered::Key => {
            "the stored record of this key failed its integrity check (it was changed outside \
             keyhold) and is refused: tell the operator to run `keyhold check`"
        }
        Tampered::KeyInList => {
            "a stored key record failed its integrity check (it was changed outside keyhold), so \
             the list is refused: tell the operator to run `keyhold check`"
        }
        Tampered::Token => {
            "a stored token record failed its integrity check (it was changed outside keyhold), \
             so this is refused: tell the operator to run `keyhold check`"
        }
    }
}

fn invalid(invalid: &Invalid) -> String {
    match invalid {
        Invalid::Provider => "field `provider` must match [a-z0-9][a-z0-9_.-]{0,63} (for example \
             `claude` or `gemini`)"
            .into(),
        Invalid::KeyName(why) => format!("field `key_name` {why}"),
        Invalid::ApiKeySize => format!(
            "field `api_key` must be 1 byte to {} KiB",
            MAX_API_KEY / 1024
        ),
        Invalid::KeyTtl => {
            format!("field `ttl_seconds` must be a whole number from 1 to {MAX_TTL_SECONDS}")
        }
        Invalid::TokenTtl => format!(
            "field `ttl_seconds` must be a whole number from 1 to {MAX_TTL_SECONDS} (10 years)"
        ),
        Invalid::Overlap => format!(
            "field `overlap_seconds` must be a whole number from 0 to {MAX_TTL_SECONDS} (0: the \
             old token stops now)"
        ),
        Invalid::ProviderFilter => {
            "query parameter `provider` must match [a-z0-9][a-z0-9_.-]{0,63}".into()
        }
        Invalid::TokenName { name } => TokenError::InvalidName(name.clone()).to_string(),
        Invalid::TokenProvider { provider } => {
            TokenError::InvalidProvider(provider.clone()).to_string()
        }
        Invalid::LimitedAuditor => TokenError::LimitedAuditor.to_string(),
        Invalid::Request => "the request is invalid: GET /openapi.json describes each route's \
             parameters and body"
            .into(),
    }
}

fn conflict(conflict: &Conflict) -> String {
    match conflict {
        Conflict::KeyNotDeleted => "this key is not deleted: there is nothing to restore".into(),
        Conflict::RecoveryWindowFull {
            held,
            kept,
            in_window,
            bytes,
            until_us,
        } => format!(
            "this key holds {held} versions ({kept} kept, {in_window} in the recovery window, \
             {bytes} bytes there), and its recovery window holds no more: no new version until \
             {}, or until an admin purges the key (DELETE /api/keys/{{id}}?purge=true)",
            until_us.map_or_else(
                || "versions leave the recovery window".to_string(),
                |t| format!(
                    "the oldest in the recovery window is destroyed ({})",
                    crate::time::to_rfc3339(t)
                )
            )
        ),
        Conflict::SeveralLiveTokens { name, ids } => format!(
            "{} live tokens are named `{name}` (a rotation's overlap): revoke each by its id ({})",
            ids.len(),
            ids.iter()
                .map(|id| id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Conflict::TokenNameTaken { name } => TokenError::NameTaken(name.clone()).to_string(),
        Conflict::TokenRevoked { name } => TokenError::AlreadyRevoked(name.clone()).to_string(),
        Conflict::TokenRotated { name, id, to } => TokenError::AlreadyRotated {
            name: name.clone(),
            id: *id,
            to: *to,
        }
        .to_string(),
        Conflict::UnknownStoredRole { role } => TokenError::StoredRole(role.clone()).to_string(),
        Conflict::AlreadyInitialised { location } => {
            format!("the data directory {location} is already initialised; nothing was changed")
        }
        Conflict::MaintenanceRunning => {
            "a rotation, backup or reload is already running: wait for it to finish".into()
        }
    }
}

fn unfinished(what: Unfinished) -> &'static str {
    match what {
        Unfinished::ExportInterrupted => "the export was interrupted; retry",
        Unfinished::PageNotEncoded => "the page could not be encoded; retry",
        Unfinished::CountInterrupted => "the count was interrupted; retry",
        Unfinished::CountFailed => "the count failed; retry",
        Unfinished::VerifyInterrupted => "verification was interrupted; retry",
        Unfinished::RotationInterrupted => "the rotation was interrupted; run it again",
        Unfinished::BackupInterrupted => "the backup was interrupted; retry",
    }
}

/// Why a reload (SIGHUP or `POST /api/admin/reload`) did not happen.
pub(crate) fn reload_refused(e: &ReloadError) -> String {
    match e {
        ReloadError::Busy => conflict(&Conflict::MaintenanceRunning),
        ReloadError::Development => "a --dev server's keyring is a random key held in memory: \
             there is nothing to reload"
            .into(),
        ReloadError::Keyring(e) => {
            format!("the keyring could not be read again, so the server keeps its keyring: {e}")
        }
        ReloadError::StillNeeded(still) => {
            let fix = match still {
                ReloadRefused::StillNeeded {
                    retired_in: Some(path),
                    ..
                } => format!(
                    "the keys it needs are retired in the key file: put them back with `keyhold \
                     keyring unretire --key-file {}` and reload again, then finish the rotation \
                     (`keyhold rotate --remote`, or POST /api/admin/rotate) before `keyhold \
                     keyring retire`",
                    path.display()
                ),
                ReloadRefused::StillNeeded {
                    retired_in: None, ..
                } => "put the old key back in the key file (after the new one), reload, run the \
                      rotation (`keyhold rotate --remote`, or POST /api/admin/rotate), then \
                      retire the old key with `keyhold keyring retire` and reload again"
                    .to_string(),
                ReloadRefused::Store(_) => return still.to_string(),
            };
            format!("{still}: {fix}")
        }
        ReloadError::Interrupted => {
            "the reload was interrupted; the server keeps its keyring".into()
        }
        ReloadError::Refused(r) => format!("{} (the server keeps its keyring)", detail(r)),
    }
}

/// Version numbers as a list: `1, 2, 3`.
fn numbers(n: &[u32]) -> String {
    n.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
