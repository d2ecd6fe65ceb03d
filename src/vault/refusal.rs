//! Why the vault said no: one type for every rule's refusal, with the data
//! that names the rule (which field, which key, which version, until
//! when), never a sentence. It maps once to the audit outcome it is
//! recorded with ([`Refusal::outcome`]); each edge words it for its
//! reader: the HTTP edge as a status and a `detail` naming routes
//! (`http::refusal_text`), the CLI as a message naming commands and an
//! exit code (`cli::refusal`).
//!
//! Not for: prose. No route, header or command is named here.

use uuid::Uuid;

use crate::access::Scope;
use crate::audit::Outcome;

/// A refusal. It carries no secret: ids, provider and key names (cut to
/// 64 characters where the caller wrote them), numbers and times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Too many reveals from this client: retry after this many seconds.
    RateLimited(u64),
    /// This token was refused too often (its refusal budget is spent):
    /// retry after this many seconds.
    TooManyRefusals(u64),
    /// This token made too many successful audited requests in a short
    /// time (its record budget is spent): nothing was done; retry after
    /// this many seconds.
    TooManyRecords(u64),
    /// No usable token: why the credential was not one.
    Unauthenticated(Unauthenticated),
    /// The token is known but its expiry (a ttl, or the end of a
    /// rotation's overlap) passed at `at_us`.
    TokenExpired {
        at_us: i64,
        /// The expiry was the end of a rotation's overlap.
        rotated: bool,
    },
    /// The token's stored record failed its integrity check.
    TamperedToken,
    /// The token lacks a scope, or reaches beyond its providers.
    Forbidden(Denied),
    /// Nothing there (or, for a provider-limited caller, nothing of its
    /// providers there: answered alike).
    NotFound(Missing),
    /// Beyond the caller's providers: answered exactly like `NotFound` of
    /// the same thing, recorded `forbidden`.
    Beyond(Missing),
    /// Soft-deleted, or past its recovery window: answered like a missing
    /// key, recorded `deleted`.
    Deleted(Removed),
    /// The key's ttl ran out.
    Expired,
    /// No key of the keyring opens the stored key.
    DecryptFailed,
    /// A stored record failed its integrity check.
    TamperedRecord(Tampered),
    /// A field of the request is missing or invalid.
    Invalid(Invalid),
    /// The request conflicts with what is stored.
    Conflict(Conflict),
    /// The audit record could not be made durable: nothing was served.
    AuditUnavailable,
    /// Work that was interrupted or could not finish now (a retry may
    /// do): answered 503.
    Unavailable(Unfinished),
    /// Storage failed (logged; nothing internal is told).
    Storage,
}

/// Why a presented credential is no token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthenticated {
    /// None was presented.
    Missing,
    /// More than one was presented.
    Several,
    /// It is not readable text.
    Unreadable,
    /// It is not a bearer token.
    NotBearer,
    /// The bearer token is empty.
    Empty,
    /// A token this vault does not know, or a revoked one.
    UnknownToken,
}

/// What a token may not do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// It lacks this scope.
    MissingScope(Scope),
    /// It is limited to other providers than this one (a key it stores).
    OtherProvider { provider: String },
    /// A token it mints would reach beyond its own providers.
    BroaderToken { providers: Vec<String> },
    /// It is provider-limited, and this covers every provider.
    EveryProvider(EveryProvider),
}

/// What covers every provider, so a provider-limited token may not do it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EveryProvider {
    Rotation,
    Reload,
    Backup,
    /// Reading the audit log (one chain over every provider).
    AuditLog,
    /// Reading the metrics.
    Metrics,
}

/// What is not there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// No key with the id given.
    Key,
    /// A version asked for that is not a version number.
    VersionNotANumber,
    /// The version is in the recovery window: not revealable.
    VersionInRecoveryWindow { version: u32 },
    /// The version is not kept; `kept` are the ones that are.
    VersionNotKept { version: u32, kept: Vec<u32> },
    /// No live key of `provider` (named `name`, if given); `limited`: the
    /// caller is provider-limited and is told alike when the key is
    /// beyond its providers.
    ProviderKey {
        provider: String,
        name: Option<String>,
        limited: bool,
    },
    /// The version is not in the recovery window (a restore of it).
    VersionNotInRecoveryWindow { version: u32 },
    /// No token with this id or name.
    Token { id_or_name: String },
}

