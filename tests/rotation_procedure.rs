//! Rotation that cannot lose anything (issue 25, points 1 and 2), through
//! the real binary: the documented procedure (scripts/rotate-key.sh) run
//! end to end against a running server, a backup made before it restored
//! and served after a restart, the slip of retiring before rotating
//! recovered with the command the refusals name, and `check` with a key
//! that opens nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

/// A store initialised with a one-key key file; (tmp, data dir, key file,
/// admin token).
fn vault_with_key_file() -> (tempfile::TempDir, PathBuf, PathBuf, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let file = tmp.path().join("keys/fernet.keys");
    assert_ok(&kh(
        &file,
        &["keygen", "--key-file", file.to_str().unwrap()],
    ));
    let out = kh(&file, &["init", "--data-dir", dir.to_str().unwrap()]);
    assert_ok(&out);
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_string();
    (tmp, dir, file, admin)
}

/// `keyhold ARGS` with FERNET_KEY_FILE=`file`.
fn kh(file: &Path, args: &[&str]) -> Output {
    keyhold()
        .env_remove("FERNET_KEY")
        .env("FERNET_KEY_FILE", file)
        .args(args)
        .output()
        .unwrap()
}

fn serve(dir: &Path, file: &Path) -> Server {
    Server::start(dir, &[("FERNET_KEY_FILE", file.to_str().unwrap())])
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The key file's fingerprints: (active, retired).
fn sections(file: &Path) -> (Vec<String>, Vec<String>) {
    let out = kh(file, &["keyring", "list"]);
    assert_ok(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    let pick = |what: &str| {
        text.lines()
            .filter_map(|l| l.strip_prefix(what))
            .map(|fp| fp.trim().to_string())
            .collect::<Vec<_>>()
    };
    (pick("active"), pick("retired"))
}

/// Downloads an online backup to `to`.
fn backup_online(s: &Server, admin: &str, to: &Path) {
    let r = Api::new(s, admin).get("/api/admin/backup");
    assert_eq!(r.status(), 200);
    std::fs::write(to, r.bytes().unwrap()).unwrap();
}

fn reveal(s: &Server, admin: &str, id: &str) -> String {
    let r = Api::new(s, admin).get(&format!("/api/keys/{id}"));
    assert_eq!(r.status(), 200, "{}", s.output());
    r.json::<serde_json::Value>().unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_documented_rotation_keeps_old_backups_restorable_and_survives_a_restart() {
    let (tmp, dir, file, admin) = vault_with_key_file();
    let s = serve(&dir, &file);
    let id = Api::new(&s, &admin).create_key("claude", "main", "sk-before-rotation");
    let before = tmp.path().join("before.backup");
    backup_online(&s, &admin, &before);
    let (old, _) = sections(&file);

    // The procedure, as an operator runs it.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/rotate-key.sh");
    let out = std::process::Command::new("sh")
        .arg(&script)
        .env_remove("FERNET_KEY")
        .env("FERNET_KEY_FILE", &file)
        .env("KEYHOLD_ADDR", &s.base)
        .env("KEYHOLD_TOKEN", &admin)
        .env("KEYHOLD_BIN", bin())
        .output()
        .unwrap();
    assert_ok(&out);
    let (active, retired) = sections(&file);
    assert_eq!(active.len(), 1);
    assert_ne!(active, old);
    assert_eq!(retired, old, "the old key is kept, retired");
    assert_eq!(reveal(&s, &admin, &id), "sk-before-rotation");
    s.stop();

    // A restart reads the active keys only, and opens the rotated store.
    let s = serve(&dir, &file);
    assert_eq!(reveal(&s, &admin, &id), "sk-before-rotation");
    s.stop();

    // The backup from before the rotation: check names its (retired) key,
    // restore reads it and re-keys it under the active key, and a server
    // with the active keys alone serves it.
    let out = kh(&file, &["check", "--backup", before.to_str().unwrap()]);
    assert_ok(&out);
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(
        said.contains(&format!("needs key {} (retired)", old[0])),
        "{said}"
    );
    let restored = tmp.path().join("restored");
    let out = kh(
        &file,
        &[
            "restore",
            before.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
        ],
    );
    assert_ok(&out);
    assert!(stderr(&out).contains("retired key"), "{}", stderr(&out));
    let s = serve(&restored, &file);
    assert_eq!(reveal(&s, &admin, &id), "sk-before-rotation");
    s.stop();
    let out = kh(&file, &["check", "--data-dir", restored.to_str().unwrap()]);
    assert_ok(&out);
}

#[test]
fn retiring_before_rotating_loses_nothing_and_the_refusals_name_the_fix() {
    let (_tmp, dir, file, admin) = vault_with_key_file();
    let s = serve(&dir, &file);
    let id = Api::new(&s, &admin).create_key("claude", "main", "sk-slip");
    let f = file.to_str().unwrap();
    // A new key, then the old one retired before any rotation.
    assert_ok(&kh(&file, &["keygen", "--key-file", f]));
    assert_ok(&kh(&file, &["keyring", "retire"]));
    let addr = [
        ("KEYHOLD_ADDR", s.base.as_str()),
        ("KEYHOLD_TOKEN", admin.as_str()),
    ];
    let reload = keyhold()
        .env_remove("FERNET_KEY")
        .env("FERNET_KEY_FILE", &file)
        .envs(addr)
        .args(["keyring", "reload"])
        .output()
        .unwrap();
    assert_eq!(reload.status.code(), Some(1), "{}", stderr(&reload));
    let why = stderr(&reload);
    assert!(
        why.contains(&format!("keyhold keyring unretire --key-file {f}")),
        "{why}"
    );
    // The server kept its keyring.
    assert_eq!(reveal(&s, &admin, &id), "sk-slip");
    s.stop();
    // A restart is refused (exit 2) with the same fix; the store is intact.
    let out = keyhold()
        .env_remove("FERNET_KEY")
        .env("FERNET_KEY_FILE", &file)
        .args([
            "serve",
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("keyhold keyring unretire --key-file"),
        "{}",
        stderr(&out)
    );
    // The fix, then the rotation, then the retirement: all well.
    assert_ok(&kh(&file, &["keyring", "unretire"]));
    assert_ok(&kh(&file, &["rotate", "--data-dir", dir.to_str().unwrap()]));
    assert_ok(&kh(&file, &["keyring", "retire"]));
    let s = serve(&dir, &file);
    assert_eq!(reveal(&s, &admin, &id), "sk-slip");
    s.stop();
}

#[test]
fn check_with_a_key_that_opens_nothing_exits_2_and_says_so() {
    let v = Vault::new();
    let [flag, store] = v.store_args();
    let out = run_with_key(&keygen(), &["check", flag, store]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the keyring does not open this store"),
        "{}",
        stderr(&out)
    );
    // No line that could pass for a verdict on the store.
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("ok"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A rotation killed half-way leaves the keyring check value under the
/// old key (it moves last), so retiring the old key then restarting is
/// refused, naming `unretire`, instead of serving with keys it cannot
/// open; finishing the rotation then lets it go.
#[test]
fn a_start_after_retiring_during_an_unfinished_rotation_is_refused() {
    let (_tmp, dir, file, admin) = vault_with_key_file();
    let d = dir.to_str().unwrap();
    let s = serve(&dir, &file);
    let ids: Vec<String> = (0..4)
        .map(|i| Api::new(&s, &admin).create_key("claude", &format!("k{i}"), &format!("sk-{i}")))
        .collect();
    s.stop();
    let f = file.to_str().unwrap();
    assert_ok(&kh(&file, &["keygen", "--key-file", f]));
    // An offline rotation, one key every 3 s, killed after the first.
    let mut rotation = keyhold()
        .env_remove("FERNET_KEY")
        .env("FERNET_KEY_FILE", &file)
        .args(["rotate", "--data-dir", d, "--pace-ms", "3000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    rotation.kill().unwrap();
    rotation.wait().unwrap();
    // Half-way: some keys under the new key, some still under the old.
    let check = kh(&file, &["check", "--data-dir", d]);
    let said = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(
        said.contains("need an older key"),
        "{said}{}",
        stderr(&check)
    );
    assert_ok(&kh(&file, &["keyring", "retire"]));
    let out = keyhold()
        .env_remove("FERNET_KEY")
        .env("FERNET_KEY_FILE", &file)
        .args(["serve", "--data-dir", d, "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("keyhold keyring unretire --key-file {f}")),
        "{}",
        stderr(&out)
    );
    // The fix the refusal names, the rotation finished, then retired.
    assert_ok(&kh(&file, &["keyring", "unretire"]));
    assert_ok(&kh(&file, &["rotate", "--data-dir", d]));
    assert_ok(&kh(&file, &["keyring", "retire"]));
    let s = serve(&dir, &file);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(reveal(&s, &admin, id), format!("sk-{i}"));
    }
    s.stop();
}

/// An offline command whose keyring holds the store's key only as
/// retired is refused (exit 2) saying which key and the exact command
/// that puts it back; `check` says the same, without the "cannot open"
/// part it never had.
#[test]
fn an_offline_command_with_the_needed_key_retired_names_the_unretire_command() {
    let (_tmp, dir, file, _admin) = vault_with_key_file();
    let (d, f) = (dir.to_str().unwrap(), file.to_str().unwrap());
    let (old, _) = sections(&file);
    assert_ok(&kh(&file, &["keygen", "--key-file", f]));
    assert_ok(&kh(&file, &["keyring", "retire"]));
    let hint = format!(
        "the key this store needs ({}) is retired in {f}: put it back with `keyhold keyring \
         unretire --key-file {f} {}`, run this again, and rotate before retiring it",
        old[0], old[0]
    );
    let out = kh(&file, &["token", "list", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{hint}: cannot open the store in {d}: ")),
        "{}",
        stderr(&out)
    );
    let out = kh(&file, &["check", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("keyhold: error: {hint}: ")),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("cannot open the store"),
        "{}",
        stderr(&out)
    );
}
