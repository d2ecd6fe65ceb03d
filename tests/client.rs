//! The client side: `keyhold exec` hands a key to a child process's
//! environment only; `keyhold keys …` and `token … --remote` talk to a
//! running server.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};

fn client_cmd(s: &Server, token: &str) -> Command {
    let mut c = keyhold();
    c.env("KEYHOLD_ADDR", &s.base).env("KEYHOLD_TOKEN", token);
    c
}

fn sha256_hex(s: &str) -> String {
    keyhold::internals::audit::hex(&Sha256::digest(s.as_bytes()))
}

/// Every process's command line, read from /proc.
fn all_cmdlines() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Ok(b) = std::fs::read(e.path().join("cmdline")) {
                out.push(String::from_utf8_lossy(&b).replace('\0', " "));
            }
        }
    }
    out
}

#[test]
fn exec_puts_the_key_in_the_child_environment_only() {
    let v = Vault::new();
    let reader = v.token("orchestrator", "reader", None);
    let s = v.serve(&[]);
    let secret = "sk-ant-EXEC-CHILD-ONLY-0123456789";
    Api::new(&s, &v.admin).create_key("claude", "main", secret);
    let out_file = v.tmp.path().join("child.out");
    let script = format!(
        "printf %s \"$ANTHROPIC_API_KEY\" | sha256sum > {}; echo \"token:${{KEYHOLD_TOKEN:-unset}}\" >> {}; sleep 1; exit 7",
        out_file.display(),
        out_file.display()
    );
    let mut child = client_cmd(&s, &reader)
        .args([
            "exec",
            "--provider",
            "claude",
            "--env",
            "ANTHROPIC_API_KEY",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While the child runs, no process's command line holds the key,
    // including exec's own (it became the child).
    std::thread::sleep(Duration::from_millis(400));
    let lines = all_cmdlines();
    assert!(!lines.is_empty());
    assert!(
        lines.iter().all(|l| !l.contains(secret)),
        "the key is on a command line"
    );
    let own = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
    assert!(!contains(&own, secret.as_bytes()));
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(7),
        "exec's exit status is the command's"
    );
    let mut printed = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut printed).unwrap();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut printed).unwrap();
    assert!(!printed.contains(secret), "exec printed the key");
    let got = std::fs::read_to_string(&out_file).unwrap();
    assert!(
        got.starts_with(&sha256_hex(secret)),
        "the child got the key: {got}"
    );
    assert!(
        got.contains("token:unset"),
        "KEYHOLD_TOKEN is not passed on: {got}"
    );
    assert!(
        !std::fs::read_dir(v.tmp.path()).unwrap().flatten().any(|e| {
            e.file_type().map(|t| t.is_file()).unwrap_or(false)
                && std::fs::read(e.path())
                    .map(|b| contains(&b, secret.as_bytes()))
                    .unwrap_or(false)
        }),
        "the key was written to disk"
    );
    // The audit record names the program, the caller and the provider.
    s.stop();
    let recs = v.audit_records();
    let rec = recs
        .iter()
        .find(|r| r["action"] == "reveal" && r["outcome"] == "success")
        .unwrap();
    assert_eq!(rec["caller"], "orchestrator");
    assert_eq!(rec["provider"], "claude");
    assert!(rec["detail"].as_str().unwrap().contains("exec sh"), "{rec}");
    assert!(!serde_json::to_string(&recs).unwrap().contains(secret));
}

