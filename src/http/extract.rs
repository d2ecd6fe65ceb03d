//! Extractors: the bodies and queries of the routes as typed structs
//! (serde), each refusal a 422 (or 400 for a malformed query) naming what
//! to send. The bodies are the wire types (`crate::wire`); the secret of
//! a new key is read straight into a zeroizing string; the JSON value it
//! came from is consumed.

use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use crate::access::Role;
use crate::wire;

impl From<wire::NewKey<'_>> for crate::vault::NewKey {
    fn from(b: wire::NewKey<'_>) -> crate::vault::NewKey {
        crate::vault::NewKey {
            provider: b.provider,
            key_name: b.key_name,
            api_key: b.api_key.into_secret(),
            ttl_seconds: b.ttl_seconds,
        }
    }
}

/// The role of a new token (`POST /api/tokens`), checked.
pub(super) fn role_of(body: &wire::NewToken) -> Result<Role, ApiError> {
    body.role
        .parse()
        .map_err(|e: crate::access::UnknownRole| ApiError::invalid(format!("field `role`: {e}")))
}

/// `GET /api/keys?provider=&deleted=&expiring_within=&expired=`.
#[derive(Deserialize, Default)]
pub(super) struct ListQuery {
    #[serde(default)]
    pub(super) provider: Option<String>,
    #[serde(default)]
    pub(super) deleted: Option<String>,
    #[serde(default)]
    pub(super) expiring_within: Option<String>,
    #[serde(default)]
    pub(super) expired: Option<String>,
}

impl ListQuery {
    /// The listing's filter, each parameter checked.
    pub(super) fn filter(self) -> Result<crate::vault::KeyFilter, ApiError> {
        let expiring_within_us = match self.expiring_within.as_deref() {
            None => None,
            Some(d) => {
                let secs: crate::duration::Seconds = d.parse().map_err(|_| {
                    ApiError::invalid(
                        "query parameter `expiring_within` must be a duration: seconds, or with \
                         a unit (12h, 7d, 30d)",
                    )
                })?;
                let secs = secs.0.min(crate::duration::MAX_TTL_SECONDS as u64) as i64;
                Some(secs * 1_000_000)
            }
        };
        Ok(crate::vault::KeyFilter {
            provider: self.provider,
            deleted: flag(self.deleted.as_deref(), "deleted")?,
            expiring_within_us,
            expired: flag(self.expired.as_deref(), "expired")?,
        })
    }
}

/// `DELETE /api/keys/{id}?purge=true`.
#[derive(Deserialize, Default)]
pub(super) struct DeleteQuery {
    #[serde(default)]
    pub(super) purge: Option<String>,
}

/// `GET /api/keys/{id}?version=N`.
#[derive(Deserialize, Default)]
pub(super) struct RevealQuery {
    #[serde(default)]
    pub(super) version: Option<String>,
}

impl RevealQuery {
    /// The version asked for; 0 when `version` is not a version number
    /// (the vault refuses 0 after the limiter and the token, recorded).
    pub(super) fn version(&self) -> Option<u32> {
        self.version
            .as_deref()
            .map(|v| v.parse::<u32>().unwrap_or(0))
    }
}

/// A boolean query parameter: `true`/`false` (or 1/0); absent is false.
pub(super) fn flag(value: Option<&str>, name: &str) -> Result<bool, ApiError> {
    match value {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(_) => Err(ApiError::invalid(format!(
            "query parameter `{name}` must be true or false"
        ))),
    }
}

impl From<wire::NewVersion<'_>> for crate::vault::NewVersion {
    fn from(b: wire::NewVersion<'_>) -> crate::vault::NewVersion {
        crate::vault::NewVersion {
            api_key: b.api_key.into_secret(),
            ttl_seconds: b.ttl_seconds,
        }
    }
}

/// `PUT /api/keys/{id}`.
pub(super) const NEW_VERSION: Shape = &[
    ("api_key", Kind::Str, true),
    ("ttl_seconds", Kind::Int, false),
];

/// The JSON type a field must have.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Str,
    /// A whole number.
    Int,
    /// A list of strings.
    Strs,
}

/// A body's fields: name, type, required.
pub(super) type Shape = &'static [(&'static str, Kind, bool)];

