//! Why the vault said no: one type for every rule's refusal, mapped once
//! to the audit outcome it is recorded with ([`Refusal::outcome`]); the
//! HTTP status is mapped once in `http::error`.

use crate::audit::Outcome;

/// The detail of a missing key.
pub(crate) const NO_SUCH_KEY: &str = "no key with this id: list keys with GET /api/keys";

/// A refusal, with a detail that says what happened and what to do (never
/// a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Too many reveals from this client: retry after this many seconds.
    #[error("too many reveals from this address: retry in {0} s (see Retry-After)")]
    RateLimited(u64),
    /// This token was refused too often (its refusal budget is spent):
    /// retry after this many seconds.
    #[error(
        "this token was refused too often in a short time, so further requests it makes that \
         would be refused are answered 429: retry in {0} s (see Retry-After), and check what \
         the token may do (GET /api/whoami)"
    )]
    TooManyRefusals(u64),
    /// This token made too many successful audited requests in a short
    /// time (its record budget is spent): nothing was done; retry after
    /// this many seconds.
    #[error(
        "this token made too many audited requests in a short time (its record budget), so \
         this one was not done: retry in {0} s (see Retry-After)"
    )]
    TooManyRecords(u64),
    /// No usable token, or an unknown or revoked one.
    #[error("{0}")]
    Unauthenticated(String),
    /// The token is known but its expiry (a ttl, or the end of a
    /// rotation's overlap) has passed: the detail names when.
    #[error("{0}")]
    TokenExpired(String),
    /// The token's stored record failed its integrity check.
    #[error(
        "this token's stored record failed its integrity check (it was changed outside keyhold) \
         and is refused: tell the operator to run `keyhold check`"
    )]
    TamperedToken,
    /// The token lacks a scope, or reaches beyond its providers.
    #[error("{0}")]
    Forbidden(String),
    /// Nothing there (or, for a provider-limited caller, nothing of its
    /// providers there: answered alike).
    #[error("{0}")]
    NotFound(String),
    /// Beyond the caller's providers: answered exactly like `NotFound`
    /// with this detail, recorded `forbidden`.
    #[error("{0}")]
    Beyond(String),
    /// The key is soft-deleted: answered 404 like a missing key, recorded
    /// `deleted`.
    #[error("{0}")]
    Deleted(String),
    /// The key's ttl ran out.
    #[error("this key has expired (its ttl_seconds ran out): store a new one")]
    Expired,
    /// No key of the keyring opens the stored key.
    #[error(
        "the stored key does not decrypt with this server's keyring (its Fernet key is not in \
         FERNET_KEYS): tell the operator; `keyhold check` lists such keys"
    )]
    DecryptFailed,
    /// A stored key record failed its integrity check.
    #[error("{0}")]
    TamperedRecord(String),
    /// A field of the request is missing or invalid (named).
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with what is stored.
    #[error("{0}")]
    Conflict(String),
    /// The audit record could not be made durable: nothing was served.
    #[error(
        "the audit log cannot be written right now, so the request was not served; retry \
         shortly, and tell the operator (check disk space and `/healthz`)"
    )]
    AuditUnavailable,
    /// Work that was interrupted or could not finish now (the detail says
    /// what and that a retry may do): answered 503.
    #[error("{0}")]
    Unavailable(String),
    /// Storage failed (logged; the detail says nothing internal).
    #[error("storage is unavailable right now; retry shortly and tell the operator")]
    Storage,
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
            Refusal::Expired | Refusal::TokenExpired(_) => Outcome::Expired,
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

    /// A stored key record failed its integrity check.
    pub fn tampered_key() -> Refusal {
        tracing::error!(
            "a stored key record failed its integrity check (written or changed outside keyhold); \
             it was refused. Run `keyhold check`"
        );
        Refusal::TamperedRecord(
            "the stored record of this key failed its integrity check (it was changed outside \
             keyhold) and is refused: tell the operator to run `keyhold check`"
                .into(),
        )
    }

    /// A soft-deleted key.
    pub fn deleted_key() -> Refusal {
        Refusal::Deleted(
            "this key is deleted: POST /api/keys/{id}/restore brings it back within the recovery \
             window (GET /api/keys?deleted=true lists deleted keys)"
                .into(),
        )
    }

    /// A missing key (or one beyond the caller's providers).
    pub fn no_such_key() -> Refusal {
        Refusal::NotFound(NO_SUCH_KEY.into())
    }

    /// A store error as a refusal: tampering is said, the rest logged.
    pub fn of_store(e: crate::store::StoreError) -> Refusal {
        match e {
            crate::store::StoreError::Tampered { .. } => Refusal::tampered_key(),
            e => Refusal::storage(&e),
        }
    }
}
