//! `keyhold serve`'s flags and environment, checked once into
//! [`ServerSettings`] before the store is opened and before anything binds:
//! every refusal is a [`SettingsError`] naming the flag and its variable
//! (exit 2), and every value the server takes is valid from then on.
//!
//! What is normalised rather than refused, as before these checks were
//! gathered here: a timeout of 0 is 1 s, `--audit-timeout-ms 0` is 1 ms,
//! `--max-connections 0` and `--max-body-reads 0` are 1 (and past the most
//! a semaphore holds, that most), a recovery window past ten years is ten
//! years.
//!
//! Not for: the reveal rate a shared database stores (`cli::serve` checks
//! the given one against it once the store is open), the Fernet keys
//! (`keyring`), the store's location (`cli::location_with_cache`).

use std::time::Duration;

use tokio::sync::Semaphore;

use crate::config::ServeArgs;
use crate::duration::TEN_YEARS;
use crate::http::server::{load_tls, BadBind, Bind, TlsSetupError};
use crate::http::{Listen, ServerSettings, Timeout, Tls};
use crate::limiter::RevealRate;
use crate::vault::{KeyPolicy, KeyPolicyError};

/// A setting `serve` refuses at start: what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub(super) enum SettingsError {
    #[error("invalid --listen / KEYHOLD_LISTEN: {0}")]
    Listen(BadBind),
    #[error("invalid --metrics-listen / KEYHOLD_METRICS_LISTEN: {0}")]
    MetricsListen(BadBind),
    #[error(
        "--metrics-listen {0}: metrics are served there without a token, so only on a loopback \
         address (127.0.0.1:PORT, [::1]:PORT) or a Unix socket (unix:/path); scrape from \
         elsewhere with a metrics token on the main listener"
    )]
    MetricsNotLoopback(String),
    #[error("TLS is for TCP listeners; a Unix socket is protected by its file mode")]
    TlsOnUnixSocket,
    #[error("give both --tls-cert and --tls-key (KEYHOLD_TLS_CERT, KEYHOLD_TLS_KEY), or neither")]
    TlsHalf,
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("--dev listens on loopback only: use --listen 127.0.0.1:PORT")]
    DevNotLoopback,
    #[error("invalid --keep-versions / KEYHOLD_KEEP_VERSIONS, --recovery-window / KEYHOLD_RECOVERY_WINDOW: {0}")]
    KeyPolicy(#[from] KeyPolicyError),
    #[error(
        "this node was given --reveal-rate {given} (KEYHOLD_REVEAL_RATE), but every node of this \
         database uses the rate it stores, {stored}, so that a client gets one budget: start the \
         node without it, or change the rate of every node with `keyhold reveal-rate {given} \
         --database-url URL`"
    )]
    RevealRateDiffers {
        given: RevealRate,
        stored: RevealRate,
    },
}

/// Checks `args` (in this order: listeners, TLS, `--dev`, the rest) into
/// the settings the server runs with. Reads the TLS files; binds nothing.
pub(super) fn check(args: &ServeArgs) -> Result<ServerSettings, SettingsError> {
    let listen = Listen {
        bind: args.listen.parse().map_err(SettingsError::Listen)?,
        given: args.listen.clone(),
    };
    let metrics_listen = match &args.metrics_listen {
        None => None,
        Some(given) => {
            let bind: Bind = given.parse().map_err(SettingsError::MetricsListen)?;
            // The token-free metrics listener stays on this host.
            if is_off_host(&bind) {
                return Err(SettingsError::MetricsNotLoopback(given.clone()));
            }
            Some(Listen {
                bind,
                given: given.clone(),
            })
        }
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            if matches!(listen.bind, Bind::Unix(_)) {
                return Err(SettingsError::TlsOnUnixSocket);
            }
            Some(Tls(load_tls(cert, key)?))
        }
        (None, None) => None,
        _ => return Err(SettingsError::TlsHalf),
    };
    if args.dev && is_off_host(&listen.bind) {
        return Err(SettingsError::DevNotLoopback);
    }
    // A window past ten years is held at ten years (what a ttl may be).
    let key_policy = KeyPolicy::new(args.keep_versions, args.recovery_window.0.min(TEN_YEARS))?;
    Ok(ServerSettings {
        listen,
        metrics_listen,
        tls,
        dev: args.dev,
        reveal_rate: args.reveal_rate,
        refusal_budget: args.refusal_budget,
        record_budget: args.record_budget,
        trusted_proxies: args.trusted_proxies.clone(),
        max_connections: permits(args.max_connections),
        max_connections_per_ip: args.max_connections_per_ip,
        handshake_timeout: Timeout::from_secs(args.handshake_timeout.0),
        idle_timeout: Timeout::from_secs(args.idle_timeout.0),
        header_timeout: Timeout::from_secs(args.header_timeout.0),
        max_body_reads: permits(args.max_body_reads),
        audit_timeout: Duration::from_millis(args.audit_timeout_ms.max(1)),
        cache_bytes: args.cache_mb.map(|mb| mb.saturating_mul(1024 * 1024)),
        key_upkeep_every: key_upkeep_every(&key_policy),
        key_policy,
    })
}

