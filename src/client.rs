//! The HTTP client behind `keyhold exec`, `keyhold keys …` and
//! `keyhold token … --remote`.
//!
//! The address comes from `--addr` / `KEYHOLD_ADDR`, the access token from
//! `KEYHOLD_TOKEN` or `--token-file` (never argv). `https://` uses rustls
//! with the system's roots, plus `--ca-cert` for a private CA.
//!
//! Over 500 lines: one method per route the CLI calls, each a few lines
//! over the same `send`; split, they would repeat its error handling.
//!
//! Not for: the server side (see `http`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::io::Read;

use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::secret::{SecretString, SecretText};
use crate::wire::{
    Done, ErrorBody, KeyMeta, KeyRef, MintedToken, NewKey, NewToken, NewVersion, RevealBatch,
    RevealedBatch, RevealedKey, RotateToken, TokenInfo, VersionMeta,
};

mod hints;
mod tls_hint;

/// Default server address.
pub(crate) const DEFAULT_ADDR: &str = "http://127.0.0.1:8787";

/// Why a client call failed. Messages say what to do; none holds a secret.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("no access token: set KEYHOLD_TOKEN or pass --token-file FILE (make one with `keyhold token create`)")]
    NoToken,
    #[error("cannot read the token file {path}: {error}")]
    TokenFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("invalid server address `{0}`: use http://HOST:PORT, https://HOST:PORT, HOST:PORT (http on loopback, https elsewhere) or unix:/PATH (KEYHOLD_ADDR or --addr)")]
    BadAddr(String),
    #[error("cannot use the CA certificate {path}: {detail}")]
    CaCert { path: PathBuf, detail: String },
    #[error("cannot reach keyhold at {addr}: {detail}; check KEYHOLD_ADDR (or --addr) and that the server is running")]
    Unreachable { addr: String, detail: String },
    #[error("cannot connect securely to keyhold at {addr}: {detail}")]
    Tls { addr: String, detail: String },
    #[error("{}", api_message(*status, detail, *retry_after))]
    Api {
        status: u16,
        detail: String,
        retry_after: Option<u64>,
        /// A batch reveal's refused keys (`POST /api/reveal`'s `failed`):
        /// each one's place in the request, status and detail.
        failed: Vec<(usize, u16, String)>,
    },
    #[error("unexpected answer from keyhold: {0}")]
    Protocol(String),
}

fn api_message(status: u16, detail: &str, retry_after: Option<u64>) -> String {
    let hint = match status {
        401 => " (check KEYHOLD_TOKEN / --token-file)",
        403 => " (the token lacks the scope or provider; ask an admin)",
        429 => "",
        _ => "",
    };
    // The server's own detail may say when already (its 429 does).
    let retry = retry_after
        .filter(|_| !detail.contains("retry in"))
        .map(|s| format!("; retry in {s} s"))
        .unwrap_or_default();
    let detail = hints::for_commands(detail);
    format!("keyhold answered {status}: {detail}{hint}{retry}")
}

/// Where a client command finds the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServerAddr {
    /// `http://…` or `https://…`, without a trailing slash.
    Url(String),
    /// A Unix-socket listener (`serve --listen unix:PATH`).
    Unix(PathBuf),
}

impl ServerAddr {
    /// Reads `http://HOST:PORT`, `https://HOST:PORT`, `unix:/PATH`, or a
    /// bare `HOST:PORT` (http on a loopback host — `localhost`,
    /// 127.0.0.0/8, `::1` — and https anywhere else). Host names are fine.
    pub(crate) fn parse(addr: &str) -> Result<ServerAddr, ClientError> {
        let bad = || ClientError::BadAddr(addr.into());
        let text = addr.trim();
        if let Some(path) = text.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(ServerAddr::Unix(PathBuf::from(path)));
        }
        let with_scheme = if text.contains("://") {
            text.to_string()
        } else {
            let host = reqwest::Url::parse(&format!("http://{text}"))
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .ok_or_else(bad)?;
            let scheme = if is_loopback_host(&host) {
                "http"
            } else {
                "https"
            };
            format!("{scheme}://{text}")
        };
        let base = with_scheme.trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base).map_err(|_| bad())?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(bad());
        }
        Ok(ServerAddr::Url(base))
    }
}

