//! Certificates for TLS tests, made with rcgen.

use std::path::{Path, PathBuf};

/// A CA and a server certificate for 127.0.0.1 and localhost, as PEM
/// files `{name}-ca.pem`, `{name}-cert.pem`, `{name}-key.pem` in `dir`.
pub fn certificates(dir: &Path, name: &str) -> [PathBuf; 3] {
    certificates_for(dir, name, &["localhost", "127.0.0.1"])
}

/// The same, the server's certificate for `hosts` only.
pub fn certificates_for(dir: &Path, name: &str, hosts: &[&str]) -> [PathBuf; 3] {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "keyhold test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let paths = ["ca.pem", "cert.pem", "key.pem"].map(|n| dir.join(format!("{name}-{n}")));
    std::fs::write(&paths[0], ca_cert.pem()).unwrap();
    std::fs::write(&paths[1], leaf.pem()).unwrap();
    std::fs::write(&paths[2], key.serialize_pem()).unwrap();
    paths
}

/// `keyhold serve` over TLS on this vault (sled) with `cert` and `key`,
/// its Fernet key and `env`.
pub fn serve(v: &super::Vault, cert: &Path, key: &Path, env: &[(&str, &str)]) -> super::Server {
    let mut all = vec![("FERNET_KEY", v.key.as_str())];
    all.extend_from_slice(env);
    super::Server::start_args(
        &[
            "--data-dir",
            v.dir_str(),
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &all,
    )
}
