//! Per-request context: request id, peer, client IP, headers; and the
//! helpers every handler uses to read bodies and write answers.
//!
//! Over 500 lines: the body readers (bounded, zeroizing, slow-body guard)
//! and the answer writers belong to the one context every handler holds.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::StatusCode;
use serde::Serialize;
use warp::reply::Response;
use zeroize::Zeroizing;

use super::error::ApiError;
use crate::access::Caller;
use crate::limiter::{Decision, TrustedProxies};
use crate::vault::Action;
use crate::vault::Refusal;

/// Largest request body accepted.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// Where a body of unknown length starts: it grows with what arrives.
const FIRST_BODY_BUFFER: usize = 1024;

/// What handlers leave in the answer's extensions for the request log
/// (never sent to the client).
#[derive(Debug, Clone)]
pub(crate) struct RequestInfo {
    pub request_id: String,
    pub client: String,
    pub caller: Option<String>,
}

/// The HTTP version of a request, inserted by keyhold's own server as a
/// request extension (a refused HTTP/1 upload is drained, an HTTP/2 one
/// is simply reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HttpVersion(pub http::Version);

/// The connection a request came over, inserted by keyhold's own server
/// as a request extension (warp 0.4 has no remote-address filter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Peer {
    Tcp(SocketAddr),
    /// A Unix socket; the peer's uid/pid where the OS gives them.
    Unix {
        path: String,
        uid: Option<u32>,
        pid: Option<i32>,
    },
}

impl Peer {
    pub(crate) fn ip(&self) -> IpAddr {
        match self {
            Peer::Tcp(a) => crate::limiter::canonical(a.ip()),
            Peer::Unix { .. } => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// How the audit log names this peer.
    pub(crate) fn describe(&self) -> String {
        match self {
            Peer::Tcp(a) => crate::limiter::canonical(a.ip()).to_string(),
            Peer::Unix { path, uid, pid } => {
                let mut s = format!("unix:{path}");
                if let Some(u) = uid {
                    s.push_str(&format!(" uid={u}"));
                }
                if let Some(p) = pid {
                    s.push_str(&format!(" pid={p}"));
                }
                s
            }
        }
    }
}

/// What every handler knows about its request. `Debug` leaves the
/// headers out: they carry the bearer token.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub request_id: String,
    pub peer: Peer,
    /// The address the request is attributed to (limiter, audit).
    pub client_ip: IpAddr,
    /// True when `client_ip` came from a trusted proxy's X-Forwarded-For.
    pub forwarded: bool,
    pub headers: HeaderMap,
    /// Time the client has to send the body once its headers arrived.
    pub read_timeout: std::time::Duration,
    /// The request's HTTP version (HTTP/1.1 unless the server said).
    pub version: http::Version,
    /// The authenticated caller's name, for the request log.
    caller: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// The caller once a scope check passed, and the action it was for:
    /// a refusal answered after it is that caller's, recorded.
    authorized: std::sync::Arc<std::sync::Mutex<Option<(Caller, Action)>>>,
    /// Set by the vault when it decided the record of a refusal it handed
    /// back for this request (see `AppState::answer_refused`).
    pub refusal_mark: crate::vault::RefusalMark,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("request_id", &self.request_id)
            .field("peer", &self.peer)
            .field("client_ip", &self.client_ip)
            .field("forwarded", &self.forwarded)
            .finish_non_exhaustive()
    }
}