/// `localhost`, 127.0.0.0/8 and `::1` (as a URL host, brackets and all).
fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A revealed key, as `GET /api/keys/{id}` and the other reveals answer
/// it. `api_key` is zeroized on drop and never printed by Debug.
pub(crate) type Revealed = RevealedKey<'static>;

/// Reads the access token: `--token-file` if given, else `KEYHOLD_TOKEN`.
pub(crate) fn token_from(token_file: Option<&Path>) -> Result<SecretString, ClientError> {
    if let Some(path) = token_file {
        let text = std::fs::read_to_string(path).map_err(|error| ClientError::TokenFile {
            path: path.to_path_buf(),
            error,
        })?;
        let t = SecretString::new(text.trim().to_string());
        if t.expose().is_empty() {
            return Err(ClientError::NoToken);
        }
        return Ok(t);
    }
    match std::env::var("KEYHOLD_TOKEN") {
        Ok(t) if !t.trim().is_empty() => Ok(SecretString::new(t.trim().to_string())),
        _ => Err(ClientError::NoToken),
    }
}

/// A connection to one keyhold server with one token.
pub(crate) struct Client {
    http: reqwest::blocking::Client,
    base: String,
    /// The address as the user gave it (a URL, or `unix:PATH`), for messages.
    shown: String,
    token: SecretString,
    /// Whether `--ca-cert` was given (said when the server's certificate
    /// is refused).
    ca_given: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.shown)
            .finish_non_exhaustive()
    }
}

