//! TLS: the rustls configuration built from a PEM certificate chain and
//! key (`--tls-cert`, `--tls-key`), and the handshake of one connection.
//!
//! Not for: plain HTTP sent to the TLS port (`sniff.rs` answers it before
//! any handshake).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Why TLS could not be set up. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsSetupError {
    #[error("cannot read the TLS certificate {path}: {detail}; give a PEM file (--tls-cert / KEYHOLD_TLS_CERT)")]
    Cert { path: PathBuf, detail: String },
    #[error("cannot read the TLS private key {path}: {detail}; give a PEM file (--tls-key / KEYHOLD_TLS_KEY)")]
    Key { path: PathBuf, detail: String },
    #[error("the TLS certificate and key do not form a usable pair: {0}")]
    Config(String),
}

/// A rustls acceptor for a PEM certificate chain and private key.
pub(crate) fn load_tls(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsSetupError> {
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

/// The TLS handshake of `s`, finished before `deadline` (the connection's
/// pre-request deadline); `None` (logged) when it fails or times out.
pub(super) async fn handshake(
    acceptor: TlsAcceptor,
    s: TcpStream,
    deadline: tokio::time::Instant,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout_at(deadline, acceptor.accept(s)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}
