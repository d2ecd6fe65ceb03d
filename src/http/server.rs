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
//! Over 500 lines: the transport is one accept loop whose stages (caps,
//! the pre-request deadline, TLS, protocol detection, idle closing,
//! graceful shutdown) share one connection's state; about an eighth is
//! tests.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::context::{Peer, RequestInfo};
use crate::limiter::TrustedProxies;

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
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

/// Where to listen: `host:port` or `unix:/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// An address to listen on that is neither HOST:PORT nor unix:/path (the
/// message says which shapes are taken).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadBind(String);

impl std::str::FromStr for Bind {
    type Err = BadBind;
    fn from_str(s: &str) -> Result<Bind, BadBind> {
        Self::parse(s)
    }
}

impl Bind {
    fn parse(s: &str) -> Result<Bind, BadBind> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(BadBind(
                    "unix: needs a path, for example unix:/run/keyhold/keyhold.sock".into(),
                ));
            }
            return Ok(Bind::Unix(PathBuf::from(path)));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Bind::Tcp(addr));
        }
        // A host name (`localhost:8787`): its first address, IPv4 first,
        // resolved once at start.
        let shape = || {
            BadBind(format!(
                "`{s}` is neither HOST:PORT (127.0.0.1:8787, [::1]:8787, localhost:8787) nor \
                 unix:/path"
            ))
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(shape)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(shape());
        }
        let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(s)
            .map_err(|e| BadBind(format!("cannot resolve the host `{host}` of `{s}`: {e}")))?
            .collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .map(Bind::Tcp)
            .ok_or_else(|| BadBind(format!("the host `{host}` of `{s}` has no address")))
    }
}

/// Why TLS could not be set up. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read the TLS certificate {path}: {detail}; give a PEM file (--tls-cert / KEYHOLD_TLS_CERT)")]
    Cert { path: PathBuf, detail: String },
    #[error("cannot read the TLS private key {path}: {detail}; give a PEM file (--tls-key / KEYHOLD_TLS_KEY)")]
    Key { path: PathBuf, detail: String },
    #[error("the TLS certificate and key do not form a usable pair: {0}")]
    Config(String),
}