impl Ctx {
    pub(crate) fn new(
        peer: Option<Peer>,
        headers: HeaderMap,
        proxies: &TrustedProxies,
        read_timeout: std::time::Duration,
    ) -> Ctx {
        let peer = peer.unwrap_or(Peer::Tcp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))));
        let xff = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        let (client_ip, forwarded) = match &peer {
            Peer::Tcp(_) => proxies.client_ip(peer.ip(), xff),
            Peer::Unix { .. } => (peer.ip(), false),
        };
        Ctx {
            request_id: uuid::Uuid::new_v4().to_string(),
            peer,
            client_ip,
            forwarded,
            headers,
            read_timeout,
            version: http::Version::HTTP_11,
            caller: Default::default(),
            authorized: Default::default(),
            refusal_mark: crate::vault::RefusalMark::new(),
        }
    }

    /// Who the rate limit (and the coalesced audit records) count this
    /// request under: the client address, or a Unix-socket caller's uid.
    pub(crate) fn client_key(&self) -> crate::limiter::ClientKey {
        match &self.peer {
            Peer::Unix { uid, .. } => crate::limiter::ClientKey::unix(*uid),
            Peer::Tcp(_) => crate::limiter::ClientKey::of(self.client_ip),
        }
    }

    /// The client as the audit log records it (`ip`), and the peer when it
    /// differs (`peer`).
    pub(crate) fn audit_addresses(&self) -> (String, Option<String>) {
        match &self.peer {
            Peer::Unix { .. } => (self.peer.describe(), None),
            Peer::Tcp(_) if self.forwarded => {
                (self.client_ip.to_string(), Some(self.peer.describe()))
            }
            Peer::Tcp(_) => (self.client_ip.to_string(), None),
        }
    }

    /// The bearer token, or why there is none usable.
    pub(crate) fn bearer(&self) -> Result<&str, Refusal> {
        use crate::vault::Unauthenticated as Why;
        let refuse = |why| Refusal::Unauthenticated(why);
        let mut values = self.headers.get_all(AUTHORIZATION).iter();
        let value = values.next().ok_or(refuse(Why::Missing))?;
        if values.next().is_some() {
            return Err(refuse(Why::Several));
        }
        let text = value.to_str().map_err(|_| refuse(Why::Unreadable))?;
        let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(refuse(Why::NotBearer));
        }
        let token = rest.trim();
        if token.is_empty() {
            return Err(refuse(Why::Empty));
        }
        Ok(token)
    }

    /// Reads a body of at most [`MAX_BODY`] bytes from `stream`, checking
    /// the content type is JSON. Call it only once the caller is
    /// authenticated and authorised, holding a body-read permit: an
    /// unauthenticated upload must cost nothing.
    pub(crate) async fn read_json_body<S, B>(
        &self,
        stream: S,
    ) -> Result<serde_json::Value, ApiError>
    where
        S: Stream<Item = Result<B, warp::Error>> + Unpin,
        B: Buf,
    {
        self.read_json(stream, false).await
    }

    /// As [`read_json_body`](Self::read_json_body), for a route whose
    /// fields are all optional: an empty body (with or without a
    /// Content-Type) is `{}`.
    pub(crate) async fn read_optional_json_body<S, B>(
        &self,
        stream: S,
    ) -> Result<serde_json::Value, ApiError>
    where
        S: Stream<Item = Result<B, warp::Error>> + Unpin,
        B: Buf,
    {
        self.read_json(stream, true).await
    }

    async fn read_json<S, B>(
        &self,
        stream: S,
        optional: bool,
    ) -> Result<serde_json::Value, ApiError>
    where
        S: Stream<Item = Result<B, warp::Error>> + Unpin,
        B: Buf,
    {
        if let Some(len) = self.headers.get(CONTENT_LENGTH) {
            match len.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
                Some(n) if n > MAX_BODY as u64 => return Err(too_large()),
                Some(_) => {}
                None => return Err(ApiError::bad_request("invalid Content-Length header")),
            }
        }
        let declared = self
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<usize>().ok());
        let bytes = tokio::time::timeout(self.read_timeout, read_limited(stream, declared))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive in time: send it whole, promptly",
                )
            })??;
        if optional && bytes.is_empty() {
            return Ok(serde_json::Value::Object(serde_json::Map::new()));
        }
        if let Some(ct) = self.headers.get(CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            let essence = ct.split(';').next().unwrap_or("").trim();
            if !(essence == "application/json" || essence.ends_with("+json")) {
                return Err(ApiError::unsupported_media(
                    "the body must be JSON: send `Content-Type: application/json`",
                ));
            }
        }
        if bytes.is_empty() {
            return Err(ApiError::bad_request(
                "the request body is empty: send a JSON object",
            ));
        }
        serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| {
            ApiError::bad_request(format!(
                "the request body is not valid JSON ({}): send a JSON object",
                e.classify_str()
            ))
        })
    }

    /// Throws away the body of a request refused before it was read
    /// (unauthenticated, forbidden), keeping nothing: on HTTP/1 the body
    /// is read chunk by chunk and dropped (at most [`MAX_BODY`] bytes, at
    /// most the read timeout), so a client still sending gets the answer
    /// rather than a reset connection; on HTTP/2, or when the client waits
    /// for `100 Continue`, nothing is read (the stream is reset after the
    /// answer; the waiting client never sends the body).
    pub(crate) async fn discard_body<S, B>(&self, mut stream: S)
    where
        S: Stream<Item = Result<B, warp::Error>> + Unpin,
        B: Buf,
    {
        if self.version != http::Version::HTTP_11 && self.version != http::Version::HTTP_10 {
            return;
        }
        // A client waiting for `100 Continue` has sent nothing yet: it gets
        // the refusal instead (reading would make hyper invite the body).
        let expects = self
            .headers
            .get(http::header::EXPECT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
        if expects {
            return;
        }
        let declared = self
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY as u64) {
            // Too large to wait for: hyper closes the connection.
            return;
        }
        let drain = async {
            let mut seen = 0usize;
            while let Some(Ok(chunk)) = stream.next().await {
                seen += chunk.remaining();
                drop(chunk);
                if seen > MAX_BODY {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(self.read_timeout, drain).await;
    }

    /// Notes the caller that passed the scope check of `action`.
    pub(crate) fn set_authorized(&self, caller: &Caller, action: Action) {
        if let Ok(mut a) = self.authorized.lock() {
            *a = Some((caller.clone(), action));
        }
    }

    /// The caller that passed a scope check, and for which action.
    pub(crate) fn authorized(&self) -> Option<(Caller, Action)> {
        self.authorized.lock().ok().and_then(|a| a.clone())
    }

    /// Notes who the request is from (the request log names the caller).
    pub(crate) fn set_caller(&self, name: &str) {
        if let Ok(mut c) = self.caller.lock() {
            *c = Some(name.to_string());
        }
    }

    /// Adds the request id (and no-store) to an answer, and leaves the
    /// request's facts for the request log in its extensions.
    pub(crate) fn finish(&self, mut resp: Response) -> Response {
        let caller = self.caller.lock().ok().and_then(|c| c.clone());
        resp.extensions_mut().insert(RequestInfo {
            request_id: self.request_id.clone(),
            client: self.client_ip.to_string(),
            caller,
        });
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&self.request_id) {
            h.insert("x-request-id", v);
        }
        h.insert("cache-control", HeaderValue::from_static("no-store"));
        resp
    }

    pub(crate) fn json<T: Serialize>(&self, status: StatusCode, body: &T) -> Response {
        self.finish(json_response(status, body))
    }

    pub(crate) fn error(&self, err: &ApiError) -> Response {
        self.finish(error_response(err))
    }
}

trait ClassifyStr {
    fn classify_str(&self) -> &'static str;
}

impl ClassifyStr for serde_json::Error {
    fn classify_str(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Eof => "unexpected end of input",
        }
    }
}

