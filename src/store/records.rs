//! Record types as stored: postcard inside append-only version enums.
//!
//! V1 (schema 1-2): the value alone. V2 (schema 3): the value and a MAC
//! under the store's record MAC key binding it to its storage key (a key's
//! id, a token's keyed digest), see `auth`. Once a store is at schema 3 a
//! V1 record, or a V2 record whose MAC does not match, is refused as
//! tampered. Token records have a V3 (expiry, rotation), authenticated
//! like V2; writers write V3, and V1/V2 read as "no expiry".
//!
//! Over 500 lines: the stored forms of the two record types, every
//! variant ever written (postcard is not self-describing, so each stays
//! byte for byte), with their authentication.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::{
    RecordKeys, TAG_KEY_RECORD, TAG_KEY_RECORD_V3, TAG_KEY_RECORD_V4, TAG_KEY_RECORD_V5,
    TAG_TOKEN_RECORD, TAG_TOKEN_RECORD_V4,
};
use super::{corrupt, Result, StoreError};
use crate::access::Scope;

/// A stored API key: metadata and its Fernet tokens (never plaintext).
///
/// The fields of the current version (`token`, `expires_at_us`, `version`,
/// `version_created_at_us`, `created_by`) sit on the record itself, so a
/// reveal reads one record; older versions kept for `?version=N` are in
/// `older`, oldest first. A soft-deleted key keeps its record (and its
/// versions) with `deleted_at_us` set until it is restored or purged.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: Uuid,
    pub provider: String,
    pub key_name: String,
    /// Fernet token of the current version of the API key.
    pub token: String,
    /// When the key (its first version) was created.
    pub created_at_us: i64,
    /// When the current version lapses.
    pub expires_at_us: Option<i64>,
    /// The current version's number (1 for a key never replaced).
    pub version: u32,
    /// When the current version was stored.
    pub version_created_at_us: i64,
    /// Who stored the current version (a token's name, `cli`, `import`);
    /// `None` for keys stored before versions were recorded.
    pub created_by: Option<String>,
    /// Older versions still kept, oldest first.
    pub older: Vec<KeyVersion>,
    /// When the key was soft-deleted (not revealable; restorable until
    /// the recovery window ends).
    pub deleted_at_us: Option<i64>,
    /// The seq of the audit record whose commit wrote this record (0: a
    /// record written before schema 5). Under the record's MAC, so an
    /// older authentic copy put back is told apart from the current one
    /// (see `store::state`). Set by the commit, never by callers.
    pub stamp: u64,
    /// Versions pushed past the cap of kept versions: not revealable, in
    /// the recovery window from `dropped_at_us` (an admin restores them;
    /// housekeeping destroys them when the window ends), oldest first.
    pub dropped: Vec<DroppedVersion>,
}

/// A version in the recovery window (see [`KeyRecord::dropped`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedVersion {
    pub version: KeyVersion,
    pub dropped_at_us: i64,
}

/// An older version of a key, kept for `GET /api/keys/{id}?version=N`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersion {
    pub number: u32,
    /// Fernet token of this version.
    pub token: String,
    pub created_at_us: i64,
    pub created_by: Option<String>,
    pub expires_at_us: Option<i64>,
}

