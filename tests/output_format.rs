//! One output convention (issue 16, point 4): every command that lists or
//! reads takes `--format table|json`, and its JSON parses; `audit export
//! --format` is an enum that lists its values and refuses others.

mod common;

use common::*;
use serde_json::Value;

fn json_of(out: &std::process::Output) -> Value {
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn every_offline_listing_command_prints_json_with_format_json() {
    let v = Vault::new();
    let d = v.dir_str();
    let ring = keyhold::internals::keyring::Keyring::parse_list(
        keyhold::internals::keyring::KeySource::FernetKey,
        [v.key.as_str()],
    )
    .unwrap();
    let rows = v.tmp.path().join("rows.jsonl");
    std::fs::write(
        &rows,
        format!(
            "{}\n",
            serde_json::json!({"id": 1, "provider": "claude", "key_name": "a",
                "encrypted_key": ring.encrypt(b"sk-imported"),
                "created_at": "2026-01-01 00:00:00", "last_used": null})
        ),
    )
    .unwrap();
    let rows = rows.to_str().unwrap();
    let backup = v.tmp.path().join("b.backup");
    let backup_s = backup.to_str().unwrap();
    assert_ok(&run_with_key(
        &v.key,
        &["backup", "--data-dir", d, backup_s],
    ));
    for args in [
        vec!["token", "list", "--data-dir", d],
        vec!["check", "--data-dir", d],
        vec!["audit", "verify", "--data-dir", d],
        vec!["import", "--dry-run", "--data-dir", d, "--from", rows],
        vec!["audit", "public-key", "--data-dir", d],
        vec!["backup", "--verify", backup_s],
    ] {
        let mut with = args.clone();
        with.extend(["--format", "json"]);
        let v1 = json_of(&run_with_key(&v.key, &with));
        assert!(v1.is_object() || v1.is_array(), "{args:?}: {v1}");
        // --format table is the default, and is not JSON.
        let table = run_with_key(&v.key, &args);
        assert!(
            serde_json::from_slice::<Value>(&table.stdout).is_err(),
            "{args:?} printed JSON by default"
        );
        let mut with = args.clone();
        with.extend(["--format", "yaml"]);
        let out = run_with_key(&v.key, &with);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("table") && err.contains("json"), "{err}");
    }
}

#[test]
fn the_client_listing_commands_print_json_with_format_json() {
    let v = Vault::new();
    let s = v.serve(&[]);
    Api::new(&s, &v.admin).create_key("claude", "main", "sk-1");
    for args in [
        vec!["keys", "list", "--format", "json"],
        vec!["token", "list", "--remote", "--format", "json"],
    ] {
        let out = keyhold()
            .env("KEYHOLD_ADDR", &s.base)
            .env("KEYHOLD_TOKEN", &v.admin)
            .args(&args)
            .output()
            .unwrap();
        let list = json_of(&out);
        assert_eq!(list.as_array().map(Vec::len), Some(1), "{args:?}: {list}");
    }
    let out = keyhold()
        .env("KEYHOLD_ADDR", &s.base)
        .env("KEYHOLD_TOKEN", &v.admin)
        .args(["keys", "list"])
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("PROVIDER"));
}

#[test]
fn audit_export_format_is_an_enum() {
    let v = Vault::new();
    let out = run_with_key(
        &v.key,
        &[
            "audit",
            "export",
            "--format",
            "json",
            "--data-dir",
            v.dir_str(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("jsonl") && err.contains("csv"), "{err}");
    let help = keyhold()
        .args(["audit", "export", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("jsonl") && help.contains("csv"), "{help}");
    let out = run_with_key(
        &v.key,
        &[
            "audit",
            "export",
            "--format",
            "csv",
            "--data-dir",
            v.dir_str(),
        ],
    );
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("seq,"));
}
