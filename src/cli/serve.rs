//! `keyhold serve [--dev] [--listen ADDR]`: checks the configuration,
//! opens (or, with `--dev`, makes) the store, and hands over to the
//! running server (`http::app`).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use super::{init_logging, ConfigError};
use crate::audit::AuditLog;
use crate::config::{LogFormat, ServeArgs};
use crate::http::server::{load_tls, Bind};
use crate::keyring::Keyring;
use crate::store::Store;

pub(super) fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging_as(&args.log, args.log_format);
    // Everything that can be wrong with the configuration is found here,
    // before the runtime starts and before binding.
    let bind: Bind = args
        .listen
        .parse()
        .map_err(|e| ConfigError(format!("invalid --listen / KEYHOLD_LISTEN: {e}")))?;
    // The token-free metrics listener stays on this host.
    let metrics_bind: Option<Bind> = match &args.metrics_listen {
        None => None,
        Some(addr) => {
            let bind: Bind = addr.parse().map_err(|e| {
                ConfigError(format!(
                    "invalid --metrics-listen / KEYHOLD_METRICS_LISTEN: {e}"
                ))
            })?;
            if let Bind::Tcp(a) = &bind {
                if !a.ip().is_loopback() {
                    return Err(ConfigError(format!(
                        "--metrics-listen {addr}: metrics are served there without a token, so \
                         only on a loopback address (127.0.0.1:PORT, [::1]:PORT) or a Unix \
                         socket (unix:/path); scrape from elsewhere with a metrics token on \
                         the main listener"
                    ))
                    .into());
                }
            }
            Some(bind)
        }
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            if matches!(bind, Bind::Unix(_)) {
                return Err(ConfigError(
                    "TLS is for TCP listeners; a Unix socket is protected by its file mode".into(),
                )
                .into());
            }
            Some(load_tls(cert, key).map_err(|e| ConfigError(e.to_string()))?)
        }
        (None, None) => None,
        _ => return Err(ConfigError(
            "give both --tls-cert and --tls-key (KEYHOLD_TLS_CERT, KEYHOLD_TLS_KEY), or neither"
                .into(),
        )
        .into()),
    };
    let (store, keyring, dev_token) = if args.dev {
        if let Bind::Tcp(a) = &bind {
            if !a.ip().is_loopback() {
                return Err(ConfigError(
                    "--dev listens on loopback only: use --listen 127.0.0.1:PORT".into(),
                )
                .into());
            }
        }
        let keyring = Keyring::ephemeral();
        let store = Store::temporary()?;
        let token = crate::vault::initialise(&store, &keyring, "root")?.admin_token;
        (store, keyring, Some(token))
    } else {
        let keyring = Keyring::from_env()?;
        let store = super::open_checked_with_cache(
            &args.data,
            &keyring,
            args.cache_mb.map(|mb| mb.saturating_mul(1024 * 1024)),
        )?;
        (store, keyring, None)
    };
    let log = Arc::new(AuditLog::open(store.clone(), &keyring)?);
    let reveal_rate = reveal_rate(&args, &store, &log)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let started = crate::http::app::Started {
        reveal_rate,
        bind,
        metrics_bind,
        tls,
        store,
        keyring,
        log,
        dev_token,
    };
    match runtime.block_on(crate::http::app::serve(&args, started)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e @ crate::http::app::AppError::Listen { .. }) => {
            Err(ConfigError(e.to_string()).into())
        }
        Err(e) => Err(e.into()),
    }
}

fn init_logging_as(filter: &str, format: LogFormat) {
    match format {
        LogFormat::Text => init_logging(filter),
        LogFormat::Json => {
            let filter = tracing_subscriber::EnvFilter::try_new(filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            // Event fields at the top level of each line (`{"message":
            // ..., "addr": ...}`), not nested under `fields`.
            let _ = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_current_span(false)
                .try_init();
        }
    }
}

/// The reveal rate this server applies: its `--reveal-rate` (or the
/// default) where it holds the store alone; on a shared database the one
/// the database stores (written from this node's if none is yet), and a
/// node given another one refuses to start, saying both.
fn reveal_rate(
    args: &ServeArgs,
    store: &Store,
    log: &AuditLog,
) -> anyhow::Result<crate::limiter::RevealRate> {
    let given = args.reveal_rate;
    if store.node().is_none() {
        return Ok(given.unwrap_or_default());
    }
    match crate::ops::settings::stored_reveal_rate(store)? {
        Some(stored) => match given {
            Some(g) if g != stored => Err(ConfigError(format!(
                "this node was given --reveal-rate {g} (KEYHOLD_REVEAL_RATE), but every node of \
                 this database uses the rate it stores, {stored}, so that a client gets one \
                 budget: start the node without it, or change the rate of every node with \
                 `keyhold reveal-rate {g} --database-url URL`"
            ))
            .into()),
            _ => Ok(stored),
        },
        None => {
            let rate = given.unwrap_or_default();
            crate::ops::settings::set_reveal_rate(log, rate, "serve")?;
            Ok(rate)
        }
    }
}
