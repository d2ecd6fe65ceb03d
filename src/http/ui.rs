//! The console: a read-only audit and keys page embedded in the binary,
//! served at `GET /ui/` with its assets under `/ui/assets/`.
//!
//! The page itself needs no token; every call it makes to `/api` carries
//! the access token the user pastes in, as a Bearer header, and the token
//! lives only in the page's memory. What this module owns is what the
//! browser is told: the asset names carry a hash of their contents (so
//! they can be cached for a year), and every answer under `/ui` carries
//! the same strict security headers (no inline script or style, calls only
//! to this origin, never framed, no referrer). The page's files are in
//! `src/http/ui/`; written by hand, no library.
//!
//! Not for: anything that reads or changes the vault (that is the API).

use std::sync::OnceLock;

use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use http::{Method, StatusCode};
use sha2::{Digest, Sha256};
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::context::{json_response, RequestId};
use crate::vault::{Action, Outcome};

/// The page's Content-Security-Policy: scripts and styles only from files
/// of this origin (no inline code), calls only to this origin, no plugins,
/// no framing, no form posts anywhere (the sign-in form is handled by the
/// script; were it ever submitted, the token must not land in a URL).
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

const INDEX: &str = include_str!("ui/index.html");
const APP_JS: &[u8] = include_bytes!("ui/app.js");
const APP_CSS: &[u8] = include_bytes!("ui/app.css");

/// One embedded file, under its content-hashed name.
struct Asset {
    name: String,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// The page and its assets, named once per process.
struct Console {
    index: String,
    assets: Vec<Asset>,
}

fn hashed(stem: &str, ext: &str, bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{stem}.{hex}.{ext}")
}

fn console() -> &'static Console {
    static CONSOLE: OnceLock<Console> = OnceLock::new();
    CONSOLE.get_or_init(|| {
        let js = hashed("app", "js", APP_JS);
        let css = hashed("app", "css", APP_CSS);
        // The outcome and action names come from the audit module (one
        // source of truth), handed to the script as data attributes.
        let outcomes: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        let actions: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        let index = INDEX
            .replace("{{app.js}}", &js)
            .replace("{{app.css}}", &css)
            .replace("{{outcomes}}", &outcomes.join(","))
            .replace("{{actions}}", &actions.join(","))
            .replace("{{version}}", env!("CARGO_PKG_VERSION"));
        Console {
            index,
            assets: vec![
                Asset {
                    name: js,
                    content_type: "text/javascript; charset=utf-8",
                    bytes: APP_JS,
                },
                Asset {
                    name: css,
                    content_type: "text/css; charset=utf-8",
                    bytes: APP_CSS,
                },
            ],
        }
    })
}

/// The content-hashed names of the page's assets (for tests and docs).
pub fn asset_names() -> Vec<String> {
    console().assets.iter().map(|a| a.name.clone()).collect()
}

/// Everything under `/ui`: the page, its assets, and a 404/405 for the
/// rest, each with the console's security headers.
pub(crate) fn routes() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path("ui")
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::ext::optional::<RequestId>())
        .map(|method: Method, full: FullPath, id: Option<RequestId>| {
            let mut r = answer(&method, full.as_str());
            if r.status().is_client_error() {
                // An error answer names its request, as the API's do.
                let id = id.map_or_else(|| uuid::Uuid::new_v4().to_string(), |id| id.0);
                if let Ok(v) = HeaderValue::from_str(&id) {
                    r.headers_mut().insert("x-request-id", v);
                }
            }
            with_security_headers(r)
        })
}

fn answer(method: &Method, path: &str) -> Response {
    if method != Method::GET && method != Method::HEAD {
        let mut r = json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"detail": "the console is read-only: only GET is served under /ui"}),
        );
        r.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return no_store(r);
    }
    let c = console();
    match path {
        // Relative, so the page also works behind a proxy's path prefix.
        "/ui" => {
            let mut r = Response::new(Vec::new().into());
            *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
            r.headers_mut()
                .insert(LOCATION, HeaderValue::from_static("ui/"));
            no_store(r)
        }
        "/ui/" => {
            let mut r = Response::new(c.index.clone().into());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            // Always fetched again: it names the current assets.
            no_store(r)
        }
        _ => {
            let asset = path
                .strip_prefix("/ui/assets/")
                .and_then(|name| c.assets.iter().find(|a| a.name == name));
            match asset {
                Some(a) => {
                    let mut r = Response::new(a.bytes.into());
                    let h = r.headers_mut();
                    h.insert(CONTENT_TYPE, HeaderValue::from_static(a.content_type));
                    h.insert(
                        CACHE_CONTROL,
                        HeaderValue::from_static("public, max-age=31536000, immutable"),
                    );
                    r
                }
                None => no_store(json_response(
                    StatusCode::NOT_FOUND,
                    &serde_json::json!({"detail": "no such page or asset: open /ui/"}),
                )),
            }
        }
    }
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The headers every answer under `/ui` carries.
fn with_security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), clipboard-read=()"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_names_carry_a_hash_of_their_contents() {
        let names = asset_names();
        assert_eq!(names.len(), 2);
        assert!(names[0].starts_with("app.") && names[0].ends_with(".js"));
        assert_eq!(names[0], hashed("app", "js", APP_JS));
        assert_ne!(hashed("app", "js", b"a"), hashed("app", "js", b"b"));
        // The page names exactly these, and no placeholder is left.
        let index = &console().index;
        for n in &names {
            assert!(index.contains(&format!("assets/{n}")), "{n}");
        }
        assert!(!index.contains("{{"));
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let index = &console().index;
        assert!(!index.contains("<script>"));
        assert!(!index.contains("style="));
        assert!(!index.contains("<style"));
        for handler in [
            "onclick=",
            "onload=",
            "onerror=",
            "onsubmit=",
            "javascript:",
        ] {
            assert!(!index.contains(handler), "{handler}");
        }
    }
}