impl std::fmt::Debug for KeyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVersion")
            .field("number", &self.number)
            .field("created_at_us", &self.created_at_us)
            .field("created_by", &self.created_by)
            .field("expires_at_us", &self.expires_at_us)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("provider", &self.provider)
            .field("key_name", &self.key_name)
            .field("created_at_us", &self.created_at_us)
            .field("expires_at_us", &self.expires_at_us)
            .field("version", &self.version)
            .field("older", &self.older)
            .field("deleted_at_us", &self.deleted_at_us)
            .field("stamp", &self.stamp)
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl KeyRecord {
    /// A new key's record: version 1, nothing older, not deleted.
    pub fn new(
        id: Uuid,
        provider: String,
        key_name: String,
        token: String,
        created_at_us: i64,
        expires_at_us: Option<i64>,
        created_by: Option<String>,
    ) -> KeyRecord {
        KeyRecord {
            id,
            provider,
            key_name,
            token,
            created_at_us,
            expires_at_us,
            version: 1,
            version_created_at_us: created_at_us,
            created_by,
            older: Vec::new(),
            deleted_at_us: None,
            stamp: 0,
            dropped: Vec::new(),
        }
    }

    /// Every Fernet token the record holds: the current version's first,
    /// then the older ones (rotation re-encrypts them all).
    pub fn tokens_mut(&mut self) -> impl Iterator<Item = &mut String> {
        std::iter::once(&mut self.token)
            .chain(self.older.iter_mut().map(|v| &mut v.token))
            .chain(self.dropped.iter_mut().map(|d| &mut d.version.token))
    }

    /// Every Fernet token the record holds (see [`KeyRecord::tokens_mut`]).
    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.token.as_str())
            .chain(self.older.iter().map(|v| v.token.as_str()))
            .chain(self.dropped.iter().map(|d| d.version.token.as_str()))
    }

    /// Version `n` of the key as (token, expires_at), if still kept.
    pub fn version_token(&self, n: u32) -> Option<(&str, Option<i64>)> {
        if n == self.version {
            return Some((&self.token, self.expires_at_us));
        }
        self.older
            .iter()
            .find(|v| v.number == n)
            .map(|v| (v.token.as_str(), v.expires_at_us))
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

/// Schema 4: versions, their authors, soft deletion.
#[derive(Serialize, Deserialize)]
struct KeyV3 {
    provider: String,
    key_name: String,
    token: String,
    created_at_us: i64,
    expires_at_us: Option<i64>,
    version: u32,
    version_created_at_us: i64,
    created_by: Option<String>,
    older: Vec<KeyVersion>,
    deleted_at_us: Option<i64>,
}

#[derive(Serialize, Deserialize)]
enum StoredKey {
    V1(KeyV1),
    V2 {
        key: KeyV1,
        mac: [u8; 32],
    },
    V3 {
        key: KeyV3,
        mac: [u8; 32],
    },
    /// Schema 5: V3 and the stamp of the commit that wrote it, both under
    /// the MAC (its own tag).
    V4 {
        key: KeyV3,
        stamp: u64,
        mac: [u8; 32],
    },
    /// V4 and the versions in the recovery window, under the MAC (its own
    /// tag). Written only while there are such versions: a record without
    /// them stays V4, readable by the release before.
    V5 {
        key: KeyV3,
        dropped: Vec<DroppedVersion>,
        stamp: u64,
        mac: [u8; 32],
    },
}

/// How a stored record's authenticity is judged.
#[derive(Clone, Copy)]
pub(crate) enum Auth<'a> {
    /// Schema 3: a V2 record with a matching MAC, nothing else.
    Keys(&'a RecordKeys),
    /// Before the upgrade to schema 3 (or a reader that only needs the
    /// fields, such as a fuzz target): any record, unauthenticated.
    Legacy,
}

impl KeyRecord {
    fn v3(&self) -> KeyV3 {
        KeyV3 {
            provider: self.provider.clone(),
            key_name: self.key_name.clone(),
            token: self.token.clone(),
            created_at_us: self.created_at_us,
            expires_at_us: self.expires_at_us,
            version: self.version,
            version_created_at_us: self.version_created_at_us,
            created_by: self.created_by.clone(),
            older: self.older.clone(),
            deleted_at_us: self.deleted_at_us,
        }
    }

    fn of_v1(id: Uuid, v: KeyV1) -> KeyRecord {
        KeyRecord::new(
            id,
            v.provider,
            v.key_name,
            v.token,
            v.created_at_us,
            v.expires_at_us,
            None,
        )
    }

    fn of_v3(id: Uuid, v: KeyV3, stamp: u64) -> KeyRecord {
        KeyRecord {
            id,
            provider: v.provider,
            key_name: v.key_name,
            token: v.token,
            created_at_us: v.created_at_us,
            expires_at_us: v.expires_at_us,
            version: v.version,
            version_created_at_us: v.version_created_at_us,
            created_by: v.created_by,
            older: v.older,
            deleted_at_us: v.deleted_at_us,
            stamp,
            dropped: Vec::new(),
        }
    }

    /// The stored form, authenticated under `keys` (always the newest
    /// variant; the MAC binds the whole value and its stamp to the key's
    /// id).
    pub(crate) fn encode(&self, keys: &RecordKeys) -> Result<Vec<u8>> {
        let v = self.v3();
        if !self.dropped.is_empty() {
            let body =
                postcard::to_stdvec(&(&v, &self.dropped, self.stamp)).map_err(corrupt("key"))?;
            let mac = keys.record_mac(TAG_KEY_RECORD_V5, self.id.as_bytes(), &body);
            return postcard::to_stdvec(&StoredKey::V5 {
                key: v,
                dropped: self.dropped.clone(),
                stamp: self.stamp,
                mac,
            })
            .map_err(corrupt("key"));
        }
        let body = postcard::to_stdvec(&(&v, self.stamp)).map_err(corrupt("key"))?;
        let mac = keys.record_mac(TAG_KEY_RECORD_V4, self.id.as_bytes(), &body);
        postcard::to_stdvec(&StoredKey::V4 {
            key: v,
            stamp: self.stamp,
            mac,
        })
        .map_err(corrupt("key"))
    }

    /// Reads a stored key without judging its authenticity (for fuzzing
    /// the parser; the store always decodes through `decode_checked`).
    pub fn decode(id: Uuid, bytes: &[u8]) -> Result<KeyRecord> {
        Self::decode_checked(id, bytes, Auth::Legacy)
    }

    pub(crate) fn decode_checked(id: Uuid, bytes: &[u8], auth: Auth<'_>) -> Result<KeyRecord> {
        let stored: StoredKey = postcard::from_bytes(bytes).map_err(corrupt("key"))?;
        let check = |tag: &[u8], body: Vec<u8>, mac: &[u8; 32], keys: &RecordKeys| {
            if keys.record_mac_ok(tag, id.as_bytes(), &body, mac) {
                Ok(())
            } else {
                Err(tampered("key", id.to_string()))
            }
        };
        Ok(match (stored, auth) {
            (StoredKey::V1(v), Auth::Legacy) | (StoredKey::V2 { key: v, .. }, Auth::Legacy) => {
                Self::of_v1(id, v)
            }
            (StoredKey::V3 { key: v, .. }, Auth::Legacy) => Self::of_v3(id, v, 0),
            (StoredKey::V4 { key: v, stamp, .. }, Auth::Legacy) => Self::of_v3(id, v, stamp),
            (
                StoredKey::V5 {
                    key: v,
                    dropped,
                    stamp,
                    ..
                },
                Auth::Legacy,
            ) => Self {
                dropped,
                ..Self::of_v3(id, v, stamp)
            },
            (StoredKey::V2 { key: v, mac }, Auth::Keys(keys)) => {
                let body = postcard::to_stdvec(&v).map_err(corrupt("key"))?;
                check(TAG_KEY_RECORD, body, &mac, keys)?;
                Self::of_v1(id, v)
            }
            (StoredKey::V3 { key: v, mac }, Auth::Keys(keys)) => {
                let body = postcard::to_stdvec(&v).map_err(corrupt("key"))?;
                check(TAG_KEY_RECORD_V3, body, &mac, keys)?;
                Self::of_v3(id, v, 0)
            }
            (StoredKey::V4 { key: v, stamp, mac }, Auth::Keys(keys)) => {
                let body = postcard::to_stdvec(&(&v, stamp)).map_err(corrupt("key"))?;
                check(TAG_KEY_RECORD_V4, body, &mac, keys)?;
                Self::of_v3(id, v, stamp)
            }
            (
                StoredKey::V5 {
                    key: v,
                    dropped,
                    stamp,
                    mac,
                },
                Auth::Keys(keys),
            ) => {
                let body = postcard::to_stdvec(&(&v, &dropped, stamp)).map_err(corrupt("key"))?;
                check(TAG_KEY_RECORD_V5, body, &mac, keys)?;
                Self {
                    dropped,
                    ..Self::of_v3(id, v, stamp)
                }
            }
            (StoredKey::V1(_), Auth::Keys(_)) => return Err(tampered("key", id.to_string())),
        })
    }
}

/// A stored access token: never the token, only what it may do. The key
/// it is stored under is a keyed digest of the token (`auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    pub scopes: Vec<Scope>,
    /// `None`: every provider.
    pub providers: Option<Vec<String>>,
    pub created_at_us: i64,
    pub revoked_at_us: Option<i64>,
    /// When the token stops working (`None`: never). A rotation moves the
    /// old token's expiry to the end of its overlap.
    pub expires_at_us: Option<i64>,
    /// The ttl it was created with, in seconds (a rotation gives the new
    /// token the same).
    pub ttl_seconds: Option<i64>,
    /// Set on a token replaced by `token rotate`: the id of its successor.
    pub rotated_to: Option<Uuid>,
    /// The seq of the audit record whose commit wrote this record (0:
    /// written before schema 5), under the record's MAC (see
    /// [`KeyRecord::stamp`]).
    pub stamp: u64,
    /// How many layers the token digest had where this record is stored
    /// (see `auth::RecordKeys`): what tells a rotation stopped half-way
    /// which records it moved already. Under the record's MAC.
    pub layers: u32,
}