/// How long `keys delete --purge` waits for its answer.
const PURGE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a backup download may take in all (the server's snapshot,
/// then the transfer).
pub(crate) const BACKUP_TIMEOUT: Duration = Duration::from_secs(3600);

impl Client {
    pub(crate) fn new(
        addr: &str,
        token: SecretString,
        ca_cert: Option<&Path>,
    ) -> Result<Client, ClientError> {
        let target = ServerAddr::parse(addr)?;
        let mut builder = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("keyhold/", env!("CARGO_PKG_VERSION")));
        let (base, shown) = match target {
            ServerAddr::Url(url) => (url.clone(), url),
            ServerAddr::Unix(path) => {
                let shown = format!("unix:{}", path.display());
                builder = builder.unix_socket(path);
                // Every request goes to the socket; the host only fills
                // the Host header.
                ("http://localhost".to_string(), shown)
            }
        };
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path).map_err(|e| ClientError::CaCert {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ClientError::CaCert {
                    path: path.to_path_buf(),
                    detail: format!("not a PEM certificate ({e})"),
                })?;
            if certs.is_empty() {
                return Err(ClientError::CaCert {
                    path: path.to_path_buf(),
                    detail: "no certificate in the file".into(),
                });
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(Client {
            http,
            base,
            shown,
            token,
            ca_given: ca_cert.is_some(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn send(
        &self,
        req: reqwest::blocking::RequestBuilder,
    ) -> Result<reqwest::blocking::Response, ClientError> {
        let resp =
            req.bearer_auth(self.token.expose()).send().map_err(|e| {
                match tls_hint::hint(&e, self.ca_given) {
                    Some(detail) => ClientError::Tls {
                        addr: self.shown.clone(),
                        detail,
                    },
                    None => ClientError::Unreachable {
                        addr: self.shown.clone(),
                        detail: describe(&e),
                    },
                }
            })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        // A refusal without the usual body (a proxy's page) still says
        // its status.
        let body = resp.json::<ErrorBody>().ok();
        let (detail, failed) = match body {
            Some(b) => (
                b.detail,
                b.failed
                    .into_iter()
                    .map(|f| (f.index, f.status, f.detail))
                    .collect(),
            ),
            None => ("(no detail)".to_string(), Vec::new()),
        };
        Err(ClientError::Api {
            status,
            detail,
            retry_after,
            failed,
        })
    }

    /// Reads an answer as `T`, into a buffer that is wiped when dropped
    /// (an answer may hold a key or a token).
    fn json<T: DeserializeOwned>(mut resp: reqwest::blocking::Response) -> Result<T, ClientError> {
        let mut body = Zeroizing::new(Vec::new());
        resp.read_to_end(&mut body).map_err(|e| {
            ClientError::Protocol(format!("the answer could not be read to its end ({e})"))
        })?;
        decode(&body)
    }

    /// The newest live key of `provider`. `purpose` (the program the key
    /// is for) goes to the audit record.
    pub(crate) fn reveal_newest(
        &self,
        provider: &str,
        purpose: Option<&str>,
    ) -> Result<Revealed, ClientError> {
        let mut req = self
            .http
            .get(self.url(&format!("/api/providers/{}/key", encode(provider))));
        if let Some(p) = purpose {
            req = req.header("X-Keyhold-Purpose", p);
        }
        Self::revealed(self.send(req)?)
    }

    /// The newest live key of `provider` named `key_name`
    /// (`GET /api/providers/{provider}/keys/{key_name}`). 404 when there
    /// is none.
    pub(crate) fn reveal_newest_named(
        &self,
        provider: &str,
        key_name: &str,
        purpose: Option<&str>,
    ) -> Result<Revealed, ClientError> {
        let mut req = self.http.get(self.url(&format!(
            "/api/providers/{}/keys/{}",
            encode(provider),
            encode(key_name)
        )));
        if let Some(p) = purpose {
            req = req.header("X-Keyhold-Purpose", p);
        }
        Self::revealed(self.send(req)?)
    }

    /// Several keys in one request (`POST /api/reveal`), all or none, in
    /// the order asked: each `(provider, None)` is the provider's newest
    /// live key, `(provider, Some(name))` the newest live key of that name.
    pub(crate) fn reveal_batch(
        &self,
        refs: &[(&str, Option<&str>)],
        purpose: Option<&str>,
    ) -> Result<Vec<Revealed>, ClientError> {
        let body = RevealBatch {
            keys: refs
                .iter()
                .map(|(provider, name)| KeyRef {
                    provider: Some(provider.to_string()),
                    key_name: name.map(str::to_string),
                    ..KeyRef::default()
                })
                .collect(),
        };
        let mut req = self.http.post(self.url("/api/reveal")).json(&body);
        if let Some(p) = purpose {
            req = req.header("X-Keyhold-Purpose", p);
        }
        let got: RevealedBatch<'static> = Self::json(self.send(req)?)?;
        if got.keys.len() != refs.len() {
            return Err(ClientError::Protocol(format!(
                "asked for {} keys, the answer holds {}",
                refs.len(),
                got.keys.len()
            )));
        }
        Ok(got.keys)
    }

    /// One key by id: its current version, or version `version`.
    pub(crate) fn reveal(&self, id: &str, version: Option<u32>) -> Result<Revealed, ClientError> {
        let mut req = self
            .http
            .get(self.url(&format!("/api/keys/{}", encode(id))));
        if let Some(v) = version {
            req = req.query(&[("version", v)]);
        }
        Self::revealed(self.send(req)?)
    }

    /// Stores a new version of key `id`; returns its metadata.
    pub(crate) fn put(
        &self,
        id: &str,
        api_key: &SecretString,
        ttl: Option<u64>,
    ) -> Result<KeyMeta, ClientError> {
        let body = NewVersion {
            api_key: SecretText::Borrowed(api_key.expose()),
            ttl_seconds: ttl.map(seconds),
        };
        Self::json(
            self.send(
                self.http
                    .put(self.url(&format!("/api/keys/{}", encode(id))))
                    .json(&body),
            )?,
        )
    }

    /// The versions of key `id`, oldest first.
    pub(crate) fn versions(&self, id: &str) -> Result<Vec<VersionMeta>, ClientError> {
        Self::json(
            self.send(
                self.http
                    .get(self.url(&format!("/api/keys/{}/versions", encode(id)))),
            )?,
        )
    }

    /// Brings back a deleted key within its recovery window.
    pub(crate) fn restore(&self, id: &str) -> Result<KeyMeta, ClientError> {
        Self::json(
            self.send(
                self.http
                    .post(self.url(&format!("/api/keys/{}/restore", encode(id)))),
            )?,
        )
    }

    fn revealed(resp: reqwest::blocking::Response) -> Result<Revealed, ClientError> {
        Self::json(resp)
    }

    /// Key metadata with more query parameters (`deleted`,
    /// `expiring_within`, `expired`).
    pub(crate) fn list_with(
        &self,
        provider: Option<&str>,
        params: &[(&str, String)],
    ) -> Result<Vec<KeyMeta>, ClientError> {
        let mut req = self.http.get(self.url("/api/keys"));
        if let Some(p) = provider {
            req = req.query(&[("provider", p)]);
        }
        if !params.is_empty() {
            req = req.query(params);
        }
        Self::json(self.send(req)?)
    }

    /// Stores a key; returns its metadata.
    pub(crate) fn add(
        &self,
        provider: &str,
        name: &str,
        api_key: &SecretString,
        ttl: Option<u64>,
    ) -> Result<KeyMeta, ClientError> {
        let body = NewKey {
            api_key: SecretText::Borrowed(api_key.expose()),
            key_name: name.to_string(),
            provider: provider.to_string(),
            ttl_seconds: ttl.map(seconds),
        };
        Self::json(self.send(self.http.post(self.url("/api/keys")).json(&body))?)
    }

    /// Deletes key `id` (restorable within the recovery window), or with
    /// `purge` destroys it at once (admin).
    pub(crate) fn delete(&self, id: &str, purge: bool) -> Result<Done, ClientError> {
        let mut req = self
            .http
            .delete(self.url(&format!("/api/keys/{}", encode(id))));
        if purge {
            // The server rewrites the store's files before it answers: a
            // minute on a store of a million keys (BENCHMARKS.md).
            req = req.query(&[("purge", "true")]).timeout(PURGE_TIMEOUT);
        }
        Self::json(self.send(req)?)
    }

    /// GETs `path` (with its query) and hands back the answer to read as
    /// a stream, allowing `timeout` for the whole of it.
    pub(crate) fn get_stream(
        &self,
        path: &str,
        query: &[(&str, String)],
        timeout: Duration,
    ) -> Result<reqwest::blocking::Response, ClientError> {
        self.send(self.http.get(self.url(path)).query(query).timeout(timeout))
    }

    /// GETs `path` as JSON, read as `T`.
    pub(crate) fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        Self::json(self.send(self.http.get(self.url(path)))?)
    }

    /// POSTs to an admin route without a body (a reload, a rotation),
    /// allowing `timeout` for the answer.
    pub(crate) fn admin_post<T: DeserializeOwned>(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        Self::json(self.send(self.http.post(self.url(path)).timeout(timeout))?)
    }

    /// `GET /api/admin/backup` (admin): the answer, its body the backup
    /// (read it to the end: a transfer that breaks off is a read error).
    pub(crate) fn backup(&self) -> Result<reqwest::blocking::Response, ClientError> {
        self.send(
            self.http
                .get(self.url("/api/admin/backup"))
                .timeout(BACKUP_TIMEOUT),
        )
    }

    pub(crate) fn tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        Self::json(self.send(self.http.get(self.url("/api/tokens")))?)
    }

    /// Creates a token expiring `ttl_seconds` after now (`None`: never);
    /// the answer's `token` is the secret, shown once.
    pub(crate) fn create_token_expiring(
        &self,
        name: &str,
        role: &str,
        providers: Option<&[String]>,
        ttl_seconds: Option<u64>,
    ) -> Result<MintedToken<'static>, ClientError> {
        let body = NewToken {
            name: name.to_string(),
            providers: providers.map(<[String]>::to_vec),
            role: role.to_string(),
            ttl_seconds: ttl_seconds.map(seconds),
        };
        Self::json(self.send(self.http.post(self.url("/api/tokens")).json(&body))?)
    }

    /// Rotates a token (by id or name): the answer's `token` is the
    /// replacement's secret, shown once; `replaced` is the old token,
    /// which works until the overlap ends (the server's default: `None`).
    pub(crate) fn rotate_token(
        &self,
        id_or_name: &str,
        overlap_seconds: Option<u64>,
    ) -> Result<MintedToken<'static>, ClientError> {
        let body = RotateToken {
            overlap_seconds: overlap_seconds.map(seconds),
        };
        Self::json(
            self.send(
                self.http
                    .post(self.url(&format!("/api/tokens/{}/rotate", encode(id_or_name))))
                    .json(&body),
            )?,
        )
    }

    pub(crate) fn revoke_token(&self, id_or_name: &str) -> Result<Done, ClientError> {
        Self::json(
            self.send(
                self.http
                    .delete(self.url(&format!("/api/tokens/{}", encode(id_or_name)))),
            )?,
        )
    }
}

/// Reads an answer's JSON as `T`. A field it lacks is named (serde says
/// `missing field `id``); a field it does not know is ignored.
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body)
        .map_err(|e| ClientError::Protocol(format!("the answer is not the expected JSON ({e})")))
}