/// `POST /api/keys`.
pub(super) const NEW_KEY: Shape = &[
    ("provider", Kind::Str, true),
    ("key_name", Kind::Str, true),
    ("api_key", Kind::Str, true),
    ("ttl_seconds", Kind::Int, false),
];

/// `POST /api/tokens`.
pub(super) const NEW_TOKEN: Shape = &[
    ("name", Kind::Str, true),
    ("role", Kind::Str, true),
    ("providers", Kind::Strs, false),
    ("ttl_seconds", Kind::Int, false),
];

/// `POST /api/tokens/{id}/rotate`.
pub(super) const ROTATE_TOKEN: Shape = &[("overlap_seconds", Kind::Int, false)];

/// Reads a JSON body into `T` after checking it against `shape`, so a
/// refusal names the field and what it must be (serde's own messages do
/// not name the field). Fields not in the shape are ignored.
pub(super) fn body<T: serde::de::DeserializeOwned>(
    value: Value,
    shape: Shape,
) -> Result<T, ApiError> {
    let names: Vec<&str> = shape.iter().map(|(n, _, _)| *n).collect();
    let Some(obj) = value.as_object() else {
        return Err(ApiError::invalid(format!(
            "the body must be a JSON object with {}",
            names.join(", ")
        )));
    };
    for (name, kind, required) in shape {
        match obj.get(*name) {
            None | Some(Value::Null) if *required => {
                return Err(ApiError::invalid(format!("field `{name}` is required")))
            }
            None | Some(Value::Null) => {}
            Some(v) => {
                let fits = match kind {
                    Kind::Str => v.is_string(),
                    Kind::Int => v.is_i64(),
                    Kind::Strs => v
                        .as_array()
                        .is_some_and(|items| items.iter().all(Value::is_string)),
                };
                if !fits {
                    let what = match kind {
                        Kind::Str => "a string",
                        Kind::Int => "a whole number",
                        Kind::Strs => "a list of strings",
                    };
                    return Err(ApiError::invalid(format!("field `{name}` must be {what}")));
                }
            }
        }
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::invalid(format!("the body does not fit {}: {e}", names.join(", "))))
}

/// Reads a query string into `T`; an empty value counts as absent.
pub(super) fn query<T: serde::de::DeserializeOwned + Default>(raw: &str) -> Result<T, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|_| ApiError::bad_request("the query string is malformed"))?;
    let kept: Vec<(String, String)> = pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    let encoded = serde_urlencoded::to_string(&kept)
        .map_err(|_| ApiError::bad_request("the query string is malformed"))?;
    serde_urlencoded::from_str(&encoded)
        .map_err(|e| ApiError::invalid(format!("a query parameter is invalid: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_names_what_is_missing_or_of_the_wrong_type() {
        let e = body::<wire::NewToken>(serde_json::json!({"role": "reader"}), NEW_TOKEN)
            .err()
            .unwrap();
        assert!(e.detail.contains("`name` is required"), "{}", e.detail);
        let e = body::<wire::NewKey<'static>>(
            serde_json::json!({"provider": 5, "key_name": "k", "api_key": "x"}),
            NEW_KEY,
        )
        .err()
        .unwrap();
        assert_eq!(e.status, http::StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            e.detail.contains("`provider` must be a string"),
            "{}",
            e.detail
        );
        let e = body::<wire::NewKey<'static>>(
            serde_json::json!({"provider": "p", "key_name": "k", "api_key": "x", "ttl_seconds": 1.5}),
            NEW_KEY,
        )
        .err()
        .unwrap();
        assert!(e.detail.contains("`ttl_seconds`"), "{}", e.detail);
        assert!(body::<wire::NewKey<'static>>(serde_json::json!([1]), NEW_KEY).is_err());
        let ok = body::<wire::NewKey<'static>>(
            serde_json::json!({"provider": "p", "key_name": "k", "api_key": "sk", "extra": 1}),
            NEW_KEY,
        )
        .ok()
        .unwrap();
        assert_eq!(ok.api_key.expose(), "sk");
    }

    #[test]
    fn an_empty_query_value_is_absent_and_unknown_names_are_left_to_the_query_guard() {
        let q: ListQuery = query("provider=").unwrap();
        assert!(q.provider.is_none());
        let q: ListQuery = query("provider=claude&other=1").unwrap();
        assert_eq!(q.provider.as_deref(), Some("claude"));
    }
}
