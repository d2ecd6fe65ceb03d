//! The body of every refusal: `{"detail": ...}`, and for a batch reveal
//! the keys refused.

use serde::{Deserialize, Serialize};

/// An error answer. `detail` says what happened and what to do; it never
/// holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ErrorBody {
    pub detail: String,
    /// `POST /api/reveal`'s refused keys (absent elsewhere).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<FailedKey>,
}

/// A key a batch reveal could not open, by its place in the request.
/// Fields in name order, as always sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FailedKey {
    pub detail: String,
    pub index: usize,
    pub status: u16,
}
