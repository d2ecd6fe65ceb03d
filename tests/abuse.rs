//! Abuse resistance (issue 14): no silent socket, junk request or
//! provider-limited insider takes more than it was given. Every test runs
//! the real binary on an ephemeral loopback port.

mod common;

use common::*;

/// The `keyhold_requests_total` series in a /metrics text.
fn request_series(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("keyhold_requests_total{"))
        .map(|l| l.rsplit_once(' ').map_or(l, |(k, _)| k).to_string())
        .collect()
}

#[test]
fn junk_methods_leave_a_bounded_metrics_page() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let http = client();
    for i in 0..300 {
        let m = reqwest::Method::from_bytes(format!("JUNK{i}").as_bytes()).unwrap();
        let r = http.request(m, s.url("/healthz")).send().unwrap();
        assert_eq!(r.status(), 405, "junk method {i}");
    }
    let text = http.get(s.url("/metrics")).send().unwrap().text().unwrap();
    let series = request_series(&text);
    assert!(!text.contains("JUNK"), "a made-up method became a label");
    assert!(
        series.iter().any(|l| l.contains("method=\"other\"")),
        "junk methods are counted under `other`: {series:?}"
    );
    // healthz GET, the junk under `other`, and nothing else so far.
    assert!(series.len() <= 3, "{series:?}");
    let other: f64 = text
        .lines()
        .filter(|l| l.starts_with("keyhold_requests_total{") && l.contains("method=\"other\""))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, n)| n.parse::<f64>().ok()))
        .sum();
    assert_eq!(other, 300.0, "every junk request is still counted");
}
