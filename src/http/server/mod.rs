//! keyhold's own server loop around the warp filter.
//!
//! warp 0.4's built-in server sets no header-read timeout and no
//! connection limit, has no TLS and no remote-address filter. This one
//! accept loop serves plain TCP, TLS (rustls) and Unix sockets alike: it
//! caps open connections (in all and per client address, IPv6 by its /64),
//! gives every stage before a request exists one deadline (first bytes,
//! TLS handshake, protocol detection), serves each connection with hyper's
//! auto (HTTP/1.1 + HTTP/2) builder with a header-read timeout (which also
//! closes idle keep-alive connections), closes any connection (an HTTP/2
//! one answering PINGs included) that has started no request for an idle
//! time and has none without a body still at work, answers bytes that are
//! not HTTP and hyper's own bare parse-error answers with a JSON `detail`,
//! inserts the peer as a request extension ([`Peer`]), reports every
//! request to an observer (logs, metrics), and shuts down gracefully.
//!
//! One file a stage, each pointing only down this list:
//! - `accept.rs`: the accept loop (connection caps, waiting for a slot,
//!   graceful shutdown);
//! - `connection.rs`: one connection served (the pre-request deadline,
//!   the hyper service, idle closing);
//! - `slots.rs`: which idle connection closes to make room at the cap;
//! - `panics.rs`: a handler's panic answered 500 and logged once;
//! - `sniff.rs`: what a connection's first bytes are (HTTP/1, HTTP/2,
//!   junk, plain HTTP on the TLS port) and the JSON answers sent before
//!   hyper runs;
//! - `prefixed.rs`: the connection handed to hyper with the bytes the
//!   sniff read, hyper's bare parse errors rewritten as JSON;
//! - `tls.rs`: the rustls configuration and the handshake;
//! - `bind.rs`: where to listen (`Bind`) and the bound `Listener`;
//! - `unix_socket.rs`: a Unix socket's file, from bind to its removal.
//!
//! Not for: routes or handlers (the warp filter served is built in
//! `http::routes`), or what a finished request is logged and counted as
//! (`http::observe`).

mod accept;
mod bind;
mod connection;
mod panics;
mod prefixed;
mod slots;
mod sniff;
mod tls;
mod unix_socket;

use std::time::Duration;

pub(crate) use accept::serve;
pub(crate) use bind::{BadBind, Bind, Listener};
pub(crate) use tls::{load_tls, TlsSetupError};

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Open connections at most; further ones wait in the accept queue.
    pub max_connections: usize,
    /// Open connections from one client address (an IPv4 address, an
    /// IPv6 /64) at most (trusted proxies are exempt); further ones are
    /// closed at once.
    pub max_connections_per_ip: usize,
    /// Time from accept until the first request's protocol is known:
    /// first bytes, TLS handshake and HTTP/1-or-2 detection together.
    pub handshake_timeout: Duration,
    /// Time a client has to send a request's headers (slow-loris guard);
    /// also how long an idle HTTP/1 keep-alive connection is kept.
    pub header_read_timeout: Duration,
    /// A connection that has started no request for this long is closed
    /// gracefully (an HTTP/2 connection answering PINGs included).
    pub idle_timeout: Duration,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_connections_per_ip: 128,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use warp::filters::BoxedFilter;
    use warp::reply::Response;

    use super::{serve, Bind, Limits, Listener};
    use crate::http::observe::RequestDone;
    use crate::limiter::TrustedProxies;

    /// Serves `routes` on a Unix socket with 1 s idle and grace limits;
    /// sends `request` and returns what came back before the server closed
    /// the connection (or 20 s passed).
    pub(in crate::http) async fn exchange(
        routes: BoxedFilter<(Response,)>,
        request: &[u8],
    ) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = Listener::bind(&Bind::Unix(path.clone()), None)
            .await
            .unwrap();
        let limits = Limits {
            idle_timeout: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(1),
            ..Limits::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            routes,
            limits,
            TrustedProxies::default(),
            Arc::new(|_: &RequestDone| {}),
            async {
                let _ = stopped.await;
            },
        ));
        let mut client = tokio::net::UnixStream::connect(&path).await.unwrap();
        client.write_all(request).await.unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(20), client.read_to_end(&mut got)).await;
        let _ = stop.send(());
        let _ = server.await;
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn a_request_without_a_body_is_answered_however_long_its_handler_works() {
        use warp::Filter;
        // A handler at work for 3 s, past the idle limit and its grace
        // (1 s each): the connection waits for it.
        let slow = warp::path("slow")
            .and_then(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok::<_, std::convert::Infallible>(Response::new("done".into()))
            })
            .boxed();
        let got = exchange(
            slow,
            b"GET /slow HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
        assert!(got.ends_with("done"), "{got:?}");

        // A body announced and never sent: the handler waits on the
        // client, who meets the idle limit as before (closed unanswered).
        let reads_body = warp::path("upload")
            .and(warp::body::bytes())
            .map(|_| Response::new("read".into()))
            .boxed();
        let started = Instant::now();
        let got = exchange(
            reads_body,
            b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nab",
        )
        .await;
        assert!(!got.contains("read"), "{got:?}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
    }
}
