//! One connection served: everything before its first request under one
//! deadline (the TLS handshake, the first bytes), then hyper's HTTP/1.1 +
//! HTTP/2 builder with the peer and a request id on each request, every
//! request reported to the observer, and the connection closed once idle,
//! when the server stops, or when the accept loop needs its slot.
//!
//! Not for: the caps and the waiting for a slot (`accept.rs`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::bind::Io;
use super::prefixed::Prefixed;
use super::slots::Slots;
use super::sniff::{json_answer, plain_http_answered, sniff, FirstBytes, H2_PREFACE, NOT_HTTP};
use super::{panics, tls, Limits};
use crate::http::context::{self, Peer, RequestInfo};
use crate::http::observe::{RequestDone, RequestObserver};
use crate::http::route_patterns::route_label;

/// What one connection's task needs from the accept loop.
pub(super) struct ConnCtx {
    pub(super) routes: BoxedFilter<(Response,)>,
    pub(super) builder: Arc<Builder<TokioExecutor>>,
    pub(super) observer: RequestObserver,
    /// Turns true when the server stops accepting.
    pub(super) stop: tokio::sync::watch::Receiver<bool>,
    pub(super) tls: Option<TlsAcceptor>,
    pub(super) limits: Limits,
    /// Where an idle connection can be asked to make room.
    pub(super) slots: Arc<Slots>,
    /// The client's address as the per-address cap counts it.
    pub(super) key: Option<IpAddr>,
}

impl ConnCtx {
    pub(super) async fn run(self, io: Io, peer: Peer, accepted_at: tokio::time::Instant) {
        // One deadline for everything before a request exists: a socket
        // that sends nothing, a TLS handshake that never ends and a
        // protocol preface sent a byte at a time all end here.
        let deadline = accepted_at + self.limits.handshake_timeout;
        match io {
            Io::Unix(s) => self.serve_io(s, peer, deadline).await,
            Io::Tcp(mut s) => match self.tls.clone() {
                None => self.serve_io(s, peer, deadline).await,
                Some(_) if plain_http_answered(&mut s, deadline).await => {}
                Some(acceptor) => {
                    if let Some(tls) = tls::handshake(acceptor, s, deadline).await {
                        self.serve_io(tls, peer, deadline).await
                    }
                }
            },
        }
    }

    async fn serve_io<I>(self, mut io: I, peer: Peer, deadline: tokio::time::Instant)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let first = match tokio::time::timeout_at(deadline, sniff(&mut io)).await {
            Ok(Ok(FirstBytes::Http(bytes))) => bytes,
            Ok(Ok(FirstBytes::NotHttp)) => {
                let answer = json_answer(400, NOT_HTTP);
                let grace = tokio::time::Instant::now() + Duration::from_secs(1);
                let _ = tokio::time::timeout_at(grace, async {
                    io.write_all(&answer).await?;
                    io.shutdown().await
                })
                .await;
                return;
            }
            Ok(Ok(FirstBytes::Closed)) | Ok(Err(_)) => return,
            Err(_) => {
                tracing::debug!(peer = %peer.describe(), "no request before the handshake deadline; closed");
                return;
            }
        };
        let http1 = !first.starts_with(H2_PREFACE);
        let opened = Instant::now();
        // When bytes were last written to the client, in ms since `opened`.
        let last_write = Arc::new(AtomicU64::new(0));
        let io = Prefixed::new(first, io, http1).with_progress(opened, last_write.clone());

