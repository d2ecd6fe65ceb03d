//! Durations and exit codes (issue 25, point 5): every duration flag takes
//! `1h30m` and the like; every usage error (a bad flag, a bad value,
//! `--ttl 0`, a value the server refuses as invalid) exits 2 with one
//! message format; the server's other refusals exit 1 — as
//! docs/reference.md says.

mod common;

use std::io::Write;
use std::process::{Output, Stdio};

use common::*;
use serde_json::Value;

/// Runs a client command against `s` with `token`, `stdin` piped in.
fn client_run(s: &Server, token: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut c = keyhold()
        .env("KEYHOLD_ADDR", &s.base)
        .env("KEYHOLD_TOKEN", token)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command refused before it reads stdin closes it early.
    let _ = c.stdin.take().unwrap().write_all(stdin);
    c.wait_with_output().unwrap()
}

/// `keys add --provider claude --name k --ttl TTL`, the key on stdin.
fn add_with_ttl(s: &Server, token: &str, ttl: &str) -> Output {
    let args = [
        "keys",
        "add",
        "--provider",
        "claude",
        "--name",
        "k",
        "--ttl",
        ttl,
    ];
    client_run(s, token, &args, b"sk-x")
}

/// A usage error: exit 2, and stderr in keyhold's one format.
fn assert_usage_error(out: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    assert!(err.starts_with("keyhold: error: "), "{what}: {err}");
    assert_eq!(err.matches("error:").count(), 1, "{what}: {err}");
    err
}

#[test]
fn usage_errors_exit_2_in_one_format_and_reach_no_server() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    let add = |ttl: &str| add_with_ttl(&s, &v.admin, ttl);
    let err = assert_usage_error(&add("0"), "--ttl 0");
    assert!(
        err.contains("'--ttl <DURATION>'") && err.contains("from 1 s"),
        "{err}"
    );
    let err = assert_usage_error(&add("10x"), "--ttl 10x");
    assert!(
        err.contains("not a duration") && err.contains("1h30m"),
        "{err}"
    );
    assert_usage_error(&add("600w"), "--ttl past 10 years");
    let out = client_run(&s, &v.admin, &["keys", "add", "--bogus"], b"");
    let err = assert_usage_error(&out, "a bad flag");
    assert!(err.contains("--bogus"), "{err}");
    let out = client_run(&s, &v.admin, &["keys", "put", "some-id", "--ttl", "0"], b"");
    assert_usage_error(&out, "keys put --ttl 0");
    let out = client_run(
        &s,
        &v.admin,
        &[
            "exec",
            "--wait",
            "1x",
            "--provider",
            "p",
            "--env",
            "V",
            "--",
            "true",
        ],
        b"",
    );
    assert_usage_error(&out, "exec --wait 1x");
    for remote in [true, false] {
        let mut args = vec!["token", "create", "--name", "t", "--role", "reader"];
        args.extend(if remote {
            vec!["--remote"]
        } else {
            vec!["--data-dir", "/nonexistent"]
        });
        args.extend(["--ttl", "0"]);
        assert_usage_error(
            &client_run(&s, &v.admin, &args, b""),
            "token create --ttl 0",
        );
    }
    let out = client_run(
        &s,
        &v.admin,
        &["token", "rotate", "--remote", "t", "--overlap", "600w"],
        b"",
    );
    assert_usage_error(&out, "--overlap past 10 years");
    // Nothing reached the server: no key, no token made.
    let keys: Vec<Value> = api.get("/api/keys").json().unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    let tokens: Vec<Value> = api.get("/api/tokens").json().unwrap();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
}

