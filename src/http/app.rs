//! The running server: its state, its background tasks and its shutdown.
//! `keyhold serve` (in `cli`) checks the configuration and opens the
//! store, then hands over here.
//!
//! Not for: parsing flags (see `config`, `cli::serve`) or the transport
//! itself (see `server`).
//!
//! Over 500 lines: one concern (the server's life), most of it the
//! background tasks each feature needs (housekeeping, upkeep, reload).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use super::server::{serve as serve_http, Limits, Listener};
use super::{observe, routes, AppState, ServerSettings};

/// What `keyhold serve` opened before the runtime started.
pub(crate) struct Started {
    /// The store, its keyring and audit log, the reveal rate in force.
    pub opened: crate::vault::Opened,
    /// `serve --dev`: the root token, printed once with the banner.
    pub dev_token: Option<crate::secret::SecretString>,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppError {
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: String, error: String },
    #[error("cannot listen for SIGHUP: {0}")]
    Signal(std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::vault::StoreError),
}

/// Runs the server until SIGTERM or SIGINT: builds its state, starts the
/// background tasks (metrics upkeep, key count, anchors, housekeeping,
/// reload on SIGHUP), serves, then writes what is pending and flushes.
pub(crate) async fn serve(settings: ServerSettings, started: Started) -> Result<(), AppError> {
    let Started { opened, dev_token } = started;
    let listener = Listener::bind(&settings.listen.bind, settings.tls.clone().map(|t| t.0))
        .await
        .map_err(|e| AppError::Listen {
            addr: settings.listen.given.clone(),
            error: e.to_string(),
        })?;
    let metrics = observe::install_recorder();
    let build = crate::build_info::BUILD;
    metrics::gauge!(
        "keyhold_build_info",
        "version" => build.version,
        "commit" => build.commit,
        "target" => build.target
    )
    .set(1.0);
    if let Some(handle) = metrics.clone() {
        // Histogram samples are kept until they are folded into buckets; an
        // unscraped server would keep every request's latency forever.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(observe::UPKEEP_EVERY);
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }
    let core = Arc::new(crate::vault::Core::start(
        opened,
        crate::vault::CorePolicy {
            audit_timeout: settings.audit_timeout,
            refusal_budget: (
                settings.refusal_budget.count,
                settings.refusal_budget.period,
            ),
            record_budget: (settings.record_budget.count, settings.record_budget.period),
            key_policy: settings.key_policy,
        },
        Some(Box::new(observe::audit_batch)),
    ));
    core.word_notes(observe::OPERATOR_NOTES);
    let reveal_rate = core.reveal_rate();
    let gauges = observe::Gauges::new();
    {
        // The count is kept in the store; read off the start path all the
        // same, as an unreadable count makes it walk the keys.
        let (core, gauges) = (core.clone(), gauges.clone());
        tokio::task::spawn_blocking(move || {
            let n = core.key_count() as i64;
            let _ = gauges.keys.compare_exchange(
                -1,
                n,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            );
        });
    }
    let state = Arc::new(AppState {
        core: core.clone(),
        proxies: settings.trusted_proxies.clone(),
        read_timeout: settings.header_timeout.get(),
        body_reads: tokio::sync::Semaphore::new(settings.max_body_reads.get()),
        metrics,
        gauges: gauges.clone(),
    });
    core.spawn_upkeep(
        settings.key_upkeep_every,
        Arc::new(move |n| gauges.add_keys(n)),
    );
    // Before the "listening" line: a SIGHUP from then on reloads, never
    // kills (the default action).
    spawn_reload_on_sighup(state.clone())?;

    let shown = listener.describe();
    if let Some(local) = listener.local_addr() {
        if !local.ip().is_loopback() && !listener.is_tls() {
            tracing::warn!(
                addr = %local,
                "serving plain HTTP on a non-loopback address: tokens and keys cross the network in clear; use --tls-cert/--tls-key or put TLS in front"
            );
        }
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "keyhold listening on {shown}").ok();
        if let Some(token) = &dev_token {
            print_dev_banner(&mut out, &shown, token.expose());
        }
        out.flush().ok();
    }
    // The stdout line above is for scripts (the address, port 0
    // resolved); the log says the same as an event, in either format.
    tracing::info!(
        event = "start",
        addr = %shown,
        version = crate::build_info::VERSION,
        commit = crate::build_info::COMMIT,
        audit_head_seq = core.audit_head().0,
        reveal_rate = %reveal_rate,
        "keyhold serving"
    );

    // The token-free metrics listener: /metrics only, a few connections.
    let metrics_server = match &settings.metrics_listen {
        None => None,
        Some(m) => {
            let l = Listener::bind(&m.bind, None)
                .await
                .map_err(|e| AppError::Listen {
                    addr: m.given.clone(),
                    error: e.to_string(),
                })?;
            let shown = l.describe();
            tracing::info!(event = "metrics_listen", addr = %shown, "serving /metrics without a token");
            {
                let mut out = std::io::stdout().lock();
                writeln!(out, "keyhold metrics on {shown}").ok();
                out.flush().ok();
            }
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let limits = Limits {
                max_connections: 16,
                max_connections_per_ip: 16,
                ..Limits::default()
            };
            let task = tokio::spawn(serve_http(
                l,
                super::routes::metrics_only(state.clone()),
                limits,
                crate::limiter::TrustedProxies::default(),
                observe::request_observer(),
                async {
                    let _ = stopped.await;
                },
            ));
            Some((stop, task))
        }
    };
    serve_http(
        listener,
        routes(state.clone()),
        settings.limits(),
        settings.trusted_proxies.clone(),
        observe::request_observer(),
        shutdown_signal(),
    )
    .await;
    if let Some((stop, task)) = metrics_server {
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }

    // Counted but not yet written attempts go in now; then the flush.
    core.close().await?;
    tracing::info!(event = "stop", "keyhold stopped; store flushed");
    Ok(())
}

fn print_dev_banner(out: &mut impl Write, url: &str, token: &str) {
    let _ = writeln!(
        out,
        "\n\
         ************************************************************************\n\
         *  DEVELOPMENT MODE: in-memory store, random Fernet key.               *\n\
         *  NOTHING PERSISTS: every key and audit record is gone at exit.       *\n\
         ************************************************************************\n\
         root token (admin): {token}\n\
         console (paste the token there): {url}/ui/\n\
         \n\
         try:\n\
         \x20 curl -s -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n\
         \x20      -d '{{\"provider\":\"claude\",\"key_name\":\"demo\",\"api_key\":\"sk-demo\"}}' \\\n\
         \x20      {url}/api/keys\n\
         \x20 curl -s -H 'Authorization: Bearer {token}' {url}/api/providers/claude/key\n"
    );
}

/// SIGHUP (`systemctl reload keyhold`): read the keyring again and use it,
/// unless a record still needs a key it lacks (then the server keeps its
/// keyring and logs why).
fn spawn_reload_on_sighup(state: Arc<AppState>) -> Result<(), AppError> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(AppError::Signal)?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let mut ev = crate::vault::AuditEvent::cli(
                crate::vault::Action::Reload,
                crate::vault::Outcome::Success,
                None,
            );
            ev.caller = "SIGHUP".into();
            if let Err(e) = state.core.reload(ev).await {
                let why = super::refusal_text::reload_refused(&e);
                tracing::error!(error = %why, "keyring reload refused");
            }
        }
    });
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested: finishing requests in flight");
}
