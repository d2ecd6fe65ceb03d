//! What a connection's first bytes say, read before hyper runs and under
//! the connection's pre-request deadline.
//!
//! On a plain port: the HTTP/2 preface, the start of an HTTP/1 request
//! line (hyper judges the rest), or bytes no HTTP request starts with
//! (a TLS hello, binary junk), answered 400 with a JSON `detail`.
//!
//! On the TLS port: plain HTTP, which would otherwise get a failed
//! handshake the client cannot read ("invalid HTTP version parsed"), is
//! answered a readable `400 Bad Request` saying to use `https://`, then
//! the connection closes. Only the first byte is looked at before
//! deciding: a TLS ClientHello record starts with 0x16, an HTTP/1 request
//! line with a method's letter.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The most of a plain request read to find its target and `Host`.
const MAX_HEAD: usize = 4096;

/// Longest target or host echoed back.
const MAX_ECHO: usize = 200;

/// A TLS record of type handshake (every ClientHello) starts with this.
const TLS_HANDSHAKE: u8 = 0x16;

/// Answers `s` and returns true when its first byte starts a plain HTTP
/// request; returns false (nothing read) when the TLS handshake should go
/// on. Everything happens before `deadline` (the handshake's).
pub(super) async fn plain_http_answered(s: &mut TcpStream, deadline: Instant) -> bool {
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, s.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] != TLS_HANDSHAKE && first[0].is_ascii_uppercase() => {}
        _ => return false,
    }
    let mut head = Vec::with_capacity(512);
    let _ = tokio::time::timeout_at(deadline, async {
        let mut chunk = [0u8; 1024];
        while head.len() < MAX_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n.min(MAX_HEAD - head.len())]),
            }
        }
    })
    .await;
    let detail = format!(
        "this port speaks TLS: use https://{}{}",
        host(&head).unwrap_or_else(|| s.local_addr().map_or_else(|_| "HOST:PORT".into(), show)),
        target(&head)
    );
    tracing::debug!("plain HTTP on the TLS port; answered 400");
    let answer = json_answer(400, &detail);
    // A second to write the answer, then a second to read what else the
    // client sent, so that closing does not reset the connection before the
    // client has read the answer.
    let grace = Instant::now() + Duration::from_secs(1);
    let _ = tokio::time::timeout_at(grace, async {
        s.write_all(&answer).await?;
        s.shutdown().await
    })
    .await;
    let grace = Instant::now() + Duration::from_secs(1);
    let _ = tokio::time::timeout_at(grace, async {
        let mut sink = [0u8; 1024];
        let mut left = 64 * 1024;
        while left > 0 {
            match s.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left -= n.min(left),
            }
        }
    })
    .await;
    true
}

fn show(addr: SocketAddr) -> String {
    addr.to_string()
}

/// Whether `s` is safe to echo: printable ASCII without spaces, quotes or
/// angle brackets, not too long.
fn echoable(s: &str, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ECHO
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b) || extra.contains(&b))
}

/// The request's target (`/healthz`), or `/` when it cannot be read.
fn target(head: &[u8]) -> String {
    let line = head.split(|b| *b == b'\r' || *b == b'\n').next();
    let target = line
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|l| l.split(' ').nth(1))
        // The path only: a query is not repeated back.
        .map(|t| t.split('?').next().unwrap_or_default())
        .filter(|t| t.starts_with('/') && echoable(t, b"/%+:,;@!$'()*"));
    target.unwrap_or("/").to_string()
}

/// The request's `Host` header, when it reads as a host and port.
fn host(head: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(head).ok()?;
    text.split("\r\n").skip(1).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        let value = value.trim();
        (name.eq_ignore_ascii_case("host") && echoable(value, b":[]")).then(|| value.to_string())
    })
}

/// The first bytes of every HTTP/2 connection (prior knowledge or ALPN).
pub(super) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub(super) const NOT_HTTP: &str =
    "this is not an HTTP request: keyhold speaks HTTP/1.1 and HTTP/2 \
                        (https:// only when it was started with --tls-cert)";

