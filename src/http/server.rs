//! keyhold's own server loop around the warp filter.
//!
//! warp 0.4's built-in server sets no header-read timeout and no
//! connection limit, has no TLS and no remote-address filter. This one
//! accept loop serves plain TCP, TLS (rustls) and Unix sockets alike: it
//! caps open connections (in all and per client address), serves each with
//! hyper's auto (HTTP/1.1 + HTTP/2) builder with a header-read timeout
//! (which also closes idle keep-alive connections), inserts the peer as a
//! request extension ([`Peer`]), reports every request to an observer
//! (logs, metrics), and shuts down gracefully.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::context::Peer;
use crate::limiter::TrustedProxies;

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most; further ones wait in the accept queue.
    pub max_connections: usize,
    /// Open connections from one client address at most (trusted proxies
    /// are exempt); further ones are closed at once.
    pub max_connections_per_ip: usize,
    /// Time a client has to send a request's headers (slow-loris guard);
    /// also how long an idle keep-alive connection is kept, and how long a
    /// TLS handshake may take.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_connections_per_ip: 128,
            header_read_timeout: Duration::from_secs(10),
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

impl std::str::FromStr for Bind {
    type Err = String;
    fn from_str(s: &str) -> Result<Bind, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(
                    "unix: needs a path, for example unix:/run/keyhold/keyhold.sock".into(),
                );
            }
            return Ok(Bind::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>().map(Bind::Tcp).map_err(|_| {
            format!("`{s}` is neither host:port (127.0.0.1:8787, [::1]:8787) nor unix:/path")
        })
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

/// What a file is, for an error message.
fn kind_of(t: &std::fs::FileType) -> &'static str {
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

enum Socket {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
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
    /// dead server is replaced, a live one is refused.
    pub async fn bind(bind: &Bind, tls: Option<TlsAcceptor>) -> std::io::Result<Listener> {
        let socket = match bind {
            Bind::Tcp(addr) => Socket::Tcp(TcpListener::bind(addr).await?),
            Bind::Unix(path) => {
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    use std::os::unix::fs::FileTypeExt;
                    // Only a socket is ever replaced: a regular file, a
                    // directory or a symbolic link at PATH is someone
                    // else's, and a mistyped path must not delete it.
                    if !meta.file_type().is_socket() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            format!(
                                "{} exists and is not a socket ({}); keyhold replaces only a \
                                 stale socket: pick another path, or move that file away",
                                path.display(),
                                kind_of(&meta.file_type())
                            ),
                        ));
                    }
                    if std::os::unix::net::UnixStream::connect(path).is_ok() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::AddrInUse,
                            "another server is listening on this socket",
                        ));
                    }
                    std::fs::remove_file(path)?;
                }
                let l = UnixListener::bind(path)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
                Socket::Unix(l, path.clone())
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
            Socket::Unix(_, p) => format!("unix:{}", p.display()),
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

/// What handlers leave in the answer's extensions for the request log
/// (never sent to the client).
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub request_id: String,
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
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_ip = Arc::new(PerIp::default());
    let graceful = GracefulShutdown::new();
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
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = accept(&listener.socket) => a,
        };
        let (io, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ip_guard = match &peer {
            Peer::Tcp(a) if !exempt.contains(a.ip()) => {
                match per_ip.enter(
                    crate::limiter::canonical(a.ip()),
                    limits.max_connections_per_ip,
                ) {
                    Some(g) => Some(g),
                    None => {
                        tracing::debug!(peer = %a.ip(), "too many connections from one address; closed");
                        continue;
                    }
                }
            }
            _ => None,
        };
        let ctx = ConnCtx {
            routes: routes.clone(),
            builder: builder.clone(),
            observer: observer.clone(),
            watcher: graceful.watcher(),
            tls: listener.tls.clone(),
            handshake_timeout: limits.header_read_timeout,
        };
        tokio::spawn(async move {
            ctx.run(io, peer).await;
            drop(ip_guard);
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
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
        Socket::Unix(l, path) => {
            let (s, _) = l.accept().await?;
            let cred = s.peer_cred().ok();
            let peer = Peer::Unix {
                path: path.display().to_string(),
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
    watcher: hyper_util::server::graceful::Watcher,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
}

impl ConnCtx {
    async fn run(self, io: Io, peer: Peer) {
        match io {
            Io::Unix(s) => self.serve_io(s, peer).await,
            Io::Tcp(s) => match self.tls.clone() {
                None => self.serve_io(s, peer).await,
                Some(acceptor) => {
                    match tokio::time::timeout(self.handshake_timeout, acceptor.accept(s)).await {
                        Ok(Ok(tls)) => self.serve_io(tls, peer).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            },
        }
    }

    async fn serve_io<I>(self, io: I, peer: Peer)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let svc = warp::service(self.routes);
        let observer = self.observer;
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(peer.clone());
            let version = super::context::HttpVersion(req.version());
            req.extensions_mut().insert(version);
            let method = req.method().clone();
            let route = super::route_label(&method, req.uri().path());
            let mut svc = svc.clone();
            let observer = observer.clone();
            let peer = peer.clone();
            async move {
                let started = Instant::now();
                let resp = tower_service::Service::call(&mut svc, req).await;
                if let Ok(r) = &resp {
                    let info = r.extensions().get::<RequestInfo>();
                    observer(&RequestDone {
                        method,
                        route,
                        status: r.status().as_u16(),
                        latency: started.elapsed(),
                        request_id: info.map(|i| i.request_id.clone()),
                        client: info.map_or_else(|| peer.describe(), |i| i.client.clone()),
                        caller: info.and_then(|i| i.caller.clone()),
                    });
                }
                resp
            }
        });
        let conn = self
            .builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        if let Err(e) = self.watcher.watch(conn).await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}