        let svc = warp::service(self.routes);
        let observer = self.observer;
        // When the last request started, in ms since `opened`.
        let last_request = Arc::new(AtomicU64::new(0));
        // Requests without a body whose handler is still at work.
        let working = Arc::new(AtomicUsize::new(0));
        let service = {
            let last_request = last_request.clone();
            let working = working.clone();
            hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                last_request.store(opened.elapsed().as_millis() as u64, Ordering::Relaxed);
                // A request with nothing more to send leaves the client
                // nothing to stall: its connection is not idle while the
                // server works on it (a purge's rewrite can take minutes).
                // One with a body still to come is not counted, so that a
                // body trickled and stopped meets the idle limit as before.
                let at_work = req.body().is_end_stream().then(|| AtWork::enter(&working));
                req.extensions_mut().insert(peer.clone());
                let version = context::HttpVersion(req.version());
                req.extensions_mut().insert(version);
                let method = req.method().clone();
                let route = route_label(&method, req.uri().path());
                // The request id is chosen here, so that a panic in the
                // handler is logged and answered under the id it would have
                // carried.
                let request_id = uuid::Uuid::new_v4().to_string();
                req.extensions_mut()
                    .insert(context::RequestId(request_id.clone()));
                let mut svc = svc.clone();
                let observer = observer.clone();
                let peer = peer.clone();
                let last_request = last_request.clone();
                async move {
                    let _at_work = at_work;
                    let started = Instant::now();
                    // warp's path filters panic on CONNECT's target:
                    // answered before any filter sees it.
                    let resp = if method == http::Method::CONNECT {
                        Ok(context::connect_refused())
                    } else {
                        let call = tower_service::Service::call(&mut svc, req);
                        panics::guarded(route, request_id.clone(), call).await
                    };
                    // A request that took long counts as activity until it
                    // was answered.
                    last_request.store(opened.elapsed().as_millis() as u64, Ordering::Relaxed);
                    if let Ok(r) = &resp {
                        let info = r.extensions().get::<RequestInfo>();
                        observer(&RequestDone {
                            method,
                            route,
                            status: r.status().as_u16(),
                            latency: started.elapsed(),
                            request_id: Some(
                                info.map_or_else(|| request_id.clone(), |i| i.request_id.clone()),
                            ),
                            client: info.map_or_else(|| peer.describe(), |i| i.client.clone()),
                            caller: info.and_then(|i| i.caller.clone()),
                        });
                    }
                    resp
                }
            })
        };
        let conn = self
            .builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        tokio::pin!(conn);
        let mut stop = self.stop;
        let idle = self.limits.idle_timeout;
        // Registered for `slots`: idle (and for how long) while no request
        // is at work and it is not closing.
        let closing_flag = Arc::new(AtomicBool::new(false));
        let evict = Arc::new(tokio::sync::Notify::new());
        let _slot = {
            let (lr, lw, w, c) = (
                last_request.clone(),
                last_write.clone(),
                working.clone(),
                closing_flag.clone(),
            );
            self.slots.register(
                self.key,
                Box::new(move || {
                    if c.load(Ordering::Relaxed) || w.load(Ordering::Relaxed) > 0 {
                        return None;
                    }
                    let active = lr.load(Ordering::Relaxed).max(lw.load(Ordering::Relaxed));
                    opened.elapsed().checked_sub(Duration::from_millis(active))
                }),
                evict.clone(),
            )
        };
        // Closing is graceful: a response in flight (a long export) still
        // ends whole; HTTP/2 gets a GOAWAY and its open streams finish. At
        // server shutdown, `serve` bounds the wait by the shutdown grace.
        //
        // "Idle" is neither a request started or answered nor a byte
        // written to the client for `idle`; a closing connection that
        // writes nothing for the shutdown grace (a client that stopped
        // reading its answer: hyper has no write timeout) is dropped, so
        // it cannot hold its slot for ever.
        let grace = self.limits.shutdown_grace;
        let active = || {
            Duration::from_millis(
                last_request
                    .load(Ordering::Relaxed)
                    .max(last_write.load(Ordering::Relaxed)),
            )
        };
        let mut closing = false;
        let at_work = |closing: bool| !closing && working.load(Ordering::Relaxed) > 0;
        loop {
            closing_flag.store(closing, Ordering::Relaxed);
            let wait = if closing { grace } else { idle };
            let due = if at_work(closing) {
                tokio::time::Instant::now() + wait
            } else {
                tokio::time::Instant::from_std(opened + active() + wait)
            };
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    break;
                }
                _ = tokio::time::sleep_until(due) => {
                    if at_work(closing) || opened.elapsed() < active() + wait {
                        continue;
                    }
                    if closing {
                        tracing::debug!("a closing connection wrote nothing for the grace: dropped");
                        break;
                    }
                    tracing::debug!("idle connection closed");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = stop.changed(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = evict.notified(), if !closing => {
                    tracing::debug!("idle connection closed to make room at the connection cap");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// One request at work on a connection, counted until its handler returns
/// (or is dropped).
struct AtWork(Arc<AtomicUsize>);

impl AtWork {
    fn enter(count: &Arc<AtomicUsize>) -> AtWork {
        count.fetch_add(1, Ordering::Relaxed);
        AtWork(count.clone())
    }
}

impl Drop for AtWork {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
