//! What the running server is configured with: `keyhold serve`'s flags
//! and environment, checked once at start (by `cli::serve_flags`) into
//! values that are already valid, so that nothing below re-checks or
//! clamps a setting. Where a value could be out of range, its type says
//! so: a count that must be positive is a `NonZero`, a timeout is a
//! [`Timeout`] of at least one second.
//!
//! Not for: parsing flags (clap, in `config`), the checks and their
//! messages (`cli::serve_flags`), the reveal rate a shared database
//! stores (`ops::settings`), the log filter and the store's location
//! (set up by `cli::serve` before the server starts).

use std::fmt;
use std::num::NonZeroUsize;
use std::time::Duration;

use tokio_rustls::TlsAcceptor;

use super::server::{Bind, Limits};
use crate::limiter::{RevealRate, TrustedProxies};
use crate::vault::KeyPolicy;

/// `keyhold serve`'s settings, every value checked.
#[derive(Debug)]
pub(crate) struct ServerSettings {
    /// `--listen`: where the API is served.
    pub listen: Listen,
    /// `--metrics-listen`: /metrics without a token, on a loopback address
    /// or a Unix socket only.
    pub metrics_listen: Option<Listen>,
    /// `--tls-cert` with `--tls-key`, both read and valid; never on a Unix
    /// socket.
    pub tls: Option<Tls>,
    /// `--dev`: an in-memory store; `listen` is then loopback or a Unix
    /// socket.
    pub dev: bool,
    /// `--reveal-rate` as given (`None`: the default, or on a shared
    /// database the stored one; see `cli::serve`).
    pub reveal_rate: Option<RevealRate>,
    /// `--refusal-budget`: refused requests per token.
    pub refusal_budget: RevealRate,
    /// `--record-budget`: successful audited requests per token.
    pub record_budget: RevealRate,
    /// `--trusted-proxies`.
    pub trusted_proxies: TrustedProxies,
    /// `--max-connections`: from 1 to the most a semaphore holds.
    pub max_connections: NonZeroUsize,
    /// `--max-connections-per-ip` (0: only trusted proxies connect).
    pub max_connections_per_ip: usize,
    /// `--handshake-timeout`.
    pub handshake_timeout: Timeout,
    /// `--idle-timeout`.
    pub idle_timeout: Timeout,
    /// `--header-timeout`: for a request's headers, and again its body.
    pub header_timeout: Timeout,
    /// `--max-body-reads`: from 1 to the most a semaphore holds.
    pub max_body_reads: NonZeroUsize,
    /// `--audit-timeout-ms`: at least one millisecond.
    pub audit_timeout: Duration,
    /// `--cache-mb` in bytes (`None`: sized from the store).
    pub cache_bytes: Option<u64>,
    /// `--keep-versions` and `--recovery-window`.
    pub key_policy: KeyPolicy,
    /// How often housekeeping walks the keys: a quarter of the recovery
    /// window, from 1 s to 5 min.
    pub key_upkeep_every: Duration,
}

impl ServerSettings {
    /// The main listener's connection limits.
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections.get(),
            max_connections_per_ip: self.max_connections_per_ip,
            handshake_timeout: self.handshake_timeout.get(),
            header_read_timeout: self.header_timeout.get(),
            idle_timeout: self.idle_timeout.get(),
            ..Limits::default()
        }
    }
}

/// An address to listen on, resolved, with the text it was given as (for
/// messages: `cannot listen on {given}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listen {
    pub bind: Bind,
    pub given: String,
}

/// A TLS configuration, its files read and checked.
#[derive(Clone)]
pub(crate) struct Tls(pub TlsAcceptor);

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tls(..)")
    }
}

/// A timeout of one second to one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeout(Duration);

impl Timeout {
    /// The longest timeout kept: a day (a connection's deadline is its
    /// start plus the timeout, which must not overflow the clock).
    pub(crate) const MAX_SECS: u64 = 86_400;

    /// `secs` seconds; 0 is taken as 1 (a zero timeout would close every
    /// connection before its first byte), and anything past a day as a
    /// day.
    pub(crate) fn from_secs(secs: u64) -> Timeout {
        Timeout(Duration::from_secs(secs.clamp(1, Self::MAX_SECS)))
    }

    pub(crate) fn get(self) -> Duration {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_is_one_second_to_one_day() {
        assert_eq!(Timeout::from_secs(0).get(), Duration::from_secs(1));
        assert_eq!(Timeout::from_secs(1).get(), Duration::from_secs(1));
        assert_eq!(Timeout::from_secs(90).get(), Duration::from_secs(90));
        assert_eq!(
            Timeout::from_secs(86_401).get(),
            Duration::from_secs(86_400)
        );
        assert_eq!(
            Timeout::from_secs(u64::MAX).get(),
            Duration::from_secs(86_400)
        );
    }
}
