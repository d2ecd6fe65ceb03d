//! Plain HTTP sent to the TLS port: instead of a failed handshake the
//! client cannot read ("invalid HTTP version parsed"), a readable
//! `400 Bad Request` saying to use `https://`, then the connection closes.
//! Only the first byte is looked at before deciding: a TLS ClientHello
//! record starts with 0x16, an HTTP/1 request line with a method's letter.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
pub(super) async fn refused(s: &mut TcpStream, deadline: Instant) -> bool {
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
    let answer = super::server::json_answer(400, &detail);
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

#[cfg(test)]
mod tests {
    use super::*;

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