/// The token record of schemas 1-3 (V1, V2): frozen, as postcard is not
/// self-describing and a field added here would break reading them.
#[derive(Serialize, Deserialize)]
struct TokenV1 {
    id: Uuid,
    name: String,
    role: String,
    scopes: Vec<Scope>,
    providers: Option<Vec<String>>,
    created_at_us: i64,
    revoked_at_us: Option<i64>,
}

/// The token record with expiry and rotation (V3). Only ever appended to
/// as a new variant, never changed.
#[derive(Serialize, Deserialize)]
struct TokenV3 {
    id: Uuid,
    name: String,
    role: String,
    scopes: Vec<Scope>,
    providers: Option<Vec<String>>,
    created_at_us: i64,
    revoked_at_us: Option<i64>,
    expires_at_us: Option<i64>,
    ttl_seconds: Option<i64>,
    rotated_to: Option<Uuid>,
}

#[derive(Serialize, Deserialize)]
enum StoredToken {
    V1(TokenV1),
    V2 {
        token: TokenV1,
        mac: [u8; 32],
    },
    /// With expiry and rotation; authenticated as V2 (the MAC covers the
    /// postcard of the `TokenV3` body under the same tag and storage key).
    V3 {
        token: TokenV3,
        mac: [u8; 32],
    },
    /// Schema 5: V3 and the stamp of the commit that wrote it, both under
    /// the MAC (its own tag).
    V4 {
        token: TokenV3,
        stamp: u64,
        layers: u32,
        mac: [u8; 32],
    },
}