fn too_large() -> ApiError {
    ApiError::too_large(format!(
        "the request body is larger than {} KiB: send less",
        MAX_BODY / 1024
    ))
}

/// Reads the body into a buffer zeroized when dropped (bodies carry API
/// keys), sized by what arrives rather than by the cap: nothing until the
/// first bytes come, then at least 1 KiB, doubling as data comes (never
/// past the declared length or the cap), each outgrown buffer zeroized so
/// no copy of a key is left behind.
async fn read_limited<S, B>(
    mut stream: S,
    declared: Option<usize>,
) -> Result<Zeroizing<Vec<u8>>, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let ceiling = declared.unwrap_or(MAX_BODY).min(MAX_BODY);
    let mut out = Zeroizing::new(Vec::new());
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|_| {
            ApiError::bad_request("the request body could not be read: send it again")
        })?;
        let needed = out.len() + chunk.remaining();
        if needed > MAX_BODY {
            return Err(too_large());
        }
        if needed > out.capacity() {
            let cap = needed
                .max(out.capacity() * 2)
                .max(FIRST_BODY_BUFFER.min(ceiling))
                .min(ceiling.max(needed));
            let mut bigger = Zeroizing::new(Vec::with_capacity(cap));
            bigger.extend_from_slice(&out);
            // The old buffer is zeroized as it drops here.
            out = bigger;
        }
        while chunk.has_remaining() {
            let c = chunk.chunk();
            out.extend_from_slice(c);
            let n = c.len();
            chunk.advance(n);
        }
    }
    Ok(out)
}