/// What the first bytes of a connection say.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FirstBytes {
    /// The HTTP/2 preface, or the start of what may be an HTTP/1 request
    /// line (hyper judges the rest): the bytes read so far.
    Http(Vec<u8>),
    /// Neither: no HTTP request starts like this.
    NotHttp,
    /// Closed before sending anything.
    Closed,
}

/// An HTTP token character (what a method is made of).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Reads just enough of a connection (at most the 24 bytes of the HTTP/2
/// preface) to know that it is HTTP, and which; the caller puts a
/// deadline on it. The bytes read are handed on, so nothing is lost.
pub(super) async fn sniff<I: AsyncRead + Unpin>(io: &mut I) -> std::io::Result<FirstBytes> {
    let mut buf = Vec::with_capacity(H2_PREFACE.len());
    loop {
        let mut chunk = [0u8; 24];
        let room = H2_PREFACE.len() - buf.len();
        let n = io.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Ok(if buf.is_empty() {
                FirstBytes::Closed
            } else {
                FirstBytes::Http(buf)
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        if H2_PREFACE.starts_with(&buf) {
            if buf.len() == H2_PREFACE.len() {
                return Ok(FirstBytes::Http(buf));
            }
            continue;
        }
        // Not the HTTP/2 preface: HTTP/1, whose request line hyper reads
        // from here under its header timeout, at once. Only a first byte
        // no request line starts with (a TLS hello on the plain port,
        // binary junk) is answered here; other junk gets hyper's 400, in
        // JSON (see `Prefixed`).
        let first = buf[0];
        return Ok(if is_tchar(first) || matches!(first, b'\r' | b'\n') {
            FirstBytes::Http(buf)
        } else {
            FirstBytes::NotHttp
        });
    }
}

/// A whole HTTP/1.1 answer with a JSON `detail`, closing the connection.
pub(super) fn json_answer(status: u16, detail: &str) -> Vec<u8> {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let body = serde_json::json!({ "detail": detail }).to_string();
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    async fn sniffed(input: &[u8]) -> FirstBytes {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(input).await.unwrap();
        drop(client);
        sniff(&mut server).await.unwrap()
    }

    #[tokio::test]
    async fn first_bytes_tell_http_from_junk() {
        assert_eq!(
            sniffed(b"GET / HTTP/1.1\r\n").await,
            FirstBytes::Http(b"GET / HTTP/1.1\r\n".to_vec())
        );
        assert_eq!(
            sniffed(H2_PREFACE).await,
            FirstBytes::Http(H2_PREFACE.to_vec())
        );
        assert_eq!(sniffed(b"\x16\x03\x01\x02\x00").await, FirstBytes::NotHttp);
        assert_eq!(sniffed(b"\x00\x01junk").await, FirstBytes::NotHttp);
        assert_eq!(sniffed(b"").await, FirstBytes::Closed);
        // A made-up method is still HTTP (answered 405 by the routes).
        assert!(matches!(
            sniffed(b"JUNK1 / HTTP/1.1").await,
            FirstBytes::Http(_)
        ));
    }

    #[test]
    fn the_target_and_host_are_echoed_only_when_plain() {
        let head = b"GET /api/keys?provider=a HTTP/1.1\r\nHost: vault.example:8443\r\n\r\n";
        assert_eq!(target(head), "/api/keys");
        assert_eq!(host(head).as_deref(), Some("vault.example:8443"));
        let odd = b"GET /<script> HTTP/1.1\r\nHost: a b\"c\r\n\r\n";
        assert_eq!(target(odd), "/");
        assert_eq!(host(odd), None);
        assert_eq!(target(b"GET"), "/");
        assert_eq!(
            host(b"GET / HTTP/1.1\r\nHOST: [::1]:8443\r\n").as_deref(),
            Some("[::1]:8443")
        );
    }
}
