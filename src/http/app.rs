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
use crate::audit::{AuditLog, AuditWriter, Coalescer};
use crate::keyring::Keyring;
use crate::limiter::RevealLimiter;
use crate::store::Store;

/// What `keyhold serve` opened before the runtime started.
pub struct Started {
    /// The reveal rate in force (on a shared database: the stored one).
    pub reveal_rate: crate::limiter::RevealRate,
    pub store: Store,
    pub keyring: Keyring,
    pub log: Arc<AuditLog>,
    /// `serve --dev`: the root token, printed once with the banner.
    pub dev_token: Option<crate::secret::SecretString>,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: String, error: String },
    #[error("cannot listen for SIGHUP: {0}")]
    Signal(std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Runs the server until SIGTERM or SIGINT: builds its state, starts the
/// background tasks (metrics upkeep, key count, anchors, housekeeping,
/// reload on SIGHUP), serves, then writes what is pending and flushes.
pub async fn serve(settings: ServerSettings, started: Started) -> Result<(), AppError> {
    let Started {
        reveal_rate,
        store,
        keyring,
        log,
        dev_token,
    } = started;
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
    let gauges = observe::Gauges::new();
    {
        // The count is kept in the store; read off the start path all the
        // same, as an unreadable count makes it walk the keys.
        let (store, gauges) = (store.clone(), gauges.clone());
        tokio::task::spawn_blocking(move || {
            let n = store.key_count() as i64;
            let _ = gauges.keys.compare_exchange(
                -1,
                n,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            );
        });
    }
    let anchors = Arc::new(Anchors::default());
    let observer = {
        let anchors = anchors.clone();
        Box::new(
            move |records: &[crate::audit::AuditRecord], elapsed: Duration| {
                observe::audit_batch(records.len(), elapsed);
                if let Some((r, sig)) = records.last().and_then(|r| Some((r, r.sig.as_ref()?))) {
                    anchors.offer(r.seq, &r.mac, sig.key);
                }
            },
        )
    };
    let writer = AuditWriter::start(log.clone(), settings.audit_timeout, Some(observer));
    {
        // A head that moved since the last anchor is anchored within a
        // minute even if no further batch comes.
        let (anchors, log) = (anchors.clone(), log.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Anchors::EVERY);
            loop {
                tick.tick().await;
                let (seq, mac) = log.head();
                anchors.offer(seq, &mac, log.public_key());
            }
        });
    }
    let state = Arc::new(AppState {
        store: store.clone(),
        keyring: crate::keyring::LiveKeyring::new(keyring),
        audit: writer,
        limiter: if store.node().is_some() {
            RevealLimiter::shared(reveal_rate, store.clone())
        } else {
            RevealLimiter::new(reveal_rate)
        },
        proxies: settings.trusted_proxies.clone(),
        coalescer: Coalescer::with_refusal_budget(
            settings.refusal_budget.count,
            settings.refusal_budget.period,
        )
        .with_record_budget(settings.record_budget.count, settings.record_budget.period),
        views: crate::audit::ConsoleViews::new(),
        read_timeout: settings.header_timeout.get(),
        body_reads: tokio::sync::Semaphore::new(settings.max_body_reads.get()),
        metrics,
        gauges,
        maintenance: Arc::new(tokio::sync::Mutex::new(())),
        key_policy: settings.key_policy,
    });
    spawn_housekeeping(state.clone(), settings.key_upkeep_every);
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
        audit_head_seq = store.audit_last_seq().unwrap_or(0),
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

    // Counted but not yet written attempts go in now.
    let pending = state.coalescer.drain(0, true);
    if !pending.is_empty() {
        let batch: Vec<_> = pending.into_iter().map(|d| (d.event, vec![])).collect();
        if let Err(e) = log.append(&batch) {
            tracing::error!(error = %e, "could not write the last coalesced audit records");
        }
    }
    store.flush_async().await?;
    let (seq, mac) = log.head();
    log_anchor(seq, &mac, log.public_key());
    tracing::info!(event = "stop", "keyhold stopped; store flushed");
    Ok(())
}