#[test]
fn every_duration_flag_takes_combined_units() {
    let v = Vault::new();
    // The server's own duration flags and the key command's timeout.
    let s = Server::start_args(
        &[
            "--data-dir",
            v.dir_str(),
            "--listen",
            "127.0.0.1:0",
            "--idle-timeout",
            "1m30s",
            "--header-timeout",
            "15s",
            "--handshake-timeout",
            "1m",
            "--recovery-window",
            "1w3d",
        ],
        &[
            ("KEYHOLD_KEY_COMMAND", &format!("echo {}", v.key)),
            ("KEYHOLD_KEY_COMMAND_TIMEOUT", "1m30s"),
        ],
    );
    assert_ok(&add_with_ttl(&s, &v.admin, "1h30m"));
    let list: Vec<Value> = Api::new(&s, &v.admin).get("/api/keys").json().unwrap();
    let at = |f: &str| chrono::DateTime::parse_from_rfc3339(list[0][f].as_str().unwrap()).unwrap();
    let secs = (at("expires_at") - at("created_at")).num_seconds();
    assert!((secs - 5400).abs() <= 2, "{secs}");
    // --expiring takes them too (the key lapses within 1d12h, not 1h).
    let listed = |within: &str| {
        let out = client_run(
            &s,
            &v.admin,
            &["keys", "list", "--expiring", within, "--format", "json"],
            b"",
        );
        assert_ok(&out);
        serde_json::from_slice::<Vec<Value>>(&out.stdout)
            .unwrap()
            .len()
    };
    assert_eq!(listed("1d12h"), 1);
    assert_eq!(listed("1h 10m"), 0);
    // So does the API's expiring_within.
    let r = Api::new(&s, &v.admin).get("/api/keys?expiring_within=1h30m");
    assert_eq!(r.json::<Vec<Value>>().unwrap().len(), 1);
    // A token's ttl and overlap.
    let (ttl, overlap) = ("2h30m", "1h30m");
    let out = client_run(
        &s,
        &v.admin,
        &[
            "token", "create", "--remote", "--name", "ci", "--role", "reader", "--ttl", ttl,
        ],
        b"",
    );
    assert_ok(&out);
    let out = client_run(
        &s,
        &v.admin,
        &["token", "rotate", "--remote", "ci", "--overlap", overlap],
        b"",
    );
    assert_ok(&out);
}

#[test]
fn the_servers_refusals_exit_1_and_invalid_values_exit_2() {
    let v = Vault::new();
    let reader = v.token("r", "reader", None);
    let s = v.serve(&[]);
    // A value the server refuses as invalid (422): a usage error.
    let out = client_run(
        &s,
        &v.admin,
        &["keys", "add", "--provider", "Not A Provider", "--name", "k"],
        b"sk-x",
    );
    let err = assert_usage_error(&out, "an invalid provider");
    assert!(err.contains("422"), "{err}");
    // A missing key (404), a refused scope (403): the server's refusals.
    let out = client_run(
        &s,
        &v.admin,
        &["keys", "reveal", &uuid::Uuid::new_v4().to_string()],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let out = client_run(&s, &reader, &["token", "list", "--remote"], b"");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("keyhold: error: ") && err.contains("403"),
        "{err}"
    );
    drop(s);
    // Offline: an invalid name is a usage error too; a missing token is not.
    let out = run_with_key(
        &v.key,
        &[
            "token",
            "create",
            "--data-dir",
            v.dir_str(),
            "--name",
            "bad name",
            "--role",
            "reader",
        ],
    );
    let err = assert_usage_error(&out, "an invalid token name");
    assert!(err.contains("bad name"), "{err}");
    let out = run_with_key(
        &v.key,
        &["token", "revoke", "--data-dir", v.dir_str(), "nobody"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // The vault's refusal, worded for the terminal: it names the command
    // that helps, never an HTTP route.
    assert!(
        err.contains("no token with id or name `nobody`: list them with `keyhold token list`")
            && !err.contains("/api/"),
        "{err}"
    );
}

/// `rotate --new-key` whose key file cannot be written (the file is read
/// through /proc/self/fd, a directory no one can create a file in, root
/// included): exit 2, the file and the store unchanged — nothing was
/// rotated, and every key still opens under the old keyring.
#[test]
fn a_rotation_whose_key_file_cannot_be_written_exits_2_and_changes_nothing() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    let id = api.create_key("claude", "k", "sk-before");
    drop(s);
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("key");
    std::fs::write(&key_file, format!("{}\n", v.key)).unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(r#"FERNET_KEY_FILE=/proc/self/fd/3 exec "$0" rotate --new-key --data-dir "$1" 3<"$2""#)
        .arg(bin())
        .arg(v.dir_str())
        .arg(&key_file)
        .env_remove("FERNET_KEYS")
        .env_remove("FERNET_KEY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.starts_with("keyhold: error: "), "{err}");
    assert!(err.contains("cannot write the key file"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(!err.contains(&v.key), "{err}");
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        format!("{}\n", v.key)
    );
    // The store still opens and reveals under the old key alone.
    let s = v.serve(&[]);
    let r = Api::new(&s, &v.admin).get(&format!("/api/keys/{id}"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap()["api_key"], "sk-before");
}
