//! The key routes' bodies and answers: a new key or version, key and
//! version metadata, a reveal (one key, or several in one request).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::secret::SecretText;

/// `POST /api/keys`: a key to store. Fields in the order clients have
/// always sent them (a JSON map's name order).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct NewKey<'a> {
    pub api_key: SecretText<'a>,
    pub key_name: String,
    pub provider: String,
    /// Seconds until it expires; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
}

/// `PUT /api/keys/{id}`: a new version of a key.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct NewVersion<'a> {
    pub api_key: SecretText<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
}

/// Key metadata as answered (never ciphertext or plaintext): the seed's
/// fields, then the current version's number and, for a deleted key, when
/// it was deleted and when it will be destroyed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyMeta {
    pub id: String,
    pub provider: String,
    pub key_name: String,
    pub created_at: String,
    pub last_used: Option<String>,
    pub expires_at: Option<String>,
    pub version: u32,
    pub deleted_at: Option<String>,
    pub purge_at: Option<String>,
}

/// One version's metadata (`GET /api/keys/{id}/versions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VersionMeta {
    pub version: u32,
    pub created_at: String,
    /// The token that stored it: shown to admins and auditors only.
    pub created_by: Option<String>,
    pub expires_at: Option<String>,
    /// `current`, `previous` or `expired`; every version of a deleted key
    /// is `deleted`; a version pushed past the cap is `recovery` (not
    /// revealable; an admin can restore it until `restorable_until`).
    pub state: Cow<'static, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restorable_until: Option<String>,
}

/// The answer of a reveal: the seed's fields, the key itself, then the
/// version revealed and when it lapses. The server borrows every text
/// from the key it opened; a client reads `api_key` into a zeroizing
/// string.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RevealedKey<'a> {
    pub id: String,
    pub provider: Cow<'a, str>,
    pub key_name: Cow<'a, str>,
    pub api_key: SecretText<'a>,
    /// The version revealed (absent from servers before versions: 1).
    #[serde(default = "first_version")]
    pub version: u32,
    /// When it lapses (RFC 3339), if it does.
    #[serde(default)]
    pub expires_at: Option<String>,
}

fn first_version() -> u32 {
    1
}

/// `POST /api/reveal`: the keys wanted, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RevealBatch {
    pub keys: Vec<KeyRef>,
}

/// One key of a batch: `id` (with `version` for an older one), or
/// `provider` (with `key_name`): its newest live key. Fields in the order
/// clients have always sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

/// The answer of `POST /api/reveal`: every key asked for, in order, each
/// as a single reveal answers it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RevealedBatch<'a> {
    pub keys: Vec<RevealedKey<'a>>,
}

/// What a delete or a revocation did: `status` (`deleted`, `revoked`)
/// and the id it applied to. In name order, as always sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Done {
    pub id: String,
    pub status: Cow<'static, str>,
}
