//! Fernet tokens are byte-compatible with Python's `cryptography.fernet`:
//! either side decrypts the other's, through scripts/fernet_interop.py.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use keyhold::internals::keyring::{KeySource, Keyring};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/fernet_interop.py");

/// Runs the helper; `None` when Python or its package is missing outside
/// CI (under CI=true that is a failure that says why).
fn python(mode: &str, key: Option<&str>, stdin: &[u8]) -> Option<Vec<u8>> {
    let mut cmd = Command::new("python3");
    cmd.arg(SCRIPT)
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.env_remove("FERNET_KEY");
    if let Some(k) = key {
        cmd.env("FERNET_KEY", k);
    }
    let missing = |why: String| {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("Fernet interop needs Python 3 with the `cryptography` package (.ci/run installs it): {why}");
        }
        eprintln!("interop: not run here: {why}");
        None
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return missing(format!("python3 cannot be started: {e}")),
    };
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    match out.status.code() {
        Some(0) => Some(out.stdout),
        Some(3) => missing(String::from_utf8_lossy(&out.stderr).into_owned()),
        _ => panic!(
            "fernet_interop.py {mode} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn python_tokens_decrypt_in_keyhold_and_keyhold_tokens_decrypt_in_python() {
    let Some(key) = python("genkey", None, b"") else {
        return;
    };
    let key = String::from_utf8(key).unwrap().trim().to_string();
    // A key made by Python is a valid keyhold key.
    let ring = Keyring::parse_list(KeySource::FernetKey, [key.as_str()]).unwrap();

    let py_token = python("encrypt", Some(&key), b"sk-ant-from-python").unwrap();
    let py_token = String::from_utf8(py_token).unwrap();
    let opened = ring
        .decrypt(py_token.trim())
        .expect("keyhold opens a Python token");
    assert_eq!(opened.plaintext.expose(), b"sk-ant-from-python");

    let ours = ring.encrypt("AIza-from-keyhold-ü".as_bytes());
    let plain = python("decrypt", Some(&key), ours.as_bytes()).unwrap();
    assert_eq!(plain, "AIza-from-keyhold-ü".as_bytes());

    // A token encrypted under another key is refused by Python too.
    let other = Keyring::ephemeral().encrypt(b"x");
    let mut cmd = Command::new("python3");
    let out = cmd
        .arg(SCRIPT)
        .arg("decrypt")
        .env("FERNET_KEY", &key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(other.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_key_stored_through_the_api_decrypts_in_python() {
    let Some(key) = python("genkey", None, b"") else {
        return;
    };
    let key = String::from_utf8(key).unwrap().trim().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let admin = init(&dir, &key);
    let s = Server::start(&dir, &[("FERNET_KEY", key.as_str())]);
    let id = Api::new(&s, &admin).create_key("claude", "k", "sk-ant-stored-by-keyhold");
    s.stop();
    // Read the stored ciphertext with the library and hand it to Python.
    let rec = with_unlocked_store(&dir, &key, |store| {
        store.get_key(&id.parse().unwrap()).unwrap().unwrap()
    });
    let plain = python("decrypt", Some(&key), rec.token.as_bytes()).unwrap();
    assert_eq!(plain, b"sk-ant-stored-by-keyhold");
}