/// A JSON answer that holds a secret: serialised into one buffer sized up
/// front (no reallocation copies) that is zeroized when hyper drops it.
pub(crate) fn secret_json_response<T: Serialize>(
    status: StatusCode,
    body: &T,
    secret_len: usize,
) -> Response {
    // JSON escaping at most sextuples a byte (\u00XX); plus the fields.
    let mut buf = Zeroizing::new(Vec::with_capacity(secret_len * 6 + 1024));
    if serde_json::to_writer(&mut *buf, body).is_err() {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"detail": "the answer could not be encoded; retry"}),
        );
    }
    let mut resp = Response::new(Bytes::from_owner(buf).into());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A JSON answer.
pub(crate) fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(bytes.into());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The request id the server chose for a request (a request extension),
/// which the handlers' context takes over.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub String);

/// The answer to any CONNECT (HTTP/1 and HTTP/2): keyhold is no proxy,
/// and CONNECT's authority-form target panics warp's path filters, so the
/// server answers it before they see it.
pub(crate) fn connect_refused() -> Response {
    let mut r = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &serde_json::json!({
            "detail": "CONNECT is not served: keyhold is not a proxy; GET /openapi.json lists \
                       its routes"
        }),
    );
    r.headers_mut().insert(
        http::header::ALLOW,
        HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE"),
    );
    r
}

/// `{"detail": ...}` with its status (and Retry-After / WWW-Authenticate).
pub(crate) fn error_response(err: &ApiError) -> Response {
    let body = crate::wire::ErrorBody {
        detail: err.detail.clone(),
        failed: Vec::new(),
    };
    let mut resp = json_response(err.status, &body);
    if let Some(secs) = err.retry_after {
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
    }
    // The body was not (wholly) read: the connection cannot carry another
    // request, so tell the client not to reuse it.
    if err.unread_body {
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    if err.status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
    }
    resp
}

/// Adds the RateLimit-* headers of a decision.
pub(crate) fn with_rate_headers(mut resp: Response, d: &Decision) -> Response {
    let h = resp.headers_mut();
    h.insert("ratelimit-limit", HeaderValue::from(d.limit));
    h.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
    h.insert("ratelimit-reset", HeaderValue::from(d.reset_secs));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(total: usize, size: usize) -> impl Stream<Item = Result<Bytes, warp::Error>> + Unpin {
        let parts: Vec<Result<Bytes, warp::Error>> = (0..total)
            .step_by(size)
            .map(|i| Ok(Bytes::from(vec![b'x'; size.min(total - i)])))
            .collect();
        futures_util::stream::iter(parts)
    }

    #[tokio::test]
    async fn a_body_buffer_grows_with_what_arrives_not_with_the_cap() {
        // 10 bytes arrive although 64 KiB were declared.
        let small = read_limited(chunks(10, 10), Some(MAX_BODY)).await.unwrap();
        assert_eq!(small.len(), 10);
        assert!(
            small.capacity() <= FIRST_BODY_BUFFER,
            "{}",
            small.capacity()
        );
        // 3000 bytes in small pieces, no length declared.
        let grown = read_limited(chunks(3000, 100), None).await.unwrap();
        assert_eq!(&grown[..], &vec![b'x'; 3000][..]);
        assert!(grown.capacity() < 8 * 1024, "{}", grown.capacity());
        // A declared length is never outgrown.
        let exact = read_limited(chunks(5000, 1000), Some(5000)).await.unwrap();
        assert_eq!(exact.capacity(), 5000);
        // Past the cap: 413.
        let err = read_limited(chunks(MAX_BODY + 1, 4096), None)
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