/// Seconds as the API takes them: a whole number (a `u64` past `i64`'s
/// range, which no flag lets through, is sent as the largest, and refused).
fn seconds(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

/// Percent-encodes one path segment.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A reqwest error and its causes, without the URL's query (no secrets in
/// URLs anyway) and without repeating itself.
fn describe(e: &reqwest::Error) -> String {
    let mut msg = e.without_url_ref().to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    msg
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        if self.is_connect() {
            "connection failed".into()
        } else if self.is_timeout() {
            "timed out".into()
        } else {
            "request failed".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_that_lacks_a_field_is_refused_naming_it() {
        let e = decode::<Vec<KeyMeta>>(br#"[{"id": "a", "provider": "p"}]"#)
            .err()
            .unwrap();
        let said = e.to_string();
        assert!(said.contains("missing field `key_name`"), "{said}");
        assert!(said.starts_with("unexpected answer from keyhold"), "{said}");
        let e = decode::<Revealed>(br#"{"id": "a", "provider": "p", "key_name": "n"}"#)
            .err()
            .unwrap();
        assert!(e.to_string().contains("missing field `api_key`"), "{e}");
    }

    #[test]
    fn addresses_with_and_without_a_scheme() {
        let url = |s: &str| ServerAddr::Url(s.to_string());
        assert_eq!(
            ServerAddr::parse("http://127.0.0.1:8787/").unwrap(),
            url("http://127.0.0.1:8787")
        );
        assert_eq!(
            ServerAddr::parse("127.0.0.1:8787").unwrap(),
            url("http://127.0.0.1:8787")
        );
        assert_eq!(
            ServerAddr::parse("localhost:8787").unwrap(),
            url("http://localhost:8787")
        );
        assert_eq!(
            ServerAddr::parse("[::1]:8787").unwrap(),
            url("http://[::1]:8787")
        );
        assert_eq!(
            ServerAddr::parse("vault.example:8443").unwrap(),
            url("https://vault.example:8443")
        );
        assert_eq!(
            ServerAddr::parse("unix:/run/keyhold/keyhold.sock").unwrap(),
            ServerAddr::Unix(PathBuf::from("/run/keyhold/keyhold.sock"))
        );
        for bad in ["unix:", "ftp://x:1", "", "http://"] {
            assert!(ServerAddr::parse(bad).is_err(), "{bad}");
        }
    }
}
