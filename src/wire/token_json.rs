//! The token routes' bodies and answers, and `GET /api/whoami`.

use serde::ser::{Error as _, SerializeMap};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::secret::SecretText;
use crate::store::TokenRecord;
use crate::time::to_rfc3339;
use crate::vault::ListedToken;

/// `POST /api/tokens`: a token to mint. Fields in the order clients have
/// always sent them (a JSON map's name order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NewToken {
    pub name: String,
    /// `null`: every provider.
    #[serde(default)]
    pub providers: Option<Vec<String>>,
    pub role: String,
    /// Seconds until it expires; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
}

/// `POST /api/tokens/{id}/rotate`: how long the old token keeps working
/// (absent: the server's default; an empty body is `{}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RotateToken {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap_seconds: Option<i64>,
}

/// A token as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: String,
    pub scopes: Vec<String>,
    pub providers: Option<Vec<String>>,
    pub created_at: String,
    pub revoked_at: Option<String>,
    /// When it stops working (`null`: never).
    pub expires_at: Option<String>,
    /// True once `expires_at` has passed (absent from servers before
    /// expiring tokens: false).
    #[serde(default)]
    pub expired: bool,
    /// The ttl it was created with (a rotation keeps it).
    pub ttl_seconds: Option<i64>,
    /// When an audited action made with it was last committed (`null`:
    /// never used).
    pub last_used: Option<String>,
    /// Set once rotated: the id of its replacement.
    pub rotated_to: Option<String>,
}

impl TokenInfo {
    /// A token as listed, with its last use.
    pub(crate) fn listed(t: &ListedToken) -> TokenInfo {
        TokenInfo {
            expired: t.expired,
            last_used: t.last_used_us.map(to_rfc3339),
            ..TokenInfo::of(&t.record)
        }
    }

    /// A token just written (never used yet).
    pub(crate) fn of(r: &TokenRecord) -> TokenInfo {
        TokenInfo {
            expires_at: r.expires_at_us.map(to_rfc3339),
            expired: r.expired_at(crate::time::now_us()),
            ttl_seconds: r.ttl_seconds,
            last_used: None,
            rotated_to: r.rotated_to.map(|id| id.to_string()),
            id: r.id.to_string(),
            name: r.name.clone(),
            role: r.role.clone(),
            scopes: r.scopes.iter().map(|s| s.as_str().to_string()).collect(),
            providers: r.providers.clone(),
            created_at: to_rfc3339(r.created_at_us),
            revoked_at: r.revoked_at_us.map(to_rfc3339),
        }
    }
}

/// A token just minted (`POST /api/tokens`) or rotated
/// (`POST /api/tokens/{id}/rotate`): its info, its secret `token` (shown
/// this once) and, for a rotation, the token it `replaced`.
///
/// On the wire its fields (and `replaced`'s) come in name order, not in
/// [`TokenInfo`]'s: the answer has always been built as a JSON map.
#[derive(Debug, Deserialize)]
pub(crate) struct MintedToken<'a> {
    pub token: SecretText<'a>,
    #[serde(default)]
    pub replaced: Option<TokenInfo>,
    #[serde(flatten)]
    pub info: TokenInfo,
}

impl Serialize for MintedToken<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        /// A field's value: plain JSON, or the secret, written from its
        /// borrow (no copy of it is made).
        enum Field<'v> {
            Plain(&'v Value),
            Secret(&'v SecretText<'v>),
        }
        impl Serialize for Field<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    Field::Plain(v) => v.serialize(s),
                    Field::Secret(t) => t.serialize(s),
                }
            }
        }
        let info = serde_json::to_value(&self.info).map_err(S::Error::custom)?;
        let replaced = self
            .replaced
            .as_ref()
            .map(serde_json::to_value)
            .transpose()
            .map_err(S::Error::custom)?;
        let Value::Object(info) = &info else {
            return Err(S::Error::custom("a token's info is not a JSON object"));
        };
        let mut fields: Vec<(&str, Field<'_>)> = info
            .iter()
            .map(|(k, v)| (k.as_str(), Field::Plain(v)))
            .collect();
        fields.push(("token", Field::Secret(&self.token)));
        if let Some(r) = &replaced {
            fields.push(("replaced", Field::Plain(r)));
        }
        fields.sort_by(|a, b| a.0.cmp(b.0));
        let mut map = s.serialize_map(Some(fields.len()))?;
        for (name, value) in &fields {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// The answer of `GET /api/whoami`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WhoAmI {
    pub name: String,
    pub id: String,
    /// The scopes the token holds in effect (`admin` grants every scope,
    /// so an admin token lists all five).
    pub scopes: Vec<String>,
    /// The providers the token is limited to; `null` for every provider.
    pub providers: Option<Vec<String>>,
}
