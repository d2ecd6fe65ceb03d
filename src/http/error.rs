//! API errors: one type, one mapping to status codes, `{"detail": ...}`.

use http::StatusCode;

use crate::vault::Refusal;

/// An error answer. `detail` says what happened and what to do; it never
/// holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub detail: String,
    /// Seconds for `Retry-After` (429, some 503).
    pub retry_after: Option<u64>,
    /// The refusal is about a stored record that failed its integrity
    /// check (its audit record says `tampered`).
    pub tampered: bool,
    /// Its record is decided: `AppState::answer_refused` recorded it (a
    /// refusal the vault recorded is told by the request's mark, which
    /// only the vault sets, never by this).
    pub recorded: bool,
    /// The request's body was left (partly) unread, so the connection
    /// closes after the answer (`Connection: close`), whatever the status
    /// it ends with (a 413 or 408 past the refusal budget is a 429).
    pub unread_body: bool,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            detail: detail.into(),
            retry_after: None,
            tampered: false,
            recorded: false,
            unread_body: matches!(
                status,
                StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
            ),
        }
    }

    pub(crate) fn bad_request(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub(crate) fn not_found(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub(crate) fn conflict(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, detail)
    }

    pub(crate) fn too_large(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, detail)
    }

    pub(crate) fn unsupported_media(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, detail)
    }

    pub(crate) fn invalid(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }

    pub(crate) fn unavailable(detail: impl Into<String>) -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, detail)
        }
    }

    /// A storage error: logged in full, answered without internals.
    /// A stored record failed its integrity check: refused, never honoured.
    pub(crate) fn tampered(status: StatusCode, detail: impl Into<String>) -> ApiError {
        tracing::error!(
            "a stored record failed its integrity check (written or changed outside keyhold); \
             it was refused. Run `keyhold check`"
        );
        ApiError {
            tampered: true,
            ..ApiError::new(status, detail)
        }
    }

    pub(crate) fn storage(err: &dyn std::fmt::Display) -> ApiError {
        ApiError::from(Refusal::storage(err))
    }
}

/// The one mapping of the vault's refusals to HTTP statuses (their words
/// are in `refusal_text.rs`).
impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        let detail = super::refusal_text::detail(&r);
        let status = match &r {
            Refusal::RateLimited(_) | Refusal::TooManyRefusals(_) | Refusal::TooManyRecords(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Refusal::Unauthenticated(_) | Refusal::TokenExpired { .. } | Refusal::TamperedToken => {
                StatusCode::UNAUTHORIZED
            }
            Refusal::Forbidden(_) => StatusCode::FORBIDDEN,
            Refusal::NotFound(_) | Refusal::Beyond(_) | Refusal::Deleted(_) => {
                StatusCode::NOT_FOUND
            }
            Refusal::Expired => StatusCode::GONE,
            Refusal::DecryptFailed | Refusal::Conflict(_) | Refusal::TamperedRecord(_) => {
                StatusCode::CONFLICT
            }
            Refusal::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Refusal::AuditUnavailable | Refusal::Storage | Refusal::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        let retry_after = match &r {
            Refusal::RateLimited(secs)
            | Refusal::TooManyRefusals(secs)
            | Refusal::TooManyRecords(secs) => Some(*secs),
            Refusal::AuditUnavailable | Refusal::Storage | Refusal::Unavailable(_) => Some(1),
            _ => None,
        };
        match &r {
            // The server's log tells the operator what to run (the answer
            // tells the caller to tell the operator).
            Refusal::TamperedRecord(_) => ApiError {
                retry_after,
                ..ApiError::tampered(status, detail)
            },
            Refusal::TamperedToken => ApiError {
                tampered: true,
                ..ApiError::new(status, detail)
            },
            _ => ApiError {
                retry_after,
                ..ApiError::new(status, detail)
            },
        }
    }
}
