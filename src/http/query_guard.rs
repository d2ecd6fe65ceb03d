//! Query parameters a route does not know answer 422 on every route, before
//! the handler runs: a misspelt filter (`/api/keys?expird=true`) used to
//! list everything, and a route that takes no query ignored one silently.
//! The names each route knows are public (the OpenAPI document lists them),
//! so refusing before the token is checked tells a caller nothing new.

use http::Method;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::error::ApiError;
use super::request::{self, form_pairs};
use super::route_patterns::{route_label, ROUTES};

/// The query parameters of each route that takes any; every other route
/// in [`ROUTES`] takes none.
pub(crate) const QUERY_PARAMS: &[(&str, &str, &[&str])] = &[
    (
        "GET",
        "/api/keys",
        &["provider", "deleted", "expiring_within", "expired"],
    ),
    ("GET", "/api/keys/{id}", &["version"]),
    ("DELETE", "/api/keys/{id}", &["purge"]),
    (
        "GET",
        "/api/audit",
        &[
            "since",
            "until",
            "key_id",
            "caller",
            "outcome",
            "action",
            "format",
            "limit",
            "before_seq",
            "after_seq",
            "order",
        ],
    ),
    (
        "GET",
        "/api/audit/stats",
        &[
            "since", "until", "key_id", "caller", "outcome", "action", "bucket",
        ],
    ),
];

/// The parameters `method` on the route pattern `route` knows.
pub fn known(method: &str, route: &str) -> &'static [&'static str] {
    QUERY_PARAMS
        .iter()
        .find(|(m, p, _)| *m == method && *p == route)
        .map_or(&[], |(_, _, names)| names)
}

/// The refusal of `query` on this request, if it names a parameter its
/// route does not know (or cannot be read). Unknown paths and methods pass:
/// the route table answers them.
pub(crate) fn check(method: &Method, path: &str, query: &str) -> Option<ApiError> {
    if query.is_empty() {
        return None;
    }
    let route = route_label(method, path);
    if !ROUTES
        .iter()
        .any(|(m, p)| *m == method.as_str() && *p == route)
    {
        return None;
    }
    let pairs = match form_pairs(query) {
        Ok(pairs) => pairs,
        Err(e) => return Some(e),
    };
    let names = known(method.as_str(), route);
    let (name, _) = pairs.iter().find(|(k, _)| !names.contains(&k.as_str()))?;
    let shown: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
    Some(ApiError::invalid(match names {
        [] => format!(
            "query parameter `{shown}` is not known: {method} {route} takes no query \
             parameters, send it without one"
        ),
        [only] => {
            format!("query parameter `{shown}` is not known: {method} {route} takes only `{only}`")
        }
        _ => format!(
            "query parameter `{shown}` is not known: {method} {route} takes {}",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }))
}

/// Answers a request whose query names an unknown parameter; rejects (as
/// not found, the weakest rejection) every other request, which the route
/// table then serves. The request's context is built only for a refusal.
pub(super) fn guard(state: super::State) -> BoxedFilter<(Response,)> {
    warp::method()
        .and(warp::path::full())
        .and(request::query())
        .and_then(
            |method: Method, path: warp::path::FullPath, query: String| async move {
                match check(&method, path.as_str(), &query) {
                    Some(refusal) => Ok::<_, Rejection>(refusal),
                    None => Err(warp::reject::not_found()),
                }
            },
        )
        .and(request::ctx(state))
        .map(|refusal: ApiError, ctx: super::context::Ctx| ctx.error(&refusal))
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_route_exists() {
        for (m, p, _) in QUERY_PARAMS {
            assert!(ROUTES.contains(&(m, p)), "{m} {p} is not a route");
        }
    }

    #[test]
    fn unknown_names_are_refused_and_known_ones_pass() {
        let get = Method::GET;
        let e = check(&get, "/api/keys", "expird=true").unwrap();
        assert_eq!(e.status, http::StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.detail.contains("`expird`"), "{}", e.detail);
        assert!(e.detail.contains("`expired`"), "{}", e.detail);
        assert!(check(&get, "/api/keys/", "provider=a&expired=true").is_none());
        assert!(check(&get, "/api/keys/abc", "version=2").is_none());
        assert!(check(&get, "/api/keys/abc", "purge=true").is_some());
        assert!(check(&Method::DELETE, "/api/keys/abc", "purge=true").is_none());
        let e = check(&get, "/api/whoami", "x").unwrap();
        assert!(e.detail.contains("takes no query"), "{}", e.detail);
        // An empty value still names the parameter.
        assert!(check(&get, "/api/tokens", "verbose=").is_some());
        // Unknown paths and methods are left to the route table.
        assert!(check(&get, "/nope", "x=1").is_none());
        assert!(check(&Method::PATCH, "/api/keys", "x=1").is_none());
        assert!(check(&get, "/api/keys", "").is_none());
    }
}