impl From<TokenV1> for TokenRecord {
    fn from(t: TokenV1) -> TokenRecord {
        TokenRecord {
            id: t.id,
            name: t.name,
            role: t.role,
            scopes: t.scopes,
            providers: t.providers,
            created_at_us: t.created_at_us,
            revoked_at_us: t.revoked_at_us,
            expires_at_us: None,
            ttl_seconds: None,
            rotated_to: None,
            stamp: 0,
            layers: 0,
        }
    }
}

impl From<TokenV3> for TokenRecord {
    fn from(t: TokenV3) -> TokenRecord {
        TokenRecord {
            id: t.id,
            name: t.name,
            role: t.role,
            scopes: t.scopes,
            providers: t.providers,
            created_at_us: t.created_at_us,
            revoked_at_us: t.revoked_at_us,
            expires_at_us: t.expires_at_us,
            ttl_seconds: t.ttl_seconds,
            rotated_to: t.rotated_to,
            stamp: 0,
            layers: 0,
        }
    }
}

impl TokenRecord {
    fn v3(&self) -> TokenV3 {
        TokenV3 {
            id: self.id,
            name: self.name.clone(),
            role: self.role.clone(),
            scopes: self.scopes.clone(),
            providers: self.providers.clone(),
            created_at_us: self.created_at_us,
            revoked_at_us: self.revoked_at_us,
            expires_at_us: self.expires_at_us,
            ttl_seconds: self.ttl_seconds,
            rotated_to: self.rotated_to,
        }
    }

