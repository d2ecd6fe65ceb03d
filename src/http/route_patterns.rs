//! Every route the API serves, as data: its method and path pattern
//! ([`ROUTES`]), and the pattern a request path falls under
//! ([`route_label`]). One source of truth for the metrics' `route` label,
//! the request log, the query guard and the OpenAPI document's test
//! (tests/openapi.rs: each route here is documented and served). The
//! filters that serve these routes are in `routes.rs`.
//!
//! Not for: filters or handlers (this module imports none, so every other
//! module can read the table).

/// Every route the API serves: method and path pattern. One source of
/// truth for the metrics' `route` label, the request log and the OpenAPI
/// document's test.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/keys"),
    ("GET", "/api/keys"),
    ("GET", "/api/keys/{id}"),
    ("DELETE", "/api/keys/{id}"),
    ("PUT", "/api/keys/{id}"),
    ("GET", "/api/keys/{id}/versions"),
    ("POST", "/api/keys/{id}/restore"),
    ("POST", "/api/keys/{id}/versions/{n}/restore"),
    ("GET", "/api/providers/{provider}/key"),
    ("GET", "/api/providers/{provider}/keys/{key_name}"),
    ("POST", "/api/reveal"),
    ("GET", "/api/tokens"),
    ("POST", "/api/tokens"),
    ("GET", "/api/tokens/{id}"),
    ("DELETE", "/api/tokens/{id}"),
    ("POST", "/api/tokens/{id}/rotate"),
    ("GET", "/api/audit"),
    ("GET", "/api/audit/verify"),
    ("GET", "/api/audit/stats"),
    ("GET", "/api/whoami"),
    ("POST", "/api/admin/rotate"),
    ("POST", "/api/admin/reload"),
    ("GET", "/api/admin/backup"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/ui/"),
    ("GET", "/ui/assets/{name}"),
];

/// The route pattern a request path falls under (`unmatched` for none):
/// ids never become labels. Called for every request (the metrics' label
/// and the request log), so it allocates nothing.
pub(crate) fn route_label(method: &http::Method, path: &str) -> &'static str {
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    ROUTES
        .iter()
        .filter(|(_, p)| fits(p, path))
        // A literal route beats a pattern (`/api/audit/verify`).
        .min_by_key(|(m, p)| (*m != method.as_str(), p.contains('{')))
        .map_or("unmatched", |(_, p)| p)
}

/// Whether `path` (its trailing `/` trimmed) fits `pattern`: as many
/// segments, each equal or a `{capture}` of a non-empty segment.
/// Split as bytes: `/` is never part of a longer UTF-8 sequence, and a
/// byte loop is quicker than a `char` searcher on segments this short.
fn fits(pattern: &str, path: &str) -> bool {
    let slash = |b: &u8| *b == b'/';
    let mut want = pattern.trim_end_matches('/').as_bytes().split(slash);
    let mut got = path.as_bytes().split(slash);
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if (a.first() == Some(&b'{') && !b.is_empty()) || a == b => {}
            _ => return false,
        }
    }
}
