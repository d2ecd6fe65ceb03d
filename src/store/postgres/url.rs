//! The database URL: parsed once, its password never shown.
//!
//! `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=...]` (or the
//! key=value form). TLS is rustls only: `sslmode=require`, `verify-ca`
//! and `verify-full` all mean TLS with the server's certificate verified
//! against `sslrootcert=FILE` (or `--database-ca`) or the system's roots,
//! and its name checked. Unlike libpq, keyhold never accepts an
//! unverified certificate: TLS that anyone in the middle can terminate
//! would protect nothing. `disable` and `prefer` connect in clear
//! (`prefer` does not try TLS: say `require` to get it).

use std::path::PathBuf;
use std::str::FromStr;

/// A parsed `--database-url`. Debug and Display hide the password.
#[derive(Clone)]
pub struct DatabaseUrl {
    config: tokio_postgres::Config,
    /// TLS asked for (`sslmode=require`, `verify-ca` or `verify-full`).
    tls: bool,
    /// `sslrootcert=FILE` from the URL.
    root_cert: Option<PathBuf>,
    shown: String,
}

/// Why a database URL was refused. Never holds the URL itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid --database-url / KEYHOLD_DATABASE_URL ({0}): write \
     postgres://USER:PASSWORD@HOST:PORT/DBNAME?sslmode=verify-full"
)]
pub struct DatabaseUrlError(String);

impl FromStr for DatabaseUrl {
    type Err = DatabaseUrlError;
    fn from_str(s: &str) -> Result<DatabaseUrl, DatabaseUrlError> {
        let s = s.trim();
        if !(s.starts_with("postgres://") || s.starts_with("postgresql://")) {
            return Err(DatabaseUrlError(
                "it must start with postgres:// or postgresql://".into(),
            ));
        }
        // Take out what tokio-postgres does not know (verify modes, the
        // root certificate) before it parses the rest.
        let (base, query) = match s.split_once('?') {
            Some((b, q)) => (b, q),
            None => (s, ""),
        };
        let mut kept = Vec::new();
        let mut tls = false;
        let mut root_cert = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match (k, v) {
                ("sslmode", "require" | "verify-ca" | "verify-full") => tls = true,
                ("sslmode", "disable" | "prefer" | "allow") => {}
                ("sslmode", _) => return Err(DatabaseUrlError("unknown sslmode".into())),
                ("sslrootcert", f) => root_cert = Some(PathBuf::from(f)),
                _ => kept.push(pair),
            }
        }
        let url = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| {
                // tokio-postgres names the option at fault, never its value.
                DatabaseUrlError(e.to_string())
            })?;
        config.ssl_mode(if tls {
            tokio_postgres::config::SslMode::Require
        } else {
            tokio_postgres::config::SslMode::Disable
        });
        let shown = redact(base);
        Ok(DatabaseUrl {
            config,
            tls,
            root_cert,
            shown,
        })
    }
}

/// `scheme://user:***@host/db`: the URL without its password.
fn redact(base: &str) -> String {
    let Some((scheme, rest)) = base.split_once("://") else {
        return "postgres://(unreadable)".into();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}")
            } else {
                format!("{scheme}://{user}@{host}")
            }
        }
        None => format!("{scheme}://{rest}"),
    }
}

impl DatabaseUrl {
    /// The client configuration (holds the password: never print it).
    pub(crate) fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Whether TLS is required.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The root certificate named in the URL, if any.
    pub fn root_cert(&self) -> Option<&PathBuf> {
        self.root_cert.as_ref()
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", self.shown)
    }
}

/// A database URL as given on the command line, not yet parsed: clap
/// echoes a value it cannot parse in its error, and this one holds a
/// password, so it is parsed afterwards ([`DatabaseUrlArg::parse_url`]),
/// where the error names the fault and never the URL.
#[derive(Clone)]
pub struct DatabaseUrlArg(String);

impl FromStr for DatabaseUrlArg {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<DatabaseUrlArg, Self::Err> {
        Ok(DatabaseUrlArg(s.to_string()))
    }
}

impl std::fmt::Debug for DatabaseUrlArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.parse_url() {
            Ok(u) => write!(f, "{u:?}"),
            Err(_) => f.write_str("DatabaseUrl(unreadable)"),
        }
    }
}

impl DatabaseUrlArg {
    /// The parsed URL.
    pub fn parse_url(&self) -> Result<DatabaseUrl, DatabaseUrlError> {
        self.0.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown() {
        let u: DatabaseUrl = "postgres://kh:s3cret-pw@db.example:5433/vault?sslmode=verify-full"
            .parse()
            .unwrap();
        assert!(u.tls());
        for shown in [u.to_string(), format!("{u:?}")] {
            assert!(!shown.contains("s3cret-pw"), "{shown}");
            assert!(shown.contains("kh:***@db.example:5433/vault"), "{shown}");
        }
        let bad = "postgres://kh:s3cret-pw@h/db?sslmode=bogus"
            .parse::<DatabaseUrl>()
            .unwrap_err();
        assert!(!bad.to_string().contains("s3cret-pw"));
        assert!("mysql://x@y/z".parse::<DatabaseUrl>().is_err());
    }

    #[test]
    fn verify_modes_mean_tls_and_a_root_file_is_taken_out() {
        let u: DatabaseUrl = "postgres://kh@h/db?sslmode=require&sslrootcert=/etc/ca.pem"
            .parse()
            .unwrap();
        assert!(u.tls());
        assert_eq!(u.root_cert(), Some(&PathBuf::from("/etc/ca.pem")));
        let plain: DatabaseUrl = "postgres://kh@h/db".parse().unwrap();
        assert!(!plain.tls());
    }
}
