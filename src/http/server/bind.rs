//! Where the server listens: a `Bind` (HOST:PORT or unix:/path) parsed
//! from the flag, and the bound `Listener` that accepts connections.
//!
//! Not for: a Unix socket file's life (`unix_socket.rs`) or TLS
//! (`tls.rs`); the listener only carries the acceptor.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::TlsAcceptor;

use super::unix_socket::{bind_unix, SocketFile};
use crate::http::context::Peer;

/// Where to listen: `host:port` or `unix:/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bind {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// An address to listen on that is neither HOST:PORT nor unix:/path (the
/// message says which shapes are taken).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadBind(String);

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

enum Socket {
    Tcp(TcpListener),
    /// The file is removed when the listener is dropped (after it).
    Unix(UnixListener, SocketFile),
}

/// A bound listener, with TLS when configured.
pub(crate) struct Listener {
    socket: Socket,
    /// The handshake each accepted TCP connection goes through, if any.
    pub(super) tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Listener {
    /// Binds. A Unix socket gets mode 0660; a stale socket file left by a
    /// dead server is replaced, a live one is refused (`unix_socket`); its file
    /// is removed when the listener is dropped.
    pub(crate) async fn bind(bind: &Bind, tls: Option<TlsAcceptor>) -> std::io::Result<Listener> {
        let socket = match bind {
            Bind::Tcp(addr) => Socket::Tcp(TcpListener::bind(addr).await?),
            Bind::Unix(path) => {
                let (l, file) = bind_unix(path)?;
                Socket::Unix(l, file)
            }
        };
        Ok(Listener { socket, tls })
    }

    /// `http://ADDR`, `https://ADDR` or `unix:/path`.
    pub(crate) fn describe(&self) -> String {
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
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        match &self.socket {
            Socket::Tcp(l) => l.local_addr().ok(),
            Socket::Unix(..) => None,
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// An accepted connection before TLS.
pub(super) enum Io {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Listener {
    /// The next connection, and who is at the other end.
    pub(super) async fn accept(&self) -> std::io::Result<(Io, Peer)> {
        match &self.socket {
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
}
