//! Export (JSON Lines and CSV, filtered, streamed), verification of an
//! exported file, flood-proof rate-limit records and off-box anchors.

mod common;

use std::collections::HashSet;

use common::*;
use serde_json::Value;

/// A vault with varied history: two callers, several outcomes and keys.
struct History {
    v: Vault,
    key_a: String,
    mid: String,
}

fn history() -> History {
    let v = Vault::new();
    let reader = v.token("orchestrator", "reader", None);
    let writer = v.token("dashboard", "writer", None);
    let s = v.serve(&[("KEYHOLD_REVEAL_RATE", "1000/min")]);
    let admin = Api::new(&s, &v.admin);
    let key_a = admin.create_key("claude", "a", "sk-a");
    let key_b = admin.create_key("gemini", "b", "AIza-b");
    for _ in 0..3 {
        Api::new(&s, &reader)
            .req(reqwest::Method::GET, &format!("/api/keys/{key_a}"))
            .header("X-Keyhold-Purpose", "claude -p \"summarise, then stop\"")
            .send()
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(30));
    let mid = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    std::thread::sleep(std::time::Duration::from_millis(30));
    Api::new(&s, &reader).get(&format!("/api/keys/{key_b}"));
    Api::new(&s, &writer).get(&format!("/api/keys/{key_a}"));
    Api::anonymous(&s).get(&format!("/api/keys/{key_b}"));
    admin.delete(&format!("/api/keys/{key_b}"));
    s.stop();
    History { v, key_a, mid }
}

fn export_cli(v: &Vault, args: &[&str]) -> String {
    let mut all = vec!["audit", "export", v.store_args()[0], v.store_args()[1]];
    all.extend_from_slice(args);
    let out = run_with_key(&v.key, &all);
    assert_ok(&out);
    String::from_utf8(out.stdout).unwrap()
}

fn jsonl(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn verify_file(v: &Vault, path: &std::path::Path, extra: &[&str]) -> (i32, Value) {
    let mut args = vec![
        "audit",
        "verify",
        "--json",
        v.store_args()[0],
        v.store_args()[1],
        "--file",
        path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = run_with_key(&v.key, &args);
    // One JSON report a line: the file's, then one per anchor.
    let mut reports = serde_json::Deserializer::from_slice(&out.stdout).into_iter::<Value>();
    let report = reports
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), report)
}

#[test]
fn an_export_verifies_and_an_edited_line_is_caught() {
    let h = history();
    let path = h.v.tmp.path().join("export.jsonl");
    let out = run_with_key(
        &h.v.key,
        &[
            "audit",
            "export",
            h.v.store_args()[0],
            h.v.store_args()[1],
            "-o",
            path.to_str().unwrap(),
        ],
    );
    assert!(out.status.success());
    let text = std::fs::read_to_string(&path).unwrap();
    let recs = jsonl(&text);
    assert!(recs.len() > 10);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["seq"], (i + 1) as u64, "oldest first, every seq");
        assert_eq!(r["prev"].as_str().unwrap().len(), 64);
        assert_eq!(r["mac"].as_str().unwrap().len(), 64);
    }
    let (code, report) = verify_file(&h.v, &path, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["records"], recs.len() as u64);
    assert_eq!(report["gaps_expected"], false);

    // Edit one line: the outcome of a forbidden reveal becomes success.
    let target = recs.iter().find(|r| r["outcome"] == "forbidden").unwrap()["seq"]
        .as_u64()
        .unwrap();
    let edited: Vec<String> = text
        .lines()
        .map(|l| {
            let mut r: Value = serde_json::from_str(l).unwrap();
            if r["seq"] == target {
                r["outcome"] = "success".into();
            }
            serde_json::to_string(&r).unwrap()
        })
        .collect();
    let bad = h.v.tmp.path().join("edited.jsonl");
    std::fs::write(&bad, edited.join("\n") + "\n").unwrap();
    let (code, report) = verify_file(&h.v, &bad, &[]);
    assert_eq!(code, 1);
    assert_eq!(report["status"], "broken");
    assert_eq!(report["seq"], target);
    assert_eq!(report["problem"], "altered");

    // A removed line is missing (an unfiltered export must be whole);
    // verified as a filtered export, the gap is counted, not hidden.
    let removed: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains(&format!("\"seq\":{target},")))
        .collect();
    let gap = h.v.tmp.path().join("gap.jsonl");
    std::fs::write(&gap, removed.join("\n") + "\n").unwrap();
    let (code, report) = verify_file(&h.v, &gap, &[]);
    assert_eq!(code, 1);
    assert_eq!(report["problem"], "missing");
    assert_eq!(report["seq"], target);
    assert!(report["detail"].as_str().unwrap().contains("--filtered"));
    let (code, report) = verify_file(&h.v, &gap, &["--filtered"]);
    assert_eq!(code, 0);
    assert_eq!(report["gaps_expected"], true);
    assert_eq!(report["gaps"], 1);
    // The first line cut: missing at seq 1.
    let headless = h.v.tmp.path().join("headless.jsonl");
    std::fs::write(
        &headless,
        text.lines().skip(1).collect::<Vec<_>>().join("\n") + "\n",
    )
    .unwrap();
    let (code, report) = verify_file(&h.v, &headless, &[]);
    assert_eq!((code, report["seq"].as_u64()), (1, Some(1)));
}