/// What was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// The key is soft-deleted (restorable within its recovery window).
    Key,
    /// The key's recovery window ended: it is being destroyed.
    KeyPastRecovery,
    /// This version's recovery window ended: it is being destroyed.
    VersionPastRecovery { version: u32 },
}

/// Which stored record failed its integrity check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tampered {
    /// The key asked for.
    Key,
    /// One of the keys a listing reads.
    KeyInList,
    /// A token record.
    Token,
}

/// Which field is invalid, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// A key's `provider` is not a provider name.
    Provider,
    /// A key's `key_name` breaks this rule.
    KeyName(crate::access::KeyNameProblem),
    /// An `api_key` empty or longer than [`super::MAX_API_KEY`].
    ApiKeySize,
    /// A key's `ttl_seconds` out of range.
    KeyTtl,
    /// A token's `ttl_seconds` out of range.
    TokenTtl,
    /// A rotation's `overlap_seconds` out of range.
    Overlap,
    /// The `provider` a listing filters by is not a provider name.
    ProviderFilter,
    /// A token name that is not one.
    TokenName { name: String },
    /// A provider of a token's limit that is not a provider name.
    TokenProvider { provider: String },
    /// An auditor or metrics token limited to providers.
    LimitedAuditor,
    /// The request's own shape (its body, a query or a path segment),
    /// refused by the edge that read it and worded there.
    Request,
}

/// What the request conflicts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// A restore of a key that is not deleted.
    KeyNotDeleted,
    /// A new version of a key whose recovery window holds no more.
    RecoveryWindowFull {
        /// Versions held in all (kept and in the window).
        held: usize,
        kept: usize,
        in_window: usize,
        /// Bytes of ciphertext in the window.
        bytes: usize,
        /// When the oldest version in the window is destroyed.
        until_us: Option<i64>,
    },
    /// Several live tokens share the name of a revoke (a rotation's
    /// overlap): their ids.
    SeveralLiveTokens { name: String, ids: Vec<Uuid> },
    /// A live token already has this name.
    TokenNameTaken { name: String },
    /// The token is already revoked.
    TokenRevoked { name: String },
    /// The token was already rotated (into `to`).
    TokenRotated { name: String, id: Uuid, to: Uuid },
    /// The token's stored role is unknown to this keyhold.
    UnknownStoredRole { role: String },
    /// The store is already initialised (its location).
    AlreadyInitialised { location: String },
    /// A rotation, backup or reload is already running.
    MaintenanceRunning,
}

/// What did not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfinished {
    ExportInterrupted,
    PageNotEncoded,
    CountInterrupted,
    CountFailed,
    VerifyInterrupted,
    RotationInterrupted,
    BackupInterrupted,
}

impl Refusal {
    /// The outcome the audit log records for this refusal.
    pub fn outcome(&self) -> Outcome {
        match self {
            Refusal::RateLimited(_) | Refusal::TooManyRefusals(_) | Refusal::TooManyRecords(_) => {
                Outcome::RateLimited
            }
            Refusal::Unauthenticated(_) => Outcome::Unauthenticated,
            Refusal::TamperedToken | Refusal::TamperedRecord(_) => Outcome::Tampered,
            Refusal::Forbidden(_) | Refusal::Beyond(_) => Outcome::Forbidden,
            Refusal::NotFound(_) => Outcome::NotFound,
            Refusal::Expired | Refusal::TokenExpired { .. } => Outcome::Expired,
            Refusal::Deleted(_) => Outcome::Deleted,
            Refusal::DecryptFailed => Outcome::DecryptFailed,
            // Refusals of a request's shape or of storage are not attempts
            // on a key: recorded (where they are) as forbidden/not found
            // by their callers; this is their nearest outcome.
            Refusal::Invalid(_) | Refusal::Conflict(_) => Outcome::Forbidden,
            Refusal::AuditUnavailable | Refusal::Storage | Refusal::Unavailable(_) => {
                Outcome::NotFound
            }
        }
    }

    /// A storage error: logged here, answered without its detail.
    pub fn storage(err: &dyn std::fmt::Display) -> Refusal {
        tracing::error!(error = %err, "storage error");
        Refusal::Storage
    }

    /// A store error as a refusal: tampering is said, the rest logged.
    pub fn of_store(e: crate::store::StoreError) -> Refusal {
        match e {
            crate::store::StoreError::Tampered { .. } => Refusal::TamperedRecord(Tampered::Key),
            e => Refusal::storage(&e),
        }
    }

