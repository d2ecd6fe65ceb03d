//! Remote audit commands (issue 25, point 4): while the server runs (and
//! holds the store's lock), `audit export|verify|public-key --remote` go
//! through it with an auditor token, the stream verified here with the
//! public key; the offline forms' lock message names them. Real binary.

mod common;

use std::process::Output;

use common::*;

fn remote(s: &Server, token: &str, args: &[&str]) -> Output {
    keyhold()
        .env_remove("FERNET_KEY")
        .env("KEYHOLD_ADDR", &s.base)
        .env("KEYHOLD_TOKEN", token)
        .args(args)
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn an_auditor_exports_and_verifies_the_running_servers_log_with_the_public_key() {
    let v = Vault::new();
    let auditor = v.token("auditor", "auditor", None);
    let reader = v.token("reader", "reader", None);
    let s = v.serve(&[]);
    let api = Api::new(&s, &v.admin);
    for i in 0..5 {
        let id = api.create_key("claude", &format!("k{i}"), "sk-remote");
        assert_eq!(api.get(&format!("/api/keys/{id}")).status(), 200);
    }

    let pk = remote(&s, &auditor, &["audit", "public-key", "--remote"]);
    assert_ok(&pk);
    let key = out(&pk);
    assert!(key.starts_with("ed25519:"), "{key}");

    let verified = remote(
        &s,
        &auditor,
        &["audit", "verify", "--remote", "--public-key", &key],
    );
    assert_ok(&verified);
    assert!(out(&verified).starts_with("ok"), "{}", out(&verified));
    // A key that does not sign this log: exit 1, broken.
    let other = {
        let w = Vault::new();
        let s2 = w.serve(&[]);
        let o = remote(&s2, &w.admin, &["audit", "public-key", "--remote"]);
        s2.stop();
        out(&o)
    };
    let wrong = remote(
        &s,
        &auditor,
        &["audit", "verify", "--remote", "--public-key", &other],
    );
    assert_eq!(wrong.status.code(), Some(1), "{}", err(&wrong));

    // An export to a file, then verified offline from the file, anchored
    // at the head it printed.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("all.jsonl");
    let exported = remote(
        &s,
        &auditor,
        &["audit", "export", "--remote", "-o", file.to_str().unwrap()],
    );
    assert_ok(&exported);
    let said = err(&exported);
    let head = said
        .split("head when the export began was ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{said}"))
        .to_string();
    // Only the export is left: no partial file beside it, and it is 0600.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["all.jsonl"], "{names:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let lines = std::fs::read_to_string(&file).unwrap().lines().count();
    assert!(lines >= 11, "{lines} records");
    let offline = keyhold()
        .args(["audit", "verify", "--file", file.to_str().unwrap()])
        .args(["--public-key", &key, "--anchor", &head])
        .output()
        .unwrap();
    assert_ok(&offline);

    // A reader may not; no token is a setup error.
    let refused = remote(&s, &reader, &["audit", "export", "--remote"]);
    assert_eq!(refused.status.code(), Some(1), "{}", err(&refused));
    assert!(err(&refused).contains("audit:read"), "{}", err(&refused));
    let none = keyhold()
        .env_remove("KEYHOLD_TOKEN")
        .env("KEYHOLD_ADDR", &s.base)
        .args(["audit", "verify", "--remote"])
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(2), "{}", err(&none));

    // The offline form, while the server holds the lock, names --remote.
    if v.pg.is_none() {
        let locked = keyhold()
            .env("FERNET_KEY", &v.key)
            .args(["audit", "export", "--data-dir", v.dir_str()])
            .output()
            .unwrap();
        assert_eq!(locked.status.code(), Some(2), "{}", err(&locked));
        assert!(
            err(&locked).contains("audit export|verify|public-key --remote"),
            "{}",
            err(&locked)
        );
    }
    s.stop();
}