#[test]
fn exec_injects_several_providers_and_pristine_keeps_only_the_basics() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    api.create_key("claude", "c", "sk-c");
    api.create_key("gemini", "g", "AIza-g");
    let out = client_cmd(&s, &v.admin)
        .env("UNRELATED_SECRET_VAR", "leak-me-not")
        .env("LANG", "C.UTF-8")
        .args([
            "exec",
            "--pristine",
            "--provider",
            "claude",
            "--env",
            "A_KEY",
            "--provider",
            "gemini",
            "--env",
            "G_KEY",
            "--",
            "env",
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    let env = String::from_utf8(out.stdout).unwrap();
    let names: std::collections::BTreeSet<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    assert!(names.contains("A_KEY") && names.contains("G_KEY"));
    assert!(env.contains("A_KEY=sk-c") && env.contains("G_KEY=AIza-g"));
    for n in &names {
        assert!(
            ["A_KEY", "G_KEY", "PATH", "HOME", "LANG", "TERM"].contains(n),
            "--pristine leaked {n}"
        );
    }
    // Without --pristine the environment is kept (but not KEYHOLD_TOKEN).
    let out = client_cmd(&s, &v.admin)
        .env("UNRELATED_VAR", "kept")
        .args([
            "exec",
            "--provider",
            "claude",
            "--env",
            "A_KEY",
            "--",
            "env",
        ])
        .output()
        .unwrap();
    let env = String::from_utf8(out.stdout).unwrap();
    assert!(env.contains("UNRELATED_VAR=kept"));
    assert!(!env.contains("KEYHOLD_TOKEN="));
}

fn exec_fails(cmd: &mut Command, marker: &std::path::Path) -> Output {
    let out = cmd
        .args(["--", "touch", marker.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!marker.exists(), "the command ran");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was run"));
    out
}

#[test]
fn each_exec_error_runs_nothing_and_exits_2() {
    let v = Vault::new();
    let writer = v.token("dashboard", "writer", None);
    let s = v.serve(&[("KEYHOLD_REVEAL_RATE", "3/h")]);
    let api = Api::new(&s, &v.admin);
    api.create_key("claude", "c", "sk-c");
    let r = api.post_json(
        "/api/keys",
        &serde_json::json!({"provider": "brief", "key_name": "b", "api_key": "x", "ttl_seconds": 1}),
    );
    assert_eq!(r.status(), 200);
    std::thread::sleep(Duration::from_millis(1100));
    let marker = v.tmp.path().join("ran");
    let exec = |token: &str, provider: &str| {
        let mut c = client_cmd(&s, token);
        c.args(["exec", "--provider", provider, "--env", "K"]);
        c
    };
    // Unreachable server.
    let mut c = keyhold();
    c.env("KEYHOLD_ADDR", "http://127.0.0.1:9")
        .env("KEYHOLD_TOKEN", &v.admin);
    c.args(["exec", "--provider", "claude", "--env", "K"]);
    let out = exec_fails(&mut c, &marker);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach keyhold"));
    // No token at all.
    let mut c = keyhold();
    c.env("KEYHOLD_ADDR", &s.base)
        .args(["exec", "--provider", "claude", "--env", "K"]);
    exec_fails(&mut c, &marker);
    // 401, 403 and no key use up the 3/h reveal budget of this address.
    let bad = format!("kh_{}", "B".repeat(43));
    let out = exec_fails(&mut exec(&bad, "claude"), &marker);
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    let out = exec_fails(&mut exec(&writer, "claude"), &marker);
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
    let out = exec_fails(&mut exec(&v.admin, "mistral"), &marker);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no key"));
    // The budget (3/h) is used up by now: 429 with its Retry-After.
    let out = exec_fails(&mut exec(&v.admin, "brief"), &marker);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("429") && e.contains("retry in"), "{e}");
    // Mismatched pairs, bad variable names.
    let mut c = client_cmd(&s, &v.admin);
    c.args([
        "exec",
        "--provider",
        "claude",
        "--provider",
        "gemini",
        "--env",
        "K",
    ]);
    exec_fails(&mut c, &marker);
    let mut c = client_cmd(&s, &v.admin);
    c.args(["exec", "--provider", "claude", "--env", "1BAD"]);
    exec_fails(&mut c, &marker);
}

#[test]
fn exec_on_an_expired_key_exits_2_saying_so() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let r = Api::new(&s, &v.admin).post_json(
        "/api/keys",
        &serde_json::json!({"provider": "brief", "key_name": "b", "api_key": "x", "ttl_seconds": 1}),
    );
    assert_eq!(r.status(), 200);
    std::thread::sleep(Duration::from_millis(1100));
    let marker = v.tmp.path().join("ran");
    let mut c = client_cmd(&s, &v.admin);
    c.args(["exec", "--provider", "brief", "--env", "K"]);
    let out = exec_fails(&mut c, &marker);
    assert!(String::from_utf8_lossy(&out.stderr).contains("410"));
}

#[test]
fn keys_add_list_reveal_delete_round_trip_through_the_cli() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let secret = "ghp_FROM_A_PIPE_123";
    // keys add from a pipe (never argv).
    let mut child = client_cmd(&s, &v.admin)
        .args([
            "keys",
            "add",
            "--provider",
            "github",
            "--name",
            "ci token",
            "--ttl",
            "3600",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        format!("{secret}\n").as_bytes(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_ok(&out);
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(id.len(), 36);
    // list: a table by default, JSON on request; never the key.
    let out = client_cmd(&s, &v.admin)
        .args(["keys", "list"])
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("ID") && table.contains(&id) && table.contains("github"));
    assert!(!table.contains(secret));
    let out = client_cmd(&s, &v.admin)
        .args(["keys", "list", "--json", "--provider", "github"])
        .output()
        .unwrap();
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0]["expires_at"].is_string());
    // reveal: the key alone on stdout (the trailing newline was not stored).
    let out = client_cmd(&s, &v.admin)
        .args(["keys", "reveal", &id])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{secret}\n")
    );
    // delete, then reveal fails with the server's reason.
    let out = client_cmd(&s, &v.admin)
        .args(["keys", "delete", &id])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = client_cmd(&s, &v.admin)
        .args(["keys", "reveal", &id])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    // An empty pipe is refused.
    let out = client_cmd(&s, &v.admin)
        .args(["keys", "add", "--provider", "github", "--name", "x"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no key given"));
}

#[test]
fn token_commands_work_remotely() {
    let v = Vault::new();
    let s = v.serve(&[]);
    let out = client_cmd(&s, &v.admin)
        .args([
            "token",
            "create",
            "--remote",
            "--name",
            "bot",
            "--role",
            "reader",
            "--providers",
            "claude",
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("kh_"));
    assert_eq!(Api::new(&s, &token).get("/api/keys").status(), 200);
    let out = client_cmd(&s, &v.admin)
        .args(["token", "list", "--remote"])
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("bot") && table.contains("claude") && !table.contains(&token));
    let out = client_cmd(&s, &v.admin)
        .args(["token", "revoke", "--remote", "bot"])
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(Api::new(&s, &token).get("/api/keys").status(), 401);
    // A non-admin token is refused by the server.
    let out = client_cmd(&s, &token)
        .args(["token", "list", "--remote"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