/// Off-box anchors: the chain head is written to the log at most once a
/// minute while records are being added (at the first batch, then when a
/// minute has passed and the head moved, from a batch or the timer), and
/// once at shutdown, so a log collector on another host holds anchors that
/// `keyhold audit verify --anchor SEQ:MAC` checks (a rollback of the whole
/// store to an older copy is then caught too).
#[derive(Default)]
struct Anchors {
    /// When the last anchor was logged, and its seq.
    last: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Anchors {
    const EVERY: Duration = Duration::from_secs(60);

    fn offer(&self, seq: u64, mac: &[u8; 32], key: crate::audit::PublicKey) {
        let mut last = match self.last.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        let due = last.0.is_none_or(|t| t.elapsed() >= Self::EVERY);
        if seq != 0 && seq != last.1 && due {
            *last = (Some(std::time::Instant::now()), seq);
            log_anchor(seq, mac, key);
        }
    }
}

fn log_anchor(seq: u64, mac: &[u8; 32], key: crate::audit::PublicKey) {
    if seq == 0 {
        return;
    }
    tracing::info!(
        anchor = %format!("{seq}:{}", crate::audit::hex(mac)),
        audit_public_key = %key,
        "audit chain anchor (keep it off-box; check with `keyhold audit verify --anchor SEQ:MAC`)"
    );
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

/// Periodic work: prune limiter state, write coalesced records, and bring
/// the store back after a disk error.
fn spawn_housekeeping(state: Arc<AppState>, key_upkeep_every: Duration) {
    let s = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut ticks: u64 = 0;
        loop {
            tick.tick().await;
            if s.store.node().is_some() {
                // A shared database: probe it every second, so /healthz
                // says when it is gone even without traffic, and service
                // resumes by itself when it answers again (the pool
                // replaces broken connections).
                let store = s.store.clone();
                let res = tokio::task::spawn_blocking(move || store.ping())
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                if res.is_ok() && !s.audit.is_healthy() {
                    tracing::info!("the database answers again");
                }
                let up = res.is_ok();
                s.audit.probed(res);
                ticks = ticks.wrapping_add(1);
                if up && ticks.is_multiple_of(10) {
                    // Every 10 s: learn what other nodes changed, so this
                    // node never lags behind the pruning of the change rows.
                    let store = s.store.clone();
                    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.keep_up()).await {
                        tracing::warn!(error = %e, "could not learn other nodes' changes");
                    }
                    // The cluster's reveal rate, if an admin changed it.
                    let store = s.store.clone();
                    let stored = tokio::task::spawn_blocking(move || {
                        crate::ops::settings::vouched_reveal_rate(&store)
                    })
                    .await;
                    if let Ok(Ok(Some(rate))) = stored {
                        if s.limiter.set_rate(rate) {
                            tracing::info!(reveal_rate = %rate, "the cluster's reveal rate changed; in force");
                        }
                    }
                }
                continue;
            }
            if s.audit.is_healthy() {
                continue;
            }
            // sled keeps returning an IO error (a full or failing disk)
            // until the database is opened again: reopen it, so service
            // resumes by itself once the disk recovers.
            let log = s.audit.log().clone();
            match tokio::task::spawn_blocking(move || log.recover()).await {
                Ok(Ok(true)) => tracing::info!("storage reopened"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "storage still failing"),
                Err(_) => {}
            }
        }
    });
    spawn_key_upkeep(state.clone(), key_upkeep_every);
    let s = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            let s = s.clone();
            let _ = tokio::task::spawn_blocking(move || {
                s.limiter.prune();
                s.coalescer.prune();
            })
            .await;
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            // Submitted together, so they share one fsync; a record that
            // cannot be written is put back and counted again later.
            let now = crate::time::now_us();
            let due = state.coalescer.drain(now, false);
            let writes = due.into_iter().map(|d| {
                let st = state.clone();
                async move {
                    let event = d.event.clone();
                    if !write_pending(&st, event, "coalesced").await {
                        st.coalescer.restore(d);
                    }
                }
            });
            futures_util::future::join_all(writes).await;
        }
    });
}

