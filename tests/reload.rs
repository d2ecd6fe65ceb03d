//! Rotation that cannot lose the key (issue 16, point 2): the new key is
//! written to the key file before anything is re-encrypted; a running
//! server reloads its keyring on SIGHUP and `POST /api/admin/reload`, so
//! rotation needs no restart; dropping a key something still needs is
//! refused.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// A store initialised with a one-key key file; returns (tmp, data dir,
/// key file, admin token).
fn vault_with_key_file() -> (tempfile::TempDir, PathBuf, PathBuf, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let file = tmp.path().join("keys/fernet.keys");
    assert_ok(&keygen_into(&file));
    let out = keyhold()
        .env("FERNET_KEY_FILE", &file)
        .args(["init", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_ok(&out);
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_string();
    (tmp, dir, file, admin)
}

fn keygen_into(file: &Path) -> std::process::Output {
    keyhold()
        .arg("keygen")
        .arg("--key-file")
        .arg(file)
        .output()
        .unwrap()
}

fn key_lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn sighup(server: &Server) {
    let st = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Waits until the server's output holds `needle` `n` times.
fn wait_for(server: &Server, needle: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if server.output().matches(needle).count() >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no `{needle}` (x{n}) in:\n{}", server.output());
}

#[test]
fn sighup_reload_then_online_rotation_with_no_restart() {
    let (_tmp, dir, file, admin) = vault_with_key_file();
    let file_s = file.to_str().unwrap();
    let server = Server::start(&dir, &[("FERNET_KEY_FILE", file_s)]);
    let pid = server.pid();
    let api = Api::new(&server, &admin);
    let id = api.create_key("claude", "prod", "sk-ant-secret");

    // 1. The new key into the key file, newest first; the server reloads.
    assert_ok(&keygen_into(&file));
    assert_eq!(key_lines(&file).len(), 2);
    sighup(&server);
    wait_for(&server, "keyring reloaded", 1);

    // 2. Online rotation, under the new key.
    let r = api.post_json("/api/admin/rotate", &serde_json::json!({}));
    assert_eq!(r.status(), 200);
    let report: serde_json::Value = r.json().unwrap();
    assert_eq!(report["rotated"], 1, "{report}");

    // 3. The old key is dropped from the file; the reload is accepted.
    let newest = key_lines(&file)[0].clone();
    std::fs::write(&file, format!("{newest}\n")).unwrap();
    let r = api.post_json("/api/admin/reload", &serde_json::json!({}));
    assert_eq!(r.status(), 200);
    let report: serde_json::Value = r.json().unwrap();
    assert_eq!(report["fingerprints"].as_array().unwrap().len(), 1);
    assert_eq!(report["previous"].as_array().unwrap().len(), 2);

    // The key still reveals, from the same process, never restarted.
    let r = api.get(&format!("/api/keys/{id}"));
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["api_key"],
        "sk-ant-secret"
    );
    assert_eq!(server.pid(), pid);
    let (code, _, err) = server.stop();
    assert_eq!(code, Some(0), "{err}");

    // Offline, the store opens with the new key alone and nothing needs
    // an older one; the reloads are in the audit log.
    let out = keyhold()
        .env("FERNET_KEY_FILE", &file)
        .args(["check", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_ok(&out);
    let out = keyhold()
        .env("FERNET_KEY_FILE", &file)
        .args(["audit", "export", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_ok(&out);
    let log = String::from_utf8(out.stdout).unwrap();
    let reloads: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["action"] == "reload")
        .collect();
    assert_eq!(reloads.len(), 2, "{log}");
    assert_eq!(reloads[0]["caller"], "SIGHUP");
    // Never a key in the log: fingerprints only.
    assert!(!log.contains(&newest));
}

#[test]
fn dropping_a_key_still_in_use_is_refused_and_the_old_keyring_kept() {
    let (_tmp, dir, file, admin) = vault_with_key_file();
    let old = key_lines(&file)[0].clone();
    let file_s = file.to_str().unwrap();
    let server = Server::start(&dir, &[("FERNET_KEY_FILE", file_s)]);
    let api = Api::new(&server, &admin);
    let id = api.create_key("claude", "prod", "sk-ant-secret");

    // A new key only, without rotating: everything still needs the old one.
    let new = {
        let other = _tmp.path().join("other.keys");
        assert_ok(&keygen_into(&other));
        key_lines(&other)[0].clone()
    };
    std::fs::write(&file, format!("{new}\n")).unwrap();
    let r = api.post_json("/api/admin/reload", &serde_json::json!({}));
    assert_eq!(r.status(), 409);
    let d = detail(r);
    assert!(d.contains("still needs"), "{d}");
    assert!(d.contains(&format!("key {id}")), "{d}");
    assert!(d.contains("POST /api/admin/rotate"), "{d}");
    assert!(
        d.contains(
            "so the server keeps its keyring: put the old key back in the key file (after the \
             new one), reload, run the rotation (`keyhold rotate --remote`, or POST \
             /api/admin/rotate), then retire the old key with `keyhold keyring retire` and \
             reload again"
        ),
        "{d}"
    );
    assert!(!d.contains(&new) && !d.contains(&old));

    // SIGHUP is refused the same way, naming the same fix in its log
    // line, and the server lives on.
    sighup(&server);
    wait_for(&server, "keyring reload refused", 1);
    let out = server.output();
    let line = out
        .lines()
        .find(|l| l.contains("keyring reload refused"))
        .unwrap_or_default();
    assert!(
        line.contains("put the old key back in the key file"),
        "{line}"
    );
    let r = api.get(&format!("/api/keys/{id}"));
    assert_eq!(r.status(), 200, "the old keyring is still in use");
    // A key created now is still under the old newest key.
    let id2 = api.create_key("claude", "second", "sk-2");
    std::fs::write(&file, format!("{old}\n")).unwrap();
    let r = api.post_json("/api/admin/reload", &serde_json::json!({}));
    assert_eq!(r.status(), 200, "{}", detail(r));
    assert_eq!(api.get(&format!("/api/keys/{id2}")).status(), 200);
    let out = server.output();
    assert!(!out.contains(&new) && !out.contains(&old));
}

#[test]
fn a_reload_needs_an_admin_token() {
    let v = Vault::new();
    let reader = v.token("r", "reader", None);
    let server = v.serve(&[]);
    let r = Api::new(&server, &reader).post_json("/api/admin/reload", &serde_json::json!({}));
    assert_eq!(r.status(), 403);
    // FERNET_KEY cannot change in a running process: a reload keeps it.
    let r = Api::new(&server, &v.admin).post_json("/api/admin/reload", &serde_json::json!({}));
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().unwrap()["changed"], false);
}

#[test]
fn offline_rotate_new_key_writes_the_key_file_first() {
    let (_tmp, dir, file, _admin) = vault_with_key_file();
    let before = key_lines(&file);
    let out = keyhold()
        .env("FERNET_KEY_FILE", &file)
        .args(["rotate", "--new-key", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_ok(&out);
    let after = key_lines(&file);
    assert_eq!(after.len(), 2);
    assert_eq!(after[1], before[0]);
    // Everything is under the new key: the old one can go.
    std::fs::write(&file, format!("{}\n", after[0])).unwrap();
    let out = keyhold()
        .env("FERNET_KEY_FILE", &file)
        .args(["check", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_ok(&out);
}

#[test]
fn offline_rotate_new_key_refuses_a_key_it_cannot_persist() {
    let v = Vault::new();
    let out = run_with_key(&v.key, &["rotate", "--new-key", "--data-dir", v.dir_str()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FERNET_KEY_FILE") && err.contains("nothing was changed"),
        "{err}"
    );
    // The store still opens with the one key, untouched.
    assert_ok(&run_with_key(&v.key, &["check", "--data-dir", v.dir_str()]));
}