/// A TCP address other than loopback (a Unix socket is on this host).
fn is_off_host(bind: &Bind) -> bool {
    matches!(bind, Bind::Tcp(a) if !a.ip().is_loopback())
}

/// A count of things held at once (connections, body reads): from 1 to
/// the most a semaphore holds (a semaphore given more panics).
fn permits(n: usize) -> std::num::NonZeroUsize {
    let most = Semaphore::MAX_PERMITS.min(u32::MAX as usize);
    std::num::NonZeroUsize::new(n.min(most)).unwrap_or(std::num::NonZeroUsize::MIN)
}

/// How often housekeeping walks the keys: a quarter of the recovery
/// window, at least every second and at most every five minutes.
fn key_upkeep_every(policy: &KeyPolicy) -> Duration {
    let quarter = Duration::from_micros((policy.recovery_window_us / 4).max(0) as u64);
    quarter.clamp(Duration::from_secs(1), Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::PathBuf;

    use clap::{Args, FromArgMatches};

    use super::*;

    /// `keyhold serve FLAGS...` as clap parses it, with no variable of the
    /// tests' environment (KEYHOLD_LISTEN, ...) read.
    fn try_args(flags: &[&str]) -> Result<ServeArgs, clap::Error> {
        let cmd =
            ServeArgs::augment_args(clap::Command::new("serve")).mut_args(|a| a.env(None::<&str>));
        let matches = cmd.try_get_matches_from(["serve"].iter().chain(flags))?;
        ServeArgs::from_arg_matches(&matches)
    }

    fn args(flags: &[&str]) -> ServeArgs {
        try_args(flags).unwrap()
    }

    fn refusal(flags: &[&str]) -> String {
        match check(&args(flags)) {
            Ok(s) => panic!("{flags:?} was taken: {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn tcp(s: &str) -> Bind {
        Bind::Tcp(s.parse::<SocketAddr>().unwrap())
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let s = check(&args(&[])).unwrap();
        let secs = Duration::from_secs;
        assert_eq!(s.listen.bind, tcp("127.0.0.1:8787"));
        assert_eq!(s.listen.given, "127.0.0.1:8787");
        assert!(s.metrics_listen.is_none() && s.tls.is_none() && !s.dev);
        assert_eq!(s.reveal_rate, None);
        assert_eq!(s.refusal_budget.to_string(), "60/min");
        assert_eq!(s.record_budget.to_string(), "600/min");
        assert!(s.trusted_proxies.is_empty());
        assert_eq!(s.max_connections.get(), 1024);
        assert_eq!(s.max_connections_per_ip, 128);
        assert_eq!(s.handshake_timeout.get(), secs(10));
        assert_eq!(s.idle_timeout.get(), secs(60));
        assert_eq!(s.header_timeout.get(), secs(10));
        assert_eq!(s.max_body_reads.get(), 64);
        assert_eq!(s.audit_timeout, Duration::from_millis(5000));
        assert_eq!(s.cache_bytes, None);
        assert_eq!(s.key_policy, KeyPolicy::default());
        assert_eq!(s.key_policy.keep_versions.get(), 10);
        assert_eq!(s.key_policy.recovery_window_us, 7 * 86_400 * 1_000_000);
        // A quarter of 7 days is past the 5 minutes at most.
        assert_eq!(s.key_upkeep_every, secs(300));
        let limits = s.limits();
        assert_eq!(limits.max_connections, 1024);
        assert_eq!(limits.max_connections_per_ip, 128);
        assert_eq!(limits.handshake_timeout, secs(10));
        assert_eq!(limits.header_read_timeout, secs(10));
        assert_eq!(limits.idle_timeout, secs(60));
    }

    #[test]
    fn given_values_are_taken_as_given() {
        let s = check(&args(&[
            "--listen",
            "[::1]:9000",
            "--metrics-listen",
            "unix:/run/keyhold/metrics.sock",
            "--dev",
            "--reveal-rate",
            "5/s",
            "--refusal-budget",
            "7/h",
            "--record-budget",
            "8/s",
            "--trusted-proxies",
            "10.0.0.0/8",
            "--max-connections",
            "3",
            "--max-connections-per-ip",
            "0",
            "--handshake-timeout",
            "2s",
            "--idle-timeout",
            "1m",
            "--header-timeout",
            "30",
            "--max-body-reads",
            "2",
            "--audit-timeout-ms",
            "250",
            "--cache-mb",
            "16",
            "--keep-versions",
            "100",
            "--recovery-window",
            "8s",
        ]))
        .unwrap();
        assert_eq!(s.listen.bind, tcp("[::1]:9000"));
        let metrics = s.metrics_listen.unwrap();
        assert_eq!(
            metrics.bind,
            Bind::Unix(PathBuf::from("/run/keyhold/metrics.sock"))
        );
        assert!(s.dev);
        assert_eq!(s.reveal_rate.map(|r| r.to_string()), Some("5/s".into()));
        assert_eq!(s.refusal_budget.to_string(), "7/h");
        assert_eq!(s.record_budget.to_string(), "8/s");
        assert!(s.trusted_proxies.contains("10.1.2.3".parse().unwrap()));
        assert_eq!(s.max_connections.get(), 3);
        assert_eq!(s.max_connections_per_ip, 0, "0: only trusted proxies");
        assert_eq!(s.handshake_timeout.get(), Duration::from_secs(2));
        assert_eq!(s.idle_timeout.get(), Duration::from_secs(60));
        assert_eq!(s.header_timeout.get(), Duration::from_secs(30));
        assert_eq!(s.max_body_reads.get(), 2);
        assert_eq!(s.audit_timeout, Duration::from_millis(250));
        assert_eq!(s.cache_bytes, Some(16 * 1024 * 1024));
        assert_eq!(s.key_policy.keep_versions.get(), 100);
        assert_eq!(s.key_policy.recovery_window_us, 8_000_000);
        assert_eq!(s.key_upkeep_every, Duration::from_secs(2));
    }

    #[test]
    fn zeros_and_huge_values_are_normalised_once() {
        let huge = u64::MAX.to_string();
        let s = check(&args(&[
            "--max-connections",
            "0",
            "--max-body-reads",
            &huge,
            "--handshake-timeout",
            "0",
            "--idle-timeout",
            "0s",
            "--header-timeout",
            "0",
            "--audit-timeout-ms",
            "0",
            "--cache-mb",
            &huge,
            "--recovery-window",
            "0",
        ]))
        .unwrap();
        assert_eq!(s.max_connections.get(), 1);
        let most = Semaphore::MAX_PERMITS.min(u32::MAX as usize);
        assert_eq!(
            s.max_body_reads.get(),
            most,
            "never more than a semaphore holds"
        );
        // A semaphore of that many is made without a panic.
        let _ = Semaphore::new(s.max_body_reads.get());
        for t in [s.handshake_timeout, s.idle_timeout, s.header_timeout] {
            assert_eq!(t.get(), Duration::from_secs(1));
        }
        assert_eq!(s.audit_timeout, Duration::from_millis(1));
        assert_eq!(s.cache_bytes, Some(u64::MAX));
        assert_eq!(s.key_policy.recovery_window_us, 0);
        assert_eq!(s.key_upkeep_every, Duration::from_secs(1));

        let s = check(&args(&[
            "--max-connections",
            &huge,
            "--recovery-window",
            "20w",
        ]))
        .unwrap();
        assert_eq!(s.max_connections.get(), most);
        assert_eq!(s.key_upkeep_every, Duration::from_secs(300));
        // Past ten years: held at ten years.
        let s = check(&args(&["--recovery-window", "600w"])).unwrap();
        assert_eq!(
            s.key_policy.recovery_window_us,
            TEN_YEARS as i64 * 1_000_000
        );
    }

    #[test]
    fn a_bad_listen_address_is_refused_naming_the_flag_and_the_forms() {
        let e = refusal(&["--listen", "not-an-address"]);
        assert!(e.starts_with("invalid --listen / KEYHOLD_LISTEN: "), "{e}");
        assert!(
            e.contains("neither HOST:PORT") && e.contains("unix:/path"),
            "{e}"
        );
        let e = refusal(&["--listen", "unix:"]);
        assert!(e.contains("unix: needs a path"), "{e}");
    }

    #[test]
    fn a_bad_metrics_address_is_refused_naming_its_flag() {
        let e = refusal(&["--metrics-listen", "nowhere"]);
        assert!(
            e.starts_with("invalid --metrics-listen / KEYHOLD_METRICS_LISTEN: "),
            "{e}"
        );
    }

    #[test]
    fn metrics_without_a_token_are_refused_off_this_host() {
        for addr in ["0.0.0.0:9100", "192.0.2.1:9100", "[2001:db8::1]:9100"] {
            let e = refusal(&["--metrics-listen", addr]);
            assert!(e.starts_with(&format!("--metrics-listen {addr}: ")), "{e}");
            assert!(e.contains("only on a loopback address"), "{e}");
            assert!(e.contains("metrics token on the main listener"), "{e}");
        }
        for addr in ["127.0.0.1:0", "[::1]:9100", "unix:/tmp/m.sock"] {
            assert!(check(&args(&["--metrics-listen", addr])).is_ok(), "{addr}");
        }
    }

    #[test]
    fn half_a_tls_pair_is_refused() {
        for flags in [["--tls-cert", "/x/cert.pem"], ["--tls-key", "/x/key.pem"]] {
            assert_eq!(
                refusal(&flags),
                "give both --tls-cert and --tls-key (KEYHOLD_TLS_CERT, KEYHOLD_TLS_KEY), or \
                 neither"
            );
        }
    }

    #[test]
    fn tls_on_a_unix_socket_is_refused_before_reading_the_files() {
        let e = refusal(&[
            "--listen",
            "unix:/tmp/k.sock",
            "--tls-cert",
            "/no/such/cert.pem",
            "--tls-key",
            "/no/such/key.pem",
        ]);
        assert_eq!(
            e,
            "TLS is for TCP listeners; a Unix socket is protected by its file mode"
        );
    }

    #[test]
    fn unreadable_tls_files_are_refused_naming_the_file_and_flag() {
        let e = refusal(&[
            "--tls-cert",
            "/no/such/cert.pem",
            "--tls-key",
            "/no/such/key.pem",
        ]);
        assert!(
            e.contains("cannot read the TLS certificate /no/such/cert.pem"),
            "{e}"
        );
        assert!(e.contains("--tls-cert / KEYHOLD_TLS_CERT"), "{e}");
    }

    #[test]
    fn dev_is_refused_off_loopback_and_taken_on_it() {
        let e = refusal(&["--dev", "--listen", "0.0.0.0:0"]);
        assert_eq!(
            e,
            "--dev listens on loopback only: use --listen 127.0.0.1:PORT"
        );
        for addr in ["127.0.0.1:0", "[::1]:0", "unix:/tmp/dev.sock"] {
            assert!(check(&args(&["--dev", "--listen", addr])).unwrap().dev);
        }
    }

    #[test]
    fn the_first_wrong_setting_is_the_one_named() {
        // A bad listener is said before a half TLS pair, that before --dev.
        let e = refusal(&["--listen", "nope", "--tls-cert", "/c", "--dev"]);
        assert!(e.starts_with("invalid --listen"), "{e}");
        let e = refusal(&["--listen", "0.0.0.0:0", "--tls-cert", "/c", "--dev"]);
        assert!(e.starts_with("give both --tls-cert"), "{e}");
    }

    #[test]
    fn a_key_policy_out_of_range_is_refused_naming_the_flags() {
        // clap takes --keep-versions from 1 to 100 only; past clap, the
        // policy refuses the rest all the same.
        for keep in ["0", "101"] {
            assert!(try_args(&["--keep-versions", keep]).is_err());
        }
        let mut a = args(&[]);
        a.keep_versions = 0;
        let e = check(&a).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("--keep-versions / KEYHOLD_KEEP_VERSIONS"), "{e}");
        assert!(e.ends_with("0 versions kept: keep from 1 to 100"), "{e}");
        a.keep_versions = 101;
        let e = check(&a).map(|_| ()).unwrap_err().to_string();
        assert!(e.ends_with("101 versions kept: keep from 1 to 100"), "{e}");
    }

    #[test]
    fn a_reveal_rate_other_than_the_stored_one_names_both_and_the_command() {
        let e = SettingsError::RevealRateDiffers {
            given: "5/s".parse().unwrap(),
            stored: "10/min".parse().unwrap(),
        }
        .to_string();
        assert!(
            e.contains("given --reveal-rate 5/s (KEYHOLD_REVEAL_RATE)"),
            "{e}"
        );
        assert!(e.contains("the rate it stores, 10/min"), "{e}");
        assert!(
            e.contains("`keyhold reveal-rate 5/s --database-url URL`"),
            "{e}"
        );
    }
}