    /// True when the token has expired at `now_us` (revocation aside).
    pub fn expired_at(&self, now_us: i64) -> bool {
        self.expires_at_us.is_some_and(|e| e <= now_us)
    }

    /// The stored form under storage key `at`, authenticated under `keys`
    /// (always V4: the value and its stamp).
    pub(crate) fn encode(&self, at: &[u8; 32], keys: &RecordKeys) -> Result<Vec<u8>> {
        let token = self.v3();
        let body =
            postcard::to_stdvec(&(&token, self.stamp, self.layers)).map_err(corrupt("token"))?;
        let mac = keys.record_mac(TAG_TOKEN_RECORD_V4, at, &body);
        postcard::to_stdvec(&StoredToken::V4 {
            token,
            stamp: self.stamp,
            layers: self.layers,
            mac,
        })
        .map_err(corrupt("token"))
    }

    /// Reads a stored token without judging its authenticity (fuzzing).
    pub fn decode(bytes: &[u8]) -> Result<TokenRecord> {
        Self::decode_checked(&[0; 32], bytes, Auth::Legacy)
    }

    pub(crate) fn decode_checked(
        at: &[u8; 32],
        bytes: &[u8],
        auth: Auth<'_>,
    ) -> Result<TokenRecord> {
        let stored: StoredToken = postcard::from_bytes(bytes).map_err(corrupt("token"))?;
        let check = |body: Vec<u8>, mac: &[u8; 32], keys: &RecordKeys| {
            if keys.record_mac_ok(TAG_TOKEN_RECORD, at, &body, mac) {
                Ok(())
            } else {
                Err(tampered("token", short_hex(&at[..8])))
            }
        };
        match (stored, auth) {
            (StoredToken::V1(t), Auth::Legacy)
            | (StoredToken::V2 { token: t, .. }, Auth::Legacy) => Ok(t.into()),
            (StoredToken::V3 { token, .. }, Auth::Legacy) => Ok(token.into()),
            (
                StoredToken::V4 {
                    token,
                    stamp,
                    layers,
                    ..
                },
                Auth::Legacy,
            ) => {
                let mut t: TokenRecord = token.into();
                t.stamp = stamp;
                t.layers = layers;
                Ok(t)
            }
            (StoredToken::V2 { token, mac }, Auth::Keys(keys)) => {
                let body = postcard::to_stdvec(&token).map_err(corrupt("token"))?;
                check(body, &mac, keys)?;
                Ok(token.into())
            }
            (StoredToken::V3 { token, mac }, Auth::Keys(keys)) => {
                let body = postcard::to_stdvec(&token).map_err(corrupt("token"))?;
                check(body, &mac, keys)?;
                Ok(token.into())
            }
            (
                StoredToken::V4 {
                    token,
                    stamp,
                    layers,
                    mac,
                },
                Auth::Keys(keys),
            ) => {
                let body =
                    postcard::to_stdvec(&(&token, stamp, layers)).map_err(corrupt("token"))?;
                if !keys.record_mac_ok(TAG_TOKEN_RECORD_V4, at, &body, &mac) {
                    return Err(tampered("token", short_hex(&at[..8])));
                }
                let mut t: TokenRecord = token.into();
                t.stamp = stamp;
                t.layers = layers;
                Ok(t)
            }
            (StoredToken::V1(_), Auth::Keys(_)) => Err(tampered("token", short_hex(&at[..8]))),
        }
    }

    /// True when the stored value is a V1 (pre-schema-3) record.
    pub(crate) fn is_legacy(bytes: &[u8]) -> bool {
        matches!(postcard::from_bytes(bytes), Ok(StoredToken::V1(_)))
    }
}

impl KeyRecord {
    /// True when the stored value is a V1 (pre-schema-3) record.
    pub(crate) fn is_legacy(bytes: &[u8]) -> bool {
        matches!(postcard::from_bytes(bytes), Ok(StoredKey::V1(_)))
    }
}

fn tampered(what: &'static str, id: String) -> StoreError {
    StoreError::Tampered { what, id }
}

/// A short hex name of a storage key, for messages.
fn short_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
