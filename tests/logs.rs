//! Logs (issue 16, point 9): in JSON mode every line is one JSON object
//! with the event's fields at the top level; start-up and shutdown are
//! log events in both formats.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn json_logs_have_top_level_fields_and_start_and_stop_events() {
    let v = Vault::new();
    let s = v.serve(&[("KEYHOLD_LOG_FORMAT", "json")]);
    let base = s.base.clone();
    assert_eq!(
        client().get(s.url("/healthz")).send().unwrap().status(),
        200
    );
    let (code, _out, err) = s.stop();
    assert_eq!(code, Some(0));
    let lines: Vec<Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.iter().all(|l| l.get("fields").is_none()), "{err}");
    let start = lines
        .iter()
        .find(|l| l["event"] == "start")
        .unwrap_or_else(|| panic!("no start event: {err}"));
    assert_eq!(start["message"], "keyhold serving");
    assert_eq!(start["addr"], base.as_str());
    assert_eq!(start["version"], env!("CARGO_PKG_VERSION"));
    let request = lines
        .iter()
        .find(|l| l["route"] == "/healthz")
        .unwrap_or_else(|| panic!("no request line: {err}"));
    assert_eq!(request["status"], 200);
    assert!(lines.iter().any(|l| l["event"] == "stop"), "{err}");
}

#[test]
fn text_logs_have_start_and_stop_events_too() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let (code, _out, err) = s.stop();
    assert_eq!(code, Some(0));
    assert!(
        err.contains("keyhold serving") && err.contains("event=\"start\"")
            || err.contains("event=start"),
        "{err}"
    );
    assert!(err.contains("keyhold stopped"), "{err}");
}
