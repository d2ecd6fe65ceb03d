//! What the server tells operators: one log line a request, and the
//! Prometheus metrics served at `/metrics`.
//!
//! Labels are route patterns, methods, statuses and outcomes only: never a
//! key id, a token, a path as sent, or anything secret.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// One finished request, for logs and metrics.
#[derive(Debug, Clone)]
pub(crate) struct RequestDone {
    pub method: http::Method,
    pub route: &'static str,
    pub status: u16,
    pub latency: Duration,
    pub request_id: Option<String>,
    pub client: String,
    pub caller: Option<String>,
}

/// Called for every finished request.
pub(crate) type RequestObserver = Arc<dyn Fn(&RequestDone) + Send + Sync>;

/// Latency buckets, seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0,
];
/// Audit batch sizes.
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// How often histogram samples are folded into their buckets (the
/// exporter keeps raw samples until then, 8 bytes each).
pub(crate) const UPKEEP_EVERY: Duration = Duration::from_secs(2);

/// What a metric family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric family keyhold exports: name, kind and its `# HELP` text.
/// A unit test checks that every metric the source records is here.
pub(crate) const FAMILIES: &[(&str, Kind, &str)] = &[
    ("keyhold_requests_total", Kind::Counter, "Requests answered, by route pattern, method and status."),
    ("keyhold_request_duration_seconds", Kind::Histogram, "Time from a request's headers to its answer, by route pattern."),
    ("keyhold_request_panics_total", Kind::Counter, "Requests whose handler panicked (answered 500, logged with the request id), by route pattern."),
    ("keyhold_reveals_total", Kind::Counter, "Reveal attempts, by audit outcome (a key beyond the caller's providers counts as not_found)."),
    ("keyhold_rate_limited_total", Kind::Counter, "Reveals refused by the per-client reveal rate (429)."),
    ("keyhold_connections", Kind::Gauge, "Open connections."),
    ("keyhold_connections_evicted_total", Kind::Counter, "Idle connections closed to make room at the connection cap."),
    ("keyhold_connections_refused_total", Kind::Counter, "Connections closed at accept: per_address (the per-client cap) or total (the cap, with too many waiting)."),
    ("keyhold_audit_batch_size", Kind::Histogram, "Audit records written per durable commit."),
    ("keyhold_audit_commit_seconds", Kind::Histogram, "Time to commit and fsync one audit batch."),
    ("keyhold_audit_records", Kind::Gauge, "Records in the audit log (the chain head's sequence number)."),
    ("keyhold_keys", Kind::Gauge, "Stored key records, deleted ones included until purged."),
    ("keyhold_keys_expiring", Kind::Gauge, "Live keys that expire within 1, 7 or 30 days (set by the key housekeeping pass)."),
    ("keyhold_keys_expired", Kind::Gauge, "Live keys past their expiry (set by the key housekeeping pass)."),
    ("keyhold_limiter_addresses", Kind::Gauge, "Client addresses the reveal rate limiter holds state for."),
    ("keyhold_build_info", Kind::Gauge, "Always 1; the running binary's version, commit and target as labels."),
];

/// `reason` of `keyhold_connections_refused_total`: the per-client cap.
pub(crate) const REFUSED_PER_ADDRESS: &str = "per_address";
/// `reason` of `keyhold_connections_refused_total`: the total cap.
pub(crate) const REFUSED_TOTAL: &str = "total";

/// Installs the process-wide Prometheus recorder. `None` if one is
/// already installed (then metrics are not served). Every family is
/// described (its `# HELP` line), and every counter is registered at 0 for
/// the label values known up front, so that a scrape right after start
/// shows them and `rate()` sees their first increase.
pub(crate) fn install_recorder() -> Option<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
        .ok()?
        .set_buckets_for_metric(
            Matcher::Full("keyhold_audit_batch_size".into()),
            &BATCH_BUCKETS,
        )
        .ok()?
        .install_recorder()
        .ok()?;
    describe_and_register();
    Some(handle)
}

