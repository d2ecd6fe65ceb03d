//! Friendly inputs (issue 16, point 7): host names in `--listen`, human
//! durations for TTLs, the reference's key beside keyhold's at import,
//! upper-case providers lower-cased on request. (Scheme-less and
//! host-name `KEYHOLD_ADDR`s are in tests/unix_client.rs.)

mod common;

use std::io::Write;
use std::process::Stdio;

use common::*;
use serde_json::Value;

#[test]
fn listen_takes_a_host_name() {
    let v = Vault::new();
    let s = Server::start_args(
        &["--data-dir", v.dir_str(), "--listen", "localhost:0"],
        &[("FERNET_KEY", v.key.as_str())],
    );
    assert!(s.base.starts_with("http://127.0.0.1:"), "{}", s.base);
    let out = keyhold()
        .env("FERNET_KEY", &v.key)
        .args([
            "serve",
            "--data-dir",
            v.dir_str(),
            "--listen",
            "no-such-host.invalid:8787",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot resolve") && err.contains("no-such-host.invalid"),
        "{err}"
    );
}

fn add_with_ttl(s: &Server, token: &str, ttl: &str) -> std::process::Output {
    let mut c = keyhold()
        .env("KEYHOLD_ADDR", &s.base)
        .env("KEYHOLD_TOKEN", token)
        .args([
            "keys",
            "add",
            "--provider",
            "claude",
            "--name",
            "t",
            "--ttl",
            ttl,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A refused --ttl exits before reading stdin.
    let _ = c.stdin.take().unwrap().write_all(b"sk-ttl");
    c.wait_with_output().unwrap()
}

#[test]
fn ttls_take_human_durations() {
    let v = Vault::new();
    let s = v.serve(&[]);
    assert_ok(&add_with_ttl(&s, &v.admin, "30d"));
    let list: Vec<Value> = Api::new(&s, &v.admin).get("/api/keys").json().unwrap();
    let t = |f: &str| chrono::DateTime::parse_from_rfc3339(list[0][f].as_str().unwrap()).unwrap();
    let secs = (t("expires_at") - t("created_at")).num_seconds();
    assert!((secs - 30 * 86_400).abs() <= 2, "{secs}");
    let out = add_with_ttl(&s, &v.admin, "1.5h");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("30d") && err.contains("12h"), "{err}");
}

/// JSON Lines rows of the reference's table, tokens under `key`.
fn reference_rows(key: &str, rows: &[(u32, &str, &str)]) -> String {
    let ring = keyhold::internals::keyring::Keyring::parse_list(
        keyhold::internals::keyring::KeySource::FernetKey,
        [key],
    )
    .unwrap();
    rows.iter()
        .map(|(id, provider, secret)| {
            serde_json::json!({"id": id, "provider": provider, "key_name": format!("k{id}"),
                "encrypted_key": ring.encrypt(secret.as_bytes()),
                "created_at": "2025-06-01 12:00:00", "last_used": null})
            .to_string()
                + "\n"
        })
        .collect()
}

#[test]
fn import_takes_the_reference_key_beside_keyholds_and_lowercases_providers() {
    let v = Vault::new();
    let reference_key = keygen();
    let ref_file = v.tmp.path().join("reference.key");
    std::fs::write(
        &ref_file,
        format!("# the Python app's FERNET_KEY\n{reference_key}\n"),
    )
    .unwrap();
    let rows = v.tmp.path().join("api_keys.jsonl");
    std::fs::write(
        &rows,
        reference_rows(
            &reference_key,
            &[(1, "claude", "sk-ref-1"), (2, "OpenAI", "sk-ref-2")],
        ),
    )
    .unwrap();
    let import = |extra: &[&str]| {
        let mut args = vec![
            "import",
            "--format",
            "json",
            "--data-dir",
            v.dir_str(),
            "--from",
            rows.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = run_with_key(&v.key, &args);
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), report)
    };
    // Without the reference key: every row is refused, saying what to add.
    let (code, report) = import(&["--dry-run"]);
    assert_eq!(code, Some(1));
    assert!(report["rejected"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("--reference-key-file"));
    // With it, the upper-case provider is refused with the fix named...
    let refkey = ["--reference-key-file", ref_file.to_str().unwrap()];
    let (code, report) = import(&[&["--dry-run"][..], &refkey[..]].concat());
    assert_eq!(code, Some(1));
    assert_eq!(report["imported"], 1);
    let reason = report["rejected"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("--providers-lowercase") && reason.contains("`openai`"),
        "{reason}"
    );
    // ... and taken with --providers-lowercase.
    let (code, report) = import(&[&refkey[..], &["--providers-lowercase"][..]].concat());
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["imported"], 2);
    // Idempotent, although re-encrypted.
    let (code, report) = import(&[&refkey[..], &["--providers-lowercase"][..]].concat());
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["already_present"], 2);

    // The server needs keyhold's key alone: the rows were re-encrypted.
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    let r: Value = api.get("/api/providers/openai/key").json().unwrap();
    assert_eq!(r["api_key"], "sk-ref-2");
    let r: Value = api.get("/api/providers/claude/key").json().unwrap();
    assert_eq!(r["api_key"], "sk-ref-1");
    assert!(!s.output().contains(&reference_key));
}