/// A rustls acceptor for a PEM certificate chain and private key.
pub fn load_tls(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsSetupError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsSetupError::Cert {
            path: cert.to_path_buf(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::Cert {
            path: cert.to_path_buf(),
            detail: "no certificate in the file".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsSetupError::Key {
        path: key.to_path_buf(),
        detail: e.to_string(),
    })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| TlsSetupError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

enum Socket {
    Tcp(TcpListener),
    /// The file is removed when the listener is dropped (after it).
    Unix(UnixListener, super::listen::SocketFile),
}

/// A bound listener, with TLS when configured.
pub struct Listener {
    socket: Socket,
    tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Listener {
    /// Binds. A Unix socket gets mode 0660; a stale socket file left by a
    /// dead server is replaced, a live one is refused (`listen`); its file
    /// is removed when the listener is dropped.
    pub async fn bind(bind: &Bind, tls: Option<TlsAcceptor>) -> std::io::Result<Listener> {
        let socket = match bind {
            Bind::Tcp(addr) => Socket::Tcp(TcpListener::bind(addr).await?),
            Bind::Unix(path) => {
                let (l, file) = super::listen::bind_unix(path)?;
                Socket::Unix(l, file)
            }
        };
        Ok(Listener { socket, tls })
    }

    /// `http://ADDR`, `https://ADDR` or `unix:/path`.
    pub fn describe(&self) -> String {
        match &self.socket {
            Socket::Tcp(l) => {
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                match l.local_addr() {
                    Ok(a) => format!("{scheme}://{a}"),
                    Err(_) => format!("{scheme}://?"),
                }
            }
            Socket::Unix(_, f) => format!("unix:{}", f.path().display()),
        }
    }

    /// The TCP address, when TCP.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.socket {
            Socket::Tcp(l) => l.local_addr().ok(),
            Socket::Unix(..) => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// One finished request, for logs and metrics.
#[derive(Debug, Clone)]
pub struct RequestDone {
    pub method: http::Method,
    pub route: &'static str,
    pub status: u16,
    pub latency: Duration,
    pub request_id: Option<String>,
    pub client: String,
    pub caller: Option<String>,
}

/// Called for every finished request.
pub type RequestObserver = Arc<dyn Fn(&RequestDone) + Send + Sync>;

/// Counts open connections per client address.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

struct PerIpGuard {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn enter(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<PerIpGuard> {
        let mut m = match self.0.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let n = m.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(PerIpGuard {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for PerIpGuard {
    fn drop(&mut self) {
        let mut m = match self.table.0.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// How long (past the handshake deadline, which frees the slots of silent
/// sockets) a new connection at the cap waits for a slot, and how many
/// may wait at once.
const SLOT_WAIT: Duration = Duration::from_secs(2);
const WAITING_MAX: usize = 64;

/// Serves `routes` on `listener` until `shutdown` resolves, then stops
/// accepting and waits (at most `limits.shutdown_grace`) for open
/// connections to finish.
pub async fn serve(
    listener: Listener,
    routes: BoxedFilter<(Response,)>,
    limits: Limits,
    exempt: TrustedProxies,
    observer: RequestObserver,
    shutdown: impl Future<Output = ()>,
) {
    // Every connection holds one permit until it ends, so taking them all
    // back means every connection is done.
    let max = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let permits = Arc::new(Semaphore::new(max));
    let per_ip = Arc::new(PerIp::default());
    let slots = Arc::new(super::slots::Slots::default());
    // New connections waiting for a slot an eviction frees.
    let waiting = Arc::new(AtomicUsize::new(0));
    super::panics::install_hook();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(64)
        .max_header_list_size(64 * 1024);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = accept(&listener.socket) => a,
        };
        let accepted_at = tokio::time::Instant::now();
        let (io, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let key = match &peer {
            Peer::Tcp(a) if !exempt.contains(a.ip()) => Some(crate::limiter::network_of(a.ip())),
            _ => None,
        };
        let ip_guard = match key {
            // Counted like the rate limit keys clients: a host holding a
            // whole IPv6 /64 is one client, not 2^64 of them.
            Some(k) => match per_ip.enter(k, limits.max_connections_per_ip) {
                Some(g) => Some(g),
                None => {
                    metrics::counter!("keyhold_connections_refused_total", "reason" => super::observe::REFUSED_PER_ADDRESS)
                        .increment(1);
                    tracing::debug!(peer = %k, "too many connections from one address; closed");
                    continue;
                }
            },
            None => None,
        };
        // At the cap: make room by closing an idle connection (see
        // `slots`); the new one waits, in its own task so that accepting
        // goes on, for a slot to free (the closed one's, or one whose
        // handshake deadline ends). Too many waiting already: refused.
        let ready = permits.clone().try_acquire_owned().ok();
        if ready.is_none() {
            if waiting.load(Ordering::Relaxed) >= WAITING_MAX {
                metrics::counter!("keyhold_connections_refused_total", "reason" => super::observe::REFUSED_TOTAL)
                    .increment(1);
                tracing::debug!("at the connection cap with too many waiting; closed");
                continue;
            }
            slots.evict_one();
        }
        let slot_wait = limits.handshake_timeout + SLOT_WAIT;
        let (permits_for, waiting_for) = (permits.clone(), waiting.clone());
        let ctx = ConnCtx {
            routes: routes.clone(),
            builder: builder.clone(),
            observer: observer.clone(),
            stop: stop_rx.clone(),
            tls: listener.tls.clone(),
            limits,
            slots: slots.clone(),
            key,
        };
        tokio::spawn(async move {
            let permit = match ready {
                Some(p) => p,
                None => {
                    waiting_for.fetch_add(1, Ordering::Relaxed);
                    let got = tokio::time::timeout(slot_wait, permits_for.acquire_owned()).await;
                    waiting_for.fetch_sub(1, Ordering::Relaxed);
                    match got {
                        Ok(Ok(p)) => p,
                        _ => {
                            metrics::counter!("keyhold_connections_refused_total", "reason" => super::observe::REFUSED_TOTAL)
                                .increment(1);
                            return;
                        }
                    }
                }
            };
            metrics::gauge!("keyhold_connections").increment(1.0);
            ctx.run(io, peer, accepted_at).await;
            metrics::gauge!("keyhold_connections").decrement(1.0);
            drop(ip_guard);
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    tokio::select! {
        _ = permits.acquire_many(max as u32) => {}
        _ = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!("shutdown grace period over; closing the remaining connections");
        }
    }
}

/// An accepted connection before TLS.
enum Io {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(socket: &Socket) -> std::io::Result<(Io, Peer)> {
    match socket {
        Socket::Tcp(l) => {
            let (s, addr) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok((Io::Tcp(s), Peer::Tcp(addr)))
        }
        Socket::Unix(l, file) => {
            let (s, _) = l.accept().await?;
            let cred = s.peer_cred().ok();
            let peer = Peer::Unix {
                path: file.path().display().to_string(),
                uid: cred.map(|c| c.uid()),
                pid: cred.and_then(|c| c.pid()),
            };
            Ok((Io::Unix(s), peer))
        }
    }
}

struct ConnCtx {
    routes: BoxedFilter<(Response,)>,
    builder: Arc<Builder<TokioExecutor>>,
    observer: RequestObserver,
    /// Turns true when the server stops accepting.
    stop: tokio::sync::watch::Receiver<bool>,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    /// Where an idle connection can be asked to make room.
    slots: Arc<super::slots::Slots>,
    /// The client's address as the per-address cap counts it.
    key: Option<IpAddr>,
}

impl ConnCtx {
    async fn run(self, io: Io, peer: Peer, accepted_at: tokio::time::Instant) {
        // One deadline for everything before a request exists: a socket
        // that sends nothing, a TLS handshake that never ends and a
        // protocol preface sent a byte at a time all end here.
        let deadline = accepted_at + self.limits.handshake_timeout;
        match io {
            Io::Unix(s) => self.serve_io(s, peer, deadline).await,
            Io::Tcp(mut s) => match self.tls.clone() {
                None => self.serve_io(s, peer, deadline).await,
                Some(_) if super::plain_on_tls::refused(&mut s, deadline).await => {}
                Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(s)).await
                {
                    Ok(Ok(tls)) => self.serve_io(tls, peer, deadline).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                },
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
                let version = super::context::HttpVersion(req.version());
                req.extensions_mut().insert(version);
                let method = req.method().clone();
                let route = super::route_label(&method, req.uri().path());
                // The request id is chosen here, so that a panic in the
                // handler is logged and answered under the id it would have
                // carried.
                let request_id = uuid::Uuid::new_v4().to_string();
                req.extensions_mut()
                    .insert(super::context::RequestId(request_id.clone()));
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
                        Ok(super::context::connect_refused())
                    } else {
                        let call = tower_service::Service::call(&mut svc, req);
                        super::panics::guarded(route, request_id.clone(), call).await
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

/// The fewest bytes one write must carry to count as an answer making
/// progress (HTTP/2 control frames are 9-17 bytes).
const PROGRESS_BYTES: usize = 64;

/// The first bytes of every HTTP/2 connection (prior knowledge or ALPN).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const NOT_HTTP: &str = "this is not an HTTP request: keyhold speaks HTTP/1.1 and HTTP/2 \
                        (https:// only when it was started with --tls-cert)";

/// What the first bytes of a connection say.
#[derive(Debug, PartialEq, Eq)]
enum FirstBytes {
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
async fn sniff<I: AsyncRead + Unpin>(io: &mut I) -> std::io::Result<FirstBytes> {
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

/// hyper's own answer to an HTTP/1 request it could not parse is a bare
/// head with an empty body (keyhold's answers always carry JSON). Returns
/// the same status with a JSON `detail` instead.
fn json_for_bare_error(head: &[u8]) -> Option<Vec<u8>> {
    // Cheap checks first: this looks at every HTTP/1 write.
    if head.len() > 1024 || !head.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let code: u16 = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    if !text.ends_with("\r\n\r\n")
        || !text
            .to_ascii_lowercase()
            .contains("\r\ncontent-length: 0\r\n")
    {
        return None;
    }
    let detail = match code {
        400 => "the request could not be read as HTTP/1.1: check its request line and headers",
        414 => "the request target is too long: send a shorter path and query",
        431 => "the request headers are larger than 64 KiB: send fewer or shorter headers",
        _ => return None,
    };
    Some(json_answer(code, detail))
}

/// A connection whose first bytes were already read (to tell HTTP/1 from
/// HTTP/2 under a deadline): reads return them first. On HTTP/1, hyper's
/// bare parse-error answers are rewritten with a JSON `detail`.
struct Prefixed<I> {
    prefix: Vec<u8>,
    read: usize,
    io: I,
    rewrite_errors: bool,
    /// A rewritten answer still being written.
    pending: Vec<u8>,
    written: usize,
    /// When bytes were last written to the client (ms since `opened`): a
    /// client that reads is active even while one long answer streams.
    progress: Option<(Instant, Arc<AtomicU64>)>,
}

impl<I> Prefixed<I> {
    fn new(prefix: Vec<u8>, io: I, rewrite_errors: bool) -> Prefixed<I> {
        Prefixed {
            prefix,
            read: 0,
            io,
            rewrite_errors,
            pending: Vec::new(),
            written: 0,
            progress: None,
        }
    }

    /// Notes write progress in `clock` (ms since `opened`).
    fn with_progress(mut self, opened: Instant, clock: Arc<AtomicU64>) -> Prefixed<I> {
        self.progress = Some((opened, clock));
        self
    }

    fn note(&self, written: &Poll<std::io::Result<usize>>) {
        if let (Poll::Ready(Ok(n)), Some((opened, clock))) = (written, &self.progress) {
            // HTTP/2's own small frames (a PING's answer, a window update,
            // a settings ack) are not an answer making progress: an idle
            // connection that answers PINGs is still idle.
            if *n >= PROGRESS_BYTES {
                clock.store(opened.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> Prefixed<I> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.read < this.prefix.len() {
            let n = (this.prefix.len() - this.read).min(buf.remaining());
            buf.put_slice(&this.prefix[this.read..this.read + n]);
            this.read += n;
            if this.read == this.prefix.len() {
                this.prefix = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if this.rewrite_errors {
            if let Some(answer) = json_for_bare_error(buf) {
                this.pending = answer;
                // Taken whole; poll_flush and poll_shutdown finish it.
                if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                    return Poll::Ready(Err(e));
                }
                return Poll::Ready(Ok(buf.len()));
            }
        }
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.note(&r);
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if this.rewrite_errors {
            // A bare answer is a head alone, in one slice.
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            let answer = bufs
                .iter()
                .find(|b| !b.is_empty())
                .filter(|b| b.len() == total)
                .and_then(|b| json_for_bare_error(b));
            if let Some(answer) = answer {
                this.pending = answer;
                if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                    return Poll::Ready(Err(e));
                }
                return Poll::Ready(Ok(total));
            }
        }
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.note(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
pub(super) mod tests {
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
    fn the_per_ip_cap_counts_an_ipv6_64_as_one_client() {
        let table = Arc::new(PerIp::default());
        let key = |ip: &str| crate::limiter::network_of(ip.parse().unwrap());
        let first = table.enter(key("2001:db8:1:2::1"), 2);
        let second = table.enter(key("2001:db8:1:2:ffff::9"), 2);
        assert!(first.is_some() && second.is_some());
        assert!(
            table.enter(key("2001:db8:1:2:1234::5"), 2).is_none(),
            "a third address of the same /64 passed the cap of 2"
        );
        assert!(table.enter(key("2001:db8:1:3::1"), 2).is_some());
        drop(first);
        assert!(table.enter(key("2001:db8:1:2::77"), 2).is_some());
    }

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

    #[test]
    fn bare_parse_errors_get_a_json_detail_and_nothing_else_does() {
        let bare =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(json_for_bare_error(bare).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
        assert!(out.contains("\"detail\""), "{out}");
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n";
        assert!(json_for_bare_error(ours).is_none());
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(json_for_bare_error(ok).is_none());
    }
}
