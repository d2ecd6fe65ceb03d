//! Record types as stored: postcard inside append-only version enums.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{corrupt, Result};
use crate::access::Scope;

/// A stored API key: metadata and its Fernet token (never plaintext).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: Uuid,
    pub provider: String,
    pub key_name: String,
    /// Fernet token of the API key.
    pub token: String,
    pub created_at_us: i64,
    pub expires_at_us: Option<i64>,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("provider", &self.provider)
            .field("key_name", &self.key_name)
            .field("created_at_us", &self.created_at_us)
            .field("expires_at_us", &self.expires_at_us)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct KeyV1 {
    provider: String,
    key_name: String,
    token: String,
    created_at_us: i64,
    expires_at_us: Option<i64>,
}

#[derive(Serialize, Deserialize)]
enum StoredKey {
    V1(KeyV1),
}

impl KeyRecord {
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        postcard::to_stdvec(&StoredKey::V1(KeyV1 {
            provider: self.provider.clone(),
            key_name: self.key_name.clone(),
            token: self.token.clone(),
            created_at_us: self.created_at_us,
            expires_at_us: self.expires_at_us,
        }))
        .map_err(corrupt("key"))
    }

    pub fn decode(id: Uuid, bytes: &[u8]) -> Result<KeyRecord> {
        let StoredKey::V1(v) = postcard::from_bytes(bytes).map_err(corrupt("key"))?;
        Ok(KeyRecord {
            id,
            provider: v.provider,
            key_name: v.key_name,
            token: v.token,
            created_at_us: v.created_at_us,
            expires_at_us: v.expires_at_us,
        })
    }
}

/// A stored access token: never the token, only what it may do. The key
/// it is stored under is the SHA-256 of the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    pub scopes: Vec<Scope>,
    /// `None`: every provider.
    pub providers: Option<Vec<String>>,
    pub created_at_us: i64,
    pub revoked_at_us: Option<i64>,
}

#[derive(Serialize, Deserialize)]
enum StoredToken {
    V1(TokenRecord),
}

impl TokenRecord {
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        postcard::to_stdvec(&StoredToken::V1(self.clone())).map_err(corrupt("token"))
    }

    pub fn decode(bytes: &[u8]) -> Result<TokenRecord> {
        let StoredToken::V1(v) = postcard::from_bytes(bytes).map_err(corrupt("token"))?;
        Ok(v)
    }
}
