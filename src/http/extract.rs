//! Extractors: the bodies and queries of the routes as typed structs
//! (serde), each refusal a 422 (or 400 for a malformed query) naming what
//! to send. The secret of a new key is read straight into a zeroizing
//! [`SecretString`]; the JSON value it came from is consumed.

use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use crate::access::Role;
use crate::secret::SecretString;

/// `POST /api/keys`: `{provider, key_name, api_key, ttl_seconds?}`.
#[derive(Deserialize)]
pub(super) struct NewKeyBody {
    pub(super) provider: String,
    pub(super) key_name: String,
    pub(super) api_key: SecretString,
    #[serde(default)]
    pub(super) ttl_seconds: Option<i64>,
}

impl From<NewKeyBody> for crate::vault::NewKey {
    fn from(b: NewKeyBody) -> crate::vault::NewKey {
        crate::vault::NewKey {
            provider: b.provider,
            key_name: b.key_name,
            api_key: b.api_key,
            ttl_seconds: b.ttl_seconds,
        }
    }
}

/// `POST /api/tokens`: `{name, role, providers?}`.
#[derive(Deserialize)]
pub(super) struct NewTokenBody {
    pub(super) name: String,
    pub(super) role: String,
    #[serde(default)]
    pub(super) providers: Option<Vec<String>>,
}

impl NewTokenBody {
    /// The role, checked.
    pub(super) fn role(&self) -> Result<Role, ApiError> {
        self.role.parse().map_err(|e: crate::access::UnknownRole| {
            ApiError::invalid(format!("field `role`: {e}"))
        })
    }
}

/// `GET /api/keys?provider=`.
#[derive(Deserialize, Default)]
pub(super) struct ListQuery {
    #[serde(default)]
    pub(super) provider: Option<String>,
}

/// Reads a JSON body into `T`, naming what is wrong (`shape` says what to
/// send).
pub(super) fn body<T: serde::de::DeserializeOwned>(
    value: Value,
    shape: &str,
) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::invalid(format!(
            "the body must be a JSON object {shape}"
        )));
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::invalid(format!("the body does not fit {shape}: {e}")))
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
        let e = body::<NewTokenBody>(serde_json::json!({"role": "reader"}), "{name, role}")
            .err()
            .unwrap();
        assert!(e.detail.contains("`name`"), "{}", e.detail);
        let e = body::<NewKeyBody>(
            serde_json::json!({"provider": 5, "key_name": "k", "api_key": "x"}),
            "{provider, key_name, api_key}",
        )
        .err()
        .unwrap();
        assert_eq!(e.status, http::StatusCode::UNPROCESSABLE_ENTITY);
        assert!(body::<NewKeyBody>(serde_json::json!([1]), "{}").is_err());
        let ok = body::<NewKeyBody>(
            serde_json::json!({"provider": "p", "key_name": "k", "api_key": "sk", "extra": 1}),
            "{}",
        )
        .ok()
        .unwrap();
        assert_eq!(ok.api_key.expose(), "sk");
    }

    #[test]
    fn an_empty_query_value_is_absent_and_unknown_parameters_are_ignored() {
        let q: ListQuery = query("provider=").unwrap();
        assert!(q.provider.is_none());
        let q: ListQuery = query("provider=claude&other=1").unwrap();
        assert_eq!(q.provider.as_deref(), Some("claude"));
    }
}
