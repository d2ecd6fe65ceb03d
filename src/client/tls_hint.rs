//! What to do about a failed TLS handshake, from the rustls error under a
//! reqwest error: an untrusted certificate names `--ca-cert`, a name
//! mismatch the address, a server that does not speak TLS `http://`.

use rustls::{CertificateError, Error as TlsError};

/// The rustls error somewhere in `e`'s chain of causes. An `io::Error`
/// hides its inner error from `source()`, and a boxed error may be handed
/// on as the box: both are opened by hand.
fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a TlsError> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<TlsError>() {
            return Some(t);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(t) = inner.downcast_ref::<TlsError>() {
                    return Some(t);
                }
                cur = Some(inner);
                continue;
            }
        }
        cur = err.source();
    }
    None
}

/// What happened and what to do, when `e` failed in the TLS handshake;
/// `ca_given` says whether `--ca-cert` was passed.
pub(super) fn hint(e: &reqwest::Error, ca_given: bool) -> Option<String> {
    let untrusted = if ca_given {
        "the server's certificate is not signed by the CA certificate given with --ca-cert \
         (KEYHOLD_CA_CERT) nor by a CA this system trusts: give the CA certificate that signed \
         the server's (the one behind its --tls-cert)"
    } else {
        "the server's certificate is not signed by a CA this system trusts: pass --ca-cert FILE \
         (or set KEYHOLD_CA_CERT) with the PEM certificate of the CA that signed the server's \
         (the one behind its --tls-cert)"
    };
    let said = match tls_error(e)? {
        TlsError::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer
            | CertificateError::BadSignature
            | CertificateError::UnhandledCriticalExtension => untrusted.to_string(),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the server's certificate is not issued for the host name in the address: use a \
                 name (or IP) its certificate lists in KEYHOLD_ADDR (--addr)"
                    .to_string()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired: the operator renews it (serve --tls-cert)"
                    .to_string()
            }
            other => format!("the server's certificate was refused ({other:?}): {untrusted}"),
        },
        TlsError::InvalidMessage(_) | TlsError::InappropriateMessage { .. } => {
            "the server did not answer in TLS: if it was started without --tls-cert, use an \
             http:// address in KEYHOLD_ADDR (--addr)"
                .to_string()
        }
        other => format!("the TLS handshake failed: {other}"),
    };
    Some(said)
}