    /// The refusal of a token that lacks `scope`.
    pub fn missing_scope(scope: Scope) -> Refusal {
        Refusal::Forbidden(Denied::MissingScope(scope))
    }

    /// The same refusal for a thing beyond the caller's providers:
    /// answered like a missing one, recorded `forbidden`.
    pub(super) fn beyond(self) -> Refusal {
        match self {
            Refusal::NotFound(m) => Refusal::Beyond(m),
            other => other,
        }
    }

    /// What the audit record of this refusal says: a fixed summary per
    /// variant, with numbers, ids and scopes but never text the caller
    /// typed (a token pasted as an id or a name would otherwise be kept
    /// for good in the chained log) nor a Rust type name, so the durable
    /// record format is this text, not the type's shape.
    pub fn audit_detail(&self) -> String {
        match self {
            Refusal::RateLimited(_) => "too many reveals from this client".into(),
            Refusal::TooManyRefusals(_) => "the token's refusal budget is spent".into(),
            Refusal::TooManyRecords(_) => "the token's record budget is spent".into(),
            Refusal::Unauthenticated(u) => match u {
                Unauthenticated::Missing => "no token was presented",
                Unauthenticated::Several => "more than one token was presented",
                Unauthenticated::Unreadable => "the credential is not readable text",
                Unauthenticated::NotBearer => "the credential is not a bearer token",
                Unauthenticated::Empty => "the bearer token is empty",
                Unauthenticated::UnknownToken => "an unknown or revoked token",
            }
            .into(),
            Refusal::TokenExpired { rotated: false, .. } => "the token expired".into(),
            Refusal::TokenExpired { rotated: true, .. } => {
                "the token's rotation overlap ended".into()
            }
            Refusal::TamperedToken => "the token's stored record failed its integrity check".into(),
            Refusal::Forbidden(d) => match d {
                Denied::MissingScope(s) => format!("the token lacks the `{s}` scope"),
                Denied::OtherProvider { .. } => {
                    "the key's provider is beyond the token's providers".into()
                }
                Denied::BroaderToken { .. } => {
                    "the token would reach beyond the caller's providers".into()
                }
                Denied::EveryProvider(w) => format!(
                    "a provider-limited token may not {}",
                    match w {
                        EveryProvider::Rotation => "rotate the keyring",
                        EveryProvider::Reload => "reload the keyring",
                        EveryProvider::Backup => "back up the store",
                        EveryProvider::AuditLog => "read the audit log",
                        EveryProvider::Metrics => "read the metrics",
                    }
                ),
            },
            Refusal::NotFound(m) => missing_detail(m),
            Refusal::Beyond(m) => format!("{} (beyond the caller's providers)", missing_detail(m)),
            Refusal::Deleted(r) => match r {
                Removed::Key => "the key is deleted".into(),
                Removed::KeyPastRecovery => "the key's recovery window ended".into(),
                Removed::VersionPastRecovery { version } => {
                    format!("version {version}'s recovery window ended")
                }
            },
            Refusal::Expired => "the key expired".into(),
            Refusal::DecryptFailed => "no key of the keyring opens the stored key".into(),
            Refusal::TamperedRecord(t) => format!(
                "{} failed its integrity check",
                match t {
                    Tampered::Key => "the stored key",
                    Tampered::KeyInList => "a stored key of the listing",
                    Tampered::Token => "a stored token record",
                }
            ),
            Refusal::Invalid(i) => match i {
                Invalid::Provider => "invalid provider",
                Invalid::KeyName(_) => "invalid key name",
                Invalid::ApiKeySize => "the API key is empty or too long",
                Invalid::KeyTtl => "the key's ttl is out of range",
                Invalid::TokenTtl => "the token's ttl is out of range",
                Invalid::Overlap => "the rotation's overlap is out of range",
                Invalid::ProviderFilter => "invalid provider filter",
                Invalid::TokenName { .. } => "invalid token name",
                Invalid::TokenProvider { .. } => "invalid provider in the token's limit",
                Invalid::LimitedAuditor => "an auditor or metrics token limited to providers",
                Invalid::Request => "the request does not fit",
            }
            .into(),
            Refusal::Conflict(c) => match c {
                Conflict::KeyNotDeleted => "the key is not deleted".into(),
                Conflict::RecoveryWindowFull { held, .. } => {
                    format!("the recovery window is full ({held} versions held)")
                }
                Conflict::SeveralLiveTokens { ids, .. } => {
                    format!("{} live tokens share the name", ids.len())
                }
                Conflict::TokenNameTaken { .. } => "a live token already has the name".into(),
                Conflict::TokenRevoked { .. } => "the token is already revoked".into(),
                Conflict::TokenRotated { id, to, .. } => {
                    format!("token {id} was already rotated into {to}")
                }
                Conflict::UnknownStoredRole { .. } => {
                    "the token's stored role is unknown to this keyhold".into()
                }
                Conflict::AlreadyInitialised { .. } => "the store is already initialised".into(),
                Conflict::MaintenanceRunning => {
                    "a rotation, backup or reload is already running".into()
                }
            },
            Refusal::AuditUnavailable => "the audit record could not be made durable".into(),
            Refusal::Unavailable(u) => format!(
                "{} did not finish",
                match u {
                    Unfinished::ExportInterrupted => "an export",
                    Unfinished::PageNotEncoded => "a page",
                    Unfinished::CountInterrupted | Unfinished::CountFailed => "a count",
                    Unfinished::VerifyInterrupted => "a verification",
                    Unfinished::RotationInterrupted => "a rotation",
                    Unfinished::BackupInterrupted => "a backup",
                }
            ),
            Refusal::Storage => "storage failed".into(),
        }
    }

