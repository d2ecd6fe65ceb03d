//! The client commands (`keys`, `exec`, `token --remote`, `backup
//! --remote`) speak to a
//! Unix-socket listener (`KEYHOLD_ADDR=unix:/path`), and take a server
//! address without a scheme or with a host name (issue 16, points 3, 7).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

fn client(addr: &str, token: &str) -> Command {
    let mut c = keyhold();
    c.env("KEYHOLD_ADDR", addr).env("KEYHOLD_TOKEN", token);
    c
}

#[test]
fn keys_exec_and_remote_tokens_over_a_unix_socket() {
    let v = Vault::new();
    let sock = v.tmp.path().join("keyhold.sock");
    let addr = format!("unix:{}", sock.display());
    let s = Server::start_args(
        &["--data-dir", v.dir_str(), "--listen", &addr],
        &[("FERNET_KEY", v.key.as_str())],
    );

    let mut add = client(&addr, &v.admin)
        .args(["keys", "add", "--provider", "claude", "--name", "uds"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(b"sk-over-uds\n")
        .unwrap();
    let out = add.wait_with_output().unwrap();
    assert_ok(&out);

    let out = client(&addr, &v.admin)
        .args(["keys", "list", "--json"])
        .output()
        .unwrap();
    assert_ok(&out);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = list[0]["id"].as_str().unwrap().to_string();

    let out = client(&addr, &v.admin)
        .args(["keys", "reveal", &id])
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "sk-over-uds");

    let out = client(&addr, &v.admin)
        .args([
            "exec",
            "--provider",
            "claude",
            "--env",
            "K",
            "--",
            "sh",
            "-c",
            "test \"$K\" = sk-over-uds",
        ])
        .output()
        .unwrap();
    assert_ok(&out);

    let out = client(&addr, &v.admin)
        .args(["token", "list", "--remote", "--json"])
        .output()
        .unwrap();
    assert_ok(&out);
    let tokens: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(tokens[0]["name"], "admin");

    // A backup downloaded over the socket: whole, and the owner's alone.
    let backup = v.tmp.path().join("uds.backup");
    let out = client(&addr, &v.admin)
        .args(["backup", "--remote", backup.to_str().unwrap()])
        .output()
        .unwrap();
    assert_ok(&out);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_ok(&run_with_key(
        &v.key,
        &["backup", "--verify", backup.to_str().unwrap()],
    ));

    // The audit log names the socket as the client.
    drop(s);
    let reveals: Vec<_> = v
        .audit_records()
        .into_iter()
        .filter(|r| r["action"] == "reveal")
        .collect();
    assert_eq!(reveals.len(), 2);
    assert!(reveals[0]["ip"].as_str().unwrap().starts_with("unix:"));
}

#[test]
fn an_unreachable_socket_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("unix:{}", dir.path().join("none.sock").display());
    let out = client(&addr, "kh_x")
        .args(["keys", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr), "{err}");
}

#[test]
fn server_addresses_without_a_scheme_and_with_host_names() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let port = s.addr.rsplit(':').next().unwrap().to_string();
    for addr in [
        s.addr.clone(),
        format!("localhost:{port}"),
        format!("http://localhost:{port}/"),
    ] {
        let out = client(&addr, &v.admin)
            .args(["keys", "list", "--json"])
            .output()
            .unwrap();
        assert_ok(&out);
    }
    let out = client("ftp://x:1", &v.admin)
        .args(["keys", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unix:/PATH") && err.contains("HOST:PORT"),
        "{err}"
    );
}