/// Writes a record counted in memory; false when it failed and should be
/// kept for later (a write whose fate is unknown may still land: it is
/// not kept, so it is never counted twice).
async fn write_pending(state: &AppState, event: crate::audit::AuditEvent, what: &str) -> bool {
    match state.audit.record(event, vec![]).await {
        Ok(_) => true,
        Err(crate::audit::AuditError::Unknown) => {
            tracing::error!("a {what} audit record is still being written");
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "could not write a {what} audit record; kept for later");
            false
        }
    }
}

/// Keys over time: destroys deleted keys whose recovery window ended
/// (audited `key_purge`), sets the expiry gauges, and warns in the log
/// once a day for each key that lapses within 7 days; a pass `every`
/// ([`ServerSettings::key_upkeep_every`]).
fn spawn_key_upkeep(state: Arc<AppState>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        // A pass slower than the period (a huge store) is not followed by
        // a burst of catch-up passes.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut warned: std::collections::HashMap<uuid::Uuid, i64> = Default::default();
        loop {
            tick.tick().await;
            let st = state.clone();
            let window = st.key_policy.recovery_window_us;
            let Ok(up) = tokio::task::spawn_blocking(move || st.vault().key_upkeep(window)).await
            else {
                continue;
            };
            for (i, days) in crate::vault::EXPIRING_WITHIN_DAYS.iter().enumerate() {
                let within = format!("{days}d");
                metrics::gauge!("keyhold_keys_expiring", "within" => within)
                    .set(up.expiring[i] as f64);
            }
            metrics::gauge!("keyhold_keys_expired").set(up.expired as f64);
            let today = crate::time::now_us() / (86_400 * 1_000_000);
            warned.retain(|_, day| *day == today);
            for (id, provider, name, exp) in &up.soon {
                if warned.insert(*id, today).is_none() {
                    tracing::warn!(
                        key_id = %id,
                        provider = %provider,
                        key_name = %name,
                        expires_at = %crate::time::to_rfc3339(*exp),
                        "a key expires within 7 days: store a new version (keyhold keys put) \
                         before it lapses"
                    );
                }
            }
            if !up.due.is_empty() {
                match state.vault().purge_deleted(up.due).await {
                    Ok(0) => {}
                    Ok(n) => {
                        state.gauges.add_keys(-(n as i64));
                        tracing::info!(
                            purged = n,
                            "destroyed deleted keys whose recovery window ended"
                        );
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not destroy deleted keys yet; retried later")
                    }
                }
            }
            if !up.versions_due.is_empty() {
                let vault = state.vault();
                match vault.purge_dropped(up.versions_due, window).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        purged = n,
                        "destroyed key versions whose recovery window ended"
                    ),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "could not destroy key versions yet; retried later"
                    ),
                }
            }
            state.scrub_removed().await;
        }
    });
}

/// SIGHUP (`systemctl reload keyhold`): read the keyring again and use it,
/// unless a record still needs a key it lacks (then the server keeps its
/// keyring and logs why).
fn spawn_reload_on_sighup(state: Arc<AppState>) -> Result<(), AppError> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(AppError::Signal)?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let mut ev = crate::audit::AuditEvent::cli(
                crate::audit::Action::Reload,
                crate::audit::Outcome::Success,
                None,
            );
            ev.caller = "SIGHUP".into();
            if let Err(e) = crate::http::reload_keyring(&state, ev).await {
                tracing::error!(error = %e, "keyring reload refused");
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
