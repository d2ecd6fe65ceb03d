//! What the server tells operators: one log line a request, and the
//! Prometheus metrics served at `/metrics`.
//!
//! Labels are route patterns, methods, statuses and outcomes only: never a
//! key id, a token, a path as sent, or anything secret.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::server::{RequestDone, RequestObserver};

/// Latency buckets, seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0,
];
/// Audit batch sizes.
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// How often histogram samples are folded into their buckets (the
/// exporter keeps raw samples until then, 8 bytes each).
pub const UPKEEP_EVERY: Duration = Duration::from_secs(2);

/// Installs the process-wide Prometheus recorder. `None` if one is
/// already installed (then metrics are not served).
pub fn install_recorder() -> Option<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
        .ok()?
        .set_buckets_for_metric(
            Matcher::Full("keyhold_audit_batch_size".into()),
            &BATCH_BUCKETS,
        )
        .ok()?
        .install_recorder()
        .ok()
}

/// Gauges that are read when scraped.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Stored keys (counted at start, then kept by creates and deletes);
    /// -1 until the first count is done.
    pub keys: AtomicI64,
}

impl Gauges {
    pub fn new() -> Arc<Gauges> {
        Arc::new(Gauges {
            keys: AtomicI64::new(-1),
        })
    }

    pub fn add_keys(&self, n: i64) {
        let _ = self
            .keys
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |k| {
                (k >= 0).then_some(k + n)
            });
    }
}

/// The request observer: one log line and the request metrics.
pub fn request_observer() -> RequestObserver {
    Arc::new(|r: &RequestDone| {
        let status = r.status.to_string();
        metrics::counter!(
            "keyhold_requests_total",
            "route" => r.route,
            "method" => method_label(&r.method),
            "status" => status
        )
        .increment(1);
        metrics::histogram!("keyhold_request_duration_seconds", "route" => r.route)
            .record(r.latency.as_secs_f64());
        tracing::info!(
            target: "keyhold::request",
            request_id = r.request_id.as_deref().unwrap_or("-"),
            method = method_label(&r.method),
            route = r.route,
            status = r.status,
            latency_ms = (r.latency.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            client = %r.client,
            caller = r.caller.as_deref().unwrap_or("-"),
            "request"
        );
    })
}

/// The `method` label: one of the methods HTTP defines, or `other`, so a
/// client sending made-up methods cannot add label values (each one a
/// time series kept forever).
pub fn method_label(method: &http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

/// Records one durable audit batch.
pub fn audit_batch(records: usize, commit: Duration) {
    metrics::histogram!("keyhold_audit_batch_size").record(records as f64);
    metrics::histogram!("keyhold_audit_commit_seconds").record(commit.as_secs_f64());
}
