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

/// The anchor line (logged at shutdown, among others) and the expiry
/// warning name the command that uses them, though the vault that logs
/// them names no command.
#[test]
fn the_anchor_and_expiry_lines_name_their_commands() {
    let v = Vault::new();
    // A short recovery window: an upkeep pass about every second.
    let s = v.serve(&[
        ("KEYHOLD_LOG_FORMAT", "json"),
        ("KEYHOLD_RECOVERY_WINDOW", "4s"),
    ]);
    let api = Api::new(&s, &v.admin);
    let r = api.post_json(
        "/api/keys",
        &serde_json::json!({
            "provider": "claude", "key_name": "soon", "api_key": "sk-ant-X", "ttl_seconds": 3600
        }),
    );
    assert_eq!(r.status(), 200);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !s.output().contains("a key expires within 7 days") && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (code, _out, err) = s.stop();
    assert_eq!(code, Some(0));
    let lines: Vec<Value> = err
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let anchor = lines
        .iter()
        .find(|l| l["anchor"].is_string())
        .unwrap_or_else(|| panic!("no anchor line: {err}"));
    let said = anchor["message"].as_str().unwrap();
    assert!(
        said.contains("`keyhold audit verify --anchor SEQ:MAC`"),
        "{said}"
    );
    let expiring = lines
        .iter()
        .find(|l| l["key_name"] == "soon")
        .unwrap_or_else(|| panic!("no expiry warning: {err}"));
    let said = expiring["message"].as_str().unwrap();
    assert!(said.contains("keyhold keys put"), "{said}");
}