fn describe_and_register() {
    for (name, kind, help) in FAMILIES {
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Histogram => metrics::describe_histogram!(*name, *help),
        }
    }
    // Every route answers 200 when it succeeds (tests/openapi.rs checks
    // the document says so); other statuses appear as they happen.
    for (method, route) in super::route_patterns::ROUTES {
        metrics::counter!(
            "keyhold_requests_total",
            "route" => *route,
            "method" => *method,
            "status" => "200"
        )
        .increment(0);
    }
    let mut routes: Vec<&str> = super::route_patterns::ROUTES
        .iter()
        .map(|(_, r)| *r)
        .collect();
    routes.sort_unstable();
    routes.dedup();
    for route in routes {
        metrics::counter!("keyhold_request_panics_total", "route" => route).increment(0);
    }
    for outcome in crate::vault::Outcome::ALL {
        metrics::counter!("keyhold_reveals_total", "outcome" => outcome.as_str()).increment(0);
    }
    for reason in [REFUSED_PER_ADDRESS, REFUSED_TOTAL] {
        metrics::counter!("keyhold_connections_refused_total", "reason" => reason).increment(0);
    }
    metrics::counter!("keyhold_rate_limited_total").increment(0);
    metrics::counter!("keyhold_connections_evicted_total").increment(0);
    metrics::gauge!("keyhold_connections").increment(0.0);
    // Empty histograms: their buckets at 0 until the first batch.
    let _ = metrics::histogram!("keyhold_audit_batch_size");
    let _ = metrics::histogram!("keyhold_audit_commit_seconds");
}

/// Gauges that are read when scraped.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    /// Stored keys (counted at start, then kept by creates and deletes);
    /// -1 until the first count is done.
    pub keys: AtomicI64,
}

impl Gauges {
    pub(crate) fn new() -> Arc<Gauges> {
        Arc::new(Gauges {
            keys: AtomicI64::new(-1),
        })
    }

    pub(crate) fn add_keys(&self, n: i64) {
        let _ = self
            .keys
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |k| {
                (k >= 0).then_some(k + n)
            });
    }
}

/// The request observer: one log line and the request metrics.
pub(crate) fn request_observer() -> RequestObserver {
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
pub(crate) fn method_label(method: &http::Method) -> &'static str {
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
pub(crate) fn audit_batch(records: usize, commit: Duration) {
    metrics::histogram!("keyhold_audit_batch_size").record(records as f64);
    metrics::histogram!("keyhold_audit_commit_seconds").record(commit.as_secs_f64());
}

/// The words of the vault's notes to the operator, naming the command
/// that helps.
pub(crate) const OPERATOR_NOTES: crate::vault::NoteWords = crate::vault::NoteWords {
    key_expiring: "a key expires within 7 days: store a new version (keyhold keys put) before it \
                   lapses",
    anchor: "audit chain anchor (keep it off-box; check with `keyhold audit verify --anchor \
             SEQ:MAC`)",
};

#[cfg(test)]
mod tests {
    use super::{Kind, FAMILIES};

    /// Every `metrics::counter!/gauge!/histogram!("keyhold_…")` in the
    /// source, with its kind.
    fn recorded(dir: &std::path::Path, out: &mut Vec<(String, Kind)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                recorded(&path, out);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (macro_name, kind) in [
                ("metrics::counter!(", Kind::Counter),
                ("metrics::gauge!(", Kind::Gauge),
                ("metrics::histogram!(", Kind::Histogram),
            ] {
                for (at, _) in text.match_indices(macro_name) {
                    let rest = text[at + macro_name.len()..].trim_start();
                    if let Some(name) = rest.strip_prefix("\"keyhold_") {
                        let name = name.split('"').next().unwrap_or_default();
                        out.push((format!("keyhold_{name}"), kind));
                    }
                }
            }
        }
    }

    #[test]
    fn every_metric_recorded_is_described_with_its_kind() {
        let mut found = Vec::new();
        recorded(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
        );
        assert!(found.len() > 10, "the scan found too little: {found:?}");
        for (name, kind) in &found {
            assert!(
                FAMILIES.iter().any(|(n, k, _)| n == name && k == kind),
                "{name} ({kind:?}) is recorded but not in observe::FAMILIES"
            );
        }
        for (name, _, help) in FAMILIES {
            assert!(
                found.iter().any(|(n, _)| n == name),
                "{name} is described but never recorded"
            );
            assert!(!help.is_empty() && !help.contains('\n'), "{name}");
        }
    }
}
