//! Flags of `keyhold serve`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::*;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: DataDir,
    /// Address to listen on: HOST:PORT (an address or a host name such as
    /// localhost; port 0 picks a free one), or unix:/path for a Unix socket
    /// (mode 0660).
    #[arg(long, env = "KEYHOLD_LISTEN", default_value = "127.0.0.1:8787")]
    pub listen: String,
    /// Serve GET /metrics without a token on a listener of its own, for a
    /// local Prometheus: a loopback HOST:PORT or unix:/path. Without it,
    /// /metrics on the main listener needs a token with `metrics:read`.
    #[arg(long, env = "KEYHOLD_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// TLS certificate chain (PEM); with --tls-key, serve HTTPS.
    #[arg(long, env = "KEYHOLD_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "KEYHOLD_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Log lines as `text` (for people) or `json` (for collectors).
    #[arg(long, env = "KEYHOLD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Run on a temporary in-memory store with a random key: nothing
    /// persists. Loopback only. For trying keyhold out.
    #[arg(long, env = "KEYHOLD_DEV")]
    pub dev: bool,
    /// Reveals allowed per client IP, shared by every reveal route: N/s,
    /// N/min or N/h (burst N). Default 10/min. On PostgreSQL every node
    /// uses the rate stored in the database (`keyhold reveal-rate`); a node
    /// given another one refuses to start.
    #[arg(long, env = "KEYHOLD_REVEAL_RATE")]
    pub reveal_rate: Option<RevealRate>,
    /// Refused requests each token may make: N/s, N/min or N/h (burst N).
    /// Past it, its requests that would be refused are answered 429. Every
    /// refusal of a token is recorded, at most one record per token,
    /// action, outcome and second (with a count).
    #[arg(long, env = "KEYHOLD_REFUSAL_BUDGET", default_value = "60/min")]
    pub refusal_budget: RevealRate,
    /// Successful audited requests each token may make (reveals excepted:
    /// they have the reveal rate per client): N/s, N/min or N/h (burst N).
    /// Past it, its requests are answered 429 and not done; they are
    /// recorded coalesced, as refusals are.
    #[arg(long, env = "KEYHOLD_RECORD_BUDGET", default_value = "600/min")]
    pub record_budget: RevealRate,
    /// Proxies whose X-Forwarded-For is believed: comma-separated
    /// addresses or CIDRs. Empty: the header is ignored.
    #[arg(long, env = "KEYHOLD_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: TrustedProxies,
    /// Open connections at most.
    #[arg(long, env = "KEYHOLD_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Open connections from one client address at most (an IPv4
    /// address, an IPv6 /64; trusted proxies are exempt).
    #[arg(long, env = "KEYHOLD_MAX_CONNECTIONS_PER_IP", default_value_t = 128)]
    pub max_connections_per_ip: usize,
    /// Time from accept until a connection's protocol is known (first
    /// bytes, TLS handshake, HTTP/1-or-2 detection); silent sockets are
    /// closed then. Seconds, or with units (10s, 1m).
    #[arg(
        long,
        env = "KEYHOLD_HANDSHAKE_TIMEOUT",
        default_value = "10",
        value_name = "DURATION"
    )]
    pub handshake_timeout: crate::duration::Seconds,
    /// Time a connection may go without starting a request before it is
    /// closed (HTTP/2 connections answering PINGs included). Seconds, or
    /// with units (60s, 5m).
    #[arg(
        long,
        env = "KEYHOLD_IDLE_TIMEOUT",
        default_value = "60",
        value_name = "DURATION"
    )]
    pub idle_timeout: crate::duration::Seconds,
    /// Time a client has to send a request's headers, and again its body
    /// (slow-loris guard; 408 for a body that does not arrive). Seconds,
    /// or with units (10s, 1m).
    #[arg(
        long,
        env = "KEYHOLD_HEADER_TIMEOUT",
        default_value = "10",
        value_name = "DURATION"
    )]
    pub header_timeout: crate::duration::Seconds,
    /// Request bodies read at once, at most (each up to 64 KiB, read only
    /// once the caller is authenticated); further uploads wait up to the
    /// header timeout, then get 503.
    #[arg(long, env = "KEYHOLD_MAX_BODY_READS", default_value_t = 64)]
    pub max_body_reads: usize,
    /// Milliseconds a request waits for its audit record to be durable
    /// before it is refused with 503.
    #[arg(long, env = "KEYHOLD_AUDIT_TIMEOUT_MS", default_value_t = 5000)]
    pub audit_timeout_ms: u64,
    /// Page cache of the store, in MiB [default: 64 bytes a stored key,
    /// at least 8 and at most 256].
    #[arg(long, env = "KEYHOLD_CACHE_MB")]
    pub cache_mb: Option<u64>,
    /// Log filter (tracing syntax: error, warn, info, debug).
    #[arg(long, env = "KEYHOLD_LOG", default_value = "info")]
    pub log: String,
    /// How long a deleted key can be restored (POST
    /// /api/keys/{id}/restore) before housekeeping destroys it: seconds,
    /// or with units (90s, 15m, 12h, 7d, 1w3d, 2w).
    #[arg(
        long,
        env = "KEYHOLD_RECOVERY_WINDOW",
        default_value = "7d",
        value_name = "DURATION"
    )]
    pub recovery_window: crate::duration::Seconds,
    /// Versions kept of each key (PUT /api/keys/{id}); older ones enter the
    /// recovery window (an admin can restore them; destroyed when it
    /// ends), audited. 1 to 100.
    #[arg(long, env = "KEYHOLD_KEEP_VERSIONS", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub keep_versions: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
