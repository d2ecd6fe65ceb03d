//! API errors: one type, one mapping to status codes, `{"detail": ...}`.

use http::StatusCode;

/// An error answer. `detail` says what happened and what to do; it never
/// holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: String,
    /// Seconds for `Retry-After` (429, some 503).
    pub retry_after: Option<u64>,
    /// The refusal is about a stored record that failed its integrity
    /// check (its audit record says `tampered`).
    pub tampered: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            detail: detail.into(),
            retry_after: None,
            tampered: false,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn unauthenticated(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn conflict(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, detail)
    }

    pub fn gone(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::GONE, detail)
    }

    pub fn too_large(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, detail)
    }

    pub fn unsupported_media(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, detail)
    }

    pub fn invalid(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }

    pub fn rate_limited(retry_after: u64) -> ApiError {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            detail: format!(
                "too many reveals from this address: retry in {retry_after} s (see Retry-After)"
            ),
            retry_after: Some(retry_after),
            tampered: false,
        }
    }

    pub fn unavailable(detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            detail: detail.into(),
            retry_after: Some(1),
            tampered: false,
        }
    }

    /// The audit record could not be made durable: nothing is answered.
    pub fn audit_unavailable() -> ApiError {
        Self::unavailable(
            "the audit log cannot be written right now, so the request was not served; \
             retry shortly, and tell the operator (check disk space and `/healthz`)",
        )
    }

    /// A storage error: logged in full, answered without internals.
    /// A stored record failed its integrity check: refused, never honoured.
    pub fn tampered(status: StatusCode, detail: impl Into<String>) -> ApiError {
        tracing::error!(
            "a stored record failed its integrity check (written or changed outside keyhold); \
             it was refused. Run `keyhold check`"
        );
        ApiError {
            tampered: true,
            ..ApiError::new(status, detail)
        }
    }

    pub fn storage(err: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %err, "storage error");
        Self::unavailable("storage is unavailable right now; retry shortly and tell the operator")
    }
}

/// The one mapping of the vault's refusals to HTTP statuses.
impl From<crate::vault::Refusal> for ApiError {
    fn from(r: crate::vault::Refusal) -> ApiError {
        use crate::vault::Refusal as R;
        let detail = r.to_string();
        match r {
            R::RateLimited(secs) => ApiError::rate_limited(secs),
            R::TooManyRefusals(secs) | R::TooManyRecords(secs) => ApiError {
                retry_after: Some(secs),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, detail)
            },
            R::Unauthenticated(_) | R::TokenExpired(_) => ApiError::unauthenticated(detail),
            R::TamperedToken => ApiError {
                tampered: true,
                ..ApiError::unauthenticated(detail)
            },
            R::Forbidden(_) => ApiError::forbidden(detail),
            R::NotFound(_) | R::Beyond(_) | R::Deleted(_) => ApiError::not_found(detail),
            R::Expired => ApiError::gone(detail),
            R::DecryptFailed | R::Conflict(_) => ApiError::conflict(detail),
            R::TamperedRecord(_) => ApiError {
                tampered: true,
                ..ApiError::conflict(detail)
            },
            R::Invalid(_) => ApiError::invalid(detail),
            R::AuditUnavailable => ApiError::audit_unavailable(),
            R::Storage | R::Unavailable(_) => ApiError::unavailable(detail),
        }
    }
}