    /// Whether the refusal says a stored record failed its integrity check.
    pub fn is_tampered(&self) -> bool {
        matches!(self, Refusal::TamperedToken | Refusal::TamperedRecord(_))
    }
}

/// What is missing, said without the caller's text.
fn missing_detail(m: &Missing) -> String {
    match m {
        Missing::Key => "no such key".into(),
        Missing::VersionNotANumber => "the version is not a number".into(),
        Missing::VersionInRecoveryWindow { version } => {
            format!("version {version} is in the recovery window")
        }
        Missing::VersionNotKept { version, .. } => format!("version {version} is not kept"),
        Missing::ProviderKey { name: None, .. } => "no live key of the provider".into(),
        Missing::ProviderKey { name: Some(_), .. } => {
            "no live key of the provider by that name".into()
        }
        Missing::VersionNotInRecoveryWindow { version } => {
            format!("version {version} is not in the recovery window")
        }
        Missing::Token { .. } => "no such token".into(),
    }
}

/// The audit summary ([`Refusal::audit_detail`]): what a log line says
/// of a refusal (never the caller's text).
impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.audit_detail())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant that carries text the caller typed is summed up
    /// without it, and without a Rust type name.
    #[test]
    fn the_audit_detail_never_holds_the_callers_text() {
        let typed = "kh_ThisCouldBeAWholeTokenSecretPastedAsAnIdXYZ12";
        let s = || typed.to_string();
        let carrying = [
            Refusal::NotFound(Missing::Token { id_or_name: s() }),
            Refusal::Beyond(Missing::Token { id_or_name: s() }),
            Refusal::NotFound(Missing::ProviderKey {
                provider: s(),
                name: Some(s()),
                limited: false,
            }),
            Refusal::Invalid(Invalid::TokenName { name: s() }),
            Refusal::Invalid(Invalid::TokenProvider { provider: s() }),
            Refusal::Forbidden(Denied::OtherProvider { provider: s() }),
            Refusal::Forbidden(Denied::BroaderToken {
                providers: vec![s()],
            }),
            Refusal::Conflict(Conflict::SeveralLiveTokens {
                name: s(),
                ids: vec![Uuid::nil()],
            }),
            Refusal::Conflict(Conflict::TokenNameTaken { name: s() }),
            Refusal::Conflict(Conflict::TokenRevoked { name: s() }),
            Refusal::Conflict(Conflict::TokenRotated {
                name: s(),
                id: Uuid::nil(),
                to: Uuid::nil(),
            }),
            Refusal::Conflict(Conflict::UnknownStoredRole { role: s() }),
            Refusal::Conflict(Conflict::AlreadyInitialised { location: s() }),
        ];
        for r in carrying {
            let d = r.audit_detail();
            assert!(!d.contains("kh_"), "{d}");
            assert!(!d.contains("ThisCouldBe"), "{d}");
            for type_name in [
                "Missing", "Token {", "Invalid", "Conflict", "Refusal", "NotFound", "Beyond(",
            ] {
                assert!(!d.contains(type_name), "{r:?}: {d}");
            }
            assert_eq!(r.to_string(), d);
        }
        assert_eq!(
            Refusal::NotFound(Missing::Token { id_or_name: s() }).audit_detail(),
            "no such token"
        );
    }
}