#[test]
fn a_cut_tail_is_caught_with_the_anchor_the_export_printed() {
    let h = history();
    let path = h.v.tmp.path().join("all.jsonl");
    let out = run_with_key(
        &h.v.key,
        &[
            "audit",
            "export",
            h.v.store_args()[0],
            h.v.store_args()[1],
            "-o",
            path.to_str().unwrap(),
        ],
    );
    assert!(out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr).into_owned();
    let anchor = msg
        .split("--anchor ")
        .nth(1)
        .and_then(|r| r.split(|c: char| c == '`' || c.is_whitespace()).next())
        .unwrap_or_else(|| panic!("the export names its anchor: {msg}"))
        .to_string();
    let (code, report) = verify_file(&h.v, &path, &["--anchor", &anchor]);
    assert_eq!(code, 0, "{report}");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cut = h.v.tmp.path().join("cut.jsonl");
    std::fs::write(&cut, lines[..lines.len() - 3].join("\n") + "\n").unwrap();
    // Without the anchor a cut tail is a shorter, intact chain...
    let (code, _) = verify_file(&h.v, &cut, &[]);
    assert_eq!(code, 0);
    // ...with it, the cut is caught.
    let out = run_with_key(
        &h.v.key,
        &[
            "audit",
            "verify",
            h.v.store_args()[0],
            h.v.store_args()[1],
            "--file",
            cut.to_str().unwrap(),
            "--anchor",
            &anchor,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("truncated"));
    // The HTTP export names its head too.
    let s = h.v.serve(&[]);
    let r = Api::new(&s, &h.v.admin).get("/api/audit");
    let head = r.headers()["x-keyhold-audit-head"]
        .to_str()
        .unwrap()
        .to_string();
    let body = r.text().unwrap();
    s.stop();
    let online = h.v.tmp.path().join("online.jsonl");
    std::fs::write(&online, body).unwrap();
    let (code, report) = verify_file(&h.v, &online, &["--anchor", &head]);
    assert_eq!(code, 0, "{report}");
}

#[test]
fn filters_return_exactly_the_matching_records() {
    let h = history();
    let all = jsonl(&export_cli(&h.v, &[]));
    let check = |args: &[&str], pred: &dyn Fn(&Value) -> bool| {
        let got = jsonl(&export_cli(&h.v, args));
        // Every export adds its own record, which a filter may match; compare
        // only records that existed before this export.
        let max = all.last().unwrap()["seq"].as_u64().unwrap();
        let got: Vec<u64> = got
            .iter()
            .filter(|r| r["seq"].as_u64().unwrap() <= max)
            .map(|r| r["seq"].as_u64().unwrap())
            .collect();
        let want: Vec<u64> = all
            .iter()
            .filter(|r| pred(r))
            .map(|r| r["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(got, want, "{args:?}");
        assert!(!want.is_empty(), "{args:?} selects something");
    };
    check(&["--outcome", "forbidden"], &|r| {
        r["outcome"] == "forbidden"
    });
    check(&["--action", "reveal"], &|r| r["action"] == "reveal");
    check(&["--caller", "orchestrator"], &|r| {
        r["caller"] == "orchestrator"
    });
    check(&["--key-id", &h.key_a], &|r| {
        r["key_id"] == h.key_a.as_str()
    });
    check(&["--since", &h.mid], &|r| {
        r["at"].as_str().unwrap() >= h.mid.as_str()
    });
    check(&["--until", &h.mid], &|r| {
        r["at"].as_str().unwrap() < h.mid.as_str()
    });
    check(
        &[
            "--action",
            "reveal",
            "--outcome",
            "success",
            "--caller",
            "orchestrator",
        ],
        &|r| r["action"] == "reveal" && r["outcome"] == "success" && r["caller"] == "orchestrator",
    );
    // Bad filter values are refused with exit 2 and a reason.
    let out = run_with_key(
        &h.v.key,
        &[
            "audit",
            "export",
            h.v.store_args()[0],
            h.v.store_args()[1],
            "--outcome",
            "nope",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("outcome"));

    // The HTTP route applies the same filters, and a filtered export
    // verifies record by record, saying gaps are expected.
    let s = h.v.serve(&[]);
    let api = Api::new(&s, &h.v.admin);
    let r = api.get("/api/audit?outcome=success&action=reveal");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("ndjson"));
    let text = r.text().unwrap();
    let got = jsonl(&text);
    assert!(got
        .iter()
        .all(|r| r["outcome"] == "success" && r["action"] == "reveal"));
    assert_eq!(
        got.len(),
        all.iter()
            .filter(|r| r["outcome"] == "success" && r["action"] == "reveal")
            .count()
    );
    assert_eq!(api.get("/api/audit?since=yesterday").status(), 422);
    assert_eq!(api.get("/api/audit?format=xml").status(), 422);
    s.stop();
    let path = h.v.tmp.path().join("filtered.jsonl");
    std::fs::write(&path, &text).unwrap();
    let (code, report) = verify_file(&h.v, &path, &["--filtered"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["gaps_expected"], true);
}

#[test]
fn csv_export_parses_back_with_a_csv_reader() {
    let h = history();
    let all = jsonl(&export_cli(&h.v, &[]));
    let text = export_cli(&h.v, &["--format", "csv"]);
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let headers: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        headers,
        [
            "seq",
            "at",
            "request_id",
            "action",
            "key_id",
            "provider",
            "caller",
            "caller_id",
            "ip",
            "peer",
            "outcome",
            "count",
            "detail",
            "prev",
            "mac",
            "tag",
            "sig",
            "node"
        ]
    );
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    assert_eq!(
        rows.len(),
        all.len() + 1,
        "the CSV export's own record is in it"
    );
    for (row, rec) in rows.iter().zip(&all) {
        assert_eq!(row[0], rec["seq"].to_string());
        assert_eq!(&row[12], rec["detail"].as_str().unwrap_or(""));
        assert_eq!(&row[14], rec["mac"].as_str().unwrap());
    }
    // Quoting survives commas and quotes in a field.
    assert!(rows
        .iter()
        .any(|r| r[12].contains("\"summarise, then stop\"")));
    // Over HTTP too.
    let s = h.v.serve(&[]);
    let r = Api::new(&s, &h.v.admin).get("/api/audit?format=csv");
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let body = r.text().unwrap();
    let n = csv::Reader::from_reader(body.as_bytes()).records().count();
    assert!(n >= rows.len());
}

#[test]
fn every_export_is_audited_with_its_filters() {
    let h = history();
    export_cli(&h.v, &["--outcome", "forbidden"]);
    let s = h.v.serve(&[]);
    Api::new(&s, &h.v.admin)
        .get("/api/audit?caller=dashboard&format=csv")
        .text()
        .unwrap();
    s.stop();
    let recs = jsonl(&export_cli(&h.v, &[]));
    let exports: Vec<&Value> = recs
        .iter()
        .filter(|r| r["action"] == "audit_export")
        .collect();
    assert!(exports.iter().any(
        |r| r["caller"] == "cli" && r["detail"].as_str().unwrap().contains("outcome=forbidden")
    ));
    assert!(exports.iter().any(|r| r["caller"] == "admin"
        && r["detail"].as_str().unwrap().contains("caller=dashboard")
        && r["detail"].as_str().unwrap().contains("csv")));
}

#[test]
fn a_flood_of_10000_rate_limited_requests_leaves_a_few_records_counting_all() {
    let v = Vault::new();
    let s = v.serve(&[("KEYHOLD_REVEAL_RATE", "1/h")]);
    let admin = Api::new(&s, &v.admin);
    let id = admin.create_key("claude", "k", "sk-1");
    assert_eq!(admin.get(&format!("/api/keys/{id}")).status(), 200);
    let url = s.url(&format!("/api/keys/{id}"));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            let token = v.admin.clone();
            std::thread::spawn(move || {
                let c = client();
                let mut limited = 0u64;
                for _ in 0..2500 {
                    let r = c.get(&url).bearer_auth(&token).send().unwrap();
                    assert_eq!(r.status(), 429);
                    limited += 1;
                }
                limited
            })
        })
        .collect();
    let sent: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(sent, 10_000);
    s.stop();
    let recs = v.audit_records();
    let limited: Vec<&Value> = recs
        .iter()
        .filter(|r| r["outcome"] == "rate_limited")
        .collect();
    let total: u64 = limited.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 10_000, "no attempt uncounted");
    assert!(
        limited.len() <= 60,
        "{} records for the flood",
        limited.len()
    );
    // At most one record per client IP per second.
    let seconds: HashSet<(String, String)> = limited
        .iter()
        .map(|r| {
            (
                r["ip"].as_str().unwrap().to_string(),
                r["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(seconds.len(), limited.len());
    let (code, _) = (
        run_with_key(
            &v.key,
            &["audit", "verify", v.store_args()[0], v.store_args()[1]],
        )
        .status
        .code(),
        (),
    );
    assert_eq!(code, Some(0));
}

#[test]
fn anchors_in_the_server_log_catch_a_rollback_to_an_older_copy() {
    if on_postgres() {
        // The rollback is a copy of the data directory: sled's case.
        return;
    }
    let v = Vault::new();
    // An older copy of the whole store, before the session below.
    let old = v.tmp.path().join("old");
    copy_dir(&v.dir, &old);
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    api.create_key("claude", "k", "sk-1");
    api.create_key("claude", "k2", "sk-2");
    let (_, _, stderr) = s.stop();
    let anchors: Vec<String> = stderr
        .lines()
        .filter_map(|l| l.split("anchor=").nth(1))
        .map(|a| a.split_whitespace().next().unwrap().to_string())
        .collect();
    assert!(
        anchors.len() >= 2,
        "an anchor at the first write and at shutdown: {stderr}"
    );
    let last = anchors.last().unwrap();
    let ok = run_with_key(
        &v.key,
        &[
            "audit",
            "verify",
            v.store_args()[0],
            v.store_args()[1],
            "--anchor",
            last,
        ],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let rolled_back = run_with_key(
        &v.key,
        &[
            "audit",
            "verify",
            "--data-dir",
            old.to_str().unwrap(),
            "--anchor",
            last,
        ],
    );
    assert_eq!(rolled_back.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&rolled_back.stdout).contains("BROKEN"));
}
